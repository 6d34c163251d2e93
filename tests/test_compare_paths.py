"""eval/compare_paths.py on the toy world of builders.build_world (tiny profile, 2 steps per path):
both recipes run, both are evaluated, and the table has every column for both paths."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from builders import build_world, split_manifests

REPO = Path(__file__).resolve().parents[1]


def _compare_module():
    if str(REPO / "eval") not in sys.path:
        sys.path.insert(0, str(REPO / "eval"))
    import compare_paths

    return compare_paths


def demo_layout(world: dict, root: Path) -> Path:
    """The `audiopalm demo` folder layout over the world's files (links; the store holds train and dev rows)."""
    data = root / "data"
    corpus = Path(world["train"]).parent  # manifests name their wavs relative to their folder: link the folder
    (corpus / "test.jsonl").write_text(Path(world["dev"]).read_text())  # dev sentences are unseen in training too
    for name, target in (
        ("corpus", corpus),
        ("tokenizer", world["tok"]),
        ("tokens/train", world["store"]),
        ("tokens/dev", world["store"]),
        ("text_lm/final", world["lm"]),
    ):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, data / name)
    return data


def test_compare_writes_the_table_with_every_column(tmp_path):
    cp = _compare_module()
    world = split_manifests(build_world(tmp_path / "world"))
    data = demo_layout(world, tmp_path)
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    rows = cp.compare("tiny", out, data=data, steps=2)
    table = json.loads((out / "comparison.json").read_text())
    assert [r["path"] for r in table["rows"]] == ["audiopalm", "speech_llama"] == [r["path"] for r in rows]
    for r in table["rows"]:
        assert set(cp.COLUMNS) <= set(r), set(cp.COLUMNS) - set(r)
        assert r["steps"] == 2 and r["trainable_params"] > 0 and r["train_tokens_per_s"] > 0, r
        assert r["decode_s_per_utt"] > 0 and r["utterances"] > 0, r
        assert 0 <= r["asr_wer_all"] and 0 <= r["ast_bleu_all"] <= 100, r
        assert r["asr_wer_heldout"] is None, r  # the toy world has no corpus.json: no voice subsets
    md = (out / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| path"))
    assert header.count("|") == len(cp.COLUMNS) + 1 and "ASR WER (held-out voice)" in header
    assert md.count("| audiopalm |") == 1 and md.count("| speech_llama |") == 1
    # both paths trained with the same steps, batch, LR and seed; Speech-Llama trains its encoder too
    sl = json.loads((out / "speech_llama" / "summary.json").read_text())
    assert sl["parameter_counts"]["encoder"] > 0 and sl["steps"] == 2


def test_missing_data_is_named(tmp_path):
    cp = _compare_module()
    with pytest.raises(FileNotFoundError, match="text_lm/final"):
        cp.data_layout(tmp_path)
