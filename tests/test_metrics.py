"""Metrics: the normaliser's rules one by one, WER/CER/BLEU/chrF against hand-computed values,
corpus-level aggregation, and the ASR judges (callable, PocketSphinx on espeak-ng speech, a tiny
random Whisper)."""

import math
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from audiopalm.evaluation import judges as asr_judges
from audiopalm.evaluation import metrics
from audiopalm.evaluation.judges import ASRJudge, CallableJudge, PocketSphinxJudge, WhisperJudge, make_judge
from audiopalm.evaluation.metrics import asr_bleu, bleu, cer, chrf, normalize, summary_row, tts_roundtrip_wer, wer

# ----------------------------------------------------------------------------- normaliser rules


def test_rule_nfkc():
    assert normalize("ＡＢＣ ﬁne") == "abc fine"  # full-width letters, fi ligature
    assert normalize("cafe\u0301") == "café"  # e + combining acute -> one é


def test_rule_apostrophes_unified_and_kept_inside_words():
    assert normalize("don’t") == "don't"
    assert normalize("l‘homme aujourd'hui") == "l'homme aujourd'hui"
    assert normalize("'quoted' rock'n'roll'") == "quoted rock'n'roll"  # edge quotes go, inner ones stay


@pytest.mark.parametrize(
    "lang,text,expected",
    [
        ("en", "I have 42 cats and 100 dogs", "i have forty two cats and one hundred dogs"),
        ("en", "0 7 21", "zero seven twenty one"),
        ("fr", "il a 21 ans, pas 71", "il a vingt et un ans pas soixante et onze"),
        ("es", "tengo 100 años y 42", "tengo cien años y cuarenta y dos"),
        ("de", "Er hat 21 Äpfel", "er hat einundzwanzig äpfel"),
    ],
)
def test_rule_numbers_spelled_out(lang, text, expected):
    assert normalize(text, lang) == expected


def test_rule_numbers_kept_without_language_and_glued_digits_kept():
    assert normalize("room 42", None) == "room 42"
    assert normalize("room 42", "ja") == "room 42"  # not a NUMBER_LANGS language
    assert normalize("mp3 1st", "en") == "mp3 1st"
    assert normalize("3.5", "en") == "three five"  # documented: two integers


def test_rule_lowercase_without_casefold():
    assert normalize("HELLO Straße") == "hello straße"


def test_rule_punctuation_and_symbols_removed_hyphens_split():
    assert normalize("Hello, world! (yes) «oui» ¿qué? 50% $") == "hello world yes oui qué 50"
    assert normalize("twenty-one well-known peut-être") == "twenty one well known peut être"
    assert normalize("21", "en") == normalize("twenty-one", "en") == "twenty one"


def test_rule_accents_kept():
    assert normalize("Café Über niño") == "café über niño"
    assert wer(["café"], ["cafe"]).value == 100.0


def test_rule_whitespace_collapsed():
    assert normalize("  a \t b\n\nc  ") == "a b c"
    assert normalize(" , . ") == ""


def test_normalize_rejects_non_str():
    not_a_str: Any = None  # a caller without type checking
    with pytest.raises(TypeError, match="expects a str"):
        normalize(not_a_str)


# ----------------------------------------------------------------------------- WER / CER


def test_wer_hand_computed_and_corpus_level():
    # utt 1: "a b c d" vs "a x c": 1 sub (b->x), 1 del (d)  -> 2 edits / 4 words
    # utt 2: "e f"     vs "e f g": 1 ins                     -> 1 edit  / 2 words
    r = wer(["a b c d", "e f"], ["a x c", "e f g"])
    assert (r.substitutions, r.deletions, r.insertions, r.hits, r.ref_len) == (1, 1, 1, 4, 6)
    assert r.value == pytest.approx(100 * 3 / 6)  # corpus: total edits / total words
    assert r.per_utterance == pytest.approx([50.0, 50.0])
    # unequal lengths: the mean of per-utterance rates (55) differs from the corpus rate (2/11)
    r = wer(["a b c d e f g h i j", "x"], ["a b c d e f g h i j", "y"])
    assert r.per_utterance == pytest.approx([0.0, 100.0])
    assert r.value == pytest.approx(100 / 11)
    assert r.n == 2 and r.edits == 1


def test_error_rate_signature_and_summary_row():
    r = wer(["a b"], ["a c"], "fr")
    assert r.signature.startswith("norm:audiopalm|lang:fr|jiwer:")
    assert wer(["a"], ["a"], normalized=False).signature.startswith("norm:no|lang:-|")
    row = summary_row(r, task="ASR", src="fr", subset="heldout_voice")
    assert row == {
        "task": "ASR",
        "src": "fr",
        "tgt": None,
        "split": "test",
        "subset": "heldout_voice",
        "metric": "WER",
        "value": 50.0,
        "n": 1,
        "signature": r.signature,
    }
    b = summary_row(bleu(["a b c d"], ["a b c d"]), task="AST", src="en", tgt="fr", metric="BLEU-13a")
    assert b["metric"] == "BLEU-13a" and b["value"] == 100.0 and "tok:13a" in b["signature"]


def test_wer_normalises_by_default_only():
    assert wer(["The cat, sat."], ["the cat sat"]).value == 0.0
    assert wer(["The cat, sat."], ["the cat sat"], normalized=False).value == pytest.approx(100.0)
    assert wer(["I have 2 cats"], ["i have two cats"], "en").value == 0.0


def test_wer_empty_reference_utterance_and_all_empty():
    r = wer(["a", ""], ["a", "x"])
    assert r.value == 100.0 and r.per_utterance == [0.0, 100.0]  # 1 insertion / 1 reference word
    with pytest.raises(ValueError, match="all 1 references are empty"):
        wer(["..."], ["x"])


def test_wer_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="not a single string"):
        wer("a b", "a b")
    with pytest.raises(ValueError, match="no utterances"):
        wer([], [])


def test_cer_hand_computed():
    r = cer(["abc"], ["abd"])
    assert (r.substitutions, r.ref_len) == (1, 3) and r.value == pytest.approx(100 / 3)
    r = cer(["ab cd", "e"], ["ab d", "e"])  # 1 deletion (c) over 5 + 1 characters, space counted
    assert r.deletions == 1 and r.ref_len == 6 and r.value == pytest.approx(100 / 6)


# ----------------------------------------------------------------------------- BLEU / chrF


def test_bleu_hand_computed():
    perfect = bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect.value == pytest.approx(100.0)
    # precisions 5/6, 3/5, 2/4, 1/3; brevity penalty 1 (equal lengths)
    s = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert s.value == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert s.metric == "BLEU" and s.n == 1
    assert "tok:13a" in s.signature and "nrefs:1" in s.signature
    assert "tok:zh" in bleu(["猫坐着"], ["猫坐着"], "zh").signature


def test_bleu_corpus_level_not_mean_of_sentences():
    refs = ["the cat sat on the mat", "a b c d"]
    hyps = ["the cat sat on a mat", "a b c d"]
    # corpus: sums n-gram matches: 1g 9/10, 2g 6/8, 3g 4/6, 4g 2/4
    expected = 100 * (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25
    assert bleu(refs, hyps).value == pytest.approx(expected)


def test_bleu_multiple_references():
    s = bleu([["the cat sat on the mat", "a cat sat on a mat"]], ["a cat sat on a mat"])
    assert s.value == pytest.approx(100.0) and "nrefs:2" in s.signature
    with pytest.raises(ValueError, match="segment 1: expected 2 reference"):
        bleu([["a", "b"], ["c"]], ["a", "c"])


def test_chrf_hand_computed():
    assert chrf(["abc"], ["abc"]).value == pytest.approx(100.0)
    assert chrf(["abc"], ["xyz"]).value == pytest.approx(0.0)
    # unigrams P = R = 1/2, bigrams P = R = 0 (orders 3..6 absent) -> mean P = R = 1/4 -> F = 25
    s = chrf(["ab"], ["ac"])
    assert s.value == pytest.approx(25.0) and "nc:6" in s.signature
    assert chrf(["ab"], ["ab"], word_order=2).metric == "chrF++"


# ----------------------------------------------------------------------------- judges


def _tone(seconds=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_callable_judge_and_judged_metrics():
    calls = []

    def fake_asr(wavs, sr, lang):
        calls.append((len(wavs), sr, lang))
        return ["le chat dort", "vingt et un chiens"]

    judge = CallableJudge(fake_asr, name="fake")
    assert isinstance(judge, ASRJudge)
    wavs = [_tone(), _tone(0.3)]
    score, texts = asr_bleu(wavs, 16000, ["Le chat dort.", "21 chiens"], "fr", judge)
    assert texts == ["le chat dort", "vingt et un chiens"]
    assert score.metric == "ASR-BLEU" and score.value == pytest.approx(100.0)  # equal after normalising
    assert score.signature.startswith("judge:fake|norm:yes|")
    raw, _ = asr_bleu(wavs, 16000, ["Le chat dort.", "21 chiens"], "fr", judge, normalized=False)
    assert raw.value < 50
    err, texts = tts_roundtrip_wer(wavs, 16000, ["le chat dort", "vingt et un chats"], "fr", judge)
    assert err.value == pytest.approx(100 / 7)  # 1 substitution over 3 + 4 words
    assert err.signature.startswith("judge:fake|norm:audiopalm|lang:fr|")
    assert calls == [(2, 16000, "fr")] * 3


def test_judge_returning_wrong_count_is_an_error():
    with pytest.raises(ValueError, match="1 transcripts for 2 waveforms"):
        CallableJudge(lambda w, sr, lang: ["x"]).transcribe([_tone(), _tone()], 16000, "en")

    class Bad:
        name = "bad"

        def transcribe(self, wavs, sr, lang):
            return [1, 2]

    with pytest.raises(ValueError, match="judge bad returned 2 item"):
        tts_roundtrip_wer([_tone(), _tone()], 16000, ["a", "b"], "en", Bad())


def test_registry():
    assert set(asr_judges.JUDGES) == {"pocketsphinx", "whisper", "ctc", "callable"}
    assert isinstance(make_judge("pocketsphinx"), PocketSphinxJudge)
    whisper = make_judge("whisper", model="/nowhere")
    assert isinstance(whisper, WhisperJudge) and whisper.model == "/nowhere"
    with pytest.raises(KeyError, match="unknown ASR judge 'nope'"):
        make_judge("nope")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        WhisperJudge(batch_size=0)


def test_pocketsphinx_on_espeak_english(tmp_path):
    from audiopalm.audio.io import load

    assert shutil.which("espeak-ng"), "espeak-ng is needed (apt-get install espeak-ng)"
    path = tmp_path / "x.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "hello world"], check=True)
    wav16, sr = load(path, 16000)
    assert sr == 16000
    judge = PocketSphinxJudge()
    texts = judge.transcribe([wav16], 16000, "en")
    assert len(texts) == 1 and isinstance(texts[0], str)
    # a 22.05 kHz input is resampled by the judge itself
    wav22, sr22 = load(path)
    assert sr22 == 22050
    assert len(judge.transcribe([wav22], sr22, "en")) == 1
    with pytest.raises(ValueError, match="no model for language 'fr'"):
        judge.transcribe([wav16], 16000, "fr")
    with pytest.raises(Exception, match="NaN"):
        judge.transcribe([np.full(1600, np.nan, np.float32)], 16000, "en")


def _tiny_whisper(folder):
    """A random 1-layer Whisper with a 300-token byte-level BPE, saved like a hub checkpoint."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["hello world the cat", "bonjour le chat"], vocab_size=300, min_frequency=1, show_progress=False
    )
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
    )
    specials = ["<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})

    def token_id(token: str) -> int:
        i = tok.convert_tokens_to_ids(token)  # one token in, one id out
        assert isinstance(i, int), (token, i)
        return i

    ids = {t: token_id(t) for t in [eot] + specials}
    cfg = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
        eos_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        max_length=64,
    )
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(folder)
    return folder


def test_whisper_judge_tiny_random_model(tmp_path):
    folder = _tiny_whisper(tmp_path / "whisper")
    judge = WhisperJudge(model=str(folder), device="cpu", batch_size=2, max_new_tokens=5)
    wavs = [_tone(0.5, 24000), _tone(0.2, 24000), _tone(1.0, 24000)]  # 24 kHz: resampled to 16 kHz
    texts = judge.transcribe(wavs, 24000, "fr")
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # the forced language is really used: an unknown one is refused by generate()
    with pytest.raises(ValueError, match="not in the `generation_config.lang_to_id`"):
        judge.transcribe(wavs[:1], 24000, "de")
    score, transcripts = asr_bleu(wavs, 24000, ["le chat"] * 3, "fr", judge)
    assert transcripts == texts and 0.0 <= score.value <= 100.0 and not math.isnan(score.value)


def test_score_cli(tmp_path, capsys):
    import argparse
    import json

    (tmp_path / "ref.txt").write_text("the cat sat\nI have 2 dogs\n")
    (tmp_path / "hyp.txt").write_text("the cat sad\ni have two dogs\n")
    parser = argparse.ArgumentParser()
    metrics.add_arguments(parser)
    args = parser.parse_args(
        [str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt"), "--metric", "wer", "bleu", "--lang", "en", "--json"]
    )
    assert metrics.run(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["metric"] == "WER" and rows[0]["value"] == pytest.approx(100 / 7) and rows[0]["n"] == 2
    assert rows[1]["metric"] == "BLEU" and "tok:13a" in rows[1]["signature"]
    (tmp_path / "hyp.txt").write_text("one line\n")
    with pytest.raises(ValueError, match="hyp.txt: 1 lines but .*ref.txt has 2"):  # the cli: one line, exit 2
        metrics.run(args)


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="no segments"):
        bleu([], [])
    with pytest.raises(TypeError, match="not a single string"):
        chrf(["a"], "a")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        bleu(["a", "b"], ["a"])
