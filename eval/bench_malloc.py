"""What keeping freed memory in glibc's malloc (audiopalm/runtime.py) buys the demo's training stages.

Runs the demo's own stage-0, acoustic-stage and fine-tune commands (``audiopalm.commands.demo``, on a finished demo
folder's corpus, units, codec and token stores) for a few steps each with glibc's defaults
(``AUDIOPALM_MALLOC=system``) and with the setting every audiopalm command applies, interleaved, on one thread (the
demo's lanes) and on two (its later stages). Reads each run's speed (tokens per second, the median of the logged
values after the first) off ``metrics.jsonl``, its wall, user and kernel CPU seconds (the command's own, from
``getrusage``), and checks that both settings save the same weights bit for bit. Nothing else should run meanwhile.

  python eval/bench_malloc.py --demo runs/demo --out eval/results/bench_malloc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from audiopalm import runtime
from audiopalm.commands import demo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lanes import _speed  # noqa: E402  (eval/ is not a package: the same reading of metrics.jsonl)

SETTINGS = {"glibc defaults": "system", "keep freed memory": ""}


def _weights_hash(folder: Path) -> str:
    """sha256 of the saved final weights (every safetensors file of ``folder/final``, by name)."""
    files = sorted((folder / "final").rglob("*.safetensors"))
    if not files:
        raise SystemExit(f"{folder}/final holds no safetensors weights")
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _timed(make, folder: Path, setting: str, threads: int) -> dict:
    """One stage command with the allocator ``setting`` on ``threads`` OMP threads: speed, wall and CPU seconds."""
    os.environ[runtime.MALLOC_ENV] = setting  # the command inherits it (demo._run passes the environment on)
    demo._LANE.threads, demo._LANE.log = threads, folder.with_suffix(".log")
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    make(folder)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "tokens_per_s": round(_speed(folder), 1),
        "wall_s": round(wall, 1),
        "user_s": round(after.ru_utime - before.ru_utime, 1),
        "kernel_s": round(after.ru_stime - before.ru_stime, 1),
        "weights": _weights_hash(folder),
    }


def summarise(by: dict[str, list[dict]]) -> dict:
    """One stage's runs under each setting: the medians of each measure, the speed-up, whether the weights agree."""
    med = {label: statistics.median(r["tokens_per_s"] for r in rs) for label, rs in by.items()}
    measures = ("wall_s", "user_s", "kernel_s")
    return {
        "runs": by,
        "median tokens/s": med,
        "median seconds": {
            label: {m: round(statistics.median(r[m] for r in rs), 2) for m in measures} for label, rs in by.items()
        },
        "speed-up": round(med["keep freed memory"] / med["glibc defaults"], 3),
        "same weights": len({r["weights"] for rs in by.values() for r in rs}) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", default="runs/demo", help="a finished units demo folder (default runs/demo)")
    parser.add_argument("--profile", default="default", choices=sorted(demo.PROFILES), help="its profile")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of each run (default 100)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="OMP threads to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, interleaved (default 2)")
    parser.add_argument("--out", required=True, help="write the results here as JSON")
    args = parser.parse_args(argv)

    out = Path(args.demo)
    missing = [s for s in ("corpus", "text_lm", "tokens", "acoustic", "audiopalm") if not (out / s / ".done").is_file()]
    if missing:
        parser.error(f"{out} is not a finished units demo folder (no {', '.join(missing)})")
    steps = (f"train.max_steps={args.steps}", "optim.warmup_steps=10", f"train.save_every={args.steps}")
    quiet = ("train.eval_every=100000", "train.log_with=none", "train.log_every=10")
    p = demo.PROFILES[args.profile]
    p = demo.with_bf16(p) if p.bf16 and demo.native_bf16() else p  # as the demo trains here
    p = dataclasses.replace(
        p,
        text_lm_overrides=(*p.text_lm_overrides, *steps, *quiet),
        finetune_overrides=(*p.finetune_overrides, *steps, *quiet),
        acoustic_overrides=(*p.acoustic_overrides, *steps, *quiet),
    )
    stages = {
        "stage0": demo._text_lm(out / "corpus", p, 0),
        "acoustic": demo._acoustic(out, p, 0),
        "finetune": demo._audiopalm(out, p, 0),
    }
    record: dict = {
        "what": f"{args.steps} steps of the {args.profile} profile's stage-0, acoustic and fine-tune commands on "
        f"{out}, with glibc's malloc defaults (AUDIOPALM_MALLOC=system) and keeping freed memory (audiopalm/runtime.py)",
        "glibc": runtime.glibc_version(),
        "load_before": os.getloadavg()[0],
    }
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for threads in args.threads:
                for label, setting in SETTINGS.items():
                    for name, make in stages.items():
                        folder = Path(tmp) / f"{name}_{threads}_{setting or 'keep'}_{repeat}"
                        r = _timed(make, folder, setting, threads)
                        runs.setdefault(f"{name}, {threads} thread(s)", {}).setdefault(label, []).append(r)
                        print(name, threads, label, r, flush=True)
    record.update({key: summarise(by) for key, by in runs.items()})
    record["load_after"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
