"""Token store rows -> task examples -> batches: a weighted task mixture, packing, and padding.

Examples are dicts ``{"input_ids": [L], "labels": [L]}`` with ``labels == -100`` on the prompt (loss on
targets only), as :func:`audiopalm.data.tasks.render` makes them. Two ways to batch them:

* **packing** (:class:`PackedCollator`): several examples are laid end to end in one row of at most
  ``max_len`` tokens; ``position_ids`` restart at 0 for each example. With ``attention_mask=None``
  transformers' causal-mask builder (``masking_utils.find_packed_sequence_indices``) turns restarting
  position ids into a block-diagonal causal mask, so attention never crosses examples (tested against
  unpacked forward passes in tests/test_data.py). Call the model with ``use_cache=False``: with a KV
  cache transformers skips the packing check and the examples would see each other.
  :class:`PackedBatches` chooses the rows by best fit over a few open rows, so nearly every token in a packed
  batch is useful work::

      row 0:  [ex3 ex3 ex3 ex3 | ex7 ex7 ex7 | ex1 ex1 | pad]
      pos:    [ 0   1   2   3  |  0   1   2  |  0   1  |  0 ]

* **padding** (:class:`PaddingCollator`): one example per row, right-padded to the longest in the batch,
  with a 2-D attention mask — the usual dynamic-padding baseline.

:class:`TaskMixture` draws examples from one or more token stores for a weighted list of tasks,
deterministically for a seed, and can resume mid-epoch from ``state_dict()``; :class:`PackedBatches` and
:class:`PaddedBatches` turn it into endless batches that resume exactly as well.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import torch

from audiopalm.data.tasks import IGNORE_INDEX  # labels that the loss skips (prompt and padding)


class UnitNoise:
    """Replaces each input audio token (one in the prompt, ``labels == -100``, that has neighbours) with probability
    ``p`` by one of its neighbours, drawn from the given generator; targets are never changed.

    ``neighbours``: token id -> the token ids it may become (:func:`nearest_units` mapped to the vocabulary).
    ``shift``: the probability that an input unit instead takes the unit before or after it (either, evenly; only
    one that is itself an input unit): a boundary moved by one unit, as another speaking rate or accent moves it.
    Every draw comes from the original sequence, so the length and the positions stay as they were."""

    def __init__(self, neighbours: dict[int, list[int]], p: float, shift: float = 0.0):
        if not 0 <= p < 1 or not 0 <= shift < 1 or p + shift >= 1:
            raise ValueError(f"UnitNoise: p and shift must be in [0, 1) with p + shift < 1, got {p} and {shift}")
        self.neighbours, self.p, self.shift = neighbours, p, shift

    def __call__(self, example: dict, gen: torch.Generator) -> dict:
        ids, labels = example["input_ids"], example["labels"]
        draws = torch.rand(len(ids), generator=gen).tolist()
        picks = torch.randint(0, 1 << 30, (len(ids),), generator=gen).tolist()
        out = list(ids)

        def unit(i: int) -> bool:  # an input unit the noise may change
            return 0 <= i < len(ids) and labels[i] == IGNORE_INDEX and ids[i] in self.neighbours

        for i in range(len(ids)):
            if not unit(i):
                continue
            if draws[i] < self.p:
                near = self.neighbours[ids[i]]
                out[i] = near[picks[i] % len(near)]
            elif draws[i] < self.p + self.shift:
                j = i + (1 if picks[i] % 2 else -1)
                if unit(j):
                    out[i] = ids[j]
        return {**example, "input_ids": out}


def nearest_units(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """Code vectors [K, D] -> [K, k] long: each unit's k nearest other units (Euclidean), nearest first."""
    if not 1 <= k < vectors.shape[0]:
        raise ValueError(f"nearest_units: k must be in 1..{vectors.shape[0] - 1}, got {k}")
    d = torch.cdist(vectors.float(), vectors.float())  # [K, K]
    d.fill_diagonal_(float("inf"))
    return d.topk(k, largest=False).indices


@dataclasses.dataclass
class MixtureSource:
    """One stream of examples: a task rendered from the rows of one token store."""

    name: str
    """Label used in logs and skip counts, e.g. ``"ASR en"``."""
    rows: Sequence[dict]
    """Token-store rows (a ``datasets.Dataset`` or a list of dicts)."""
    render: Callable[[dict], dict | None]
    """Row -> ``{"input_ids", "labels"}``, or None to skip the row (counted)."""
    weight: float = 1.0
    """Relative sampling weight of this source in the mixture."""

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"MixtureSource {self.name!r}: weight must be > 0, got {self.weight}")
        if len(self.rows) == 0:
            raise ValueError(f"MixtureSource {self.name!r}: no rows")


class TaskMixture:
    """A deterministic, resumable stream of examples drawn from weighted sources.

    One epoch draws ``examples_per_epoch`` examples (default: the total number of rows); each draw picks a
    source with probability proportional to its weight, then that source's next row in a per-epoch
    permutation (cycling if a heavily weighted source runs out). The order depends only on
    ``(seed, epoch)``, so ``load_state_dict(state_dict())`` continues exactly where a run stopped, and every
    example has an address, ``(epoch, position in that epoch's plan)``, from which :meth:`example_at`
    renders it again (``render`` is deterministic).
    """

    def __init__(
        self,
        sources: Sequence[MixtureSource],
        *,
        seed: int = 0,
        examples_per_epoch: int | None = None,
        augment: Callable[[dict, torch.Generator], dict] | None = None,
    ):
        if not sources:
            raise ValueError("TaskMixture needs at least one source")
        self.sources = list(sources)
        self.seed = seed
        self.augment = augment
        """Applied to each rendered example with a generator seeded by (seed, its address), e.g. :class:`UnitNoise`."""
        self.examples_per_epoch = examples_per_epoch or sum(len(s.rows) for s in self.sources)
        self.epoch = 0
        self.position = 0  # examples of the current epoch already yielded (rendered or skipped)
        self.skipped: dict[str, int] = {s.name: 0 for s in self.sources}
        self._plans: dict[int, list[tuple[int, int]]] = {}  # the last epoch's plan, kept for example_at

    def _plan(self, epoch: int) -> list[tuple[int, int]]:
        """The epoch's (source index, row index) draws."""
        if epoch in self._plans:
            return self._plans[epoch]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        weights = torch.tensor([s.weight for s in self.sources], dtype=torch.float64)
        picks = torch.multinomial(weights, self.examples_per_epoch, replacement=True, generator=g).tolist()
        perms = [torch.randperm(len(s.rows), generator=g).tolist() for s in self.sources]
        used = [0] * len(self.sources)
        plan = []
        for src in picks:
            perm = perms[src]
            plan.append((src, perm[used[src] % len(perm)]))
            used[src] += 1
        self._plans = {epoch: plan}
        return plan

    def _render(self, epoch: int, position: int) -> tuple[str, dict | None]:
        """The source's name and its example at ``(epoch, position)``, tagged (None: ``render`` skips the row)."""
        src, row = self._plan(epoch)[position]
        source = self.sources[src]
        example = source.render(source.rows[row])
        if example is None:
            return source.name, None
        if self.augment is not None:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + position)
            example = self.augment(example, gen)
        return source.name, {**example, "source": source.name, "address": (epoch, position)}

    def __iter__(self) -> Iterator[dict]:
        """Yields examples forever, epoch after epoch, each tagged with ``"source"`` (its name) and
        ``"address"`` (``(epoch, position)``)."""
        while True:
            while self.position < self.examples_per_epoch:
                name, example = self._render(self.epoch, self.position)
                self.position += 1
                if example is None:
                    self.skipped[name] += 1
                    continue
                yield example
            self.epoch += 1
            self.position = 0

    def example_at(self, address: Sequence[int]) -> dict:
        """The example the stream yielded at ``address`` (``(epoch, position)``), rendered again; the stream's
        position and skip counts are left as they are."""
        _, example = self._render(*address)
        if example is None:
            raise ValueError(f"mixture address {tuple(address)}: that row renders to nothing (a skipped row)")
        return example

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": dict(self.skipped), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"mixture state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], dict(state["skipped"])


@dataclasses.dataclass
class PackedCollator:
    """A list of packed rows (each a list of examples) -> a batch of ``[B, max_len]`` tensors.

    Returns ``input_ids``, ``labels``, ``position_ids`` (restarting per example; padding gets its own
    run of positions from 0 so it forms a separate, fully masked block) and ``num_target_tokens``
    (labels that the shifted loss will score). No ``attention_mask``: see the module docstring.
    """

    max_len: int
    """Row length; every row is padded to exactly this (static shapes)."""
    pad_id: int
    """Token id used for padding (its label is -100)."""

    def __call__(self, rows: Sequence[Sequence[dict]]) -> dict[str, torch.Tensor]:
        B = len(rows)
        input_ids = torch.full((B, self.max_len), self.pad_id, dtype=torch.long)  # [B, L]
        labels = torch.full((B, self.max_len), IGNORE_INDEX, dtype=torch.long)  # [B, L]
        position_ids = torch.zeros((B, self.max_len), dtype=torch.long)  # [B, L]
        for b, row in enumerate(rows):
            at = 0
            for ex in row:
                n = len(ex["input_ids"])
                assert at + n <= self.max_len, (at, n, self.max_len)
                input_ids[b, at : at + n] = torch.as_tensor(ex["input_ids"])
                labels[b, at : at + n] = torch.as_tensor(ex["labels"])
                position_ids[b, at : at + n] = torch.arange(n)
                at += n
            position_ids[b, at:] = torch.arange(self.max_len - at)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            **read_fields(rows, self.max_len),
            "num_target_tokens": count_target_tokens(labels),
        }


@dataclasses.dataclass
class PaddingCollator:
    """One example per row, right-padded to the longest in the batch, with a 2-D attention mask."""

    pad_id: int
    """Token id used for padding (its label is -100)."""
    pad_to_multiple_of: int = 1
    """Round the padded length up (8 or 64 helps GPU kernels)."""

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(ex["input_ids"]) for ex in examples)
        L = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(examples)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)  # [B, L]
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((B, L), dtype=torch.long)  # [B, L]
        for b, ex in enumerate(examples):
            n = len(ex["input_ids"])
            input_ids[b, :n] = torch.as_tensor(ex["input_ids"])
            labels[b, :n] = torch.as_tensor(ex["labels"])
            attention_mask[b, :n] = 1
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            **read_fields([[ex] for ex in examples], L),
            "num_target_tokens": count_target_tokens(labels),
        }


def read_fields(rows: Sequence[Sequence[dict]], length: int) -> dict[str, torch.Tensor]:
    """The reading loss's fields of a batch whose examples carry ``"read"`` spans (``render(..., read=True)``);
    {} when none does. ``rows[b]`` are the examples of row ``b``, laid one after another from position 0.

    ``read_span`` [B, L]: k at the positions of row b's k-th span (1-based), 0 elsewhere; ``read_targets``
    [B, S, U]: the k-th span's transcript ids at ``[b, k - 1]``, -100 after its end. Both are indexed by row first,
    so a micro-batch is a slice of rows like the other fields."""
    spans: list[list[tuple[int, int, list[int]]]] = []
    for row in rows:
        spans.append([])
        at = 0
        for ex in row:
            if "read" in ex:
                lo, hi, target = ex["read"]
                spans[-1].append((at + lo, at + hi, target))
            at += len(ex["input_ids"])
    if not any(spans):
        return {}
    S = max(len(r) for r in spans)
    U = max(len(t) for r in spans for _, _, t in r)
    read_span = torch.zeros((len(rows), length), dtype=torch.long)  # [B, L]
    read_targets = torch.full((len(rows), S, U), IGNORE_INDEX, dtype=torch.long)  # [B, S, U]
    for b, row_spans in enumerate(spans):
        for k, (lo, hi, target) in enumerate(row_spans):
            read_span[b, lo:hi] = k + 1
            read_targets[b, k, : len(target)] = torch.as_tensor(target)
    return {"read_span": read_span, "read_targets": read_targets}


def count_target_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Labels the causal-LM loss scores: position t predicts labels[t+1], so the first column never counts."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


class PackedBatches:
    """Endless packed batches from a mixture, best fit over a pool of open rows, resumable exactly.

    Up to ``open_rows`` rows are open at a time. Each example from the mixture goes into the open row with the
    least room left that still fits it; when none fits it starts a new row, and if the pool is full the fullest
    open row closes first to make room. A row that is exactly full closes at once. Every ``rows_per_batch``
    closed rows make a batch, in the order they closed. Nothing is dropped, duplicated or truncated: an example
    longer than ``max_len`` is an error (``render`` should have refused it). ``open_rows=1`` is next-fit (an
    example that does not fit closes the row), which leaves more of each row empty.

    :meth:`state_dict` holds the mixture's state after the last example drawn and the addresses
    (:meth:`TaskMixture.example_at`) of the examples that wait in closed and open rows, row by row, so a run
    restored from it yields exactly the batches an uninterrupted one does. Iterating starts from that state.
    """

    def __init__(
        self, mixture: TaskMixture, *, max_len: int, rows_per_batch: int, pad_id: int, open_rows: int | None = None
    ):
        # 2 batches' worth. Measured on 40..430-token examples (log-normal, mean 150 like eval/bench_train.py's mix),
        # 448-token rows, 4 rows a batch: next-fit (1 open row) leaves 19% of the slots empty, 2x 3.6%, 4x 3.1%, but
        # with 4x the slowest 1% of the examples wait ~30 batches in open rows (2x: ~10)
        open_rows = 2 * rows_per_batch if open_rows is None else open_rows
        if rows_per_batch < 1 or open_rows < 1:
            raise ValueError(f"rows_per_batch and open_rows must be >= 1, got {rows_per_batch} and {open_rows}")
        self.mixture = mixture
        self.max_len, self.rows_per_batch, self.open_rows = max_len, rows_per_batch, open_rows
        self.collate = PackedCollator(max_len=max_len, pad_id=pad_id)
        self._resume: dict = {"mixture": mixture.state_dict(), "closed": [], "open": []}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.mixture.load_state_dict(self._resume["mixture"])
        closed = [[self.mixture.example_at(a) for a in row] for row in self._resume["closed"]]  # in closing order
        pool = [[self.mixture.example_at(a) for a in row] for row in self._resume["open"]]  # in opening order
        room = [self.max_len - sum(len(ex["input_ids"]) for ex in row) for row in pool]  # free slots per open row
        stream = iter(self.mixture)
        while True:
            ex = next(stream)
            n = len(ex["input_ids"])
            if n > self.max_len:
                raise ValueError(
                    f"example of {n} tokens is longer than max_len={self.max_len} "
                    f"(source {ex['source']}); render() should have refused it"
                )
            fits = [r for r in range(len(pool)) if room[r] >= n]
            if fits:
                at = min(fits, key=room.__getitem__)  # best fit; the oldest row on a tie
            else:
                if len(pool) == self.open_rows:
                    fullest = min(range(len(pool)), key=room.__getitem__)
                    closed.append(pool.pop(fullest))
                    room.pop(fullest)
                pool.append([])
                room.append(self.max_len)
                at = len(pool) - 1
            pool[at].append(ex)
            room[at] -= n
            if room[at] == 0:
                closed.append(pool.pop(at))
                room.pop(at)
            while len(closed) >= self.rows_per_batch:
                batch, closed = closed[: self.rows_per_batch], closed[self.rows_per_batch :]
                self._resume = {
                    "mixture": self.mixture.state_dict(),
                    "closed": [[list(e["address"]) for e in row] for row in closed],
                    "open": [[list(e["address"]) for e in row] for row in pool],
                }
                yield self.collate(batch)

    def state_dict(self) -> dict:
        return copy.deepcopy(self._resume)

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"mixture", "closed", "open"}:
            raise ValueError(
                f"packer state with keys {sorted(state)}: not a best-fit packer's (a checkpoint of an older audiopalm, "
                "which packed by next fit); it cannot be resumed exactly: start the run again"
            )
        if len(state["open"]) > self.open_rows:
            raise ValueError(f"packer state has {len(state['open'])} open rows, this packer keeps {self.open_rows}")
        self.mixture.load_state_dict(state["mixture"])
        self._resume = copy.deepcopy(state)


class RowCache:
    """Token-store rows already read, by ``(store index, row index)``, shared by the :class:`StoreRows` of every task
    that reads the same stores (a row rendered as ASR is soon rendered as AST, TTS ...); at most ``size`` rows are
    kept (then it starts again), so a corpus far larger than memory is still read lazily. Rows are read-only:
    rendering never changes a row."""

    def __init__(self, size: int = 200_000):
        self.size = size
        self.rows: dict[tuple[int, int], dict] = {}

    def get(self, datasets: list, s: int, r: int) -> dict:
        row = self.rows.get((s, r))
        if row is None:
            if len(self.rows) >= self.size:
                self.rows.clear()
            row = self.rows[(s, r)] = datasets[s][r]
        return row


class StoreRows(Sequence):
    """Rows of several token stores picked by ``(store index, row index)``, read lazily (memory-mapped), through a
    :class:`RowCache` when given one."""

    def __init__(self, datasets: list, index: list[tuple[int, int]], cache: RowCache | None = None):
        # (not `self.index`: that would hide Sequence.index)
        self.datasets, self.picks, self.cache = datasets, index, cache

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, i: int) -> dict:  # type: ignore[override]  # ints only: no slices of rows are taken
        s, r = self.picks[i]
        return self.datasets[s][r] if self.cache is None else self.cache.get(self.datasets, s, r)


class PaddedBatches:
    """Endless padded batches of ``rows_per_batch`` examples from a mixture, resumable exactly (one example per
    row); the counterpart of :class:`PackedBatches`."""

    def __init__(self, mixture: TaskMixture, *, rows_per_batch: int, pad_id: int):
        self.mixture, self.rows_per_batch = mixture, rows_per_batch
        self.collate = PaddingCollator(pad_id=pad_id)
        self._resume = mixture.state_dict()

    def __iter__(self):
        stream = iter(self.mixture)
        while True:
            examples = [next(stream) for _ in range(self.rows_per_batch)]
            self._resume = self.mixture.state_dict()  # nothing drawn beyond this batch
            yield self.collate(examples)

    def state_dict(self) -> dict:
        return dict(self._resume)

    def load_state_dict(self, state: dict) -> None:
        self.mixture.load_state_dict(state)
        self._resume = dict(state)
