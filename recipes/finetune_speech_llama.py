"""Speech-Llama: train a speech encoder + projector in front of a frozen text LLM with LoRA (ASR, AST).

Fathullah et al., arXiv 2307.11795: the comparison path to AudioPaLM. The LLM reads audio *embeddings*
(log-mel -> encoder -> stacked frames -> MLP) followed by the task tag and the target text; its weights
stay frozen, LoRA (r=8, alpha=16 on q/k/v/o) adapts it, encoder and projector train from scratch.

Launch (see recipes/configs/finetune_speech_llama.yaml and recipes/accelerate/*.yaml)::

    python recipes/finetune_speech_llama.py --config recipes/configs/finetune_speech_llama.yaml \\
        model.llm=runs/demo/text_lm/final data.train_manifests=[runs/demo/corpus/train.jsonl] \\
        data.dev_manifest=runs/demo/corpus/dev.jsonl [ctc.steps=200] [--resume]

Features:

- Data: the same manifests as the AudioPaLM path (``audiopalm synth``), audio read with
  :func:`audiopalm.audio.load`; log-mel features are computed once per wav and kept in memory.
  Each row gives an ASR example (once per source clip) and an AST example (when it has a
  translation); the prompt is the task tag of :mod:`audiopalm.tasks` (``[ASR English]``).
- Batches: a pure function of (seed, step) through :class:`audiopalm.training.StepSampler`, split
  into micro-batches and processes the same way for any process count.
- Optional CTC pre-training of the encoder (``ctc.steps``) over the LLM tokenizer's ids.
- AdamW with cosine schedule, gradient clipping and accumulation; the loss of a step is the sum of
  target-token losses over all micro-batches and processes divided by their target tokens.
- Checkpoints every ``train.save_every`` steps (atomic, newest ``train.keep_last`` kept): the model
  as :meth:`SpeechLlama.save_pretrained` writes it (LoRA adapter + encoder/projector safetensors),
  optimizer, scheduler and RNG; ``--resume`` continues bit-for-bit.
- Final save in ``output_dir/final`` (model + the LLM's tokenizer; ``audiopalm eval --checkpoint``
  and :class:`audiopalm.speech_llama_pipeline.SpeechLlamaPipeline` load it), ``summary.json``,
  ``metrics.jsonl`` (loss, lr, LLM positions/s, dev loss per task), tqdm bar.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiopalm import training
from audiopalm.config import flat_dict, load_config, save_config
from audiopalm.speech_llama_config import FinetuneSpeechLlamaConfig
from audiopalm.tasks import parse_task

IGNORE_INDEX = training.IGNORE_INDEX


def _local_or_hub(name: str) -> str:
    """An existing local folder as an absolute path (so a saved run finds its LLM from anywhere), else a hub name."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


class FeatureCache:
    """Encoder input of each wav, computed once (the corpus is small): path -> ``[F, n_mels]`` (or ``[T]``)."""

    def __init__(self, model, sample_rate: int, max_seconds: float):
        self.model, self.sample_rate, self.max_seconds = model, sample_rate, max_seconds
        self.cache: dict[str, torch.Tensor] = {}

    def duration_ok(self, path: str) -> bool:
        import soundfile as sf

        try:
            info = sf.info(path)
        except Exception as e:  # noqa: BLE001 - name the file, whatever soundfile raised
            raise ValueError(f"{path}: cannot read audio ({e})") from None
        return info.frames / info.samplerate <= self.max_seconds

    def get(self, path: str) -> torch.Tensor:
        if path not in self.cache:
            from audiopalm import audio as audio_io

            wav, _ = audio_io.load(path, self.sample_rate)
            with torch.no_grad():
                feats, lengths = self.model.featurize([torch.from_numpy(wav)])  # [1, F, n_mels], [1]
            self.cache[path] = feats[0, : int(lengths[0])].cpu()
        return self.cache[path]

    def batch(self, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded encoder inputs ``[B, F, n_mels]`` and lengths ``[B]``."""
        items = [self.get(p) for p in paths]
        lengths = torch.tensor([x.shape[0] for x in items], dtype=torch.long)
        out = torch.zeros((len(items), int(lengths.max()), *items[0].shape[1:]), dtype=items[0].dtype)
        for i, x in enumerate(items):
            out[i, : x.shape[0]] = x
        return out, lengths


def build_examples(records, tasks: list[str], skips: Counter, cache: FeatureCache | None) -> list[dict]:
    """(utterance, task) examples of manifest records: ``{"audio", "prompt", "target", "task", "id"}``.

    ASR: one per source clip (the synthetic corpus repeats a clip once per target language); AST: one per
    row with a translation. Rows lacking a field, or with clips longer than ``data.max_seconds``, are counted."""
    out, seen_asr = [], set()
    for r in records:
        for task in tasks:
            spec = parse_task(task)
            if task == "ASR":
                if not r.audio or not r.text:
                    skips["ASR: no audio/text"] += 1
                    continue
                if r.audio in seen_asr:
                    continue
                seen_asr.add(r.audio)
                target, tag = r.text, spec.tag(r.lang)
            else:
                if not r.audio or not r.tgt_text or not r.tgt_lang:
                    skips["AST: no audio/tgt_text/tgt_lang"] += 1
                    continue
                target, tag = r.tgt_text, spec.tag(r.lang, r.tgt_lang)
            if cache is not None and not cache.duration_ok(r.audio):
                skips[f"{task}: longer than data.max_seconds"] += 1
                continue
            out.append({"audio": r.audio, "prompt": tag, "target": target, "task": task, "id": r.id})
    return out


class FinetuneSpeechLlamaRecipe:
    """Encoder + projector + LoRA on a frozen LLM. ``setup()``, ``train()``, ``cleanup()``."""

    def __init__(self, cfg: FinetuneSpeechLlamaConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.step = 0

    # ---- setup --------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._setup_accelerator()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._maybe_resume()
        if self.step == 0 and self.cfg.ctc.steps:
            self.ctc_pretrain()
        if self.model.ctc_head is not None:  # only for pre-training; unused (and so frozen) in the main loop
            self.model.ctc_head.requires_grad_(False)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)

    def _log(self, message: str) -> None:
        self.accelerator.print(f"[finetune_speech_llama] {message}")

    def _setup_accelerator(self) -> None:
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
        self._log(f"{acc.distributed_type} x{self.world} on {acc.device}, precision {mp}, global batch "
                  f"{self.global_batch} = {cfg.micro_batch_size} x {cfg.grad_accum_steps} accum x {self.world}")

    def _setup_model(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from audiopalm.modeling.speech_llama import SpeechLlama

        m = self.cfg.model
        llm_name = _local_or_hub(m.llm)
        self.tokenizer = AutoTokenizer.from_pretrained(llm_name)
        ctc_vocab = len(self.tokenizer) if self.cfg.ctc.steps else 0
        config = m.speech_llama_config(ctc_vocab_size=ctc_vocab)
        config.llm = llm_name
        torch.manual_seed(self.cfg.train.seed)
        # fp32 master weights; accelerate's autocast runs the matmuls in bf16 where enabled
        llm = AutoModelForCausalLM.from_pretrained(llm_name, dtype=torch.float32)
        self.model = SpeechLlama(config, llm)
        self.counts = self.model.parameter_counts()
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.num_trainable = self.counts["trainable"]
        self._log(f"{llm_name}: LLM {self.counts['llm'] / 1e6:.2f}M (LoRA {self.counts['lora'] / 1e3:.1f}k), encoder "
                  f"{self.counts['encoder'] / 1e6:.2f}M, projector {self.counts['projector'] / 1e6:.2f}M; "
                  f"{self.num_trainable / 1e6:.3f}M trainable; {self.model.seconds_per_embedding * 1000:.0f} ms "
                  f"of audio per LLM embedding")

    def _setup_data(self) -> None:
        from audiopalm.manifest import read_manifest

        d = self.cfg.data
        if not d.train_manifests:
            raise ValueError("data.train_manifests: empty; give data.train_manifests=[path/to/train.jsonl]")
        self.features = FeatureCache(self.model, self.model.config.sample_rate, d.max_seconds)
        self.skips: Counter = Counter()
        records = [r for path in d.train_manifests for r in read_manifest(path)]
        self.examples = build_examples(records, d.tasks, self.skips, self.features)
        missing = [t for t in d.tasks if not any(e["task"] == t for e in self.examples)]
        if missing:
            raise ValueError(f"data.tasks: task(s) {missing} have no training examples in {d.train_manifests}; "
                             f"left out: {dict(self.skips)}")
        self.sampler = training.StepSampler(len(self.examples), self.global_batch, seed=self.cfg.train.seed)
        self.dev_sets = []
        if d.dev_manifest and d.dev_examples_per_task:
            dev = build_examples(read_manifest(d.dev_manifest), d.tasks, Counter(), self.features)
            self.dev_sets = [(t, [e for e in dev if e["task"] == t][: d.dev_examples_per_task]) for t in d.tasks]
        counts = Counter(e["task"] for e in self.examples)
        self._log(f"{len(self.examples)} training examples ({dict(counts)}), dev "
                  f"{ {t: len(x) for t, x in self.dev_sets} }" + (f"; left out: {dict(self.skips)}" if self.skips else ""))
        for e in tqdm(self.examples, desc="log-mel features", disable=not self.accelerator.is_main_process,
                      leave=False):
            self.features.get(e["audio"])

    def _setup_optimizer(self) -> None:
        self.optimizer = training.make_optimizer(self.model, self.cfg.optim)
        self.scheduler = training.make_scheduler(self.optimizer, self.cfg.optim, self.cfg.train.max_steps)

    # ---- CTC pre-training ---------------------------------------------------------------------------------------------

    def ctc_pretrain(self) -> None:
        """``ctc.steps`` AdamW steps of the encoder + CTC head on ASR examples (targets: the LLM tokenizer's ids)."""
        asr = [e for e in self.examples if e["task"] == "ASR"]
        if not asr:
            raise ValueError("ctc.steps > 0 needs ASR examples (data.tasks has no ASR)")
        model = self.model.to(self.accelerator.device)  # in place: the main optimizer keeps its parameters
        params = list(model.encoder.parameters()) + list(model.ctc_head.parameters())
        opt = torch.optim.AdamW(params, lr=self.cfg.ctc.lr)
        sampler = training.StepSampler(len(asr), self.cfg.train.micro_batch_size, seed=self.cfg.train.seed + 1)
        model.train()
        bar = tqdm(range(self.cfg.ctc.steps), desc="ctc pre-training", disable=not self.accelerator.is_main_process)
        for step in bar:
            batch = [asr[i] for i in sampler.global_indices(step)]
            feats, lengths = self.features.batch([e["audio"] for e in batch])  # [B, F, n_mels]
            ids = [self.tokenizer(e["target"], add_special_tokens=False)["input_ids"] for e in batch]
            t_len = torch.tensor([len(x) for x in ids])
            targets = torch.zeros(len(ids), int(t_len.max()), dtype=torch.long)  # [B, U]
            for i, x in enumerate(ids):
                targets[i, : len(x)] = torch.tensor(x)
            loss = model.ctc_loss(feats.to(self.accelerator.device), lengths, targets, t_len)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip or float("inf"))
            opt.step()
            bar.set_postfix(ctc=f"{loss.item():.3f}")
            if step % self.cfg.train.log_every == 0 or step == self.cfg.ctc.steps - 1:
                self.metrics.write({"step": 0, "ctc_step": step + 1, "ctc_loss": loss.item()})
        self._log(f"CTC pre-training: {self.cfg.ctc.steps} steps, last loss {loss.item():.4f}")

    # ---- checkpoints --------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoints/step_N`` (atomic, keep-last-k): SpeechLlama.save_pretrained + optimizer, scheduler,
        RNG and trainer state."""
        acc = self.accelerator
        root = self.out / "checkpoints"
        final = root / training.checkpoint_name(self.step)
        tmp = root / f".tmp-{training.checkpoint_name(self.step)}"
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            acc.unwrap_model(self.model).save_pretrained(tmp)
            training.save_tree(self.optimizer.state_dict(), tmp / "optimizer")
            training.save_tree(self.scheduler.state_dict(), tmp / "scheduler")
        acc.wait_for_everyone()
        training.save_tree(training.rng_state(), tmp / f"rng_rank{self.rank}")
        acc.wait_for_everyone()
        if acc.is_main_process:
            info = {"step": self.step, "world_size": self.world, "time": time.time(), "tokens_seen": self.tokens_seen,
                    "global_batch": self.global_batch, "examples": len(self.examples), "tasks": self.cfg.data.tasks}
            (tmp / training.STATE_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in training.list_checkpoints(root)[:-self.cfg.train.keep_last]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def _maybe_resume(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file, load_model

        from audiopalm.modeling.speech_llama import ADAPTER_DIR, WEIGHTS_NAME

        self.metrics = training.MetricsLog(self.out / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        self.tokens_seen = 0
        ckpt = training.latest_checkpoint(self.out / "checkpoints") if self.cfg.train.resume else None
        if ckpt is None:
            if self.cfg.train.resume:
                self._log(f"resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh")
            self.metrics.start_fresh()
            return
        state = json.loads((ckpt / training.STATE_FILE).read_text(encoding="utf-8"))
        for key, now in (("global_batch", self.global_batch), ("examples", len(self.examples)),
                         ("tasks", self.cfg.data.tasks)):
            if state.get(key) != now:
                raise ValueError(f"{ckpt}: {key} was {state.get(key)} when saved, now {now}; "
                                 "resume needs the same data, tasks and global batch")
        load_model(self.model._speech_modules(), str(ckpt / WEIGHTS_NAME), strict=True)
        if self.model.config.lora_r > 0:
            result = set_peft_model_state_dict(self.model.llm, load_file(str(ckpt / ADAPTER_DIR / "adapter_model.safetensors")))
            if result.unexpected_keys:
                raise ValueError(f"{ckpt}: adapter has unexpected keys {sorted(result.unexpected_keys)[:5]}")
        self.optimizer.load_state_dict(training.load_tree(ckpt / "optimizer"))
        self.scheduler.load_state_dict(training.load_tree(ckpt / "scheduler"))
        rng = ckpt / f"rng_rank{self.rank}"
        if not Path(f"{rng}.json").is_file():
            raise FileNotFoundError(f"{rng}.json: missing; was the checkpoint written with fewer processes "
                                    f"({state.get('world_size')}) than this run?")
        training.set_rng_state(training.load_tree(rng))
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.metrics.resume_at(self.step)
        self._log(f"resumed from {ckpt} at step {self.step}")

    # ---- train --------------------------------------------------------------------------------------------------------

    def _batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Features ``[B, F, n_mels]`` + lengths ``[B]`` and prompt+target ids/mask/labels ``[B, L]``."""
        from audiopalm.modeling.speech_llama import encode_text

        feats, lengths = self.features.batch([e["audio"] for e in examples])
        text = encode_text(self.tokenizer, [e["prompt"] for e in examples], [e["target"] for e in examples])
        return {"feats": feats, "feat_lengths": lengths, **text}

    def _num_targets(self, examples: list[dict]) -> int:
        """Target tokens (target text + eos) of some examples."""
        from audiopalm.modeling.speech_llama import encode_text

        labels = encode_text(self.tokenizer, [e["prompt"] for e in examples], [e["target"] for e in examples])["labels"]
        return int((labels != IGNORE_INDEX).sum())

    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        """Sum of target-token losses of one (micro-)batch, its target count and its LLM positions.  # []"""
        acc = self.accelerator
        with acc.autocast():
            out = self.model(batch["feats"].to(acc.device), batch["feat_lengths"], batch["input_ids"].to(acc.device),
                             attention_mask=batch["attention_mask"].to(acc.device), labels=batch["labels"].to(acc.device))
        return (training.token_loss_sum(out.logits, out.labels), training.count_targets(out.labels),
                int(out.attention_mask.sum()))

    def _train_step(self) -> tuple[float, float | None, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, grad norm, LLM positions)."""
        acc, cfg = self.accelerator, self.cfg.train
        self.lr = self.scheduler.get_last_lr()[0]
        rows = self.sampler.global_indices(self.step)
        micros = [training.StepSampler.micro_batch(rows, m, self.rank, micro_batch_size=cfg.micro_batch_size,
                                                   world_size=self.world) for m in range(cfg.grad_accum_steps)]
        batches = [self._batch([self.examples[i] for i in idx]) for idx in micros]
        # every process can count the whole step's target tokens from the text alone: no communication
        global_targets = sum(self._num_targets([self.examples[i] for i in training.StepSampler.micro_batch(
            rows, m, r, micro_batch_size=cfg.micro_batch_size, world_size=self.world)])
            for r in range(self.world) for m in range(cfg.grad_accum_steps))
        scale = training.loss_scale(global_targets, world_size=self.world, grad_accum_steps=cfg.grad_accum_steps)
        self.model.train()
        loss_sum, grad_norm, positions = 0.0, None, 0
        for batch in batches:
            with acc.accumulate(self.model):
                loss, _, pos = self._forward_loss(batch)
                acc.backward(loss * scale)
                loss_sum += loss.item()
                positions += pos
                if acc.sync_gradients and self.cfg.optim.grad_clip > 0:
                    norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                    grad_norm = float(norm) if norm is not None else None
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        positions = int(training.global_sum(acc, positions))
        self.tokens_seen += positions
        return training.global_sum(acc, loss_sum) / global_targets, grad_norm, positions

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev loss per task (token-weighted) and ``all``."""
        self.model.eval()
        out, total_loss, total_targets = {}, 0.0, 0.0
        for name, examples in self.dev_sets:
            mine = examples[self.rank::self.world]
            loss_sum, targets = 0.0, 0
            for chunk in training.chunked(mine, self.cfg.train.micro_batch_size):
                loss, n, _ = self._forward_loss(self._batch(chunk))
                loss_sum, targets = loss_sum + loss.item(), targets + n
            loss_sum, targets = training.global_sum(self.accelerator, loss_sum), training.global_sum(self.accelerator, targets)
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
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="finetune_speech_llama",
                   disable=not acc.is_main_process, dynamic_ncols=True)
        t_start = t_log = time.perf_counter()
        train_time, train_tokens = 0.0, 0
        window: list[float] = []
        window_tokens = 0
        loss, dev = float("nan"), {}
        while self.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss, grad_norm, tokens = self._train_step()
            train_time += time.perf_counter() - t0
            train_tokens += tokens
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
                       "epoch": self.sampler.epoch_of(self.step)}
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
        summary = {"steps": self.step, "train_loss": loss, "dev_loss": dev,
                   "wall_s_this_run": round(time.perf_counter() - t_start, 1), "processes": self.world,
                   "parameters": self.num_params, "trainable_parameters": self.num_trainable,
                   "parameter_counts": self.counts, "tokens_seen": self.tokens_seen,
                   "train_tokens_per_s_this_run": round(train_tokens / max(train_time, 1e-9), 1),
                   "seconds_per_embedding": self.model_unwrapped.seconds_per_embedding,
                   "ctc_steps": self.cfg.ctc.steps, "skips": dict(self.skips)}
        self.save_final(summary)
        return summary

    @property
    def model_unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def save_final(self, summary: dict) -> None:
        """``output_dir/final`` (SpeechLlama.save_pretrained + the LLM's tokenizer) and ``summary.json``."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            final = self.out / "final"
            self.model_unwrapped.save_pretrained(final)
            self.tokenizer.save_pretrained(final)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
            self._log(f"saved {final}: {json.dumps(summary)}")
        acc.wait_for_everyone()

    def cleanup(self) -> None:
        self.accelerator.end_training()


def parse_args(argv: list[str] | None = None) -> FinetuneSpeechLlamaConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument is an override key=value, e.g. ctc.steps=100")
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/finetune_speech_llama.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; overrides are key=value")
    if args.resume:
        overrides.append("train.resume=true")
    return load_config(FinetuneSpeechLlamaConfig, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    recipe = FinetuneSpeechLlamaRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
