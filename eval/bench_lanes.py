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

import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from audiopalm.commands import demo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_bench  # noqa: E402  (eval/ is not a package)


def _pair(make, scratch: Path, name: str) -> list[dict]:
    """Two runs of ``make`` at once, as ``audiopalm demo`` runs its two lanes (each on half the cores)."""
    names = [f"{name}_a", f"{name}_b"]
    demo._side_by_side(scratch, [[(n, make)] for n in names], sequential=False, force=False)
    return [
        {
            "wall_s": json.loads((scratch / n / ".done").read_text())["seconds"],
            "tokens_per_s": round(demo_bench.speed(scratch / n), 1),
        }
        for n in names
    ]


def main(argv: list[str] | None = None) -> int:
    parser = demo_bench.parser(__doc__, steps=60, repeats=3, units=False)
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 256], help="fine-tune row lengths to time")
    args = parser.parse_args(argv)

    out = demo_bench.finished_demo(parser, args.demo, ("corpus", "text_lm", "tokens", "audiopalm"))
    profile = demo_bench.short_runs(demo.PROFILES[args.profile], args.steps)
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
            alone = demo_bench.timed(make, scratch / f"{name}_all", None)
            one = demo_bench.timed(make, scratch / f"{name}_1", 1)
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
                    demo_bench.timed(demo._audiopalm(out, rows_profile, 0), scratch / f"rows_{length}_{repeat}", None)
                )
                print(key, json.dumps(runs[key][-1]), flush=True)
        record["finetune rows"] = {
            key: {"runs": r, "median tokens_per_s": statistics.median(x["tokens_per_s"] for x in r)}
            for key, r in runs.items()
        }
    demo_bench.write(record, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
