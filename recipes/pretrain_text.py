"""Stage 0: train a small Llama-architecture text LM from scratch on the corpus text.

The offline stand-in for a hub LLM (Llama, Gemma...): with no hub, the AudioPaLM recipe extends
*this* model with audio tokens. With a hub, skip this stage and give the AudioPaLM recipe a model name.

Launch (see recipes/configs/pretrain_text.yaml and recipes/accelerate/*.yaml)::

    accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/pretrain_text.py \\
        --config recipes/configs/pretrain_text.yaml data.manifests=[corpus/manifest.jsonl]

Features:

- Corpus: ``text`` and ``tgt_text`` of manifest records in ``data.train_splits`` (dev split for the
  dev loss; other splits, e.g. test, are never read), rendered as plain sentences (``mono``) and as
  translation pairs ``[MT English French] src -> tgt`` (``mt``), de-duplicated, each line wrapped
  in ``<s> ... </s>``, concatenated and cut into blocks of ``data.seq_len`` tokens; every token is a
  target.
- Text tokenizer: trained on the training lines first (byte-level BPE) unless
  ``data.tokenizer`` names one.
- Model: ``LlamaConfig`` sized by ``model.*``, vocabulary padded to a multiple of 64.
- AdamW (no decay on norms/biases/embeddings, optional per-name LRs), cosine schedule with linear
  warm-up, gradient clipping, gradient accumulation, bf16 where supported (fp32 on CPU), optional
  gradient checkpointing.
- The loss of a step is the sum of token losses over all micro-batches and processes divided by
  their target tokens: the same number for any process count / accumulation split of a global batch.
- The data order is a pure function of (seed, step): 1 process and N processes see the same global
  batches; resuming needs only the step.
- Checkpoints every ``train.save_every`` steps, written atomically, newest ``train.keep_last`` kept;
  ``--resume`` (or ``train.resume=true``) continues bit-for-bit from the newest one.
- Final save in HF format (safetensors) in ``output_dir/final``: plain
  ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it.
- Logs: a tqdm bar (loss, tokens/s, ETA) on the main process, ``metrics.jsonl`` (step, loss, lr,
  tokens/s, dev loss/perplexity), TensorBoard through accelerate's trackers, ``summary.json``.
- Checks that the process count accelerate set up is the one launched (``WORLD_SIZE``), so a
  launcher that silently falls back to independent single processes fails loudly.
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
from audiopalm.config import PretrainTextConfig, flat_dict, load_config, save_config
from audiopalm.manifest import LANGUAGES, read_manifest


class PretrainTextRecipe:
    """Stage-0 text LM pre-training. ``setup()``, ``train()``, ``cleanup()``."""

    def __init__(self, cfg: PretrainTextConfig):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.step = 0

    # ------------------------------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._setup_accelerator()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._maybe_resume()
        self._fill_deepspeed_config()
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        plugin = self.accelerator.state.deepspeed_plugin
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.accelerator.print(f"[pretrain_text] model {type(self.model).__name__}, optimizer {type(inner).__name__}"
                               + (f", ZeRO stage {plugin.zero_stage}" if plugin is not None else ""))
        # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it
        # once per process, which changes the schedule with the process count.

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
        acc.print(f"[pretrain_text] {acc.distributed_type.value} x{self.world} on {acc.device}, precision {mp}, "
                  f"global batch {self.global_batch} = {cfg.micro_batch_size} x {cfg.grad_accum_steps} accum x {self.world}")

    def _render_lines(self, split_kind: str) -> list[str]:
        """Corpus lines of the train or dev records, in manifest order, de-duplicated."""
        d = self.cfg.data
        lines: list[str] = []
        for path in d.manifests:
            for rec in read_manifest(path):
                is_train = rec.split is None or rec.split in d.train_splits
                is_dev = rec.split == d.dev_split
                if (split_kind == "train" and not is_train) or (split_kind == "dev" and not is_dev):
                    continue
                if "mono" in d.include:
                    lines.append(rec.text)
                    if rec.tgt_text:
                        lines.append(rec.tgt_text)
                if "mt" in d.include and rec.tgt_text and rec.tgt_lang:
                    lines.append(d.mt_template.format(src_lang=LANGUAGES[rec.lang], tgt_lang=LANGUAGES[rec.tgt_lang],
                                                      src=rec.text, tgt=rec.tgt_text))
        return list(dict.fromkeys(lines))

    def _pack(self, lines: list[str]) -> torch.Tensor:
        """Lines -> ``<s> line </s>`` token stream -> blocks.  # [N, seq_len]"""
        tok, L = self.tokenizer, self.cfg.data.seq_len
        ids = tok(lines, add_special_tokens=False)["input_ids"] if lines else []
        stream = []
        for x in ids:
            stream += [tok.bos_token_id, *x, tok.eos_token_id]
        n = len(stream) // L
        return torch.tensor(stream[:n * L], dtype=torch.long).view(n, L)

    def _setup_data(self) -> None:
        from transformers import AutoTokenizer

        from audiopalm.text_tokenizer import train_text_tokenizer

        d, acc = self.cfg.data, self.accelerator
        if not d.manifests:
            raise ValueError("data.manifests: empty; give data.manifests=[path/to/manifest.jsonl]")
        train_lines = self._render_lines("train")
        if not train_lines:
            raise ValueError(f"data.manifests: no records in splits {d.train_splits} (or without split) in {d.manifests}")
        tok_dir = d.tokenizer
        if tok_dir is None:
            tok_dir = str(self.out / "tokenizer")
            with acc.main_process_first():
                if acc.is_main_process and not (self.cfg.train.resume and Path(tok_dir, "tokenizer.json").is_file()):
                    train_text_tokenizer(train_lines, tok_dir, vocab_size=d.vocab_size, model=d.tokenizer_model)
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise ValueError(f"data.tokenizer: {tok_dir} has no {name[:-3]}; it must define bos, eos and pad")
        self.train_blocks = self._pack(train_lines)  # [N, L]
        self.dev_blocks = self._pack(self._render_lines("dev"))  # [M, L]
        if len(self.train_blocks) == 0:
            raise ValueError(f"data.seq_len: the corpus ({len(train_lines)} lines) is shorter than one block of {d.seq_len}")
        self.sampler = training.StepSampler(len(self.train_blocks), self.global_batch, seed=self.cfg.train.seed)
        acc.print(f"[pretrain_text] {len(train_lines)} train lines -> {len(self.train_blocks)} blocks of {d.seq_len} "
                  f"({self.train_blocks.numel()} tokens); dev: {len(self.dev_blocks)} blocks; "
                  f"tokenizer {tok_dir} ({len(self.tokenizer)} tokens); "
                  f"{self.cfg.train.max_steps} steps = {self.sampler.epoch_of(self.cfg.train.max_steps):.1f} epochs")

    def _setup_model(self) -> None:
        from transformers import AutoModelForCausalLM, LlamaConfig

        m, tok = self.cfg.model, self.tokenizer
        vocab = math.ceil(len(tok) / 64) * 64  # a multiple of 64: faster matmuls, and room for later tokens
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
            max_position_embeddings=max(m.max_position_embeddings, self.cfg.data.seq_len), rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
            attention_dropout=m.dropout, tie_word_embeddings=m.tie_word_embeddings,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(self.cfg.train.seed)
        self.model = AutoModelForCausalLM.from_config(config)
        if self.cfg.train.gradient_checkpointing:
            # transformers >= 5 names it activation checkpointing; older versions only have the old name
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable()
            self.model.config.use_cache = False
        # under ZeRO-3 each process holds a shard; ds_numel is the full size
        self.num_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters())
        self.accelerator.print(f"[pretrain_text] Llama {m.num_layers} layers x {m.hidden_size}, "
                               f"{self.num_params / 1e6:.2f}M parameters, vocab {vocab}")

    def _setup_optimizer(self) -> None:
        self.optimizer = training.make_optimizer(self.model, self.cfg.optim)
        self.scheduler = training.make_scheduler(self.optimizer, self.cfg.optim, self.cfg.train.max_steps)

    def _maybe_resume(self) -> None:
        self.metrics = training.MetricsLog(self.out / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        ckpt = training.latest_checkpoint(self.out / "checkpoints") if self.cfg.train.resume else None
        if ckpt is None:
            if self.cfg.train.resume:
                self.accelerator.print(f"[pretrain_text] resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh")
            self.metrics.start_fresh()
            self.tokens_seen = 0
            return
        state = training.load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                         process_index=self.rank)
        for key, now in (("global_batch", self.global_batch), ("num_blocks", len(self.train_blocks))):
            if state.get(key) != now:
                raise ValueError(f"{ckpt}: {key} was {state.get(key)} when saved, now {now}; "
                                 "resume needs the same data and global batch")
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.metrics.resume_at(self.step)
        self.accelerator.print(f"[pretrain_text] resumed from {ckpt} at step {self.step}")

    def _fill_deepspeed_config(self) -> None:
        """Under DeepSpeed, the micro-batch and clipping come from this config (no dataloader is prepared)."""
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

    def _train_step(self) -> tuple[float, float | None]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, grad norm)."""
        acc, cfg = self.accelerator, self.cfg.train
        self.lr = self.scheduler.get_last_lr()[0]  # the LR this step uses (first group)
        gidx = self.sampler.global_indices(self.step)
        micro = [self.train_blocks[training.StepSampler.micro_batch(
            gidx, m, self.rank, micro_batch_size=cfg.micro_batch_size, world_size=self.world)]
            for m in range(cfg.grad_accum_steps)]  # each [B, L]
        global_targets = training.global_sum(acc, sum(training.count_targets(x) for x in micro))
        scale = training.loss_scale(int(global_targets), world_size=self.world, grad_accum_steps=cfg.grad_accum_steps)
        self.model.train()
        loss_sum, grad_norm = 0.0, None
        for x in micro:
            x = x.to(acc.device)
            with acc.accumulate(self.model):
                with acc.autocast():
                    logits = self.model(input_ids=x).logits  # [B, L, V]
                loss = training.token_loss_sum(logits, x)
                acc.backward(loss * scale)
                loss_sum += loss.item()
                if acc.sync_gradients and self.cfg.optim.grad_clip > 0:
                    norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                    grad_norm = float(norm) if norm is not None else None
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        self.tokens_seen += self.global_batch * self.cfg.data.seq_len
        return training.global_sum(acc, loss_sum) / global_targets, grad_norm

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean token loss on the dev blocks (every process takes an equal share), or None without dev data."""
        acc, n = self.accelerator, len(self.dev_blocks) // self.world * self.world
        if n == 0:
            return None
        self.model.eval()
        mine = list(range(self.rank, n, self.world))
        loss_sum, targets = 0.0, 0
        for idx in training.chunked(mine, self.cfg.train.micro_batch_size):
            x = self.dev_blocks[idx].to(acc.device)  # [b, L]
            with acc.autocast():
                logits = self.model(input_ids=x).logits  # [b, L, V]
            loss_sum += training.token_loss_sum(logits, x).item()
            targets += training.count_targets(x)
        return training.global_sum(acc, loss_sum) / training.global_sum(acc, targets)

    def train(self) -> dict:
        acc, cfg = self.accelerator, self.cfg.train
        if cfg.log_with != "none":
            acc.init_trackers("tensorboard", config=flat_dict(self.cfg))
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="pretrain_text", disable=not acc.is_main_process,
                   dynamic_ncols=True)
        t_start = t_log = time.perf_counter()
        window: list[float] = []
        loss, dev_loss = float("nan"), None
        while self.step < cfg.max_steps:
            loss, grad_norm = self._train_step()
            self.step += 1
            window.append(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {self.step}: loss is {loss}; lower optim.lr or raise optim.warmup_steps")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                tok_s = len(window) * self.global_batch * self.cfg.data.seq_len / max(now - t_log, 1e-9)
                row = {"step": self.step, "loss": loss, "loss_avg": sum(window) / len(window),
                       "lr": self.lr, "tokens_per_s": round(tok_s, 1),
                       "tokens_seen": self.tokens_seen, "epoch": round(self.sampler.epoch_of(self.step), 3)}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                self.metrics.write(row)
                acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=self.step)
                bar.set_postfix(loss=f"{row['loss_avg']:.3f}", tok_s=f"{tok_s:.0f}", lr=f"{row['lr']:.1e}")
                window, t_log = [], now
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps:
                dev_loss = self.evaluate()
                if dev_loss is not None:
                    row = {"step": self.step, "dev_loss": dev_loss, "dev_ppl": training.perplexity(dev_loss)}
                    self.metrics.write(row)
                    acc.log({"dev/loss": dev_loss, "dev/ppl": row["dev_ppl"]}, step=self.step)
                    acc.print(f"\n[pretrain_text] step {self.step}: dev loss {dev_loss:.4f}, ppl {row['dev_ppl']:.2f}")
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint()
            bar.update(1)
        bar.close()
        wall = time.perf_counter() - t_start
        summary = {"steps": self.step, "train_loss": loss, "dev_loss": dev_loss,
                   "dev_ppl": None if dev_loss is None else training.perplexity(dev_loss),
                   "wall_s_this_run": round(wall, 1), "processes": self.world, "parameters": self.num_params,
                   "tokens_seen": self.tokens_seen}
        self.save_final(summary)
        return summary

    # ------------------------------------------------------------------------------------------------------------------
    # save / cleanup
    # ------------------------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint ``output_dir/checkpoints/step_N`` (atomic, keep-last-k)."""
        return training.save_checkpoint(
            self.accelerator, self.out / "checkpoints", step=self.step, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, tokenizer=self.tokenizer, keep_last=self.cfg.train.keep_last,
            state={"tokens_seen": self.tokens_seen, "global_batch": self.global_batch,
                   "num_blocks": len(self.train_blocks)})

    def save_final(self, summary: dict) -> None:
        """The trained model + tokenizer in HF format in ``output_dir/final``, and ``summary.json``."""
        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            final = self.out / "final"
            acc.unwrap_model(self.model).save_pretrained(final, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(final)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
            acc.print(f"[pretrain_text] saved {final}: {json.dumps(summary)}")
        acc.wait_for_everyone()

    def cleanup(self) -> None:
        self.accelerator.end_training()


def parse_args(argv: list[str] | None = None) -> PretrainTextConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Any other argument is an override key=value, e.g. optim.lr=1e-3")
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/pretrain_text.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; overrides are key=value")
    if args.resume:
        overrides.append("train.resume=true")
    return load_config(PretrainTextConfig, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    recipe = PretrainTextRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
