"""``train.log_with``: the trackers accelerate supports, several at once, offline modes respected, and every file
under ``output_dir/logs`` (never the working directory)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from builders import TINY_CONFIGS, run_recipe_in_process, write_corpus

TINY = TINY_CONFIGS["pretrain_text"]
run_in_process = partial(run_recipe_in_process, "pretrain_text")


def _wandb_history(path: Path) -> list[dict]:
    """The history rows (metric name -> JSON value) of a wandb offline run file: a LevelDB-style log (a 7-byte
    ``:W&B`` header, 32 KiB blocks of records split into FULL/FIRST/MIDDLE/LAST fragments, each with a 7-byte
    header) of ``wandb_internal_pb2.Record`` messages. wandb ships no Python reader for it any more."""
    import struct

    from wandb.proto import wandb_internal_pb2

    blob, block, pos, buf, rows = path.read_bytes(), 32768, 7, b"", []
    assert blob[:4] == b":W&B", blob[:7]
    while pos + 7 <= len(blob):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", blob[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        data, pos = blob[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = data if kind in (1, 2) else buf + data
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
    return rows


def test_tensorboard_and_wandb_offline_log_the_run_under_output_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")  # wandb's own switch: no network, no account
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    train, dev = write_corpus(tmp_path / "corpus", train=16, dev=4)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "run"
    run_in_process(
        [
            "--config",
            str(TINY),
            f"data.manifests=[{train},{dev}]",
            f"train.output_dir={out}",
            "train.log_with=tensorboard,wandb",
            "train.max_steps=3",
            "train.save_every=0",
        ]
    )
    import wandb

    wandb.teardown()  # the run file is written by wandb's service process: stop it so every record is on disk
    assert list(cwd.iterdir()) == []  # wandb would write ./wandb by default
    runs = list((out / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, sorted(str(p) for p in (out / "logs").rglob("*"))
    history = _wandb_history(runs[0])
    debug = "".join(p.read_text()[-3000:] for p in runs[0].parent.glob("logs/debug*.log"))
    assert [int(h["_step"]) for h in history if "train/loss" in h] == [1, 2, 3], (history, debug)
    assert [int(h["_step"]) for h in history if "dev/loss/all" in h] == [3], history

    # the stage-0 text LM's final/ is hub-ready too: a card, no absolute path, loads from a new place
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audiopalm.modeling.card import find_absolute_paths, read_card_data

    card = read_card_data(out / "final")
    assert card["pipeline_tag"] == "text-generation" and "en" in card["language"] and "lm" in card["tags"], card
    assert find_absolute_paths(out / "final") == []
    moved = shutil.copytree(out / "final", tmp_path / "elsewhere" / "final")
    assert AutoModelForCausalLM.from_pretrained(moved).config.vocab_size % 64 == 0 and len(
        AutoTokenizer.from_pretrained(moved)
    )

    events = sorted(Path(out / "logs").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (out / "logs").iterdir())
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3], acc.Tags()
    assert [e.step for e in acc.Scalars("dev/loss/all")] == [3], acc.Tags()
