"""Audio I/O: the only place in audiopalm where audio files are read or written.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis, ...). Every waveform that leaves
this module is mono float32 in [-1, 1] at the requested rate, validated: a bad file is an
:class:`AudioError` that names the file and what is wrong with it.

Resampling is polyphase FIR filtering (``scipy.signal.resample_poly``, Kaiser window), the standard
band-limited method; we never hand-roll a linear interpolator, which aliases.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

# Shortest and longest audio we accept by default. 20 ms is a couple of codec frames; anything
# shorter is a truncated file. One hour is far beyond any training utterance; longer is almost
# certainly a wrong file (a whole recording session) and would exhaust memory later.
MIN_SECONDS = 0.02
MAX_SECONDS = 3600.0
# Mono and stereo are mixed down; a file with more channels is a multi-mic array or a wrong file.
MAX_CHANNELS = 2


class AudioError(ValueError):
    """A waveform or audio file that cannot be used. The message names the file."""


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis. ``wav``: [..., T] -> [..., T']."""
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return wav
    from scipy.signal import resample_poly

    ratio = Fraction(new_sr, orig_sr)
    out = resample_poly(wav, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32, copy=False)


def validate(wav: np.ndarray, sample_rate: int, *, name: str = "waveform",
             min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Check a mono waveform [T]: finite, not empty, of a sane length. Returns it as float32."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected a mono waveform [T], got shape {tuple(wav.shape)}")
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(f"{name}: {bad} NaN/Inf samples")
    seconds = wav.size / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"{name}: too short ({seconds * 1000:.1f} ms < {min_seconds * 1000:.0f} ms)")
    if seconds > max_seconds:
        raise AudioError(f"{name}: too long ({seconds:.0f} s > {max_seconds:.0f} s)")
    return wav


def load(path: str | os.PathLike, sample_rate: int | None = None, *,
         min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
         max_channels: int = MAX_CHANNELS) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 [T], resampled to ``sample_rate`` if given.

    Returns ``(wav, sr)``. Raises :class:`AudioError` naming the file if it is missing, unreadable,
    empty, has NaN/Inf samples, too many channels, or an absurd length.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile's errors are RuntimeError/LibsndfileError
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    if info.channels < 1 or info.channels > max_channels:
        raise AudioError(f"{path}: {info.channels} channels; expected 1..{max_channels} (mono or stereo)")
    if info.frames > 0 and info.frames / info.samplerate > max_seconds:
        # refuse before decoding the whole thing into memory
        raise AudioError(f"{path}: too long ({info.frames / info.samplerate:.0f} s > {max_seconds:.0f} s)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # [T]
    wav = validate(wav, sr, name=str(path), min_seconds=min_seconds, max_seconds=max_seconds)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, sr


def load_bytes(data: bytes, sample_rate: int | None = None, *, name: str = "<bytes>",
               min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
               max_channels: int = MAX_CHANNELS) -> tuple[np.ndarray, int]:
    """Like :func:`load`, for an encoded file held in memory (e.g. a datasets ``Audio(decode=False)`` cell)."""
    import io

    try:
        data_, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:
        raise AudioError(f"{name}: unreadable audio ({e})") from None
    if data_.shape[1] < 1 or data_.shape[1] > max_channels:
        raise AudioError(f"{name}: {data_.shape[1]} channels; expected 1..{max_channels} (mono or stereo)")
    wav = data_.mean(axis=1) if data_.shape[1] > 1 else data_[:, 0]  # [T]
    wav = validate(wav, sr, name=name, min_seconds=min_seconds, max_seconds=max_seconds)
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    return info.frames / info.samplerate


def save(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write a mono waveform [T] (float in [-1, 1]) as 16-bit PCM; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 1.0:  # never write clipped audio silently: scale down
        wav = wav / peak
    sf.write(str(path), wav, sample_rate, subtype="PCM_16" if path.suffix.lower() == ".wav" else None)
    return path

