"""A small character-CTC speech encoder: the source of the ``ctc_units`` semantic tokens and an ASR judge.

::

    wav [B, T] 16 kHz -> LogMel (audiopalm.audio.features, 100 Hz) -> per-utterance mean/var normalisation
        -> two stride-2 Conv1d + GELU (25 Hz) -> sinusoidal positions
        -> N x (pre-norm transformer layer -> convolution module) -> LayerNorm -> Linear over characters + the CTC blank (id 0)

The convolution module after each layer is the Conformer's (Gulati et al. 2020), with a per-frame LayerNorm
where the Conformer has BatchNorm (so a frame's state never depends on what else is in the batch):
LayerNorm -> Linear to 2D -> GLU -> depthwise Conv1d (``conv_kernel``) -> LayerNorm -> SiLU -> Linear, residual.
On the demo corpus it halves the CER at a given training time (docs/semantic_units.md).

AudioPaLM's audio tokens are k-means ids of an ASR-trained encoder's states (USM); this is that
encoder at demo scale. :meth:`SpeechEncoder.transcribe` is greedy CTC (best path, repeats merged,
blanks dropped); :meth:`SpeechEncoder.hidden_states` gives any layer's states for k-means.

Characters: one vocabulary for every language of the training manifest: the lower-cased letters
that occur in its transcripts (accents kept: ``é`` and ``e`` are distinct), space and apostrophe;
every other character (punctuation, digits, hyphens) becomes a space (:func:`normalize_text`).

Training (:func:`train_encoder`) augments on log-mel features computed once per wav, so a step costs
the model only; the augmentations make the encoder hear more voices than the corpus has:

- speed perturbation (factor s in ``speed``): tempo x s by resampling the frame axis, and every
  frequency x s by warping the mel axis: what resampling the waveform does;
- vocal-tract length perturbation (VTLP, Jaitly & Hinton 2013): a further warp of the frequency axis
  by a factor in ``vtlp`` (formants and pitch move, tempo does not);
- additive noise at a random SNR in ``snr_db`` (added in the power domain: ``log(e^x + n)``);
- SpecAugment (Park et al. 2019): ``time_masks`` masks of up to ``time_mask`` frames and
  ``freq_masks`` masks of up to ``freq_mask`` mel bands, set to the utterance mean (0 after the
  normalisation).

``augmentations`` picks which of the four ``augment`` applies (names in :data:`AUGMENTATIONS`).

Saved as ``speech_encoder.json`` (config + characters + training record) and
``speech_encoder.safetensors`` by :meth:`SpeechEncoder.save_pretrained` (atomic: temp + rename).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from audiopalm.audio.features import LogMel, LogMelConfig

CONFIG_NAME = "speech_encoder.json"
WEIGHTS_NAME = "speech_encoder.safetensors"
BLANK = 0
"""CTC blank id; character ``i`` of :attr:`SpeechEncoderConfig.chars` has id ``i + 1``."""
SUBSAMPLING = 4
"""Mel frames per encoder frame: two stride-2 convolutions (100 Hz -> 25 Hz)."""
APOSTROPHES = "'’ʼ`"


def normalize_text(text: str) -> str:
    """Lower-case, NFC, apostrophes unified, every non-letter (but the apostrophe) a space, spaces collapsed."""
    text = unicodedata.normalize("NFC", text.lower())
    out = []
    for ch in text:
        if ch in APOSTROPHES:
            out.append("'")
        elif ch.isalpha():
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def build_chars(texts: Sequence[str]) -> list[str]:
    """The vocabulary of ``texts``: space, apostrophe and every letter of their normalised forms, sorted."""
    letters = {ch for t in texts for ch in normalize_text(t)} - {" ", "'"}
    return [" ", "'"] + sorted(letters)


@dataclasses.dataclass
class SpeechEncoderConfig:
    """Shape of the encoder and its characters."""

    chars: list[str] = dataclasses.field(default_factory=lambda: [" ", "'"] + list("abcdefghijklmnopqrstuvwxyz"))
    """Output characters (id = index + 1; 0 is the CTC blank); see :func:`build_chars`."""
    sample_rate: int = 16000
    """Input sample rate (Hz)."""
    n_mels: int = 80
    """Log-mel bands of the front end (:class:`audiopalm.audio.features.LogMel`, 10 ms hop)."""
    hidden_size: int = 144
    """Width of the convolutions and layers. 144 x 3 layers (1.05 M parameters with the convolution modules)
    trains 400 steps in the demo's few-minute budget on 2 cores; see docs/semantic_units.md for its CER."""
    num_layers: int = 3
    """Pre-norm transformer layers at 25 Hz."""
    num_heads: int = 2
    """Attention heads per layer."""
    ffn_size: int = 576
    """Feed-forward width of each layer (4 x hidden_size)."""
    conv_kernel: int = 7
    """Width (frames, odd) of the depthwise convolution in the module after each transformer layer; 0: no
    convolution modules (a plain transformer encoder)."""
    dropout: float = 0.0
    """Dropout in the transformer layers and convolution modules (training only). Off by default: the demo's
    encoder sees each utterance about once, and dropout slows it down (docs/semantic_units.md)."""

    def __post_init__(self):
        if not self.chars or len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError(f"SpeechEncoderConfig.chars must be distinct single characters, got {self.chars!r}")
        for name in ("sample_rate", "n_mels", "hidden_size", "num_layers", "num_heads", "ffn_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpeechEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"SpeechEncoderConfig.hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}"
            )
        if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
            raise ValueError(f"SpeechEncoderConfig.conv_kernel must be 0 or odd, got {self.conv_kernel}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SpeechEncoderConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def frame_rate(self) -> float:
        """Encoder frames per second (25 at 16 kHz)."""
        return self.sample_rate / LogMelConfig(sample_rate=self.sample_rate).hop_length / SUBSAMPLING


def saved_config(fields: dict) -> SpeechEncoderConfig:
    """The :class:`SpeechEncoderConfig` of a saved encoder's fields. Fields without ``conv_kernel`` were saved before
    the convolution modules existed and describe an encoder without them (``conv_kernel=0``), so older encoders,
    ``ctc_units`` tokenizers and the checkpoints that hold them load as they were trained."""
    return SpeechEncoderConfig(**{"conv_kernel": 0, **fields})


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal positions [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


def _halved(n: torch.Tensor) -> torch.Tensor:
    """Frames after one convolution of kernel 3, stride 2, padding 1."""
    return (n - 1) // 2 + 1


def conv_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames for ``mel_lengths`` [B] mel frames (two convolutions, kernel 3, stride 2, padding 1)."""
    return _halved(_halved(mel_lengths))


def normalize_feats(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance, per-band mean/var normalisation over valid frames: [B, F, M] -> [B, F, M] (0 past lengths).

    Removes the channel and much of the speaker's spectral tilt before the encoder sees it."""
    mask = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # [B, F, 1]
    n = lengths.clamp_min(1).to(feats.dtype)[:, None, None]
    mean = (feats * mask).sum(1, keepdim=True) / n  # [B, 1, M]
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (feats - mean) / (var + 1e-5).sqrt() * mask


class ConvModule(nn.Module):
    """The Conformer convolution module with per-frame LayerNorms; residual. Padding frames are zeroed before the
    depthwise convolution, so no frame hears past its utterance's end."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.mid_norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``x`` [B, F, D], ``pad`` [B, F] (True = padding) -> [B, F, D]."""
        y = nn.functional.glu(self.expand(self.norm(x)), dim=-1).masked_fill(pad[..., None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        return x + self.dropout(self.project(nn.functional.silu(self.mid_norm(y))))


class SpeechEncoder(nn.Module):
    """Log-mel -> 25 Hz transformer -> character CTC. See the module docstring."""

    def __init__(self, config: SpeechEncoderConfig | None = None):
        super().__init__()
        self.config = c = config or SpeechEncoderConfig()
        self.frontend = LogMel(LogMelConfig(sample_rate=c.sample_rate, n_mels=c.n_mels))
        self.conv = nn.Sequential(
            nn.Conv1d(c.n_mels, c.hidden_size, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(c.hidden_size, c.hidden_size, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                c.hidden_size, c.num_heads, c.ffn_size, c.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(c.num_layers)
        )
        self.convs = (
            nn.ModuleList(ConvModule(c.hidden_size, c.conv_kernel, c.dropout) for _ in range(c.num_layers))
            if c.conv_kernel
            else None
        )
        self.norm = nn.LayerNorm(c.hidden_size)
        self.head = nn.Linear(c.hidden_size, len(c.chars) + 1)
        self.record: dict = {}
        """Free-form facts about how this encoder was trained (data, steps, dev CER), saved with it."""

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    def features(
        self, wav: torch.Tensor | Sequence, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] (or a list of [T]) -> normalised log-mel [B, F, n_mels], [B] mel frames."""
        feats, mel_lengths = self.frontend(wav, lengths)
        return normalize_feats(feats, mel_lengths), mel_lengths

    def forward_feats(
        self, feats: torch.Tensor, mel_lengths: torch.Tensor, *, upto: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised log-mel [B, F, M], [B] -> states after the convolutions and after each layer (up to
        layer ``upto``; default all), each [B, F', D], and the frame lengths [B]."""
        x = feats.transpose(1, 2)  # [B, M, F]
        n = mel_lengths.to(x.device)
        for conv in (self.conv[:2], self.conv[2:]):  # zero the frames past each item's end between the two
            x = conv(x.masked_fill(torch.arange(x.shape[2], device=x.device)[None, None, :] >= n[:, None, None], 0.0))
            n = _halved(n)  # so that what pads a batch never reaches an utterance's last frames
        x = x.transpose(1, 2)  # [B, F', D]
        lengths = n.clamp(max=x.shape[1])
        x = x + _sinusoids(x.shape[1], x.shape[2]).to(x)
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]  # [B, F'] True = padding
        states = [x]
        for i in range(len(self.layers) if upto is None else upto):
            x = self.layers[i](x, src_key_padding_mask=pad)
            if self.convs is not None:
                x = self.convs[i](x, pad)
            states.append(x)
        return states, lengths

    def log_probs_from_feats(self, feats: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel [B, F, M], [B] -> CTC log-probs [B, F', chars + 1], frame lengths [B]."""
        states, lengths = self.forward_feats(feats, mel_lengths)
        return self.head(self.norm(states[-1])).log_softmax(-1), lengths

    def hidden_states(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, *, layer: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] -> states of ``layer`` [B, F', D] (0: after the convolutions, i: after transformer
        layer i; default the last) and frame lengths [B]. Frames past an item's length are not meaningful."""
        layer = self.config.num_layers if layer is None else layer
        if not 0 <= layer <= self.config.num_layers:
            raise ValueError(f"layer={layer}: this encoder has layers 0..{self.config.num_layers}")
        feats, mel_lengths = self.features(wav, lengths)
        states, frames = self.forward_feats(feats, mel_lengths, upto=layer)
        return states[layer], frames

    @torch.no_grad()
    def transcribe(
        self,
        wavs: Sequence[np.ndarray | torch.Tensor],
        *,
        batch_size: int = 32,
        lexicon: Sequence[str] | None = None,
    ) -> list[str]:
        """CTC transcripts of mono waveforms [T] at :attr:`config.sample_rate`: greedy, or with ``lexicon`` (a word
        list, e.g. ``self.record["lexicon"][lang]``) a beam search that emits only those words
        (:class:`audiopalm.tokenizers.ctc_decode.LexiconCTCDecoder`)."""
        decoder = None
        if lexicon is not None:
            from audiopalm.tokenizers.ctc_decode import LexiconCTCDecoder

            decoder = LexiconCTCDecoder(self.config.chars, lexicon)
        was_training = self.training
        self.eval()
        out: list[str] = []
        for i in range(0, len(wavs), batch_size):
            feats, mel_lengths = self.features(list(wavs[i : i + batch_size]))
            log_probs, lengths = self.log_probs_from_feats(feats, mel_lengths)
            if decoder is None:
                out += greedy_decode(log_probs, lengths, self.config.chars)
            else:
                out += decoder.decode(log_probs, lengths)
        self.train(was_training)
        return out

    # ---- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``speech_encoder.json`` and ``speech_encoder.safetensors`` into ``directory`` (atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp))
        os.replace(tmp, directory / WEIGHTS_NAME)
        meta = {"config": dataclasses.asdict(self.config), "record": self.record}
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, directory / CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SpeechEncoder:
        """Rebuild from a folder written by :meth:`save_pretrained` (in eval mode)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{directory}: no {CONFIG_NAME}; train one with `audiopalm tokenizer fit-ctc-units` (it saves encoder/)"
            )
        meta = json.loads((directory / CONFIG_NAME).read_text())
        model = cls(saved_config(meta["config"]))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        model.record = meta.get("record", {})
        return model.eval()


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, chars: Sequence[str]) -> list[str]:
    """Best-path CTC: [B, F, C] log-probs, [B] lengths -> B strings (repeats merged, blanks dropped)."""
    out = []
    for row, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), strict=True):
        prev, text = BLANK, []
        for j in row[:n]:
            if j != BLANK and j != prev:
                text.append(chars[j - 1])
            prev = j
        out.append(" ".join("".join(text).split()))
    return out


# ---- training -------------------------------------------------------------------------------------
AUGMENTATIONS = ("speed", "vtlp", "noise", "specaugment")
"""The training augmentations :class:`EncoderTrainConfig` can apply (``augmentations``), in the order applied."""


@dataclasses.dataclass
class EncoderTrainConfig:
    """How :func:`train_encoder` trains a :class:`SpeechEncoder`."""

    steps: int = 400
    """Optimizer steps. On the English-French demo corpus (2 idle cores, the default encoder): dev CER 14.3 after
    400 steps, about one pass over its 12,000 wavs (docs/semantic_units.md)."""
    batch_size: int = 32
    """Utterances per step."""
    lr: float = 4e-3
    """Peak AdamW learning rate (linear warm-up over ``warmup`` steps, then cosine to 5%)."""
    warmup: int = 60
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Fixes initialisation, batch order and augmentation."""
    augment: bool = False
    """Apply the augmentations of ``augmentations``. Off by default (the shipped default; the demo's units use
    the warps, its judge all four: docs/semantic_units.md)."""
    augmentations: tuple[str, ...] = AUGMENTATIONS
    """Which augmentations ``augment`` applies, any of :data:`AUGMENTATIONS`: ``speed`` and ``vtlp`` warp the
    voice, ``noise`` and ``specaugment`` hide parts of it. On the demo corpus at 1200 steps the warps alone halve
    the held-out accent's CER at no cost on the seen voices, where all four cost the seen voices twice their CER
    (docs/semantic_units.md)."""
    speed: tuple[float, float] = (0.9, 1.1)
    """Speed-perturbation factor range (tempo and frequencies together)."""
    vtlp: tuple[float, float] = (0.88, 1.12)
    """Further frequency-warp factor range (formants and pitch, tempo kept)."""
    snr_db: tuple[float, float] = (10.0, 40.0)
    """Additive white-noise SNR range (dB); applied to half the utterances."""
    time_masks: int = 2
    """SpecAugment time masks per utterance."""
    time_mask: int = 10
    """Longest time mask (mel frames)."""
    freq_masks: int = 2
    """SpecAugment frequency masks per utterance."""
    freq_mask: int = 10
    """Widest frequency mask (mel bands)."""
    eval_every: int = 0
    """Score greedy CER on the eval sets every this many steps (0: only at the end)."""
    bf16: bool = False
    """Run the forward pass under CPU / GPU autocast to bfloat16 (weights, optimizer and the CTC loss stay float32).
    On a CPU with AVX512-BF16 (this project's 2-core machine) a step of the demo's encoder takes 0.8 of its float32
    time, at the same dev CER (docs/benchmarks.md); without bf16 hardware it can be slower."""
    bucket: int = 16
    """Batches drawn together from the shuffled utterances and cut by length: each of these ``bucket`` batches
    holds utterances of about one length, so a step pads little (random batches of the demo corpus are 1.6x
    their frames once padded); the batches then run in random order. 1: plain random batches."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup < 0 or self.eval_every < 0:
            raise ValueError(
                f"EncoderTrainConfig: lr > 0, warmup >= 0, eval_every >= 0 needed, got "
                f"{self.lr}, {self.warmup}, {self.eval_every}"
            )
        for name in ("speed", "vtlp", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi or (name != "snr_db" and lo <= 0):
                raise ValueError(f"EncoderTrainConfig.{name} must be a range (lo <= hi, > 0), got {(lo, hi)}")
        self.augmentations = tuple(self.augmentations)
        unknown = sorted(set(self.augmentations) - set(AUGMENTATIONS))
        if unknown or not self.augmentations:
            raise ValueError(
                f"EncoderTrainConfig.augmentations must be a non-empty subset of {', '.join(AUGMENTATIONS)}; "
                f"got {', '.join(self.augmentations) or 'none'}"
            )


def _mel_centres(config: LogMelConfig) -> np.ndarray:
    """Centre frequency (Hz) of each mel band of ``config`` (Slaney scale, as LogMel's filterbank)."""
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    lo = hertz_to_mel(config.f_min, mel_scale="slaney")
    hi = hertz_to_mel(config.f_max or config.sample_rate / 2, mel_scale="slaney")
    return np.asarray(mel_to_hertz(np.linspace(lo, hi, config.n_mels + 2)[1:-1], mel_scale="slaney"))


class Augmenter:
    """Speed / VTLP / noise / SpecAugment on raw log-mel [F, M] (before normalisation). Seeded by a generator."""

    def __init__(self, config: EncoderTrainConfig, mel: LogMelConfig):
        self.c = config
        self.centres = torch.from_numpy(np.asarray(_mel_centres(mel), dtype=np.float32))  # [M]

    def _warp_freq(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        """Scale every frequency by ``alpha``: band m takes the value at frequency centre_m / alpha. [F, M] -> [F, M]"""
        src = self.centres / alpha
        pos = torch.from_numpy(np.interp(src.numpy(), self.centres.numpy(), np.arange(len(self.centres))))
        pos = pos.float().clamp(0, len(self.centres) - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=len(self.centres) - 1)
        w = pos - lo
        out = x[:, lo] * (1 - w) + x[:, hi] * w
        # above the source's top band (alpha < 1) there is no energy to move down: keep the floor level
        return torch.where((src > self.centres[-1])[None, :], x.min(), out)

    def _stretch_time(self, x: torch.Tensor, speed: float) -> torch.Tensor:
        """Tempo x ``speed`` by linear interpolation of the frame axis. [F, M] -> [round(F / speed), M]"""
        n = max(int(round(x.shape[0] / speed)), 1)
        return nn.functional.interpolate(x.t()[None], size=n, mode="linear", align_corners=True)[0].t()

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The waveform-level augmentations of ``config.augmentations`` (speed, VTLP, noise), in that order."""
        c, kinds = self.c, self.c.augmentations

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=g))

        speed = uniform(*c.speed) if "speed" in kinds else 1.0
        if speed != 1.0:
            x = self._stretch_time(x, speed)
        warp = speed * (uniform(*c.vtlp) if "vtlp" in kinds else 1.0)
        if warp != 1.0:
            x = self._warp_freq(x, warp)
        if "noise" in kinds and float(torch.rand((), generator=g)) < 0.5:
            level = x.exp().mean() / 10 ** (uniform(*c.snr_db) / 10)
            noise = level * torch.empty_like(x).exponential_(generator=g)  # power of white noise per bin
            x = (x.exp() + noise).log()
        return x

    def mask(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """SpecAugment on normalised features [F, M] (masked values = 0, the utterance mean)."""
        c = self.c
        x = x.clone()
        f, m = x.shape
        for _ in range(c.time_masks):
            w = int(torch.randint(0, c.time_mask + 1, (), generator=g))
            s = int(torch.randint(0, max(f - w, 1), (), generator=g))
            x[s : s + w] = 0
        for _ in range(c.freq_masks):
            w = int(torch.randint(0, c.freq_mask + 1, (), generator=g))
            s = int(torch.randint(0, max(m - w, 1), (), generator=g))
            x[:, s : s + w] = 0
        return x


def _pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[F_i, M] tensors -> [B, F, M] zero-padded, [B] lengths."""
    lengths = torch.tensor([len(x) for x in items])
    out = torch.zeros(len(items), int(lengths.max()), items[0].shape[1])
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return out, lengths


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate (%) over a corpus (edits / reference characters)."""
    import jiwer

    return 100.0 * jiwer.cer(list(refs), list(hyps))


@torch.no_grad()
def evaluate_feats(model: SpeechEncoder, feats: list[torch.Tensor], texts: list[str], *, batch_size: int = 64) -> dict:
    """Greedy CER / WER (%) of ``model`` on raw log-mel ``feats`` [F, M] with reference ``texts``."""
    import jiwer

    was_training = model.training
    model.eval()
    hyps: list[str] = []
    for i in range(0, len(feats), batch_size):
        x, n = _pad(feats[i : i + batch_size])
        log_probs, lengths = model.log_probs_from_feats(normalize_feats(x, n), n)
        hyps += greedy_decode(log_probs, lengths, model.config.chars)
    model.train(was_training)
    refs = [normalize_text(t) for t in texts]
    return {
        "cer": round(char_error_rate(refs, hyps), 2),
        "wer": round(100.0 * jiwer.wer(refs, hyps), 2),
        "utts": len(refs),
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:2]],
    }


def manifest_utterances(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    speakers: Sequence[str] | None = None,
    exclude_speakers: Sequence[str] = (),
) -> list[tuple[str, str, str, str | None]]:
    """(wav path, transcript, lang, speaker) of every distinct wav of a manifest: each row's ``audio`` with
    ``text`` and ``tgt_audio`` with ``tgt_text``. Filter by ``split`` and by voice: a voice matches a name
    it ends with; the voice is the row's ``speaker`` for its source audio, else the wav's file name after its
    first ``-`` (``s00012-en-v09.wav`` -> ``en-v09``, as ``audiopalm synth`` names them)."""
    from audiopalm.data.manifest import read_manifest

    seen: dict[str, tuple[str, str, str, str | None]] = {}
    for r in read_manifest(path):
        if split is not None and r.split != split:
            continue
        for wav, text, lang, speaker in (
            (r.audio, r.text, r.lang, r.speaker),
            (r.tgt_audio, r.tgt_text, r.tgt_lang, None),
        ):
            if wav is None or text is None or wav in seen:
                continue
            assert lang is not None, (path, wav)  # read_manifest refuses tgt_text/tgt_audio without tgt_lang
            stem = Path(wav).stem
            seen[wav] = (wav, text, lang, speaker or (stem.split("-", 1)[1] if "-" in stem else None))
    out = [
        u
        for u in seen.values()
        if (speakers is None or any(u[3] and u[3].endswith(s) for s in speakers))
        and not any(u[3] and u[3].endswith(s) for s in exclude_speakers)
    ]
    if not out:
        raise ValueError(
            f"{path}: no utterances"
            + (f" in split {split!r}" if split else "")
            + (f" for voices {list(speakers)}" if speakers else "")
        )
    return out


def load_feats(
    paths: Sequence[str], mel: LogMel, *, progress: bool = True, desc: str = "log-mel"
) -> list[torch.Tensor]:
    """Raw log-mel [F, M] of each wav file (resampled to the front end's rate)."""
    from audiopalm.audio import io as audio_io

    out = []
    for p in tqdm(paths, desc=desc, disable=not progress, unit="wav", leave=False):
        wav, _ = audio_io.load(p, mel.config.sample_rate)
        feats, n = mel([wav])
        out.append(feats[0, : int(n[0])])
    return out


def length_batches(
    order: list[int], feats: Sequence[torch.Tensor], config: EncoderTrainConfig, gen: torch.Generator
) -> list[int]:
    """One pass of shuffled utterance ids -> the same ids as consecutive batches of ``config.batch_size``: each
    run of ``config.bucket`` batches is sorted by length (longest first) and cut into batches, whose order is then
    drawn from ``gen``. The ids are kept, only reordered; ``bucket`` 1 returns ``order`` as it is."""
    b, k = config.batch_size, config.bucket
    if k == 1:
        return order
    out: list[int] = []
    for start in range(0, len(order), b * k):
        run = sorted(order[start : start + b * k], key=lambda i: -len(feats[i]))
        batches = [run[j : j + b] for j in range(0, len(run), b)]
        out += [i for j in torch.randperm(len(batches), generator=gen).tolist() for i in batches[j]]
    return out


def train_encoder(
    model: SpeechEncoder,
    feats: list[torch.Tensor],
    texts: list[str],
    config: EncoderTrainConfig,
    *,
    evals: dict[str, tuple[list[torch.Tensor], list[str]]] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` with CTC on raw log-mel ``feats`` [F, M] and their ``texts``; returns the eval curve
    (one dict per evaluation: step, seconds, loss and ``{name: {cer, wer}}`` for each of ``evals``).
    Deterministic for ``config.seed`` (on one thread count)."""
    c = config
    torch.manual_seed(c.seed)
    for p in model.parameters():  # re-initialise from the seed, whatever the model's construction order was
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    char_ids = {ch: i + 1 for i, ch in enumerate(model.config.chars)}
    targets = [
        torch.tensor([char_ids[ch] for ch in normalize_text(t) if ch in char_ids], dtype=torch.long) for t in texts
    ]
    keep = [i for i, t in enumerate(targets) if len(t) and conv_lengths(torch.tensor(len(feats[i]))) >= len(t)]
    if not keep:
        raise ValueError("train_encoder: no utterance has a transcript shorter than its frames")
    aug = Augmenter(c, model.frontend.config)
    gen = torch.Generator().manual_seed(c.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=c.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < c.warmup:
            return (step + 1) / c.warmup
        t = (step - c.warmup) / max(c.steps - c.warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    curve: list[dict] = []
    order: list[int] = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(c.steps), desc="speech encoder", disable=not progress)
    running = None
    for step in bar:
        if len(order) < c.batch_size:
            order += length_batches([keep[i] for i in torch.randperm(len(keep), generator=gen).tolist()], feats, c, gen)
        idx, order = order[: c.batch_size], order[c.batch_size :]
        items = [aug(feats[i], gen) if c.augment else feats[i] for i in idx]
        x, n = _pad(items)
        x = normalize_feats(x, n)
        if c.augment and "specaugment" in c.augmentations:
            x = torch.stack([aug.mask(x[b], gen) for b in range(len(idx))]) * (
                torch.arange(x.shape[1])[None, :, None] < n[:, None, None]
            )
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=c.bf16):
            log_probs, lengths = model.log_probs_from_feats(x, n)
        log_probs = log_probs.float()
        tgt = [targets[i] for i in idx]
        loss = ctc(log_probs.transpose(0, 1), torch.cat(tgt), lengths, torch.tensor([len(t) for t in tgt]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        last = step + 1 == c.steps
        if evals and (last or (c.eval_every and (step + 1) % c.eval_every == 0)):
            point = {"step": step + 1, "seconds": round(time.perf_counter() - t0, 1), "loss": round(running, 4)}
            for name, (ef, et) in evals.items():
                point[name] = evaluate_feats(model, ef, et)
            curve.append(point)
            tqdm.write(
                f"step {step + 1} ({point['seconds']:.0f} s): "
                + ", ".join(f"{name} CER {point[name]['cer']:.1f}" for name in evals)
            )
        elif last:
            curve.append({"step": step + 1, "seconds": round(time.perf_counter() - t0, 1), "loss": round(running, 4)})
    model.eval()
    return curve
