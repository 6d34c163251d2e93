"""The audio tokenizer protocol that every tokenizer implements, and the registry that picks one.

An audio tokenizer turns a batch of waveforms into K parallel streams of discrete codes (residual-VQ
codebooks for a codec; K = 1 for semantic k-means units) and, where it has a decoder, back::

    codes, frame_lengths = tok.encode(wav, lengths)   # wav [B, T] float -> codes [B, K, F] long, [B]
    wav = tok.decode(codes)                           # [B, K', F] -> [B, T'] (K' <= K: first codebooks)

Tokenizers are saved as a folder holding ``audio_tokenizer.json`` (``{"type": ..., "config": ...}``)
plus whatever weights they need (safetensors only); :func:`load_audio_tokenizer` reads any of them
back, or a hub name of a neural codec. The :attr:`AudioTokenizer.fingerprint` (a hash of config and
weights) is recorded in every token store, so codes are never paired with the wrong tokenizer.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import json
import os
from pathlib import Path

import torch

CONFIG_NAME = "audio_tokenizer.json"
WEIGHTS_NAME = "audio_tokenizer.safetensors"

# type name -> "module:Class". A plain dict registry; classes are imported on first use so that
# loading the built-in codec never imports transformers.
TOKENIZERS: dict[str, str] = {
    "mel_rvq": "audiopalm.tokenizers.mel_rvq:MelRVQTokenizer",
    "hf_codec": "audiopalm.tokenizers.hf_codec:HFCodecTokenizer",
    "semantic": "audiopalm.tokenizers.semantic:SemanticTokenizer",
    "ctc_units": "audiopalm.tokenizers.ctc_units:CTCUnitsTokenizer",
}


def tokenizer_class(type_name: str) -> type["AudioTokenizer"]:
    if type_name not in TOKENIZERS:
        raise KeyError(f"unknown audio tokenizer type {type_name!r}; known: {', '.join(TOKENIZERS)}")
    module, cls = TOKENIZERS[type_name].split(":")
    return getattr(importlib.import_module(module), cls)


class AudioTokenizer(torch.nn.Module, abc.ABC):
    """Base class of audio tokenizers. Subclasses set :attr:`type_name` and implement the abstract parts."""

    type_name: str = ""
    """Key of this class in :data:`TOKENIZERS`; written into ``audio_tokenizer.json``."""

    # ---- what the LM needs to know -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate (Hz) that :meth:`encode` expects and :meth:`decode` returns."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Code frames per second of audio."""

    @property
    @abc.abstractmethod
    def num_codebooks(self) -> int:
        """K: parallel code streams per frame."""

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """Codes per codebook; every code is in ``[0, codebook_size)``."""

    @property
    def can_decode(self) -> bool:
        """Whether :meth:`decode` turns codes back into audio (semantic units cannot)."""
        return True

    # ---- the work ---------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] float at :attr:`sample_rate`, ``lengths`` [B] valid samples (None: all).

        Returns ``codes`` [B, K, F] long and ``frame_lengths`` [B] long (valid frames per item;
        frames past an item's length are padding and must be ignored)."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` [B, K', F] with K' <= K (the first K' codebooks) -> waveform [B, T]."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """JSON-serialisable keyword arguments that rebuild this tokenizer (without weights)."""

    def code_vectors(self) -> torch.Tensor | None:
        """The vector each code stands for, ``[K, C, D]`` (codebook, code, feature), or None where the
        tokenizer has none to offer. The LM's ``init: codebook`` starts its audio rows from them."""
        return None

    # ---- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``audio_tokenizer.json`` and, if there are any, the weights as safetensors."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"type": self.type_name, "config": self.get_config(), "fingerprint": self.fingerprint}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if state:
            save_file(state, str(directory / WEIGHTS_NAME))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "AudioTokenizer":
        """Rebuild from a folder written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta["type"] != cls.type_name:
            raise ValueError(f"{directory}: holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        tok = cls(**meta["config"])
        weights = directory / WEIGHTS_NAME
        if weights.is_file():
            tok.load_state_dict(load_file(str(weights)))
        return tok

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the type, config and every weight tensor, in name order."""
        h = hashlib.sha256()
        h.update(json.dumps({"type": self.type_name, "config": self.get_config()}, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def tokens_per_second(self, num_codebooks: int | None = None) -> float:
        """Sequence-length cost for the LM when K (default: all) codebooks are flattened."""
        return self.frame_rate * (num_codebooks or self.num_codebooks)


def load_audio_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> AudioTokenizer:
    """Load any saved audiopalm tokenizer folder, or a neural codec by hub name / HF model folder."""
    path = Path(name_or_path)
    if (path / CONFIG_NAME).is_file():
        meta = json.loads((path / CONFIG_NAME).read_text())
        return tokenizer_class(meta["type"]).from_pretrained(path)
    # anything else is a transformers codec (EnCodec / Mimi / DAC): a hub name or a model folder
    return tokenizer_class("hf_codec").from_codec(str(name_or_path), **kwargs)
