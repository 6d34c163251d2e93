"""The offline demo, stage by stage (`make demo` runs `audiopalm demo`).

Each stage writes into its own folder under --out and is skipped when its output is already there
(a stage writes a `.done` marker last), so re-running resumes where it stopped. Stages:

  corpus      data_prep/synth_corpus.py: the four-language parallel corpus spoken by espeak-ng
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one demo run."""

    train: int
    """Training sentences (each spoken in en, fr, es, de)."""
    dev: int
    """Dev sentences."""
    test: int
    """Test sentences (never seen in training)."""


# smoke: every stage on a tiny corpus (part of the test suite); default: the README's demo.
PROFILES = {
    "smoke": Profile(train=60, dev=10, test=10),
    "default": Profile(train=1500, dev=100, test=100),
}


def _stage(out: Path, name: str, fn, *, force: bool = False) -> Path:
    """Run ``fn(folder)`` unless ``folder/.done`` exists; print one line saying what is where."""
    folder = out / name
    marker = folder / ".done"
    if marker.is_file() and not force:
        print(f"[{name}] done already: {folder} (delete {marker} to redo)")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    written = fn(folder)
    marker.write_text(json.dumps({"seconds": round(time.time() - t0, 1)}) + "\n")
    print(f"[{name}] {time.time() - t0:.0f} s: wrote {written or folder}")
    return folder


def _corpus(profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        from data_prep.synth_corpus import synthesize
        from audiopalm.manifest import check_manifest, format_summary

        synthesize(folder, train=profile.train, dev=profile.dev, test=profile.test, seed=seed)
        for split in ("train", "dev", "test"):
            print(format_summary(check_manifest(folder / f"{split}.jsonl", decode=False, progress=False)))
        return f"{folder}/{{train,dev,test}}.jsonl, wav/, corpus.json, README.md"
    return fn


def add_arguments(parser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default",
                        help="smoke: tiny corpus, every stage in minutes; default: the README's demo")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default: 0)")
    parser.add_argument("--force", action="store_true", help="redo stages that are done already")


def run(args) -> int:
    profile = PROFILES[args.profile]
    out = Path(args.out)
    t0 = time.time()
    _stage(out, "corpus", _corpus(profile, args.seed), force=args.force)
    print(f"demo ({args.profile}) finished in {time.time() - t0:.0f} s; outputs under {out}")
    return 0
