"""Config of ``recipes/finetune_audiopalm.py``: a text LLM extended with audio tokens, trained on a task mixture.

The optimizer and loop sections are the shared :class:`~audiopalm.config.OptimConfig` and
:class:`~audiopalm.config.TrainConfig`; loading, overrides and errors are those of :mod:`audiopalm.config`::

    cfg = load_config(FinetuneAudioPaLMConfig, "recipes/configs/finetune_audiopalm.yaml", ["lora.enabled=true"])
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from audiopalm.config import ConfigError, OptimConfig, TrainConfig
from audiopalm.manifest import LANGUAGES


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {message}")


@dataclasses.dataclass
class FinetuneModelConfig:
    """The text LM to extend and the audio tokenizer whose codes it learns."""

    name_or_path: str = "runs/demo/text_lm/final"
    """A HF causal LM: hub name (``meta-llama/Llama-3.2-1B``) or local folder (the stage-0 model). Its tokenizer
    is loaded from the same place."""
    from_scratch: bool = False
    """Random init of the same architecture instead of the pretrained weights (the "text init vs random" ablation)."""
    audio_tokenizer: str = "runs/demo/mel_rvq"
    """Audio tokenizer folder or hub name (:func:`audiopalm.tokenizers.base.load_audio_tokenizer`); the token
    stores must have been made by it (same fingerprint)."""
    num_codebooks: int | None = None
    """k: the LM models the first k codebooks (null: all of the tokenizer's). AudioPaLM uses few; each adds tokens."""
    pattern: Literal["flatten", "delay"] = "flatten"
    """How the k codebooks of a frame become one token stream (audiopalm/tokenizers/patterns.py)."""
    init: Literal["mean", "zeros", "codebook"] = "mean"
    """Initial value of the new embedding / lm_head rows: mean of the text rows, zeros (the AudioPaLM paper), or
    ``codebook``: audio rows from the audio tokenizer's code vectors (PCA, scaled to the text rows; codes that
    sound alike start close), see :func:`audiopalm.modeling.extend.codebook_rows`."""

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path", "must not be empty")
        _check(bool(self.audio_tokenizer), "model.audio_tokenizer", "must not be empty")
        _check(self.num_codebooks is None or self.num_codebooks >= 1, "model.num_codebooks",
               f"must be >= 1 or null, got {self.num_codebooks}")


@dataclasses.dataclass
class LoraSection:
    """LoRA on the attention (and optionally MLP) projections; the new vocabulary rows train in full."""

    enabled: bool = False
    """``false``: full fine-tune of every weight. ``true``: LoRA adapters + the new rows only."""
    r: int = 8
    """Adapter rank."""
    alpha: float = 16.0
    """Scale numerator (the update is ``alpha / r * B A``)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters; add ``gate_proj, up_proj, down_proj`` for the MLP (Llama names)."""
    new_rows: Literal["trainable_tokens", "modules_to_save"] = "trainable_tokens"
    """How the new audio rows train: ``trainable_tokens`` (peft ``trainable_token_indices``: only the new rows,
    old text rows stay bit-identical) or ``modules_to_save`` (the whole embedding and lm_head train)."""

    def __post_init__(self) -> None:
        _check(self.r >= 1, "lora.r", f"must be >= 1, got {self.r}")
        _check(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        _check(0 <= self.dropout < 1, "lora.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(len(self.target_modules) > 0, "lora.target_modules", "name at least one module (e.g. q_proj)")


@dataclasses.dataclass
class TaskEntry:
    """One weighted source of the mixture: a task (or chain) over the rows of the token stores."""

    task: str = "ASR"
    """``ASR``, ``AST``, ``TTS``, ``S2ST``, ``MT`` or a chain such as ``"ASR AST S2ST"`` (audiopalm/tasks.py)."""
    weight: float = 1.0
    """Relative sampling weight in the mixture."""
    langs: list[str] = dataclasses.field(default_factory=list)
    """Only rows whose source ``lang`` is one of these (empty: all)."""
    pairs: list[str] = dataclasses.field(default_factory=list)
    """Only rows whose ``lang-tgt_lang`` is one of these, e.g. ``[en-fr, fr-en]`` (empty: all)."""
    dedupe: bool | None = None
    """Keep one row per source audio (or source text for text-input tasks). The synthetic corpus has one row per
    directed pair sharing wavs, so ASR/TTS would see each English utterance 3 times. ``null``: on for tasks that
    use no target-language field (ASR, TTS), off otherwise."""

    def __post_init__(self) -> None:
        from audiopalm.tasks import TaskError, parse_task

        try:
            parse_task(self.task)
        except TaskError as e:
            raise ConfigError(f"data.tasks.task: {e}") from None
        _check(self.weight > 0, "data.tasks.weight", f"must be > 0, got {self.weight} (task {self.task!r})")
        for code in self.langs:
            _check(code in LANGUAGES, "data.tasks.langs", f"unknown language {code!r}; known: {', '.join(LANGUAGES)}")
        for pair in self.pairs:
            parts = pair.split("-")
            _check(len(parts) == 2 and all(p in LANGUAGES for p in parts), "data.tasks.pairs",
                   f"expected 'src-tgt' with known language codes, got {pair!r}")


@dataclasses.dataclass
class FinetuneDataConfig:
    """Token stores -> task mixture -> packed (or padded) batches."""

    stores: list[str] = dataclasses.field(default_factory=list)
    """Token-store folders (``audiopalm tokenize``); rows of ``train_splits`` train, rows of ``dev_split`` give the
    dev loss."""
    train_splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Rows with these ``split`` values (or none) are trained on."""
    dev_split: str = "dev"
    """Rows with this split give the dev loss per task (none found: no dev loss)."""
    tasks: list[TaskEntry] = dataclasses.field(default_factory=lambda: [TaskEntry("ASR")])
    """The weighted task mixture."""
    max_len: int = 512
    """Tokens per packed row; a longer example is skipped and counted (never truncated)."""
    packing: bool = True
    """Pack several examples per row (block-diagonal attention through restarting position ids); ``false``: one
    example per row, padded, with an attention mask."""
    dev_examples_per_task: int = 64
    """Dev examples scored per task at each evaluation (the first N in store order, after filters)."""

    def __post_init__(self) -> None:
        _check(self.max_len >= 16, "data.max_len", f"must be >= 16, got {self.max_len}")
        _check(len(self.tasks) > 0, "data.tasks", "give at least one task")
        _check(len(self.train_splits) > 0, "data.train_splits", "give at least one split")
        _check(self.dev_examples_per_task >= 0, "data.dev_examples_per_task",
               f"must be >= 0, got {self.dev_examples_per_task}")


@dataclasses.dataclass
class FinetuneAudioPaLMConfig:
    """recipes/finetune_audiopalm.py: vocabulary-extended LM, full or LoRA, on a weighted task mixture."""

    recipe: str = "finetune_audiopalm"
    """Which recipe this file configures (checked)."""
    model: FinetuneModelConfig = dataclasses.field(default_factory=FinetuneModelConfig)
    """The LM and the audio tokenizer."""
    lora: LoraSection = dataclasses.field(default_factory=LoraSection)
    """Full fine-tune or LoRA."""
    data: FinetuneDataConfig = dataclasses.field(default_factory=FinetuneDataConfig)
    """Stores and tasks."""
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=50))
    """Optimizer and schedule. ``optim.new_rows_lr`` is not a field: under LoRA with trainable tokens use
    ``optim.group_lrs={trainable_tokens: 1e-3}``; in a full fine-tune ``{embed_tokens: ..., lm_head: ...}``."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(output_dir="runs/finetune_audiopalm"))
    """The loop."""

    def __post_init__(self) -> None:
        _check(self.recipe == "finetune_audiopalm", "recipe",
               f"this config is for 'finetune_audiopalm', got {self.recipe!r}")
        _check(self.optim.warmup_steps <= self.train.max_steps, "optim.warmup_steps",
               f"{self.optim.warmup_steps} is more than train.max_steps={self.train.max_steps}")
