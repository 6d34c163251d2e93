"""What the k-means of ``fit-ctc-units`` costs, and what seeding on a sample changes.

Takes a fitted ``ctc_units`` tokenizer (``audiopalm tokenizer fit-ctc-units``) and the manifest it was fitted on,
rebuilds the states its k-means clustered (the same layer, stride, frame cap and seeded order,
:func:`audiopalm.tokenizers.ctc_units.unit_states`), standardises them as the fit does, then for each
``--seed-points`` value (k-means++ on that many points per centre; ``all``: on every point) times the seeding and the
whole fit and reports the final inertia (mean squared distance to the nearest centre). One thread per run is not
forced: run it alone on the machine.

  python eval/bench_kmeans.py --units runs/demo/units --manifest runs/demo/corpus/train.jsonl \\
      --iters 20 --seed-points all 16 4 --out eval/results/bench_kmeans.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from audiopalm.tokenizers.ctc_units import CTCUnitsTokenizer, unit_states
from audiopalm.tokenizers.kmeans import kmeans, kmeans_plus_plus
from audiopalm.tokenizers.speech_encoder import load_feats, manifest_utterances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--units", required=True, help="a fitted ctc_units tokenizer folder")
    parser.add_argument("--manifest", required=True, help="the manifest it was fitted on (its train rows are read)")
    parser.add_argument("--max-frames", type=int, default=200_000, help="frame cap of the fit (default: fit's 200000)")
    parser.add_argument("--iters", type=int, default=20, help="Lloyd iterations (default 20, the demo's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frame order and k-means (default 0)")
    parser.add_argument(
        "--seed-points", nargs="+", default=["all", "16"], help="k-means++ points per centre: integers or 'all'"
    )
    parser.add_argument("--out", required=True, help="write the results here as JSON")
    args = parser.parse_args(argv)

    tok = CTCUnitsTokenizer.from_pretrained(args.units)
    k, layer, stride = tok.config.num_units, tok.config.layer, tok.config.stride
    utts = manifest_utterances(args.manifest, split="train")
    feats = load_feats([u[0] for u in utts], tok.encoder.frontend, progress=True, desc="log-mel (train)")
    t0 = time.perf_counter()
    x = unit_states(
        tok.encoder, feats, layer=layer, stride=stride, max_frames=args.max_frames, seed=args.seed, progress=True
    )
    states_s = time.perf_counter() - t0
    x = ((x - x.mean(0)) / x.std(0).clamp_min(1e-5)).contiguous()
    runs = []
    for setting in args.seed_points:
        per_centre = None if setting == "all" else int(setting)
        cap = None if per_centre is None else per_centre * k
        t0 = time.perf_counter()
        kmeans_plus_plus(x, k, torch.Generator().manual_seed(args.seed), max_points=cap)
        seeding_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = kmeans(x, k, iters=args.iters, seed=args.seed, seed_points_per_centre=per_centre)
        fit_s = time.perf_counter() - t0
        used = int((torch.bincount(result.assignments, minlength=k) > 0).sum())
        runs.append(
            {
                "seed_points_per_centre": setting,
                "seeding_points": min(len(x), cap) if cap else len(x),
                "seeding_seconds": round(seeding_s, 1),
                "fit_seconds": round(fit_s, 1),
                "inertia": round(result.inertia, 4),
                "units_used": used,
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    record = {
        "what": f"k-means (K {k}, {args.iters} Lloyd iterations) of {args.units}'s states (layer {layer}, "
        f"stride {stride}) of {args.manifest}'s training audio, standardised; seeding timed alone, then the whole fit",
        "frames": len(x),
        "dim": x.shape[1],
        "states_seconds": round(states_s, 1),
        "threads": torch.get_num_threads(),
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
