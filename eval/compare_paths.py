"""AudioPaLM vs Speech-Llama on the same corpus, the same stage-0 LLM, the same steps, batch, LR and seed.

    python eval/compare_paths.py --profile smoke --out runs/compare_smoke
    python eval/compare_paths.py --profile default --out runs/compare      # codec codes, the mel_rvq demo corpus
    python eval/compare_paths.py --profile units --data runs/demo --out runs/compare_units   # one encoder, both ways

Steps (each one's output is kept, a finished step is skipped when the command is run again):

1. data: ``audiopalm demo --profile P --out OUT/data`` (synthetic corpus, mel-RVQ audio tokenizer, token
   stores, stage-0 text LM), or ``--data DIR`` laid out the same way (``corpus/{train,dev,test}.jsonl``,
   ``tokenizer/`` or, for a units profile, ``units/``, ``tokens/{train,dev}``, ``text_lm/final``).
2. AudioPaLM: recipes/finetune_audiopalm.py, tasks ASR + AST, LoRA r=8 alpha=16 on q/k/v/o plus the new
   audio-token rows (``lora.new_rows=trainable_tokens``), padded batches (one example per row, so both paths
   see the same number of examples per step) -> ``OUT/audiopalm``.
3. Speech-Llama: recipes/finetune_speech_llama.py, tasks ASR + AST, the same LoRA, encoder + projector
   trained -> ``OUT/speech_llama``. The ``units`` profile asks the paper's question with everything else equal:
   Speech-Llama reads the continuous states of the encoder the AudioPaLM arm's units are k-means of (frozen, the
   clustered layer, one embedding per unit frame: ``model.encoder=units:DATA/units``), so the two arms differ
   only in how the same 25 states per second reach the LLM: projected, or quantised into new vocabulary rows.
4. ``audiopalm eval`` of both on the test manifest (sentences never seen in training) -> ``OUT/eval_*``.
5. ``OUT/comparison.md`` and ``OUT/comparison.json``: per path, ASR WER and AST BLEU (all test utterances,
   seen voices, the held-out voice; the n-weighted mean over language pairs of the per-pair corpus scores),
   trainable parameters, training tokens/s and decode time per utterance.

"Tokens" are LLM sequence positions: for AudioPaLM text + audio-code tokens, for Speech-Llama audio
embeddings + text tokens; padding is not counted. Training tokens/s is measured over the optimizer steps
only (from ``metrics.jsonl``). Decode time per utterance is the wall time of the evaluation (audio read,
audio tokenizer or log-mel + encoder, greedy decoding) divided by the utterances decoded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = ("audiopalm", "speech_llama")
TASKS = ("ASR", "AST")
COLUMNS = (
    "path",
    "trainable_params",
    "train_tokens_per_s",
    "decode_s_per_utt",
    "asr_wer_all",
    "asr_wer_seen",
    "asr_wer_heldout",
    "ast_bleu_all",
    "ast_bleu_seen",
    "ast_bleu_heldout",
    "final_train_loss",
    "steps",
)
"""Columns of the table (JSON keys; the markdown uses :data:`HEADERS`)."""
HEADERS = {
    "path": "path",
    "trainable_params": "trainable params",
    "train_tokens_per_s": "train tokens/s",
    "decode_s_per_utt": "decode s/utt",
    "asr_wer_all": "ASR WER (all)",
    "asr_wer_seen": "ASR WER (seen voices)",
    "asr_wer_heldout": "ASR WER (held-out voice)",
    "ast_bleu_all": "AST BLEU (all)",
    "ast_bleu_seen": "AST BLEU (seen voices)",
    "ast_bleu_heldout": "AST BLEU (held-out voice)",
    "final_train_loss": "final train loss",
    "steps": "steps",
}


@dataclasses.dataclass(frozen=True)
class CompareProfile:
    """Sizes of one comparison (both paths get the same ``steps``, ``batch``, ``lr`` and seed)."""

    demo_profile: str
    """``audiopalm demo --profile`` that makes the data (ignored with ``--data``)."""
    steps: int
    """Optimizer steps of each path."""
    batch: int
    """Examples per optimizer step (one example per row for both paths)."""
    lr: float
    """Peak learning rate of both paths."""
    warmup: int
    """Warm-up steps of both paths."""
    max_items: int | None
    """Test utterances per task and language pair (None: all)."""
    max_new_tokens: int
    """Longest decoded text."""
    speech_llama: tuple[str, ...] = ()
    """Overrides of recipes/configs/finetune_speech_llama.yaml (encoder size)."""
    audiopalm: tuple[str, ...] = ()
    """Overrides of recipes/configs/finetune_audiopalm.yaml."""
    units: bool = False
    """The data's ``units/`` (a ``ctc_units`` tokenizer) is AudioPaLM's audio tokenizer, and its encoder, frozen,
    is Speech-Llama's (states at the clustered layer, projector stride 1): one encoder, both ways."""


PROFILES = {
    # tiny: the test suite's setting (a handful of steps on a toy world)
    "tiny": CompareProfile(
        demo_profile="smoke",
        steps=4,
        batch=2,
        lr=1e-2,
        warmup=1,
        max_items=2,
        max_new_tokens=6,
        speech_llama=(
            "model.n_mels=20",
            "model.encoder=transformer",
            "model.encoder_dim=32",
            "model.encoder_layers=1",
            "model.encoder_heads=2",
            "model.encoder_ffn_dim=64",
        ),
        audiopalm=("model.num_codebooks=2",),
    ),
    # smoke: minutes on a CPU, the demo's smoke corpus; numbers show the plumbing, not the methods
    "smoke": CompareProfile(
        demo_profile="smoke",
        steps=60,
        batch=8,
        lr=3e-3,
        warmup=6,
        max_items=4,
        max_new_tokens=24,
        speech_llama=(
            "model.encoder=transformer",
            "model.encoder_dim=64",
            "model.encoder_layers=2",
            "model.encoder_heads=4",
            "model.encoder_ffn_dim=128",
        ),
        # the smoke text LM's context is 128 positions: one codebook (25 tokens/s) fits 2-3 s clips
        audiopalm=("model.num_codebooks=1",),
    ),
    "default": CompareProfile(
        demo_profile="mel_rvq", steps=2000, batch=8, lr=1e-3, warmup=50, max_items=None, max_new_tokens=64
    ),
    # the default demo's units and their encoder (`--data runs/demo`); the fine-tune's LR
    "units": CompareProfile(
        demo_profile="default", steps=1000, batch=8, lr=3e-3, warmup=50, max_items=None, max_new_tokens=64, units=True
    ),
}


def _stage(folder: Path, fn, *, force: bool) -> Path:
    """Run ``fn(folder)`` unless ``folder/.done`` exists (written last)."""
    marker = folder / ".done"
    if marker.is_file() and not force:
        print(f"[compare_paths] {folder}: done already")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.time()
    fn(folder)
    marker.write_text(f"{time.time() - t0:.1f} s\n")
    return folder


def _run(cmd: list[str]) -> None:
    print("[compare_paths] $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def data_layout(data: Path, units: bool = False) -> dict[str, Path]:
    """The files both paths read, checked to exist (``units``: the audio tokenizer is ``units/``)."""
    paths = {
        "train": data / "corpus" / "train.jsonl",
        "dev": data / "corpus" / "dev.jsonl",
        "test": data / "corpus" / "test.jsonl",
        "tokenizer": data / ("units" if units else "tokenizer"),
        "train_store": data / "tokens" / "train",
        "dev_store": data / "tokens" / "dev",
        "llm": data / "text_lm" / "final",
    }
    missing = [f"{k}: {p}" for k, p in paths.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{data}: missing {missing} (make it with `audiopalm demo --out {data}`)")
    return paths


def recipe_args(path: str, d: dict[str, Path], p: CompareProfile, out: Path, seed: int) -> list[str]:
    """Command-line arguments of one path's recipe: same steps, batch, LR, warm-up, seed and LoRA."""
    loop = [
        f"train.max_steps={p.steps}",
        f"train.micro_batch_size={p.batch}",
        "train.grad_accum_steps=1",
        f"train.seed={seed}",
        f"optim.lr={p.lr}",
        f"optim.warmup_steps={p.warmup}",
        "train.save_every=0",
        "train.log_every=1",
        f"train.eval_every={p.steps}",
        "train.log_with=none",
        f"train.output_dir={out}",
    ]
    if path == "audiopalm":
        # examples longer than the LLM's context are skipped (and counted) in training, as the pipeline refuses them
        context = json.loads((d["llm"] / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 512)
        return [
            "--config",
            "finetune_audiopalm",  # the shipped config
            f"model.name_or_path={d['llm']}",
            f"model.audio_tokenizer={d['tokenizer']}",
            "model.acoustic_stage=null",  # both tasks read speech; neither speaks
            f"data.stores=[{d['train_store']},{d['dev_store']}]",
            "data.tasks=[{task: ASR}, {task: AST}]",
            "data.packing=false",
            "lora.enabled=true",
            "lora.r=8",
            "lora.alpha=16",
            "lora.new_rows=trainable_tokens",
            f"data.max_len={min(512, context)}",
            *loop,
            *p.audiopalm,
        ]
    return [
        "--config",
        "finetune_speech_llama",  # the shipped config
        f"model.llm={d['llm']}",
        f"data.train_manifests=[{d['train']}]",
        f"data.dev_manifest={d['dev']}",
        "data.tasks=[ASR, AST]",
        "lora.r=8",
        "lora.alpha=16",
        *(
            [f"model.encoder=units:{d['tokenizer']}", "model.freeze_encoder=true", "model.projector_stride=1"]
            if p.units
            else []
        ),
        *loop,
        *p.speech_llama,
    ]


def run_recipe(path: str, args: list[str]) -> None:
    """Run a recipe's ``main`` in this process (one process, as both paths are timed), then reset accelerate."""
    from accelerate.state import AcceleratorState, GradientState

    from audiopalm.recipes import recipe_class

    recipe = "finetune_audiopalm" if path == "audiopalm" else "finetune_speech_llama"
    print(f"[compare_paths] {path}: audiopalm train {recipe} " + " ".join(args), flush=True)
    try:
        rc = recipe_class(recipe).main(args)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if rc != 0:
        raise RuntimeError(f"{path}: recipe exited with {rc}")


def train_tokens_per_s(metrics_path: Path) -> float:
    """Positions trained per second over the logged steps (each row: tokens since the last row / its rate)."""
    from audiopalm.training import read_jsonl

    rows = [r for r in read_jsonl(metrics_path) if r.get("tokens_per_s")]
    tokens, seconds, prev = 0, 0.0, 0
    for r in rows:
        delta = r["tokens_seen"] - prev
        prev = r["tokens_seen"]
        tokens, seconds = tokens + delta, seconds + delta / r["tokens_per_s"]
    return tokens / seconds if seconds else float("nan")


def pooled(metrics: list[dict], task: str, metric: str, subset: str | None) -> float | None:
    """n-weighted mean over language pairs of ``metric`` for ``task`` (``subset`` None: all utterances)."""
    rows = [
        m
        for m in metrics
        if m["task"] == task
        and m["metric"] == metric
        and (subset is None or m["subset"] == subset)
        and m.get("value") is not None
    ]
    n = sum(m["n"] for m in rows)
    return round(sum(m["value"] * m["n"] for m in rows) / n, 2) if n else None


def table_row(path: str, run_dir: Path, eval_dir: Path, eval_seconds: float) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    ev = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    utts = sum(1 for t in TASKS for _ in (eval_dir / "outputs" / f"{t}.jsonl").open(encoding="utf-8"))
    m = ev["metrics"]
    return {
        "path": path,
        "trainable_params": summary["trainable_parameters"],
        "train_tokens_per_s": round(train_tokens_per_s(run_dir / "metrics.jsonl"), 1),
        "decode_s_per_utt": round(eval_seconds / max(utts, 1), 4),
        "asr_wer_all": pooled(m, "ASR", "WER", None),
        "asr_wer_seen": pooled(m, "ASR", "WER", "seen_voices"),
        "asr_wer_heldout": pooled(m, "ASR", "WER", "heldout_voice"),
        "ast_bleu_all": pooled(m, "AST", "BLEU", None),
        "ast_bleu_seen": pooled(m, "AST", "BLEU", "seen_voices"),
        "ast_bleu_heldout": pooled(m, "AST", "BLEU", "heldout_voice"),
        "final_train_loss": round(summary["train_loss"], 4),
        "steps": summary["steps"],
        "utterances": utts,
    }


def markdown(rows: list[dict], profile: str, info: dict) -> str:
    def cell(v):
        return "n/a" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))

    lines = [
        f"# AudioPaLM vs Speech-Llama ({profile} profile)",
        "",
        f"Same corpus, stage-0 LLM ({info['llm']}), {info['steps']} steps x {info['batch']} examples, "
        f"LR {info['lr']}, seed {info['seed']}; LoRA r=8 alpha=16 on q/k/v/o in both. Test: "
        f"{info['test']} (sentences not seen in training), up to {info['max_items'] or 'all'} utterances "
        "per task and language pair. WER/BLEU: n-weighted mean over language pairs.",
        "",
        "| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += [
        "",
        "train tokens/s: LLM positions per second (AudioPaLM: text + audio-code tokens; Speech-Llama: "
        "audio embeddings + text tokens). decode s/utt: evaluation wall time / utterances (audio in, text out, "
        "greedy).",
    ]
    return "\n".join(lines) + "\n"


def compare(
    profile: str,
    out: Path,
    *,
    data: Path | None = None,
    seed: int = 0,
    force: bool = False,
    steps: int | None = None,
    max_items: int | None = None,
    test: Path | None = None,
) -> list[dict]:
    """Run the whole comparison; returns the table rows (also written to ``out/comparison.{md,json}``).

    ``steps`` / ``max_items`` override the profile's; ``test`` replaces the data's test manifest."""
    from audiopalm.evaluation.evaluate import EvalConfig, evaluate

    p = PROFILES[profile]
    if steps is not None:
        p = dataclasses.replace(p, steps=steps, warmup=min(p.warmup, steps))
    if max_items is not None:
        p = dataclasses.replace(p, max_items=max_items)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = out / "data"
        _run(
            [
                str(Path(sys.executable).with_name("audiopalm")),
                "demo",
                "--profile",
                p.demo_profile,
                "--out",
                str(data),
                "--seed",
                str(seed),
            ]
        )
    d = data_layout(data, units=p.units)
    if test is not None:
        d["test"] = Path(test)
    rows = []
    for path in PATHS:
        run_dir = out / path
        _stage(run_dir, lambda folder, path=path: run_recipe(path, recipe_args(path, d, p, folder, seed)), force=force)
        checkpoint = run_dir / "final" if path == "audiopalm" else run_dir
        eval_dir = out / f"eval_{path}"
        t0 = time.perf_counter()
        evaluate(
            EvalConfig(
                checkpoint=str(checkpoint),
                out=str(eval_dir),
                tasks=list(TASKS),
                manifest=str(d["test"]),
                max_items=p.max_items,
                max_new_tokens=p.max_new_tokens,
                batch_size=p.batch,
                report=False,
                progress=True,
            )
        )
        rows.append(table_row(path, run_dir, eval_dir, time.perf_counter() - t0))
    info = {
        "llm": str(d["llm"]),
        "steps": p.steps,
        "batch": p.batch,
        "lr": p.lr,
        "seed": seed,
        "test": str(d["test"]),
        "max_items": p.max_items,
        "profile": profile,
    }
    (out / "comparison.json").write_text(
        json.dumps({"info": info, "columns": list(COLUMNS), "rows": rows}, indent=1), encoding="utf-8"
    )
    (out / "comparison.md").write_text(markdown(rows, profile, info), encoding="utf-8")
    print((out / "comparison.md").read_text(encoding="utf-8"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="smoke",
        help="smoke: minutes on a CPU (default); default: codec codes on the mel_rvq demo corpus; units: the "
        "default demo's units against their own encoder's states (use --data runs/demo); tiny: tests",
    )
    parser.add_argument("--out", default="runs/compare_paths", help="output folder (default: runs/compare_paths)")
    parser.add_argument("--data", help="prepared data folder (`audiopalm demo --out DIR` layout); default: make it")
    parser.add_argument("--seed", type=int, default=0, help="seed of both paths (default: 0)")
    parser.add_argument("--steps", type=int, help="override the profile's optimizer steps (both paths)")
    parser.add_argument("--force", action="store_true", help="retrain paths that are done already")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps: must be >= 1, got {args.steps}")
    compare(
        args.profile,
        Path(args.out),
        data=Path(args.data) if args.data else None,
        seed=args.seed,
        force=args.force,
        steps=args.steps,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
