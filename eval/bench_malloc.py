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

import hashlib
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from audiopalm import runtime
from audiopalm.commands import demo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_bench  # noqa: E402  (eval/ is not a package)

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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = demo_bench.timed(make, folder, threads)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        **run,
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
    parser = demo_bench.parser(__doc__, steps=100, repeats=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="OMP threads to time (default 1 2)")
    args = parser.parse_args(argv)

    out = demo_bench.finished_demo(parser, args.demo, ("corpus", "text_lm", "tokens", "acoustic", "audiopalm"))
    p = demo.PROFILES[args.profile]
    p = demo.with_bf16(p) if p.bf16 and demo.native_bf16() else p  # as the demo trains here
    p = demo_bench.short_runs(p, args.steps)
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
    demo_bench.write(record, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
