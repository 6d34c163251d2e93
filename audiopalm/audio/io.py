"""Audio I/O: the only place in audiopalm where audio files are read or written.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis, ...). Every waveform that leaves
this module is mono float32 in [-1, 1] at the requested rate, validated: a bad file is an
:class:`AudioError` that names the file and what is wrong with it. Refused as bad audio: a missing or
unreadable file, too many channels, NaN/Inf samples, an absurd length, a *truncated* file (its header
promises more audio than the file holds: an interrupted copy or download, which libsndfile would
otherwise read silently as a shorter clip), and a float file whose samples reach beyond
:data:`MAX_FLOAT_PEAK` (a wrong scale, e.g. integer sample values stored as float). A float file that
overshoots [-1, 1] a little (peak in (1, MAX_FLOAT_PEAK], usual after float processing) is scaled down
by its peak, never clipped.

Resampling is libsoxr's "HQ" band-limited resampler (``soxr``): it keeps a tone just above the new
Nyquist frequency below -100 dB, where ``scipy.signal.resample_poly``'s default Kaiser filter let it
through at -14 dB (aliased into the band); we never hand-roll a linear interpolator, which aliases worse.
"""

from __future__ import annotations

import os
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
# A float file peaking above this is on a wrong scale (integer values stored as float, an unnormalised
# mix): refused. Between 1 and this it is float-processing overshoot: scaled down by its peak.
MAX_FLOAT_PEAK = 2.0
# soxr quality recipe: "HQ" (20-bit precision, 95% pass band) is libsoxr's default high quality.
RESAMPLE_QUALITY = "HQ"


class AudioError(ValueError):
    """A waveform or audio file that cannot be used. The message names the file."""


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (libsoxr HQ) along the last axis. ``wav``: [..., T] -> [..., T']."""
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return wav
    import soxr

    wav = np.asarray(wav, dtype=np.float32)
    lead = wav.shape[:-1]
    flat = wav.reshape(-1, wav.shape[-1])  # [N, T]
    out = soxr.resample(np.ascontiguousarray(flat.T), orig_sr, new_sr, quality=RESAMPLE_QUALITY)  # [T', N]
    out = np.asarray(out, dtype=np.float32).reshape(-1, flat.shape[0]).T  # [N, T']
    return np.ascontiguousarray(out).reshape(*lead, out.shape[-1])


def _riff_truncation(head: bytes, size: int) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of a RIFF/WAVE ``data`` chunk whose header promises more than the
    file of ``size`` bytes holds, else None. ``head``: the file's first bytes (chunk headers)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    off = 12
    while off + 8 <= len(head):
        cid, csize = head[off : off + 4], int.from_bytes(head[off + 4 : off + 8], "little")
        if cid == b"data":
            present = size - (off + 8)
            # 0 and 0xFFFFFFFF: a streaming writer's "size unknown"; anything else must be there
            if csize not in (0, 0xFFFFFFFF) and csize > present:
                return csize, present
            return None
        off += 8 + csize + (csize & 1)
    return None


def _check_complete(name: str, head: bytes, size: int, info, frames_read: int) -> None:
    """Refuse a file whose header promises more audio than it holds (libsndfile reads it short, silently)."""
    trunc = _riff_truncation(head, size)
    if trunc is not None:
        declared, present = trunc
        block = info.channels * _bytes_per_sample(info.subtype)  # bytes per frame
        raise AudioError(
            f"{name}: truncated file: its header says {declared // block / info.samplerate:.2f} s of audio "
            f"but it holds {present // block / info.samplerate:.2f} s (an interrupted copy or "
            "download?); re-create or re-download it"
        )
    if info.frames > 0 and frames_read < info.frames:
        raise AudioError(
            f"{name}: truncated file: its header says {info.frames / info.samplerate:.2f} s of audio but "
            f"only {frames_read / info.samplerate:.2f} s could be decoded; re-create or re-download it"
        )


_SAMPLE_BYTES = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
    "ULAW": 1,
    "ALAW": 1,
}


def _bytes_per_sample(subtype: str) -> int:
    """Bytes of one sample of a WAV subtype (compressed subtypes: 1, only used for a message)."""
    return _SAMPLE_BYTES.get(subtype, 1)


def _check_peak(name: str, wav: np.ndarray) -> np.ndarray:
    """Keep the [-1, 1] promise for float files: scale a small overshoot down, refuse a wrong scale."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak <= 1.0:
        return wav
    if peak > MAX_FLOAT_PEAK:
        raise AudioError(
            f"{name}: samples reach {peak:.3g}, far outside [-1, 1]: a float file on a wrong scale "
            "(integer values stored as float?); re-export it normalised to [-1, 1]"
        )
    return wav / np.float32(peak)


def validate(
    wav: np.ndarray,
    sample_rate: int,
    *,
    name: str = "waveform",
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
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


def load(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    max_channels: int = MAX_CHANNELS,
) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 [T], resampled to ``sample_rate`` if given.

    Returns ``(wav, sr)``. Raises :class:`AudioError` naming the file if it is missing, unreadable,
    empty, has NaN/Inf samples, too many channels, or an absurd length.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        with path.open("rb") as f:
            head = f.read(4096)  # chunk headers, for the truncation check
        size = path.stat().st_size
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
    _check_complete(str(path), head, size, info, data.shape[0])
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # [T]
    wav = validate(wav, sr, name=str(path), min_seconds=min_seconds, max_seconds=max_seconds)
    wav = _check_peak(str(path), wav)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, sr


def load_bytes(
    data: bytes,
    sample_rate: int | None = None,
    *,
    name: str = "<bytes>",
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    max_channels: int = MAX_CHANNELS,
) -> tuple[np.ndarray, int]:
    """Like :func:`load`, for an encoded file held in memory (e.g. a datasets ``Audio(decode=False)`` cell)."""
    import io

    try:
        info = sf.info(io.BytesIO(data))
        data_, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:
        raise AudioError(f"{name}: unreadable audio ({e})") from None
    _check_complete(name, data[:4096], len(data), info, data_.shape[0])
    if data_.shape[1] < 1 or data_.shape[1] > max_channels:
        raise AudioError(f"{name}: {data_.shape[1]} channels; expected 1..{max_channels} (mono or stereo)")
    wav = data_.mean(axis=1) if data_.shape[1] > 1 else data_[:, 0]  # [T]
    wav = validate(wav, sr, name=name, min_seconds=min_seconds, max_seconds=max_seconds)
    wav = _check_peak(name, wav)
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding); a truncated WAV is refused here already."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    _check_complete(str(path), head, os.path.getsize(path), info, info.frames)
    return info.frames / info.samplerate


def save(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write a mono waveform [T] (float in [-1, 1]) as 16-bit PCM; the format follows the suffix.
    Atomic (temp file + rename): a killed run never leaves a truncated file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 1.0:  # never write clipped audio silently: scale down
        wav = wav / peak
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # same suffix: same format
    try:
        sf.write(str(tmp), wav, sample_rate, subtype="PCM_16" if path.suffix.lower() == ".wav" else None)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
