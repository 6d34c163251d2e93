"""The goals of issue #18, measured against their targets: the table the report's first screen reads.

Each :class:`Goal` names one summary.json figure (task, language pair, subset, metric) and its target;
:func:`measure_goals` looks each one up in an evaluation's metric rows and says met / not met / not measured,
with the number of utterances behind it, the peer ASR's row (``<metric> [peer]``, e.g. PocketSphinx) and the
judge's row on the reference audio (``<metric> (ref audio)``) beside it. A goal may be relative: its bound is
``target`` times another figure (TTS within 2x of the judge's WER on the reference audio; chained S2ST at least
the direct one). Everything about a goal is defined here once; the report renders it (:mod:`audiopalm.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
MIN_N = 50
"""Utterances per subset below which a figure is flagged: one sentence in 10 moves a WER by about 10 points."""
SELF_JUDGE = "model"
"""summary.json's ``judge`` when the model judged its own speech (not independent: the goals need another)."""


@dataclasses.dataclass(frozen=True)
class Goal:
    """One measured goal of the first screen."""

    label: str
    """What a reader sees, e.g. ``English ASR, seen voices``."""
    task: str
    """summary.json task name (``ASR``, ``AST``, ``MT``, ``TTS``, ``S2ST``, ``ASR AST S2ST``)."""
    src: str
    """Source language code."""
    tgt: str | None
    """Target language code (None for same-language tasks)."""
    subset: str
    """``seen_voices`` / ``heldout_voice`` (speech input) or ``all``."""
    metric: str
    """summary.json metric name (``WER``, ``BLEU``, ``TTS-WER``, ``ASR-BLEU``)."""
    op: str
    """``<=`` (lower is better) or ``>=``."""
    target: float
    """The bound; with ``relative_to`` a factor of that figure."""
    relative_to: tuple[str, str] | None = None
    """(task, metric) of the same pair and subset whose value times ``target`` is the bound, else None."""
    min_n: int = MIN_N
    """Utterances the figure should rest on (fewer: flagged with its n)."""
    judged: bool = False
    """Whether the figure comes from an ASR judge of generated speech: it needs one independent of the model."""

    def __post_init__(self):
        if self.op not in ("<=", ">="):
            raise ValueError(f"op: expected '<=' or '>=', got {self.op!r} (goal {self.label!r})")
        if self.min_n < 1:
            raise ValueError(f"min_n: expected >= 1, got {self.min_n} (goal {self.label!r})")

    @property
    def target_text(self) -> str:
        op = {"<=": "≤", ">=": "≥"}[self.op]
        if self.relative_to is None:
            return f"{op} {self.target:g}"
        task, metric = self.relative_to
        other = metric if task == self.task else f"{task} {metric}"
        return f"{op} {other}" if self.target == 1 else f"{op} {self.target:g} × {other}"


_SUBSETS = (("seen_voices", "seen voices"), ("heldout_voice", "held-out voice"))
GOALS: tuple[Goal, ...] = (
    *(
        Goal(f"English ASR WER, {name}", "ASR", "en", None, s, "WER", "<=", t)
        for (s, name), t in zip(_SUBSETS, (10, 25), strict=True)
    ),
    *(Goal(f"AST en→fr BLEU, {name}", "AST", "en", "fr", s, "BLEU", ">=", 30) for s, name in _SUBSETS),
    Goal("MT en→fr BLEU", "MT", "en", "fr", "all", "BLEU", ">=", 50, min_n=500),
    Goal("TTS English, judge WER", "TTS", "en", None, "all", "TTS-WER", "<=", 30, judged=True),
    Goal(
        "TTS English, judge WER vs reference audio",
        "TTS",
        "en",
        None,
        "all",
        "TTS-WER",
        "<=",
        2,
        relative_to=("TTS", "TTS-WER (ref audio)"),
        judged=True,
    ),
    *(
        Goal(f"S2ST en→fr ASR-BLEU, {name}", "S2ST", "en", "fr", s, "ASR-BLEU", ">=", 20, judged=True)
        for s, name in _SUBSETS
    ),
    *(
        Goal(
            f"S2ST en→fr chained ≥ direct, {name}",
            "ASR AST S2ST",
            "en",
            "fr",
            s,
            "ASR-BLEU",
            ">=",
            1,
            relative_to=("S2ST", "ASR-BLEU"),
            judged=True,
        )
        for s, name in _SUBSETS
    ),
)
"""Issue #18's goals on the test split (unseen sentences), seen voices and the held-out voice apart."""


@dataclasses.dataclass
class Figure:
    """A value and the utterances behind it."""

    value: float | None
    n: int | None
    name: str = ""
    """Who produced it (a peer's name), where that matters."""


@dataclasses.dataclass
class GoalResult:
    """One goal measured: a row of the first screen."""

    goal: Goal
    status: str
    """:data:`MET`, :data:`NOT_MET` or :data:`NOT_MEASURED`."""
    measured: Figure | None
    """The goal's own figure (None when summary.json has no such row)."""
    bound: float | None
    """The value to beat: the target, or target × the ``relative_to`` figure."""
    base: Figure | None = None
    """The ``relative_to`` figure, where the goal has one."""
    peer: Figure | None = None
    """The peer ASR's figure on the same audio (``<metric> [peer]``), where there is one."""
    peer_ref: Figure | None = None
    """The peer's figure on the reference audio."""
    ref_audio: Figure | None = None
    """The judge's figure on the reference audio (``<metric> (ref audio)``)."""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def progress(self) -> float | None:
        """How far toward the bound, 1.0 = exactly on it, above 1 = met (either direction); None if unmeasured."""
        if self.measured is None or self.measured.value is None or self.bound is None:
            return None
        v, b = self.measured.value, self.bound
        if self.goal.op == ">=":
            return v / b if b > 0 else (1.0 if v >= b else 0.0)
        return b / v if v > 0 else float("inf")


def _key(row) -> tuple:
    return (row.task, row.src or None, row.tgt or None, row.split, row.subset, row.metric)


def measure_goals(
    metrics: Iterable,
    judge: str | None,
    goals: Iterable[Goal] = GOALS,
    *,
    max_items: int | None = None,
    full_pairs: Sequence[str] = (),
) -> list[GoalResult]:
    """Each goal against the test-split ``metrics`` (summary.json rows: objects with task, src, tgt, split,
    subset, metric, value, n); ``judge``: summary.json's ``judge`` (speech judged by the model itself is not
    independent, so judged goals are then not measured); ``max_items`` / ``full_pairs``: how the eval chose its
    utterances (summary.json's), so that a figure on too few says whether ``--max-items`` capped it."""
    from audiopalm.evaluation.evaluate import is_full_pair

    table = {_key(m): m for m in metrics}

    def fig(task: str, src: str, tgt: str | None, subset: str, metric: str) -> Figure | None:
        m = table.get((task, src, tgt, "test", subset, metric))
        return None if m is None else Figure(m.value, m.n)

    def peer_fig(goal: Goal, suffix: str) -> Figure | None:
        for (task, src, tgt, split, subset, metric), m in table.items():
            head = f"{goal.metric} ["
            if (task, src, tgt, split, subset) != (goal.task, goal.src, goal.tgt, "test", goal.subset):
                continue
            if metric.startswith(head) and metric.endswith("]" + suffix):
                return Figure(m.value, m.n, metric[len(head) : len(metric) - len(suffix) - 1])
        return None

    results = []
    for g in goals:
        measured = fig(g.task, g.src, g.tgt, g.subset, g.metric)
        res = GoalResult(g, NOT_MEASURED, measured, None)
        if g.judged:
            res.ref_audio = fig(g.task, g.src, g.tgt, g.subset, g.metric + " (ref audio)")
        res.peer, res.peer_ref = peer_fig(g, ""), peer_fig(g, " (ref audio)")
        results.append(res)
        if measured is None or measured.value is None:
            res.notes.append(f"no {g.task} {g.src}{'-' + g.tgt if g.tgt else ''} {g.subset} {g.metric} in the eval")
            continue
        if g.relative_to is not None:
            res.base = fig(g.relative_to[0], g.src, g.tgt, g.subset, g.relative_to[1])
            if res.base is None or res.base.value is None:
                res.notes.append(f"no {' '.join(g.relative_to)} to compare with")
                continue
            res.bound = g.target * res.base.value
        else:
            res.bound = g.target
        if measured.n is not None and measured.n < g.min_n:
            capped = max_items is not None and not is_full_pair(g.src, g.tgt, full_pairs)
            pair = f"{g.src}-{g.tgt}" if g.tgt else g.src
            why = f" (--max-items {max_items}: add --full-pairs {pair})" if capped else ""
            res.notes.append(f"n = {measured.n} < {g.min_n}{why}")
        if g.judged and judge == SELF_JUDGE:
            res.notes.append("judged by the model's own ASR, not independent: run with --judge ctc:FOLDER")
            continue
        ok = measured.value <= res.bound if g.op == "<=" else measured.value >= res.bound
        res.status = MET if ok else NOT_MET
    return results


def plot_goals(results: list[GoalResult], path: Path) -> Path | None:
    """A horizontal bar per measured goal: progress toward its bound (1 = on target, right of it = met), labelled
    measured / bound. None when no goal was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.progress is not None]
    if not shown:
        return None
    cap = 2.0  # a goal beaten many times over would squash the others
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(shown) + 1.1), dpi=110)
    ys = list(range(len(shown)))[::-1]
    for y, r in zip(ys, shown, strict=True):
        progress = r.progress
        # (a progress implies a measured value and a bound: GoalResult.progress)
        assert progress is not None and r.measured is not None and r.bound is not None, (r.goal.label, r.measured)
        color = {MET: "#2e7d32", NOT_MET: "#c62828"}.get(r.status, "#9e9e9e")
        ax.barh(y, min(progress, cap), color=color, height=0.6)
        ax.text(
            min(progress, cap) + 0.02,
            y,
            f"{r.measured.value:.1f} / {r.bound:.1f}",
            va="center",
            fontsize=8,
        )
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_yticks(ys, [r.goal.label for r in shown], fontsize=8)
    ax.set_xlim(0, cap + 0.45)
    ax.set_xlabel("measured / target, as a fraction toward it (1 = on target, right of it = met)", fontsize=8)
    ax.set_title("Goals of issue #18: measured / target", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


EXAMPLE_TASKS = ("TTS", "S2ST")
"""Tasks whose outputs the first screen plays (input, reference, ours)."""


def pick_examples(rows: list[dict], per_task: int = 2) -> list[dict]:
    """A few outputs/*.jsonl rows with generated audio to play on the first screen: per task of
    :data:`EXAMPLE_TASKS`, rows of a goal's pair first, one per subset before a second of the same subset."""
    pairs = {(g.task, g.src, g.tgt) for g in GOALS}
    picked = []
    for task in EXAMPLE_TASKS:
        cands = [r for r in rows if r.get("task") == task and r.get("audio")]
        cands.sort(key=lambda r: (task, r.get("src"), r.get("tgt")) not in pairs)  # stable: goal pairs first
        chosen: list[dict] = []
        for r in cands:  # one per subset first
            if len(chosen) < per_task and r.get("subset") not in {c.get("subset") for c in chosen}:
                chosen.append(r)
        chosen += [r for r in cands if r not in chosen][: per_task - len(chosen)]
        picked += chosen
    return picked
