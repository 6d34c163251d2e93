"""eval/probe_tokens.py: the CTC probe reads text out of codes that spell it, not out of codes that don't,
and reads a real token store one utterance per wav."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from test_finetune_audiopalm import build_world

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
    from audiopalm.token_store import load_token_store

    rows = load_token_store(world["store"]).dataset
    wavs = {a for a, lang in zip(rows["audio"], rows["lang"]) if lang == "en"}
    assert len(pairs) == len(wavs) and size == 16 and all(c.shape[0] == 2 for c, _ in pairs)
    out = tmp_path / "probe.json"
    args = ["--train", str(world["store"]), "--dev", str(world["store"]), "--codebooks", "1", "2", "--steps", "3",
            "--batch", "4", "--out", str(out)]
    assert probe_tokens.main(args) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["k"] for r in results] == [1, 2] and all(0 <= r["cer"] for r in results)
    assert probe_tokens.main(args[:4] + ["--lang", "xx"]) == 2  # no such utterances: an error, not a crash
