"""The acoustic stage: semantic units + a voice prompt -> mel_rvq codec features (AudioLM stages 2-3).

Launch (see recipes/configs/train_acoustic.yaml)::

    python recipes/train_acoustic.py --config recipes/configs/train_acoustic.yaml \\
        data.manifests=[corpus/train.jsonl] data.unit_tokenizer=runs/units data.codec=runs/demo/tokenizer

Features:

- Pairs: each distinct ``audio`` file of ``data.train_splits`` -> (its units, its codec features), cached
  under ``output_dir/cache``; the voice prompt of a target is *another* utterance of its ``speaker``,
  drawn per step (:mod:`audiopalm.acoustic.data`).
- Model: :class:`audiopalm.acoustic.AcousticModel` (dilated conv stack with voice FiLM), L1 on the
  normalised stacked log-mel, every unit frame predicting the codec frame it is aligned with.
- AdamW + cosine schedule with warm-up, gradient clipping and accumulation (``audiopalm.training``); the
  loss of a step is the L1 summed over all its micro-batches divided by their frames x features.
- The data order and prompts are a pure function of (seed, step): resuming needs only the step.
- Checkpoints every ``train.save_every`` steps (atomic, newest ``train.keep_last`` kept); ``--resume``
  continues bit-for-bit. ``metrics.jsonl`` (loss, lr, frames/s, dev L1), ``summary.json``.
- Final: ``output_dir/final``, an :class:`AcousticStage` folder (``acoustic.json``, safetensors, the codec
  in ``codec/``, a default voice) that ``AcousticStage.from_pretrained`` loads alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiopalm import training
from audiopalm.acoustic import train as acoustic
from audiopalm.acoustic.data import PairSampler
from audiopalm.config import load_config, save_config


class TrainAcousticRecipe:
    """``setup()``, ``train()``, ``cleanup()``; the acoustic parts live in :mod:`audiopalm.acoustic.train`."""

    def __init__(self, cfg: acoustic.TrainAcousticConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.step = 0

    # ---- setup ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg.train
        self.accelerator, mp = training.make_accelerator(cfg, self.out)
        acc = self.accelerator
        self.world, self.rank = acc.num_processes, acc.process_index
        self.global_batch = cfg.micro_batch_size * cfg.grad_accum_steps * self.world
        set_seed(cfg.seed)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        unit_tok, codec = acoustic.load_tokenizers(self.cfg)
        with acc.main_process_first():  # the main process fills the feature cache; the others read it
            self.train_utts, self.dev_utts = acoustic.build_data(self.cfg, unit_tok, codec,
                                                                 progress=acc.is_main_process)
        d = self.cfg.data
        self.pairs = PairSampler(self.train_utts, max_frames=d.max_frames, max_prompt_frames=d.max_prompt_frames,
                                 seed=cfg.seed)
        self.sampler = training.StepSampler(len(self.pairs.targets), self.global_batch, seed=cfg.seed)
        self.stage = acoustic.build_stage(self.cfg, unit_tok, codec)
        self.model = self.stage.model
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = training.make_optimizer(self.model, self.cfg.optim)
        self.scheduler = training.make_scheduler(self.optimizer, self.cfg.optim, cfg.max_steps)
        self._maybe_resume()
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        acc.print(f"[train_acoustic] {len(self.train_utts)} train utterances ({len(self.pairs.targets)} with a prompt), "
                  f"{len(self.pairs.by_speaker)} speakers; dev {len(self.dev_utts) if self.dev_utts else 0}; "
                  f"{self.num_params / 1e6:.2f}M parameters; precision {mp}; global batch {self.global_batch}")

    def _maybe_resume(self) -> None:
        self.metrics = training.MetricsLog(self.out / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        ckpt = training.latest_checkpoint(self.out / "checkpoints") if self.cfg.train.resume else None
        if ckpt is None:
            self.metrics.start_fresh()
            return
        state = training.load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                         process_index=self.rank)
        for key, now in (("global_batch", self.global_batch), ("num_targets", len(self.pairs.targets))):
            if state.get(key) != now:
                raise ValueError(f"{ckpt}: {key} was {state.get(key)} when saved, now {now}; "
                                 "resume needs the same data and global batch")
        self.step = state["step"]
        self.metrics.resume_at(self.step)
        self.accelerator.print(f"[train_acoustic] resumed from {ckpt} at step {self.step}")

    # ---- train ----------------------------------------------------------------------------------------------------
    def _train_step(self) -> tuple[float, int]:
        """One optimizer step; returns (mean L1 of the step, target frames in it)."""
        acc, cfg = self.accelerator, self.cfg.train
        self.lr = self.scheduler.get_last_lr()[0]
        gidx = [self.pairs.targets[i] for i in self.sampler.global_indices(self.step)]
        batch = self.pairs.batch(gidx, self.step)  # the whole global batch: prompts and crops fixed by the step
        micro = [training.StepSampler.micro_batch(list(range(len(gidx))), m, self.rank,
                                                  micro_batch_size=cfg.micro_batch_size, world_size=self.world)
                 for m in range(cfg.grad_accum_steps)]
        d = batch.feats.shape[-1]
        global_terms = int(batch.lengths.sum()) * d
        scale = training.loss_scale(global_terms, world_size=self.world, grad_accum_steps=cfg.grad_accum_steps)
        self.model.train()
        loss_sum = 0.0
        for idx in micro:
            b = _select(batch, idx).to(acc.device)
            with acc.accumulate(self.model):
                with acc.autocast():
                    loss, _ = acoustic.loss_sums(self.model, b)
                acc.backward(loss * scale)
                loss_sum += loss.item()
                if acc.sync_gradients and self.cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        return training.global_sum(acc, loss_sum) / global_terms, int(batch.lengths.sum())

    def evaluate(self) -> dict:
        if self.dev_utts is None or not self.accelerator.is_main_process:
            return {}
        return acoustic.dev_metrics(self.stage, self.dev_utts, seed=self.cfg.train.seed)

    def train(self) -> dict:
        acc, cfg = self.accelerator, self.cfg.train
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train_acoustic", disable=not acc.is_main_process,
                   dynamic_ncols=True)
        t_start = t_log = time.perf_counter()
        window, frames, loss, dev = [], 0, float("nan"), {}
        while self.step < cfg.max_steps:
            loss, n = self._train_step()
            self.step += 1
            window.append(loss)
            frames += n
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {self.step}: loss is {loss}; lower optim.lr or raise optim.warmup_steps")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                row = {"step": self.step, "loss": loss, "loss_avg": sum(window) / len(window), "lr": self.lr,
                       "frames_per_s": round(frames / max(now - t_log, 1e-9), 1),
                       "elapsed_s": round(now - t_start, 1)}
                self.metrics.write(row)
                bar.set_postfix(l1=f"{row['loss_avg']:.3f}", lr=f"{self.lr:.1e}")
                window, frames, t_log = [], 0, now
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps:
                dev = self.evaluate()
                if dev:
                    self.metrics.write({"step": self.step, **dev})
                    acc.print(f"\n[train_acoustic] step {self.step}: dev L1 {dev['dev_l1']:.4f} "
                              f"(log-mel {dev['dev_mel_l1']:.4f})")
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                training.save_checkpoint(acc, self.out / "checkpoints", step=self.step, model=self.model,
                                         optimizer=self.optimizer, scheduler=self.scheduler, keep_last=cfg.keep_last,
                                         state={"global_batch": self.global_batch,
                                                "num_targets": len(self.pairs.targets)})
            bar.update(1)
        bar.close()
        summary = {"steps": self.step, "train_l1": loss, **dev, "wall_s_this_run": round(time.perf_counter() - t_start, 1),
                   "parameters": self.num_params, "train_utterances": len(self.train_utts)}
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.stage.model = acc.unwrap_model(self.model)
            summary["default_voice"] = acoustic.set_default_voice(self.stage, self.train_utts)
            final = acoustic.save_stage(self.stage, self.out / "final", summary)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
            acc.print(f"[train_acoustic] saved {final}: {json.dumps(summary)}")
        acc.wait_for_everyone()
        return summary

    def cleanup(self) -> None:
        self.accelerator.end_training()


def _select(batch, idx: list[int]):
    """Rows ``idx`` of a batch, trimmed to their longest item."""
    from audiopalm.acoustic.data import Batch

    f, p = int(batch.lengths[idx].max()), int(batch.prompt_lengths[idx].max())
    return Batch(batch.units[idx, :f], batch.lengths[idx], batch.feats[idx, :f], batch.prompt[idx, :p],
                 batch.prompt_lengths[idx])


def parse_args(argv: list[str] | None = None) -> acoustic.TrainAcousticConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument is an override key=value, e.g. optim.lr=1e-3")
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/train_acoustic.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; overrides are key=value")
    if args.resume:
        overrides.append("train.resume=true")
    return load_config(acoustic.TrainAcousticConfig, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    recipe = TrainAcousticRecipe(parse_args(argv))
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
