"""Config of ``recipes/finetune_speech_llama.py``: a speech encoder + projector in front of a frozen LLM with LoRA.

The optimizer and loop sections are the shared :class:`~audiopalm.config.OptimConfig` and
:class:`~audiopalm.config.TrainConfig`; loading, overrides and errors are those of :mod:`audiopalm.config`::

    cfg = load_config(FinetuneSpeechLlamaConfig, "recipes/configs/finetune_speech_llama.yaml", ["ctc.steps=200"])

Registered for :func:`audiopalm.config.load_any` under the recipe name ``finetune_speech_llama``
(``CONFIGS`` in audiopalm/config.py).
"""

from __future__ import annotations

import dataclasses

from audiopalm.config import ConfigError, OptimConfig, TrainConfig

SUPPORTED_TASKS = ("ASR", "AST")
"""Speech-Llama outputs text only: speech recognition and speech translation."""


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {message}")


@dataclasses.dataclass
class SpeechLlamaModelSection:
    """The base LLM and the speech side (:class:`audiopalm.modeling.speech_llama.SpeechLlamaConfig` fields)."""

    llm: str = "runs/demo/text_lm/final"
    """A HF causal LM: hub name or local folder (the stage-0 model of recipes/pretrain_text.py). Its tokenizer is
    loaded from the same place. Frozen; only LoRA trains in it."""
    encoder: str = "conformer"
    """``conformer``, ``transformer`` (built from the sizes below, random init) or ``hf:<name or path>``."""
    n_mels: int = 80
    """Log-mel bands of the encoder input."""
    encoder_stack: int = 4
    """Log-mel frames (10 ms) stacked into one encoder frame (4: 40 ms)."""
    encoder_dim: int = 256
    """Encoder width."""
    encoder_layers: int = 4
    """Encoder layers."""
    encoder_heads: int = 4
    """Encoder attention heads."""
    encoder_ffn_dim: int = 1024
    """Encoder feed-forward width."""
    conv_kernel: int = 15
    """Conformer depthwise convolution kernel (odd)."""
    encoder_dropout: float = 0.1
    """Dropout in the encoder."""
    projector_stride: int = 2
    """Encoder frames per LLM embedding (2 x 40 ms = 80 ms, the paper's finest)."""
    lora_r: int = 8
    """LoRA rank on q/k/v/o (paper: 8); 0: no LoRA (the LLM stays exactly as it is)."""
    lora_alpha: int = 16
    """LoRA alpha (paper: 16)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""

    def speech_llama_config(self, *, ctc_vocab_size: int = 0):
        """The model config these fields describe."""
        from audiopalm.modeling.speech_llama import SpeechLlamaConfig

        return SpeechLlamaConfig(
            llm=self.llm, encoder=self.encoder, n_mels=self.n_mels, encoder_stack=self.encoder_stack,
            encoder_dim=self.encoder_dim, encoder_layers=self.encoder_layers, encoder_heads=self.encoder_heads,
            encoder_ffn_dim=self.encoder_ffn_dim, conv_kernel=self.conv_kernel, encoder_dropout=self.encoder_dropout,
            projector_stride=self.projector_stride, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout, ctc_vocab_size=ctc_vocab_size)

    def __post_init__(self) -> None:
        _check(bool(self.llm), "model.llm", "must not be empty")
        try:
            self.speech_llama_config()
        except ValueError as e:  # SpeechLlamaConfig names its field; say which section it lives in
            raise ConfigError(f"model: {e}".replace("SpeechLlamaConfig.", "model.")) from None


@dataclasses.dataclass
class SpeechLlamaDataSection:
    """Manifests (``audiopalm synth``) -> (utterance, task) examples -> padded batches of features + text."""

    train_manifests: list[str] = dataclasses.field(default_factory=list)
    """Manifest files whose rows train (all rows, whatever their ``split``)."""
    dev_manifest: str = ""
    """Manifest for the dev loss (empty: no dev loss)."""
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["ASR", "AST"])
    """Tasks among ``ASR`` and ``AST``; each row gives one example per task it has the fields for (ASR once per
    source clip: the synthetic corpus repeats a clip once per target language)."""
    max_seconds: float = 20.0
    """Longer clips are skipped and counted (never cut)."""
    dev_examples_per_task: int = 32
    """Dev examples scored per task (the first N of the dev manifest)."""

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "data.tasks", "give at least one task")
        for t in self.tasks:
            _check(t.upper() in SUPPORTED_TASKS, "data.tasks",
                   f"Speech-Llama produces text: tasks must be among {SUPPORTED_TASKS}, got {t!r}")
        self.tasks = [t.upper() for t in self.tasks]
        _check(len(set(self.tasks)) == len(self.tasks), "data.tasks", f"a task is repeated: {self.tasks}")
        _check(self.max_seconds > 0, "data.max_seconds", f"must be > 0, got {self.max_seconds}")
        _check(self.dev_examples_per_task >= 0, "data.dev_examples_per_task",
               f"must be >= 0, got {self.dev_examples_per_task}")


@dataclasses.dataclass
class CTCSection:
    """Optional CTC pre-training of the encoder (with a linear head over the LLM's text tokens) before the LLM
    is attached, as in the paper."""

    steps: int = 0
    """CTC optimizer steps before the main loop (0: none). Not checkpointed: a run killed during them starts
    them again."""
    lr: float = 1e-3
    """Constant AdamW learning rate of the CTC phase."""

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "ctc.steps", f"must be >= 0, got {self.steps}")
        _check(self.lr > 0, "ctc.lr", f"must be > 0, got {self.lr}")


@dataclasses.dataclass
class FinetuneSpeechLlamaConfig:
    """recipes/finetune_speech_llama.py: encoder + projector + LoRA on a frozen LLM, ASR and AST."""

    recipe: str = "finetune_speech_llama"
    """Which recipe this file configures (checked)."""
    model: SpeechLlamaModelSection = dataclasses.field(default_factory=SpeechLlamaModelSection)
    """The LLM, the encoder, the projector and LoRA."""
    data: SpeechLlamaDataSection = dataclasses.field(default_factory=SpeechLlamaDataSection)
    """Manifests and tasks."""
    ctc: CTCSection = dataclasses.field(default_factory=CTCSection)
    """Optional CTC pre-training of the encoder."""
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=50))
    """Optimizer and schedule of the main loop."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(output_dir="runs/finetune_speech_llama"))
    """The loop."""

    def __post_init__(self) -> None:
        _check(self.recipe == "finetune_speech_llama", "recipe",
               f"this config is for 'finetune_speech_llama', got {self.recipe!r}")
        _check(self.optim.warmup_steps <= self.train.max_steps, "optim.warmup_steps",
               f"{self.optim.warmup_steps} is more than train.max_steps={self.train.max_steps}")
