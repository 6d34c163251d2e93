"""eval/probe_tokens.py: the CTC probe reads text out of codes that spell it, not out of codes that don't,
and reads a real token store one utterance per wav."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from builders import build_world

REPO = Path(__file__).resolve().parents[1]
WORDS = ["ab", "ba", "cab", "dd", "ace", "bead", "ec"]


def _probe_module():
    if str(REPO / "eval") not in sys.path:
        sys.path.insert(0, str(REPO / "eval"))
    import probe_tokens

    return probe_tokens


def _pairs(n: int, seed: int, informative: bool) -> list:
    """Sentences of toy words; codes [2, F]: 2 frames per character, codebook 0 names the character
    (informative) or is noise; codebook 1 is always noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
        first = np.repeat([" abcde".index(ch) + 1 for ch in text], 2)
        noise = rng.integers(0, 8, size=(2, first.size))
        codes = np.stack([first if informative else noise[0], noise[1]])
        out.append((codes, text))
    return out


def test_probe_reads_codes_that_carry_the_text_and_not_codes_that_do_not():
    probe = _probe_module().probe
    kw = dict(k=2, codebook_size=8, steps=120, batch=16, lr=1e-2, hidden=32, progress=False)
    good = probe(_pairs(200, 0, True), _pairs(40, 1, True), **kw)
    bad = probe(_pairs(200, 0, False), _pairs(40, 1, False), **kw)
    assert good["cer"] < 10, good
    assert bad["cer"] > 40, bad
    assert good["dev_utts"] == 40 and good["steps"] == 120 and len(good["examples"]) == 3


def test_cli_on_a_token_store_uses_each_wav_once(tmp_path):
    probe_tokens = _probe_module()
    world = build_world(tmp_path)
    pairs, size = probe_tokens.store_pairs(world["store"], "en")
    from audiopalm.data.token_store import load_token_store

    rows = load_token_store(world["store"]).dataset
    wavs = {a for a, lang in zip(rows["audio"], rows["lang"], strict=True) if lang == "en"}
    assert len(pairs) == len(wavs) and size == 16 and all(c.shape[0] == 2 for c, _ in pairs)
    out = tmp_path / "probe.json"
    args = [
        "--train",
        str(world["store"]),
        "--dev",
        str(world["store"]),
        "--codebooks",
        "1",
        "2",
        "--steps",
        "3",
        "--batch",
        "4",
        "--out",
        str(out),
    ]
    assert probe_tokens.main(args) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["k"] for r in results] == [1, 2] and all(0 <= r["cer"] for r in results)
    assert probe_tokens.main(args[:4] + ["--lang", "xx"]) == 2  # no such utterances: an error, not a crash


def test_probe_judge_hears_a_wav_as_the_store_holds_its_codes(tmp_path):
    """ProbeJudge: waveform -> the audio tokenizer's codes -> the probe; the same transcript as the probe on the
    store's codes of that wav (so the judge reads speech as the LM's tokens spell it)."""
    import pytest

    from audiopalm.audio.io import load
    from audiopalm.data.token_store import load_token_store
    from audiopalm.tokenizers.base import load_audio_tokenizer

    probe_tokens = _probe_module()
    world = build_world(tmp_path)
    tok = load_audio_tokenizer(world["tok"])
    # a few steps: what is tested is that a wav and its stored codes give the same transcript
    judge = probe_tokens.ProbeJudge.train(
        tok, world["store"], ["en", "fr"], steps=20, progress=False, batch=8, lr=1e-2, hidden=64
    )
    assert set(judge.probes) == {"en", "fr"}
    pairs, _ = probe_tokens.store_pairs(world["store"], "en")
    rows = load_token_store(world["store"]).dataset
    paths = list(
        dict.fromkeys(a for a, lang in zip(rows["audio"], rows["lang"], strict=True) if lang == "en")
    )  # store order
    model, chars = judge.probes["en"]
    from_codes = probe_tokens.transcribe(model, chars, [c for c, _ in pairs])
    wavs = [load(p, tok.sample_rate)[0] for p in paths]
    assert judge.transcribe(wavs, tok.sample_rate, "en") == from_codes
    assert any(from_codes), from_codes  # the probe writes something, so the equality says something
    with pytest.raises(ValueError, match="no probe for language 'de'"):
        judge.transcribe(wavs[:1], tok.sample_rate, "de")

    # judge_outputs on an eval folder, with a judge that knows each corpus wav's text (the world's clips are too
    # short for a CTC probe to learn from): speech identical to the reference scores as the reference does,
    # no speech (judged as silence) scores worse, and so does another sentence's reference audio
    from audiopalm.data.manifest import read_manifest

    rows = [r for r in read_manifest(world["manifest"]) if r.lang == "en" and r.tgt_lang == "fr"]
    texts = {}
    for r in rows:
        texts[load(r.audio, tok.sample_rate)[0].tobytes()] = r.text
        texts[load(r.tgt_audio, tok.sample_rate)[0].tobytes()] = r.tgt_text

    class Oracle:
        name, tokenizer, probes = "ctc-probe", tok, {"en": None, "fr": None}

        def transcribe(self, wavs, sample_rate, lang):
            return [texts.get(w.tobytes(), "") for w in wavs]

    folder = tmp_path / "eval"
    (folder / "outputs").mkdir(parents=True)
    tts = [
        {
            "task": "TTS",
            "src": "en",
            "tgt": None,
            "subset": "all",
            "text": r.text,
            "ref_text": None,
            "audio": r.audio if i % 2 == 0 else None,
            "ref_audio": r.audio,
        }
        for i, r in enumerate(rows)
    ]
    s2st = [
        {
            "task": "S2ST",
            "src": "en",
            "tgt": "fr",
            "subset": "all",
            "text": r.text,
            "ref_text": r.tgt_text,
            "audio": r.tgt_audio,
            "ref_audio": r.tgt_audio,
        }
        for r in rows
    ]
    for name, lines in (("TTS.jsonl", tts), ("S2ST.jsonl", s2st)):
        (folder / "outputs" / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = {m["metric"]: m for m in probe_tokens.judge_outputs(folder, Oracle())}
    assert set(got) == {
        f"{m} [ctc-probe]{s}"
        for m in ("TTS-WER", "TTS-CER", "ASR-BLEU")
        for s in ("", " (ref audio)", " (another's ref audio)")
    }
    value = {k: v["value"] for k, v in got.items()}
    assert value["TTS-WER [ctc-probe] (ref audio)"] == 0 and value["ASR-BLEU [ctc-probe] (ref audio)"] == 100
    assert value["ASR-BLEU [ctc-probe]"] == 100  # the S2ST "outputs" are the reference clips
    half = sum(1 for t in tts if t["audio"] is None)
    words = sum(len(r.text.split()) for r, t in zip(rows, tts, strict=True) if t["audio"] is None)
    assert half and value["TTS-WER [ctc-probe]"] == round(100 * words / sum(len(r.text.split()) for r in rows), 4)
    assert (
        value["TTS-CER [ctc-probe] (another's ref audio)"] > 0
        and value["ASR-BLEU [ctc-probe] (another's ref audio)"] < 100
    )
    assert got["TTS-WER [ctc-probe]"]["n"] == len(rows) and got["TTS-WER [ctc-probe]"]["signature"].startswith(
        "judge:ctc-probe"
    )
    assert (
        probe_tokens.main(
            [
                "--train",
                str(world["store"]),
                "--tokenizer",
                str(world["tok"]),
                "--steps",
                "2",
                "--judge-eval",
                str(folder),
            ]
        )
        == 0
    )
    assert {m["metric"] for m in json.loads((folder / "probe_judge.json").read_text())} == set(got)
