"""Semantic units: k-means cluster ids of speech features, one codebook (K = 1), no decoder.

HuBERT (arXiv 2106.07447) learns speech representations by predicting cluster ids of masked frames;
its first iteration clusters MFCC features with k-means, later iterations cluster a hidden layer of
the previous model. AudioLM calls such ids "semantic tokens" (w2v-BERT layer + k-means). This
tokenizer makes either:

- ``features="mfcc"``: 13 MFCCs (HTK mel filters, log, DCT-II) with first and second time
  derivatives, 39 dims per frame: HuBERT iteration 0. No weights beyond the fitted statistics.
- ``features="ssl"``: hidden layer ``layer`` of a self-supervised speech model from transformers
  (``HubertModel``, ``Wav2Vec2Model``, ``Wav2Vec2BertModel``; any ``AutoModel`` with
  ``output_hidden_states``) by hub name or local path, e.g. layer 6 of ``facebook/hubert-base-ls960``.

Frames are standardised with the fitted per-dimension mean/std, then mapped to the nearest of
``num_units`` centres fitted by k-means++ / Lloyd (:mod:`audiopalm.tokenizers.kmeans`).

Semantic units keep what is said, and lose the voice and much of the prosody: there is no decoder,
so :meth:`SemanticTokenizer.decode` raises. Use them as an input representation (ASR/AST) and a
codec (``hf_codec`` / ``mel_rvq``) for speech output.

Saved as ``audio_tokenizer.json`` + ``audio_tokenizer.safetensors`` (centres, mean, std) and, for
``ssl``, the model and its feature extractor in ``ssl/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from audiopalm.tokenizers.base import CONFIG_NAME, WEIGHTS_NAME, UnitTokenizer

SSL_DIR = "ssl"
"""Sub-folder of a saved tokenizer holding the transformers SSL model and its feature extractor."""

FEATURES = ("mfcc", "ssl")


@dataclasses.dataclass
class SemanticConfig:
    """What the units are computed from and how many there are."""

    features: str = "mfcc"
    """``"mfcc"`` (HuBERT iteration 0) or ``"ssl"`` (a hidden layer of ``ssl_model``)."""
    ssl_model: str | None = None
    """Hub name or local folder of the SSL model (``features="ssl"`` only)."""
    layer: int = 6
    """Which ``hidden_states`` entry of the SSL model (0 = the input of the first transformer layer)."""
    num_units: int = 100
    """k: cluster centres, i.e. the codebook size (HuBERT used 100 for MFCC, 500 for later iterations)."""
    sample_rate: int = 16000
    """Sample rate (Hz) the features are computed at; for ``ssl`` it must be the feature extractor's."""
    n_mfcc: int = 13
    """Cepstral coefficients per frame (``mfcc``)."""
    n_mels: int = 40
    """Mel filters before the DCT (``mfcc``)."""
    n_fft: int = 512
    """FFT size (``mfcc``); at least ``win_length``."""
    win_length: int = 400
    """Analysis window in samples (``mfcc``): 25 ms at 16 kHz, the usual MFCC window."""
    hop_length: int = 320
    """Samples between frames (``mfcc``): 20 ms at 16 kHz = 50 Hz, the frame rate of HuBERT's
    transformer, so MFCC and SSL units cost the LM the same sequence length."""
    deltas: bool = True
    """Append first and second time derivatives (window 2), as HuBERT's 39-dim MFCCs do."""

    def __post_init__(self):
        if self.features not in FEATURES:
            raise ValueError(f"features={self.features!r}: expected one of {FEATURES}")
        if self.features == "ssl" and not self.ssl_model:
            raise ValueError("features='ssl' needs ssl_model= (a hub name or a local model folder)")
        if self.features == "mfcc" and self.ssl_model:
            raise ValueError(f"ssl_model={self.ssl_model!r} given with features='mfcc'; use features='ssl'")
        for name in ("num_units", "sample_rate", "n_mfcc", "n_mels", "n_fft", "win_length", "hop_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.layer < 0:
            raise ValueError(f"layer={self.layer} must be >= 0")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} must be <= n_fft={self.n_fft}")


def add_deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over time, edges repeated: [F, D] -> [F, D] (HTK's formula)."""
    f = x.shape[0]
    padded = torch.cat([x[:1].expand(width, -1), x, x[-1:].expand(width, -1)])  # [F + 2w, D]
    num = sum(
        (n * (padded[width + n : width + n + f] - padded[width - n : width - n + f]) for n in range(1, width + 1)),
        torch.zeros_like(x),
    )
    return num / (2 * sum(n * n for n in range(1, width + 1)))  # [F, D]


class SemanticTokenizer(UnitTokenizer):
    """k-means units over MFCC or SSL features. Fit with :meth:`fit` before encoding."""

    type_name = "semantic"
    # buffers (register_buffer below), declared so that type checkers see tensors, not Module attributes
    mel_fb: torch.Tensor
    dct: torch.Tensor
    window: torch.Tensor
    centroids: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, **config):
        super().__init__()
        self.config = SemanticConfig(**config)
        c = self.config
        self.ssl: Any = None  # any transformers speech encoder (HuBERT, wav2vec 2.0, w2v-BERT...)
        self.feature_extractor: Any = None
        if c.features == "ssl":
            from transformers import AutoFeatureExtractor, AutoModel

            self.ssl = AutoModel.from_pretrained(c.ssl_model, dtype=torch.float32).eval()
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(c.ssl_model)
            fe_sr = int(self.feature_extractor.sampling_rate)
            if fe_sr != c.sample_rate:
                raise ValueError(
                    f"{c.ssl_model}: feature extractor expects {fe_sr} Hz but sample_rate={c.sample_rate}; "
                    f"pass sample_rate={fe_sr}"
                )
            n_layers = self.ssl.config.num_hidden_layers
            if c.layer > n_layers:
                raise ValueError(
                    f"layer={c.layer} but {c.ssl_model} has {n_layers} layers (hidden_states 0..{n_layers})"
                )
            dim = int(self.ssl.config.hidden_size)
        else:
            from scipy.fft import dct
            from transformers.audio_utils import mel_filter_bank

            fb = mel_filter_bank(
                num_frequency_bins=c.n_fft // 2 + 1,
                num_mel_filters=c.n_mels,
                min_frequency=20.0,
                max_frequency=c.sample_rate / 2,
                sampling_rate=c.sample_rate,
                mel_scale="htk",
            )
            self.register_buffer(
                "mel_fb", torch.from_numpy(fb.astype(np.float32)), persistent=False
            )  # [n_freq, n_mels]
            dct_m = dct(np.eye(c.n_mels), type=2, norm="ortho", axis=0)[: c.n_mfcc]  # [n_mfcc, n_mels]
            self.register_buffer("dct", torch.from_numpy(dct_m.astype(np.float32)), persistent=False)
            self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
            dim = c.n_mfcc * (3 if c.deltas else 1)
        self.register_buffer("centroids", torch.zeros(c.num_units, dim))  # [k, D]
        self.register_buffer("mean", torch.zeros(dim))  # [D]
        self.register_buffer("std", torch.ones(dim))  # [D]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # ---- protocol ------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Nominal frames per second: sample rate / total stride of the front end."""
        if self.ssl is None:
            return self.sample_rate / self.config.hop_length
        strides = getattr(self.ssl.config, "conv_stride", None)
        if strides is not None:  # HuBERT / wav2vec 2.0: a strided conv front end (320 samples = 20 ms)
            return self.sample_rate / float(np.prod(strides))
        # Wav2Vec2Bert: 10 ms fbank frames stacked `stride` at a time
        return 100.0 / int(getattr(self.feature_extractor, "stride", 1))

    @property
    def dim(self) -> int:
        """Feature dimension D that is clustered."""
        return int(self.centroids.shape[1])

    def get_config(self) -> dict:
        return dataclasses.asdict(self.config)

    def code_vectors(self) -> torch.Tensor:
        """The k-means centroids (in the standardised feature space) as one codebook, [1, units, D]."""
        return self.centroids.detach().clone()[None]

    # ---- features ------------------------------------------------------------------------
    def mfcc(self, wav: torch.Tensor) -> torch.Tensor:
        """One waveform [T] -> MFCC frames [1 + T // hop_length, n_mfcc (x3 with deltas)]."""
        c = self.config
        spec = torch.stft(
            wav,
            c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # [n_freq, F]
        power = spec.abs().pow(2).t()  # [F, n_freq]
        logmel = torch.log(power @ self.mel_fb + 1e-6)  # [F, n_mels]
        x = logmel @ self.dct.t()  # [F, n_mfcc]
        if c.deltas:
            d1 = add_deltas(x)
            x = torch.cat([x, d1, add_deltas(d1)], dim=1)  # [F, 3 * n_mfcc]
        return x

    def _ssl_frames(self, lengths: torch.Tensor, mask_lengths: torch.Tensor) -> torch.Tensor:
        """SSL output frames for ``lengths`` [B] samples (``mask_lengths``: the feature extractor's mask sums)."""
        if hasattr(self.ssl, "_get_feat_extract_output_lengths") and self.ssl.main_input_name == "input_values":
            return self.ssl._get_feat_extract_output_lengths(lengths).long()
        # Wav2Vec2Bert-style input_features: one hidden frame per (stacked) feature frame
        one = [np.zeros(int(n), dtype=np.float32) for n in lengths.tolist()]
        out = self.feature_extractor(
            one, sampling_rate=self.sample_rate, return_attention_mask=True, padding=True, return_tensors="pt"
        )
        return out["attention_mask"].sum(-1).long()

    @torch.inference_mode()
    def _ssl_features(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T], [B] -> hidden layer [B, F, D], frame lengths [B]."""
        items = [wav[b, : int(n)].cpu().numpy() for b, n in enumerate(lengths.tolist())]
        inputs = self.feature_extractor(
            items, sampling_rate=self.sample_rate, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        device = next(self.ssl.parameters()).device
        mask = inputs.pop("attention_mask")
        kwargs = {k: v.to(device) for k, v in inputs.items()}
        # models with group norm over time in their conv front end (HuBERT/wav2vec 2.0 base) must not get
        # a mask (HF docs): callers give them equal-length groups instead, see `encode`
        if getattr(self.ssl.config, "feat_extract_norm", "layer") != "group":
            kwargs["attention_mask"] = mask.to(device)
        out = self.ssl(**kwargs, output_hidden_states=True)
        hidden = out.hidden_states[self.config.layer]  # [B, F, D]
        frames = self._ssl_frames(lengths.cpu(), mask.sum(-1))
        frames = frames.clamp(max=hidden.shape[1])
        return hidden.float(), frames.to(hidden.device)

    def features(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardisation-free features of a batch: [B, T], [B] -> [B, F, D] (zero past each item's frames), [B]."""
        wav, lengths = _check_batch(wav, lengths)
        if self.ssl is not None:
            return self._ssl_features(wav, lengths)
        per_item = [self.mfcc(wav[b, : int(n)].to(self.window.device)) for b, n in enumerate(lengths.tolist())]
        frames = torch.tensor([len(x) for x in per_item])
        out = torch.zeros(len(per_item), int(frames.max()), self.dim, device=self.window.device)  # [B, F, D]
        for b, x in enumerate(per_item):
            out[b, : len(x)] = x
        return out, frames

    # ---- encode / decode ---------------------------------------------------------------------
    def _assign(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, F, D], [B] -> unit ids [B, 1, F] (0 past each item's frames), [B]."""
        from audiopalm.tokenizers.kmeans import nearest

        b, f, d = feats.shape
        z = (feats - self.mean) / self.std
        ids, _ = nearest(z.reshape(b * f, d), self.centroids)
        ids = ids.reshape(b, 1, f)  # [B, 1, F]
        valid = torch.arange(f, device=ids.device)[None, None, :] < frames.to(ids.device)[:, None, None]
        return ids * valid, frames.to(ids.device)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] -> unit ids [B, 1, F] long, frame_lengths [B] long."""
        if not bool(self.fitted):
            raise RuntimeError("this SemanticTokenizer is not fitted: call .fit(audio) or load a fitted one")
        wav, lengths = _check_batch(wav, lengths)
        if self.ssl is not None and getattr(self.ssl.config, "feat_extract_norm", "layer") == "group":
            from audiopalm.tokenizers.hf_codec import encode_in_equal_length_groups

            return encode_in_equal_length_groups(
                lambda x: self._assign(*self._ssl_features(x, torch.full((x.shape[0],), x.shape[1]))), wav, lengths
            )
        return self._assign(*self.features(wav, lengths))

    # ---- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        audio: Iterable | str | os.PathLike,
        *,
        split: str | None = None,
        max_frames: int = 200_000,
        iters: int = 20,
        seed: int = 0,
        progress: bool = True,
    ) -> SemanticTokenizer:
        """Fit mean/std and ``num_units`` k-means centres on features of ``audio``.

        ``audio``: a JSONL manifest (its ``audio`` and ``tgt_audio`` files, each once; only rows of
        ``split`` if given), or an iterable of waveforms ([T] arrays/tensors at :attr:`sample_rate`) or
        audio file paths. Read until ``max_frames`` feature frames are collected. Returns ``self``.
        """
        from audiopalm.audio import io as audio_io
        from audiopalm.data.manifest import read_manifest
        from audiopalm.tokenizers.kmeans import kmeans

        if isinstance(audio, (str, os.PathLike)):
            records = [r for r in read_manifest(audio) if split is None or r.split == split]
            if not records:
                raise ValueError(f"{audio}: no rows" + (f" with split {split!r}" if split else ""))
            audio = list(dict.fromkeys(p for r in records for p in (r.audio, r.tgt_audio) if p is not None))

        chunks, total = [], 0
        for item in tqdm(audio, desc="semantic features", disable=not progress, unit="utt"):
            if isinstance(item, (str, os.PathLike)):
                item, _ = audio_io.load(item, self.sample_rate)
            wav = torch.as_tensor(np.asarray(item, dtype=np.float32))[None]  # [1, T]
            with torch.inference_mode():
                feats, frames = self.features(wav)
            chunks.append(feats[0, : int(frames[0])].cpu())
            total += int(frames[0])
            if total >= max_frames:
                break
        if total < self.config.num_units:
            raise ValueError(f"fit: only {total} feature frames for num_units={self.config.num_units}; give more audio")
        x = torch.cat(chunks)[:max_frames]  # [N, D]
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
        result = kmeans(
            (x - mean) / std, self.config.num_units, iters=iters, seed=seed, progress=progress, desc="semantic k-means"
        )
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.centroids.copy_(result.centroids)
        self.fitted.fill_(True)
        return self

    # ---- persistence ----------------------------------------------------------------------------
    def _own_state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors (the SSL model's weights are saved by transformers, in ``ssl/``)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("ssl.")}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``audio_tokenizer.json``, ``audio_tokenizer.safetensors`` and (ssl) the model in ``ssl/``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.ssl is not None:
            self.ssl.save_pretrained(directory / SSL_DIR)
            self.feature_extractor.save_pretrained(directory / SSL_DIR)
        save_file(self._own_state(), str(directory / WEIGHTS_NAME))
        meta = {"type": self.type_name, "config": self.get_config(), "fingerprint": self.fingerprint}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SemanticTokenizer:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta["type"] != cls.type_name:
            raise ValueError(f"{directory}: holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        config = dict(meta["config"])
        source = config.get("ssl_model")
        if config.get("features") == "ssl":
            config["ssl_model"] = str(directory / SSL_DIR)
        tok = cls(**config)
        tok.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        tok.config.ssl_model = source  # keep the original name for the record
        return tok

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the config (less the SSL model's path), the SSL architecture and all tensors."""
        h = hashlib.sha256()
        config = {k: v for k, v in self.get_config().items() if k != "ssl_model"}
        arch = None
        if self.ssl is not None:
            skip = {
                "_name_or_path",
                "transformers_version",
                "torch_dtype",
                "dtype",
                "architectures",
                "return_dict",
                "output_hidden_states",
                "output_attentions",
            }
            arch = {k: v for k, v in self.ssl.config.to_dict().items() if k not in skip}
        h.update(
            json.dumps({"type": self.type_name, "config": config, "arch": arch}, sort_keys=True, default=str).encode()
        )
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _check_batch(wav: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate [B, T] and [B]; default lengths = T."""
    if wav.dim() != 2:
        raise ValueError(f"expected wav [B, T], got shape {tuple(wav.shape)}")
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    if lengths.shape != (wav.shape[0],) or int(lengths.max()) > wav.shape[1] or int(lengths.min()) < 1:
        raise ValueError(f"lengths {lengths.tolist()} do not fit wav {tuple(wav.shape)}")
    return wav.float(), lengths
