"""The training recipes, shipped in the package with their configs and accelerate configs.

- :mod:`audiopalm.recipes.pretrain_text`: stage 0, a small text LM from scratch (the offline stand-in for a hub LLM);
- :mod:`audiopalm.recipes.finetune_audiopalm`: extend a text LM with audio tokens, fine-tune on a task mixture;
- :mod:`audiopalm.recipes.finetune_speech_llama`: a speech encoder + projector in front of a frozen LLM with LoRA;
- :mod:`audiopalm.recipes.train_acoustic`: the acoustic stage, semantic units + a voice prompt -> codec features.

Each is a :class:`audiopalm.training.recipe.Recipe` subclass; run one with ``audiopalm train RECIPE --config
NAME_OR_PATH [key=value ...]`` or ``accelerate launch --config_file ACCELERATE_YAML -m audiopalm.recipes.RECIPE
--config ...``. ``configs/*.yaml`` are the shipped configs (``--config pretrain_text_tiny``), ``accelerate/*.yaml``
the launcher configs (``audiopalm train --list`` prints their paths).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audiopalm.training.recipe import Recipe

RECIPES: dict[str, str] = {
    "pretrain_text": "audiopalm.recipes.pretrain_text:PretrainTextRecipe",
    "finetune_audiopalm": "audiopalm.recipes.finetune_audiopalm:FinetuneAudioPaLMRecipe",
    "finetune_speech_llama": "audiopalm.recipes.finetune_speech_llama:FinetuneSpeechLlamaRecipe",
    "train_acoustic": "audiopalm.recipes.train_acoustic:TrainAcousticRecipe",
}
"""Recipe name -> ``module:Class``. Add a line (and a config in ``configs/``) for a new recipe."""

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped recipe configs (``NAME.yaml``)."""
ACCELERATE_DIR = Path(__file__).resolve().parent / "accelerate"
"""The shipped accelerate configs: ``cpu.yaml`` (DDP over gloo), ``multi_gpu.yaml``, ``deepspeed_zero2/3.yaml``,
``fsdp.yaml``."""


def recipe_class(name: str) -> type[Recipe]:
    """The :class:`~audiopalm.training.recipe.Recipe` subclass registered under ``name``."""
    if name not in RECIPES:
        from audiopalm.config import ConfigError

        raise ConfigError(f"recipe {name!r}: unknown; choose from {', '.join(RECIPES)}")
    module, cls = RECIPES[name].split(":")
    return getattr(importlib.import_module(module), cls)
