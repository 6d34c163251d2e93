"""What bfloat16 autocast buys each training stage of the demo, on this machine's CPU.

Runs the demo's own stage-0, acoustic-stage and fine-tune commands (``audiopalm.commands.demo``, on a finished demo
folder's corpus, units, codec and token stores) for a few steps each in float32 (``train.mixed_precision='no'``) and
in bf16 (``train.mixed_precision=bf16``), interleaved, and reads their speed (tokens per second, padding excluded, the
median of the logged values after the first) off ``metrics.jsonl``; and times the CTC speech encoder's training
steps (:func:`audiopalm.tokenizers.speech_encoder.train_encoder`, the units' encoder as the demo sizes it, on the
first utterances of the corpus) with ``EncoderTrainConfig.bf16`` off and on. Every run on ``--threads`` threads (the
demo's lanes run one thread each on 2 cores; its later stages all cores). Nothing else should run meanwhile.

  python eval/bench_bf16.py --demo runs/demo --out eval/results/bench_bf16.json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from audiopalm.commands import demo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_bench  # noqa: E402  (eval/ is not a package)

PRECISIONS = {"fp32": "train.mixed_precision='no'", "bf16": "train.mixed_precision=bf16"}


def _encoder_data(corpus: Path, utterances: int) -> tuple[list, list[str]]:
    """The log-mel features and transcripts of the first ``utterances`` training utterances (read once, timed apart)."""
    from audiopalm.audio.features import LogMel, LogMelConfig
    from audiopalm.tokenizers.speech_encoder import SpeechEncoderConfig, load_feats, manifest_utterances

    c = SpeechEncoderConfig()  # the encoder's own front end
    mel = LogMel(LogMelConfig(sample_rate=c.sample_rate, n_mels=c.n_mels))
    utts = manifest_utterances(corpus / "train.jsonl", split="train")[:utterances]
    return load_feats([u[0] for u in utts], mel, progress=False), [u[1] for u in utts]


def _encoder_step_s(feats: list, texts: list[str], steps: int, bf16: bool) -> float:
    """Seconds per training step of the demo's units' encoder (its default size, batches of 32, the warps)."""
    from audiopalm.tokenizers.speech_encoder import (
        EncoderTrainConfig,
        SpeechEncoder,
        SpeechEncoderConfig,
        build_chars,
        train_encoder,
    )

    model = SpeechEncoder(SpeechEncoderConfig(chars=build_chars(texts)))
    cfg = EncoderTrainConfig(steps=steps, augment=True, augmentations=("speed", "vtlp"), bf16=bf16)
    t0 = time.perf_counter()
    train_encoder(model, feats, texts, cfg, progress=False)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    parser = demo_bench.parser(__doc__, steps=60, repeats=2)
    parser.add_argument("--encoder-steps", type=int, default=30, help="the encoder's timed steps (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of every run (default 1)")
    args = parser.parse_args(argv)

    out = demo_bench.finished_demo(parser, args.demo, ("corpus", "text_lm", "tokens", "acoustic", "audiopalm"))
    import torch

    torch.set_num_threads(args.threads)  # the encoder here; the stage commands get it from demo._LANE
    base = demo.PROFILES[args.profile]

    def stages(precision: str) -> dict:
        p = demo_bench.short_runs(base, args.steps, PRECISIONS[precision])
        return {
            "stage0": demo._text_lm(out / "corpus", p, 0),
            "acoustic": demo._acoustic(out, p, 0),
            "finetune": demo._audiopalm(out, p, 0),
        }

    record: dict = {
        "what": f"{args.steps} steps of the {args.profile} profile's stage-0, acoustic and fine-tune commands on "
        f"{out}, and {args.encoder_steps} steps of its units' encoder, in fp32 and bf16 autocast",
        "threads": args.threads,
        "native_bf16": demo.native_bf16(),
        "load_before": os.getloadavg()[0],
    }
    runs: dict[str, dict[str, list[float]]] = {}
    feats, texts = _encoder_data(out / "corpus", 640)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for repeat in range(args.repeats):
            for precision in PRECISIONS:
                for name, make in stages(precision).items():
                    r = demo_bench.timed(make, scratch / f"{name}_{precision}_{repeat}", args.threads)
                    runs.setdefault(name, {}).setdefault(precision, []).append(r["tokens_per_s"])
                    print(name, precision, runs[name][precision][-1], "tokens/s", flush=True)
                s = _encoder_step_s(feats, texts, args.encoder_steps, precision == "bf16")
                runs.setdefault("encoder (s a step)", {}).setdefault(precision, []).append(round(s, 4))
                print("encoder", precision, round(s, 4), "s a step", flush=True)
    for name, r in runs.items():
        med = {p: statistics.median(v) for p, v in r.items()}
        speedup = med["fp32"] / med["bf16"] if name.startswith("encoder") else med["bf16"] / med["fp32"]
        record[name] = {"runs": r, "median": med, "bf16 speed-up": round(speedup, 3)}
    demo_bench.write(record, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
