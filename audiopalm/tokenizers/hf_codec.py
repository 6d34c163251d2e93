"""Neural audio codecs from transformers (EnCodec, Mimi, DAC) behind the :class:`AudioTokenizer` protocol.

A codec is a convolutional (plus, for Mimi, transformer) auto-encoder whose latent frames are quantised
by residual vector quantisation (SoundStream, arXiv 2107.03312): codebook ``q`` codes what codebooks
``0..q-1`` left over, so the first ``K'`` codebooks of a frame are a coarser version of the same sound.
That is what AudioPaLM's audio tokens are (AudioLM's "acoustic tokens"); the LM reads and writes them.

Supported (by ``config.model_type`` of a hub name or a local HF folder):

========  =====================  ====================================================================
type      how many codebooks      notes
========  =====================  ====================================================================
encodec   ``bandwidth`` (kbps)    24 kHz model (``facebook/encodec_24khz``): 1.5 / 3 / 6 / 12 / 24 kbps
                                  = 2 / 4 / 8 / 16 / 32 codebooks of 1024 at 75 Hz. The 48 kHz model
                                  (chunked, normalised) is refused: its per-chunk scales cannot travel
                                  in a code stream.
mimi      ``num_codebooks``       ``kyutai/mimi``: up to 32 codebooks of 2048 at 12.5 Hz; codebook 0 is
                                  distilled from WavLM (semantic), the rest acoustic.
dac       ``num_codebooks``       ``descript/dac_16khz`` / ``_24khz`` / ``_44khz``: 12 / 32 / 9 codebooks
                                  of 1024.
========  =====================  ====================================================================

Every item is zero-padded to a whole number of frames (``F = ceil(samples / hop_length)``), alone or
in a batch. Causal codecs (EnCodec 24 kHz, Mimi) never look to the right, so what follows an item in
a padded batch cannot change its frames: the batch is encoded in one call. Non-causal codecs (DAC,
EnCodec with ``use_causal_conv=False``) do see it; for them the batch is split into groups of equal
padded length (one call each), so batched results always equal per-item results (at the price of
speed: DAC mostly encodes one file per call).

Saved as ``audio_tokenizer.json`` plus ``codec/`` (the HF model folder: config.json, model.safetensors,
preprocessor_config.json), which ``EncodecModel.from_pretrained(dir / "codec")`` also reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, cast

import torch

from audiopalm.tokenizers.base import CONFIG_NAME, AudioTokenizer

CODEC_DIR = "codec"
"""Sub-folder of a saved tokenizer that holds the transformers model folder."""

# model_type -> (model class name, feature extractor class name) in transformers.
CODECS: dict[str, tuple[str, str]] = {
    "encodec": ("EncodecModel", "EncodecFeatureExtractor"),
    "mimi": ("MimiModel", "EncodecFeatureExtractor"),  # Mimi ships EnCodec's feature extractor
    "dac": ("DacModel", "DacFeatureExtractor"),
}

# Keys of a HF config dict that say where/how it was loaded, not what the model computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "architectures",
    "_attn_implementation_autoset",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
}


def encode_in_equal_length_groups(encode_fn, wav: torch.Tensor, lengths: torch.Tensor):
    """Run ``encode_fn(wav[b, :L])`` once per group of items that share a length ``L``.

    For models whose output near an item's end depends on what follows it (non-causal convolutions,
    group norm over time), this makes a padded batch give exactly the per-item results.
    ``encode_fn`` maps [G, L] -> (codes [G, K, F_L], frame_lengths [G]). Returns codes [B, K, F_max]
    (zero past each item's frames) and frame_lengths [B].
    """
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    idx_by_len: dict[int, list[int]] = {}
    for b, n in enumerate(lengths.tolist()):
        idx_by_len.setdefault(int(n), []).append(b)
    for n, idx in idx_by_len.items():
        codes, frames = encode_fn(wav[idx, :n])  # [G, K, F_n], [G]
        for j, b in enumerate(idx):
            results[b] = (codes[j], frames[j])
    num_frames = max(int(f) for _, f in results.values())
    k = next(iter(results.values()))[0].shape[0]
    out = torch.zeros(len(lengths), k, num_frames, dtype=torch.long, device=wav.device)  # [B, K, F]
    frame_lengths = torch.zeros(len(lengths), dtype=torch.long, device=wav.device)  # [B]
    for b, (codes, f) in results.items():
        out[b, :, : int(f)] = codes[:, : int(f)]
        frame_lengths[b] = f
    return out, frame_lengths


class HFCodecTokenizer(AudioTokenizer):
    """An EnCodec / Mimi / DAC model from transformers as an audio tokenizer.

    Build with :meth:`from_codec` (hub name or HF model folder) or :meth:`from_pretrained` (a folder
    written by :meth:`save_pretrained`); the constructor takes an already-loaded model.
    """

    type_name = "hf_codec"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        bandwidth: float | None = None,
        num_codebooks: int | None = None,
        source: str | None = None,
        feature_extractor=None,
    ):
        """``model``: a loaded ``EncodecModel`` / ``MimiModel`` / ``DacModel``. ``bandwidth`` (EnCodec
        only, kbps, one of ``config.target_bandwidths``; default the largest) or ``num_codebooks``
        (Mimi / DAC; default all) picks how many RVQ codebooks are used. ``source`` is the hub name or
        path it came from (informational). ``feature_extractor`` is saved beside the model if given."""
        super().__init__()
        model_type = getattr(model.config, "model_type", None)
        if model_type not in CODECS:
            raise ValueError(f"unsupported codec model_type {model_type!r}; supported: {', '.join(CODECS)}")
        # EnCodec, Mimi and DAC differ in their attributes and methods: typed by use, not by one class
        self.model: Any = cast(Any, model.eval())
        self.model_type = model_type
        self.source = source
        self.revision: str | None = None
        """The hub commit loaded (set by :meth:`from_codec`; None for a local folder)."""
        self.feature_extractor = feature_extractor
        cfg: Any = model.config
        if model_type == "encodec":
            if num_codebooks is not None:
                raise ValueError(
                    "EnCodec: choose the number of codebooks with bandwidth=..., "
                    f"one of {cfg.target_bandwidths} kbps, not num_codebooks={num_codebooks}"
                )
            if cfg.chunk_length_s is not None or cfg.normalize:
                raise ValueError(
                    f"EnCodec {source or ''}: chunked/normalised models (chunk_length_s="
                    f"{cfg.chunk_length_s}, normalize={cfg.normalize}, e.g. the 48 kHz one) need "
                    "per-chunk scales that a code stream cannot carry; use a 24 kHz EnCodec"
                )
            bandwidth = float(max(cfg.target_bandwidths) if bandwidth is None else bandwidth)
            if bandwidth not in [float(b) for b in cfg.target_bandwidths]:
                raise ValueError(f"EnCodec bandwidth={bandwidth} kbps is not one of {cfg.target_bandwidths}")
            self.bandwidth: float | None = bandwidth
            self._num_codebooks = int(self.model.quantizer.get_num_quantizers_for_bandwidth(bandwidth))
        else:
            if bandwidth is not None:
                raise ValueError(f"{model_type}: bandwidth= is an EnCodec option; use num_codebooks=")
            total = cfg.num_quantizers if model_type == "mimi" else cfg.n_codebooks
            num_codebooks = total if num_codebooks is None else int(num_codebooks)
            low = cfg.num_semantic_quantizers if model_type == "mimi" else 1
            if not low <= num_codebooks <= total:
                raise ValueError(f"{model_type}: num_codebooks={num_codebooks} must be in [{low}, {total}]")
            self.bandwidth = None
            self._num_codebooks = num_codebooks

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_codec(
        cls,
        name_or_path: str | os.PathLike,
        *,
        bandwidth: float | None = None,
        num_codebooks: int | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
    ) -> HFCodecTokenizer:
        """Load a codec by hub name (``facebook/encodec_24khz``, ``kyutai/mimi``, ``descript/dac_16khz``)
        or from a local HF model folder, in float32 and eval mode. ``revision``: a hub tag or commit; the
        commit actually loaded is recorded (``get_config()["revision"]``)."""
        import transformers
        from transformers import AutoConfig

        name = str(name_or_path)
        try:
            config = AutoConfig.from_pretrained(name, revision=revision)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{name}: not an audio tokenizer folder (no {CONFIG_NAME}) and not a loadable transformers codec ({e})"
            ) from None
        if config.model_type not in CODECS:
            raise ValueError(f"{name}: model_type {config.model_type!r} is not a supported codec ({', '.join(CODECS)})")
        model_cls, fe_cls = (getattr(transformers, c) for c in CODECS[config.model_type])
        model = model_cls.from_pretrained(name, dtype=torch.float32, revision=revision)
        try:
            fe = transformers.AutoFeatureExtractor.from_pretrained(name, revision=revision)
        except (OSError, ValueError):  # a bare model folder: make the standard one for this codec
            kwargs = {"feature_size": 1, "sampling_rate": config.sampling_rate}
            if config.model_type == "dac":
                kwargs["hop_length"] = config.hop_length
            fe = fe_cls(**kwargs)
        tok = cls(model, bandwidth=bandwidth, num_codebooks=num_codebooks, source=name, feature_extractor=fe)
        tok.revision = getattr(config, "_commit_hash", None) or revision  # None for a local folder
        return tok.to(device) if device is not None else tok

    copy_weights: bool | None = None
    """Whether :meth:`save_pretrained` copies the codec's weights into ``codec/``. None (default): only when the
    codec is not a hub model pinned to a commit; a pinned hub codec is referenced (id + revision) and fetched at
    load time, so checkpoints do not each carry a copy of a large codec. Set True to copy it anyway."""

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``audio_tokenizer.json`` and, unless the codec is a pinned hub model (:attr:`copy_weights`), the
        HF model folder ``codec/`` (safetensors). No local path is recorded: a local source becomes its name."""
        from audiopalm.data.sources import is_local

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        hub = bool(self.source) and not is_local(self.source) and bool(getattr(self, "revision", None))
        copy = self.copy_weights if self.copy_weights is not None else not hub
        if copy:
            self.model.save_pretrained(directory / CODEC_DIR)
            if self.feature_extractor is not None:
                self.feature_extractor.save_pretrained(directory / CODEC_DIR)
        config = self.get_config()
        if config["source"] and is_local(config["source"]):
            config["source"] = "local:" + Path(str(config["source"])).resolve().name
        meta = {"type": self.type_name, "config": config, "fingerprint": self.fingerprint, "weights_copied": copy}
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, directory / CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> HFCodecTokenizer:
        """Read a folder written by :meth:`save_pretrained`."""
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta["type"] != cls.type_name:
            raise ValueError(f"{directory}: holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        cfg = meta["config"]
        local = (directory / CODEC_DIR).is_dir()
        if not local and not (cfg.get("source") and cfg.get("revision")):
            raise ValueError(f"{directory}: no {CODEC_DIR}/ folder and no hub codec (source + revision) to fetch")
        tok = cls.from_codec(
            directory / CODEC_DIR if local else cfg["source"],
            bandwidth=cfg.get("bandwidth"),
            num_codebooks=None if cfg.get("bandwidth") is not None else cfg.get("num_codebooks"),
            revision=None if local else cfg["revision"],
        )
        tok.source, tok.revision = cfg.get("source"), cfg.get("revision")
        return tok

    def get_config(self) -> dict:
        return {
            "model_type": self.model_type,
            "bandwidth": self.bandwidth,
            "num_codebooks": self._num_codebooks,
            "source": self.source,
            "revision": self.revision,
        }

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the codec's architecture config, the codebook choice and every weight.

        The ``source`` path is left out: the same weights loaded from another folder are the same tokenizer."""
        h = hashlib.sha256()
        arch = {k: v for k, v in self.model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        opts = {k: v for k, v in self.get_config().items() if k not in ("source", "revision")}
        h.update(
            json.dumps({"type": self.type_name, "config": opts, "arch": arch}, sort_keys=True, default=str).encode()
        )
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- what the LM needs to know -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        """Waveform samples per code frame."""
        cfg = self.model.config
        if self.model_type == "mimi":
            return int(cfg.frame_size)
        return int(math.prod(cfg.upsampling_ratios) if self.model_type == "encodec" else cfg.hop_length)

    @property
    def frame_rate(self) -> float:
        if self.model_type == "mimi":
            return float(self.model.config.frame_rate)
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def codebook_size(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def causal(self) -> bool:
        """Whether frames never depend on later samples (then a padded batch is exact in one call)."""
        return self.model_type in ("encodec", "mimi") and bool(self.model.config.use_causal_conv)

    @torch.no_grad()
    def code_vectors(self) -> torch.Tensor:
        """[K, C, D]: each code's vector in the latent the decoder reads (after the quantizer's output
        projection), so that a frame's latent is the sum of its K codes' vectors."""
        q = self.model.quantizer
        if self.model_type == "encodec":
            vectors = [layer.codebook.embed for layer in q.layers[: self._num_codebooks]]
        elif self.model_type == "dac":  # codebook [C, d] -> out_proj (1x1 conv) -> [C, D]
            vectors = [qz.out_proj(qz.codebook.weight.T[None])[0].T for qz in q.quantizers[: self._num_codebooks]]
        else:  # mimi: the semantic codebooks, then the acoustic ones, each group through its output projection
            vectors = []
            for rvq in (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer):
                for layer in rvq.layers:
                    e = layer.codebook.embed.T[None]  # [1, d, C]
                    vectors.append((e if rvq.output_proj is None else rvq.output_proj(e))[0].T)
            vectors = vectors[: self._num_codebooks]
        return torch.stack([v.float() for v in vectors]).detach().clone()

    # ---- the work ----------------------------------------------------------------------------
    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Code frames made from ``lengths`` [B] valid samples -> [B] long: ``ceil(length / hop_length)``,
        since every item is zero-padded to a whole number of frames before encoding."""
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        return (lengths + self.hop_length - 1) // self.hop_length

    @torch.inference_mode()
    def _encode_padded(self, wav: torch.Tensor) -> torch.Tensor:
        """One codec call on [B, T] (T a multiple of :attr:`hop_length`) -> codes [B, K, T / hop_length]."""
        assert wav.shape[-1] % self.hop_length == 0, f"length {wav.shape[-1]} is not a multiple of {self.hop_length}"
        x = wav.unsqueeze(1)  # [B, 1, T]
        if self.model_type == "encodec":
            out = self.model.encode(x, bandwidth=self.bandwidth, return_dict=True)
            codes = out.audio_codes[0]  # [1, B, K, F] -> [B, K, F] (one chunk: chunk_length_s is None)
        elif self.model_type == "mimi":
            codes = self.model.encode(x, num_quantizers=self._num_codebooks, return_dict=True).audio_codes
        else:
            codes = self.model.encode(x, n_quantizers=self._num_codebooks, return_dict=True).audio_codes
            codes = codes[:, : self._num_codebooks]
        expected = wav.shape[-1] // self.hop_length
        assert codes.shape[-1] == expected, (
            f"{self.model_type} made {codes.shape[-1]} frames from {wav.shape[-1]} samples, expected {expected}"
        )
        return codes.long()  # [B, K, F]

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] at :attr:`sample_rate` -> codes [B, K, F] long, frame_lengths [B] long.

        Each item is zero-padded to a whole number of frames (``F_b = ceil(length_b / hop_length)``), so
        the codes of an item do not depend on what it is batched with."""
        if wav.dim() != 2:
            raise ValueError(f"encode expects wav [B, T], got shape {tuple(wav.shape)}")
        device = next(self.model.parameters()).device
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        assert lengths.shape == (wav.shape[0],) and int(lengths.max()) <= wav.shape[1] and int(lengths.min()) > 0, (
            f"lengths {lengths.tolist()} do not fit wav {tuple(wav.shape)}"
        )
        frame_lengths = self.num_frames(lengths)  # [B]
        total = int(frame_lengths.max()) * self.hop_length
        wav = torch.nn.functional.pad(
            wav.to(device=device, dtype=torch.float32)[:, :total], (0, max(0, total - wav.shape[1]))
        )
        mask = torch.arange(total) < lengths[:, None]  # [B, T]: zero the padding, whatever the caller put there
        wav = wav * mask.to(device)

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [G, T] -> [G, K, F], [G]
            return self._encode_padded(x), torch.full((x.shape[0],), x.shape[1] // self.hop_length)

        if not self.causal:
            padded = frame_lengths * self.hop_length  # items that pad to the same length share a call
            return encode_in_equal_length_groups(run, wav, padded)
        codes = self._encode_padded(wav)  # [B, K, F]
        frame_ok = (
            torch.arange(codes.shape[-1], device=codes.device)[None, None, :]
            < frame_lengths.to(codes.device)[:, None, None]
        )
        return codes * frame_ok, frame_lengths.to(codes.device)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` [B, K', F] (K' <= K: the first codebooks) -> waveform [B, F * hop_length]."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_codebooks:
            raise ValueError(
                f"decode expects codes [B, K', F] with 1 <= K' <= {self.num_codebooks}, got shape {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"codes out of range [0, {self.codebook_size}): min {int(codes.min())}, max {int(codes.max())}"
            )
        device = next(self.model.parameters()).device
        codes = codes.to(device=device, dtype=torch.long)
        if self.model_type == "encodec":
            wav = self.model.decode(codes[None], [None], return_dict=True).audio_values  # [B, 1, T]
        elif self.model_type == "mimi":
            wav = self.model.decode(codes, return_dict=True).audio_values  # [B, 1, T]
        else:
            wav = self.model.decode(audio_codes=codes, return_dict=True).audio_values  # [B, T]
        wav = wav.reshape(codes.shape[0], -1).float()  # [B, T]
        return wav[:, : codes.shape[-1] * self.hop_length]
