"""The acoustic stage's letter input: the letters of the word each unit says (audiopalm.acoustic.letters), from the
words written between a model's units (speech_word_spans) to the stage that reads them."""

import dataclasses
from pathlib import Path

import pytest
import torch
from builders import TINY_MEL, say_tones

from audiopalm.acoustic.letters import PAD, UNKNOWN, letter_windows, spell
from audiopalm.acoustic.model import AcousticConfig, AcousticModel

ABC = tuple("'abcdefghijklmnopqrstuvwxyz")


def _ids(word: str) -> list[int]:
    return [ABC.index(c) + 2 for c in word]


def test_spell_normalises_and_marks_unknown_letters():
    assert spell("Door.", ABC) == _ids("door")
    assert spell("çà", ABC) == [UNKNOWN, UNKNOWN]
    assert spell("?", ABC) == []


def test_windows_spread_each_word_over_its_units():
    """'ab' over 2 units and 'cde' over 3, width 3: each unit reads the letter at its middle and its neighbours, the
    window stops at the word's edges; units before the first word and past the units read nothing."""
    out = letter_windows([("ab", 1), ("cde", 3)], 6, ABC, 3)
    a, b, c, d, e = _ids("abcde")
    assert out.tolist() == [
        [PAD, PAD, PAD],  # before the first word
        [PAD, a, b],
        [a, b, PAD],
        [PAD, c, d],
        [c, d, e],
        [d, e, PAD],
    ]
    # a long word over few units: the letter at each unit's middle ("abcdef" over 2 units: b, e)
    assert letter_windows([("abcdef", 0)], 2, ABC, 1)[:, 0].tolist() == _ids("be")
    # a short word over many units repeats its letters in order
    assert letter_windows([("ab", 0)], 4, ABC, 1)[:, 0].tolist() == _ids("aabb")


def test_windows_without_words_and_bad_input():
    assert letter_windows(None, 3, ABC, 5).eq(PAD).all() and letter_windows([], 3, ABC, 5).shape == (3, 5)
    # a word with no letter, or starting past the units, reads nothing; the word before it ends at its start
    out = letter_windows([("ab", 0), ("?", 2), ("cd", 9)], 4, ABC, 1)
    assert out[:, 0].tolist() == [*_ids("ab"), PAD, PAD]
    with pytest.raises(ValueError, match="non-decreasing"):
        letter_windows([("ab", 2), ("cd", 1)], 4, ABC, 3)
    with pytest.raises(ValueError, match="odd"):
        letter_windows([("ab", 0)], 4, ABC, 4)


def _model(**kw) -> AcousticModel:
    torch.manual_seed(0)
    c = AcousticConfig(num_units=8, feature_dim=6, hidden_size=16, num_blocks=2, voice_dim=4, voice_hidden=4, **kw)
    return AcousticModel(c).eval()


def test_model_reads_letters_and_no_letters_is_all_padding():
    m = _model(use_letters=True, letters=ABC, letter_width=3)
    units, lengths = torch.tensor([[1, 2, 3, 4]]), torch.tensor([4])
    voice = torch.zeros(1, 4)
    letters = letter_windows([("ab", 0), ("cd", 2)], 4, ABC, 3)[None]
    with torch.no_grad():
        torch.nn.init.normal_(m.letter_embed.weight)  # type: ignore[union-attr]
        spoken = m(units, lengths, voice, letters=letters)
        bare = m(units, lengths, voice)
        padded = m(units, lengths, voice, letters=torch.zeros_like(letters))
    assert not torch.allclose(spoken, bare) and torch.equal(bare, padded)
    with pytest.raises(AssertionError, match="letters must be"):
        m(units, lengths, voice, letters=letters[:, :, :1])
    with pytest.raises(AssertionError, match="without use_letters"):
        _model()(units, lengths, voice, letters=letters)


def test_speech_word_spans_read_the_words_written_between_units():
    from builders import tiny_text_tokenizer

    from audiopalm.data.vocab import UnifiedVocab
    from audiopalm.inference.generation import speech_word_spans, split_segments

    def vocab_of(output_words: bool) -> UnifiedVocab:
        tok = tiny_text_tokenizer("llama")
        return UnifiedVocab.build(tok, codebook_size=16, num_codebooks=1, pattern="flatten", output_words=output_words)

    vocab = vocab_of(True)
    u = [vocab.audio_token_id(0, i) for i in (3, 4, 5, 6)]
    ids = [
        vocab.audio_start_id,
        *vocab.text_ids(" there"),
        u[0],
        u[1],
        *vocab.text_ids(" dogs"),
        u[2],
        u[3],
        *vocab.text_ids(" ."),  # a word after the last unit starts at the frame count
        vocab.audio_end_id,
        vocab.eos_id,
    ]
    assert speech_word_spans(ids, "TTS", vocab) == [[("there", 0), ("dogs", 2), (".", 4)]]
    (codes,) = split_segments(ids, "TTS", vocab)
    assert isinstance(codes, torch.Tensor) and codes[0].tolist() == [3, 4, 5, 6]
    plain = vocab_of(False)
    ids = [plain.audio_start_id, plain.audio_token_id(0, 1), plain.audio_end_id, plain.eos_id]
    assert speech_word_spans(ids, "TTS", plain) == [[]]
    chained = [*plain.text_ids("the dog."), plain.sep_id, *plain.text_ids("le chien."), plain.sep_id, *ids]
    assert speech_word_spans(chained, "ASR AST S2ST", plain) == [[]]


# ---- a stage on ctc_units, trained with letters ----------------------------------------------------------------------

SR = 16000
WORDS = ["ab", "ba", "a bé", "éa", "bab", "é b", "ab ba", "bé a"]


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory):
    """Tone 'speech' (one tone a letter, test_ctc_units) by two speakers, a ctc_units tokenizer with two units fitted
    on it, and a small codec: (manifest, units folder, codec folder)."""
    from audiopalm.audio import io as audio_io
    from audiopalm.data.manifest import Record, write_manifest
    from audiopalm.tokenizers.ctc_units import CTCUnitsTokenizer
    from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer, manifest_waves
    from audiopalm.tokenizers.speech_encoder import EncoderTrainConfig

    root = tmp_path_factory.mktemp("letters")
    records = []
    for split, texts in (("train", WORDS), ("dev", WORDS[:2])):
        for i, text in enumerate(texts):
            for s in range(2):
                path = root / f"{split}{i:02d}-s{s}.wav"
                audio_io.save(path, say_tones(text, seed=10 * i + s), SR)
                rec = Record(id=f"{split}{i}s{s}", lang="fr", text=text + ".", audio=str(path), speaker=f"s{s}")
                records.append(dataclasses.replace(rec, split=split))
    manifest = root / "all.jsonl"
    write_manifest(manifest, records)
    train = EncoderTrainConfig(steps=40, batch_size=4, warmup=2, eval_every=0)
    encoder = dict(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0)
    units = CTCUnitsTokenizer.fit(manifest, num_units=2, train=train, encoder=encoder, progress=False)
    codec = MelRVQTokenizer.fit(  # 50 Hz frames: 2 a unit
        manifest_waves(manifest, SR),
        num_codebooks=1,
        codebook_size=8,
        seed=0,
        kmeans_iters=3,
        progress=False,
        **TINY_MEL,
    )
    return manifest, units.save_pretrained(root / "units"), codec.save_pretrained(root / "codec")


def test_letters_are_cached_beside_the_units_and_spell_the_transcript(tone_corpus, tmp_path):
    from audiopalm.acoustic.data import load_utterances
    from audiopalm.acoustic.stage import unit_letters
    from audiopalm.data.manifest import read_manifest
    from audiopalm.tokenizers.base import load_audio_tokenizer

    manifest, units_dir, codec_dir = tone_corpus
    units, codec = load_audio_tokenizer(units_dir), load_audio_tokenizer(codec_dir)
    alphabet = unit_letters(units)
    assert alphabet == ("'", "a", "b", "é")
    utts = load_utterances(manifest, ["train"], units, codec, cache_dir=tmp_path, progress=False, letters=alphabet)
    assert utts.letters is not None and utts.letters.shape == (len(utts.units), 5)
    texts = {str(r.audio): r.text for r in read_manifest(manifest)}
    for i, path in enumerate(utts.paths):
        spelled = utts.item_letters(i)
        assert spelled is not None and len(spelled) == utts.length(i)
        said = [alphabet[x - 2] for x in spelled[:, 2].tolist() if x >= 2]  # each frame's own letter, in order
        runs = [c for j, c in enumerate(said) if j == 0 or c != said[j - 1]]
        letters = [c for c in texts[path] if c in alphabet]
        assert runs and set(runs) <= set(letters) and runs[0] == letters[0] and runs[-1] == letters[-1], (path, runs)
    again = load_utterances(manifest, ["train"], units, codec, cache_dir=tmp_path, progress=False, letters=alphabet)
    assert again.letters is not None and torch.equal(again.letters, utts.letters)
    plain = load_utterances(manifest, ["train"], units, codec, cache_dir=tmp_path, progress=False)
    assert plain.letters is None and torch.equal(plain.units, utts.units)
    with pytest.raises(ValueError, match="cannot place words"):
        unit_letters(codec)


def _train(tone_corpus, use_letters: bool, steps: int = 80):
    """A small stage trained on the tone corpus with every unit replaced by unit 0 (units that say nothing), letters
    on or off; returns (stage, dev L1 with letters, dev L1 without them)."""
    from audiopalm.acoustic import AcousticStage
    from audiopalm.acoustic import train as acoustic
    from audiopalm.acoustic.data import PairSampler, load_utterances
    from audiopalm.acoustic.stage import unit_letters
    from audiopalm.tokenizers.base import load_audio_tokenizer

    manifest, units_dir, codec_dir = tone_corpus
    units, codec = load_audio_tokenizer(units_dir), load_audio_tokenizer(codec_dir)
    alphabet = unit_letters(units) if use_letters else None
    train, dev = (
        load_utterances(manifest, [s], units, codec, progress=False, letters=alphabet) for s in ("train", "dev")
    )
    train.units.zero_()
    dev.units.zero_()
    torch.manual_seed(0)
    config = AcousticConfig(
        hidden_size=48,
        num_blocks=3,
        dilations=(1, 2, 4),
        voice_dim=16,
        voice_hidden=16,
        use_letters=use_letters,
        unit_init="random",
    )
    stage = AcousticStage.build(config, codec, units, max_prompt_frames=20)
    sampler = PairSampler(train, max_frames=10**6, max_prompt_frames=20, seed=0, frames_per_unit=2)
    opt = torch.optim.AdamW(stage.model.parameters(), lr=3e-3)
    for step in range(steps):
        loss, n = acoustic.loss_sums(stage.model, sampler.batch(sampler.targets, step))
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    stage.eval()
    dev_batch = PairSampler(dev, max_frames=10**6, max_prompt_frames=20, seed=0, frames_per_unit=2).batch(
        [0, 1, 2, 3], 0
    )
    with torch.no_grad():
        with_letters = acoustic.loss_sums(stage.model, dev_batch)
        without = acoustic.loss_sums(stage.model, dataclasses.replace(dev_batch, letters=None))
    return stage, float(with_letters[0] / with_letters[1]), float(without[0] / without[1])


def test_letters_carry_what_the_units_cannot(tone_corpus):
    """When the units cannot say which tone sounds, a stage that reads the letters can: its dev L1 ends well below the
    same stage's without letters, and below a stage trained without them."""
    _, plain, _ = _train(tone_corpus, use_letters=False)
    _, spoken, bare = _train(tone_corpus, use_letters=True)
    assert spoken < 0.85 * plain and spoken < 0.85 * bare, (spoken, plain, bare)


def test_a_token_store_gives_the_units_words_and_letters_the_tokenizer_would(tone_corpus, tmp_path):
    """The demo trains its stage from the fine-tune's token stores (units and word starts already computed): the
    same utterances, units, features and letters as encoding the manifest's audio again; a store without word
    starts is refused for letters, and one from another tokenizer always."""
    from audiopalm.acoustic.data import has_audio, load_utterances
    from audiopalm.acoustic.stage import unit_letters
    from audiopalm.data.token_store import TokenStoreMismatch, build_token_store
    from audiopalm.tokenizers.base import load_audio_tokenizer

    manifest, units_dir, codec_dir = tone_corpus
    units, codec = load_audio_tokenizer(units_dir), load_audio_tokenizer(codec_dir)
    alphabet = unit_letters(units)
    store = build_token_store(manifest, units, tmp_path / "store", words=True, progress=False).path
    plain_store = build_token_store(manifest, units, tmp_path / "plain", progress=False).path
    assert has_audio(store, ["train"]) and has_audio(store, ["dev"]) and not has_audio(store, ["test"])
    for splits in (["train"], ["dev"]):
        encoded = load_utterances(manifest, splits, units, codec, progress=False, letters=alphabet)
        stored = load_utterances(store, splits, units, codec, progress=False, letters=alphabet, cache_dir=tmp_path)
        assert [Path(p).resolve() for p in stored.paths] == [Path(p).resolve() for p in encoded.paths]
        assert stored.speakers == encoded.speakers and torch.equal(stored.offsets, encoded.offsets)
        assert torch.equal(stored.units, encoded.units) and torch.equal(stored.feats, encoded.feats)
        assert encoded.letters is not None and stored.letters is not None
        assert torch.equal(stored.letters, encoded.letters)
        again = load_utterances(store, splits, units, codec, progress=False, letters=alphabet, cache_dir=tmp_path)
        assert torch.equal(again.letters, stored.letters) and torch.equal(again.feats, stored.feats)  # type: ignore[arg-type]
    assert load_utterances(plain_store, ["dev"], units, codec, progress=False).letters is None
    with pytest.raises(ValueError, match="no word starts"):
        load_utterances(plain_store, ["dev"], units, codec, progress=False, letters=alphabet)
    with pytest.raises(TokenStoreMismatch):
        load_utterances(store, ["dev"], codec, codec, progress=False)
