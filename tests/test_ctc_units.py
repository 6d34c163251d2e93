"""The character-CTC speech encoder, the ``ctc_units`` tokenizer built on it, and the CTC judge.

A tiny corpus of two-tone "words": each character is a tone, so a small encoder can learn it in a few
dozen steps on CPU."""

import json
from typing import TypedDict

import numpy as np
import pytest
import torch
from builders import say_tones

from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import Record, write_manifest
from audiopalm.evaluation.judges import CTCJudge, make_judge
from audiopalm.tokenizers.base import CONFIG_NAME, TOKENIZERS, load_audio_tokenizer
from audiopalm.tokenizers.ctc_units import CTCUnitsTokenizer, dedup_units, pool_starts
from audiopalm.tokenizers.speech_encoder import (
    AUGMENTATIONS,
    EncoderTrainConfig,
    SpeechEncoder,
    SpeechEncoderConfig,
    build_chars,
    conv_lengths,
    length_batches,
    manifest_utterances,
    normalize_text,
    train_encoder,
)
from audiopalm.tokenizers.speech_encoder import CONFIG_NAME as ENCODER_CONFIG

SR = 16000


class EncoderSize(TypedDict):
    """The size fields of :class:`SpeechEncoderConfig` that the tests shrink."""

    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_size: int
    dropout: float


TINY = EncoderSize(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0)


def _said(texts: tuple[str, ...], seed: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each text :func:`say_tones`-ed: (the waveforms, them zero-padded into one batch [B, T], their lengths [B])."""
    wavs = [torch.as_tensor(say_tones(t, seed=seed)) for t in texts]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return wavs, batch, lengths


TEXTS = ["ab", "ba", "a bé", "éa", "bab", "é b"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc_corpus")
    records = []
    for split, texts in (("train", TEXTS), ("dev", TEXTS[:2])):
        for i, text in enumerate(texts):
            path = root / f"{split}{i:02d}-v00.wav"
            audio_io.save(path, say_tones(text, seed=i), SR)
            records.append(Record(id=f"{split}{i}", lang="fr", text=text.upper() + ".", audio=str(path), split=split))
    manifest = root / "all.jsonl"
    write_manifest(manifest, records)
    return manifest


def test_text_normalisation_and_characters():
    assert normalize_text("L’Été, c'est-à-dire  2 FOIS!") == "l'été c'est à dire fois"
    assert build_chars(["Über", "año!"]) == [" ", "'", "a", "b", "e", "o", "r", "ñ", "ü"]


def test_conv_lengths_match_the_convolutions():
    model = SpeechEncoder(SpeechEncoderConfig(**TINY))
    for n in (1, 2, 3, 4, 5, 97, 100):
        states, lengths = model.forward_feats(torch.zeros(1, n, 80), torch.tensor([n]))
        assert states[0].shape[1] == int(conv_lengths(torch.tensor(n))) == int(lengths[0]), n


@pytest.mark.parametrize("conv_kernel", [7, 0])
def test_states_do_not_depend_on_what_pads_the_batch(conv_kernel):
    """An utterance's states alone equal its states beside a longer one: the attention masks padding keys and the
    convolution modules zero the padding frames (whose states are not zero after a layer) before they convolve."""
    torch.manual_seed(0)
    model = SpeechEncoder(SpeechEncoderConfig(**TINY, conv_kernel=conv_kernel)).eval()
    short, long = torch.randn(1, 41, 80), torch.randn(1, 90, 80)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 49, 80)], 1), long])  # mel padding is zeros
    with torch.no_grad():
        alone, n = model.forward_feats(short, torch.tensor([41]))
        together, lengths = model.forward_feats(batch, torch.tensor([41, 90]))
    assert int(lengths[0]) == int(n[0])
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(b[0, : int(n[0])], a[0, : int(n[0])], atol=1e-4, rtol=1e-4)


def test_conv_kernel_is_checked_and_older_encoders_load_without_convolutions(tmp_path):
    with pytest.raises(ValueError, match="conv_kernel"):
        SpeechEncoderConfig(**TINY, conv_kernel=4)
    assert SpeechEncoder(SpeechEncoderConfig(**TINY)).convs is not None
    plain = SpeechEncoder(SpeechEncoderConfig(**TINY, conv_kernel=0))
    assert plain.convs is None
    folder = plain.save_pretrained(tmp_path / "enc")
    meta = json.loads((folder / ENCODER_CONFIG).read_text())
    del meta["config"]["conv_kernel"]  # written before the field existed
    (folder / ENCODER_CONFIG).write_text(json.dumps(meta))
    again = SpeechEncoder.from_pretrained(folder)
    assert again.config.conv_kernel == 0
    x = torch.randn(2, 60, 80)
    with torch.no_grad():
        torch.testing.assert_close(
            again.log_probs_from_feats(x, torch.tensor([60, 50]))[0],
            plain.eval().log_probs_from_feats(x, torch.tensor([60, 50]))[0],
        )


def test_ctc_loss_falls_when_overfitting_and_transcribes(corpus):
    utts = manifest_utterances(corpus, split="train")
    model = SpeechEncoder(SpeechEncoderConfig(chars=build_chars([u[1] for u in utts]), **TINY))
    feats = [model.frontend([audio_io.load(u[0], SR)[0]])[0][0] for u in utts]
    texts = [u[1] for u in utts]
    first = train_encoder(model, feats, texts, EncoderTrainConfig(steps=1, batch_size=6, augment=False), progress=False)
    cfg = EncoderTrainConfig(steps=80, batch_size=6, lr=5e-3, warmup=5, augment=False)
    last = train_encoder(model, feats, texts, cfg, progress=False)
    assert last[-1]["loss"] < 0.3 * first[-1]["loss"], (first, last)
    hyps = model.transcribe([audio_io.load(u[0], SR)[0] for u in utts])
    assert sum(h == normalize_text(t) for h, t in zip(hyps, texts, strict=True)) >= 4, list(
        zip(hyps, texts, strict=True)
    )


def test_bf16_training_runs_in_bfloat16_learns_and_repeats(corpus):
    utts = manifest_utterances(corpus, split="train")
    chars = build_chars([u[1] for u in utts])
    frontend = SpeechEncoder(SpeechEncoderConfig(chars=chars, **TINY)).frontend  # one log-mel front end for all
    feats = [frontend([audio_io.load(u[0], SR)[0]])[0][0] for u in utts]
    texts = [u[1] for u in utts]

    def train(bf16: bool, steps: int) -> tuple[SpeechEncoder, list[dict]]:
        torch.manual_seed(0)  # the biases' first values (train_encoder re-draws only the matrices)
        model = SpeechEncoder(SpeechEncoderConfig(chars=chars, **TINY))
        cfg = EncoderTrainConfig(steps=steps, batch_size=6, lr=5e-3, warmup=5, augment=False, bf16=bf16)
        return model, train_encoder(model, feats, texts, cfg, progress=False)

    model, curve = train(True, 40)
    _, first = train(True, 1)
    assert curve[-1]["loss"] < 0.5 * first[-1]["loss"], (first, curve)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32
    again, _ = train(True, 40)
    plain, _ = train(False, 40)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert any(not torch.equal(t, plain.state_dict()[n]) for n, t in model.state_dict().items())  # it ran in bf16


def test_length_batches_group_like_lengths_and_keep_every_utterance():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(50, 400, (200,), generator=g).tolist()
    feats = [torch.zeros(n, 2) for n in lengths]
    order = torch.randperm(200, generator=g).tolist()

    def padded(ids: list[int]) -> int:  # frames of the batches of 8 once padded
        return sum(8 * max(lengths[i] for i in ids[j : j + 8]) for j in range(0, len(ids), 8))

    cfg = EncoderTrainConfig(batch_size=8, bucket=4)
    out = length_batches(order, feats, cfg, torch.Generator().manual_seed(1))
    assert sorted(out) == list(range(200))  # every utterance once
    # each batch comes from one run of 4 batches, and holds that run's utterances of about one length
    for j in range(0, 200, 8):
        batch = out[j : j + 8]
        run = {order.index(i) // 32 for i in batch}
        assert len(run) == 1, (j, run)
    assert padded(out) < 0.8 * padded(order), (padded(out), padded(order))
    assert out == length_batches(order, feats, cfg, torch.Generator().manual_seed(1))  # drawn from the generator
    assert out != length_batches(order, feats, cfg, torch.Generator().manual_seed(2))
    assert length_batches(order, feats, EncoderTrainConfig(batch_size=8, bucket=1), g) == order
    with pytest.raises(ValueError, match="bucket"):
        EncoderTrainConfig(bucket=0)


def test_augmentation_is_deterministic_and_keeps_shapes_close():
    from audiopalm.audio.features import LogMelConfig
    from audiopalm.tokenizers.speech_encoder import Augmenter

    aug = Augmenter(EncoderTrainConfig(), LogMelConfig())
    x = torch.randn(100, 80) - 5
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape[1] == 80 and 85 <= a.shape[0] <= 115, a.shape
    c = aug(x, torch.Generator().manual_seed(4))
    assert c.shape != a.shape or not torch.equal(a, c)


def test_augmentations_apply_only_the_kinds_named():
    """Each kind does what it says and no other: VTLP keeps the frames, speed changes their number, noise only adds
    power (never lowers a bin); the warps alone add none; and the config refuses a kind it does not know."""
    from audiopalm.audio.features import LogMelConfig
    from audiopalm.tokenizers.speech_encoder import Augmenter

    x = torch.randn(100, 80) - 5

    def runs(kinds: tuple[str, ...]) -> list[torch.Tensor]:
        aug = Augmenter(EncoderTrainConfig(augmentations=kinds), LogMelConfig())
        return [aug(x, torch.Generator().manual_seed(seed)) for seed in range(8)]

    vtlp = runs(("vtlp",))
    assert all(y.shape == x.shape for y in vtlp) and not any(torch.equal(y, x) for y in vtlp)
    assert {y.shape[0] for y in runs(("speed",))} != {100}
    noise = runs(("noise",))
    assert all(y.shape == x.shape and bool((y >= x).all()) for y in noise)
    assert sum(not torch.equal(y, x) for y in noise) >= 2  # half the utterances get noise
    # the warps alone move the values of the bands (interpolating between them) but add no noise: on a constant
    # input every band stays the constant
    flat = torch.full((50, 80), -3.0)
    warps = Augmenter(EncoderTrainConfig(augmentations=("speed", "vtlp")), LogMelConfig())
    for seed in range(8):
        assert torch.allclose(warps(flat, torch.Generator().manual_seed(seed)), torch.tensor(-3.0))
    with pytest.raises(ValueError, match="subset of speed, vtlp, noise, specaugment; got echo"):
        EncoderTrainConfig(augmentations=("echo",))
    with pytest.raises(ValueError, match="non-empty"):
        EncoderTrainConfig(augmentations=())


def test_training_without_specaugment_never_masks(corpus, monkeypatch):
    """``augmentations`` without ``specaugment``: the training loop does not mask; with it, it does."""
    from audiopalm.tokenizers.speech_encoder import Augmenter

    calls = []

    def mask(self, x, g):
        calls.append(1)
        return x

    monkeypatch.setattr(Augmenter, "mask", mask)
    for kinds, masked in ((("speed", "vtlp"), False), (("vtlp", "specaugment"), True)):
        calls.clear()
        train = EncoderTrainConfig(steps=2, batch_size=3, warmup=1, augment=True, augmentations=kinds)
        CTCUnitsTokenizer.fit(corpus, num_units=4, train=train, encoder=TINY, progress=False)
        assert bool(calls) == masked, kinds


@pytest.fixture(scope="module")
def fitted(corpus, tmp_path_factory):
    train = EncoderTrainConfig(steps=20, batch_size=4, warmup=2, eval_every=10)
    tok = CTCUnitsTokenizer.fit(corpus, num_units=8, train=train, encoder=TINY, progress=False)
    out = tok.save_pretrained(tmp_path_factory.mktemp("ctc_tok"))
    return tok, out


def test_fit_is_repeatable_whatever_the_global_rng_state(fitted, corpus):
    """The same seed gives the same encoder and units to the last bit, however the process's global RNG was used
    before the fit (the layers' construction-time biases come from the seed too, not only the re-drawn weights)."""
    tok, _ = fitted
    torch.manual_seed(12345)
    torch.rand(7)
    train = EncoderTrainConfig(steps=20, batch_size=4, warmup=2, eval_every=10)
    again = CTCUnitsTokenizer.fit(corpus, num_units=8, train=train, encoder=TINY, progress=False)
    mine, theirs = tok.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert again.fingerprint == tok.fingerprint


def test_fit_save_reload_fingerprint_and_record(fitted):
    tok, out = fitted
    assert TOKENIZERS["ctc_units"].endswith(":CTCUnitsTokenizer")
    again = load_audio_tokenizer(out)
    assert isinstance(again, CTCUnitsTokenizer) and again.fingerprint == tok.fingerprint
    meta = json.loads((out / CONFIG_NAME).read_text())
    assert meta["type"] == "ctc_units" and meta["fingerprint"] == tok.fingerprint
    assert again.fit_info["encoder_dev_cer"] is not None and len(again.fit_info["curve"]) == 2
    assert again.frame_rate == 25.0 and again.num_codebooks == 1 and again.codebook_size == 8
    assert not again.can_decode
    enc = SpeechEncoder.from_pretrained(out / "encoder")
    assert enc.config.chars == tok.encoder.config.chars and "é" in enc.config.chars
    with pytest.raises(NotImplementedError):
        again.decode(torch.zeros(1, 1, 3, dtype=torch.long))


def test_a_tokenizer_saved_before_conv_kernel_existed_loads_as_it_was(fitted, tmp_path):
    """Folders (and checkpoints holding them) written before the convolution modules name no ``conv_kernel``: they
    load as encoders without them, with the fingerprint they were saved with, and encode as before."""
    tok, _ = fitted
    config = tok.get_config()
    old = CTCUnitsTokenizer(**{**config, "encoder": {k: v for k, v in config["encoder"].items() if k != "conv_kernel"}})
    assert old.encoder.convs is None and tok.encoder.convs is not None
    missing, unexpected = old.load_state_dict(tok.state_dict(), strict=False)
    assert not missing and unexpected and all(".convs." in k for k in unexpected)
    folder = old.save_pretrained(tmp_path / "old_units")
    assert "conv_kernel" not in json.loads((folder / CONFIG_NAME).read_text())["config"]["encoder"]
    again = load_audio_tokenizer(folder)
    assert isinstance(again, CTCUnitsTokenizer) and again.encoder.convs is None
    assert again.fingerprint == old.fingerprint
    wav = torch.as_tensor(say_tones("a bé", seed=4))[None]
    assert torch.equal(again.encode(wav)[0], old.encode(wav)[0])


def test_unit_characters_are_the_ctc_head_at_each_centre(fitted):
    """A unit's characters: the encoder's CTC distribution at its k-means centre (what init: letters reads).
    Clustered below the head's layer: none."""
    tok, _ = fitted
    chars, probs = tok.unit_characters()
    assert chars == tok.encoder.config.chars and probs.shape == (8, 1 + len(chars))
    torch.testing.assert_close(probs.sum(-1), torch.ones(8))
    # a state at a unit's centre (in the encoder's own space) is assigned that unit, and the head reads it as probs
    states = tok.centroids * tok.std + tok.mean  # [8, D]
    assert tok._assign(states[None], torch.tensor([8]))[0].tolist() == list(range(8))
    torch.testing.assert_close(tok.encoder.head(tok.encoder.norm(states)).softmax(-1), probs)
    shallow = CTCUnitsTokenizer(**{**tok.get_config(), "layer": 0})
    assert shallow.unit_characters() is None


def test_encode_deterministic_and_batched_equals_one_by_one(fitted):
    _, out = fitted
    tok = load_audio_tokenizer(out)
    wavs, batch, lengths = _said(("ab", "a bé", "b"), seed=9)
    codes, frames = tok.encode(batch, lengths)
    assert codes.shape == (3, 1, int(frames.max())) and codes.dtype == torch.long
    assert torch.equal(codes, tok.encode(batch, lengths)[0])
    for i, w in enumerate(wavs):
        one, n = tok.encode(w[None])
        assert int(n[0]) == int(frames[i]) == int(conv_lengths(torch.tensor(len(w) // 160 + 1)))
        assert torch.equal(one[0, 0], codes[i, 0, : int(n[0])]), i
    assert int(codes.max()) < 8


def test_dedup_encoding_and_durations_invert(fitted):
    tok, out = fitted
    wav = torch.as_tensor(say_tones("a bé"))[None]
    frames, n = tok.units(wav)
    u, d = dedup_units(frames[0, : int(n[0])])
    assert torch.equal(torch.repeat_interleave(u, d), frames[0, : int(n[0])])
    assert bool((u[1:] != u[:-1]).all()) and int(d.sum()) == int(n[0])
    dedup = CTCUnitsTokenizer(**{**tok.get_config(), "dedup": True})
    dedup.load_state_dict(tok.state_dict())
    codes, lengths = dedup.encode(wav)
    assert int(lengths[0]) == len(u) and torch.equal(codes[0, 0, : len(u)], u)
    assert dedup.fingerprint != tok.fingerprint


def test_ctc_judge_transcribes_any_rate(fitted):
    tok, out = fitted
    judge = make_judge("ctc", model=str(out))
    assert isinstance(judge, CTCJudge), judge
    wav = say_tones("ab")
    at_24k = audio_io.resample(wav, SR, 24000)
    # the fit records the training transcripts' words; the judge decodes French with them
    words = sorted({w for t in TEXTS for w in normalize_text(t).split()})
    assert SpeechEncoder.from_pretrained(out / "encoder").record["lexicon"] == {"fr": words}
    assert judge.words("fr") == words and judge.words("en") is None
    assert judge.transcribe([wav], SR, "fr") == tok.encoder.transcribe([wav], lexicon=words)
    texts = judge.transcribe([at_24k, at_24k], 24000, "fr")
    assert texts == tok.encoder.transcribe([audio_io.resample(at_24k, 24000, SR)] * 2, lexicon=words)
    assert all(w in words for t in texts for w in t.split())
    # no lexicon for the language (or lexicon=False): greedy CTC
    assert judge.transcribe([wav], SR, "en") == tok.encoder.transcribe([wav])
    greedy = make_judge("ctc", model=str(out), lexicon=False)
    assert greedy.transcribe([wav], SR, "fr") == tok.encoder.transcribe([wav])
    with pytest.raises(ValueError, match="model="):
        make_judge("ctc")


def test_refit_units_on_a_trained_encoder(fitted, corpus):
    tok, out = fitted
    again = CTCUnitsTokenizer.fit(corpus, num_units=4, layer=1, pretrained=out / "encoder", progress=False)
    assert again.codebook_size == 4 and again.config.layer == 1
    for name, tensor in tok.encoder.state_dict().items():
        assert torch.equal(tensor, again.encoder.state_dict()[name]), name
    assert again.fit_info["pretrained"] == str(out / "encoder") and again.fit_info["encoder_dev_cer"] is not None


def test_cli_fit_ctc_units(corpus, tmp_path, capsys):
    from audiopalm.commands.main import main

    out = tmp_path / "units"
    rc = main(
        [
            "tokenizer",
            "fit-ctc-units",
            "--manifest",
            str(corpus),
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--bucket",
            "2",
            "--hidden-size",
            "32",
            "--num-layers",
            "1",
            "--conv-kernel",
            "3",
            "--num-units",
            "6",
            "--dedup",
            "--kmeans-iters",
            "5",
            "--seed",
            "2",
            "--augment",
            "--bf16",
        ]
    )
    assert rc == 0 and "encoder dev CER" in capsys.readouterr().out
    tok = load_audio_tokenizer(out)
    assert isinstance(tok, CTCUnitsTokenizer), tok
    assert tok.codebook_size == 6 and tok.config.dedup and tok.encoder.config.num_layers == 1
    assert tok.encoder.config.conv_kernel == 3 and tok.encoder.convs is not None
    assert tok.fit_info["train"]["seed"] == 2 and tok.fit_info["train"]["steps"] == 3
    assert tok.fit_info["train"]["bucket"] == 2 and tok.fit_info["train"]["bf16"]
    assert tok.fit_info["train"]["augment"] and tok.fit_info["train"]["augmentations"] == list(AUGMENTATIONS)


@pytest.mark.parametrize(
    "flags, record",
    [
        (["--augment", "vtlp", "speed", "vtlp"], (True, ["vtlp", "speed"])),
        (["--no-augment"], (False, list(AUGMENTATIONS))),
        ([], (False, list(AUGMENTATIONS))),
    ],
)
def test_cli_fit_ctc_units_augmentations(corpus, tmp_path, flags, record):
    """``--augment KIND ...`` trains with those kinds (each once), ``--no-augment`` and no flag without any; the
    record says which."""
    from audiopalm.commands.main import main

    out = tmp_path / "units"
    base = ["tokenizer", "fit-ctc-units", "--manifest", str(corpus), "--out", str(out), "--steps", "2"]
    tiny = ["--batch-size", "3", "--hidden-size", "32", "--num-layers", "1", "--num-units", "4", "--kmeans-iters", "2"]
    assert main([*base, *tiny, *flags]) == 0
    tok = load_audio_tokenizer(out)
    assert isinstance(tok, CTCUnitsTokenizer), tok
    assert (tok.fit_info["train"]["augment"], tok.fit_info["train"]["augmentations"]) == record


def test_cli_refuses_an_unknown_augmentation_and_names_the_same_kinds(corpus, tmp_path, capsys):
    from audiopalm.commands import tokenizer as cli
    from audiopalm.commands.main import main

    assert cli.AUGMENTATIONS == AUGMENTATIONS
    out = tmp_path / "units"
    with pytest.raises(SystemExit) as e:
        main(["tokenizer", "fit-ctc-units", "--manifest", str(corpus), "--out", str(out), "--augment", "echo"])
    assert e.value.code == 2 and "invalid choice: 'echo'" in capsys.readouterr().err and not out.exists()


def test_audiopalm_tokenize_stores_units(fitted, corpus, tmp_path):
    from audiopalm.commands.main import main
    from audiopalm.data.token_store import load_token_store

    tok, out = fitted
    rc = main(
        [
            "tokenize",
            "--manifest",
            str(corpus),
            "--tokenizer",
            str(out),
            "--out",
            str(tmp_path / "store"),
            "--num-proc",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    store = load_token_store(tmp_path / "store", expected_fingerprint=tok.fingerprint)
    assert store.meta.num_rows == len(TEXTS) + 2 and store.meta.codebook_size == 8
    row = store.dataset[0]
    wav, _ = audio_io.load(row["audio"], SR)
    direct, n = tok.encode(torch.from_numpy(wav)[None])
    assert np.array_equal(np.asarray(row["audio_codes"]).reshape(1, -1), direct[0, :, : int(n[0])].numpy())


def test_encode_words_gives_the_units_of_encode_and_a_start_per_word(fitted):
    tok, _ = fitted
    wavs, batch, lengths = _said(("a bé", "bab"), seed=5)
    codes, frames = tok.encode(batch, lengths)
    codes_w, frames_w, starts = tok.encode_words(batch, lengths, ["A bé ?", None])
    assert torch.equal(codes, codes_w) and torch.equal(frames, frames_w)
    assert starts[1] is None  # no transcript, no words
    first = starts[0]
    assert len(first) == 3 and first[0] == 0 and first == sorted(first) and first[-1] <= int(frames[0]), first
    assert first[2] == int(frames[0])  # "?" has no letter: no frames of its own, at the end
    dedup = CTCUnitsTokenizer(**{**tok.get_config(), "dedup": True})
    dedup.load_state_dict(tok.state_dict())
    with pytest.raises(ValueError, match="dedup"):
        dedup.encode_words(batch, lengths, ["a", "b"])


def test_audiopalm_tokenize_words_stores_a_start_per_word(fitted, corpus, tmp_path, capsys):
    from audiopalm.commands.main import main
    from audiopalm.data.token_store import build_token_store, load_token_store
    from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

    tok, out = fitted
    args = ["tokenize", "--manifest", str(corpus), "--tokenizer", str(out), "--num-proc", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "words"), "--words"]) == 0
    store = load_token_store(tmp_path / "words")
    assert store.meta.words
    for i in range(len(store)):
        row = store.dataset[i]
        wav, _ = audio_io.load(row["audio"], SR)
        codes, frames, (starts,) = tok.encode_words(torch.from_numpy(wav)[None], None, [row["text"]])
        assert np.array_equal(np.asarray(row["audio_codes"]).reshape(1, -1), codes[0, :, : int(frames[0])].numpy())
        assert list(row["audio_words"]) == starts and len(starts) == len(row["text"].split())
        assert row["tgt_audio_words"] is None  # no target audio in this corpus
    # the same manifest without --words is another store: a finished one is not taken for it
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    plain = load_token_store(tmp_path / "plain")
    assert not plain.meta.words and "audio_words" not in plain.dataset.column_names
    assert plain.meta.plan_hash != store.meta.plan_hash
    mel = tmp_path / "mel"
    MelRVQTokenizer(num_codebooks=1, codebook_size=4).save_pretrained(mel)
    assert main([*args[:4], str(mel), "--out", str(tmp_path / "no"), "--words", "--no-progress"]) == 2
    assert "no CTC head to align words" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot align words"):
        build_token_store(corpus, load_audio_tokenizer(mel), tmp_path / "no", words=True, progress=False)


def test_stride_pools_encoder_frames_into_units(fitted, corpus, tmp_path):
    """``stride=2``: one unit per 2 encoder frames (12.5 Hz), the nearest centre of their mean state (an odd last
    frame alone); k-means fitted on those means; padding-invariant; recorded in the config and fingerprint, while a
    stride-1 config hashes as one without the field."""
    tok, out = fitted
    assert "stride" not in tok.get_config()
    half = CTCUnitsTokenizer.fit(corpus, num_units=4, stride=2, pretrained=out / "encoder", progress=False)
    assert half.frame_rate == 12.5 and half.get_config()["stride"] == 2
    again = load_audio_tokenizer(half.save_pretrained(tmp_path / "half"))
    assert isinstance(again, CTCUnitsTokenizer)
    assert again.fingerprint == half.fingerprint and again.config.stride == 2
    wavs, batch, lengths = _said(("a bé", "bab", "b"), seed=6)
    codes, units = again.encode(batch, lengths)
    for i, w in enumerate(wavs):
        states, frames = again.encoder.hidden_states(w[None], layer=again.config.layer)  # [1, F, D]
        f = int(frames[0])
        means = torch.stack([states[0, a : min(a + 2, f)].mean(0) for a in range(0, f, 2)])  # [ceil(F/2), D]
        want = again._assign(means[None], torch.tensor([len(means)]))[0]
        assert int(units[i]) == len(means) == -(-f // 2)
        torch.testing.assert_close(codes[i, 0, : len(means)], want, rtol=0, atol=0)
        one, n = again.encode(w[None])
        assert torch.equal(one[0, 0], codes[i, 0, : int(n[0])])
    # word starts in units: the frame starts pooled, every word inside the utterance, in order
    codes_w, units_w, starts = again.encode_words(batch, lengths, ["a bé", "bab", None])
    assert torch.equal(codes_w, codes) and torch.equal(units_w, units)
    _, _, frame_starts = tok.encode_words(batch, lengths, ["a bé", "bab", None])
    assert starts[0] == pool_starts(frame_starts[0], 2, int(units[0])) and starts[1] == [0] and starts[2] is None


def test_pool_starts_keeps_a_unit_for_each_word_that_had_frames():
    assert pool_starts([0, 3, 4, 9, 9, 12], 2, 7) == [0, 1, 2, 4, 4, 6]  # 3 and 4 share unit 1: the second moves on
    assert pool_starts([0, 10, 11], 2, 6) == [0, 5, 5]  # no unit left to move to
    assert pool_starts([0, 2, 4], 1, 5) == [0, 2, 4]
