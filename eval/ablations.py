"""AudioPaLM's findings at small scale, in one command: every arm on the same corpus, steps and seed.

    python eval/ablations.py --out runs/ablations                  # on the mel_rvq demo profile (made first)
    python eval/ablations.py --profile smoke --out runs/ablations_smoke            # minutes; the test suite's

Each arm is recipes/finetune_audiopalm.py with the demo's own fine-tune config (``DEMO/audiopalm/config.yaml``)
and one change, for the same number of steps (default: the demo's) and seed:

  base           the demo's fine-tune as it is (its run is reused when it has the same steps)
  random_init    ``model.from_scratch=true``: the stage-0 architecture with random weights
  asr_only       ``data.tasks=[ASR]``: the whole step budget on ASR instead of the task mixture
  codebooks_N    ``model.num_codebooks=N``: the other of 1 and 2 RVQ codebooks in the LM (flattened)
  codebook_init  ``model.init=codebook``: new audio rows from the audio tokenizer's code vectors instead of
                 all at the text rows' mean (not in the paper: does a structured start help?)
  speech_llama   eval/compare_paths.py on the same data: vocabulary extension (AudioPaLM) vs Speech-Llama,
                 both with LoRA r=8 alpha=16 on q/k/v/o, ASR + AST, same steps, batch, LR and seed

Each arm is evaluated (``audiopalm eval``) on the English->French rows of the test split (sentences never
seen in training; seen voices and the held-out voice apart), the base arm on every task with S2ST direct
``[S2ST English French]`` and chained ``[ASR AST S2ST English French]``; PocketSphinx transcribes the same
English audio as a peer. Every arm's speech is also judged by one CTC-probe judge (eval/probe_tokens.py, trained
on the demo's training tokens; its scores on the reference audio and on another sentence's are rows of the
table). Speech is sampled (the pipeline's default), so every arm's speech tasks are evaluated with
``--speech-seeds`` sampling seeds (default 3) and the speech columns are the mean over them (text is
decoded once: greedy, MT with beam search as in ``audiopalm eval``). Writes ``OUT/ablations.md`` (the table)
and ``OUT/ablations.json``; a finished arm or eval is skipped when the command is run again (``--force`` redoes
them).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "eval"))

import compare_paths  # noqa: E402  (eval/compare_paths.py)

SRC, TGT = "en", "fr"
ALL_TASKS = ("ASR", "AST", "TTS", "S2ST", "ASR AST S2ST", "MT")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One fine-tune: the demo's config plus ``overrides``, evaluated on ``tasks``."""

    name: str
    ablation: str
    """Which finding it belongs to (the table's first column)."""
    overrides: tuple[str, ...]
    tasks: tuple[str, ...]

    @property
    def speech_tasks(self) -> list[str]:
        """Its tasks whose output is speech (sampled: scored with every speech seed, judged by the CTC probe)."""
        from probe_tokens import SPEECH_OUTPUTS

        return [t for t in self.tasks if t in SPEECH_OUTPUTS]


def arms(base_codebooks: int) -> list[Arm]:
    other = 1 if base_codebooks != 1 else 2
    return [
        Arm("base", "all", (), ALL_TASKS),
        Arm("random_init", "init: text LM vs random", ("model.from_scratch=true",), ("ASR", "AST", "TTS", "MT")),
        Arm("asr_only", "mixture: multitask vs ASR only", ("data.tasks=[{task: ASR, weight: 1.0}]",), ("ASR",)),
        Arm(f"codebooks_{other}", "RVQ codebooks in the LM", (f"model.num_codebooks={other}",), ("ASR", "TTS")),
        Arm(
            "codebook_init",
            "audio rows: mean vs codebook init",
            ("model.init=codebook",),
            ("ASR", "AST", "TTS", "S2ST", "MT"),
        ),
    ]


def _run(cmd: list[str]) -> None:
    print("[ablations] $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _done(folder: Path) -> bool:
    return (folder / ".done").is_file()


def _mark(folder: Path, t0: float) -> None:
    (folder / ".done").write_text(f"{time.time() - t0:.1f} s\n")


def en_fr_manifest(demo: Path, out: Path) -> Path:
    """The English->French rows of the demo's test split, with its corpus.json (held-out voices) beside them."""
    from audiopalm.data.manifest import read_manifest, write_manifest

    rows = [r for r in read_manifest(demo / "corpus" / "test.jsonl") if r.lang == SRC and r.tgt_lang == TGT]
    if not rows:
        raise ValueError(f"{demo}/corpus/test.jsonl: no {SRC}->{TGT} rows")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(demo / "corpus" / "corpus.json", out / "corpus.json")
    return write_manifest(out / f"test_{SRC}_{TGT}.jsonl", rows)


def train_arm(arm: Arm, demo: Path, out: Path, steps: int, seed: int, *, force: bool) -> Path:
    """The arm's run folder (``final/`` inside), trained unless done; ``base`` reuses the demo's run."""
    demo_run = demo / "audiopalm"
    demo_cfg = _yaml(demo_run / "config.yaml")
    if (
        arm.name == "base"
        and demo_cfg["train"]["max_steps"] == steps
        and demo_cfg["train"]["seed"] == seed
        and (demo_run / "final").is_dir()
    ):
        print(f"[ablations] base: the demo's run {demo_run} ({steps} steps, seed {seed})")
        return demo_run
    folder = out / arm.name
    if _done(folder) and not force:
        print(f"[ablations] {arm.name}: done already ({folder})")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.time()
    eval_every = max(1, steps // 5)
    _run(
        [
            str(Path(sys.executable).with_name("audiopalm")),
            "train",
            "finetune_audiopalm",
            "--config",
            str(demo_run / "config.yaml"),
            f"train.output_dir={folder}",
            f"train.max_steps={steps}",
            f"train.seed={seed}",
            "train.save_every=0",
            f"train.eval_every={eval_every}",
            "train.log_with=none",
            f"optim.warmup_steps={min(demo_cfg['optim']['warmup_steps'], max(1, steps // 10))}",
            *arm.overrides,
        ]
    )
    _mark(folder, t0)
    return folder


def eval_folder(out: Path, arm: Arm, speech_seed: int) -> Path:
    """Where an arm's evaluation goes: every task with speech seed 0, only the speech tasks with the others."""
    return out / (f"eval_{arm.name}" if speech_seed == 0 else f"eval_{arm.name}_seed{speech_seed}")


def eval_arm(
    arm: Arm,
    run: Path,
    manifest: Path,
    out: Path,
    max_items: int | None,
    max_new_tokens: int | None,
    *,
    force: bool,
    speech_seed: int = 0,
) -> dict:
    from audiopalm.evaluation.evaluate import EvalConfig, evaluate

    folder = eval_folder(out, arm, speech_seed)
    tasks = list(arm.tasks) if speech_seed == 0 else arm.speech_tasks
    if _done(folder) and not force and (folder / "summary.json").is_file():
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    t0 = time.time()
    summary = evaluate(
        EvalConfig(
            checkpoint=str(run / "final"),
            out=str(folder),
            tasks=tasks,
            manifest=str(manifest),
            max_items=max_items,
            batch_size=16,
            max_new_tokens=max_new_tokens,
            seed=speech_seed,
            peer="pocketsphinx" if "TTS" in tasks else None,
            report=False,
        )
    )
    _mark(folder, t0)
    return summary


def mean_metrics(runs: list[list[dict]]) -> list[dict]:
    """Metric rows of several evaluations (speech seeds) -> one row per metric, its value the mean over the
    evaluations that have it (text metrics come from one evaluation, speech metrics from each seed)."""
    merged: dict[tuple, list[dict]] = {}
    for rows in runs:
        for r in rows:
            merged.setdefault((r["task"], r["src"], r["tgt"], r["subset"], r["metric"]), []).append(r)
    return [
        {**rows[0], "value": sum(r["value"] for r in rows) / len(rows), "evaluations": len(rows)}
        for rows in merged.values()
    ]


def probe_metrics(arm: Arm, eval_dir: Path, judge, *, force: bool) -> list[dict]:
    """The arm's generated speech judged by the CTC probe (:func:`probe_tokens.judge_outputs`), cached in
    ``eval_dir/probe_judge.json``. ``judge()`` returns the :class:`probe_tokens.ProbeJudge` (trained on first use)."""
    from probe_tokens import judge_outputs

    cache = eval_dir / "probe_judge.json"
    if cache.is_file() and not force:
        return json.loads(cache.read_text(encoding="utf-8"))
    tasks = arm.speech_tasks
    rows = judge_outputs(eval_dir, judge(), tasks) if tasks else []
    cache.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _value(metrics: list[dict], task: str, metric: str, subset: str | None = None) -> float | None:
    return compare_paths.pooled(metrics, task, metric, subset)


COLUMNS = {
    "ASR WER seen": ("ASR", "WER", "seen_voices"),
    "ASR WER held-out": ("ASR", "WER", "heldout_voice"),
    "AST BLEU": ("AST", "BLEU", None),
    "MT BLEU": ("MT", "BLEU", None),
    "TTS-WER own ASR": ("TTS", "TTS-WER", None),
    "TTS-WER pocketsphinx": ("TTS", "TTS-WER [pocketsphinx]", None),
    "S2ST ASR-BLEU": ("S2ST", "ASR-BLEU", None),
    "TTS-WER probe": ("TTS", "TTS-WER [ctc-probe]", None),
    "TTS-CER probe": ("TTS", "TTS-CER [ctc-probe]", None),
    "S2ST ASR-BLEU probe": ("S2ST", "ASR-BLEU [ctc-probe]", None),
}
"""Table column -> (task, metric, subset or None for all test utterances)."""


def arm_row(ablation: str, name: str, metrics: list[dict], dev_loss: dict | None, steps: int) -> dict:
    row: dict[str, Any] = {"ablation": ablation, "arm": name, "steps": steps}
    for col, (task, metric, subset) in COLUMNS.items():
        row[col] = _value(metrics, task, metric, subset)
    row["ASR dev loss"] = round(dev_loss["ASR"], 3) if dev_loss and "ASR" in dev_loss else None
    return row


def peer_row(metrics: list[dict], steps: int) -> dict:
    """PocketSphinx on the same English audio: the ASR input clips, and the reference speech of the TTS sentences."""
    row: dict[str, Any] = {
        "ablation": "peer ASR on the same audio",
        "arm": "pocketsphinx (reference audio)",
        "steps": None,
    }
    row.update({c: None for c in COLUMNS})
    row["ASR WER seen"] = _value(metrics, "ASR", "WER [pocketsphinx]", "seen_voices")
    row["ASR WER held-out"] = _value(metrics, "ASR", "WER [pocketsphinx]", "heldout_voice")
    row["TTS-WER pocketsphinx"] = _value(metrics, "TTS", "TTS-WER [pocketsphinx] (ref audio)")
    row["ASR dev loss"] = None
    return row


def probe_peer_rows(metrics: list[dict]) -> list[dict]:
    """The CTC-probe judge on the reference audio of the same sentences (what a judged figure can reach at
    best) and on another sentence's reference audio (chance: speech that says nothing of its sentence)."""
    out = []
    for arm, suffix in (
        ("ctc-probe judge (reference audio)", "ref audio"),
        ("ctc-probe judge (another sentence's audio)", "another's ref audio"),
    ):
        row: dict[str, Any] = {"ablation": "peer ASR on the same audio", "arm": arm, "steps": None}
        row.update({c: None for c in COLUMNS})
        row["TTS-WER probe"] = _value(metrics, "TTS", f"TTS-WER [ctc-probe] ({suffix})")
        row["TTS-CER probe"] = _value(metrics, "TTS", f"TTS-CER [ctc-probe] ({suffix})")
        row["S2ST ASR-BLEU probe"] = _value(metrics, "S2ST", f"ASR-BLEU [ctc-probe] ({suffix})")
        row["ASR dev loss"] = None
        out.append(row)
    return out


def s2st_rows(metrics: list[dict], steps: int) -> list[dict]:
    """Direct vs chained S2ST of the base arm: ASR-BLEU of the translated speech (own-ASR judge)."""
    out = []
    for name, task in (("base: direct [S2ST]", "S2ST"), ("base: chained [ASR AST S2ST]", "ASR AST S2ST")):
        row = {"ablation": "S2ST: direct vs chained", "arm": name, "steps": steps}
        row.update({c: None for c in COLUMNS})
        row["S2ST ASR-BLEU"] = _value(metrics, task, "ASR-BLEU")
        row["S2ST ASR-BLEU probe"] = _value(metrics, task, "ASR-BLEU [ctc-probe]")
        row["ASR dev loss"] = None
        out.append(row)
    return out


def path_rows(rows: list[dict], steps: int) -> list[dict]:
    """eval/compare_paths.py's two rows in this table's columns (ASR + AST, LoRA in both)."""
    out = []
    for r in rows:
        row = {"ablation": "vocab extension vs Speech-Llama (LoRA, ASR+AST)", "arm": r["path"], "steps": steps}
        row.update({c: None for c in COLUMNS})
        row["ASR WER seen"], row["ASR WER held-out"] = r["asr_wer_seen"], r["asr_wer_heldout"]
        row["AST BLEU"], row["ASR dev loss"] = r["ast_bleu_all"], None
        out.append(row)
    return out


def markdown(rows: list[dict], info: dict) -> str:
    cols = ["ablation", "arm", *COLUMNS, "ASR dev loss"]

    def cell(v):
        return "–" if v is None else str(v)

    lines = [
        "# Ablations",
        "",
        f"Demo {info['demo']}: every arm {info['steps']} steps, seed {info['seed']}, the demo's fine-tune config "
        f"otherwise. Test: {info['test']} ({SRC}->{TGT} rows of the test split, sentences never seen in "
        f"training), up to {info['max_items'] or 'all'} utterances per task. WER/BLEU in %; `–`: not "
        f"evaluated for that arm. Speech is sampled; its columns are the mean over speech seeds 0 to "
        f"{info.get('speech_seeds', 1) - 1}. ASR dev loss: nats per transcript token on the dev split.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    lines += [
        "",
        "TTS-WER: the arm's speech for unseen English sentences transcribed by the arm's own ASR, or by "
        "PocketSphinx (its WER on the reference audio of the same sentences: "
        f"{cell(info.get('pocketsphinx_ref_tts_wer'))}). S2ST ASR-BLEU: the translated speech transcribed by "
        "the model's own ASR, BLEU against the reference translation. *probe* columns: the same speech "
        "judged by a CTC probe (eval/probe_tokens.py: the audio re-tokenised, first codebook, a BiGRU per "
        "language trained on the demo's training utterances), one judge for every arm; its scores on the "
        "reference audio, and on another sentence's reference audio (chance), are in the `ctc-probe judge` rows.",
    ]
    return "\n".join(lines) + "\n"


def run(
    demo: Path,
    out: Path,
    *,
    steps: int | None,
    seed: int,
    max_items: int | None,
    force: bool,
    max_new_tokens: int | None = None,
    only: list[str] | None = None,
    probe_steps: int = 600,
    speech_seeds: int = 3,
) -> list[dict]:
    for need in ("corpus/test.jsonl", "corpus/corpus.json", "audiopalm/config.yaml", "text_lm/final", "tokens/train"):
        if not (demo / need).exists():
            raise FileNotFoundError(f"{demo / need}: missing; run `audiopalm demo --out {demo}` first")
    demo_cfg = _yaml(demo / "audiopalm" / "config.yaml")
    steps = steps or demo_cfg["train"]["max_steps"]
    manifest = en_fr_manifest(demo, out)
    rows: list[dict] = []
    ref_tts = None

    @functools.cache
    def judge():  # the CTC-probe judge, trained on the demo's training tokens the first time it is needed
        from probe_tokens import ProbeJudge

        from audiopalm.tokenizers.base import load_audio_tokenizer

        print(f"[ablations] training the CTC-probe judge ({SRC}, {TGT}) on {demo / 'tokens/train'}", flush=True)
        return ProbeJudge.train(
            load_audio_tokenizer(demo / "tokenizer"), demo / "tokens/train", [SRC, TGT], steps=probe_steps, seed=seed
        )

    for arm in arms(demo_cfg["model"]["num_codebooks"]):
        if only and arm.name not in only and arm.name != "base":
            continue
        run_dir = train_arm(arm, demo, out, steps, seed, force=force)
        per_seed = []
        for speech_seed in range(speech_seeds if arm.speech_tasks else 1):
            summary = eval_arm(
                arm, run_dir, manifest, out, max_items, max_new_tokens, force=force, speech_seed=speech_seed
            )
            per_seed.append(
                summary["metrics"] + probe_metrics(arm, eval_folder(out, arm, speech_seed), judge, force=force)
            )
        metrics = mean_metrics(per_seed)
        dev = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("dev_loss")
        if arm.name == "base":
            base_metrics, base_dev = metrics, dev
            ref_tts = _value(metrics, "TTS", "TTS-WER [pocketsphinx] (ref audio)")
            rows.append(arm_row("all tasks", "base", metrics, dev, steps))
            rows.append(peer_row(metrics, steps))
            rows += probe_peer_rows(metrics)
            rows += s2st_rows(metrics, steps)
            continue
        base_label = {
            "random_init": "text LM init (base)",
            "asr_only": "multitask (base)",
            "codebook_init": f"{demo_cfg['model']['init']} init (base)",
        }.get(arm.name, f"codebooks_{demo_cfg['model']['num_codebooks']} (base)")
        row = arm_row(arm.ablation, arm.name, metrics, dev, steps)
        base = arm_row(arm.ablation, base_label, base_metrics, base_dev, steps)
        # the base row shows what the arm was scored on, so each pair of rows compares like with like
        rows += [{k: (v if k not in COLUMNS or row[k] is not None else None) for k, v in base.items()}, row]
    if not only or "speech_llama" in only:
        profile = (
            json.loads((demo / "demo.json").read_text(encoding="utf-8"))["profile"]
            if (demo / "demo.json").is_file()
            else "default"
        )
        rows += path_rows(
            compare_paths.compare(
                profile,
                out / "paths",
                data=demo,
                seed=seed,
                force=force,
                steps=steps,
                max_items=max_items,
                test=manifest,
            ),
            steps,
        )
    info = {
        "demo": str(demo),
        "steps": steps,
        "seed": seed,
        "test": str(manifest),
        "max_items": max_items,
        "pocketsphinx_ref_tts_wer": ref_tts,
        "speech_seeds": speech_seeds,
    }
    (out / "ablations.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1), encoding="utf-8")
    (out / "ablations.md").write_text(markdown(rows, info), encoding="utf-8")
    print((out / "ablations.md").read_text(encoding="utf-8"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", help="a finished `audiopalm demo` folder (default: make one with --profile)")
    parser.add_argument(
        "--profile",
        default="mel_rvq",
        choices=("smoke", "mel_rvq"),
        help="demo profile to run when --demo is not given (default: mel_rvq; the arms vary the codec's codebooks "
        "and judge speech with a CTC probe on codec tokens, so they run on a profile whose LM reads codec codes)",
    )
    parser.add_argument("--out", default="runs/ablations", help="output folder (default: runs/ablations)")
    parser.add_argument("--steps", type=int, help="optimizer steps of every arm (default: the demo's fine-tune's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every arm (default: 0)")
    parser.add_argument(
        "--max-items",
        type=int,
        default=40,
        metavar="N",
        help="test utterances per task (default: 40; the test split has 100 sentences)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help="cap on tokens generated per output (default: the pipeline's per output kind)",
    )
    parser.add_argument("--only", nargs="+", metavar="ARM", help="run only these arms (base always runs)")
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=600,
        metavar="N",
        help="training steps of the CTC-probe judge of each language (default: 600, ~2 min each)",
    )
    parser.add_argument(
        "--speech-seeds",
        type=int,
        default=3,
        metavar="N",
        help="evaluate every arm's speech with sampling seeds 0..N-1 and report the mean (default: 3; "
        "one draw moves an S2ST ASR-BLEU by up to 2)",
    )
    parser.add_argument("--force", action="store_true", help="retrain and re-evaluate arms that are done")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps: must be >= 1, got {args.steps}")
    if args.probe_steps < 1:
        parser.error(f"--probe-steps: must be >= 1, got {args.probe_steps}")
    if args.speech_seeds < 1:
        parser.error(f"--speech-seeds: must be >= 1, got {args.speech_seeds}")
    known = {arm.name for base in (1, 2) for arm in arms(base)} | {"speech_llama"}
    if args.only and set(args.only) - known:
        parser.error(f"--only: unknown arm(s) {sorted(set(args.only) - known)}; known: {sorted(known)}")
    out = Path(args.out)
    demo = Path(args.demo) if args.demo else out / "demo"
    if not args.demo:
        _run([str(Path(sys.executable).with_name("audiopalm")), "demo", "--profile", args.profile, "--out", str(demo)])
    try:
        run(
            demo,
            out,
            steps=args.steps,
            seed=args.seed,
            max_items=args.max_items,
            force=args.force,
            max_new_tokens=args.max_new_tokens,
            only=args.only,
            probe_steps=args.probe_steps,
            speech_seeds=args.speech_seeds,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
