"""Where a model or an audio tokenizer came from, recorded without local paths: a hub id and revision, or a local
folder's name (with what identifies it, e.g. a fingerprint). Saved folders hold these, never an absolute path, so a
folder copied elsewhere (or pushed to the hub) still says where its parts came from."""

from __future__ import annotations

import os
from pathlib import Path


def is_local(name_or_path: str | os.PathLike | None) -> bool:
    """Whether a model reference is a local folder rather than a hub id (``org/name`` or ``name``)."""
    if not name_or_path:
        return False
    name = str(name_or_path)
    return os.path.isabs(name) or name.startswith((".", "~")) or Path(name).exists() or name.count("/") > 1


def source_of(name_or_path: str | os.PathLike | None, revision: str | None = None, **identity) -> dict | None:
    """Where a model came from, with no local path: ``{"hub_id", "revision"}`` or ``{"local": folder name, **identity}``
    (e.g. ``fingerprint=``)."""
    if not name_or_path:
        return None
    if is_local(name_or_path):
        return {"local": Path(str(name_or_path)).expanduser().resolve().name, **identity}
    return {"hub_id": str(name_or_path), "revision": revision, **identity}


def audio_tokenizer_source(audio_tokenizer) -> dict:
    """Where an audio tokenizer came from: a hub codec's id and revision, else the local folder's name (its
    fingerprint, recorded beside, is what identifies it)."""
    src, rev = getattr(audio_tokenizer, "source", None), getattr(audio_tokenizer, "revision", None)
    if src and not is_local(src):
        return {"hub_id": str(src), "revision": rev}
    name = Path(str(src)).name if src else getattr(audio_tokenizer, "loaded_from", None)
    return {"local": name}
