"""Log-mel filterbank features: the input of the continuous speech encoders (Speech-Llama path).

``LogMel(config)(wav [B, T], lengths [B]) -> (feats [B, F, n_mels], feat_lengths [B])``

A short-time Fourier transform (``torch.stft``, Hann window, centred frames: reflected at the start,
zero-padded after the end) and a mel filterbank
(``transformers.audio_utils.mel_filter_bank``, Slaney scale and norm, as librosa and Whisper use).
Two scalings:

- ``"log"``: natural log of the mel power, floored at ``1e-6`` (about -14): the usual ASR fbank.
- ``"whisper"``: what a pretrained Whisper encoder expects: log10, dynamic range limited to 8
  (80 dB) below the utterance's peak, then ``(x + 4) / 4``; the trailing frame is dropped, as Whisper does.
  With the default sizes this equals ``WhisperFeatureExtractor``'s frames (tested).

Each utterance is transformed on its own (a loop over the batch; the STFT is cheap next to the
encoder), so padding never leaks into the features: a batch gives exactly the per-item results.
Frames past an item's length are zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

STYLES = ("log", "whisper")
# Floor of the mel power before the log in the "log" style: about -14 in log units, well below the
# quietest speech frame, so silence does not produce -inf or dominate the feature scale.
LOG_FLOOR = 1e-6


@dataclasses.dataclass
class LogMelConfig:
    """How waveforms become log-mel frames. Defaults: 25 ms windows every 10 ms at 16 kHz, 80 mels."""

    sample_rate: int = 16000
    """Sample rate (Hz) of the input waveforms."""
    n_mels: int = 80
    """Mel bands per frame (80 for Whisper v1/v2 and most ASR encoders, 128 for Whisper large-v3)."""
    n_fft: int = 400
    """FFT size and window length in samples (400 = 25 ms at 16 kHz)."""
    hop_length: int = 160
    """Samples between frames (160 = 10 ms at 16 kHz: 100 frames per second)."""
    f_min: float = 0.0
    """Lowest filterbank frequency (Hz)."""
    f_max: float | None = None
    """Highest filterbank frequency (Hz); None: the Nyquist frequency."""
    style: str = "log"
    """Scaling of the mel power: "log" (natural log, floored) or "whisper" (see the module docstring)."""

    def __post_init__(self):
        if self.sample_rate <= 0:
            raise ValueError(f"LogMelConfig.sample_rate must be > 0, got {self.sample_rate}")
        if self.n_mels <= 0:
            raise ValueError(f"LogMelConfig.n_mels must be > 0, got {self.n_mels}")
        if self.n_fft <= 1 or self.hop_length <= 0:
            raise ValueError(f"LogMelConfig.n_fft must be > 1 and hop_length > 0, got {self.n_fft}, {self.hop_length}")
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= nyquist:
            raise ValueError(
                f"LogMelConfig needs 0 <= f_min < f_max <= sample_rate/2 = {nyquist}, "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        if self.style not in STYLES:
            raise ValueError(f"LogMelConfig.style must be one of {STYLES}, got {self.style!r}")

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        frames = num_samples // self.hop_length + 1  # centred frames
        return max(frames - 1, 1) if self.style == "whisper" else frames


class LogMel(nn.Module):
    """Waveforms -> log-mel frames. No trainable parameters; the filterbank is a buffer."""

    fbank: torch.Tensor  # buffers (register_buffer below), declared for type checkers
    window: torch.Tensor

    def __init__(self, config: LogMelConfig | None = None):
        super().__init__()
        self.config = config = config or LogMelConfig()
        from transformers.audio_utils import mel_filter_bank

        fbank = mel_filter_bank(
            num_frequency_bins=config.n_fft // 2 + 1,
            num_mel_filters=config.n_mels,
            min_frequency=config.f_min,
            max_frequency=config.f_max or config.sample_rate / 2,
            sampling_rate=config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )  # [n_fft/2+1, n_mels]
        self.register_buffer("fbank", torch.from_numpy(np.asarray(fbank, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def _one(self, wav: torch.Tensor) -> torch.Tensor:
        """One waveform [T] -> [F, n_mels]."""
        c = self.config
        half = c.n_fft // 2
        if wav.numel() <= half:  # reflection needs more samples than half a window
            wav = nn.functional.pad(wav, (0, half + 1 - wav.numel()))
        # Centred frames: reflect at the start, zeros after the end (what Whisper sees: audio zero-padded
        # to 30 s). 1 + T // hop frames, as torch.stft(center=True) would give.
        wav = torch.cat([wav[1 : half + 1].flip(0), wav, wav.new_zeros(half)])  # [half + T + half]
        spec = torch.stft(
            wav, c.n_fft, c.hop_length, window=self.window, center=False, return_complex=True
        )  # [n_fft/2+1, F]
        mel = spec.abs().pow(2).transpose(0, 1) @ self.fbank  # [F, n_mels]
        if c.style == "log":
            return mel.clamp(min=LOG_FLOOR).log()
        mel = mel[:-1] if mel.shape[0] > 1 else mel
        x = mel.clamp(min=1e-10).log10()
        x = torch.maximum(x, x.max() - 8.0)
        return (x + 4.0) / 4.0

    @torch.no_grad()
    def forward(
        self, wav: torch.Tensor | Sequence[np.ndarray | torch.Tensor], lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] float (or a list of B mono waveforms), ``lengths`` [B] valid samples (None: all).

        Returns ``feats`` [B, F, n_mels] float32 (zero past each item's length) and ``feat_lengths`` [B] long.
        """
        if isinstance(wav, (list, tuple)):
            items = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in wav]
        else:
            if not isinstance(wav, torch.Tensor):
                raise TypeError(f"LogMel expects a tensor [B, T] or a list of [T], got {type(wav).__name__}")
            if wav.dim() != 2:
                raise ValueError(f"LogMel expects wav [B, T] or a list of [T], got shape {tuple(wav.shape)}")
            if lengths is None:
                lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
            if lengths.shape != (wav.shape[0],) or int(lengths.max()) > wav.shape[1] or int(lengths.min()) <= 0:
                raise ValueError(f"lengths must be [B] in 1..T={wav.shape[1]}, got {lengths.tolist()}")
            items = [wav[i, : int(n)] for i, n in enumerate(lengths.tolist())]
        if not items:
            raise ValueError("LogMel got an empty batch")
        device = self.fbank.device
        out = [self._one(w.to(device=device, dtype=torch.float32)) for w in items]
        feat_lengths = torch.tensor([o.shape[0] for o in out], dtype=torch.long, device=device)
        feats = torch.zeros(len(out), int(feat_lengths.max()), self.config.n_mels, device=device)  # [B, F, n_mels]
        for i, o in enumerate(out):
            feats[i, : o.shape[0]] = o
        return feats, feat_lengths
