"""``train.log_with``: the trackers accelerate supports, several at once, offline modes respected, and every file
under ``output_dir/logs`` (never the working directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pretrain_text import TINY, run_in_process, write_corpus


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
    assert list(cwd.iterdir()) == []  # wandb would write ./wandb by default
    runs = list((out / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, sorted(str(p) for p in (out / "logs").rglob("*"))
    logged = runs[0].read_bytes()  # wandb's own binary log; the metric names are stored as plain strings
    assert all(key.encode() in logged for key in ("train/loss", "train/lr", "dev/loss/all")), "metrics not in wandb"

    events = sorted(Path(out / "logs").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (out / "logs").iterdir())
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3], acc.Tags()
    assert [e.step for e in acc.Scalars("dev/loss/all")] == [3], acc.Tags()
