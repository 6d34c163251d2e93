"""What the acoustic-stage recipe (:mod:`audiopalm.recipes.train_acoustic`) does that other recipes do not.

Kept here, out of the recipe, so that the recipe (a :class:`~audiopalm.training.recipe.Recipe`) is orchestration
only: :class:`TrainAcousticConfig` (its YAML, registered in :data:`audiopalm.config.CONFIGS`),
:func:`load_tokenizers`, :func:`build_data`, :func:`build_stage`, :func:`l1_errors` / :func:`loss_sums` (the loss
of a batch) and :func:`set_default_voice` (stored in the saved folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from audiopalm.acoustic.data import Batch, Utterances, load_utterances, manifest_utterances
from audiopalm.acoustic.model import AcousticConfig
from audiopalm.acoustic.stage import DEFAULT_PROMPT_FRAMES, AcousticStage
from audiopalm.config import ConfigError, OptimConfig, TrainConfig, _check, _check_recipe_config


@dataclasses.dataclass
class AcousticDataConfig:
    """Where the pairs come from."""

    manifests: list[str] = dataclasses.field(default_factory=list)
    """Manifests whose ``audio`` files (with their ``speaker``) are the training utterances."""
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

    def __post_init__(self) -> None:
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


def load_tokenizers(cfg: TrainAcousticConfig):
    """(unit tokenizer, codec) named by ``cfg.data``; one-line errors when missing or of the wrong kind."""
    from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer

    d = cfg.data
    for field, path in (("data.unit_tokenizer", d.unit_tokenizer), ("data.codec", d.codec)):
        if not path or not (Path(path) / CONFIG_NAME).is_file():
            raise ConfigError(f"{field}: {path!r} is not a saved audiopalm tokenizer folder (no {CONFIG_NAME})")
    units, codec = load_audio_tokenizer(d.unit_tokenizer), load_audio_tokenizer(d.codec)
    if codec.type_name != "mel_rvq":
        raise ConfigError(f"data.codec: {d.codec} is a {codec.type_name!r} tokenizer; the stage needs a mel_rvq codec")
    return units, codec


def build_data(
    cfg: TrainAcousticConfig, unit_tokenizer, codec, *, progress: bool = True
) -> tuple[Utterances, Utterances | None]:
    """(train utterances, dev utterances or None), cached under ``data.cache_dir``."""
    d = cfg.data
    if not d.manifests:
        raise ConfigError("data.manifests: empty; give data.manifests=[path/to/train.jsonl]")
    cache = d.cache_dir or str(Path(cfg.train.output_dir) / "cache")

    def load(splits: list[str], limit: int | None) -> Utterances | None:
        # a manifest may hold only some splits (train.jsonl, dev.jsonl): those without rows here are skipped
        parts = [
            load_utterances(m, splits, unit_tokenizer, codec, cache_dir=cache, limit=limit, progress=progress)
            for m in d.manifests
            if manifest_utterances(m, splits)
        ]
        return (parts[0] if len(parts) == 1 else _concat(parts)) if parts else None

    train = load(d.train_splits, d.max_utterances or None)
    if train is None:
        raise ValueError(f"data.manifests: no rows with audio in splits {d.train_splits} in {d.manifests}")
    dev = load([d.dev_split], d.max_dev_utterances) if d.dev_split and d.max_dev_utterances else None
    return train, dev


def _concat(parts: list[Utterances]) -> Utterances:
    offsets, base = [torch.zeros(1, dtype=torch.long)], 0
    for p in parts:
        offsets.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Utterances(
        [x for p in parts for x in p.paths],
        [x for p in parts for x in p.speakers],
        torch.cat(offsets),
        torch.cat([p.units for p in parts]),
        torch.cat([p.feats for p in parts]),
    )


def build_stage(cfg: TrainAcousticConfig, unit_tokenizer, codec) -> AcousticStage:
    """A fresh stage, initialised from ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    return AcousticStage.build(cfg.model, codec, unit_tokenizer, max_prompt_frames=cfg.data.max_prompt_frames)


def l1_errors(model, batch: Batch) -> torch.Tensor:
    """|predicted - target| in normalised feature units, zero past each length.  # [B, F, D] float32
    ``model`` is the stage's :class:`AcousticModel` (possibly wrapped by accelerate)."""
    pred = model(batch.units, batch.lengths, prompt=batch.prompt, prompt_lengths=batch.prompt_lengths)  # [B, F, D]
    mask = (torch.arange(batch.units.shape[1], device=pred.device)[None] < batch.lengths[:, None]).float()  # [B, F]
    return (pred.float() - batch.feats).abs() * mask[..., None]


def loss_sums(model, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of :func:`l1_errors`  # [], number of terms: valid frames x feature dims)."""
    err = l1_errors(model, batch)  # [B, F, D]
    return err.sum(), int(batch.lengths.sum()) * err.shape[-1]


@torch.no_grad()
def set_default_voice(stage: AcousticStage, utts: Utterances, *, max_utterances: int = 32) -> dict:
    """Store the mean voice embedding of one training speaker (the one with most utterances; ties: the first
    name) as the stage's default voice; returns what ``acoustic.json`` records about it."""
    counts: dict[str, int] = {}
    for s in utts.speakers:
        counts[s] = counts.get(s, 0) + 1
    speaker = sorted(counts, key=lambda s: (-counts[s], s))[0]
    idx = [i for i, s in enumerate(utts.speakers) if s == speaker][:max_utterances]
    info = {"speaker": speaker, "utterances": len(idx)}
    if not stage.config.use_voice:
        return info
    feats = [utts.item(i)[1][: stage.max_prompt_frames] for i in idx]
    lengths = torch.tensor([len(f) for f in feats])
    padded = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        padded[i, : len(f)] = f
    stage.model.eval()
    voice = stage.model.encode_voice(padded, lengths)  # [B, V]
    assert voice is not None, "a default voice is set only for a stage with a voice encoder"
    stage.default_voice.copy_(voice.mean(0))
    stage.default_voice_info = info
    return info
