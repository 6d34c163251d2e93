"""Typed recipe configs: dataclasses, read from YAML, changed by ``key=value`` overrides.

The one config module: the loader, the sections every recipe shares (:class:`OptimConfig`,
:class:`TrainConfig`, :class:`LoraConfig`) and each recipe's config (:class:`PretrainTextConfig`,
:class:`FinetuneAudioPaLMConfig`, :class:`FinetuneSpeechLlamaConfig`, whose ``model`` section is the model's
own :class:`~audiopalm.modeling.speech_llama.SpeechLlamaConfig`). ``--config NAME`` finds a shipped config
(:func:`resolve_config`); ``--resume`` compares configs with :func:`config_diff`.

A recipe's config is a dataclass whose fields are plain values or other dataclasses (sections).
Each field has a docstring under it and each class checks its values in ``__post_init__``, naming
the field that failed. A YAML file names its recipe in a top-level ``recipe:`` key, so
:func:`load_any` can pick the class from :data:`CONFIGS`; every shipped YAML is loaded by a test.

Loading order: YAML file, then ``key=value`` overrides (dotted keys reach into sections, values are
parsed as YAML: ``optim.lr=3e-4``, ``data.manifests=[a.jsonl,b.jsonl]``, ``model.init=null``), then
type checks and ``__post_init__``. Unknown keys are errors that list the known ones: a typo never
trains silently with a default.

    cfg = load_config(PretrainTextConfig, resolve_config("pretrain_text"), ["optim.lr=1e-3"])
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from audiopalm.acoustic.model import AcousticConfig
from audiopalm.acoustic.stage import DEFAULT_PROMPT_FRAMES
from audiopalm.data.manifest import LANGUAGES
from audiopalm.modeling.speech_llama import SpeechLlamaConfig


class ConfigError(ValueError):
    """A bad config value. The message names the file (if any) and the dotted field."""


# ---------------------------------------------------------------------------------------------------------------------
# Sections shared by the recipes
# ---------------------------------------------------------------------------------------------------------------------


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {message}")


def _check_recipe_config(cfg: Any, recipe: str) -> None:
    """The checks every recipe config makes across its sections."""
    _check(cfg.recipe == recipe, "recipe", f"this config is for {recipe!r}, got {cfg.recipe!r}")
    _check(
        cfg.optim.warmup_steps <= cfg.train.max_steps,
        "optim.warmup_steps",
        f"{cfg.optim.warmup_steps} is more than train.max_steps={cfg.train.max_steps}",
    )


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
            _check(
                bool(name) and lr > 0, "optim.group_lrs", f"needs a non-empty name and an LR > 0, got {name!r}: {lr}"
            )


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
    export_every: int = 0
    """Also write the model as ``final/`` holds it (loadable, scored by ``audiopalm eval``) to
    ``exports/step_N`` every N steps (0 = never): a task metric's curve over steps, not only the dev loss's.
    Exports are never deleted."""
    log_with: str = "tensorboard"
    """Trackers accelerate logs to (``log_with``), comma-separated: one of :data:`TRACKERS` each (``wandb``,
    ``mlflow``... need their package); logs go under ``output_dir/logs``. ``none``: metrics.jsonl only."""
    resume: bool = False
    """Continue from the newest checkpoint in ``output_dir/checkpoints`` (same as ``--resume``). The saved
    ``config.yaml`` must equal this config but for :data:`RESUME_MAY_CHANGE`."""
    overwrite: bool = False
    """Start a fresh run in a non-empty ``output_dir``, deleting the previous run's files (same as
    ``--overwrite``). Without it (or ``resume``) a used output folder is refused."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "micro_batch_size", "grad_accum_steps", "log_every"):
            _check(getattr(self, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "eval_every", "export_every", "seed"):
            _check(getattr(self, name) >= 0, f"train.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.keep_last >= 1, "train.keep_last", f"must be >= 1, got {self.keep_last}")
        _check(bool(self.output_dir), "train.output_dir", "must not be empty")
        for name in self.log_with.split(","):
            _check(
                name.strip() in TRACKERS,
                "train.log_with",
                f"unknown tracker {name.strip()!r}; known: {', '.join(TRACKERS)}",
            )
        _check(not (self.resume and self.overwrite), "train.overwrite", "--resume and --overwrite exclude each other")


TRACKERS = ("tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab", "trackio", "none")
"""Values of ``train.log_with``: the trackers accelerate supports, and ``none``."""

RESUME_MAY_CHANGE = (
    "train.max_steps",
    "train.save_every",
    "train.keep_last",
    "train.log_every",
    "train.eval_every",
    "train.export_every",
    "train.log_with",
    "train.resume",
    "train.overwrite",
    "train.output_dir",
    "train.gradient_checkpointing",
    "data.dev_examples_per_task",
)
"""Config fields a ``--resume`` may change (longer runs, other logging); any other change is refused with a diff."""


# ---------------------------------------------------------------------------------------------------------------------
# Stage 0: a small text LM from scratch (audiopalm.recipes.pretrain_text)
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
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            _check(getattr(self, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(
            self.hidden_size % self.num_heads == 0,
            "model.hidden_size",
            f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}",
        )
        _check(
            self.num_heads % self.num_kv_heads == 0,
            "model.num_kv_heads",
            f"model.num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}",
        )
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
    """Line kinds: ``mono`` = each text and tgt_text as a sentence; ``mt`` = each pair written as the fine-tune's
    MT example (the prompt of :mod:`audiopalm.data.tasks`: ``[MT English French] src<|sep|>tgt``)."""
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


@dataclasses.dataclass
class PretrainTextConfig:
    """audiopalm.recipes.pretrain_text: the stage-0 text LM (the offline stand-in for a hub LLM)."""

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
        _check_recipe_config(self, "pretrain_text")


# ---------------------------------------------------------------------------------------------------------------------
# AudioPaLM: a text LM extended with audio tokens, trained on a task mixture (audiopalm.recipes.finetune_audiopalm)
# ---------------------------------------------------------------------------------------------------------------------


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
    """How the k codebooks of a frame become one token stream (audiopalm/data/patterns.py)."""
    init: Literal["mean", "zeros", "codebook", "letters"] = "mean"
    """Initial value of the new embedding / lm_head rows: mean of the text rows, zeros (the AudioPaLM paper),
    ``codebook``: audio rows from the audio tokenizer's code vectors (PCA, scaled to the text rows; codes that
    sound alike start close), see :func:`audiopalm.modeling.extend.codebook_rows`, or ``letters``: each unit's row
    is the mix of the text rows of the characters the units' CTC encoder hears in it
    (:func:`audiopalm.modeling.extend.letter_rows`; ``ctc_units`` clustered at the encoder's last layer)."""
    acoustic_stage: str | None = None
    """Folder of a trained acoustic stage (``train_acoustic``'s ``final/``: semantic units + voice -> sound) for an
    audio tokenizer without a decoder (``ctc_units``, ``semantic``); copied into the checkpoint's ``acoustic/`` so
    the saved model speaks with no extra argument. It must have been trained on this audio tokenizer's units."""
    input_dedup: bool = False
    """Read input audio (ASR, AST, S2ST) with each run of a repeated unit collapsed into one token (SpeechGPT-style);
    output speech keeps every frame. Fewer tokens per example when runs are long (small K); one codebook only. The
    checkpoint records it, so the pipeline reads audio the same way."""
    output_words: bool = False
    """Write speech word by word: in every speech output (TTS, S2ST) each word's text comes before the units that
    speak it (an inner monologue, as Moshi's), so the model keeps its place in what it says. Needs token stores
    made with ``audiopalm tokenize --words`` (where each word starts); one codebook. The checkpoint records it;
    the text is dropped before the units become sound."""

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path", "must not be empty")
        _check(bool(self.audio_tokenizer), "model.audio_tokenizer", "must not be empty")
        _check(
            self.num_codebooks is None or self.num_codebooks >= 1,
            "model.num_codebooks",
            f"must be >= 1 or null, got {self.num_codebooks}",
        )
        _check(
            not self.input_dedup or self.num_codebooks == 1,
            "model.input_dedup",
            f"needs model.num_codebooks=1 (runs of one code stream are collapsed), got {self.num_codebooks}",
        )
        _check(
            not self.output_words or (self.num_codebooks == 1 and self.pattern == "flatten"),
            "model.output_words",
            f"needs model.num_codebooks=1 and pattern=flatten, got {self.num_codebooks} and {self.pattern}",
        )


@dataclasses.dataclass
class LoraConfig:
    """LoRA on the attention (and optionally MLP) projections (peft); in the AudioPaLM recipe the new vocabulary
    rows train too (``new_rows``)."""

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
    """``ASR``, ``AST``, ``TTS``, ``S2ST``, ``MT`` or a chain such as ``"ASR AST S2ST"`` (audiopalm/data/tasks.py)."""
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
        from audiopalm.data.tasks import TaskError, parse_task

        try:
            parse_task(self.task)
        except TaskError as e:
            raise ConfigError(f"data.tasks.task: {e}") from None
        _check(self.weight > 0, "data.tasks.weight", f"must be > 0, got {self.weight} (task {self.task!r})")
        for code in self.langs:
            _check(code in LANGUAGES, "data.tasks.langs", f"unknown language {code!r}; known: {', '.join(LANGUAGES)}")
        for pair in self.pairs:
            parts = pair.split("-")
            _check(
                len(parts) == 2 and all(p in LANGUAGES for p in parts),
                "data.tasks.pairs",
                f"expected 'src-tgt' with known language codes, got {pair!r}",
            )


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
    """Pack several examples per row, best fit over a pool of open rows (block-diagonal attention through restarting
    position ids); ``false``: one example per row, padded, with an attention mask."""
    dev_examples_per_task: int = 64
    """Dev examples scored per task at each evaluation (the first N in store order, after filters)."""
    read_weight: float = 0.0
    """Weight of the reading loss added to the training loss: at each position of an input audio segment whose
    transcript the row holds, CTC from the LM's own output distribution to the transcript's text tokens (blank: the
    pad token; :func:`audiopalm.training.core.reading_loss_sum`). It teaches the LM to hear the words where the audio
    is, which next-token loss on the target alone teaches slowly. 0: off. Dev losses never include it."""
    unit_noise: float = 0.0
    """In training, the share of the input audio's units (those the model reads, never those it writes) replaced by
    one of their ``unit_noise_neighbours`` nearest units (the audio tokenizer's code vectors: for ``ctc_units`` the
    k-means centres), drawn per example from (seed, its place in the mixture): the LM learns to read units a little
    off, as another voice or accent gives them. 0: off. Needs one codebook and a tokenizer with code vectors."""
    unit_noise_neighbours: int = 4
    """How many nearest units a replaced unit is drawn from."""
    unit_shift: float = 0.0
    """In training, the share of the input audio's units that take the unit before or after them instead (a unit
    boundary moved by one unit, as another speaking rate or accent moves it); drawn like ``unit_noise``, apart from
    it. 0: off."""
    read_layer: int = 0
    """Which layer the reading loss reads: 0, the model's output; k >= 1, the output of decoder layer k, through the
    model's final norm and output layer (:func:`audiopalm.training.core.layer_logits`), so that the layers above it
    can use the words it hears when they write the target."""

    def __post_init__(self) -> None:
        _check(self.max_len >= 16, "data.max_len", f"must be >= 16, got {self.max_len}")
        _check(self.read_weight >= 0, "data.read_weight", f"must be >= 0, got {self.read_weight}")
        _check(0 <= self.unit_noise < 1, "data.unit_noise", f"must be in [0, 1), got {self.unit_noise}")
        _check(self.unit_noise_neighbours >= 1, "data.unit_noise_neighbours", "must be >= 1")
        _check(
            0 <= self.unit_shift < 1 and self.unit_noise + self.unit_shift < 1,
            "data.unit_shift",
            f"must be in [0, 1) with data.unit_noise + data.unit_shift < 1, got {self.unit_shift}",
        )
        _check(self.read_layer >= 0, "data.read_layer", f"must be >= 0 (0: the model's output), got {self.read_layer}")
        _check(len(self.tasks) > 0, "data.tasks", "give at least one task")
        _check(len(self.train_splits) > 0, "data.train_splits", "give at least one split")
        _check(
            self.dev_examples_per_task >= 0,
            "data.dev_examples_per_task",
            f"must be >= 0, got {self.dev_examples_per_task}",
        )


@dataclasses.dataclass
class FinetuneAudioPaLMConfig:
    """audiopalm.recipes.finetune_audiopalm: vocabulary-extended LM, full or LoRA, on a weighted task mixture."""

    recipe: str = "finetune_audiopalm"
    """Which recipe this file configures (checked)."""
    model: FinetuneModelConfig = dataclasses.field(default_factory=FinetuneModelConfig)
    """The LM and the audio tokenizer."""
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    """Full fine-tune or LoRA."""
    data: FinetuneDataConfig = dataclasses.field(default_factory=FinetuneDataConfig)
    """Stores and tasks."""
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=50))
    """Optimizer and schedule. ``optim.new_rows_lr`` is not a field: under LoRA with trainable tokens use
    ``optim.group_lrs={trainable_tokens: 1e-3}``; in a full fine-tune ``{embed_tokens: ..., lm_head: ...}``."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(output_dir="runs/finetune_audiopalm"))
    """The loop."""

    def __post_init__(self) -> None:
        _check_recipe_config(self, "finetune_audiopalm")
        _check(
            not (self.lora.enabled and self.train.export_every),
            "train.export_every",
            "is not supported with lora.enabled (the export merges the adapter into the weights being trained); "
            "resume from a checkpoint and let it finish instead",
        )


# ---------------------------------------------------------------------------------------------------------------------
# Speech-Llama: a speech encoder + projector in front of a frozen LLM with LoRA (audiopalm.recipes.finetune_speech_llama)
# ---------------------------------------------------------------------------------------------------------------------

SUPPORTED_TASKS = ("ASR", "AST")
"""Speech-Llama outputs text only: speech recognition and speech translation."""


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
            _check(
                t.upper() in SUPPORTED_TASKS,
                "data.tasks",
                f"Speech-Llama produces text: tasks must be among {SUPPORTED_TASKS}, got {t!r}",
            )
        self.tasks = [t.upper() for t in self.tasks]
        _check(len(set(self.tasks)) == len(self.tasks), "data.tasks", f"a task is repeated: {self.tasks}")
        _check(self.max_seconds > 0, "data.max_seconds", f"must be > 0, got {self.max_seconds}")
        _check(
            self.dev_examples_per_task >= 0,
            "data.dev_examples_per_task",
            f"must be >= 0, got {self.dev_examples_per_task}",
        )


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
    """audiopalm.recipes.finetune_speech_llama: encoder + projector + LoRA on a frozen LLM, ASR and AST."""

    recipe: str = "finetune_speech_llama"
    """Which recipe this file configures (checked)."""
    model: SpeechLlamaConfig = dataclasses.field(
        default_factory=lambda: SpeechLlamaConfig(llm="runs/demo/text_lm/final")
    )
    """The model config itself (:class:`audiopalm.modeling.speech_llama.SpeechLlamaConfig`): the LLM (hub name or
    local folder; frozen, its tokenizer loaded from the same place), the encoder, the projector and LoRA.
    ``ctc_vocab_size`` is set by the recipe (the LLM tokenizer's size when ``ctc.steps`` > 0)."""
    lora: LoraConfig = dataclasses.field(default_factory=lambda: LoraConfig(enabled=True))
    """LoRA on the frozen LLM (the paper: r 8, alpha 16 on q/k/v/o), the same section as finetune_audiopalm's;
    ``enabled: false`` uses the LLM exactly as it is. It sets the model's ``lora_*`` fields, which the saved
    ``speech_llama.json`` records (``new_rows`` does not apply: Speech-Llama adds no vocabulary)."""
    data: SpeechLlamaDataSection = dataclasses.field(default_factory=SpeechLlamaDataSection)
    """Manifests and tasks."""
    ctc: CTCSection = dataclasses.field(default_factory=CTCSection)
    """Optional CTC pre-training of the encoder."""
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=50))
    """Optimizer and schedule of the main loop."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(output_dir="runs/finetune_speech_llama"))
    """The loop."""

    def __post_init__(self) -> None:
        _check(bool(self.model.llm), "model.llm", "must not be empty: a HF causal LM (hub name or local folder)")
        _check_recipe_config(self, "finetune_speech_llama")
        lo, default = self.lora, SpeechLlamaConfig(llm=self.model.llm)
        derived: dict[str, Any] = {}  # model field -> its value from the lora: section
        for field, section_field, value in (
            ("lora_r", "r", lo.r if lo.enabled else 0),
            ("lora_alpha", "alpha", float(lo.alpha)),
            ("lora_dropout", "dropout", float(lo.dropout)),
            ("lora_target_modules", "target_modules", tuple(lo.target_modules)),
        ):
            _check(
                getattr(self.model, field) in (value, getattr(default, field)),  # derived already, or left alone
                f"model.{field}",
                f"set LoRA in the lora: section (lora.{section_field}), not in the model section",
            )
            derived[field] = value
        self.model = dataclasses.replace(self.model, **derived)


# ---------------------------------------------------------------------------------------------------------------------
# The acoustic stage: semantic units + a voice prompt -> codec features (audiopalm.recipes.train_acoustic)
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AcousticDataConfig:
    """Where the pairs come from."""

    manifests: list[str] = dataclasses.field(default_factory=list)
    """Manifests whose ``audio`` files (with their ``speaker``) are the training utterances."""
    stores: list[str] = dataclasses.field(default_factory=list)
    """Instead of ``manifests``: token stores that ``unit_tokenizer`` made (``audiopalm tokenize``; ``--words`` for
    ``model.use_letters``): the units (and word starts) are read from them, only the codec's features are computed
    from their ``audio`` files (the demo's default: its units are in the fine-tune's stores already)."""
    unit_tokenizer: str = ""
    """Folder of the unit tokenizer (any audiopalm tokenizer at the codec's frame rate; its first codebook is
    the unit stream): a ``ctc_units`` or ``semantic`` tokenizer, or a mel_rvq codec for a development run."""
    codec: str = ""
    """Folder of the fitted ``mel_rvq`` codec whose features the stage predicts (saved inside the stage folder)."""
    train_splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Manifest splits to train on."""
    dev_split: str = "dev"
    """Split for the dev L1 (empty: none)."""
    max_utterances: int = 0
    """Use only the first N training files of each manifest (0: all)."""
    max_dev_utterances: int = 100
    """Dev files scored at each evaluation (the first N)."""
    max_frames: int = 150
    """Targets longer than this (frames, 6 s at 25 Hz) are cropped to a random window: bounds batch memory."""
    max_prompt_frames: int = DEFAULT_PROMPT_FRAMES
    """Voice-prompt frames the stage reads (3 s at 25 Hz)."""
    cache_dir: str = ""
    """Where cached units/features go (empty: ``train.output_dir/cache``)."""
    letter_dropout: float = 0.1
    """With ``model.use_letters``: the share of training targets given without their letters (all padding), so
    that the stage also speaks units that come without words."""

    def __post_init__(self) -> None:
        _check(0 <= self.letter_dropout <= 1, "data.letter_dropout", f"must be in [0, 1], got {self.letter_dropout}")
        _check(self.max_utterances >= 0, "data.max_utterances", f"must be >= 0, got {self.max_utterances}")
        _check(self.max_dev_utterances >= 0, "data.max_dev_utterances", f"must be >= 0, got {self.max_dev_utterances}")
        _check(self.max_frames >= 1, "data.max_frames", f"must be >= 1, got {self.max_frames}")
        _check(self.max_prompt_frames >= 1, "data.max_prompt_frames", f"must be >= 1, got {self.max_prompt_frames}")


@dataclasses.dataclass
class TrainAcousticConfig:
    """audiopalm.recipes.train_acoustic: units + voice prompt -> codec features."""

    recipe: str = "train_acoustic"
    """Which recipe this file configures (checked, so a config is never given to the wrong recipe)."""
    model: AcousticConfig = dataclasses.field(default_factory=AcousticConfig)
    """The network (``num_units`` and ``feature_dim`` are taken from the tokenizers, whatever is written here)."""
    data: AcousticDataConfig = dataclasses.field(default_factory=AcousticDataConfig)
    """The pairs."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(output_dir="runs/acoustic"))
    """The loop."""

    def __post_init__(self) -> None:
        _check_recipe_config(self, "train_acoustic")
        # a small conv stack over <= data.max_frames frames: its activations are not what fills memory
        _check(
            not self.train.gradient_checkpointing,
            "train.gradient_checkpointing",
            "not supported by the acoustic stage; lower train.micro_batch_size or data.max_frames instead",
        )


# Recipe name (the YAML's ``recipe:`` key) -> "module:Class". Add a line for a new recipe.
CONFIGS: dict[str, str] = {
    "pretrain_text": "audiopalm.config:PretrainTextConfig",
    "finetune_audiopalm": "audiopalm.config:FinetuneAudioPaLMConfig",
    "finetune_speech_llama": "audiopalm.config:FinetuneSpeechLlamaConfig",
    "train_acoustic": "audiopalm.config:TrainAcousticConfig",
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
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
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
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
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


def _section_default(field: dataclasses.Field) -> Any:  # a dataclass instance or None
    """The default value of a config field whose default is a section (a dataclass instance), else None."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def _from_dict(cls: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}  # (T: a config dataclass)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{key}: unknown key; {hint}known keys here: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key, tp = f"{where}.{name}" if where else name, hints[name]
        default: Any = _section_default(fields[name])
        if isinstance(value, dict) and isinstance(default, tp if isinstance(tp, type) else ()):
            # a partial section sits on top of its field's default (e.g. optim's lr of a recipe), not the class's
            value = {
                f.name: getattr(default, f.name) for f in dataclasses.fields(typing.cast(Any, default)) if f.init
            } | value
        kwargs[name] = _convert(value, tp, key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:  # a model config (e.g. SpeechLlamaConfig) names its field as Class.field: say where
        raise ConfigError(str(e).replace(f"{cls.__name__}.", f"{where}." if where else "")) from None


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:  # an empty file would silently train every default
        raise ConfigError(f"{path}: empty config file; start from a shipped one (e.g. pretrain_text_tiny)")
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


CONFIG_DIR = Path(__file__).resolve().parent / "recipes" / "configs"
"""The shipped configs (package data, :data:`audiopalm.recipes.CONFIG_DIR`): ``--config NAME`` finds
``CONFIG_DIR/NAME.yaml``."""


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``pretrain_text_tiny``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path, recipe: str | None = None) -> Path:
    """A YAML file path, or the shipped config of that name (``finetune_audiopalm_tiny``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = [n for n in shipped_configs() if recipe is None or n.startswith(recipe)]
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    raise ConfigError(
        f"--config {name_or_path}: no such file or shipped config"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f" (shipped: {', '.join(names)})"
    )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_diff(saved: dict, current: dict, *, may_change: tuple[str, ...] | None = None) -> list[str]:
    """``["optim.lr: 0.001 -> 0.002", ...]``: the fields (outside ``may_change``, default
    :data:`RESUME_MAY_CHANGE`) where two config dicts differ."""
    may_change = RESUME_MAY_CHANGE if may_change is None else may_change
    a, b = _flatten(saved), _flatten(current)
    return [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if k not in may_change and a.get(k, "(absent)") != b.get(k, "(absent)")
    ]


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
