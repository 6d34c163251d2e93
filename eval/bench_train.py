"""Benchmark training throughput: packed batches vs dynamic padding vs ``transformers.Trainer``, padded and flattened.

    python eval/bench_train.py --quick --out runs/bench/train.json     # < 1 min on 2 CPU cores
    python eval/bench_train.py --out runs/bench/train.json             # stage-0 model size, longer
    python eval/bench_train.py --store runs/demo/tokens/train --out runs/bench/train.json   # real codes

Four ways to train the same model on the same multitask data, with the same global batch in tokens:

(a) ``packed``: :class:`audiopalm.data.batching.PackedBatches` — examples laid end to end in rows of ``max_len``
    tokens (best fit over a pool of open rows), restarting ``position_ids``, no attention mask, ``use_cache=False``;
(b) ``padded``: :class:`audiopalm.data.batching.PaddingCollator` — one example per row, right-padded to the
    longest in the batch (dynamic padding), our own training loop;
(c) ``hf_trainer``: a plain ``transformers.Trainer`` with ``DataCollatorForSeq2Seq`` (dynamic padding,
    no length grouping), the baseline most people start from;
(d) ``hf_flatten``: the same ``transformers.Trainer`` with HF's own packing, ``DataCollatorWithFlattening``: the
    step's examples laid end to end in one row, ``position_ids`` restarting per example, no padding, no
    attention mask. transformers (its ``masking_utils``, here 5.x) then builds a block-diagonal causal mask from the
    restarting positions for SDPA / eager attention too (flash-attention is not needed for correctness), so
    no token attends across examples: the bench checks this on the model before timing
    (``hf_flatten_masks_across_examples``) and refuses to time a version where it does not hold. It trains on the
    same examples in the same order as (c), the same tokens.

The model is a small Llama built from a config (no hub), extended with the audio vocabulary
(``--num-codebooks`` x ``--codebook-size`` codes, flatten pattern) by
:func:`audiopalm.modeling.extend.extend_model`. The data is an ASR / AST / TTS / S2ST / MT mixture
(:class:`audiopalm.data.batching.TaskMixture`, :func:`audiopalm.data.tasks.render`) over token-store rows: by
default synthetic rows shaped like the built-in corpus (``data_prep.grammar`` sentences in four
languages, utterance lengths from espeak-ng's speaking rate at the ``mel_rvq`` 25 Hz frame rate:
about 2 s, 50 frames, 100 tokens with K=2 flattened), or the rows of a real token store (``--store``).

"Same global batch in tokens": a packed step holds ``rows_per_batch x max_len`` token slots; the
padded and Trainer steps take ``examples_per_step`` consecutive examples, the number that carries the
same number of non-pad tokens on average (measured on the packed batches). All three start from the
same weights, use AdamW (same settings, ``torch.optim.AdamW``), clip gradients at 1.0, compute the
model's own loss on target tokens, run ``warmup_steps`` untimed then ``steps`` timed optimizer steps,
and their collation is inside the timed region.

Measured (written to ``--out`` as JSON and printed as a markdown table; ``.md`` beside the JSON):

- ``*_tokens_per_s``: useful (non-pad: prompt + target) tokens per second of training;
  ``*_target_tokens_per_s``: the target tokens among them (the ones the loss is computed on);
- ``*_tokens_per_cpu_s``: the same per CPU second of this process (all its threads): on a machine
  shared with other work, wall time stretches with their load, CPU time much less;
- ``*_nonpad_fraction``: non-pad tokens / token slots the model computed on;
- ``matmul_peak_flops``: fp32 ``torch.matmul`` of two ``--peak-size`` square matrices, same thread
  count, measured before every run and the best kept (the least disturbed by other load);
- ``mfu`` (of the packed run; ``mfu_padded``, ``mfu_hf_trainer`` too): 6 x parameters x useful tokens/s
  / the matmul peak. Parameters count the tied embedding / lm_head once (its matmul is real work);
  attention's own flops are left out, as usual for this estimate; ``*_mfu_cpu_time``: the same
  with tokens per CPU second over the matmul's flop per CPU second (robust to other load);
- thread count, CPU count and the load average before and after (other processes share the cores).

With ``--repeats R`` each method is measured R times, in rounds (a b c, b c a, c a b, ...), and the
median is reported; ``packed_vs_hf_trainer`` and ``packed_vs_padded`` are medians of the ratios within
each round (measured minutes apart at most). This damps, but cannot remove, the effect of other load
on a shared machine: there, trust the CPU-time figures (``*_cpu_time``) over wall-clock ones.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from audiopalm.data.batching import IGNORE_INDEX, MixtureSource, PackedBatches, PaddingCollator, TaskMixture
from audiopalm.data.tasks import render, tag_lines
from audiopalm.data.vocab import UnifiedVocab

METHODS = ("packed", "padded", "hf_trainer", "hf_flatten")

# Utterance length of the built-in corpus (data_prep/synth_corpus.py: espeak-ng voices at 140..170 wpm,
# silence trimmed to 0.1 s each side), measured on 48 of its sentences (12 sentences x 4 languages):
# seconds ~= 0.112 + 0.0572 x characters (mean 1.95 s, sd 0.64 s), so ~2 s utterances.
SECONDS_PER_CHAR = 0.0572
SECONDS_OFFSET = 0.112
SPEAKER_RATE_JITTER = 0.08  # relative sd of the voices' speaking rates (140..170 wpm around 155)
MEL_RVQ_FRAME_RATE = 25.0  # audiopalm/tokenizers/mel_rvq.py defaults: 16 kHz, hop 160, 4 frames stacked
MEL_RVQ_CODEBOOKS = 8  # K of the default mel_rvq tokenizer: the store holds 8 rows, the LM uses the first k

DEFAULT_TASKS = "ASR:1,AST:1,TTS:1,S2ST:1,MT:1"


@dataclasses.dataclass
class BenchConfig:
    """What to measure. ``--quick`` and the default differ only in these numbers (see PRESETS)."""

    hidden_size: int = 256
    """Model width (the stage-0 text LM of recipes/configs/pretrain_text.yaml: 256)."""
    num_layers: int = 4
    """Decoder layers (stage 0: 4)."""
    num_heads: int = 4
    """Attention heads (stage 0: 4)."""
    intermediate_size: int = 688
    """SwiGLU width (stage 0: 688, ~8/3 x hidden)."""
    text_vocab_size: int = 4096
    """Upper bound for the BPE text tokenizer trained on the corpus sentences (stage 0: 4096)."""
    num_codebooks: int = 2
    """k: codebooks the LM sees (flatten pattern: k tokens per frame)."""
    codebook_size: int = 256
    """Codes per codebook (mel_rvq default 256); ignored with --store (the store's is used)."""
    max_len: int = 448
    """Packed row length; also the longest example rendered (longer ones are skipped and counted).
    448: just above the longest examples of the synthetic mixture (S2ST of the longest sentences,
    ~380-430 tokens). Longer rows pack tighter (fewer holes) but every row pays attention's L^2 in
    full (CPU sdpa computes the masked blocks too): measured on --quick, 1024 was slower than 448."""
    rows_per_batch: int = 4
    """Packed rows per optimizer step: the global batch is rows_per_batch x max_len token slots
    (1792, about stage 0's 16 x 128 = 2048)."""
    warmup_steps: int = 1
    """Untimed optimizer steps before timing (allocator, kernels, caches)."""
    steps: int = 8
    """Timed optimizer steps, the same for every method."""
    repeats: int = 2
    """Measurements per method, taken in turn; the median is reported."""
    num_sentences: int = 800
    """Synthetic corpus size (sentences; each gives one row per translation direction)."""
    lr: float = 3e-4
    """AdamW learning rate (no decay, constant schedule; the value does not change the speed)."""
    seed: int = 0
    """Seeds the data, the weights and torch."""
    threads: int = 1
    """torch threads (the matmul peak uses the same); 0: torch's default (all cores). 1 by default: on
    a machine shared with other work, OpenMP threads that wait for a busy core make wall times several
    times noisier (measured: --quick took 96 s with 2 threads at load 7 on 2 cores, 33 s with 1)."""
    peak_size: int = 2048
    """Side of the square fp32 matmul that measures the peak."""

    def __post_init__(self):
        positive = (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "num_codebooks",
            "codebook_size",
            "max_len",
            "rows_per_batch",
            "steps",
            "repeats",
            "num_sentences",
            "peak_size",
        )
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.warmup_steps < 1:
            raise ValueError(
                f"warmup_steps: expected >= 1 (the Trainer's clock starts at the end of a step), "
                f"got {self.warmup_steps}"
            )
        if self.text_vocab_size < 300:
            raise ValueError(f"text_vocab_size: expected >= 300, got {self.text_vocab_size}")
        if self.threads < 0:
            raise ValueError(f"threads: expected >= 0, got {self.threads}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")


PRESETS = {
    # A narrower model, a smaller batch and fewer steps: the whole run in well under a minute.
    "quick": dict(
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        intermediate_size=344,
        text_vocab_size=1024,
        warmup_steps=1,
        steps=4,
        repeats=1,
        num_sentences=200,
        peak_size=1024,
    ),
    "full": {},
}


def parse_tasks(spec: str) -> dict[str, float]:
    """``"ASR:1,AST:1,TTS:0.5"`` -> ``{"ASR": 1.0, ...}`` (a bare name weighs 1)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition(":")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--tasks: bad weight in {part!r} (expected NAME:NUMBER)") from None
    if not out:
        raise ValueError(f"--tasks: no task in {spec!r}")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------


def _frames(text: str, rng: random.Random) -> int:
    """Code frames of ``text`` spoken by a corpus voice (see SECONDS_PER_CHAR)."""
    seconds = (SECONDS_OFFSET + SECONDS_PER_CHAR * len(text)) * max(0.5, rng.gauss(1.0, SPEAKER_RATE_JITTER))
    return max(1, round(seconds * MEL_RVQ_FRAME_RATE))


def synthetic_rows(num_sentences: int, *, codebook_size: int, seed: int = 0) -> list[dict]:
    """Token-store-shaped rows: grammar sentences, one row per translation direction, random codes.

    Each row has ``id, lang, text, tgt_lang, tgt_text`` and ``audio_codes`` / ``tgt_audio_codes`` as
    int16 tensors ``[8, F]`` (the default mel_rvq's K), F from the text's length as spoken by the corpus.
    """
    from data_prep.grammar import PAIRS, generate_sentences

    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in generate_sentences(num_sentences, seed=seed):
        src, tgt = PAIRS[s.index % len(PAIRS)]
        codes = [
            torch.randint(
                0, codebook_size, (MEL_RVQ_CODEBOOKS, _frames(s.texts[lang], rng)), generator=g, dtype=torch.int16
            )
            for lang in (src, tgt)
        ]  # [K, F] each
        rows.append(
            {
                "id": f"{s.id}-{src}-{tgt}",
                "lang": src,
                "text": s.texts[src],
                "tgt_lang": tgt,
                "tgt_text": s.texts[tgt],
                "audio_codes": codes[0],
                "tgt_audio_codes": codes[1],
            }
        )
    return rows


def train_tokenizer(rows, vocab_size: int):
    """A byte-level BPE tokenizer on the rows' texts and the task tags (as stage 0 trains one)."""
    from audiopalm.data.text_tokenizer import train_text_tokenizer

    lines = [t for r in rows for t in (r.get("text"), r.get("tgt_text")) if t] + tag_lines()
    return train_text_tokenizer(lines, vocab_size=vocab_size)


def render_examples(
    rows, vocab: UnifiedVocab, tasks: dict[str, float], *, max_len: int, count: int, seed: int
) -> tuple[list[dict], Counter]:
    """``count`` examples drawn from the weighted task mixture, in mixture order, and the skip counts."""
    skip: Counter = Counter()
    limit = 20 * count + 1000  # rows that cannot be rendered (a store without tgt_audio for S2ST...)

    def render_one(row, task):
        if sum(skip.values()) > limit:
            raise ValueError(
                f"more than {limit} rows could not be rendered ({dict(skip)}): "
                "check --tasks against the rows' fields and --max-len"
            )
        return render(row, task, vocab, max_len=max_len, skip=skip)

    sources = [MixtureSource(name, rows, functools.partial(render_one, task=name), w) for name, w in tasks.items()]
    stream = iter(TaskMixture(sources, seed=seed))
    examples = []
    for _ in tqdm(range(count), desc="render examples", leave=False):
        ex = next(stream)
        examples.append({"input_ids": ex["input_ids"], "labels": ex["labels"], "source": ex["source"]})
    return examples, skip


def packed_stream(examples: list[dict], *, max_len: int, rows_per_batch: int, pad_id: int, seed: int):
    """Endless packed batches over ``examples`` (shuffled per epoch by a one-source mixture)."""
    source = MixtureSource("examples", examples, dict)
    return PackedBatches(
        TaskMixture([source], seed=seed), max_len=max_len, rows_per_batch=rows_per_batch, pad_id=pad_id
    )


def padded_stream(examples: list[dict], *, batch_size: int, pad_id: int) -> Iterator[dict]:
    """Endless dynamically padded batches of ``batch_size`` consecutive examples (cycling)."""
    collate = PaddingCollator(pad_id=pad_id)
    at = 0
    while True:
        batch = [examples[(at + i) % len(examples)] for i in range(batch_size)]
        at += batch_size
        yield collate(batch)


# ---------------------------------------------------------------------------------------------------------------------
# model and peak
# ---------------------------------------------------------------------------------------------------------------------


def build_model(cfg: BenchConfig, vocab: UnifiedVocab):
    """A Llama sized by ``cfg`` (the stage-0 architecture) with its vocabulary extended to ``vocab``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from audiopalm.modeling.extend import extend_model

    text = vocab.tokenizer
    config = LlamaConfig(
        vocab_size=math.ceil(vocab.audio_offset / 64) * 64,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_len,
        tie_word_embeddings=True,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        use_cache=False,  # training: no KV cache (packing needs it off; the same for every method)
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config)
    extend_model(model, vocab)
    model.config.use_cache = False
    return model


def count_parameters(model) -> int:
    """Distinct parameters (a tied embedding / lm_head counts once)."""
    return sum(p.numel() for p in model.parameters())


def matmul_peak_flops(size: int, *, reps: int = 5) -> tuple[float, float]:
    """fp32 ``torch.matmul`` of two ``[size, size]`` matrices, best of ``reps`` after a warm-up:
    (flop per wall second, flop per CPU second of this process)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)  # [N, N] each
    torch.matmul(a, b)
    best_wall = best_cpu = math.inf
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    flops = 2 * size**3
    return flops / best_wall, flops / max(best_cpu, 1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# the three training loops
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    """Totals over the timed steps of one run."""

    seconds: float
    """Wall-clock seconds of the timed steps."""
    cpu_seconds: float
    """CPU seconds this process spent in them (all its threads): less sensitive to other load."""
    useful_tokens: int
    """Non-pad tokens (prompt + target) the timed steps trained on."""
    slots: int
    """Token positions the model computed (``B x L`` summed over the steps), padding included."""
    examples: int
    """Examples in the timed steps."""
    steps: int
    """Timed optimizer steps."""
    targets: int = 0
    """Target tokens (labels the loss is computed on) in the timed steps."""

    @property
    def tokens_per_s(self) -> float:
        return self.useful_tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.useful_tokens / self.cpu_seconds

    @property
    def targets_per_s(self) -> float:
        return self.targets / self.seconds


def _optimizer(model, lr: float):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # the Trainer's "adamw_torch"


def _examples_in(batch: dict, pad_id: int) -> int:
    """Examples in a batch: rows when padded; runs of restarting positions less the padding runs when packed."""
    ids = batch["input_ids"]  # [B, L]
    if "position_ids" not in batch:
        return ids.shape[0]
    starts = int((batch["position_ids"] == 0).sum())
    return starts - int((ids[:, -1] == pad_id).sum())  # a row ending in padding has one padding run


def _own_loop(model, batches: Iterator[dict], cfg: BenchConfig, pad_id: int, desc: str) -> Measurement:
    """Our training loop: collate, forward with labels (the model's loss), backward, clip, AdamW step."""
    model.train()
    opt = _optimizer(model, cfg.lr)
    useful = slots = examples = targets = 0
    t0 = c0 = 0.0  # set when the warm-up steps are done
    for step in tqdm(range(cfg.warmup_steps + cfg.steps), desc=desc, leave=False):
        if step == cfg.warmup_steps:
            t0, c0 = time.perf_counter(), time.process_time()
        batch = next(batches)
        batch.pop("num_target_tokens")
        if step >= cfg.warmup_steps:
            ids = batch["input_ids"]  # [B, L]
            useful += int((ids != pad_id).sum())  # render() never emits the pad id: non-pad = example tokens
            slots += ids.numel()
            examples += _examples_in(batch, pad_id)
            targets += int((batch["labels"] != IGNORE_INDEX).sum())
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return Measurement(time.perf_counter() - t0, time.process_time() - c0, useful, slots, examples, cfg.steps, targets)


def run_packed(model, examples, cfg: BenchConfig, pad_id: int) -> Measurement:
    batches = iter(
        packed_stream(examples, max_len=cfg.max_len, rows_per_batch=cfg.rows_per_batch, pad_id=pad_id, seed=cfg.seed)
    )
    return _own_loop(model, batches, cfg, pad_id, "packed")


def run_padded(model, examples, cfg: BenchConfig, pad_id: int, batch_size: int) -> Measurement:
    return _own_loop(model, padded_stream(examples, batch_size=batch_size, pad_id=pad_id), cfg, pad_id, "padded")


def hf_flatten_masks_across_examples(model, examples: list[dict]) -> bool:
    """Whether the model, fed a ``DataCollatorWithFlattening`` row (no attention mask), gives every example the
    logits it gets alone: i.e. transformers masks attention between the packed examples (model in eval mode)."""
    from transformers import DataCollatorWithFlattening

    feats = [{"input_ids": ex["input_ids"], "labels": ex["labels"]} for ex in examples]
    batch = DataCollatorWithFlattening()(feats)  # input_ids / position_ids [1, sum L]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flat = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        at, same = 0, True
        for f in feats:
            n = len(f["input_ids"])
            alone = model(input_ids=torch.tensor([list(f["input_ids"])]), use_cache=False).logits[0]  # [n, V]
            same = same and torch.allclose(flat[at : at + n], alone, atol=1e-4, rtol=1e-4)
            at += n
    model.train(was_training)
    return same


def run_hf_trainer(model, examples, cfg: BenchConfig, tokenizer, batch_size: int, *, flatten: bool = False):
    """A plain ``transformers.Trainer`` (sequential order, no length grouping): DataCollatorForSeq2Seq (dynamic
    padding), or with ``flatten`` HF's packing, DataCollatorWithFlattening (one row, restarting position ids)."""
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    total = cfg.warmup_steps + cfg.steps
    needed = total * batch_size
    data = [{"input_ids": ex["input_ids"], "labels": ex["labels"]} for ex in examples]
    data = (data * math.ceil(needed / len(data)))[:needed]  # the same examples, in the same order, as `padded`
    inner: Any
    if flatten:
        inner = DataCollatorWithFlattening(separator_id=IGNORE_INDEX)
    else:
        inner = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    seen: list[tuple[int, int, int]] = []  # (non-pad tokens, slots, target tokens) of each batch, in step order

    def collate(features):
        batch = inner(features)
        useful = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        seen.append((useful, batch["input_ids"].numel(), int((batch["labels"] != IGNORE_INDEX).sum())))
        return batch

    stamps: list[tuple[float, float]] = []  # (wall, CPU) time at the end of each step

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append((time.perf_counter(), time.process_time()))

    trainer_cls, order = Trainer, dict[str, Any]()
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        order = {"train_sampling_strategy": "sequential"}  # transformers >= 5
    else:  # older transformers: the same order by overriding the sampler

        class SequentialTrainer(Trainer):
            def _get_train_sampler(self, *args, **kwargs):
                return torch.utils.data.SequentialSampler(self.train_dataset)  # type: ignore[arg-type]  # a map-style dataset here

        trainer_cls = SequentialTrainer
    with tempfile.TemporaryDirectory(prefix="bench_train_") as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=total,
            learning_rate=cfg.lr,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            optim="adamw_torch",
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=cfg.seed,
            disable_tqdm=True,
            **order,
        )
        trainer_cls(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Clock()]).train()
    if len(stamps) != total or len(seen) < total:
        raise RuntimeError(f"Trainer ran {len(stamps)} steps and collated {len(seen)} batches; expected {total}")
    timed = seen[cfg.warmup_steps : total]  # batch i is step i (one batch per step, no workers, no prefetch)
    (w0, c0), (w1, c1) = stamps[cfg.warmup_steps - 1], stamps[total - 1]
    return Measurement(
        w1 - w0,
        c1 - c0,
        sum(u for u, _, _ in timed),
        sum(s for _, s, _ in timed),
        batch_size * cfg.steps,
        cfg.steps,
        sum(t for _, _, t in timed),
    )


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------


def load_rows(args, cfg: BenchConfig) -> tuple[list, str, int]:
    """(rows, description, codebook size): a token store's rows, or synthetic ones."""
    if args.store:
        from audiopalm.data.token_store import load_token_store

        store = load_token_store(args.store)
        meta = store.meta
        if meta.num_codebooks < cfg.num_codebooks:
            raise ValueError(
                f"--num-codebooks {cfg.num_codebooks}: the store {args.store} has only K={meta.num_codebooks}"
            )
        return store.dataset, f"token store {args.store} ({meta.num_rows} rows, {meta.describe()})", meta.codebook_size
    rows = synthetic_rows(cfg.num_sentences, codebook_size=cfg.codebook_size, seed=cfg.seed)
    frames = [r["audio_codes"].shape[1] for r in rows]
    seconds = statistics.mean(frames) / MEL_RVQ_FRAME_RATE
    desc = (
        f"synthetic corpus-shaped rows ({len(rows)} rows, utterances {seconds:.2f} s mean at {MEL_RVQ_FRAME_RATE:g} Hz)"
    )
    return rows, desc, cfg.codebook_size


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (small fractions keep their precision)."""
    return float(f"{x:.{digits}g}")


def benchmark(cfg: BenchConfig, args) -> dict:
    """Run everything; returns the result dict (see the module docstring)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    torch.manual_seed(cfg.seed)
    tasks = parse_tasks(args.tasks)
    rows, data_desc, codebook_size = load_rows(args, cfg)
    if args.text_tokenizer:
        from transformers import AutoTokenizer

        text_tok = AutoTokenizer.from_pretrained(args.text_tokenizer)
    else:
        text_tok = train_tokenizer(rows, cfg.text_vocab_size)
    vocab = UnifiedVocab.build(
        text_tok, codebook_size=codebook_size, num_codebooks=cfg.num_codebooks, pattern="flatten", tasks=list(tasks)
    )
    pad_id = vocab.pad_id

    # Enough examples for the longest run (padded / Trainer cycle through them; packing reshuffles per epoch).
    probe, skip = render_examples(rows, vocab, tasks, max_len=cfg.max_len, count=200, seed=cfg.seed)
    mean_len = statistics.mean(len(e["input_ids"]) for e in probe)
    per_step = max(1, round(0.95 * cfg.rows_per_batch * cfg.max_len / mean_len))
    examples, skip = render_examples(
        rows,
        vocab,
        tasks,
        max_len=cfg.max_len,
        seed=cfg.seed,
        count=max(400, 2 * per_step * (cfg.warmup_steps + cfg.steps)),
    )
    lengths = [len(e["input_ids"]) for e in examples]
    by_task = {t: statistics.mean([len(e["input_ids"]) for e in examples if e["source"] == t] or [0]) for t in tasks}

    # The padded / Trainer batch: as many examples as carry the packed batches' non-pad tokens, on average.
    packed_probe = packed_stream(
        examples, max_len=cfg.max_len, rows_per_batch=cfg.rows_per_batch, pad_id=pad_id, seed=cfg.seed
    )
    probe_batches = [b for b, _ in zip(packed_probe, range(cfg.warmup_steps + cfg.steps), strict=False)]
    packed_useful_per_step = statistics.mean(int((b["input_ids"] != pad_id).sum()) for b in probe_batches)
    batch_size = max(1, round(packed_useful_per_step / statistics.mean(lengths)))

    base = build_model(cfg, vocab)
    n_params = count_parameters(base)
    peaks = [matmul_peak_flops(cfg.peak_size)]  # measured again before every run: the best is kept (see below)
    flatten_masked = hf_flatten_masks_across_examples(base, examples[:4])
    if not flatten_masked:
        raise RuntimeError(
            f"transformers {__import__('transformers').__version__} lets a DataCollatorWithFlattening row attend "
            "across examples with this model's attention: the hf_flatten baseline would not train on the same "
            "task; use a transformers release that builds packed masks (5.x does) or flash-attention"
        )

    runs: dict[str, list[Measurement]] = {m: [] for m in METHODS}
    for r in range(cfg.repeats):
        k = r % len(METHODS)
        for method in METHODS[k:] + METHODS[:k]:  # rotated, so that no method always runs last
            peaks.append(matmul_peak_flops(cfg.peak_size, reps=3))
            model = copy.deepcopy(base)  # every run starts from the same weights
            torch.manual_seed(cfg.seed)
            if method == "packed":
                m = run_packed(model, examples, cfg, pad_id)
            elif method == "padded":
                m = run_padded(model, examples, cfg, pad_id, batch_size)
            else:
                m = run_hf_trainer(model, examples, cfg, vocab.tokenizer, batch_size, flatten=method == "hf_flatten")
            runs[method].append(m)
            print(
                f"[bench_train] repeat {r + 1}/{cfg.repeats} {method:>10}: {m.tokens_per_s:8.1f} useful tok/s "
                f"({m.useful_tokens} tokens in {m.seconds:.2f} s, {m.cpu_seconds:.2f} CPU s, "
                f"non-pad {m.useful_tokens / m.slots:.3f})",
                file=sys.stderr,
            )
            del model

    # Other processes on the machine slow the matmul down as much as the training: the least disturbed
    # measurement is the closest to the machine's real peak.
    peak, peak_cpu = max(p[0] for p in peaks), max(p[1] for p in peaks)
    out: dict = {}
    for method in METHODS:
        ms = runs[method]
        tok_s = statistics.median(m.tokens_per_s for m in ms)
        out[f"{method}_tokens_per_s"] = round(tok_s, 1)
        out[f"{method}_tokens_per_s_all"] = [round(m.tokens_per_s, 1) for m in ms]
        out[f"{method}_tokens_per_cpu_s"] = round(statistics.median(m.tokens_per_cpu_s for m in ms), 1)
        out[f"{method}_target_tokens_per_s"] = round(statistics.median(m.targets_per_s for m in ms), 1)
        out[f"{method}_target_tokens_per_step"] = round(sum(m.targets for m in ms) / sum(m.steps for m in ms), 1)
        out[f"{method}_nonpad_fraction"] = round(sum(m.useful_tokens for m in ms) / sum(m.slots for m in ms), 4)
        out[f"{method}_useful_tokens_per_step"] = round(sum(m.useful_tokens for m in ms) / sum(m.steps for m in ms), 1)
        out[f"{method}_slots_per_step"] = round(sum(m.slots for m in ms) / sum(m.steps for m in ms), 1)
        out[f"{method}_examples_per_step"] = round(sum(m.examples for m in ms) / sum(m.steps for m in ms), 1)
        out[f"{method}_mfu"] = _sig(6 * n_params * tok_s / peak)
        out[f"{method}_mfu_cpu_time"] = _sig(6 * n_params * out[f"{method}_tokens_per_cpu_s"] / peak_cpu)
    out["mfu"] = out["packed_mfu"]
    out["mfu_padded"] = out["padded_mfu"]
    out["mfu_hf_trainer"] = out["hf_trainer_mfu"]
    out["mfu_hf_flatten"] = out["hf_flatten_mfu"]
    out["hf_flatten_masks_across_examples"] = flatten_masked
    for other in (
        "hf_trainer",
        "hf_flatten",
        "padded",
    ):  # median of the ratios within each round (paired under similar load)
        out[f"packed_vs_{other}"] = round(
            statistics.median(
                a.tokens_per_s / b.tokens_per_s for a, b in zip(runs["packed"], runs[other], strict=True)
            ),
            3,
        )
        out[f"packed_vs_{other}_cpu_time"] = round(
            statistics.median(
                a.tokens_per_cpu_s / b.tokens_per_cpu_s for a, b in zip(runs["packed"], runs[other], strict=True)
            ),
            3,
        )
    out.update(
        {
            "matmul_peak_flops": round(peak),
            "matmul_peak_flops_per_cpu_s": round(peak_cpu),
            "matmul_peak_flops_all": [round(p[0]) for p in peaks],
            "matmul_peak_size": cfg.peak_size,
            "parameters": n_params,
            "threads": threads,
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "data": data_desc,
            "tasks": tasks,
            "mean_example_tokens": round(statistics.mean(lengths), 1),
            "mean_example_tokens_by_task": {t: round(v, 1) for t, v in by_task.items()},
            "max_example_tokens": max(lengths),
            "skipped": dict(skip),
            "padded_examples_per_step": batch_size,
            "packed_rows_per_step": cfg.rows_per_batch,
            "max_len": cfg.max_len,
            "vocab_size": len(vocab),
            "embedding_rows": base.get_input_embeddings().weight.shape[0],
            "config": dataclasses.asdict(cfg),
            "torch": torch.__version__,
        }
    )
    import transformers

    out["transformers"] = transformers.__version__
    return out


def markdown(res: dict) -> str:
    """The table the docs quote: each method against both HF baselines (padded and flattened Trainer)."""
    names = {
        "packed": "packed (PackedBatches)",
        "padded": "dynamic padding (PaddingCollator)",
        "hf_trainer": "transformers.Trainer + DataCollatorForSeq2Seq (padded)",
        "hf_flatten": "transformers.Trainer + DataCollatorWithFlattening",
    }

    def ratio(m: str, base: str, key: str) -> float:
        return res[f"{m}_{key}"] / res[f"{base}_{key}"]

    lines = [
        "| batching | useful tokens/s | target tokens/s | vs HF padded | vs HF flattening | useful tokens / CPU s "
        "| vs HF padded (CPU) | vs HF flattening (CPU) | non-pad fraction | tokens/step (useful / slots) | MFU "
        "| MFU (CPU time) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        lines.append(
            f"| {names[m]} | {res[f'{m}_tokens_per_s']:.0f} | {res[f'{m}_target_tokens_per_s']:.0f} | "
            f"{ratio(m, 'hf_trainer', 'tokens_per_s'):.2f}x | {ratio(m, 'hf_flatten', 'tokens_per_s'):.2f}x | "
            f"{res[f'{m}_tokens_per_cpu_s']:.0f} | {ratio(m, 'hf_trainer', 'tokens_per_cpu_s'):.2f}x | "
            f"{ratio(m, 'hf_flatten', 'tokens_per_cpu_s'):.2f}x | "
            f"{res[f'{m}_nonpad_fraction']:.3f} | {res[f'{m}_useful_tokens_per_step']:.0f} / "
            f"{res[f'{m}_slots_per_step']:.0f} | {100 * res[f'{m}_mfu']:.2f}% | "
            f"{100 * res[f'{m}_mfu_cpu_time']:.2f}% |"
        )
    c = res["config"]
    lines.append("")
    lines.append(
        f"Llama {c['num_layers']} x {c['hidden_size']} ({res['parameters'] / 1e6:.2f}M parameters, "
        f"{res['embedding_rows']} embedding rows, K={c['num_codebooks']} flatten); data: {res['data']}; "
        f"mean example {res['mean_example_tokens']} tokens (max {res['max_example_tokens']}); "
        f"{c['steps']} timed steps after {c['warmup_steps']} warm-up, median of {c['repeats']}; "
        f"{res['threads']} thread(s), fp32 matmul peak {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s "
        f"({res['matmul_peak_flops_per_cpu_s'] / 1e9:.1f} per CPU second); "
        f"load average {res['loadavg_before'][0]} before, {res['loadavg_after'][0]} after. "
        "Ratios: of the medians (the JSON's packed_vs_* are medians of the per-round ratios). "
        f"HF flattening masks attention between its examples here: {res['hf_flatten_masks_across_examples']}."
    )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small model and few steps: under a minute on 2 cores")
    p.add_argument("--out", required=True, help="JSON file to write (a .md table is written beside it)")
    p.add_argument("--store", help="a token store folder (audiopalm tokenize) instead of synthetic rows")
    p.add_argument("--text-tokenizer", help="a text tokenizer folder (default: train a BPE one on the rows' text)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"task:weight list (default {DEFAULT_TASKS})")
    for f in dataclasses.fields(BenchConfig):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None,
            help=f"override {f.name} (default {f.default}; --quick: {PRESETS['quick'].get(f.name, f.default)})",
        )
    return p


def config_from_args(args) -> BenchConfig:
    values = dict(PRESETS["quick" if args.quick else "full"])
    for f in dataclasses.fields(BenchConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return BenchConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = config_from_args(args)
    t = time.perf_counter()
    res = benchmark(cfg, args)
    res["wall_s"] = round(time.perf_counter() - t, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    table = markdown(res)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"[bench_train] wrote {out} and {out.with_suffix('.md')} in {res['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
