"""The acoustic network: semantic units + a voice embedding -> stacked log-mel frames (non-autoregressive).

::

    units [B, F] ──embed──▶ [B, F, d] ──L residual blocks (dilated conv, FiLM by the voice)──▶ [B, F, d]
        ──linear──▶ normalised stacked log-mel [B, F, stack * n_mels]   (what mel_rvq.features gives)

    voice prompt features [B, P, stack * n_mels] ──linear, 2 convs──▶ masked mean over P ──▶ voice [B, V]

One unit frame (25 Hz) predicts the ``stack`` 10 ms log-mel frames of the codec's frame (4 by default), so
the output has exactly as many frames as the input and needs no duration model: the units are
frame-aligned (not de-duplicated). Units at a lower rate (12.5 Hz: ``frames_per_unit`` 2) are repeated to the
codec's rate, each copy with a learned row for its place within the unit, before the blocks. The whole sequence
is predicted at once by an L1 regression: units carry what is said; the FiLM from the voice embedding carries who
says it (pitch, formants, rate).

Why convolutions and not attention: mel frames depend mostly on the units within a few hundred
milliseconds; dilations 1, 2, 4, 8 reach ~1.2 s with kernel 3 in 4 blocks, cost O(F) and run far
faster than real time on one CPU core. Padded frames are zeroed before every convolution, so an item
gives the same output in a padded batch as alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn


@dataclasses.dataclass
class AcousticConfig:
    """Sizes of :class:`AcousticModel`. ``num_units`` and ``feature_dim`` come from the unit tokenizer and the
    codec; the rest are choices."""

    num_units: int = 256
    """Codebook size of the unit tokenizer (unit ids are in ``[0, num_units)``; ``num_units`` itself is padding)."""
    feature_dim: int = 320
    """Size of one output frame: the codec's ``stack * n_mels`` (4 x 80 for the default mel_rvq)."""
    hidden_size: int = 128
    """Width d of the unit stack (training cost grows as d^2: 128 fits the demo's 2-3 minutes on 2 cores)."""
    num_blocks: int = 4
    """Residual convolution blocks."""
    kernel_size: int = 3
    """Kernel of each block's convolution (odd, so that the output stays aligned with the units)."""
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    """Dilation of each block's convolution (cycled if shorter than ``num_blocks``); 1, 2, 4, 8 with kernel 3
    see 31 frames (1.2 s at 25 Hz): a few syllables either side."""
    frames_per_unit: int = 1
    """Codec frames per unit: the codec's frame rate over the units' (1 for 25 Hz units, 2 for 12.5 Hz); set by
    :meth:`audiopalm.acoustic.AcousticStage.build` from the two tokenizers."""
    voice_dim: int = 64
    """Size V of the voice embedding."""
    voice_hidden: int = 64
    """Width of the voice encoder's convolutions."""
    use_voice: bool = True
    """Condition on the voice prompt. False: a voice-free model (the floor of the benchmark)."""
    dropout: float = 0.0
    """Dropout inside the blocks (0: the 2-3 minute default budget is far from overfitting)."""
    use_letters: bool = False
    """Also read the letters of the word each unit says (:mod:`audiopalm.acoustic.letters`): speech written word by
    word (``model.output_words``) knows them. Units given without words get no letters (all padding)."""
    letters: tuple[str, ...] = ()
    """The alphabet of the letter input (set by :meth:`audiopalm.acoustic.AcousticStage.build` from the unit
    tokenizer's CTC characters when ``use_letters``)."""
    letter_width: int = 5
    """Letters each unit reads: its own and ``letter_width // 2`` either side (odd)."""
    letter_dim: int = 32
    """Size of one letter's embedding."""
    unit_init: Literal["codebook", "random"] = "codebook"
    """How a fresh model's unit embedding rows start: ``codebook``: from the unit tokenizer's code vectors (for
    ``ctc_units`` the k-means centres in the encoder's state space; PCA, scaled like random rows:
    :func:`audiopalm.modeling.extend.codebook_rows`), so that units the encoder hears alike start alike; or
    ``random`` (normal). With many units each is rarely seen in a short training and starts from its neighbours:
    on the demo's K 2048 units, dev mel L1 0.636 against 0.846 at 600 steps (docs/acoustic_stage.md)."""

    def __post_init__(self):
        def need(ok: bool, field: str, why: str):
            if not ok:
                raise ValueError(f"AcousticConfig.{field} = {getattr(self, field)!r}: {why}")

        self.dilations = tuple(int(d) for d in self.dilations)
        self.letters = tuple(str(c) for c in self.letters)
        names = (
            "num_units",
            "feature_dim",
            "hidden_size",
            "num_blocks",
            "frames_per_unit",
            "voice_dim",
            "voice_hidden",
            "letter_dim",
        )
        for name in names:
            need(getattr(self, name) >= 1, name, "must be >= 1")
        need(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "kernel_size", "must be odd and >= 1")
        need(
            len(self.dilations) >= 1 and min(self.dilations) >= 1, "dilations", "must be a non-empty list of ints >= 1"
        )
        need(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.letter_width >= 1 and self.letter_width % 2 == 1, "letter_width", "must be odd and >= 1")
        need(self.unit_init in ("random", "codebook"), "unit_init", "must be 'random' or 'codebook'")

    @property
    def pad_id(self) -> int:
        """Unit id of padded frames (one past the last real unit)."""
        return self.num_units


def frames_per_unit(unit_rate: float, codec_rate: float) -> int:
    """Codec frames per unit (``codec_rate / unit_rate``); the stage needs a whole number of them."""
    r = codec_rate / unit_rate
    if r < 1 - 1e-6 or abs(r - round(r)) > 1e-6:
        raise ValueError(
            f"units at {unit_rate:g} Hz, codec frames at {codec_rate:g} Hz: the stage makes a whole number of codec "
            "frames of each unit, so the codec's rate must be a multiple of the units'"
        )
    return round(r)


class ConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> FiLM(voice) -> dilated conv -> GELU -> linear, added back."""

    def __init__(self, c: AcousticConfig, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(c.hidden_size)
        self.conv = nn.Conv1d(
            c.hidden_size, c.hidden_size, c.kernel_size, dilation=dilation, padding=dilation * (c.kernel_size - 1) // 2
        )
        self.proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.film = nn.Linear(c.voice_dim, 2 * c.hidden_size) if c.use_voice else None
        self.dropout = nn.Dropout(c.dropout)
        if self.film is not None:  # start as the identity modulation, so the voice is learned as a correction
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, voice: torch.Tensor | None) -> torch.Tensor:
        """``h`` [B, F, d], ``mask`` [B, F, 1] (1 = valid), ``voice`` [B, V] -> [B, F, d]."""
        x = self.norm(h)
        if self.film is not None:
            scale, shift = self.film(voice)[:, None].chunk(2, dim=-1)  # [B, 1, d] each
            x = x * (1 + scale) + shift
        x = self.conv((x * mask).transpose(1, 2)).transpose(1, 2)  # [B, F, d]
        x = self.proj(nn.functional.gelu(x))
        return (h + self.dropout(x)) * mask  # [B, F, d]


class VoiceEncoder(nn.Module):
    """A few seconds of the wanted voice (codec features) -> one embedding, by masked mean pooling."""

    def __init__(self, c: AcousticConfig):
        super().__init__()
        self.inp = nn.Linear(c.feature_dim, c.voice_hidden)
        self.convs = nn.ModuleList([nn.Conv1d(c.voice_hidden, c.voice_hidden, 3, padding=1) for _ in range(2)])
        self.out = nn.Linear(c.voice_hidden, c.voice_dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``feats`` [B, P, feature_dim] normalised codec features, ``lengths`` [B] valid frames -> [B, V]."""
        mask = (torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]).float()[
            ..., None
        ]  # [B, P, 1]
        x = self.inp(feats) * mask  # [B, P, h]
        for conv in self.convs:
            x = (x + nn.functional.gelu(conv(x.transpose(1, 2)).transpose(1, 2))) * mask
        pooled = x.sum(1) / mask.sum(1).clamp_min(1.0)  # [B, h]
        return self.out(pooled)  # [B, V]


class AcousticModel(nn.Module):
    """Units [B, U] + voice embedding [B, V] -> normalised stacked log-mel [B, U * frames_per_unit, feature_dim]."""

    def __init__(self, config: AcousticConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.num_units + 1, c.hidden_size)  # + 1: the padding id
        self.letter_embed = self.letter_proj = None
        if c.use_letters:  # ids: 0 padding, 1 unknown, 2 + i letters[i] (audiopalm.acoustic.letters)
            self.letter_embed = nn.Embedding(len(c.letters) + 2, c.letter_dim)
            self.letter_proj = nn.Linear(c.letter_width * c.letter_dim, c.hidden_size)
        # where a codec frame lies within its unit (only when a unit spans several frames)
        self.phase = nn.Embedding(c.frames_per_unit, c.hidden_size) if c.frames_per_unit > 1 else None
        self.blocks = nn.ModuleList([ConvBlock(c, c.dilations[i % len(c.dilations)]) for i in range(c.num_blocks)])
        self.norm = nn.LayerNorm(c.hidden_size)
        self.head = nn.Linear(c.hidden_size, c.feature_dim)
        self.voice_encoder = VoiceEncoder(c) if c.use_voice else None

    @torch.no_grad()
    def init_unit_rows(self, code_vectors: torch.Tensor) -> None:
        """Start the unit embedding rows at ``code_vectors`` [num_units, D] (the unit tokenizer's code vectors),
        projected and scaled to the rows' current spread (:func:`audiopalm.modeling.extend.codebook_rows`)."""
        from audiopalm.modeling.extend import codebook_rows

        k = self.config.num_units
        if code_vectors.dim() != 2 or code_vectors.shape[0] != k:
            raise ValueError(f"init_unit_rows: expected [{k}, D] code vectors, got {tuple(code_vectors.shape)}")
        rows = self.embed.weight[:k]
        rows.copy_(codebook_rows(code_vectors[None], rows))  # computed from the random rows before they are replaced

    def encode_voice(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        """Prompt features [B, P, feature_dim] + lengths [B] -> voice embedding [B, V] (None without voice)."""
        if self.voice_encoder is None:
            return None
        return self.voice_encoder(feats, lengths)  # [B, V]

    def forward(
        self,
        units: torch.Tensor,
        lengths: torch.Tensor,
        voice: torch.Tensor | None = None,
        *,
        prompt: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        letters: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``units`` [B, U] long, ``lengths`` [B] valid units, ``letters`` [B, U, letter_width] long (the letters of
        each unit's word, :func:`audiopalm.acoustic.letters.letter_windows`; None: none known, all padding; only
        with ``use_letters``), and the voice as an embedding ``voice`` [B, V] or as
        prompt features ``prompt`` [B, P, feature_dim] + ``prompt_lengths`` [B] (neither when ``use_voice`` is
        False) -> predicted features [B, F, feature_dim], F = U * ``frames_per_unit`` (zero past each item's
        ``lengths * frames_per_unit`` frames)."""
        c = self.config
        if voice is None and prompt is not None and c.use_voice:
            assert prompt_lengths is not None, "prompt needs prompt_lengths"
            voice = self.encode_voice(prompt, prompt_lengths)  # inside forward, so DDP sees the encoder used
        assert units.dim() == 2, f"units must be [B, F], got {tuple(units.shape)}"
        if c.use_voice:
            assert voice is not None and voice.shape == (units.shape[0], c.voice_dim), (
                f"voice must be [B={units.shape[0]}, {c.voice_dim}], got {None if voice is None else tuple(voice.shape)}"
            )
        mask = torch.arange(units.shape[1], device=units.device)[None] < lengths[:, None]  # [B, F]
        units = torch.where(mask, units, torch.full_like(units, c.pad_id))
        lo, hi = int(units.min()), int(units.max())
        assert lo >= 0 and hi <= c.pad_id, f"unit ids must be in [0, {c.num_units}), got min {lo} max {hi}"
        h = self.embed(units)  # [B, U, d]
        if self.letter_embed is not None:
            assert self.letter_proj is not None
            if letters is None:
                letters = units.new_zeros(*units.shape, c.letter_width)
            assert letters.shape == (*units.shape, c.letter_width), (
                f"letters must be [B, U, {c.letter_width}] like the units {tuple(units.shape)}, got {tuple(letters.shape)}"
            )
            h = h + self.letter_proj(self.letter_embed(letters).flatten(2))  # [B, U, d]
        else:
            assert letters is None, "letters given to an acoustic model built without use_letters"
        if self.phase is not None:  # [B, U, d] -> [B, U * r, d], each copy marked with its place in the unit
            r = c.frames_per_unit
            h = h.repeat_interleave(r, dim=1) + self.phase.weight.repeat(units.shape[1], 1)[None]
            mask = mask.repeat_interleave(r, dim=1)
        mask = mask.float()[..., None]  # [B, F, 1]
        h = h * mask  # [B, F, d]
        for block in self.blocks:
            h = block(h, mask, voice)
        return self.head(self.norm(h)) * mask  # [B, F, feature_dim]

    def save_pretrained(
        self, directory: str | os.PathLike, *, state_dict: dict | None = None, safe_serialization: bool = True
    ) -> None:
        """``model.safetensors`` + ``acoustic_model.json``: the layout :func:`audiopalm.training.save_checkpoint`
        writes and :func:`audiopalm.training.load_checkpoint` reads for resuming."""
        from safetensors.torch import save_file

        assert safe_serialization, "only safetensors"
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(directory / "model.safetensors"))
        (directory / "acoustic_model.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1) + "\n")
