"""What two stages side by side buy on a small machine, and what the fine-tune's row length costs.

Runs the demo's own stage-0 and fine-tune commands (``audiopalm.commands.demo``, on a finished demo folder's corpus,
units, acoustic stage and token stores) for a few steps each into a scratch folder, and reads their training speed
(tokens per second, padding excluded, the median of the logged values after the first) off ``metrics.jsonl``:

- ``all cores``: one run on every core (OMP's default), as ``audiopalm demo --sequential`` runs a stage;
- ``1 thread``: one run with ``OMP_NUM_THREADS=1``;
- ``two side by side``: two runs at once through the demo's own lanes (each on half the cores: one thread on 2
  cores); their summed speed against ``all cores`` is what the lanes buy;
- fine-tune only, ``rows of N``: the profile's fine-tune with ``data.max_len=N`` and as many rows a step as keep its
  tokens a step (512 x 4 = 256 x 8), on all cores, ``--repeats`` times interleaved (the median is reported).

Nothing else should run on the machine meanwhile (wall-clock speeds).

  python eval/bench_lanes.py --demo runs/demo --out eval/results/bench_lanes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from audiopalm.commands import demo


def _speed(folder: Path) -> float:
    """Median logged tokens/s of a run, the first logged step left out (warm-up)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    if not speeds:
        raise SystemExit(f"{folder}/metrics.jsonl logged no tokens_per_s: give more --steps")
    return statistics.median(speeds)


def _timed(make, folder: Path, threads: int | None) -> dict:
    """Run one stage command (``make(folder)``) with ``threads`` OMP threads (None: the default), output to a log."""
    demo._LANE.threads = threads
    demo._LANE.log = folder.with_suffix(".log")
    t0 = time.perf_counter()
    make(folder)
    return {"wall_s": round(time.perf_counter() - t0, 1), "tokens_per_s": round(_speed(folder), 1)}


def _pair(make, scratch: Path, name: str) -> list[dict]:
    """Two runs of ``make`` at once, as ``audiopalm demo`` runs its two lanes (each on half the cores)."""
    names = [f"{name}_a", f"{name}_b"]
    demo._side_by_side(scratch, [[(n, make)] for n in names], sequential=False, force=False)
    return [
        {
            "wall_s": json.loads((scratch / n / ".done").read_text())["seconds"],
            "tokens_per_s": round(_speed(scratch / n), 1),
        }
        for n in names
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", default="runs/demo", help="a finished demo folder (default runs/demo)")
    parser.add_argument("--profile", default="default", choices=sorted(demo.PROFILES), help="its profile")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each run (default 60)")
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 256], help="fine-tune row lengths to time")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each row length, interleaved (default 3)")
    parser.add_argument("--out", required=True, help="write the results here as JSON")
    args = parser.parse_args(argv)

    out = Path(args.demo)
    missing = [s for s in ("corpus", "text_lm", "tokens", "audiopalm") if not (out / s / ".done").is_file()]
    if missing:
        parser.error(f"{out} is not a finished demo folder (no {', '.join(missing)})")
    steps = (f"train.max_steps={args.steps}", "optim.warmup_steps=10", f"train.save_every={args.steps}")
    quiet = ("train.eval_every=100000", "train.log_with=none", "train.log_every=10")
    base = demo.PROFILES[args.profile]
    profile = dataclasses.replace(
        base,
        text_lm_overrides=(*base.text_lm_overrides, *steps, *quiet),
        finetune_overrides=(*base.finetune_overrides, *steps, *quiet),
    )
    stages = {
        "stage0": demo._text_lm(out / "corpus", profile, 0),
        "finetune": demo._audiopalm(out, profile, 0),
    }
    record: dict = {
        "what": f"{args.steps} steps of the {args.profile} profile's stage-0 and fine-tune commands on {out}",
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, make in stages.items():
            alone = _timed(make, scratch / f"{name}_all", None)
            one = _timed(make, scratch / f"{name}_1", 1)
            pair = _pair(make, scratch, name)
            together = sum(r["tokens_per_s"] for r in pair)
            record[name] = {
                "all cores": alone,
                "1 thread": one,
                "two side by side": pair,
                "two side by side / all cores": round(together / alone["tokens_per_s"], 3),
            }
            print(name, json.dumps(record[name]), flush=True)
        runs: dict[str, list[dict]] = {}
        for repeat in range(args.repeats):  # interleaved: 512, 256, 512, 256, ...
            for length in args.rows:
                per_step = 2048 // length
                rows_profile = dataclasses.replace(
                    profile,
                    finetune_overrides=(
                        *profile.finetune_overrides,
                        f"data.max_len={length}",
                        f"train.micro_batch_size={per_step}",
                    ),
                )
                key = f"rows of {length} x {per_step}"
                runs.setdefault(key, []).append(
                    _timed(demo._audiopalm(out, rows_profile, 0), scratch / f"rows_{length}_{repeat}", None)
                )
                print(key, json.dumps(runs[key][-1]), flush=True)
        record["finetune rows"] = {
            key: {"runs": r, "median tokens_per_s": statistics.median(x["tokens_per_s"] for x in r)}
            for key, r in runs.items()
        }
    record["load_after"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
