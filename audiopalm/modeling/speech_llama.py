"""Speech-Llama: a continuous speech encoder and a projector prepended to a frozen causal LM with LoRA.

Fathullah et al., "Prompting Large Language Models with Speech Recognition Abilities", arXiv 2307.11795.
The comparison path to AudioPaLM: instead of discrete audio tokens in an extended vocabulary, the LLM
reads a sequence of audio *embeddings* made by an encoder over log-mel frames::

    wav ─LogMel─▶ feats [B, T, n_mels] ─encoder─▶ [B, T', E] ─stack s frames + MLP─▶ [B, N, D]
    inputs_embeds = [ audio embeddings | "<s>[ASR English]" | target text ]   (loss on the target only)

- Encoder (``SpeechLlamaConfig.encoder``): ``"conformer"`` (transformers' ``Wav2Vec2BertModel``, a
  Conformer over mel frames, built from config at our size), ``"transformer"`` (``torch.nn.TransformerEncoder``),
  ``"hf:<name or path>"``: a pretrained Whisper encoder, or a wav2vec 2.0 / HuBERT / WavLM model
  (these read the raw waveform instead of mel frames; :meth:`SpeechLlama.featurize` gives each its input), or
  ``"units:<folder>"``: the trained encoder of a ``ctc_units`` tokenizer, at the layer its k-means clusters
  (:class:`UnitsSpeechEncoder`: the same encoder AudioPaLM's units come from, before quantisation).
- Projector: ``projector_stride`` consecutive encoder frames are concatenated, then a 2-layer MLP maps
  them to the LLM's hidden size. The paper studies 80 ms to 960 ms of audio per embedding.
- LLM: frozen; LoRA (peft) on the attention projections q/k/v/o only, r=8, alpha=16 as in the paper
  (``lora_r=0``: the LLM as it is, no adapter). Only LoRA, encoder and projector weights train.
- Optional CTC head on the encoder (:meth:`SpeechLlama.ctc_loss`), for pre-training the encoder as the
  paper does before attaching it to the LLM.

A checkpoint folder (:meth:`SpeechLlama.save_pretrained`) holds ``speech_llama.json`` (this config),
``speech_modules.safetensors`` (encoder + projector + CTC head), ``encoder/config.json`` for a HF encoder
(``encoder/units_encoder.json`` for a ``units:`` one),
and ``adapter/`` (peft's LoRA adapter). A hub base LLM is referenced by its id (``config.llm``), not copied; a
local one is copied into ``llm/`` (``copy_base``; the recipe's ``final/``), since its path means nothing on another
machine: ``speech_llama.json`` then says ``"llm": "./llm"``. No absolute path is saved; a folder saved without its
local base (a resumable checkpoint) loads with ``base_model=``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from audiopalm.audio.features import LogMel, LogMelConfig

CONFIG_NAME = "speech_llama.json"
WEIGHTS_NAME = "speech_modules.safetensors"
ADAPTER_DIR = "adapter"
ENCODER_CONFIG_DIR = "encoder"
LLM_DIR = "llm"
"""Sub-folder holding a copy of a local base LLM; ``speech_llama.json`` names it ``./llm``."""
BUILTIN_ENCODERS = ("conformer", "transformer")
UNITS_PREFIX = "units:"
"""``SpeechLlamaConfig.encoder`` prefix naming a ``ctc_units`` tokenizer folder whose encoder is used."""
UNITS_ENCODER_CONFIG = "units_encoder.json"
"""A saved model's ``encoder/`` file that rebuilds a ``units:`` encoder (its weights are in ``WEIGHTS_NAME``)."""
# HF model types that read raw 16 kHz waveforms ("input_values") rather than mel frames.
WAVEFORM_ENCODERS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")


@dataclasses.dataclass
class SpeechLlamaConfig:
    """Everything needed to rebuild a Speech-Llama model around a base LLM. Saved as ``speech_llama.json``."""

    llm: str = ""
    """Base causal LM: hub name or local path. Recorded so :meth:`SpeechLlama.from_pretrained` can reload
    it; may stay empty when the model is always given as ``base_model=``."""
    encoder: str = "conformer"
    """"conformer", "transformer" (small encoders built from this config over log-mel frames),
    "hf:<hub name or path>" (a pretrained Whisper encoder, or wav2vec 2.0 / HuBERT / WavLM via AutoModel), or
    "units:<folder>" (the speech encoder of a ``ctc_units`` tokenizer, ``audiopalm tokenizer fit-ctc-units``: its
    states at the layer the tokenizer clusters, before the k-means; the ``encoder_*`` sizes are then unused)."""
    sample_rate: int = 16000
    """Sample rate of the waveforms :meth:`SpeechLlama.featurize` accepts."""
    n_mels: int = 80
    """Mel bands of the log-mel input (built-in encoders; for Whisper it must equal its ``num_mel_bins``)."""
    encoder_stack: int = 4
    """Built-in encoders: log-mel frames (10 ms each) concatenated into one encoder input frame. 4 makes the
    encoder run at 40 ms per frame, which keeps self-attention cheap on long utterances."""
    encoder_dim: int = 256
    """Built-in encoders: model width."""
    encoder_layers: int = 4
    """Built-in encoders: number of layers."""
    encoder_heads: int = 4
    """Built-in encoders: attention heads (must divide ``encoder_dim``)."""
    encoder_ffn_dim: int = 1024
    """Built-in encoders: feed-forward width."""
    conv_kernel: int = 15
    """Conformer: depthwise convolution kernel size (odd)."""
    encoder_dropout: float = 0.1
    """Built-in encoders: dropout on hidden states and attention."""
    projector_stride: int = 2
    """Encoder frames concatenated into one LLM embedding. With the built-in encoder at 40 ms per frame,
    2 gives 80 ms per embedding (the paper's finest), 24 gives 960 ms (its coarsest)."""
    projector_hidden: int = 0
    """Width of the projector MLP's hidden layer; 0: the LLM's hidden size."""
    lora_r: int = 8
    """LoRA rank (paper: 8). 0: no LoRA, the LLM is used exactly as it is."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (paper: 16); the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch's input."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """LLM module names that get LoRA: the attention projections only, as in the paper (feed-forward,
    embeddings and the output layer stay frozen)."""
    freeze_encoder: bool = False
    """Keep the encoder's weights fixed (e.g. a pretrained HF encoder, or a CTC-pre-trained one)."""
    freeze_projector: bool = False
    """Keep the projector's weights fixed."""
    ctc_vocab_size: int = 0
    """Size of the CTC target vocabulary (e.g. the text tokenizer's, or a character set); the head gets
    one more class, the blank, at index ``ctc_vocab_size``. 0: no CTC head."""

    def __post_init__(self):
        self.lora_target_modules = tuple(self.lora_target_modules)
        if self.encoder not in BUILTIN_ENCODERS and not any(
            self.encoder.startswith(prefix) and len(self.encoder) > len(prefix) for prefix in ("hf:", UNITS_PREFIX)
        ):
            raise ValueError(
                f"SpeechLlamaConfig.encoder must be one of {BUILTIN_ENCODERS}, 'hf:<name or path>' or "
                f"'{UNITS_PREFIX}<ctc_units tokenizer folder>', got {self.encoder!r}"
            )
        for name in (
            "sample_rate",
            "n_mels",
            "encoder_stack",
            "encoder_dim",
            "encoder_layers",
            "encoder_heads",
            "encoder_ffn_dim",
            "conv_kernel",
            "projector_stride",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"SpeechLlamaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(
                f"SpeechLlamaConfig.encoder_heads={self.encoder_heads} must divide encoder_dim={self.encoder_dim}"
            )
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"SpeechLlamaConfig.conv_kernel must be odd, got {self.conv_kernel}")
        if self.projector_stride > 64:
            raise ValueError(
                f"SpeechLlamaConfig.projector_stride={self.projector_stride} is far past ~1 s of audio "
                f"per embedding (the paper's largest); use <= 64"
            )
        for name in ("encoder_dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SpeechLlamaConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("projector_hidden", "lora_r", "ctc_vocab_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"SpeechLlamaConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lora_r > 0 and (self.lora_alpha <= 0 or not self.lora_target_modules):
            raise ValueError(
                f"SpeechLlamaConfig: LoRA needs lora_alpha > 0 and lora_target_modules, got "
                f"{self.lora_alpha}, {self.lora_target_modules}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeechLlamaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SpeechLlamaConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def _copy_hf_folder(src: Path, dst: Path) -> None:
    """Copy a local HF model folder's config, tokenizer and safetensors weights (no pickle files)."""
    import shutil

    if not src.is_dir():
        raise FileNotFoundError(f"{src}: the base LLM folder to copy is missing")
    if not list(src.glob("*.safetensors")):
        raise ValueError(f"{src}: the base LLM has no safetensors weights to copy; re-save it with save_pretrained")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken"):
            shutil.copy2(f, dst / f.name)


# ---- small tensor helpers ----------------------------------------------------------------------


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``lengths`` [B] -> bool mask [B, max_len], True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``stride`` consecutive frames: ``x`` [B, T, D] -> [B, ceil(T/s), s*D], lengths ceil(L/s).

    Frames past an item's length are zeroed first, so an item's last (partial) group is padded with
    zeros exactly as it would be on its own: batched results equal per-item results.
    """
    B, T, D = x.shape
    x = x.masked_fill(~length_mask(lengths, T)[..., None], 0.0)
    if stride == 1:
        return x, lengths
    pad = (-T) % stride
    x = F.pad(x, (0, 0, 0, pad))  # [B, T + pad, D]
    out = x.reshape(B, (T + pad) // stride, stride * D)  # [B, ceil(T/s), s*D]
    return out, (lengths + stride - 1) // stride


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """Fixed sine/cosine position encodings (Vaswani et al. 2017): [length, dim]."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return pe


# ---- encoders: each maps (feats, lengths) -> (hidden [B, T', E], lengths [B]) -----------------


class TransformerSpeechEncoder(nn.Module):
    """Log-mel frames -> stacked frames -> LayerNorm + linear -> sinusoidal positions -> pre-norm Transformer."""

    input_kind = "log_mel"

    def __init__(self, c: SpeechLlamaConfig):
        super().__init__()
        self.stack = c.encoder_stack
        self.output_dim = c.encoder_dim
        # per-frame LayerNorm first: raw log-mel values sit around -14..5; no corpus statistics needed
        self.input_proj = nn.Sequential(
            nn.LayerNorm(c.n_mels * c.encoder_stack), nn.Linear(c.n_mels * c.encoder_stack, c.encoder_dim)
        )
        layer = nn.TransformerEncoderLayer(
            c.encoder_dim,
            c.encoder_heads,
            c.encoder_ffn_dim,
            c.encoder_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, c.encoder_layers, norm=nn.LayerNorm(c.encoder_dim), enable_nested_tensor=False
        )

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = stack_frames(feats, lengths, self.stack)  # [B, T', s*n_mels]
        x = self.input_proj(x)  # [B, T', E]
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        x = self.layers(x, src_key_padding_mask=~length_mask(lengths, x.shape[1]))  # [B, T', E]
        return x, lengths


class ConformerSpeechEncoder(nn.Module):
    """Log-mel frames -> stacked frames -> a Conformer (transformers' ``Wav2Vec2BertModel``, built from config).

    ``Wav2Vec2BertModel`` is the w2v-BERT 2.0 Conformer (relative-position self-attention, depthwise
    convolution module, macaron feed-forwards) over filterbank frames; we build it at our own size with
    random weights, with SpecAugment and layer drop off (train-time randomness belongs to the recipe).
    """

    input_kind = "log_mel"

    def __init__(self, c: SpeechLlamaConfig):
        super().__init__()
        from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

        self.stack = c.encoder_stack
        self.output_dim = c.encoder_dim
        cfg = Wav2Vec2BertConfig(
            hidden_size=c.encoder_dim,
            num_hidden_layers=c.encoder_layers,
            num_attention_heads=c.encoder_heads,
            intermediate_size=c.encoder_ffn_dim,
            feature_projection_input_dim=c.n_mels * c.encoder_stack,
            conv_depthwise_kernel_size=c.conv_kernel,
            hidden_dropout=c.encoder_dropout,
            attention_dropout=c.encoder_dropout,
            conformer_conv_dropout=c.encoder_dropout,
            activation_dropout=0.0,
            feat_proj_dropout=0.0,
            layerdrop=0.0,
            apply_spec_augment=False,
            mask_time_prob=0.0,
            mask_feature_prob=0.0,
            add_adapter=False,
        )
        self.conformer = Wav2Vec2BertModel(cfg)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = stack_frames(feats, lengths, self.stack)  # [B, T', s*n_mels]
        mask = length_mask(lengths, x.shape[1]).long()
        h = self.conformer(input_features=x, attention_mask=mask).last_hidden_state  # [B, T', E]
        return h, lengths


class HFSpeechEncoder(nn.Module):
    """A pretrained Hugging Face speech encoder: Whisper's encoder (log-mel) or a waveform SSL model.

    Whisper's encoder only accepts exactly 30 s of frames (3000), so inputs are zero-padded to that
    and the output trimmed back to each item's length (2x downsampled). Waveform models (wav2vec 2.0,
    HuBERT, WavLM...) get an attention mask only when their feature encoder uses layer norm, which is
    how they were trained (the group-norm ones were trained on unmasked, zero-padded batches).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = cast(Any, model)  # Whisper's encoder or an SSL model: their APIs differ
        cfg = self.model.config
        self.model_type = cfg.model_type
        if self.model_type == "whisper":
            self.input_kind = "log_mel"
            self.output_dim = cfg.d_model
            self.n_mels = cfg.num_mel_bins
            self.max_frames = cfg.max_source_positions * 2  # conv2 has stride 2
        elif self.model_type in WAVEFORM_ENCODERS:
            self.input_kind = "waveform"
            self.output_dim = cfg.hidden_size
            self.use_mask = getattr(cfg, "feat_extract_norm", "layer") == "layer"
        else:
            raise ValueError(
                f"HF encoder type {self.model_type!r} is not supported; use whisper or one of {WAVEFORM_ENCODERS}"
            )

    @classmethod
    def load(cls, name_or_path: str) -> HFSpeechEncoder:
        """Load pretrained weights from the hub or a local folder (never ``trust_remote_code``)."""
        from transformers import AutoConfig, AutoModel, WhisperModel

        cfg = AutoConfig.from_pretrained(name_or_path)
        if cfg.model_type == "whisper":
            return cls(WhisperModel.from_pretrained(name_or_path).get_encoder())
        return cls(AutoModel.from_pretrained(name_or_path))

    @classmethod
    def from_config_dir(cls, path: str | os.PathLike) -> HFSpeechEncoder:
        """Rebuild the architecture (random weights) from a saved ``config.json``; weights are loaded after."""
        from transformers import AutoConfig, AutoModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = AutoConfig.from_pretrained(path)
        if cfg.model_type == "whisper":
            return cls(WhisperEncoder(cfg))
        return cls(AutoModel.from_config(cfg))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model_type == "whisper":
            if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
                raise ValueError(f"Whisper encoder expects log-mel [B, T, {self.n_mels}], got {tuple(feats.shape)}")
            if feats.shape[1] > self.max_frames:
                raise ValueError(f"Whisper encoder takes at most {self.max_frames} frames (30 s), got {feats.shape[1]}")
            # Whisper was trained on audio zero-padded to 30 s, i.e. on frames at the log-mel floor after the
            # speech: pad each item with its own lowest value (its floor, once clamped 80 dB below the peak).
            valid = length_mask(lengths, feats.shape[1])[..., None]  # [B, T, 1]
            floor = feats.masked_fill(~valid, float("inf")).amin(dim=(1, 2))  # [B]
            x = F.pad(feats, (0, 0, 0, self.max_frames - feats.shape[1]))  # [B, 3000, n_mels]
            x = torch.where(length_mask(lengths, self.max_frames)[..., None], x, floor[:, None, None])
            h = self.model(input_features=x.transpose(1, 2)).last_hidden_state  # [B, 1500, E]
            out_lengths = (lengths - 1) // 2 + 1
            return h[:, : int(out_lengths.max())], out_lengths
        wav = feats.squeeze(-1) if feats.dim() == 3 else feats  # [B, T]
        mask = length_mask(lengths, wav.shape[1])
        wav = wav.masked_fill(~mask, 0.0)
        h = self.model(input_values=wav, attention_mask=mask.long() if self.use_mask else None).last_hidden_state
        out_lengths = self.model._get_feat_extract_output_lengths(lengths).long()
        return h, out_lengths  # [B, T', E], [B]


class UnitsSpeechEncoder(nn.Module):
    """The speech encoder of a ``ctc_units`` tokenizer, its states where the tokenizer's k-means reads them.

    Log-mel -> the encoder's per-utterance normalisation, convolutions (25 Hz) and layers up to the clustered one
    -> states standardised with the k-means' mean and std: the continuous twin of the units that AudioPaLM's
    extended vocabulary reads (same encoder, same frames, no quantisation), so that Speech-Llama on these states
    and AudioPaLM on their units compare the two ways of giving an LLM speech with everything else equal.
    """

    input_kind = "log_mel"
    stack = 4
    """Log-mel frames (10 ms) per state: the encoder's two stride-2 convolutions."""
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, layer: int):
        super().__init__()
        from audiopalm.tokenizers.speech_encoder import SUBSAMPLING, SpeechEncoder

        if not isinstance(encoder, SpeechEncoder):
            raise TypeError(f"UnitsSpeechEncoder wraps a SpeechEncoder, got {type(encoder).__name__}")
        if not 0 <= layer <= encoder.config.num_layers:
            raise ValueError(f"layer={layer}: the encoder has layers 0..{encoder.config.num_layers}")
        assert SUBSAMPLING == self.stack, SUBSAMPLING
        self.encoder = encoder
        self.layer = layer
        self.output_dim = encoder.config.hidden_size
        self.n_mels = encoder.config.n_mels
        self.sample_rate = encoder.config.sample_rate
        self.register_buffer("mean", torch.zeros(self.output_dim))  # [D]
        self.register_buffer("std", torch.ones(self.output_dim))  # [D]

    @classmethod
    def from_tokenizer(cls, folder: str | os.PathLike) -> UnitsSpeechEncoder:
        """The encoder, layer and standardisation of the ``ctc_units`` tokenizer saved in ``folder``."""
        from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer
        from audiopalm.tokenizers.ctc_units import CTCUnitsTokenizer

        if not (Path(folder) / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{folder}: not an audio tokenizer folder (no {CONFIG_NAME}); make a ctc_units one with "
                "`audiopalm tokenizer fit-ctc-units`"
            )
        tok = load_audio_tokenizer(folder)
        if not isinstance(tok, CTCUnitsTokenizer):
            raise ValueError(f"{folder}: a {tok.type_name} tokenizer; units: needs a ctc_units one (fit-ctc-units)")
        enc = cls(tok.encoder, int(tok.config.layer or 0))
        enc.mean.copy_(tok.mean)
        enc.std.copy_(tok.std)
        return enc

    def save_config(self, directory: str | os.PathLike) -> None:
        """Write what :meth:`from_config_dir` rebuilds the architecture from (the weights go with the model's)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"config": dataclasses.asdict(self.encoder.config), "layer": self.layer}
        (directory / UNITS_ENCODER_CONFIG).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_config_dir(cls, directory: str | os.PathLike) -> UnitsSpeechEncoder:
        """The architecture saved by :meth:`save_config`, with untrained weights (the caller loads them)."""
        from audiopalm.tokenizers.speech_encoder import SpeechEncoder, saved_config

        meta = json.loads((Path(directory) / UNITS_ENCODER_CONFIG).read_text())
        return cls(SpeechEncoder(saved_config(meta["config"])), int(meta["layer"]))

    def train(self, mode: bool = True) -> UnitsSpeechEncoder:
        super().train(mode)
        if not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()  # a frozen encoder computes what its units were made from (no dropout)
        return self

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from audiopalm.tokenizers.speech_encoder import normalize_feats

        states, frames = self.encoder.forward_feats(normalize_feats(feats, lengths), lengths, upto=self.layer)
        return (states[self.layer] - self.mean) / self.std, frames  # [B, T', D], [B]


def build_encoder(c: SpeechLlamaConfig, saved_dir: str | os.PathLike | None = None) -> nn.Module:
    """The encoder named by ``c.encoder``. ``saved_dir``: rebuild a HF or ``units:`` encoder from its saved config."""
    if c.encoder == "conformer":
        return ConformerSpeechEncoder(c)
    if c.encoder == "transformer":
        return TransformerSpeechEncoder(c)
    if c.encoder.startswith(UNITS_PREFIX):
        if saved_dir is not None:
            return UnitsSpeechEncoder.from_config_dir(saved_dir)
        return UnitsSpeechEncoder.from_tokenizer(c.encoder[len(UNITS_PREFIX) :])
    if saved_dir is not None:
        return HFSpeechEncoder.from_config_dir(saved_dir)
    return HFSpeechEncoder.load(c.encoder[3:])


class Projector(nn.Module):
    """Stack ``stride`` encoder frames, then Linear -> GELU -> Linear to the LLM's hidden size."""

    def __init__(self, in_dim: int, stride: int, hidden: int, out_dim: int):
        super().__init__()
        self.stride = stride
        self.mlp = nn.Sequential(nn.Linear(in_dim * stride, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = stack_frames(h, lengths, self.stride)  # [B, N, s*E]
        return self.mlp(x), lengths  # [B, N, D]

    @property
    def first_weight(self) -> torch.Tensor:
        """The first layer's weight: the device and dtype the speech modules are on."""
        first = self.mlp[0]
        assert isinstance(first, nn.Linear), first
        return first.weight


# ---- the model ----------------------------------------------------------------------------------


@dataclasses.dataclass
class SpeechLlamaOutput:
    """What :meth:`SpeechLlama.forward` returns. Sequence positions are [audio | text | right padding]."""

    loss: torch.Tensor | None
    """Mean cross-entropy over target tokens (None without labels)."""
    logits: torch.Tensor
    """[B, S, V] next-token logits at every position."""
    attention_mask: torch.Tensor
    """[B, S] 1 on audio and text positions, 0 on padding."""
    labels: torch.Tensor | None
    """[B, S] the labels given to the LLM (-100 on audio, prompt and padding)."""
    audio_lengths: torch.Tensor
    """[B] audio embeddings per item (the first ``audio_lengths[i]`` positions of item i)."""


class SpeechLlama(nn.Module):
    """Encoder + projector + frozen causal LM (with LoRA). See the module docstring.

    Build with ``SpeechLlama(config, llm)`` (``llm``: a loaded ``PreTrainedModel``) or
    ``SpeechLlama.from_config(config, base_model=...)``; reload with :meth:`from_pretrained`.
    """

    def __init__(self, config: SpeechLlamaConfig, llm: nn.Module, *, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        # one of the encoder classes above (build_encoder): they share input_kind / output_dim, not a base class
        self.encoder: Any = cast(Any, encoder if encoder is not None else build_encoder(config))
        if (
            config.encoder.startswith("hf:")
            and self.encoder.input_kind == "log_mel"
            and self.encoder.n_mels != config.n_mels
        ):
            raise ValueError(
                f"SpeechLlamaConfig.n_mels={config.n_mels} but the Whisper encoder "
                f"{config.encoder!r} takes {self.encoder.n_mels} mel bands"
            )
        if isinstance(self.encoder, UnitsSpeechEncoder) and (
            self.encoder.n_mels != config.n_mels or self.encoder.sample_rate != config.sample_rate
        ):
            raise ValueError(
                f"SpeechLlamaConfig n_mels={config.n_mels}, sample_rate={config.sample_rate} but the encoder of "
                f"{config.encoder!r} takes {self.encoder.n_mels} mel bands at {self.encoder.sample_rate} Hz"
            )
        llm_dim = int(cast(Any, llm).config.hidden_size)
        self.projector = Projector(
            self.encoder.output_dim, config.projector_stride, config.projector_hidden or llm_dim, llm_dim
        )
        self.ctc_head = nn.Linear(self.encoder.output_dim, config.ctc_vocab_size + 1) if config.ctc_vocab_size else None

        for p in llm.parameters():  # the base LLM never trains; peft then adds trainable LoRA weights
            p.requires_grad_(False)
        if config.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                # peft types lora_alpha as int; it only scales (alpha / r), so a float alpha is used as given
                lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            llm = get_peft_model(llm, lora)
        self.llm: Any = cast(Any, llm)  # the causal LM, or the peft model around it
        self.encoder.requires_grad_(not config.freeze_encoder)
        self.projector.requires_grad_(not config.freeze_projector)
        if isinstance(self.encoder, HFSpeechEncoder) and self.encoder.model_type == "whisper":
            self.encoder.model.embed_positions.requires_grad_(False)  # fixed sinusoids in Whisper
        feat_cfg = LogMelConfig(
            sample_rate=config.sample_rate,
            n_mels=config.n_mels,
            style="whisper" if getattr(self.encoder, "model_type", "") == "whisper" else "log",
        )
        self.log_mel = LogMel(feat_cfg) if self.encoder.input_kind == "log_mel" else None

    # ---- building and saving ----------------------------------------------------------------
    @staticmethod
    def _load_llm(base_model: str | nn.Module | None, config: SpeechLlamaConfig, dtype) -> nn.Module:
        if isinstance(base_model, nn.Module):
            return base_model
        name = base_model or config.llm
        if not name:
            raise ValueError("no base LLM: pass base_model= (a model or a hub name/path) or set SpeechLlamaConfig.llm")
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype)

    @classmethod
    def from_config(
        cls,
        config: SpeechLlamaConfig,
        base_model: str | nn.Module | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> SpeechLlama:
        """A new model: loads the base LLM (``base_model`` or ``config.llm``) and builds the encoder
        (pretrained for ``hf:``, random for the built-in ones), the projector and LoRA (random/zero)."""
        if isinstance(base_model, str) and not config.llm:
            config = dataclasses.replace(config, llm=base_model)
        return cls(config, cls._load_llm(base_model, config, dtype))

    def _speech_modules(self) -> nn.ModuleDict:
        mods = {"encoder": self.encoder, "projector": self.projector}
        if self.ctc_head is not None:
            mods["ctc_head"] = self.ctc_head
        return nn.ModuleDict(mods)

    def save_pretrained(
        self,
        save_dir: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        *,
        copy_base: bool | None = None,
    ) -> Path:
        """Write config json, encoder/projector/CTC weights (safetensors), a HF encoder's config and the
        LoRA adapter (peft, safetensors). A hub base LLM is referenced by ``config.llm``; a local one is copied
        into ``llm/`` unless ``copy_base=False`` (then only its folder name is recorded).

        ``state_dict``: this model's full state dict when the parameters themselves cannot be saved (DeepSpeed:
        ZeRO-3 shards them, ZeRO-2 makes them views of one flat buffer); ``accelerator.get_state_dict`` gives it."""
        from safetensors.torch import save_file, save_model

        from audiopalm.data.sources import is_local

        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        llm = self.config.llm
        if llm and is_local(llm):  # never an absolute path: a copy in llm/, or just the folder's name
            if copy_base is None or copy_base:
                _copy_hf_folder(Path(llm), save_dir / LLM_DIR)
                llm = f"./{LLM_DIR}"
            else:
                llm = f"local:{Path(llm).resolve().name}"
        cfg = {**self.config.to_dict(), "llm": llm}
        tmp = save_dir / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        os.replace(tmp, save_dir / CONFIG_NAME)
        if state_dict is None:
            save_model(self._speech_modules(), str(save_dir / WEIGHTS_NAME))
        else:
            speech = self._speech_modules()
            save_file(
                {
                    k: v.detach().cpu().contiguous().clone()
                    for k, v in state_dict.items()
                    if k.split(".", 1)[0] in speech
                },
                str(save_dir / WEIGHTS_NAME),
            )
        if isinstance(self.encoder, HFSpeechEncoder):
            self.encoder.model.config.save_pretrained(save_dir / ENCODER_CONFIG_DIR)
        elif isinstance(self.encoder, UnitsSpeechEncoder):
            self.encoder.save_config(save_dir / ENCODER_CONFIG_DIR)
        if self.config.lora_r > 0:
            llm_state = (
                None
                if state_dict is None
                else {k[len("llm.") :]: v for k, v in state_dict.items() if k.startswith("llm.")}
            )
            self.llm.save_pretrained(save_dir / ADAPTER_DIR, safe_serialization=True, state_dict=llm_state)
            from audiopalm.modeling.adapter import set_adapter_base

            set_adapter_base(save_dir / ADAPTER_DIR, f"../{LLM_DIR}" if llm == f"./{LLM_DIR}" else llm)
        return save_dir

    @classmethod
    def from_pretrained(
        cls,
        save_dir: str | os.PathLike,
        base_model: str | nn.Module | None = None,
        dtype: torch.dtype | str | None = None,
        is_trainable: bool = False,
    ) -> SpeechLlama:
        """Rebuild a model saved by :meth:`save_pretrained` on ``base_model`` (default: ``config.llm``).

        ``is_trainable``: LoRA, encoder and projector trainable as configured (to continue training);
        default: an inference model in eval mode with no trainable parameters.
        """
        from safetensors.torch import load_model

        save_dir = Path(save_dir)
        cfg_path = save_dir / CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path}: not a Speech-Llama checkpoint (no {CONFIG_NAME})")
        try:
            config = SpeechLlamaConfig.from_dict(json.loads(cfg_path.read_text()))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{cfg_path}: {e}") from None
        if config.llm == f"./{LLM_DIR}":  # the copy of a local base inside the folder
            config = dataclasses.replace(config, llm=str((save_dir / LLM_DIR).resolve()))
        elif config.llm.startswith("local:") and base_model is None:
            raise ValueError(
                f"{cfg_path}: its base LLM was the local folder {config.llm[6:]!r}, not saved with it; "
                "pass base_model= (that folder, or the model)"
            )
        llm = cls._load_llm(base_model, config, dtype)
        enc_dir = save_dir / ENCODER_CONFIG_DIR
        encoder = build_encoder(config, saved_dir=enc_dir if enc_dir.is_dir() else None)
        model = cls(dataclasses.replace(config, lora_r=0), llm, encoder=encoder)  # LoRA attached below
        model.config = config
        if config.lora_r > 0:
            from peft import PeftModel

            model.llm = PeftModel.from_pretrained(llm, str(save_dir / ADAPTER_DIR), is_trainable=is_trainable)
        load_model(model._speech_modules(), str(save_dir / WEIGHTS_NAME), strict=True)
        if not is_trainable:  # an inference model, like transformers' from_pretrained: eval mode, no grads
            model.requires_grad_(False)
            model.eval()
        return model

    # ---- parameters -------------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        """Number of parameters that require grad (LoRA + encoder + projector + CTC head)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by part: ``llm`` (all LLM weights, LoRA included), ``lora``, ``encoder``,
        ``projector``, ``ctc_head``, ``trainable``."""
        lora = sum(p.numel() for n, p in self.llm.named_parameters() if "lora_" in n)
        return {
            "llm": sum(p.numel() for p in self.llm.parameters()),
            "lora": lora,
            "encoder": sum(p.numel() for p in self.encoder.parameters()),
            "projector": sum(p.numel() for p in self.projector.parameters()),
            "ctc_head": sum(p.numel() for p in self.ctc_head.parameters()) if self.ctc_head is not None else 0,
            "trainable": self.trainable_parameters(),
        }

    # ---- audio --------------------------------------------------------------------------------
    @property
    def seconds_per_embedding(self) -> float:
        """Audio behind one LLM input embedding (s): encoder frame period x ``projector_stride``.
        The paper's study spans 0.08 s to 0.96 s."""
        enc, c = self.encoder, self.config
        if isinstance(enc, HFSpeechEncoder) and enc.model_type != "whisper":
            frame = math.prod(enc.model.config.conv_stride) / c.sample_rate
        else:
            assert self.log_mel is not None, "a log-mel encoder has its front end"
            hop = self.log_mel.config.hop_length / c.sample_rate
            frame = hop * (2 if isinstance(enc, HFSpeechEncoder) else enc.stack)
        return frame * c.projector_stride

    @property
    def input_kind(self) -> str:
        """ "log_mel" or "waveform": what :meth:`encode_audio` takes (see :meth:`featurize`)."""
        return self.encoder.input_kind

    def featurize(
        self, wav: torch.Tensor | Sequence, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms at ``config.sample_rate`` (``wav`` [B, T] + ``lengths`` [B], or a list of [T]) -> the
        encoder's input: log-mel ``[B, F, n_mels]`` or, for waveform encoders, the zero-mean unit-variance
        waveform ``[B, T]`` (what their feature extractors do); plus lengths [B]."""
        if self.log_mel is not None:
            self.log_mel.to(self.projector.first_weight.device)
            return self.log_mel(wav, lengths)
        if isinstance(wav, (list, tuple)):
            items = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in wav]
        else:
            if not isinstance(wav, torch.Tensor):
                raise TypeError(f"featurize expects a tensor [B, T] or a list of [T], got {type(wav).__name__}")
            n = lengths.tolist() if lengths is not None else [wav.shape[1]] * wav.shape[0]
            items = [wav[i, : int(k)].float() for i, k in enumerate(n)]
        items = [(w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7) for w in items]
        out_lengths = torch.tensor([w.numel() for w in items], dtype=torch.long)
        out = torch.zeros(len(items), int(out_lengths.max()))  # [B, T]
        for i, w in enumerate(items):
            out[i, : w.numel()] = w
        return out, out_lengths

    def encode_audio(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` [B, T, n_mels] (or [B, T] waveform), ``feat_lengths`` [B] -> audio embeddings
        ``emb`` [B, N, D] (D: the LLM's hidden size, zero past each length) and ``emb_lengths`` [B]."""
        if (
            feats.shape[0] != feat_lengths.shape[0]
            or int(feat_lengths.min()) < 1
            or int(feat_lengths.max()) > feats.shape[1]
        ):
            raise ValueError(f"feat_lengths {feat_lengths.tolist()} do not fit feats {tuple(feats.shape)}")
        w = self.projector.first_weight  # the speech modules' device and dtype (e.g. after .to(bfloat16))
        h, lengths = self.encoder(feats.to(w.device, w.dtype), feat_lengths.to(w.device))  # [B, T', E]
        emb, emb_lengths = self.projector(h, lengths)  # [B, N, D]
        emb = emb.masked_fill(~length_mask(emb_lengths, emb.shape[1])[..., None], 0.0)
        return emb, emb_lengths

    def ctc_loss(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """CTC loss of the encoder's head (pre-training): ``targets`` [B, U] ids in ``[0, ctc_vocab_size)``,
        ``target_lengths`` [B]. Mean over the batch of per-item loss divided by target length."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head: set SpeechLlamaConfig.ctc_vocab_size > 0")
        vocab = self.config.ctc_vocab_size
        valid = length_mask(target_lengths, targets.shape[1]) if targets.dim() == 2 else None
        if valid is not None and targets.numel() and ((targets[valid] < 0) | (targets[valid] >= vocab)).any():
            raise ValueError(
                f"CTC targets must be in [0, {vocab}), got min {int(targets[valid].min())} "
                f"max {int(targets[valid].max())}"
            )
        dev = self.ctc_head.weight.device
        h, lengths = self.encoder(feats.to(dev, self.ctc_head.weight.dtype), feat_lengths.to(dev))  # [B, T', E]
        log_probs = self.ctc_head(h).float().log_softmax(-1)  # [B, T', vocab + 1]
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets.to(dev),
            lengths,
            target_lengths.to(dev),
            blank=vocab,
            reduction="mean",
            zero_infinity=True,
        )

    # ---- the LLM side -------------------------------------------------------------------------
    def _merge(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        left_pad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per item, concatenate its audio embeddings and its (unpadded) text tokens, then pad the batch.

        ``input_ids`` may be left- or right-padded: an item's text is its tokens where ``attention_mask`` is 1,
        in order. Returns ``embeds`` [B, S, D], ``mask`` [B, S], ``labels`` [B, S] (or None) and
        ``position_ids`` [B, S] (0 at each item's first real position).
        """
        B, N, D = audio.shape
        dev = audio.device
        input_ids = input_ids.to(dev)
        text_mask = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.to(dev).bool()
        )
        if input_ids.shape[0] != B:
            raise ValueError(f"input_ids has batch {input_ids.shape[0]} but the audio has {B}")
        text_lengths = text_mask.sum(1)  # [B]
        total = audio_lengths + text_lengths  # [B]
        S = int(total.max())
        offset = (S - total) if left_pad else torch.zeros_like(total)  # [B] padding before each item
        embed_layer = self.llm.get_input_embeddings()
        text_emb = embed_layer(input_ids.masked_fill(~text_mask, 0))  # [B, L, D]

        rows = torch.arange(B, device=dev)[:, None]
        a_valid = length_mask(audio_lengths, N)  # [B, N]
        a_pos = offset[:, None] + torch.arange(N, device=dev)[None, :]  # [B, N]
        t_pos = offset[:, None] + audio_lengths[:, None] + text_mask.long().cumsum(1) - 1  # [B, L]
        embeds = torch.zeros(B, S, D, dtype=text_emb.dtype, device=dev)  # [B, S, D]
        embeds[rows.expand(B, N)[a_valid], a_pos[a_valid]] = audio[a_valid].to(text_emb.dtype)
        L = input_ids.shape[1]
        embeds[rows.expand(B, L)[text_mask], t_pos[text_mask]] = text_emb[text_mask]
        mask = length_mask(total, S)  # right-padded layout
        if left_pad:
            mask = mask.flip(1)
        position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)  # [B, S]
        full_labels = None
        if labels is not None:
            labels = labels.to(dev)
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
                )
            full_labels = torch.full((B, S), -100, dtype=torch.long, device=dev)
            full_labels[rows.expand(B, L)[text_mask], t_pos[text_mask]] = labels[text_mask]
        return embeds, mask.long(), full_labels, position_ids

    def forward(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **llm_kwargs,
    ) -> SpeechLlamaOutput:
        """Teacher-forced pass. ``feats`` [B, T, n_mels], ``feat_lengths`` [B]; ``input_ids`` [B, L] the
        task-tagged prompt followed by the target (e.g. ``<s>[ASR English] the cat sat</s>``), padded either
        side, ``attention_mask`` [B, L]; ``labels`` [B, L] = the target ids, -100 on prompt and padding.
        Extra ``llm_kwargs`` go to the LLM (e.g. ``num_items_in_batch`` for gradient accumulation)."""
        audio, audio_lengths = self.encode_audio(feats, feat_lengths)  # [B, N, D]
        embeds, mask, full_labels, pos = self._merge(
            audio, audio_lengths, input_ids, attention_mask, labels, left_pad=False
        )
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=pos,
            labels=full_labels,
            use_cache=False,
            **llm_kwargs,
        )
        return SpeechLlamaOutput(
            loss=out.loss, logits=out.logits, attention_mask=mask, labels=full_labels, audio_lengths=audio_lengths
        )

    @torch.no_grad()
    def generate(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        **gen_kwargs,
    ) -> torch.Tensor:
        """Decode text after [audio | prompt] with the LLM's ``generate`` (KV cache; greedy unless
        ``gen_kwargs`` say otherwise). ``prompt_ids`` [B, L] (either padding side, ``prompt_mask`` [B, L]).
        Returns the new token ids only, [B, L_new], padded with the pad (or eos) id after eos."""
        audio, audio_lengths = self.encode_audio(feats, feat_lengths)  # [B, N, D]
        embeds, mask, _, _ = self._merge(audio, audio_lengths, prompt_ids, prompt_mask, None, left_pad=True)
        gen_cfg = self.llm.generation_config
        gen_kwargs.setdefault("use_cache", True)
        gen_kwargs.setdefault("do_sample", False)
        if gen_kwargs.get("pad_token_id") is None and gen_cfg.pad_token_id is None:
            eos = gen_kwargs.get("eos_token_id", gen_cfg.eos_token_id)
            gen_kwargs["pad_token_id"] = eos[0] if isinstance(eos, (list, tuple)) else eos
        return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, **gen_kwargs)  # [B, L_new]


def encode_text(
    tokenizer, prompts: Sequence[str], targets: Sequence[str] | None = None, add_eos: bool = True
) -> dict[str, torch.Tensor]:
    """Tokenize task prompts (and targets) for :class:`SpeechLlama`.

    With ``targets`` (training): ``input_ids`` = prompt (with the tokenizer's special tokens, e.g. BOS) +
    target + eos, right-padded; ``labels`` = the target and eos ids, -100 elsewhere. Without (generation):
    the prompts, left-padded. Returns ``input_ids`` [B, L], ``attention_mask`` [B, L] and maybe ``labels``.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    if targets is not None and len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    rows, label_rows = [], []
    for i, prompt in enumerate(prompts):
        p = tokenizer(prompt)["input_ids"]
        t = [] if targets is None else tokenizer(targets[i], add_special_tokens=False)["input_ids"]
        if targets is not None and add_eos:
            if tokenizer.eos_token_id is None:
                raise ValueError("add_eos=True but the tokenizer has no eos token")
            t = t + [tokenizer.eos_token_id]
        rows.append(p + t)
        label_rows.append([-100] * len(p) + t)
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    labels = torch.full((len(rows), L), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        sl = slice(L - len(r), L) if targets is None else slice(0, len(r))
        ids[i, sl], mask[i, sl], labels[i, sl] = torch.tensor(r), 1, torch.tensor(lab)
    out = {"input_ids": ids, "attention_mask": mask}
    if targets is not None:
        out["labels"] = labels
    return out
