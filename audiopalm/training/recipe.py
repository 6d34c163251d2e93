"""The one training loop: a base :class:`Recipe` that every recipe subclasses (audiocraft / torchtune style).

The base owns everything the recipes share:

- set-up: the ``Accelerator`` (DDP over gloo on CPU, DeepSpeed ZeRO-2/3 with its config filled from
  ours, FSDP on GPUs), the seed, the output folder (a used one is refused unless ``--resume`` or
  ``--overwrite``), ``config.yaml``, gradient checkpointing, optimizer and schedule;
- the optimizer step: ``grad_accum_steps`` micro-batches, the loss of the step = the sum of token
  losses over all micro-batches and processes divided by their target tokens, gradient clipping;
- logging: a tqdm bar, ``metrics.jsonl``, and the trackers accelerate supports (``train.log_with``);
- dev evaluation (loss per dev set and ``all``, every process an equal share);
- resumable checkpoints (atomic, keep-last-k, bit-for-bit: model, optimizer, scheduler, RNG, data
  position); ``--resume`` refuses a changed config (see :data:`audiopalm.config.RESUME_MAY_CHANGE`);
- the final save (atomic, a completion marker last), ``summary.json``, and ``main()``.

A recipe implements only what differs::

    class MyRecipe(Recipe):
        name, config_class = "my_recipe", MyConfig
        def build_data(self): ...            # self.dev_sets = [(name, items)], data state
        def build_model(self): ...           # -> nn.Module (unprepared)
        def micro_batches(self): ...         # this process's micro-batches of step self.step, global targets
        def forward_loss(self, batch): ...   # -> LossSum(loss sum, target tokens, tokens)
        def collate_dev(self, items): ...    # dev items -> a batch for forward_loss

and optionally the checkpoint/final-save hooks (``write_model``, ``load_model_state``, ``write_final``),
``resume_checks``/``data_state``/``load_data_state``, ``epoch`` and ``summary_extra``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, cast

import torch
from tqdm.auto import tqdm

from audiopalm import runtime
from audiopalm.config import (
    RESUME_MAY_CHANGE,
    ConfigError,
    config_diff,
    flat_dict,
    load_config,
    resolve_config,
    save_config,
    to_dict,
)
from audiopalm.training import core

# What a run writes into its output folder (removed by --overwrite; nothing else there is touched).
RUN_ARTEFACTS = (
    "checkpoints",
    "exports",
    "final",
    ".tmp-final",
    ".old-final",
    "adapter",
    ".tmp-adapter",
    ".old-adapter",
    "base",
    ".tmp-base",
    ".old-base",
    "tokenizer",
    "metrics.jsonl",
    "summary.json",
    "config.yaml",
    "logs",
)


class LossSum(NamedTuple):
    """What :meth:`Recipe.forward_loss` returns for one (micro-)batch."""

    loss: torch.Tensor
    """Sum (not mean) of the target-token losses.  # []"""
    targets: int
    """Target tokens scored in the batch."""
    tokens: int
    """Tokens processed (for tokens/s), padding excluded."""


class Recipe:
    """Base of every training recipe: ``setup()``, ``train()``, ``cleanup()``, and :meth:`main`."""

    name: ClassVar[str] = ""
    """Recipe name: the config's ``recipe:`` key, the tqdm label, the log prefix."""
    config_class: ClassVar[type]
    """The config dataclass (a registered entry of :data:`audiopalm.config.CONFIGS`)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.step = 0
        self.tokens_seen = 0
        self.dev_sets: list[tuple[str, list]] = []
        self.checkpoint_tokenizer = None  # saved beside checkpoints (HF tokenizer) when set by the recipe

    # ------------------------------------------------------------------------------------------------------------------
    # hooks
    # ------------------------------------------------------------------------------------------------------------------

    def build_data(self) -> None:
        """Read the data; set ``self.dev_sets``. Runs after the accelerator (``self.world``, ``self.global_batch``)."""
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        """The model to train, unprepared (fp32 master weights)."""
        raise NotImplementedError

    def micro_batches(self) -> tuple[list[dict], int]:
        """This process's ``grad_accum_steps`` micro-batches of step ``self.step``, and the target tokens of the
        whole step (all micro-batches of all processes)."""
        raise NotImplementedError

    def forward_loss(self, batch: dict) -> LossSum:
        raise NotImplementedError

    def collate_dev(self, items: list) -> dict:
        """Dev items (of ``self.dev_sets``) -> a batch for :meth:`forward_loss`."""
        raise NotImplementedError

    def epoch(self) -> float:
        """Epochs of training data seen after ``self.step`` steps."""
        return float("nan")

    def resume_checks(self) -> dict:
        """Values saved with each checkpoint that a resumed run must reproduce (data size, vocabulary...)."""
        return {}

    def data_state(self) -> dict:
        """The data position, when it is not a function of the step alone."""
        return {}

    def load_data_state(self, state: dict) -> None:
        pass

    def write_model(self, folder: Path, state_dict: dict | None) -> None:
        """Write the model into a checkpoint folder (main process). Default: HF ``save_pretrained``."""
        self.accelerator.unwrap_model(self.model).save_pretrained(
            folder, state_dict=state_dict, safe_serialization=True
        )

    def load_model_state(self, ckpt: Path) -> None:
        """Load a checkpoint's weights into the unprepared model. Default: strict HF safetensors."""
        core.load_model_weights(ckpt, self.model)

    def write_final(self, folder: Path, state_dict: dict | None) -> None:
        """Write the final model into ``folder`` (a temporary folder renamed to ``final/`` afterwards)."""
        self.write_model(folder, state_dict)
        if self.checkpoint_tokenizer is not None:
            self.checkpoint_tokenizer.save_pretrained(folder)

    def card(self, summary: dict) -> dict:
        """What the model card of ``final/`` says (keyword arguments of
        :func:`audiopalm.modeling.card.write_model_card`); the base fills in the dev figures and training size."""
        return {
            "title": f"{self.name} model",
            "summary": f"Trained with the audiopalm `{self.name}` recipe.",
            "load_code": "from transformers import AutoModelForCausalLM\n"
            'model = AutoModelForCausalLM.from_pretrained("REPO_OR_FOLDER")',
        }

    def write_card(self, folder: Path, summary: dict) -> None:
        """``folder/README.md``: the model card (before the completion marker, so a published folder has one)."""
        from audiopalm.modeling.card import write_model_card

        kwargs = self.card(summary)
        kwargs.setdefault("dev", summary.get("dev_loss") or None)
        kwargs.setdefault(
            "training",
            {
                k: summary[k]
                for k in ("steps", "tokens_seen", "train_loss", "processes", "parameters", "trainable_parameters")
                if k in summary
            },
        )
        write_model_card(folder, **kwargs)

    def before_prepare(self) -> None:
        """Runs after the model, optimizer and resume, before ``accelerator.prepare`` (e.g. a pre-training phase)."""

    def checkpointed_module(self) -> torch.nn.Module:
        """The HF model whose activations gradient checkpointing recomputes."""
        return self.model

    def summary_extra(self) -> dict:
        return {}

    # ------------------------------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        self.accelerator.print(f"[{self.name}] {message}")

    def setup(self) -> None:
        self._setup_accelerator()
        self.build_data()
        # Any: each recipe reaches its own model's attributes, and accelerate.prepare wraps it below
        self.model: Any = cast(Any, self.build_model())
        if self.cfg.train.gradient_checkpointing:
            self._enable_gradient_checkpointing()
        # under ZeRO-3 each process holds a shard; ds_numel is the full size
        self.num_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters())
        self.num_trainable = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters() if p.requires_grad)
        self.optimizer = core.make_optimizer(self.model, self.cfg.optim)
        self.scheduler = core.make_scheduler(self.optimizer, self.cfg.optim, self.cfg.train.max_steps)
        self._maybe_resume()
        self.before_prepare()
        self._fill_deepspeed_config()
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step it once per
        # process, which changes the schedule with the process count).
        plugin = self.accelerator.state.deepspeed_plugin
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.log(
            f"model {type(self.model).__name__}, optimizer {type(inner).__name__}"
            + (f", ZeRO stage {plugin.zero_stage}" if plugin is not None else "")
            + f"; {self.num_params / 1e6:.2f}M parameters, {self.num_trainable / 1e6:.3f}M trainable"
        )

    def _setup_accelerator(self) -> None:
        from accelerate.utils import set_seed

        tr = self.cfg.train
        self.accelerator, mp = core.make_accelerator(tr, self.out)
        acc = self.accelerator
        self.world, self.rank = acc.num_processes, acc.process_index
        self.global_batch = tr.micro_batch_size * tr.grad_accum_steps * self.world  # rows per optimizer step
        set_seed(tr.seed)
        self._claim_output_dir()
        acc.wait_for_everyone()  # every process checked the folder before the main one writes into it
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        self.log(
            f"{acc.distributed_type.value} x{self.world} on {acc.device}, precision {mp}, global batch "
            f"{self.global_batch} = {tr.micro_batch_size} x {tr.grad_accum_steps} accum x {self.world}"
        )

    def _claim_output_dir(self) -> None:
        """A fresh run needs an empty folder (or ``--overwrite``); ``--resume`` needs the same config."""
        tr = self.cfg.train
        saved = self.out / "config.yaml"
        if tr.resume and saved.is_file():
            import yaml

            diff = config_diff(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, to_dict(self.cfg))
            if diff:
                raise ConfigError(
                    f"{saved}: --resume with a changed config ({'; '.join(diff)}); only "
                    f"{', '.join(RESUME_MAY_CHANGE)} may change on resume; use another "
                    "train.output_dir or --overwrite to start over"
                )
            return
        if tr.resume:
            return
        used = sorted(p.name for p in self.out.iterdir()) if self.out.is_dir() else []
        if used and not tr.overwrite:
            raise ConfigError(
                f"train.output_dir: {self.out} is not empty ({', '.join(used[:4])}"
                f"{', ...' if len(used) > 4 else ''}); pass --resume to continue its run or "
                "--overwrite to replace it"
            )
        if used and self.accelerator.is_main_process:
            for name in RUN_ARTEFACTS:
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()

    def _enable_gradient_checkpointing(self) -> None:
        module: Any = self.checkpointed_module()  # a transformers model (typed as the Module it is)
        # transformers >= 5 names it activation checkpointing; older versions only have the old name
        enable = getattr(module, "activation_checkpointing_enable", None) or module.gradient_checkpointing_enable
        enable()
        module.config.use_cache = False
        # a frozen (LoRA) embedding gives outputs without grad: checkpointed blocks would then get no gradient
        module.enable_input_require_grads()

    def _maybe_resume(self) -> None:
        self.metrics = core.MetricsLog(self.out / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        ckpt = core.latest_checkpoint(self.out / "checkpoints") if self.cfg.train.resume else None
        if ckpt is None:
            if self.cfg.train.resume:
                self.log(f"resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh")
            self.metrics.start_fresh()
            return
        state = core.read_state(ckpt)
        for key, now in {"global_batch": self.global_batch, **self.resume_checks()}.items():
            if state.get(key) != now:
                raise ValueError(
                    f"{ckpt}: {key} was {state.get(key)} when saved, now {now}; "
                    "resume needs the same data, tasks and global batch"
                )
        self.load_model_state(ckpt)
        core.load_training_state(ckpt, optimizer=self.optimizer, scheduler=self.scheduler, process_index=self.rank)
        self.load_data_state(state.get("data", {}))
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.metrics.resume_at(self.step)
        self.log(f"resumed from {ckpt} at step {self.step}")

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
            raise ConfigError(
                f"optim.grad_clip={self.cfg.optim.grad_clip} but the DeepSpeed config says gradient_clipping={clip}"
            )
        if self.cfg.train.save_every:
            raise ConfigError(
                "train.save_every: resumable checkpoints are not implemented under DeepSpeed (its "
                "optimizer state is sharded and its own format is pickle); set it to 0"
            )

    # ------------------------------------------------------------------------------------------------------------------
    # train
    # ------------------------------------------------------------------------------------------------------------------

    def train_step(self) -> tuple[float, float | None, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, grad norm, tokens of all
        processes)."""
        acc, tr = self.accelerator, self.cfg.train
        self.lr = self.scheduler.get_last_lr()[0]  # the LR this step uses (first group)
        micros, global_targets = self.micro_batches()
        scale = core.loss_scale(global_targets, world_size=self.world, grad_accum_steps=tr.grad_accum_steps)
        self.model.train()
        loss_sum, grad_norm, tokens = 0.0, None, 0
        for micro in micros:
            with acc.accumulate(self.model):
                out = self.forward_loss(micro)
                acc.backward(out.loss * scale)
                loss_sum += out.loss.item()
                tokens += out.tokens
                if acc.sync_gradients and self.cfg.optim.grad_clip > 0:
                    norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                    grad_norm = float(norm) if norm is not None else None
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        tokens = int(core.global_sum(acc, tokens))
        self.tokens_seen += tokens
        return core.global_sum(acc, loss_sum) / global_targets, grad_norm, tokens

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev loss per dev set (token-weighted) and ``all`` (over every dev target token). Each process takes an
        equal share (ZeRO-3 needs every process in every forward pass), so up to ``world - 1`` items of a set
        are left out with several processes."""
        acc = self.accelerator
        self.model.eval()
        out, total_loss, total_targets = {}, 0.0, 0.0
        for name, items in self.dev_sets:
            n = len(items) // self.world * self.world
            loss_sum, targets = 0.0, 0.0
            for chunk in core.chunked(items[self.rank : n : self.world], self.cfg.train.micro_batch_size):
                res = self.forward_loss(self.collate_dev(chunk))
                loss_sum, targets = loss_sum + res.loss.item(), targets + res.targets
            loss_sum, targets = core.global_sum(acc, loss_sum), core.global_sum(acc, targets)
            if targets:
                out[name] = loss_sum / targets
                total_loss, total_targets = total_loss + loss_sum, total_targets + targets
        if total_targets:
            out["all"] = total_loss / total_targets
        return out

    def train(self) -> dict:
        acc, tr = self.accelerator, self.cfg.train
        if tr.log_with != "none":
            acc.init_trackers("logs", config=flat_dict(self.cfg), init_kwargs=core.tracker_init_kwargs(tr, self.out))
        bar = tqdm(
            total=tr.max_steps, initial=self.step, desc=self.name, disable=not acc.is_main_process, dynamic_ncols=True
        )
        t_start = t_log = time.perf_counter()
        train_time, train_tokens = 0.0, 0
        window: list[float] = []
        window_tokens = 0
        loss, dev = float("nan"), {}
        while self.step < tr.max_steps:
            t0 = time.perf_counter()
            loss, grad_norm, tokens = self.train_step()
            train_time += time.perf_counter() - t0
            train_tokens += tokens
            self.step += 1
            window.append(loss)
            window_tokens += tokens
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"step {self.step}: loss is {loss}; lower optim.lr or raise optim.warmup_steps"
                )
            if self.step % tr.log_every == 0 or self.step == tr.max_steps:
                now = time.perf_counter()
                tok_s = window_tokens / max(now - t_log, 1e-9)
                row = {
                    "step": self.step,
                    "loss": loss,
                    "loss_avg": sum(window) / len(window),
                    "lr": self.lr,
                    "tokens_per_s": round(tok_s, 1),
                    "tokens_seen": self.tokens_seen,
                    "epoch": round(self.epoch(), 4),
                }
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                self.metrics.write(row)
                acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=self.step)
                bar.set_postfix(loss=f"{row['loss_avg']:.3f}", tok_s=f"{tok_s:.0f}", lr=f"{row['lr']:.1e}")
                window, window_tokens, t_log = [], 0, now
            if (tr.eval_every and self.step % tr.eval_every == 0) or self.step == tr.max_steps:
                dev = self.evaluate()
                if dev:
                    self.metrics.write({"step": self.step, **{f"dev_loss/{k}": v for k, v in dev.items()}})
                    acc.log({f"dev/loss/{k}": v for k, v in dev.items()}, step=self.step)
                    self.log(f"step {self.step}: dev loss " + ", ".join(f"{k} {v:.4f}" for k, v in dev.items()))
            if tr.save_every and self.step % tr.save_every == 0 and self.step < tr.max_steps:
                self.save_checkpoint()
            if tr.export_every and self.step % tr.export_every == 0 and self.step < tr.max_steps:
                fresh = bool(tr.eval_every) and self.step % tr.eval_every == 0  # the dev loss of this very step
                self.export_model(
                    Path("exports") / core.checkpoint_name(self.step),
                    {"steps": self.step, "train_loss": loss, "dev_loss": dev if fresh else {}},
                )
            bar.update(1)
        bar.close()
        summary = {
            "steps": self.step,
            "train_loss": loss,
            "dev_loss": dev,
            "wall_s_this_run": round(time.perf_counter() - t_start, 1),
            "processes": self.world,
            "parameters": self.num_params,
            "trainable_parameters": self.num_trainable,
            "tokens_seen": self.tokens_seen,
            "train_tokens_per_s_this_run": round(train_tokens / max(train_time, 1e-9), 1),
            **self.summary_extra(),
        }
        self.save_final(summary)
        return summary

    # ------------------------------------------------------------------------------------------------------------------
    # save / cleanup
    # ------------------------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint ``output_dir/checkpoints/step_N`` (atomic, keep-last-k)."""
        return core.save_checkpoint(
            self.accelerator,
            self.out / "checkpoints",
            step=self.step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            tokenizer=self.checkpoint_tokenizer,
            keep_last=self.cfg.train.keep_last,
            write_model=self.write_model,
            state={
                "tokens_seen": self.tokens_seen,
                "global_batch": self.global_batch,
                **self.resume_checks(),
                "data": self.data_state(),
            },
        )

    def export_model(self, name: str | Path, summary: dict) -> Path:
        """``output_dir/NAME``: the model as a loadable folder with its card (atomic: a temporary folder, the
        completion marker last, a rename); call on every process."""
        from audiopalm.modeling.extend import atomic_folder

        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)  # every process: ZeRO-3 gathers the shards
        if acc.is_main_process:
            with atomic_folder(self.out / name, {"recipe": self.name, "step": self.step}) as tmp:
                self.write_final(tmp, state_dict)
                self.write_card(tmp, summary)
        acc.wait_for_everyone()
        return self.out / name

    def save_final(self, summary: dict) -> None:
        """``output_dir/final`` (see :meth:`export_model`) and ``summary.json``."""
        acc = self.accelerator
        self.export_model("final", summary)
        if acc.is_main_process:
            tmp_summary = self.out / ".summary.json.tmp"
            tmp_summary.write_text(json.dumps(summary, indent=1), encoding="utf-8")
            os.replace(tmp_summary, self.out / "summary.json")
            self.log(f"saved {self.out / 'final'}: {json.dumps(summary)}")
        acc.wait_for_everyone()

    def cleanup(self) -> None:
        """End the trackers and the process group. Under DeepSpeed the engine is destroyed first: its
        communication threads outliving the process group can abort the interpreter at exit."""
        acc = self.accelerator
        acc.wait_for_everyone()
        destroy = getattr(self.model, "destroy", None)
        if acc.state.deepspeed_plugin is not None and callable(destroy):
            destroy()
        acc.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    # ------------------------------------------------------------------------------------------------------------------
    # command line
    # ------------------------------------------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config", required=True, help=f"a shipped config name (e.g. {cls.name}_tiny) or a YAML file"
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in train.output_dir from its newest checkpoint (same config)",
        )
        parser.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty train.output_dir")
        parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    @classmethod
    def parse_config(cls, args: argparse.Namespace, overrides: list[str]) -> Any:
        """The config from ``--config`` + ``key=value`` overrides + the flags."""
        bad = [o for o in overrides if o.startswith("-")]
        if bad:
            raise ConfigError(f"unknown option(s) {bad}; overrides are key=value (see --help)")
        overrides = list(overrides)
        if args.resume:
            overrides.append("train.resume=true")
        if args.overwrite:
            overrides.append("train.overwrite=true")
        return load_config(cls.config_class, resolve_config(args.config, cls.name), overrides)

    @classmethod
    def run(cls, args: argparse.Namespace, overrides: list[str]) -> int:
        """Parse the config, then print it (``--print-config``) or train. A bad config or output folder is one
        line on stderr and exit code 2."""
        runtime.keep_freed_memory()  # for `accelerate launch recipes/X.py` too (audiopalm/runtime.py)
        try:
            cfg = cls.parse_config(args, overrides)
            if args.print_config:
                import yaml

                print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
                return 0
            recipe = cls(cfg)
            recipe.setup()
        except (ConfigError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        recipe.train()
        recipe.cleanup()
        return 0

    @classmethod
    def _parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"audiopalm train {cls.name}",
            description=cls.__doc__,
            epilog="Any other argument is an override key=value, e.g. optim.lr=1e-3",
        )
        cls.add_arguments(parser)
        return parser

    @classmethod
    def config_from_argv(cls, argv: list[str]) -> Any:
        """The config a command line gives (``--config NAME_OR_PATH key=value ... [--resume]``)."""
        return cls.parse_config(*cls._parser().parse_known_args(argv))

    @classmethod
    def main(cls, argv: list[str] | None = None) -> int:
        return cls.run(*cls._parser().parse_known_args(argv))
