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


def test_units_profile_gives_both_paths_the_same_encoder(tmp_path):
    """The units profile: AudioPaLM reads the data's units/, Speech-Llama the frozen states of their encoder."""
    cp = _compare_module()
    with pytest.raises(FileNotFoundError, match="units"):
        cp.data_layout(tmp_path, units=True)
    for name in ("corpus/train.jsonl", "corpus/dev.jsonl", "corpus/test.jsonl", "units", "text_lm/final"):
        (tmp_path / name).mkdir(parents=True)
    for name in ("tokens/train", "tokens/dev"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "text_lm/final/config.json").write_text('{"max_position_embeddings": 256}')
    d = cp.data_layout(tmp_path, units=True)
    p = cp.PROFILES["units"]
    ap = cp.recipe_args("audiopalm", d, p, tmp_path / "run", 0)
    sl = cp.recipe_args("speech_llama", d, p, tmp_path / "run", 0)
    assert f"model.audio_tokenizer={tmp_path / 'units'}" in ap and "data.max_len=256" in ap
    assert f"model.encoder=units:{tmp_path / 'units'}" in sl
    assert {"model.freeze_encoder=true", "model.projector_stride=1"} <= set(sl)
    same = {a for a in ap if a.startswith(("train.", "optim."))}
    assert same == {a for a in sl if a.startswith(("train.", "optim."))} and f"optim.lr={p.lr}" in same
    codes = cp.recipe_args("speech_llama", d, cp.PROFILES["default"], tmp_path, 0)
    assert not any(a.startswith("model.encoder=") for a in codes)  # the codec profiles train their own encoder
