"""AudioPaLM: extend a pretrained text LM with audio tokens and fine-tune it on a weighted task mixture.

AudioPaLM (arXiv 2306.12925): the text decoder is kept; its embedding and output projection grow by
one row per audio code (and a few special tokens); the model is then trained on ASR / AST / TTS /
S2ST / MT examples written as ``[TASK Lang Lang] input <|sep|> target``, loss on the target only.

Launch (see recipes/configs/finetune_audiopalm.yaml and recipes/accelerate/*.yaml)::

    accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/finetune_audiopalm.py \\
        --config recipes/configs/finetune_audiopalm.yaml lora.enabled=true

Features:

- Model: a HF causal LM by hub name or local path (the stage-0 model of recipes/pretrain_text.py
  offline), or ``model.from_scratch: true`` (random init of the same config: the "text init vs
  random" ablation). Vocabulary = text tokenizer + ``k`` codebooks of the audio tokenizer through a
  codebook pattern (:class:`audiopalm.vocab.UnifiedVocab`); new rows start at the mean of the text
  rows or at zero (:func:`audiopalm.modeling.extend.extend_model`).
- Data: token stores made by the model's audio tokenizer (a store with another fingerprint is
  refused). Each ``data.tasks`` entry (task or chain, weight, language / pair filters) becomes one
  source of a deterministic, resumable :class:`audiopalm.data.TaskMixture`. Rows lacking a field
  the task needs are left out and counted; examples longer than ``data.max_len`` are skipped and
  counted (never truncated); the skip summary is printed and saved. ASR/TTS sources are
  de-duplicated by source audio / text by default (the synthetic corpus repeats each source
  utterance once per target language).
- Batches: examples packed into rows of ``data.max_len`` (block-diagonal attention through
  restarting ``position_ids``; the model is called with ``use_cache=False`` and no attention mask),
  or padded (``data.packing=false``). Every process builds the same global batch stream and takes
  its own rows, so 1 and N processes (and any accumulation split) see identical global batches.
- Full fine-tune, or LoRA (``lora.enabled``) on ``lora.target_modules`` with the new rows trained
  through peft's ``trainable_token_indices`` (text rows stay bit-identical) or ``modules_to_save``.
  Per-name LRs through ``optim.group_lrs`` (e.g. ``{trainable_tokens: 1e-3}`` for the new rows
  under LoRA).
- AdamW, cosine schedule with warm-up, gradient clipping and accumulation, bf16 where supported,
  optional gradient checkpointing. The loss of a step is the sum of target-token losses over all
  micro-batches and processes divided by their target tokens.
- Checkpoints every ``train.save_every`` steps (atomic, newest ``train.keep_last`` kept);
  ``--resume`` continues bit-for-bit (weights or adapter, optimizer, scheduler, RNG, batch stream).
- Final save in ``output_dir/final`` with :func:`audiopalm.modeling.extend.save_checkpoint` (plain
  ``AutoModelForCausalLM`` / ``AutoTokenizer`` load it; ``audiopalm.json`` and the audio tokenizer
  beside). LoRA runs also write the peft adapter in ``output_dir/adapter``; ``final`` is merged.
- Logs: tqdm bar (loss, tokens/s, ETA), ``metrics.jsonl`` (loss, lr, tokens/s, dev loss per task),
  TensorBoard through accelerate's trackers, ``summary.json`` (wall time, tokens, trainable
  parameters, skips).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from audiopalm import training
from audiopalm.config import flat_dict, load_config, save_config
from audiopalm.data import MixtureSource, PackedBatches, PaddingCollator, TaskMixture
from audiopalm.finetune_config import FinetuneAudioPaLMConfig, TaskEntry
from audiopalm.tasks import TaskSpec, parse_task, render

# Store columns that hold plain metadata (read once to filter rows), and the column that says whether a code
# field is present in a row.
META_COLUMNS = ("id", "lang", "text", "audio", "tgt_lang", "tgt_text", "tgt_audio", "split")
PRESENCE = {"audio_codes": "audio", "tgt_audio_codes": "tgt_audio"}


class StoreRows(Sequence):
    """Rows of several token stores picked by ``(store index, row index)``, read lazily (memory-mapped)."""

    def __init__(self, datasets: list, index: list[tuple[int, int]]):
        self.datasets, self.index = datasets, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, r = self.index[i]
        return self.datasets[s][r]


class PaddedBatches:
    """Endless padded batches of ``rows_per_batch`` examples from a mixture, resumable exactly
    (``data.packing=false``); the counterpart of :class:`audiopalm.data.PackedBatches`."""

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


class FinetuneAudioPaLMRecipe:
    """Vocabulary extension + task-mixture fine-tuning. ``setup()``, ``train()``, ``cleanup()``."""

    def __init__(self, cfg: FinetuneAudioPaLMConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.step = 0

    # ------------------------------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._setup_accelerator()
        self._setup_vocab()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._maybe_resume()
        self._fill_deepspeed_config()
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step it once per
        # process, which changes the schedule with the process count).

    def _log(self, message: str) -> None:
        self.accelerator.print(f"[finetune_audiopalm] {message}")

    def _setup_accelerator(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg.train
        self.accelerator, mp = training.make_accelerator(cfg, self.out)
        acc = self.accelerator
        self.world, self.rank = acc.num_processes, acc.process_index
        self.global_batch = cfg.micro_batch_size * cfg.grad_accum_steps * self.world  # rows per optimizer step
        set_seed(cfg.seed)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        self._log(f"{acc.distributed_type} x{self.world} on {acc.device}, precision {mp}, global batch "
                  f"{self.global_batch} rows = {cfg.micro_batch_size} x {cfg.grad_accum_steps} accum x {self.world}")

    def _setup_vocab(self) -> None:
        """Audio tokenizer + text tokenizer -> the unified vocabulary (the one place ids are computed)."""
        from transformers import AutoTokenizer

        from audiopalm.tokenizers.base import load_audio_tokenizer
        from audiopalm.vocab import UnifiedVocab

        m = self.cfg.model
        self.audio_tokenizer = load_audio_tokenizer(m.audio_tokenizer)
        k = m.num_codebooks or self.audio_tokenizer.num_codebooks
        if k > self.audio_tokenizer.num_codebooks:
            raise ValueError(f"model.num_codebooks={k}, but the audio tokenizer {m.audio_tokenizer} has only "
                             f"{self.audio_tokenizer.num_codebooks}")
        text_tok = AutoTokenizer.from_pretrained(m.name_or_path)
        self.task_names = [parse_task(e.task).name for e in self.cfg.data.tasks]
        self.vocab = UnifiedVocab.build(text_tok, audio_tokenizer=self.audio_tokenizer, num_codebooks=k,
                                        pattern=m.pattern, tasks=list(dict.fromkeys(self.task_names)))
        self._log(f"vocabulary: {self.vocab.audio_offset} text + {k} x {self.vocab.codebook_size} audio + specials "
                  f"= {len(self.vocab)} tokens ({m.pattern} pattern); audio tokenizer {self.audio_tokenizer.type_name} "
                  f"{self.audio_tokenizer.tokens_per_second(k):.0f} tokens/s")

    # ---- data ---------------------------------------------------------------------------------------------------------

    def _load_stores(self) -> None:
        from audiopalm.token_store import load_token_store

        d = self.cfg.data
        if not d.stores:
            raise ValueError("data.stores: empty; give data.stores=[path/to/store] (made by `audiopalm tokenize`)")
        self.stores, self.store_meta = [], []
        for path in d.stores:
            # Refuses (TokenStoreMismatch, naming both tokenizers) a store made by another audio tokenizer.
            store = load_token_store(path, expected_tokenizer=self.audio_tokenizer)
            self.stores.append(store.dataset)
            self.store_meta.append(store.dataset.select_columns(list(META_COLUMNS)).with_format(None).to_dict())

    def _select_rows(self, entry: TaskEntry, spec: TaskSpec, split_kind: str, skips: Counter) -> list[tuple[int, int]]:
        """Rows of every store for one task entry: split, language filters, required fields, de-duplication."""
        d = self.cfg.data
        needed = [PRESENCE.get(f, f) for f in spec.fields]
        dedupe = entry.dedupe if entry.dedupe is not None else not spec.needs_tgt_lang
        kind, field = spec.input_segment
        seen: set = set()
        picked = []
        for s, cols in enumerate(self.store_meta):
            for r in range(len(cols["id"])):
                split = cols["split"][r]
                if split_kind == "train" and not (split is None or split in d.train_splits):
                    continue
                if split_kind == "dev" and split != d.dev_split:
                    continue
                lang, tgt = cols["lang"][r], cols["tgt_lang"][r]
                if entry.langs and lang not in entry.langs:
                    continue
                if entry.pairs and f"{lang}-{tgt}" not in entry.pairs:
                    continue
                missing = next((f for f in needed if cols[f][r] is None or cols[f][r] == ""), None)
                if missing is not None:
                    skips[f"{spec.name}: no {missing}"] += 1
                    continue
                if dedupe:
                    key = cols[PRESENCE[field]][r] if kind == "audio" else (lang, cols[field][r])
                    if key in seen:
                        continue
                    seen.add(key)
                picked.append((s, r))
        return picked

    def _setup_data(self) -> None:
        d, tr = self.cfg.data, self.cfg.train
        self._load_stores()
        self.filter_skips: Counter = Counter()  # rows left out before training (missing fields)
        self.render_skips: Counter = Counter()  # examples skipped while rendering (too long, bad codes), this run
        sources, self.dev_sets = [], []
        for entry, name in zip(d.tasks, self.task_names):
            spec = parse_task(entry.task)
            train_rows = self._select_rows(entry, spec, "train", self.filter_skips)
            if not train_rows:
                raise ValueError(f"data.tasks: task {name!r} (langs {entry.langs or 'all'}, pairs {entry.pairs or 'all'}) "
                                 f"has no training rows in {d.stores} (splits {d.train_splits}); "
                                 f"rows left out: {dict(self.filter_skips)}")
            rows = StoreRows(self.stores, train_rows)
            self._probe(name, spec, rows)
            label = f"{name} #{len(sources)}" if name in {s.name.split(' #')[0] for s in sources} else name

            def render_one(row, spec=spec):
                return render(row, spec, self.vocab, max_len=d.max_len, skip=self.render_skips)

            sources.append(MixtureSource(name=label, rows=rows, render=render_one, weight=entry.weight))
            dev_rows = self._select_rows(entry, spec, "dev", Counter())[:d.dev_examples_per_task]
            dev = [render(StoreRows(self.stores, dev_rows)[i], spec, self.vocab, max_len=d.max_len, skip=Counter())
                   for i in range(len(dev_rows))]
            self.dev_sets.append((label, [x for x in dev if x is not None]))
        self.mixture = TaskMixture(sources, seed=tr.seed)
        if d.packing:
            self.batches = PackedBatches(self.mixture, max_len=d.max_len, rows_per_batch=self.global_batch,
                                         pad_id=self.vocab.pad_id)
        else:
            self.batches = PaddedBatches(self.mixture, rows_per_batch=self.global_batch, pad_id=self.vocab.pad_id)
        weights = sum(s.weight for s in sources)
        self._log("task mixture: " + "; ".join(
            f"{s.name} {len(s.rows)} rows, p={s.weight / weights:.2f}, dev {len(dev)}"
            for s, (_, dev) in zip(sources, self.dev_sets)))
        if self.filter_skips:
            self._log(f"rows left out (missing fields): {dict(self.filter_skips)}")

    def _probe(self, name: str, spec: TaskSpec, rows: StoreRows) -> None:
        """Render a few rows now: a task none of whose rows fit ``data.max_len`` fails here, not in an endless loop."""
        reasons: Counter = Counter()
        for i in range(min(16, len(rows))):
            if render(rows[i], spec, self.vocab, max_len=self.cfg.data.max_len, skip=reasons) is not None:
                return
        raise ValueError(f"data.tasks: none of the first {min(16, len(rows))} rows of task {name!r} renders "
                         f"({dict(reasons)}); raise data.max_len={self.cfg.data.max_len} or check the store")

    # ---- model --------------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        from audiopalm.modeling.extend import extend_model, trainable_token_indices

        m, tr = self.cfg.model, self.cfg.train
        torch.manual_seed(tr.seed)
        if m.from_scratch:
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(m.name_or_path))
        else:
            # fp32 master weights; accelerate's autocast runs the matmuls in bf16 where enabled
            self.model = AutoModelForCausalLM.from_pretrained(m.name_or_path, dtype=torch.float32)
        context = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)
        if context is not None and self.cfg.data.max_len > context:
            raise ValueError(f"data.max_len={self.cfg.data.max_len} is longer than the model's context "
                             f"({context} positions, {m.name_or_path}); lower data.max_len or use a longer-context model")
        text_rows = self.model.get_input_embeddings().weight.shape[0]
        extend_model(self.model, self.vocab, init=m.init,
                     code_vectors=self.audio_tokenizer.code_vectors() if m.init == "codebook" else None)
        if tr.gradient_checkpointing:
            # transformers >= 5 names it activation checkpointing; older versions only have the old name
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable()
            self.model.config.use_cache = False
        self.num_params = sum(p.numel() for p in self.model.parameters())
        if self.cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            lo = self.cfg.lora
            rows = trainable_token_indices(self.model, self.vocab)
            if lo.new_rows == "trainable_tokens":
                extra = {"trainable_token_indices": rows}
            else:  # whole embedding (+ untied lm_head); a tied lm_head must follow the trained copy
                extra = {"modules_to_save": sorted(rows), "ensure_weight_tying": len(rows) == 1}
            if tr.gradient_checkpointing:
                self.model.enable_input_require_grads()
            self.model = get_peft_model(self.model, LoraConfig(
                r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=list(lo.target_modules),
                task_type="CAUSAL_LM", **extra))
        self.num_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self._log(f"{'random-init ' if m.from_scratch else ''}{m.name_or_path}: embedding {text_rows} -> "
                  f"{self.model.get_input_embeddings().weight.shape[0]} rows, {self.num_params / 1e6:.2f}M parameters, "
                  f"{self.num_trainable / 1e6:.3f}M trainable ({'LoRA' if self.cfg.lora.enabled else 'full'})")

    def _setup_optimizer(self) -> None:
        self.optimizer = training.make_optimizer(self.model, self.cfg.optim)
        self.scheduler = training.make_scheduler(self.optimizer, self.cfg.optim, self.cfg.train.max_steps)

    # ---- resume -------------------------------------------------------------------------------------------------------

    def _maybe_resume(self) -> None:
        self.metrics = training.MetricsLog(self.out / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        self.tokens_seen = 0
        ckpt = training.latest_checkpoint(self.out / "checkpoints") if self.cfg.train.resume else None
        if ckpt is None:
            if self.cfg.train.resume:
                self._log(f"resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh")
            self.metrics.start_fresh()
            return
        if self.cfg.lora.enabled:
            state = self._load_lora_checkpoint(ckpt)
        else:
            state = training.load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer,
                                             scheduler=self.scheduler, process_index=self.rank)
        for key, now in (("global_batch", self.global_batch), ("vocab_size", len(self.vocab)),
                         ("tasks", self.task_names)):
            if state.get(key) != now:
                raise ValueError(f"{ckpt}: {key} was {state.get(key)} when saved, now {now}; "
                                 "resume needs the same data, tasks and global batch")
        self.batches.load_state_dict(state["batches"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.metrics.resume_at(self.step)
        self._log(f"resumed from {ckpt} at step {self.step}")

    def _load_lora_checkpoint(self, ckpt: Path) -> dict:
        """Like :func:`audiopalm.training.load_checkpoint`, for a peft model whose checkpoint holds the adapter."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state_file = ckpt / training.STATE_FILE
        state = json.loads(state_file.read_text(encoding="utf-8"))
        result = set_peft_model_state_dict(self.model, load_file(str(ckpt / "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise ValueError(f"{ckpt}: adapter has unexpected keys {sorted(result.unexpected_keys)[:5]}")
        self.optimizer.load_state_dict(training.load_tree(ckpt / "optimizer"))
        self.scheduler.load_state_dict(training.load_tree(ckpt / "scheduler"))
        rng = ckpt / f"rng_rank{self.rank}"
        if not Path(f"{rng}.json").is_file():
            raise FileNotFoundError(f"{rng}.json: missing; was the checkpoint written with fewer processes "
                                    f"({state.get('world_size')}) than this run?")
        training.set_rng_state(training.load_tree(rng))
        return state

    def _fill_deepspeed_config(self) -> None:
        """Under DeepSpeed the micro-batch and clipping come from this config (no dataloader is prepared)."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = self.cfg.train.micro_batch_size
        clip = ds.get("gradient_clipping", "auto")
        if clip in (None, "auto"):
            ds["gradient_clipping"] = self.cfg.optim.grad_clip
        elif float(clip) != self.cfg.optim.grad_clip:
            raise ValueError(f"optim.grad_clip={self.cfg.optim.grad_clip} but the DeepSpeed config says gradient_clipping={clip}")
        if self.cfg.train.save_every:
            raise ValueError("train.save_every: resumable checkpoints are not implemented under DeepSpeed; set it to 0")

    # ------------------------------------------------------------------------------------------------------------------
    # train
    # ------------------------------------------------------------------------------------------------------------------

    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of target-token losses of one (micro-)batch.  # []"""
        acc = self.accelerator
        inputs = {k: batch[k].to(acc.device) for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
        with acc.autocast():
            # packed rows: no attention mask + restarting position_ids = block-diagonal causal attention (needs
            # use_cache=False, see audiopalm/data.py)
            logits = self.model(**inputs, use_cache=False).logits  # [B, L, V]
        return training.token_loss_sum(logits, batch["labels"].to(acc.device))

    def _train_step(self) -> tuple[float, float | None, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, grad norm, real tokens)."""
        acc, cfg = self.accelerator, self.cfg.train
        self.lr = self.scheduler.get_last_lr()[0]
        batch = next(self.batch_iter)  # the global batch, identical on every process: [G, L] tensors
        rows = list(range(self.global_batch))
        global_targets = int(batch["num_target_tokens"])  # every process holds the whole batch: no reduction
        scale = training.loss_scale(global_targets, world_size=self.world, grad_accum_steps=cfg.grad_accum_steps)
        self.model.train()
        loss_sum, grad_norm = 0.0, None
        for m in range(cfg.grad_accum_steps):
            idx = training.StepSampler.micro_batch(rows, m, self.rank, micro_batch_size=cfg.micro_batch_size,
                                                   world_size=self.world)
            micro = {k: v[idx] for k, v in batch.items() if k != "num_target_tokens"}  # each [B, L]
            with acc.accumulate(self.model):
                loss = self._forward_loss(micro)
                acc.backward(loss * scale)
                loss_sum += loss.item()
                if acc.sync_gradients and self.cfg.optim.grad_clip > 0:
                    norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                    grad_norm = float(norm) if norm is not None else None
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        # tokens of the examples (prompt and target), not the padding
        real_tokens = int(batch["attention_mask"].sum() if "attention_mask" in batch
                          else (batch["input_ids"] != self.vocab.pad_id).sum())
        self.tokens_seen += real_tokens
        return training.global_sum(acc, loss_sum) / global_targets, grad_norm, real_tokens

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev loss per task (token-weighted within a task) and ``all`` (over every dev target token)."""
        acc = self.accelerator
        collate = PaddingCollator(pad_id=self.vocab.pad_id)
        self.model.eval()
        out, total_loss, total_targets = {}, 0.0, 0.0
        for name, examples in self.dev_sets:
            mine = examples[self.rank::self.world]
            loss_sum, targets = 0.0, 0
            for chunk in training.chunked(mine, self.cfg.train.micro_batch_size):
                batch = collate(chunk)
                loss_sum += self._forward_loss(batch).item()
                targets += int(batch["num_target_tokens"])
            loss_sum, targets = training.global_sum(acc, loss_sum), training.global_sum(acc, targets)
            if targets:
                out[name] = loss_sum / targets
                total_loss, total_targets = total_loss + loss_sum, total_targets + targets
        if total_targets:
            out["all"] = total_loss / total_targets
        return out

    def train(self) -> dict:
        acc, cfg = self.accelerator, self.cfg.train
        if cfg.log_with != "none":
            acc.init_trackers("tensorboard", config=flat_dict(self.cfg))
        self.batch_iter = iter(self.batches)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="finetune_audiopalm",
                   disable=not acc.is_main_process, dynamic_ncols=True)
        t_start = t_log = time.perf_counter()
        window: list[float] = []
        window_tokens = 0
        loss, dev = float("nan"), {}
        while self.step < cfg.max_steps:
            loss, grad_norm, tokens = self._train_step()
            self.step += 1
            window.append(loss)
            window_tokens += tokens
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {self.step}: loss is {loss}; lower optim.lr or raise optim.warmup_steps")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                tok_s = window_tokens / max(now - t_log, 1e-9)
                row = {"step": self.step, "loss": loss, "loss_avg": sum(window) / len(window), "lr": self.lr,
                       "tokens_per_s": round(tok_s, 1), "tokens_seen": self.tokens_seen,
                       "epoch": self.mixture.epoch + self.mixture.position / self.mixture.examples_per_epoch}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                self.metrics.write(row)
                acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=self.step)
                bar.set_postfix(loss=f"{row['loss_avg']:.3f}", tok_s=f"{tok_s:.0f}", lr=f"{row['lr']:.1e}")
                window, window_tokens, t_log = [], 0, now
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps:
                dev = self.evaluate()
                if dev:
                    self.metrics.write({"step": self.step, **{f"dev_loss/{k}": v for k, v in dev.items()}})
                    acc.log({f"dev/loss/{k}": v for k, v in dev.items()}, step=self.step)
                    self._log(f"step {self.step}: dev loss " + ", ".join(f"{k} {v:.4f}" for k, v in dev.items()))
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint()
            bar.update(1)
        bar.close()
        skips = {"rows_left_out": dict(self.filter_skips), "render_skips_this_run": dict(self.render_skips),
                 "render_skips_per_source": dict(self.mixture.skipped)}
        if self.render_skips:
            self._log(f"examples skipped while rendering (this run): {dict(self.render_skips)}")
        summary = {"steps": self.step, "train_loss": loss, "dev_loss": dev, "wall_s_this_run":
                   round(time.perf_counter() - t_start, 1), "processes": self.world, "parameters": self.num_params,
                   "trainable_parameters": self.num_trainable, "lora": self.cfg.lora.enabled,
                   "tokens_seen": self.tokens_seen, "vocab_size": len(self.vocab), "skips": skips}
        self.save_final(summary)
        return summary

    # ------------------------------------------------------------------------------------------------------------------
    # save / cleanup
    # ------------------------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint ``output_dir/checkpoints/step_N`` (atomic, keep-last-k). LoRA: the adapter."""
        return training.save_checkpoint(
            self.accelerator, self.out / "checkpoints", step=self.step, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, tokenizer=self.vocab.tokenizer, keep_last=self.cfg.train.keep_last,
            state={"tokens_seen": self.tokens_seen, "global_batch": self.global_batch, "vocab_size": len(self.vocab),
                   "tasks": self.task_names, "batches": self.batches.state_dict()})

    def save_final(self, summary: dict) -> None:
        """``output_dir/final`` (HF format + audiopalm.json + audio tokenizer; merged for LoRA), ``adapter/``
        for LoRA runs, and ``summary.json``."""
        from audiopalm.modeling.extend import save_checkpoint

        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            if self.cfg.lora.enabled:
                model.save_pretrained(self.out / "adapter", state_dict=state_dict, safe_serialization=True)
                self.vocab.save_pretrained(self.out / "adapter")
                model = model.merge_and_unload()
            save_checkpoint(model, self.vocab, self.audio_tokenizer, self.out / "final")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
            self._log(f"saved {self.out / 'final'}: {json.dumps(summary)}")
        acc.wait_for_everyone()

    def cleanup(self) -> None:
        self.accelerator.end_training()


def parse_args(argv: list[str] | None = None) -> FinetuneAudioPaLMConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument is an override key=value, e.g. lora.enabled=true")
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/finetune_audiopalm.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; overrides are key=value")
    if args.resume:
        overrides.append("train.resume=true")
    return load_config(FinetuneAudioPaLMConfig, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    recipe = FinetuneAudioPaLMRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
