"""What the benches that time the demo's own stage commands share (bench_lanes, bench_bf16, bench_malloc).

Their command line (a finished demo folder, its profile, steps and repeats, the JSON to write), the check that the
folder holds the stages they train on, a profile whose training stages run a few steps with no dev evaluation, the
speed read off a run's ``metrics.jsonl`` and a timed run, and the JSON record they write. eval/ is not a package: each bench puts
this folder on ``sys.path`` and imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from audiopalm.commands import demo


def parser(doc: str, *, steps: int, repeats: int, units: bool = True) -> argparse.ArgumentParser:
    """The shared options; ``doc`` (a bench's module docstring) gives the description and, after its first
    paragraph, the epilog."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kind = "units demo" if units else "demo"
    p.add_argument("--demo", default="runs/demo", help=f"a finished {kind} folder (default runs/demo)")
    p.add_argument("--profile", default="default", choices=sorted(demo.PROFILES), help="its profile")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps of each run (default {steps})")
    p.add_argument("--repeats", type=int, default=repeats, help=f"runs of each arm, interleaved (default {repeats})")
    p.add_argument("--out", required=True, help="write the results here as JSON")
    return p


def finished_demo(p: argparse.ArgumentParser, folder: str, stages: tuple[str, ...]) -> Path:
    """``folder`` as a path once each of ``stages`` is done there; a usage error naming the missing ones if not."""
    out = Path(folder)
    missing = [s for s in stages if not (out / s / ".done").is_file()]
    if missing:
        p.error(f"{out} is not a finished demo folder for this bench (no {', '.join(missing)})")
    return out


def short_runs(profile: demo.Profile, steps: int, *extra: str) -> demo.Profile:
    """``profile`` with stage 0, the acoustic stage and the fine-tune cut to ``steps`` steps (saved at the end), no
    dev evaluation, no tracker, logged every 10 steps, and ``extra`` overrides on each."""
    cut = (
        f"train.max_steps={steps}",
        "optim.warmup_steps=10",
        f"train.save_every={steps}",
        "train.eval_every=100000",
        "train.log_with=none",
        "train.log_every=10",
        *extra,
    )
    return dataclasses.replace(
        profile,
        text_lm_overrides=(*profile.text_lm_overrides, *cut),
        finetune_overrides=(*profile.finetune_overrides, *cut),
        acoustic_overrides=(*profile.acoustic_overrides, *cut),
    )


def speed(folder: Path) -> float:
    """Median logged tokens/s of a run, the first logged step left out (warm-up)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    if not speeds:
        raise SystemExit(f"{folder}/metrics.jsonl logged no tokens_per_s: give more --steps")
    return statistics.median(speeds)


def timed(make, folder: Path, threads: int | None) -> dict:
    """Run one stage command (``make(folder)``) as a demo lane does, on ``threads`` OMP threads (None: the default),
    its output in ``folder``.log: its wall seconds and speed."""
    demo._LANE.threads, demo._LANE.log = threads, folder.with_suffix(".log")
    t0 = time.perf_counter()
    make(folder)
    return {"wall_s": round(time.perf_counter() - t0, 1), "tokens_per_s": round(speed(folder), 1)}


def write(record: dict, out: str) -> None:
    """Write ``record`` as JSON to ``out``, with the machine's load average now beside it."""
    record["load_after"] = os.getloadavg()[0]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
