"""``ctc_units``: k-means units of a trained character-CTC speech encoder's states (AudioPaLM's audio tokens).

AudioPaLM feeds its LM k-means ids of an ASR-trained encoder (USM); this tokenizer is that recipe
with the small encoder of :mod:`audiopalm.tokenizers.speech_encoder`, trained on any manifest's
transcripts (every language at once) by :meth:`CTCUnitsTokenizer.fit`::

    tok = CTCUnitsTokenizer.fit("corpus/train.jsonl", num_units=512, train=EncoderTrainConfig(steps=400))
    codes, frames = tok.encode(wav, lengths)           # [B, 1, F] long at 25 Hz (stride 1), [B]
    units, durations = dedup_units(codes[0, 0, :frames[0]])   # SpeechGPT-style, with run lengths

One stream (K = 1) of ``num_units`` codes per 40 ms frame (per mean of ``stride`` frames: ``stride=2`` gives
12.5 Hz); frames standardised with the fitted per-dimension mean/std, then the nearest k-means centre
(:mod:`audiopalm.tokenizers.kmeans`). With
``dedup=True`` :meth:`encode` collapses runs of a repeated unit (the LM then reads about a third as
many tokens; the durations, lost there, come from :func:`dedup_units` for the acoustic stage).
Units keep what is said and drop most of the voice: :attr:`can_decode` is False; the acoustic stage
(:mod:`audiopalm.acoustic`) turns units back into sound.

Saved as ``audio_tokenizer.json`` + ``audio_tokenizer.safetensors`` (encoder weights, centres, mean,
std: all in one file, so the fingerprint covers the encoder) and ``encoder/`` (the same encoder,
loadable on its own as an ASR model, with its training record and dev CER).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from audiopalm.tokenizers.base import UnitTokenizer
from audiopalm.tokenizers.speech_encoder import (
    EncoderTrainConfig,
    SpeechEncoder,
    SpeechEncoderConfig,
    _pad,
    build_chars,
    evaluate_feats,
    load_feats,
    manifest_utterances,
    normalize_feats,
    saved_config,
    train_encoder,
)

ENCODER_DIR = "encoder"
"""Sub-folder of a saved tokenizer holding the encoder alone (``SpeechEncoder.from_pretrained``)."""


def dedup_units(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse runs of repeated units: ``units`` [F] -> (distinct-run units [U], run lengths in frames [U]).

    ``torch.repeat_interleave(u, d)`` gives ``units`` back (tested)."""
    if units.dim() != 1:
        raise ValueError(f"dedup_units expects one stream [F], got shape {tuple(units.shape)}")
    if units.numel() == 0:
        return units.clone(), units.new_zeros(0)
    u, d = torch.unique_consecutive(units, return_counts=True)
    return u, d


@dataclasses.dataclass
class CTCUnitsConfig:
    """The encoder's shape, which layer is clustered, and into how many units."""

    encoder: dict = dataclasses.field(default_factory=dict)
    """Keyword arguments of :class:`audiopalm.tokenizers.speech_encoder.SpeechEncoderConfig` (chars, sizes), as
    :meth:`CTCUnitsTokenizer.fit` writes them (every field); without ``conv_kernel`` (tokenizers saved before the
    field existed) the encoder has no convolution modules (:func:`~audiopalm.tokenizers.speech_encoder.saved_config`)."""
    layer: int | None = None
    """Encoder layer whose states are clustered (0: after the convolutions; i: after transformer layer i);
    None: the last (set to its number here, so a saved config names it)."""
    num_units: int = 512
    """k: k-means centres, the codebook size."""
    dedup: bool = False
    """Collapse runs of a repeated unit in :meth:`CTCUnitsTokenizer.encode` (frame lengths then count runs)."""
    stride: int = 1
    """Encoder frames averaged into one unit before k-means: 1 gives 25 Hz units, 2 gives 12.5 Hz (Mimi's rate:
    the LM reads and writes half as many tokens per second of speech; the acoustic stage then makes 2 codec frames
    of each unit). The last unit of an utterance averages what frames are left."""

    def __post_init__(self):
        enc = saved_config(self.encoder)  # validates the encoder's fields
        if self.layer is None:
            self.layer = enc.num_layers
        if not 0 <= self.layer <= enc.num_layers:
            raise ValueError(f"CTCUnitsConfig.layer={self.layer}: the encoder has layers 0..{enc.num_layers}")
        if self.num_units < 2:
            raise ValueError(f"CTCUnitsConfig.num_units must be >= 2, got {self.num_units}")
        if self.stride < 1:
            raise ValueError(f"CTCUnitsConfig.stride must be >= 1, got {self.stride}")


def pool_frames(states: torch.Tensor, frames: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each ``stride`` consecutive valid frames: ``states`` [B, F, D], ``frames`` [B] ->
    ([B, ceil(F / stride), D], ceil(frames / stride) [B]); the last group of an item averages its valid frames only."""
    if stride == 1:
        return states, frames
    b, f, d = states.shape
    g = -(-f // stride)
    valid = (torch.arange(g * stride, device=states.device)[None] < frames[:, None].to(states.device)).to(states.dtype)
    padded = states.new_zeros(b, g * stride, d)
    padded[:, :f] = states
    w = valid.reshape(b, g, stride, 1)  # [B, G, s, 1]
    pooled = (padded.reshape(b, g, stride, d) * w).sum(2) / w.sum(2).clamp_min(1.0)  # [B, G, D]
    return pooled, -(-frames // stride)


def unit_states(
    encoder: SpeechEncoder,
    feats: list[torch.Tensor],
    *,
    layer: int,
    stride: int,
    max_frames: int,
    seed: int,
    progress: bool = False,
) -> torch.Tensor:
    """What :meth:`CTCUnitsTokenizer.fit` clusters: layer ``layer``'s states of the utterances' log-mels ``feats``
    in a seeded random order, each the mean of ``stride`` encoder frames, until ``max_frames`` -> [N, D]."""
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed)).tolist()
    chunks, total = [], 0
    with torch.inference_mode():
        for i in tqdm(range(0, len(order), 64), desc="encoder states", disable=not progress, leave=False):
            x, n = _pad([feats[j] for j in order[i : i + 64]])
            states, frames = encoder.forward_feats(normalize_feats(x, n), n, upto=layer)
            pooled, frames = pool_frames(states[layer], frames, stride)
            for b, f in enumerate(frames.tolist()):
                chunks.append(pooled[b, :f])
                total += f
            if total >= max_frames:
                break
    return torch.cat(chunks)[:max_frames]  # [N, D]


def pool_starts(starts: list[int], stride: int, units: int) -> list[int]:
    """Word starts in encoder frames -> in units of ``stride`` frames, for an utterance of ``units`` units: the unit
    holding each start, moved one on where a word that took frames would otherwise get no unit (when there is room)."""
    out: list[int] = []
    for i, s in enumerate(starts):
        u = s // stride
        if i and s > starts[i - 1] and u <= out[-1] and out[-1] + 1 < units:
            u = out[-1] + 1
        out.append(max(u, out[-1]) if out else u)
    return out


class CTCUnitsTokenizer(UnitTokenizer):
    """k-means units over a character-CTC encoder's layer. Build with :meth:`fit` or :meth:`from_pretrained`."""

    type_name = "ctc_units"
    # buffers (register_buffer below), declared so that type checkers see tensors, not Module attributes
    centroids: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, **config):
        super().__init__()
        self.config = c = CTCUnitsConfig(**config)
        self.encoder = SpeechEncoder(saved_config(c.encoder)).eval()
        dim = self.encoder.config.hidden_size
        self.register_buffer("centroids", torch.zeros(c.num_units, dim))  # [k, D]
        self.register_buffer("mean", torch.zeros(dim))  # [D]
        self.register_buffer("std", torch.ones(dim))  # [D]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.fit_info: dict = {}
        """How the fit went (data, steps, seconds, the encoder's dev CER); saved as ``fit_info.json``."""

    # ---- protocol ------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.encoder.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Units per second: the encoder's frame rate (25) / ``stride``; with ``dedup`` the mean rate is lower (runs,
        not frames)."""
        return self.encoder.frame_rate / self.config.stride

    def get_config(self) -> dict:
        config = dataclasses.asdict(self.config)
        if config["stride"] == 1:  # hashed as a config without the field, so stride-1 fingerprints stay as saved
            del config["stride"]
        return config

    def code_vectors(self) -> torch.Tensor:
        """The k-means centres (standardised state space) as one codebook, [1, units, D]."""
        return self.centroids.detach().clone()[None]

    @torch.no_grad()
    def unit_characters(self) -> tuple[list[str], torch.Tensor] | None:
        """The encoder's CTC distribution at each k-means centre, ``[units, 1 + chars]`` (column 0: the blank),
        when the clustered layer is the one its CTC head reads (the last); None for an earlier layer."""
        if self.config.layer != self.encoder.config.num_layers:
            return None
        states = self.centroids * self.std + self.mean  # [k, D], back from the standardised space
        return list(self.encoder.config.chars), self.encoder.head(self.encoder.norm(states)).softmax(-1)  # [k, 1+chars]

    def _assign(self, states: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """[B, F, D] -> unit ids [B, F] (0 past each item's frames)."""
        from audiopalm.tokenizers.kmeans import nearest

        b, f, d = states.shape
        ids, _ = nearest(((states - self.mean) / self.std).reshape(b * f, d), self.centroids)
        ids = ids.reshape(b, f)
        return ids * (torch.arange(f, device=ids.device)[None, :] < frames[:, None].to(ids.device))

    @torch.inference_mode()
    def units(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-aligned units whatever ``dedup`` says: [B, T], [B] -> [B, F] long (:attr:`frame_rate`), [B] frames."""
        if not bool(self.fitted):
            raise RuntimeError("this CTCUnitsTokenizer is not fitted: use CTCUnitsTokenizer.fit or from_pretrained")
        if wav.dim() != 2:
            raise ValueError(f"expected wav [B, T], got shape {tuple(wav.shape)}")
        states, frames = self.encoder.hidden_states(wav.float(), lengths, layer=self.config.layer)  # [B, F, D], [B]
        states, frames = pool_frames(states, frames, self.config.stride)  # [B, F / stride, D]
        return self._assign(states, frames), frames

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` [B, T] -> unit ids [B, 1, F] long, frame_lengths [B] long (runs, if ``dedup``)."""
        ids, frames = self.units(wav, lengths)
        if not self.config.dedup:
            return ids[:, None, :], frames
        runs = [dedup_units(ids[b, : int(n)])[0] for b, n in enumerate(frames.tolist())]
        lengths_out = torch.tensor([len(r) for r in runs], dtype=torch.long)
        out = torch.zeros(len(runs), 1, max(int(lengths_out.max()), 1), dtype=torch.long)  # [B, 1, U]
        for b, r in enumerate(runs):
            out[b, 0, : len(r)] = r
        return out, lengths_out

    @torch.inference_mode()
    def encode_words(
        self, wav: torch.Tensor, lengths: torch.Tensor | None, texts: list[str | None]
    ) -> tuple[torch.Tensor, torch.Tensor, list[list[int] | None]]:
        """:meth:`encode` plus where each word of each transcript starts, in the same encoder pass: ``texts[b]``
        (None: no transcript, no words) aligned to item ``b``'s frames by the encoder's own CTC head
        (:func:`audiopalm.tokenizers.ctc_align.word_starts`). Needs frame-aligned units (no ``dedup``)."""
        from audiopalm.tokenizers.ctc_align import word_starts

        if not bool(self.fitted):
            raise RuntimeError("this CTCUnitsTokenizer is not fitted: use CTCUnitsTokenizer.fit or from_pretrained")
        if self.config.dedup:
            raise ValueError("encode_words: word starts are frames, and this tokenizer collapses runs (dedup=True)")
        if len(texts) != wav.shape[0]:
            raise ValueError(f"encode_words: {len(texts)} transcripts for {wav.shape[0]} waveforms")
        feats, mel_lengths = self.encoder.features(wav.float(), lengths)
        states, frames = self.encoder.forward_feats(feats, mel_lengths)
        stride = self.config.stride
        pooled, units = pool_frames(states[self.config.layer], frames, stride)
        ids = self._assign(pooled, units)  # [B, U]
        log_probs = self.encoder.head(self.encoder.norm(states[-1])).log_softmax(-1).cpu().numpy()  # [B, F, 1+C]
        chars = self.encoder.config.chars
        starts = [
            None if text is None else pool_starts(word_starts(log_probs[b, : int(n)], text, chars), stride, int(u))
            for b, (text, n, u) in enumerate(zip(texts, frames.tolist(), units.tolist(), strict=True))
        ]
        return ids[:, None, :], units, starts

    # ---- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        manifest: str | os.PathLike,
        *,
        split: str | None = "train",
        dev_split: str | None = "dev",
        num_units: int = 512,
        layer: int | None = None,
        dedup: bool = False,
        stride: int = 1,
        train: EncoderTrainConfig | None = None,
        encoder: Mapping[str, Any] | None = None,
        max_frames: int = 200_000,
        kmeans_iters: int = 50,
        exclude_voices: tuple[str, ...] = (),
        pretrained: str | os.PathLike | None = None,
        dev_manifest: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> CTCUnitsTokenizer:
        """Train the encoder with CTC on the ``split`` rows of ``manifest`` (audio + text, tgt_audio + tgt_text,
        every language), score its greedy CER on the ``dev_split`` rows (if any) of ``dev_manifest`` (default:
        ``manifest``), then fit ``num_units`` k-means
        centres on up to ``max_frames`` frames of layer ``layer`` (default: the last) of the training audio, each the
        mean of ``stride`` encoder frames.

        ``pretrained``: a saved encoder folder (``SpeechEncoder.save_pretrained``, or a tokenizer's
        ``encoder/``) to cluster instead of training one (``train`` and ``encoder`` are then ignored)."""
        from audiopalm.tokenizers.ctc_decode import lexicon_from_texts
        from audiopalm.tokenizers.kmeans import kmeans

        train = train or EncoderTrainConfig()
        seed = train.seed  # of the k-means sample and fit, also when a trained encoder is reused
        t0 = time.perf_counter()
        utts = manifest_utterances(manifest, split=split, exclude_speakers=exclude_voices)
        trained = SpeechEncoder.from_pretrained(pretrained) if pretrained is not None else None
        if trained is not None:
            enc_config = trained.config
        else:
            enc_config = SpeechEncoderConfig(**{**(encoder or {}), "chars": build_chars([t for _, t, _, _ in utts])})
        layer = enc_config.num_layers if layer is None else layer
        torch.manual_seed(seed)  # the layers' construction-time init (their biases) from the seed too: a repeatable fit
        tok = cls(encoder=dataclasses.asdict(enc_config), layer=layer, num_units=num_units, dedup=dedup, stride=stride)
        if trained is not None:
            tok.encoder.load_state_dict(trained.state_dict())
        feats = load_feats([u[0] for u in utts], tok.encoder.frontend, progress=progress, desc="log-mel (train)")
        evals = {}
        if dev_split is not None:
            try:
                dev = manifest_utterances(dev_manifest or manifest, split=dev_split)
            except ValueError:
                dev = []
            if dev:
                evals["dev"] = (
                    load_feats([u[0] for u in dev], tok.encoder.frontend, progress=progress, desc="log-mel (dev)"),
                    [u[1] for u in dev],
                )
        t_feats = time.perf_counter() - t0
        if trained is None:
            curve = train_encoder(
                tok.encoder, feats, [u[1] for u in utts], train, evals=evals or None, progress=progress
            )
        else:  # keep the encoder's own training record; score it on this manifest's dev rows
            saved: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in (trained.record.get("train") or {}).items()
            }
            train = (
                EncoderTrainConfig(**saved) if trained.record.get("train") else None
            )  # unknown: the encoder was saved without its record
            curve = list(trained.record.get("curve", []))
            if evals:
                curve.append({"step": None, "dev": evaluate_feats(tok.encoder, *evals["dev"])})
        t_train = time.perf_counter() - t0 - t_feats

        # k-means over the layer's states of the (unaugmented) training audio, in a seeded random order
        x = unit_states(
            tok.encoder, feats, layer=layer, stride=stride, max_frames=max_frames, seed=seed, progress=progress
        )  # [N, D]
        if len(x) < num_units:
            raise ValueError(f"fit: only {len(x)} frames for num_units={num_units}; give more audio")
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
        result = kmeans(
            (x - mean) / std, num_units, iters=kmeans_iters, seed=seed, progress=progress, desc="ctc-units k-means"
        )
        tok.mean.copy_(mean)
        tok.std.copy_(std)
        tok.centroids.copy_(result.centroids)
        tok.fitted.fill_(True)
        used = torch.bincount(result.assignments, minlength=num_units)
        final = curve[-1] if curve else {}
        tok.fit_info = {
            "manifest": str(manifest),
            "split": split,
            "dev_split": dev_split,
            "train_utterances": len(feats),
            "languages": sorted({u[2] for u in utts}),
            "excluded_voices": list(exclude_voices),
            "pretrained": None if pretrained is None else str(pretrained),
            "train": None if train is None else dataclasses.asdict(train),
            "encoder_dev_cer": final.get("dev", {}).get("cer"),
            "encoder_dev_wer": final.get("dev", {}).get("wer"),
            "curve": curve,
            "kmeans": {
                "frames": len(x),
                "inertia": result.inertia,
                "units_used": int((used > 0).sum()),
                "reseeded": result.reseeded,
            },
            "seconds": {
                "features": round(t_feats, 1),
                "encoder": round(t_train, 1),
                "total": round(time.perf_counter() - t0, 1),
            },
        }
        tok.encoder.record = {
            k: tok.fit_info[k]
            for k in ("manifest", "split", "languages", "train", "encoder_dev_cer", "encoder_dev_wer", "curve")
        }
        # the words of the training transcripts per language: a judge built on this encoder decodes with them
        tok.encoder.record["lexicon"] = lexicon_from_texts((u[2], u[1]) for u in utts)
        return tok

    # ---- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """The tokenizer folder (see the module docstring), plus ``fit_info.json`` when fitted here."""
        directory = Path(super().save_pretrained(directory))
        self.encoder.save_pretrained(directory / ENCODER_DIR)
        if self.fit_info:
            tmp = directory / "fit_info.json.tmp"
            tmp.write_text(json.dumps(self.fit_info, indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, directory / "fit_info.json")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> CTCUnitsTokenizer:
        tok = super().from_pretrained(directory)
        info = Path(directory) / "fit_info.json"
        if info.is_file():
            tok.fit_info = json.loads(info.read_text())
        return tok.eval()

    @torch.no_grad()
    def dev_cer(self, manifest: str | os.PathLike, split: str = "dev", **filters) -> dict:
        """The encoder's greedy CER / WER on the ``split`` utterances of ``manifest``."""
        utts = manifest_utterances(manifest, split=split, **filters)
        feats = load_feats([u[0] for u in utts], self.encoder.frontend, progress=False)
        return evaluate_feats(self.encoder, feats, [u[1] for u in utts])
