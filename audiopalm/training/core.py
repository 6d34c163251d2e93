"""The pieces of the training loop (:class:`audiopalm.training.recipe.Recipe` puts them together).

- :class:`StepSampler`: the data order as a pure function of the step, so the data position of a
  run is just its step number and resuming needs no iterator state.
- :func:`token_loss_sum` / :func:`loss_scale`: the loss of an optimizer step is the sum of the
  token losses over *all* micro-batches and processes divided by the number of target tokens in
  them, so a long TTS target and a short ASR target weigh per token, whatever the batch split.
- :func:`param_groups`, :func:`make_optimizer`, :func:`make_scheduler`: AdamW with no decay on
  biases/norms/embeddings, optional per-name learning rates, cosine schedule with warm-up.
- :func:`save_checkpoint` / :func:`load_checkpoint` / :func:`latest_checkpoint`: atomic (written to a
  temporary folder, then renamed), keep-last-k, and bit-for-bit resumable: model (HF format,
  safetensors), optimizer, scheduler, RNG states of every process and the step, all as
  safetensors + JSON (no pickle).
- :class:`MetricsLog`: one JSON line per logged step, cut back to the resumed step on resume.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from audiopalm.data.tasks import IGNORE_INDEX  # noqa: F401 - re-exported: labels the loss skips

# ---------------------------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------------------------


class StepSampler:
    """Which items make the global batch of each step: a pure function of (seed, step).

    Items are drawn from a fresh permutation each epoch (``torch.randperm`` seeded with
    ``seed + epoch``); a global batch may span the end of one epoch and the start of the next.
    The global batch is then split into micro-batches and processes by :meth:`micro_batch`, the
    same way for any process count, so 1 process x 4 accumulation steps and 2 processes x 2 see
    the same items per optimizer step.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int = 0):
        if num_items < 1:
            raise ValueError(f"num_items: no items to sample from (got {num_items}); is the corpus empty?")
        if global_batch < 1:
            raise ValueError(f"global_batch: must be >= 1, got {global_batch}")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.num_items, generator=gen)}  # keep one epoch in memory
        return self._perms[epoch]

    def global_indices(self, step: int) -> list[int]:
        """The ``global_batch`` item indices of optimizer step ``step`` (0-based)."""
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, i = divmod(pos, self.num_items)
            out.append(int(self._perm(epoch)[i]))
        return out

    def epoch_of(self, step: int) -> float:
        """Epochs completed after ``step`` steps (fractional)."""
        return step * self.global_batch / self.num_items

    @staticmethod
    def micro_batch(
        global_indices: list[int], micro: int, rank: int, *, micro_batch_size: int, world_size: int
    ) -> list[int]:
        """Micro-batch ``micro`` of process ``rank``: consecutive slices, micro-batch-major."""
        start = (micro * world_size + rank) * micro_batch_size
        out = global_indices[start : start + micro_batch_size]
        assert len(out) == micro_batch_size, (
            f"global batch of {len(global_indices)} too small for micro {micro}, rank {rank}, "
            f"micro_batch_size {micro_batch_size}, world_size {world_size}"
        )
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Loss normalised by target tokens
# ---------------------------------------------------------------------------------------------------------------------


def count_targets(labels: torch.Tensor) -> int:
    """Scored tokens in a causal-LM batch: labels after the one-step shift that are not IGNORE_INDEX."""
    # labels: [B, T]; position t predicts labels[t + 1]
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropies over scored positions.  # []

    logits: [B, T, V]; labels: [B, T] (IGNORE_INDEX where not scored). Computed in fp32.
    """
    assert logits.shape[:2] == labels.shape, f"logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}"
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])  # [B*(T-1), V]
    shift_labels = labels[:, 1:].reshape(-1)  # [B*(T-1)]
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")


def reading_loss_sum(
    logits: torch.Tensor, read_span: torch.Tensor, read_targets: torch.Tensor, *, blank: int
) -> torch.Tensor:
    """Sum over the batch's read spans of the CTC loss (nats) from the model's own output distribution at each
    position of an input audio segment to that audio's transcript (text token ids), ``blank`` as the CTC blank.

    The prompt's positions are otherwise never scored, so this asks the LM to spell out, at the audio it is
    given, the words it hears: joint CTC / attention training (Kim, Hori and Watanabe 2017) with the LM's own
    output layer as the CTC head, no new weights. logits [B, L, V]; read_span [B, L] (k = the row's k-th span,
    0 = none); read_targets [B, S, U] (-100 padded). Computed in fp32; a span shorter than its transcript
    contributes 0 (``zero_infinity``).  # []
    """
    mask = read_span > 0  # [B, L]
    if not bool(mask.any()):
        return logits.sum() * 0.0
    # every read position at once, in row-major order, so each span is a contiguous run of rows
    selected = logits[mask].float().log_softmax(-1)  # [P, V]
    stride = int(read_span.max()) + 1  # key = row * stride + span number: one key per span
    span_keys, counts = torch.unique_consecutive(mask.nonzero()[:, 0] * stride + read_span[mask], return_counts=True)
    log_probs, targets = [], []
    for key, lp in zip(span_keys.tolist(), selected.split(counts.tolist()), strict=True):
        b, k = divmod(key, stride)
        row = read_targets[b, k - 1]
        # only the blank's and the transcript's distinct tokens' columns enter CTC (span-local classes: 0 the blank,
        # 1.. its distinct tokens), which spares CTC the whole vocabulary
        tokens, target = torch.unique(row[row != IGNORE_INDEX], return_inverse=True)  # [C], [U]
        log_probs.append(lp[:, torch.cat([tokens.new_tensor([blank]), tokens])])  # [T, C + 1]
        targets.append(target + 1)
    classes = max(x.shape[1] for x in log_probs)
    padded = [F.pad(x, (0, classes - x.shape[1]), value=-math.inf) for x in log_probs]
    return F.ctc_loss(
        torch.nn.utils.rnn.pad_sequence(padded),  # [T, N, classes]
        torch.cat(targets),
        torch.tensor([len(x) for x in log_probs]),
        torch.tensor([len(t) for t in targets]),
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )


_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "decoder.final_layer_norm")


def final_norm(model) -> torch.nn.Module:
    """The norm a Hugging Face causal LM applies to its last layer's output before the output layer (Llama, Qwen,
    Mistral: ``norm``; GPT-2: ``ln_f``; GPT-NeoX: ``final_layer_norm``; OPT: ``decoder.final_layer_norm``). ``model``:
    the causal LM, or a peft model around it."""
    inner = (model.get_base_model() if hasattr(model, "get_base_model") else model).base_model  # peft: its base
    for path in _FINAL_NORMS:
        try:
            return inner.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError(
        f"{type(model).__name__}: no final norm found (looked for {', '.join(_FINAL_NORMS)} on "
        f"{type(inner).__name__}); an intermediate layer cannot be read through the output layer"
    )


def layer_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of the output layer read off an intermediate layer's hidden states (the "logit lens": the model's
    final norm, then its output layer), e.g. ``output_hidden_states`` entry k for decoder layer k. hidden [B, L, D]
    → [B, L, V]. ``model``: the causal LM, or a peft model around it (which hands on ``get_output_embeddings``)."""
    return model.get_output_embeddings()(final_norm(model)(hidden))


def loss_scale(global_targets: int, *, world_size: int, grad_accum_steps: int) -> float:
    """Factor for each micro-batch's ``token_loss_sum`` before ``accelerator.backward``.

    ``accelerator.backward`` divides by ``grad_accum_steps`` (DeepSpeed too, inside its engine) and
    DDP / ZeRO average gradients over processes; multiplying by both and dividing by the number of
    target tokens of the whole step leaves the gradient of (sum of token losses / target tokens).
    """
    if global_targets <= 0:
        raise ValueError(f"global_targets: an optimizer step with no target tokens ({global_targets})")
    return world_size * grad_accum_steps / global_targets


def global_sum(accelerator, value: float | int) -> float:
    """Sum a number over all processes (a no-op with one process)."""
    if accelerator.num_processes == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="sum").item())


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------------------------------


def param_groups(
    model: torch.nn.Module, *, lr: float, weight_decay: float, group_lrs: dict[str, float] | None = None
) -> list[dict]:
    """AdamW parameter groups: decay on matrices only; names containing a key of ``group_lrs`` get its LR.

    Biases, norm weights (1-D) and embeddings are not decayed (decaying them hurts small LMs).
    Frozen parameters (``requires_grad=False``) are left out. Empty groups are dropped.
    """
    group_lrs = dict(group_lrs or {})
    groups: dict[tuple[float, float], dict] = {}
    matched = {k: 0 for k in group_lrs}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        this_lr = lr
        for key, key_lr in group_lrs.items():
            if key in name:
                this_lr = key_lr
                matched[key] += 1
                break
        decay = weight_decay if (p.ndim >= 2 and "embed" not in name) else 0.0
        g = groups.setdefault((this_lr, decay), {"params": [], "names": [], "lr": this_lr, "weight_decay": decay})
        g["params"].append(p)
        g["names"].append(name)
    unmatched = [k for k, n in matched.items() if n == 0]
    if unmatched:
        raise ValueError(f"optim.group_lrs: no trainable parameter name contains {unmatched}")
    return list(groups.values())


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` from an :class:`audiopalm.config.OptimConfig`."""
    groups = param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay, group_lrs=cfg.group_lrs)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, max_steps: int):
    """Linear warm-up to each group's LR, then cosine down to ``min_lr_ratio`` of it (transformers)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=max_steps, min_lr_rate=cfg.min_lr_ratio
    )


# ---------------------------------------------------------------------------------------------------------------------
# Nested state (optimizer, scheduler, RNG) <-> safetensors + JSON
# ---------------------------------------------------------------------------------------------------------------------


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(obj.copy())
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{path}: dict key {k!r} of type {type(k).__name__} cannot be saved")
            items.append([k, _encode(v, tensors, f"{path}.{k}")])
        return {"__dict__": items}
    raise TypeError(f"{path}: cannot save a {type(obj).__name__} ({obj!r:.80}) as safetensors + JSON")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        raise ValueError(f"unexpected node {sorted(obj)} in saved state")
    return obj


def save_tree(tree: Any, prefix: str | Path) -> None:
    """Save nested dicts/lists/tuples of tensors and plain values as ``prefix.safetensors`` + ``prefix.json``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors, Path(prefix).name)
    save_file(tensors, f"{prefix}.safetensors")
    Path(f"{prefix}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_tree(prefix: str | Path) -> Any:
    """Inverse of :func:`save_tree`."""
    for ext in (".json", ".safetensors"):
        if not Path(f"{prefix}{ext}").is_file():
            raise FileNotFoundError(f"{prefix}{ext}: missing (incomplete checkpoint?)")
    tensors = load_file(f"{prefix}.safetensors")
    return _decode(json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8")), tensors)


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

STATE_FILE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary folders of a killed save are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def tracker_init_kwargs(cfg, output_dir: str | os.PathLike) -> dict:
    """``accelerator.init_trackers(init_kwargs=...)``: trackers that would write into the working directory
    (wandb's ``./wandb``) write under ``output_dir/logs`` instead, like tensorboard. Their own offline switches
    (``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI`` unset: a local ``mlruns``) are theirs and respected."""
    logs = Path(output_dir) / "logs"
    names = {n.strip() for n in cfg.log_with.split(",")}
    out: dict = {}
    if "wandb" in names:
        logs.mkdir(parents=True, exist_ok=True)
        out["wandb"] = {"dir": str(logs)}
    return out


def make_accelerator(cfg, project_dir: str | Path):
    """The ``Accelerator`` of a recipe, from a :class:`audiopalm.config.TrainConfig`; returns ``(accelerator,
    mixed_precision)``.

    One place for what the launchers get wrong without a GPU: CPU processes run DDP over gloo
    (``cpu=True``); DeepSpeed on CPU gets a gloo process group (accelerate would pick none, and every
    process would train alone); the process count accelerate set up must be the one launched
    (``WORLD_SIZE``); an FSDP config that accelerate silently ran as DDP is refused.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    mp = cfg.mixed_precision
    if mp == "auto":  # the launcher's choice (accelerate config), else bf16 where the GPU has it, else fp32
        mp = os.environ.get("ACCELERATE_MIXED_PRECISION") or (
            "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    no_gpu = not torch.cuda.is_available()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    handlers = [InitProcessGroupKwargs(backend="gloo")] if no_gpu and deepspeed and launched > 1 else []
    acc = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum_steps,
        mixed_precision=mp,
        log_with=None if cfg.log_with == "none" else [n.strip() for n in cfg.log_with.split(",")],  # "a,b" -> both
        project_dir=str(project_dir),
        cpu=no_gpu and not deepspeed,  # CPU processes: DDP over gloo (cpu=True would turn DeepSpeed off)
        kwargs_handlers=handlers,
    )
    if launched != acc.num_processes:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE) but accelerate set up {acc.num_processes} "
            f"({acc.distributed_type.value}): each process would train alone on the whole batch; "
            'launch with `accelerate launch --config_file "$(audiopalm train --list-accelerate cpu)" -m audiopalm.recipes.RECIPE`'
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and acc.distributed_type != "FSDP":
        raise RuntimeError(
            f"the accelerate config asks for FSDP but accelerate set up {acc.distributed_type.value} "
            "(FSDP needs GPUs; on CPU use the accelerate config cpu or deepspeed_zero2/3: audiopalm train --list)"
        )
    return acc, mp


def save_checkpoint(
    accelerator,
    root: str | Path,
    *,
    step: int,
    model,
    optimizer,
    scheduler,
    tokenizer=None,
    state: dict | None = None,
    keep_last: int = 2,
    write_model=None,
) -> Path:
    """Write a resumable checkpoint ``root/step_N`` atomically; call on every process.

    The folder holds the model in HF format (loads with ``from_pretrained``), the tokenizer,
    ``optimizer``/``scheduler`` (safetensors + JSON), ``rng_rank{r}`` for every process and
    ``trainer_state.json`` (``step`` + ``state``). It is written as ``root/.tmp-step_N`` and renamed
    when complete, so a kill mid-save leaves the previous checkpoint as the newest. Then all but the
    newest ``keep_last`` checkpoints are deleted. ``write_model(folder, state_dict)`` replaces the HF
    ``save_pretrained`` of the unwrapped model (a model with its own format, e.g. Speech-Llama).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise NotImplementedError(
            "resumable checkpoints under DeepSpeed are not implemented (its optimizer state is "
            "sharded and its own format is pickle); set train.save_every=0"
        )
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        if write_model is not None:
            write_model(tmp, state_dict)
        else:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        # DDP: every process holds the same optimizer and scheduler state; the main one saves it.
        save_tree(optimizer.state_dict(), tmp / "optimizer")
        save_tree(scheduler.state_dict(), tmp / "scheduler")
    save_tree(rng_state(), tmp / f"rng_rank{accelerator.process_index}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = {"step": step, "world_size": accelerator.num_processes, "time": time.time(), **(state or {})}
        (tmp / STATE_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def read_state(path: str | Path) -> dict:
    """The ``trainer_state.json`` of a checkpoint folder (``step`` and what the recipe stored)."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file}: missing; {path} is not a complete checkpoint")
    return json.loads(state_file.read_text(encoding="utf-8"))


def load_model_weights(path: str | Path, model) -> None:
    """Load ``path/model.safetensors`` into an HF model (strict, a tied ``lm_head`` excepted)."""
    from safetensors.torch import load_model

    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (sharded checkpoints are not supported for resume)")
    missing, unexpected = load_model(model, str(weights), strict=False)
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if getattr(model.config, "tie_word_embeddings", False)
        else set()
    )
    if set(missing) - tied or unexpected:
        raise ValueError(f"{weights}: missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()


def load_training_state(path: str | Path, *, optimizer, scheduler, process_index: int = 0) -> dict:
    """Restore optimizer, scheduler and this process's RNG states from a checkpoint; returns its trainer state."""
    path = Path(path)
    state = read_state(path)
    optimizer.load_state_dict(load_tree(path / "optimizer"))
    scheduler.load_state_dict(load_tree(path / "scheduler"))
    rng = path / f"rng_rank{process_index}"
    if not Path(f"{rng}.json").is_file():
        raise FileNotFoundError(
            f"{rng}.json: missing; was the checkpoint written with fewer processes "
            f"({state.get('world_size')}) than this run?"
        )
    set_rng_state(load_tree(rng))
    return state


def load_checkpoint(path: str | Path, *, model, optimizer, scheduler, process_index: int = 0) -> dict:
    """Restore a :func:`save_checkpoint` folder into the *unprepared* model/optimizer/scheduler.

    Returns the trainer state (``step`` and what the recipe stored). Sets this process's RNG states.
    """
    read_state(path)
    load_model_weights(path, model)
    return load_training_state(path, optimizer=optimizer, scheduler=scheduler, process_index=process_index)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


class MetricsLog:
    """Append-only JSONL of metric rows (``{"step": 10, "loss": ..., ...}``), main process only.

    ``resume_at(step)`` drops rows written after ``step`` by a run that was killed before its next
    checkpoint, so the file always describes one unbroken run.
    """

    def __init__(self, path: str | Path, *, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def resume_at(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def start_fresh(self) -> None:
        if self.enabled and self.path.is_file():
            self.path.unlink()

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file (a torn last line from a kill is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def perplexity(loss: float) -> float:
    """exp(loss), capped to avoid overflow for a diverged run."""
    return math.exp(min(loss, 50.0))


def chunked(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
