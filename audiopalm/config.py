"""Typed recipe configs: dataclasses, read from YAML, changed by ``key=value`` overrides.

A recipe's config is a dataclass whose fields are plain values or other dataclasses (sections).
Each field has a docstring under it and each class checks its values in ``__post_init__``, naming
the field that failed. A YAML file names its recipe in a top-level ``recipe:`` key, so
:func:`load_any` can pick the class from :data:`CONFIGS`; every shipped YAML is loaded by a test.

Loading order: YAML file, then ``key=value`` overrides (dotted keys reach into sections, values are
parsed as YAML: ``optim.lr=3e-4``, ``data.manifests=[a.jsonl,b.jsonl]``, ``model.init=null``), then
type checks and ``__post_init__``. Unknown keys are errors that list the known ones: a typo never
trains silently with a default.

    cfg = load_config(PretrainTextConfig, "recipes/configs/pretrain_text.yaml", ["optim.lr=1e-3"])
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad config value. The message names the file (if any) and the dotted field."""


# ---------------------------------------------------------------------------------------------------------------------
# Sections shared by the recipes
# ---------------------------------------------------------------------------------------------------------------------


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {message}")


@dataclasses.dataclass
class OptimConfig:
    """AdamW with a cosine schedule and linear warm-up (the usual LLM recipe)."""

    lr: float = 3e-3
    """Peak learning rate, reached at the end of warm-up. Small models from scratch take ~1e-3..5e-3."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio`` at ``train.max_steps`` (0 decays to zero)."""
    warmup_steps: int = 50
    """Linear warm-up steps from 0 to ``lr``; keeps Adam's early, noisy steps small."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices only (not on biases, norms or embeddings)."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2; 0.95 rather than 0.999 is the common choice for LM pre-training stability."""
    eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping). Under DeepSpeed set the same value in its config."""
    group_lrs: dict[str, float] = dataclasses.field(default_factory=dict)
    """Parameter-name substring -> its own peak LR, e.g. ``{embed_tokens: 1e-3}``; the schedule scales it too."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.beta1 < 1, "optim.beta1", f"must be in [0, 1), got {self.beta1}")
        _check(0 <= self.beta2 < 1, "optim.beta2", f"must be in [0, 1), got {self.beta2}")
        _check(self.eps > 0, "optim.eps", f"must be > 0, got {self.eps}")
        _check(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        for name, lr in self.group_lrs.items():
            _check(bool(name) and lr > 0, "optim.group_lrs", f"needs a non-empty name and an LR > 0, got {name!r}: {lr}")


@dataclasses.dataclass
class TrainConfig:
    """The loop: steps, batch, precision, checkpoints, logging."""

    output_dir: str = "runs/pretrain_text"
    """Everything goes here: ``checkpoints/step_N``, ``final/``, ``metrics.jsonl``, ``config.yaml``, TensorBoard logs."""
    seed: int = 0
    """Seeds the model init, the data order and dropout; the same seed gives the same run."""
    max_steps: int = 600
    """Optimizer steps in the whole run (the cosine schedule spans them)."""
    micro_batch_size: int = 16
    """Sequences per process per forward pass."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step. Global batch = micro_batch_size * grad_accum_steps * processes."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """``auto``: the accelerate config's ``mixed_precision`` when launched with one, else bf16 on a GPU that has it, else fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    save_every: int = 200
    """Write a resumable checkpoint every N steps (0 = only the final save)."""
    keep_last: int = 2
    """Keep only the newest K checkpoints (older ones are deleted after a new one is complete)."""
    log_every: int = 10
    """Write a metrics line (and TensorBoard scalars) every N steps."""
    eval_every: int = 200
    """Compute the dev loss every N steps and at the end (0 = only at the end)."""
    log_with: Literal["tensorboard", "none"] = "tensorboard"
    """Tracker for accelerate (``log_with``); ``none`` logs to metrics.jsonl only."""
    resume: bool = False
    """Continue from the newest checkpoint in ``output_dir/checkpoints`` (same as ``--resume``)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "micro_batch_size", "grad_accum_steps", "log_every"):
            _check(getattr(self, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "eval_every", "seed"):
            _check(getattr(self, name) >= 0, f"train.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.keep_last >= 1, "train.keep_last", f"must be >= 1, got {self.keep_last}")
        _check(bool(self.output_dir), "train.output_dir", "must not be empty")


# ---------------------------------------------------------------------------------------------------------------------
# Stage 0: a small text LM from scratch (recipes/pretrain_text.py)
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextModelConfig:
    """A small Llama-architecture decoder (transformers.LlamaConfig), trained from scratch."""

    hidden_size: int = 256
    """Model width."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads (head dim = hidden_size / num_heads)."""
    num_kv_heads: int = 4
    """Key/value heads (< num_heads is grouped-query attention, as in Llama 3)."""
    intermediate_size: int = 688
    """SwiGLU hidden width; ~8/3 * hidden_size as in Llama, rounded to a multiple of 16."""
    rope_theta: float = 10000.0
    """RoPE base."""
    dropout: float = 0.0
    """Attention dropout (Llama uses none)."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head: at this size the embedding is most of the parameters."""
    max_position_embeddings: int = 2048
    """Context the model declares (``config.max_position_embeddings``). Text blocks here are short, but the
    AudioPaLM fine-tune feeds it audio sequences of ``data.max_len`` (512+) tokens; RoPE has no learned
    positions, so declaring a longer context costs nothing."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings"):
            _check(getattr(self, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size",
               f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
               f"model.num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}")
        _check(0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class TextDataConfig:
    """Corpus text from manifests, rendered to lines, tokenized, packed into fixed-length blocks."""

    manifests: list[str] = dataclasses.field(default_factory=list)
    """Manifest files (JSONL) whose ``text`` / ``tgt_text`` make the corpus."""
    train_splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Records with these ``split`` values (or no split) are trained on; keep test text out of stage 0."""
    dev_split: str = "dev"
    """Records with this split give the dev loss / perplexity (none found: no dev eval)."""
    include: list[Literal["mono", "mt"]] = dataclasses.field(default_factory=lambda: ["mono", "mt"])
    """Line kinds: ``mono`` = each text and tgt_text as a sentence; ``mt`` = each pair as ``mt_template``."""
    mt_template: str = "[MT {src_lang} {tgt_lang}] {src}<|sep|>{tgt}"
    """How a translation pair is written; languages are English names ("[MT English French] ...")."""
    seq_len: int = 128
    """Tokens per packed block (lines are joined with bos/eos and cut into blocks of this length)."""
    tokenizer: str | None = None
    """A trained text tokenizer (folder or hub name); ``null`` trains one on the corpus into output_dir/tokenizer."""
    vocab_size: int = 4096
    """Size of the tokenizer trained when ``tokenizer`` is null (padded to a multiple of 64 in the model)."""
    tokenizer_model: Literal["bpe"] = "bpe"
    """Algorithm of the trained tokenizer: byte-level BPE (never <unk>); the only one for now."""

    def __post_init__(self) -> None:
        _check(self.seq_len >= 8, "data.seq_len", f"must be >= 8, got {self.seq_len}")
        _check(self.vocab_size >= 300, "data.vocab_size", f"must be >= 300 (bytes + specials), got {self.vocab_size}")
        _check(len(self.include) > 0, "data.include", "choose at least one of mono, mt")
        for key in ("{src}", "{tgt}"):
            _check(key in self.mt_template, "data.mt_template", f"must contain {key}, got {self.mt_template!r}")


@dataclasses.dataclass
class PretrainTextConfig:
    """recipes/pretrain_text.py: the stage-0 text LM (the offline stand-in for a hub LLM)."""

    recipe: str = "pretrain_text"
    """Which recipe this file configures (checked, so a config is never given to the wrong recipe)."""
    model: TextModelConfig = dataclasses.field(default_factory=TextModelConfig)
    """The network."""
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    """The corpus and tokenizer."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """The loop."""

    def __post_init__(self) -> None:
        _check(self.recipe == "pretrain_text", "recipe", f"this config is for 'pretrain_text', got {self.recipe!r}")
        _check(self.optim.warmup_steps <= self.train.max_steps, "optim.warmup_steps",
               f"{self.optim.warmup_steps} is more than train.max_steps={self.train.max_steps}")


# Recipe name (the YAML's ``recipe:`` key) -> "module:Class". Add a line for a new recipe.
CONFIGS: dict[str, str] = {
    "pretrain_text": "audiopalm.config:PretrainTextConfig",
    "finetune_audiopalm": "audiopalm.finetune_config:FinetuneAudioPaLMConfig",
    "finetune_speech_llama": "audiopalm.speech_llama_config:FinetuneSpeechLlamaConfig",
}


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

T = typing.TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (int -> float, list -> tuple, dict -> dataclass)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (mapping) for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, f"{where} key"): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")


def _from_dict(cls: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key; known keys here: {', '.join(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e)) from None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}={value!r}: {part!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings to a nested dict; values are parsed as YAML (``1e-3``, ``true``, ``[a, b]``)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML (e.g. "[MT] {src}"): take it as a plain string; the type check decides
        _set_dotted(data, key.strip(), value)
    return data


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    with path.open(encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict, *, source: str | None = None) -> T:
    """Build config ``cls`` from a nested dict; errors name ``source`` (a file) and the dotted field."""
    try:
        return _from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """YAML file (optional) + ``key=value`` overrides -> a validated ``cls`` instance."""
    data = _read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data, source=str(path) if path is not None else None)


def config_class(recipe: str) -> type:
    """The dataclass registered in :data:`CONFIGS` for a recipe name."""
    if recipe not in CONFIGS:
        raise ConfigError(f"recipe: unknown recipe {recipe!r}; registered: {', '.join(CONFIGS)}")
    module, name = CONFIGS[recipe].split(":")
    return getattr(importlib.import_module(module), name)


def load_any(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Load a YAML whose ``recipe:`` key names its config class in :data:`CONFIGS`."""
    data = _read_yaml(path)
    if "recipe" not in data:
        raise ConfigError(f"{path}: recipe: missing; add e.g. `recipe: pretrain_text` at the top")
    return load_config(config_class(data["recipe"]), path, overrides)


def to_dict(cfg: Any) -> dict:
    """A config as a plain nested dict (tuples become lists), ready for YAML or JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (the run folder keeps the exact config it ran with)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def flat_dict(cfg: Any) -> dict[str, Any]:
    """``{"optim.lr": 3e-3, ...}`` with lists/dicts as strings: for TensorBoard hparams."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float, str, bool)):
            out[prefix] = v
        else:
            out[prefix] = str(v)

    walk("", to_dict(cfg))
    return out
