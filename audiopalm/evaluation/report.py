"""Write the evaluation report (``report.md`` + a self-contained ``report.html``) of a results folder.

    python eval/report.py RESULTS_DIR [--samples 4] [--runs DIR...]      (or: python -m audiopalm.evaluation.report RESULTS_DIR)

Input: a results folder, as the evaluation script writes it::

    RESULTS_DIR/
      summary.json             required, see below
      metrics.jsonl            optional training log(s) (the recipes' name; train_metrics.jsonl also read):
      */metrics.jsonl            unless summary.json maps run names to files in "train_logs" (``audiopalm
                                 eval --runs DIR...`` writes that), a file of this name anywhere under
                                 RESULTS_DIR is a run named by its folder ("train" at the top); ``--runs``
                                 here adds run folders
      outputs/*.jsonl          optional per-utterance outputs; rows with an "audio" field become samples

``summary.json``::

    {"checkpoint": "runs/demo/audiopalm",                     # what was evaluated
     "metrics": [                                              # one row per score
        {"task": "ASR", "src": "en", "tgt": null, "split": "test",
         "subset": "seen_voices",                              # or "heldout_voice", "all", ...
         "metric": "WER", "value": 12.3, "n": 100,             # value on 0..100; n = utterances
         "signature": "nrefs:1|tok:13a|..."},                  # optional (sacrebleu's, judge's)
        ...],
     "extra_tables": {                                         # optional, any named tables:
        "Ablation: pattern": [{"pattern": "flatten", "WER": 20.1}, ...],          # list of row objects
        "Other": {"columns": ["a", "b"], "rows": [[1, 2], [3, 4]]}},               # or columns + rows
     "train_logs": {"audiopalm": "runs/a/train_metrics.jsonl"}}                  # optional, see above

Training logs: one JSON object per line with an integer ``step`` and numbers such as ``loss`` (plotted,
solid), ``dev_loss/<task>`` (the recipes' dev loss per task; plotted dashed, as are older ``dev_*`` keys and
``eval_loss``), ``lr`` ... (ignored); one panel per run.

``outputs/*.jsonl`` rows: ``id``, ``task``, ``src``, ``tgt``, ``text`` (the input text or source
transcript), optional ``ref_text`` (reference translation), ``hyp_text`` (the model's text output, or the
ASR judge's transcript of its speech), ``audio`` (the generated wav) and ``ref_audio`` (the reference
wav); wav paths are relative to RESULTS_DIR.

Output, written into RESULTS_DIR: ``report.md`` (GitHub markdown; links ``goals.png``,
``loss_curves.png`` and the wavs), ``goals.png`` and ``loss_curves.png`` (matplotlib), ``examples/*.wav``
(copies of the first screen's input / reference / generated audio), and ``report.html``: one file with its
CSS and the plots (base64) inside, so it can be mailed or archived on its own, **except the audio**: the
players point to the wav files by paths relative to RESULTS_DIR (audio as base64 would make the page
megabytes large), so open it from inside the results folder to hear the samples.

Both open with the first screen: each goal of :data:`audiopalm.evaluation.goals.GOALS` against its target (met / not
met / not measured, n, the peer ASR's row and the judge's row on the reference audio beside it), the goals
chart, and a few TTS / S2ST examples to play (input, reference, ours); then the detail tables.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import html
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

LOSS_PNG = "loss_curves.png"
LOSS_CAPTION = "Per training run: train loss (solid) and dev loss per task (dashed), against the optimizer step."
GOALS_PNG = "goals.png"
EXAMPLES_DIR = "examples"
"""Where the first screen's example wavs are copied (next to the report, so the folder plays on its own)."""
RUN_LOGS = ("metrics.jsonl", "train_metrics.jsonl")
"""Training-log names, in order of preference: what the recipes write, then the older name."""
DEV_PREFIXES = ("dev_loss/", "dev_", "eval_loss")
"""Training-log keys plotted dashed as dev curves: ``dev_loss/<task>`` (the recipes), older ``dev_*`` keys
and ``eval_loss`` (transformers.Trainer)."""
DECODING_KEYS = {"text_decoding": "Text decoding", "speech_decoding": "Speech decoding"}
"""summary.json keys saying how outputs were decoded -> their label in the report."""


class ReportError(ValueError):
    """A bad results folder; the message names the file (and line or entry) and the field."""


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class MetricRow:
    """One score from summary.json's "metrics" list."""

    task: str
    """ASR, AST, TTS, S2ST, MT, ..."""
    metric: str
    """WER, CER, BLEU, chrF, ASR-BLEU, ..."""
    value: float | None
    """The score (0..100 for the built-in metrics); null when it could not be computed."""
    src: str | None = None
    """Source language code."""
    tgt: str | None = None
    """Target language code (null for same-language tasks: ASR, TTS)."""
    split: str = "test"
    """Data split."""
    subset: str = "all"
    """Subset of the split, e.g. seen_voices / heldout_voice / all."""
    n: int | None = None
    """Number of utterances scored."""
    signature: str | None = None
    """How the number was computed (sacrebleu signature, judge, normaliser)."""


@dataclasses.dataclass
class Sample:
    """One per-utterance output with audio, shown with players."""

    source: str
    """The outputs/*.jsonl file it came from (relative to the results folder)."""
    id: str
    task: str
    src: str | None
    tgt: str | None
    text: str
    ref_text: str | None
    hyp_text: str | None
    audio: str
    """Generated wav, relative to the results folder."""
    ref_audio: str | None
    """Reference wav, relative to the results folder."""


@dataclasses.dataclass
class Results:
    """Everything the report shows, read from a results folder."""

    root: Path
    checkpoint: str
    metrics: list[MetricRow]
    extra_tables: dict[str, tuple[list[str], list[list]]]
    runs: dict[str, list[dict]]
    """Run name -> its training-log rows (each with an int "step")."""
    samples: list[Sample]
    missing_audio: list[str]
    """Sample wav paths that do not exist (shown as missing, counted in a warning)."""
    decoding: dict[str, str] = dataclasses.field(default_factory=dict)
    """How outputs were decoded, ``{"Text decoding": ..., "Speech decoding": ...}`` (summary.json's
    ``text_decoding`` / ``speech_decoding``, where it says)."""
    judge: str | None = None
    """summary.json's ``judge`` of generated speech (``model``: the model's own ASR)."""
    max_items: int | None = None
    """summary.json's ``max_items`` (utterances per task and pair, except ``full_pairs``), where it says."""
    full_pairs: list[str] = dataclasses.field(default_factory=list)
    """summary.json's ``full_pairs`` (pairs scored on all their rows)."""
    outputs: list[dict] = dataclasses.field(default_factory=list)
    """Every outputs/*.jsonl row with generated audio (the first screen picks its examples among them)."""


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (a results folder needs summary.json)") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None


def read_json_lines(path: Path, error: type[ValueError] = ReportError) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL file of objects; a line that is not one raises
    ``error`` naming the file and line."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append((lineno, obj))
    return rows


def _parse_metric(obj: object, where: str) -> MetricRow:
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: expected an object, got {type(obj).__name__}")
    fields = {f.name for f in dataclasses.fields(MetricRow)}
    unknown = sorted(set(obj) - fields)
    if unknown:
        raise ReportError(f"{where}: field {unknown[0]!r}: unknown; allowed: {', '.join(sorted(fields))}")
    for name in ("task", "metric", "value"):
        if name not in obj:
            raise ReportError(f"{where}: field {name!r}: missing")
    for name in ("task", "metric"):
        if not isinstance(obj[name], str) or not obj[name]:
            raise ReportError(f"{where}: field {name!r}: expected a non-empty string, got {obj[name]!r}")
    for name in ("src", "tgt", "split", "subset", "signature"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise ReportError(f"{where}: field {name!r}: expected a string or null, got {obj[name]!r}")
    v = obj["value"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise ReportError(f"{where}: field 'value': expected a finite number or null, got {v!r}")
    n = obj.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ReportError(f"{where}: field 'n': expected a count >= 0 or null, got {n!r}")
    row = MetricRow(**{k: v for k, v in obj.items() if v is not None or k == "value"})
    return row


def _parse_table(name: str, obj: object, where: str) -> tuple[list[str], list[list]]:
    if isinstance(obj, list):  # a list of row objects; columns in first-seen order
        columns: list[str] = []
        for i, row in enumerate(obj):
            if not isinstance(row, dict):
                raise ReportError(f"{where}[{name!r}][{i}]: expected an object, got {type(row).__name__}")
            columns.extend(k for k in row if k not in columns)
        return columns, [[row.get(c) for c in columns] for row in obj]
    if isinstance(obj, dict) and set(obj) == {"columns", "rows"}:
        columns, rows = obj["columns"], obj["rows"]
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise ReportError(f"{where}[{name!r}].rows[{i}]: expected a list of {len(columns)} cells, got {row!r}")
        return [str(c) for c in columns], rows
    raise ReportError(f'{where}[{name!r}]: expected a list of row objects or {{"columns": [...], "rows": [[...]]}}')


def _read_run(path: Path) -> list[dict]:
    rows = []
    for lineno, obj in read_json_lines(path):
        step = obj.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ReportError(f"{path}:{lineno}: field 'step': expected an integer, got {step!r}")
        rows.append(obj)
    return rows


def run_log(path: str | os.PathLike) -> Path:
    """The training log of a run: ``path`` itself if it is a ``.jsonl`` file, else the first of :data:`RUN_LOGS`
    in that folder. Raises :class:`ReportError` naming the path when there is none."""
    p = Path(path)
    if p.is_file() and p.suffix == ".jsonl":
        return p
    if not p.is_dir():
        raise ReportError(f"{p}: no such run folder or .jsonl training log")
    for name in RUN_LOGS:
        if (p / name).is_file():
            return p / name
    raise ReportError(f"{p}: no {' or '.join(RUN_LOGS)} in this folder (give the output_dir of a training run)")


def _find_runs(root: Path, summary: dict, extra: dict[str, Path] | None = None) -> dict[str, list[dict]]:
    logs = summary.get("train_logs")
    if logs is not None:
        if not isinstance(logs, dict):
            raise ReportError(f"{root / 'summary.json'}: field 'train_logs': expected {{run name: path}}, got {logs!r}")
        paths = {}
        for name, rel in logs.items():
            p = root / rel
            if not p.is_file():
                raise ReportError(f"{root / 'summary.json'}: train_logs[{name!r}]: no such file {p}")
            paths[name] = p
    else:
        paths = {}
        for p in sorted(q for name in RUN_LOGS for q in root.rglob(name)):
            if p.parent == root / "outputs":
                continue  # per-utterance outputs, not a training log
            rel = p.parent.relative_to(root).as_posix()
            paths.setdefault("train" if rel == "." else rel, run_log(p.parent))
    paths.update(extra or {})
    return {name: _read_run(p) for name, p in paths.items()}


def _rel_audio(root: Path, value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ReportError(f"{where}: expected a wav path (string), got {value!r}")
    p = Path(value)
    return os.path.relpath(p, root) if p.is_absolute() else p.as_posix()


def _find_samples(root: Path, per_file: int, outputs: list[dict]) -> list[Sample]:
    """The first ``per_file`` rows with audio of each outputs file; appends every row with audio to ``outputs``
    (each with ``_where``: its file and line, for error messages)."""
    samples = []
    for path in sorted((root / "outputs").glob("*.jsonl")):
        taken = 0
        for lineno, obj in read_json_lines(path):
            if not obj.get("audio"):
                continue  # a text-only output (ASR, AST, MT): nothing to listen to
            where = f"{path}:{lineno}"
            outputs.append({**obj, "_where": where})
            if taken >= per_file:
                continue
            ref = obj.get("ref_audio")
            samples.append(
                Sample(
                    source=path.relative_to(root).as_posix(),
                    id=str(obj.get("id", f"line {lineno}")),
                    task=str(obj.get("task", "")),
                    src=obj.get("src"),
                    tgt=obj.get("tgt"),
                    text=str(obj.get("text", "")),
                    ref_text=obj.get("ref_text"),
                    hyp_text=obj.get("hyp_text"),
                    audio=_rel_audio(root, obj["audio"], f"{where}: field 'audio'"),
                    ref_audio=_rel_audio(root, ref, f"{where}: field 'ref_audio'") if ref else None,
                )
            )
            taken += 1
    return samples


def load_results(
    results_dir: str | os.PathLike, *, samples_per_file: int = 4, runs: list[str | os.PathLike] | None = None
) -> Results:
    """Read and validate a results folder (see the module docstring for its layout); ``runs``: training run
    folders (or logs) plotted besides those summary.json names (:func:`run_log`), named by their folder."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: no such results folder")
    spath = root / "summary.json"
    summary = _read_json(spath)
    if not isinstance(summary, dict):
        raise ReportError(f"{spath}: expected a JSON object, got {type(summary).__name__}")
    raw_metrics = summary.get("metrics")
    if not isinstance(raw_metrics, list):
        raise ReportError(f"{spath}: field 'metrics': expected a list of score objects, got {raw_metrics!r}")
    metrics = [_parse_metric(m, f"{spath}: metrics[{i}]") for i, m in enumerate(raw_metrics)]
    extra = summary.get("extra_tables") or {}
    if not isinstance(extra, dict):
        raise ReportError(f"{spath}: field 'extra_tables': expected {{name: table}}, got {type(extra).__name__}")
    tables = {name: _parse_table(name, t, f"{spath}: extra_tables") for name, t in extra.items()}
    outputs: list[dict] = []
    samples = _find_samples(root, samples_per_file, outputs)
    extra_runs = {run_log(r).parent.name: run_log(r) for r in runs or []}
    missing = [p for s in samples for p in (s.audio, s.ref_audio) if p and not (root / p).is_file()]
    return Results(
        root=root,
        checkpoint=str(summary.get("checkpoint", "?")),
        metrics=metrics,
        extra_tables=tables,
        runs=_find_runs(root, summary, extra_runs),
        samples=samples,
        missing_audio=missing,
        decoding={label: summary[key] for key, label in DECODING_KEYS.items() if summary.get(key)},
        judge=summary.get("judge") if isinstance(summary.get("judge"), str) else None,
        max_items=summary.get("max_items") if isinstance(summary.get("max_items"), int) else None,
        full_pairs=[p for p in summary.get("full_pairs") or [] if isinstance(p, str)],
        outputs=outputs,
    )


# ----------------------------------------------------------------------------- tables and plot


def _lang(code: str | None) -> str:
    from audiopalm.data.manifest import LANGUAGES

    return LANGUAGES.get(code, code) if code else ""


def _pair_title(task: str, src: str | None, tgt: str | None) -> str:
    if src and tgt:
        return f"{task} {_lang(src)} → {_lang(tgt)} ({src}→{tgt})"
    if src:
        return f"{task} {_lang(src)} ({src})"
    return task


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    notes: list[str]
    """Footnotes (metric signatures)."""


def metric_tables(metrics: list[MetricRow]) -> list[Table]:
    """One table per (task, src, tgt): a row per (split, subset), a column per metric, then n."""
    groups: dict[tuple, list[MetricRow]] = defaultdict(list)
    for m in metrics:
        groups[(m.task, m.src or "", m.tgt or "")].append(m)
    tables = []
    for (task, src, tgt), rows in groups.items():
        names = list(dict.fromkeys(m.metric for m in rows))
        cells: dict[tuple, dict] = defaultdict(dict)
        counts: dict[tuple, set] = defaultdict(set)
        for m in rows:
            key = (m.split, m.subset)
            cells[key][m.metric] = m.value
            if m.n is not None:
                counts[key].add(m.n)
        table_rows = [
            [
                split,
                subset,
                *(c.get(name) for name in names),
                "/".join(str(n) for n in sorted(counts[(split, subset)])) or None,
            ]
            for (split, subset), c in cells.items()
        ]
        sigs = dict.fromkeys(f"{m.metric}: {m.signature}" for m in rows if m.signature)
        tables.append(
            Table(_pair_title(task, src or None, tgt or None), ["split", "subset", *names, "n"], table_rows, list(sigs))
        )
    return tables


def loss_curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """A training log's curves: ``loss`` (train) and each dev key (:data:`DEV_PREFIXES`: ``dev_loss/<task>`` ->
    ``dev <task>``), as sorted (step, value) points. ``dev_loss/all`` is dropped when it is the only task's
    curve again (one dev task)."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        for key, v in r.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            if key == "loss":
                curves["train"].append((r["step"], float(v)))
            elif key.startswith(DEV_PREFIXES):
                name = key.removeprefix("dev_loss/").removeprefix("dev_") if key != "eval_loss" else "loss"
                curves[f"dev {name}"].append((r["step"], float(v)))
    dev_tasks = [k for k in curves if k.startswith("dev ") and k != "dev all"]
    if "dev all" in curves and len(dev_tasks) == 1:
        del curves["dev all"]
    return {k: sorted(v) for k, v in curves.items()}


def plot_losses(runs: dict[str, list[dict]], path: Path) -> Path | None:
    """One panel per run (their losses differ in kind and scale): train loss solid, each dev curve dashed
    (:func:`loss_curves`). None if no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: c for name, c in ((n, loss_curves(rows)) for n, rows in runs.items()) if c}
    if not curves:
        return None
    cols = min(2, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.2 * nrows), dpi=110, squeeze=False)
    for ax, (name, run) in zip(axes.flat, curves.items(), strict=False):  # spare panels hidden below
        for i, (label, pts) in enumerate(run.items()):
            train = label == "train"
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "-" if train else "--",
                color="k" if train else f"C{i % 10}",
                lw=1.2 if train else 1.5,
                marker=None if len(pts) >= 20 else "o",
                ms=3,
                label=label,
            )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the first screen


@dataclasses.dataclass
class Example:
    """One output played on the first screen; wav paths relative to the results folder (copies under
    :data:`EXAMPLES_DIR`), None where the output has no such audio or its file is missing."""

    task: str
    src: str | None
    tgt: str | None
    subset: str
    id: str
    text: str
    ref_text: str | None
    hyp_text: str | None
    input: str | None
    reference: str | None
    ours: str | None


@dataclasses.dataclass
class FirstScreen:
    """What the report shows first: the goals against their targets, their chart, a few examples."""

    goals: list
    """:class:`audiopalm.evaluation.goals.GoalResult` per goal of :data:`audiopalm.evaluation.goals.GOALS`."""
    chart: Path | None
    """The goals chart (png), None when no goal was measured."""
    examples: list[Example]
    judge: str | None
    peers: list[str]
    """Names of the peer ASR systems whose rows stand beside the goals."""


def _atomic_copy(src: Path, dst: Path) -> None:
    import shutil

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def copy_examples(res: Results, rows: list[dict]) -> list[Example]:
    """Copy the input, reference and generated wav of each output row into ``EXAMPLES_DIR`` (replacing the wavs
    of an earlier report there), so the report folder plays on its own."""
    import re

    folder = res.root / EXAMPLES_DIR
    for old in folder.glob("*.wav"):
        old.unlink()
    examples = []
    for i, r in enumerate(rows):
        where = r.get("_where", "outputs")
        paths: dict[str, str | None] = {}
        for kind, field in (("input", "input_audio"), ("reference", "ref_audio"), ("ours", "audio")):
            rel = r.get(field)
            src = res.root / _rel_audio(res.root, rel, f"{where}: field {field!r}") if rel else None
            if src is None or not src.is_file():
                paths[kind] = None
                continue
            folder.mkdir(exist_ok=True)
            name = f"{i:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', str(r.get('task', 'x')))}_{kind}.wav"
            _atomic_copy(src, folder / name)
            paths[kind] = f"{EXAMPLES_DIR}/{name}"
        examples.append(
            Example(
                task=str(r.get("task", "")),
                src=r.get("src"),
                tgt=r.get("tgt"),
                subset=str(r.get("subset", "all")),
                id=str(r.get("id", "")),
                text=str(r.get("text", "")),
                ref_text=r.get("ref_text"),
                hyp_text=r.get("hyp_text"),
                **paths,
            )
        )
    return examples


def first_screen(res: Results) -> FirstScreen:
    """Measure the goals (:mod:`audiopalm.evaluation.goals`), draw their chart, copy the examples' audio."""
    from audiopalm.evaluation.goals import measure_goals, pick_examples, plot_goals

    goals = measure_goals(res.metrics, res.judge, max_items=res.max_items, full_pairs=res.full_pairs)
    png = res.root / GOALS_PNG
    chart = plot_goals(goals, png)
    if chart is None and png.exists():
        png.unlink()  # a stale chart from an earlier report
    peers = sorted({r.peer.name for r in goals if r.peer is not None})
    return FirstScreen(goals, chart, copy_examples(res, pick_examples(res.outputs)), res.judge, peers)


def _figure(f, with_n: bool = True) -> str:
    if f is None or f.value is None:
        return "—"
    return f"{f.value:.1f}" + (f" (n={f.n})" if with_n and f.n is not None else "")


STATUS_MARK = {"met": "✓ met", "not met": "✗ not met", "not measured": "– not measured"}


def goal_cells(r) -> list[str]:
    """The first-screen row of a :class:`audiopalm.evaluation.goals.GoalResult`: goal, target, measured, n, status, peer,
    judge on the reference audio, notes."""
    g = r.goal
    target = g.target_text + (f" = {r.bound:.1f}" if g.relative_to is not None and r.bound is not None else "")
    peer = "—"
    if r.peer is not None:
        peer = f"{r.peer.name}: {_figure(r.peer)}"
        if r.peer_ref is not None:
            peer += f"; on reference audio {_figure(r.peer_ref, with_n=False)}"
    measured = _figure(r.measured, with_n=False)
    n = "—" if r.measured is None or r.measured.n is None else str(r.measured.n)
    return [g.label, target, measured, n, STATUS_MARK[r.status], peer, _figure(r.ref_audio), "; ".join(r.notes)]


GOAL_COLUMNS = ["goal", "target", "measured", "n", "status", "peer ASR", "judge on reference audio", "note"]


def _screen_intro(screen: FirstScreen) -> str:
    judge = {"model": "the model's own ASR (not independent)", None: "not recorded"}.get(screen.judge, screen.judge)
    peers = ", ".join(screen.peers) or "none"
    return (
        "Issue #18's goals on the test split (unseen sentences), seen voices and the held-out voice apart; "
        f"n = utterances behind each figure. Judge of generated speech: {judge}; peer ASR: {peers}."
    )


def _example_title(x: Example) -> str:
    title = _pair_title(x.task, x.src, x.tgt)
    return title if x.subset == "all" else f"{title}, {x.subset.replace('_', ' ')}"


# ----------------------------------------------------------------------------- rendering


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _md_cell(v: object) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _md_link(path: str, label: str) -> str:
    return f"[{label}](<{path}>)"


def render_markdown(
    res: Results, tables: list[Table], loss_png: Path | None, created: str, screen: FirstScreen | None = None
) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Checkpoint: `{res.checkpoint}`  ",
        *[f"{label}: {how}  " for label, how in res.decoding.items()],
        f"Written: {created}",
        "",
    ]
    if screen is not None:
        lines += ["## Goals", "", _screen_intro(screen), ""]
        lines += [*_md_table(GOAL_COLUMNS, [goal_cells(r) for r in screen.goals]), ""]
        if screen.chart is not None:
            lines += [f"Chart: {_md_link(screen.chart.name, screen.chart.name)}", ""]
        if screen.examples:
            lines += [
                "### Listen",
                "",
                "| example | text | input | reference | ours | judge heard |",
                "|---|---|---|---|---|---|",
            ]
            for x in screen.examples:
                text = x.text + (f" → {x.ref_text}" if x.ref_text else "")
                links = [
                    _md_link(p, kind) if p else "—"
                    for p, kind in ((x.input, "input"), (x.reference, "reference"), (x.ours, "ours"))
                ]
                cells = [_md_cell(_example_title(x)), _md_cell(text), *links, _md_cell(x.hyp_text)]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Metrics", ""]
    if not tables:
        lines += ["No metrics in summary.json.", ""]
    for t in tables:
        lines += [f"### {t.title}", "", *_md_table(t.columns, t.rows), ""]
        lines += [f"- `{n}`" for n in t.notes] + ([""] if t.notes else [])
    for name, (columns, rows) in res.extra_tables.items():
        lines += [f"## {name}", "", *_md_table(columns, rows), ""]
    if loss_png is not None:
        lines += ["## Loss curves", "", LOSS_CAPTION, "", f"![loss curves]({loss_png.name})", ""]
    if res.samples:
        lines += [
            "## Samples",
            "",
            "| task | id | text | reference | generated | transcript |",
            "|---|---|---|---|---|---|",
        ]
        for s in res.samples:
            text = s.text + (f" → {s.ref_text}" if s.ref_text else "")
            ref = _md_link(s.ref_audio, "reference") if s.ref_audio else "—"
            lines.append(
                f"| {_md_cell(_pair_title(s.task, s.src, s.tgt))} | {_md_cell(s.id)} | {_md_cell(text)} "
                f"| {ref} | {_md_link(s.audio, 'generated')} | {_md_cell(s.hyp_text)} |"
            )
        lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .6em 0; font-size: .95em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; vertical-align: middle; }
th { background: #f3f5f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.notes { font-size: .8em; color: #666; margin-top: 0; }
ul.notes code { word-break: break-all; }
.meta { color: #555; }
audio { width: 15em; }
.missing { color: #b00; font-size: .85em; }
td.status { white-space: nowrap; font-weight: 600; }
td.met { background: #e8f5e9; color: #1b5e20; }
td.not-met { background: #ffebee; color: #b71c1c; }
td.not-measured { color: #777; }
img.chart { max-width: 100%; }
"""


def _html_table(columns: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        tds = "".join(
            f'<td class="num">{html.escape(_fmt(c))}</td>'
            if c is None or (isinstance(c, (int, float)) and not isinstance(c, bool))
            else f"<td>{html.escape(_fmt(c))}</td>"
            for c in row
        )
        body.append(f"<tr>{tds}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _html_audio(res: Results, rel: str | None) -> str:
    if not rel:
        return "—"
    src = html.escape(rel, quote=True)
    if not (res.root / rel).is_file():
        return f'<span class="missing">missing: {html.escape(rel)}</span>'
    return f'<audio controls preload="metadata" src="{src}"></audio>'


def _html_first_screen(res: Results, screen: FirstScreen) -> list[str]:
    e = html.escape
    parts = [f'<section id="goals"><h2>Goals</h2><p class="meta">{e(_screen_intro(screen))}</p>']
    head = "".join(f"<th>{e(c)}</th>" for c in GOAL_COLUMNS)
    body = []
    for r in screen.goals:
        cells = goal_cells(r)
        cls = r.status.replace(" ", "-")
        tds = "".join(
            f'<td class="{"status " + cls if i == 4 else "num" if i in (2, 3) else ""}">{e(c)}</td>'
            for i, c in enumerate(cells)
        )
        body.append(f"<tr>{tds}</tr>")
    parts.append(f'<table class="goals"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    if screen.chart is not None:
        data = base64.b64encode(screen.chart.read_bytes()).decode("ascii")
        parts.append(f'<img class="chart" alt="goals: measured / target" src="data:image/png;base64,{data}">')
    if screen.examples:
        parts.append(
            '<h3>Listen</h3><table class="examples"><thead><tr><th>example</th><th>text</th><th>input</th>'
            "<th>reference</th><th>ours</th><th>judge heard</th></tr></thead><tbody>"
        )
        for x in screen.examples:
            text = e(x.text) + (f"<br><i>→ {e(x.ref_text)}</i>" if x.ref_text else "")
            players = "".join(f"<td>{_html_audio(res, p)}</td>" for p in (x.input, x.reference, x.ours))
            parts.append(
                f"<tr><td>{e(_example_title(x))}<br><small>{e(x.id)}</small></td><td>{text}</td>{players}"
                f"<td>{e(x.hyp_text or '—')}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</section>")
    return parts


def render_html(
    res: Results, tables: list[Table], loss_png: Path | None, created: str, screen: FirstScreen | None = None
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evaluation report: {e(res.checkpoint)}</title><style>{_CSS}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f'<p class="meta">Checkpoint: <code>{e(res.checkpoint)}</code><br>'
        + "".join(f"{label}: {e(how)}<br>" for label, how in res.decoding.items())
        + f"Written: {e(created)}</p>",
        *(_html_first_screen(res, screen) if screen is not None else []),
        "<h2>Metrics</h2>",
    ]
    if not tables:
        parts.append("<p>No metrics in summary.json.</p>")
    for t in tables:
        parts.append(f"<h3>{e(t.title)}</h3>" + _html_table(t.columns, t.rows, "metrics"))
        if t.notes:
            parts.append('<ul class="notes">' + "".join(f"<li><code>{e(n)}</code></li>" for n in t.notes) + "</ul>")
    for name, (columns, rows) in res.extra_tables.items():
        parts.append(f"<h2>{e(name)}</h2>" + _html_table(columns, rows, "extra"))
    if loss_png is not None:
        data = base64.b64encode(loss_png.read_bytes()).decode("ascii")
        parts.append(
            f'<h2>Loss curves</h2><p class="meta">{html.escape(LOSS_CAPTION)}</p>'
            f'<img class="chart" alt="loss curves" src="data:image/png;base64,{data}">'
        )
    if res.samples:
        parts.append(
            '<h2>Samples</h2><p class="meta">Audio plays from the wav files beside this page '
            "(paths relative to the results folder).</p>"
        )
        parts.append(
            '<table class="samples"><thead><tr><th>task</th><th>id</th><th>text</th><th>reference</th>'
            "<th>generated</th><th>transcript</th></tr></thead><tbody>"
        )
        for s in res.samples:
            text = e(s.text) + (f"<br><i>→ {e(s.ref_text)}</i>" if s.ref_text else "")
            parts.append(
                f"<tr><td>{e(_pair_title(s.task, s.src, s.tgt))}</td><td>{e(s.id)}</td><td>{text}</td>"
                f"<td>{_html_audio(res, s.ref_audio)}</td><td>{_html_audio(res, s.audio)}</td>"
                f"<td>{e(s.hyp_text or '—')}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(
    results_dir: str | os.PathLike, *, samples_per_file: int = 4, runs: list[str | os.PathLike] | None = None
) -> tuple[Path, Path]:
    """Read ``results_dir`` and write ``report.md``, ``report.html`` (the goals first, then the detail tables),
    ``goals.png``, ``loss_curves.png`` and the examples' wavs (``examples/``) into it; ``runs``: training runs
    to plot besides those summary.json names.

    Returns ``(md_path, html_path)``. Raises :class:`ReportError` on a bad results folder.
    """
    res = load_results(results_dir, samples_per_file=samples_per_file, runs=runs)
    if res.missing_audio:
        print(
            f"warning: {len(res.missing_audio)} sample wav file(s) missing under {res.root}, first: "
            f"{res.missing_audio[0]}",
            file=sys.stderr,
        )
    tables = metric_tables(res.metrics)
    png = res.root / LOSS_PNG
    loss_png = plot_losses(res.runs, png) if res.runs else None
    if loss_png is None and png.exists():
        png.unlink()  # a stale plot from an earlier report
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md_path, html_path = res.root / "report.md", res.root / "report.html"
    screen = first_screen(res)
    _atomic_write(md_path, render_markdown(res, tables, loss_png, created, screen))
    _atomic_write(html_path, render_html(res, tables, loss_png, created, screen))
    return md_path, html_path


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="the evaluation results folder (with summary.json)")
    parser.add_argument(
        "--samples", type=int, default=4, metavar="N", help="audio samples shown per outputs/*.jsonl file (default 4)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="DIR",
        help="training run folders (with metrics.jsonl) whose loss curves to plot, besides those summary.json names",
    )


def run(args) -> int:
    if args.samples < 0:
        print(f"--samples must be >= 0, got {args.samples}", file=sys.stderr)
        return 2
    try:
        md, page = write_report(args.results_dir, samples_per_file=args.samples, runs=args.runs)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {md}\nwrote {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audiopalm.evaluation.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
