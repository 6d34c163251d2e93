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
import re
from pathlib import Path
from typing import Any, TypeVar

import torch

from audiopalm.errors import UserError, check_safetensors

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


def tokenizer_class(type_name: str) -> type[AudioTokenizer]:
    if type_name not in TOKENIZERS:  # (a UserError: it comes from a tokenizer folder's JSON or a config)
        raise UserError(f"unknown audio tokenizer type {type_name!r}; known: {', '.join(TOKENIZERS)}")
    module, cls = TOKENIZERS[type_name].split(":")
    return getattr(importlib.import_module(module), cls)


_Tok = TypeVar("_Tok", bound="AudioTokenizer")


class AudioTokenizer(torch.nn.Module, abc.ABC):
    """Base class of audio tokenizers. Subclasses set :attr:`type_name` and implement the abstract parts."""

    type_name: str = ""
    """Key of this class in :data:`TOKENIZERS`; written into ``audio_tokenizer.json``."""

    loaded_from: str | None = None
    """The saved folder's name (not its path) when :func:`load_audio_tokenizer` read it; None for one built in
    memory. Checkpoints record it as the tokenizer's provenance (:mod:`audiopalm.data.sources`)."""

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

    def unit_characters(self) -> tuple[list[str], torch.Tensor] | None:
        """What each code of the first codebook sounds like, as characters: ``(chars, probs)`` with ``probs``
        ``[C, 1 + len(chars)]`` (code -> P(nothing), then P(each character)), or None where the tokenizer cannot
        say (it was not trained to transcribe). The LM's ``init: letters`` starts its audio rows from them."""
        return None

    # ---- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the weights as safetensors (if there are any), then ``audio_tokenizer.json``, each atomically
        (temp + rename): the JSON, written last, holds the fingerprint that :meth:`from_pretrained` checks."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if state:
            tmp = directory / (WEIGHTS_NAME + ".tmp")
            save_file(state, str(tmp))
            os.replace(tmp, directory / WEIGHTS_NAME)
        meta = {"type": self.type_name, "config": self.get_config(), "fingerprint": self.fingerprint}
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, directory / CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls: type[_Tok], directory: str | os.PathLike) -> _Tok:
        """Rebuild from a folder written by :meth:`save_pretrained`.

        Refuses (:class:`~audiopalm.errors.UserError`) a folder whose weights are missing, truncated or
        changed: the rebuilt tokenizer's fingerprint must equal the one saved beside it."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = read_meta(directory)
        if meta["type"] != cls.type_name:
            raise UserError(f"{directory}: holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        tok = cls(**meta["config"])
        weights = directory / WEIGHTS_NAME
        if weights.is_file():
            check_safetensors(weights)
            tok.load_state_dict(load_file(str(weights)))
        elif tok.state_dict():  # a tokenizer with weights saved them: their absence is a broken folder
            raise UserError(
                f"{directory}: no {WEIGHTS_NAME}; this {cls.type_name} tokenizer has weights: copy the "
                "whole tokenizer folder (or fit it again)"
            )
        verify_fingerprint(directory, meta, tok)
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


def read_meta(directory: str | os.PathLike) -> dict:
    """``audio_tokenizer.json`` of a folder; a missing or unreadable one is a :class:`UserError` naming it."""
    path = Path(directory) / CONFIG_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{directory}: no {CONFIG_NAME}; not a saved audiopalm tokenizer folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e}); save the tokenizer again") from None
    if not isinstance(meta, dict) or "type" not in meta or not isinstance(meta.get("config"), dict):
        raise UserError(f'{path}: expected {{"type": ..., "config": {{...}}}}; save the tokenizer again')
    return meta


def verify_fingerprint(directory: str | os.PathLike, meta: dict, tok: AudioTokenizer) -> None:
    """Refuse a loaded tokenizer whose fingerprint differs from the one its folder recorded at save time
    (weights replaced, truncated or from another fit): codes would silently mean something else."""
    saved = meta.get("fingerprint")
    if saved is not None and saved != tok.fingerprint:
        raise UserError(
            f"{directory}: the weights do not match the saved fingerprint ({tok.fingerprint} != {saved}); "
            "the folder was changed after saving: copy the whole folder again (or fit it again)"
        )


# What a hub repo id looks like (huggingface_hub's rule, simplified): owner/name, word characters, . and -.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# First path parts that are this project's own output folders: such a name is a local path, never a hub id.
LOCAL_PREFIXES = ("runs", "data", "outputs", "generated")


def hub_id_or_local(name: str | os.PathLike, *, what: str = "model") -> str:
    """``"local"`` if ``name`` is an existing folder, ``"hub"`` if it is clearly a hub repo id
    (``owner/name``), else a :class:`UserError`: a name that looks local (``./x``, ``/x``, ``~/x``,
    ``runs/x``, or whose first folder exists here) but is not there, which must never become a hub
    request (it would fetch an unpinned, unrelated repo, or fail offline with a confusing message)."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return "local"
    if path.exists():
        raise UserError(f"{text}: is a file, not a {what} folder")
    first = text.replace("\\", "/").split("/", 1)[0]
    looks_local = (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or first in LOCAL_PREFIXES
        or (first and Path(first).exists())
        or not _HUB_ID_RE.match(text)
        or ".." in text
    )
    if looks_local:
        raise UserError(
            f"{text}: no such {what} folder (it looks like a local path, so it is not fetched from "
            "the Hugging Face hub); check the path, or create it first"
        )
    return "hub"


class UnitTokenizer(AudioTokenizer):
    """One stream of k-means units (K = 1, ``config.num_units`` codes) and no decoder: semantic tokens, which keep
    what is said and drop the voice. An acoustic stage (:mod:`audiopalm.acoustic`) turns them back into sound."""

    config: Any  # a dataclass with a ``num_units`` field

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def codebook_size(self) -> int:
        return self.config.num_units

    @property
    def can_decode(self) -> bool:
        return False

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{self.type_name} units have no decoder (they drop the voice); turn them into sound "
            "with an acoustic stage (audiopalm.acoustic), or use a codec tokenizer"
        )


def load_audio_tokenizer(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs) -> AudioTokenizer:
    """Load any saved audiopalm tokenizer folder, or a neural codec by hub name / HF model folder.

    A name that looks like a local path but does not exist is refused (:func:`hub_id_or_local`); only a
    clear hub id (``facebook/encodec_24khz``) is fetched, at ``revision`` if given (a tag or commit)."""
    path = Path(name_or_path)
    if (path / CONFIG_NAME).is_file():
        meta = read_meta(path)
        cls = tokenizer_class(meta["type"])
        for weights in sorted(path.rglob("*.safetensors")):  # every type's weights, before any loader reads them
            check_safetensors(weights)
        tok = cls.from_pretrained(path)
        # (a classmethod bound to its class has __func__; typeshed types it as a plain callable)
        if cls.from_pretrained.__func__ is not AudioTokenizer.from_pretrained.__func__:  # type: ignore[attr-defined]
            verify_fingerprint(path, meta, tok)  # (the base class's loader checks it itself)
        tok.loaded_from = path.resolve().name  # the folder's name (not its path), for the provenance of checkpoints
        return tok
    kind = hub_id_or_local(name_or_path, what="audio tokenizer")
    if kind == "local" and not (path / "config.json").is_file():
        raise UserError(
            f"{name_or_path}: neither a saved audiopalm tokenizer (no {CONFIG_NAME}) nor a "
            "transformers codec folder (no config.json)"
        )
    # a transformers codec (EnCodec / Mimi / DAC): a hub name or a model folder
    if revision is not None:
        kwargs["revision"] = revision
    codec_cls: Any = tokenizer_class("hf_codec")  # HFCodecTokenizer, whose own constructor is from_codec
    return codec_cls.from_codec(str(name_or_path), **kwargs)
