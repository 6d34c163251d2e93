"""audiopalm: turn a pretrained Hugging Face text LLM into a model that can listen and speak.

The data flow: corpus -> manifest -> token store -> task examples -> packed batches -> train -> checkpoint
-> generate -> eval report. The package is layered (:data:`LAYERS`, lowest first); a module imports only
from its own layer or a lower one (``tests/test_layers.py`` checks every import, module- and function-level)::

    runtime      process settings every command applies first (the C allocator keeps freed memory)
    errors       one-line errors for refused inputs
    audio        audio file I/O, log-mel features
    data         manifests, token stores, vocabulary, tasks, codebook patterns, batching, text tokenizer
    tokenizers   audio tokenizers (codecs, mel-RVQ, semantic units, the CTC speech encoder they build on)
    modeling     growing a causal LM's vocabulary, checkpoints, Speech-Llama
    acoustic     the acoustic stage (semantic units + voice -> sound)
    config       the typed recipe configs
    training     the training loop every recipe subclasses
    inference    constrained generation, the AudioPaLM and Speech-Llama pipelines
    evaluation   metrics, ASR judges, `audiopalm eval`, the report
    recipes      the training recipes and their shipped configs
    commands     the `audiopalm` console script and its subcommands

The short entry points ``from audiopalm import AudioPaLM, SpeechLlamaPipeline`` are imported on first use,
so ``import audiopalm`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The layer order, lowest first: a module of layer i may import modules of layers <= i only. The package root
# (this file) stands above every layer: it only re-exports the public entry points, lazily.
LAYERS: tuple[str, ...] = (
    "audiopalm.runtime",
    "audiopalm.errors",
    "audiopalm.audio",
    "audiopalm.data",
    "audiopalm.tokenizers",
    "audiopalm.modeling",
    "audiopalm.acoustic",
    "audiopalm.config",
    "audiopalm.training",
    "audiopalm.inference",
    "audiopalm.evaluation",
    "audiopalm.recipes",
    "audiopalm.commands",
)

# public name -> the module that defines it
_ENTRY_POINTS = {
    "AudioPaLM": "audiopalm.inference.pipeline",
    "SpeechLlamaPipeline": "audiopalm.inference.speech_llama_pipeline",
}

__all__ = ["AudioPaLM", "LAYERS", "SpeechLlamaPipeline", "__version__"]

if TYPE_CHECKING:
    from audiopalm.inference.pipeline import AudioPaLM
    from audiopalm.inference.speech_llama_pipeline import SpeechLlamaPipeline


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'audiopalm' has no attribute {name!r}")
