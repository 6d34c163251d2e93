"""Training pairs for the acoustic stage: (units of an utterance, its codec features, a prompt of the same voice).

:func:`load_utterances` reads each distinct ``audio`` file of a manifest's rows (its ``speaker`` comes
from the row) once, computes

- units ``[F]``: the unit tokenizer's first codebook (a semantic tokenizer has only that one), each unit repeated
  over the codec frames it spans (``frames_per_unit``: 1 for 25 Hz units, 2 for 12.5 Hz), and
- features ``[F, D]``: the codec's normalised stacked log-mel (``MelRVQTokenizer.features``), the target,

trims both to the shorter whole number of units (the two front ends may round the last frame differently, at
most :data:`MAX_FRAME_MISMATCH` frames) and caches them in one safetensors file per (manifest, split,
tokenizers) under ``cache_dir``, so a second run (or a resumed one) reads no audio.

:class:`PairSampler` makes the batch of a step as a pure function of (seed, step), like
:class:`audiopalm.training.StepSampler`: which utterances, which *other* utterance of the same
speaker is the voice prompt (so the model must take the voice from the prompt, never from the target
itself), and which window of each is cropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiopalm.acoustic.model import frames_per_unit

MAX_FRAME_MISMATCH = 2
"""Largest difference (frames) allowed between the unit and the codec frame counts of one file."""


@dataclasses.dataclass
class Utterances:
    """Cached units and features of a set of audio files, concatenated along time."""

    paths: list[str]
    """Audio file of each utterance."""
    speakers: list[str]
    """Speaker (voice) id of each utterance."""
    offsets: torch.Tensor
    """[N + 1] long: utterance i is frames ``offsets[i]:offsets[i + 1]``."""
    units: torch.Tensor
    """[sum F] long: the unit id of each codec frame (a unit spanning r frames is there r times)."""
    feats: torch.Tensor
    """[sum F, D] float32: normalised codec features (the regression target)."""

    def __len__(self) -> int:
        return len(self.paths)

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(units [F], feats [F, D]) of utterance i."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.units[a:b], self.feats[a:b]

    def subset(self, keep: list[int]) -> Utterances:
        units, feats, offsets = [], [], [0]
        for i in keep:
            u, f = self.item(i)
            units.append(u)
            feats.append(f)
            offsets.append(offsets[-1] + len(u))
        return Utterances(
            [self.paths[i] for i in keep],
            [self.speakers[i] for i in keep],
            torch.tensor(offsets, dtype=torch.long),
            torch.cat(units),
            torch.cat(feats),
        )


def manifest_utterances(manifest: str | os.PathLike, splits: list[str] | None) -> list[tuple[str, str]]:
    """(audio path, speaker) of each distinct ``audio`` file of the rows in ``splits`` (None: all rows)."""
    from audiopalm.data.manifest import read_manifest

    seen: dict[str, str] = {}
    for rec in read_manifest(manifest):
        if splits is not None and rec.split not in splits:
            continue
        if rec.audio is None:
            continue
        if not rec.speaker:
            raise ValueError(
                f"{manifest}: row {rec.id!r} has no speaker; the acoustic stage needs one to pair "
                "each utterance with a voice prompt of the same speaker"
            )
        seen.setdefault(str(rec.audio), rec.speaker)
    return list(seen.items())


def encode_utterance(wav: np.ndarray, unit_tokenizer, codec) -> tuple[torch.Tensor, torch.Tensor]:
    """One mono waveform [T] -> (the unit of each codec frame [F] long, normalised codec features [F, D]), F a
    whole number of units."""
    r = frames_per_unit(unit_tokenizer.frame_rate, codec.frame_rate)
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))[None]  # [1, T]
    with torch.inference_mode():
        codes, n_units = unit_tokenizer.encode(x)  # [1, K, Fu]
        feats, n_feats = codec.features(x)  # [1, Ff, D]
    nu, nf = int(n_units[0]), int(n_feats[0])
    if abs(nu * r - nf) > MAX_FRAME_MISMATCH + r - 1:
        raise ValueError(
            f"unit tokenizer gives {nu} units and codec {nf} frames for the same {x.shape[1]} samples: "
            f"at {unit_tokenizer.frame_rate:g} and {codec.frame_rate:g} Hz they should be {r} frames per unit"
        )
    u = min(nu, nf // r)
    units = codes[0, 0, :u].long().repeat_interleave(r)  # [u * r]
    return units, feats[0, : u * r].float().clone()


def cache_key(manifest: str | os.PathLike, splits: list[str] | None, unit_tokenizer, codec, limit: int | None) -> str:
    """Hash of what the cached tensors depend on (the manifest's bytes, the splits, both fingerprints, the limit)."""
    h = hashlib.sha256()
    h.update(Path(manifest).read_bytes())
    h.update(json.dumps([splits, unit_tokenizer.fingerprint, codec.fingerprint, limit]).encode())
    return h.hexdigest()[:16]


def load_utterances(
    manifest: str | os.PathLike,
    splits: list[str] | None,
    unit_tokenizer,
    codec,
    *,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> Utterances:
    """Units and codec features of the manifest's utterances in ``splits`` (the first ``limit`` files, in
    manifest order); read from / written to ``cache_dir`` when given (atomic write)."""
    from safetensors.torch import load_file, save_file

    from audiopalm.audio import io as audio_io

    cache = None
    if cache_dir is not None:
        cache = (
            Path(cache_dir) / f"{Path(manifest).stem}-{'+'.join(splits or ['all'])}-"
            f"{cache_key(manifest, splits, unit_tokenizer, codec, limit)}"
        )
        if Path(f"{cache}.safetensors").is_file() and Path(f"{cache}.json").is_file():
            t = load_file(f"{cache}.safetensors")
            meta = json.loads(Path(f"{cache}.json").read_text(encoding="utf-8"))
            return Utterances(meta["paths"], meta["speakers"], t["offsets"], t["units"].long(), t["feats"].float())
    items = manifest_utterances(manifest, splits)[:limit]
    if not items:
        raise ValueError(f"{manifest}: no rows with audio in splits {splits}")
    units, feats, offsets = [], [], [0]

    def encode(item: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_utterance(audio_io.load(item[0], codec.sample_rate)[0], unit_tokenizer, codec)

    # one short file per thread, each op on one core (intra-op threads on a file this short only add sync overhead,
    # x10 slower on a busy CPU); the files are spread over one worker per core, in manifest order
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for u, f in tqdm(
                pool.map(encode, items),
                total=len(items),
                desc=f"acoustic: features ({Path(manifest).name})",
                unit="utt",
                disable=not progress,
            ):
                units.append(u)
                feats.append(f)
                offsets.append(offsets[-1] + len(u))
    finally:
        torch.set_num_threads(threads)
    out = Utterances(
        [p for p, _ in items],
        [s for _, s in items],
        torch.tensor(offsets, dtype=torch.long),
        torch.cat(units),
        torch.cat(feats),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f".tmp-{cache.name}"
        save_file(
            {"offsets": out.offsets, "units": out.units.to(torch.int32), "feats": out.feats}, f"{tmp}.safetensors"
        )
        Path(f"{tmp}.json").write_text(json.dumps({"paths": out.paths, "speakers": out.speakers}), encoding="utf-8")
        os.replace(f"{tmp}.safetensors", f"{cache}.safetensors")
        os.replace(f"{tmp}.json", f"{cache}.json")
    return out


@dataclasses.dataclass
class Batch:
    """A padded batch of pairs. Frames past a length are zero (features) / 0 (units) and never scored."""

    units: torch.Tensor  # [B, U] long
    lengths: torch.Tensor  # [B] long: valid codec frames, a whole number of units
    feats: torch.Tensor  # [B, F, D] target features, F = U * frames_per_unit
    prompt: torch.Tensor  # [B, P, D] voice-prompt features (another utterance of the same speaker)
    prompt_lengths: torch.Tensor  # [B] long

    @property
    def frames_per_unit(self) -> int:
        return self.feats.shape[1] // max(self.units.shape[1], 1)

    @property
    def unit_lengths(self) -> torch.Tensor:
        """[B] long: valid units."""
        return self.lengths // self.frames_per_unit

    def select(self, idx: list[int]) -> Batch:
        """Rows ``idx``, trimmed to their longest item."""
        f, p = int(self.lengths[idx].max()), int(self.prompt_lengths[idx].max())
        u = f // self.frames_per_unit
        return Batch(
            self.units[idx, :u], self.lengths[idx], self.feats[idx, :f], self.prompt[idx, :p], self.prompt_lengths[idx]
        )

    def to(self, device) -> Batch:
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def _pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of [F_i, ...] -> ([B, max F, ...] zero-padded, lengths [B])."""
    lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
    out = items[0].new_zeros((len(items), int(lengths.max()), *items[0].shape[1:]))
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return out, lengths


class PairSampler:
    """Batches of (utterance, prompt from another utterance of its speaker) as a pure function of (seed, step).

    Only utterances whose speaker has at least two utterances are targets. Targets longer than
    ``max_frames`` and prompts longer than ``max_prompt_frames`` are cropped to a random window (a target's at
    whole units of ``frames_per_unit`` codec frames).
    """

    def __init__(
        self, utts: Utterances, *, max_frames: int, max_prompt_frames: int, seed: int = 0, frames_per_unit: int = 1
    ):
        self.utts, self.max_frames, self.max_prompt_frames, self.seed = utts, max_frames, max_prompt_frames, seed
        self.frames_per_unit = frames_per_unit
        by_speaker: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(utts.speakers):
            by_speaker[s].append(i)
        self.by_speaker = dict(by_speaker)
        self.targets = [i for i, s in enumerate(utts.speakers) if len(by_speaker[s]) >= 2]
        if not self.targets:
            raise ValueError(
                f"no speaker has two utterances among {len(utts)}: the voice prompt must come from "
                "another utterance of the same speaker"
            )

    def _crop(self, n: int, limit: int, gen: torch.Generator) -> tuple[int, int]:
        if n <= limit:
            return 0, n
        start = int(torch.randint(0, n - limit + 1, (1,), generator=gen))
        return start, start + limit

    def pair(self, i: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(units [U], feats [U * frames_per_unit, D], prompt feats [P, D]) for target utterance ``i``."""
        others = [j for j in self.by_speaker[self.utts.speakers[i]] if j != i]
        j = others[int(torch.randint(0, len(others), (1,), generator=gen))]
        u, f = self.utts.item(i)
        r = self.frames_per_unit
        a, b = self._crop(len(u) // r, max(self.max_frames // r, 1), gen)  # in units
        _, pf = self.utts.item(j)
        pa, pb = self._crop(len(pf), self.max_prompt_frames, gen)
        return u[a * r : b * r : r], f[a * r : b * r], pf[pa:pb]

    def batch(self, indices: list[int], step: int) -> Batch:
        """The batch of target utterances ``indices`` at ``step`` (prompts and crops drawn from (seed, step))."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        triples = [self.pair(i, gen) for i in indices]
        units, _ = _pad([t[0] for t in triples])
        feats, lengths = _pad([t[1] for t in triples])
        prompt, prompt_lengths = _pad([t[2] for t in triples])
        return Batch(units, lengths, feats, prompt, prompt_lengths)
