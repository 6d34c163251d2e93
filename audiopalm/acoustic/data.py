"""Training pairs for the acoustic stage: (units of an utterance, its codec features, a prompt of the same voice).

:func:`load_utterances` reads each distinct ``audio`` file of a manifest's rows (its ``speaker`` comes
from the row) once, computes (or reads from a token store of the unit tokenizer: then only the features are computed)

- units ``[F]``: the unit tokenizer's first codebook (a semantic tokenizer has only that one), each unit repeated
  over the codec frames it spans (``frames_per_unit``: 1 for 25 Hz units, 2 for 12.5 Hz),
- features ``[F, D]``: the codec's normalised stacked log-mel (``MelRVQTokenizer.features``), the target, and
- for a stage that reads letters (``AcousticConfig.use_letters``), letters ``[F, W]``: the letters of the word each
  frame's unit says (:mod:`audiopalm.acoustic.letters`), its transcript's words placed by the unit tokenizer's own
  CTC head (``encode_words``, in the same encoder pass; a store keeps them from ``audiopalm tokenize --words``),

trims them to the shorter whole number of units (the two front ends may round the last frame differently, at
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiopalm.acoustic.letters import letter_windows, unit_letters
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
    letters: torch.Tensor | None = None
    """[sum F, W] long: the letters of each frame's word (:mod:`audiopalm.acoustic.letters`), or None."""

    def __len__(self) -> int:
        return len(self.paths)

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(units [F], feats [F, D]) of utterance i."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.units[a:b], self.feats[a:b]

    def item_letters(self, i: int) -> torch.Tensor | None:
        """letters [F, W] of utterance i (None when the set has none)."""
        if self.letters is None:
            return None
        return self.letters[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def subset(self, keep: list[int]) -> Utterances:
        a, b = self.offsets[:-1][keep], self.offsets[1:][keep]
        frames = torch.cat([torch.arange(int(x), int(y)) for x, y in zip(a, b, strict=True)])
        return Utterances(
            [self.paths[i] for i in keep],
            [self.speakers[i] for i in keep],
            torch.cat([torch.zeros(1, dtype=torch.long), (b - a).cumsum(0)]),
            self.units[frames],
            self.feats[frames],
            None if self.letters is None else self.letters[frames],
        )


def manifest_utterances(manifest: str | os.PathLike, splits: list[str] | None) -> list[tuple[str, str, str | None]]:
    """(audio path, speaker, transcript) of each distinct ``audio`` file of the rows in ``splits`` (None: all rows)."""
    from audiopalm.data.manifest import read_manifest

    seen: dict[str, tuple[str, str | None]] = {}
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
        seen.setdefault(str(rec.audio), (rec.speaker, rec.text))
    return [(path, speaker, text) for path, (speaker, text) in seen.items()]


def has_audio(source: str | os.PathLike, splits: list[str] | None) -> bool:
    """Whether a manifest or a token store folder (see :func:`load_utterances`) has rows with audio in ``splits``."""
    if not Path(source).is_dir():
        return bool(manifest_utterances(source, splits))
    from audiopalm.data.token_store import load_token_store

    rows = load_token_store(source).dataset.select_columns(["audio", "split"]).with_format(None)
    return any(r["audio"] is not None and (splits is None or r["split"] in splits) for r in rows)


def encode_utterance(
    wav: np.ndarray,
    unit_tokenizer,
    codec,
    *,
    text: str | None = None,
    letters: tuple[str, ...] | None = None,
    letter_width: int = 5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One mono waveform [T] -> (the unit of each codec frame [F] long, normalised codec features [F, D], and with
    an alphabet ``letters`` the letters of each frame's word [F, ``letter_width``] from transcript ``text``, else
    None), F a whole number of units."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))[None]  # [1, T]
    starts = None
    with torch.inference_mode():
        if letters is not None:
            unit_letters(unit_tokenizer)  # refuses a tokenizer that cannot place words on its units
            codes, n_units, found = unit_tokenizer.encode_words(x, None, [text])  # [1, K, Fu]
            starts = found[0]
        else:
            codes, n_units = unit_tokenizer.encode(x)  # [1, K, Fu]
    units = codes[0, 0, : int(n_units[0])]
    return align_utterance(x, units, unit_tokenizer.frame_rate, codec, text, starts, letters, letter_width)


def align_utterance(
    x: torch.Tensor,
    units: torch.Tensor,
    unit_rate: float,
    codec,
    text: str | None,
    starts: Sequence[int] | None,
    letters: tuple[str, ...] | None,
    letter_width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Waveform ``x`` [1, T] and its ``units`` [U] -> :func:`encode_utterance`'s triple: the codec's features of
    ``x``, both trimmed to the shorter whole number of units, and the letters of ``text``'s words starting at
    ``starts`` (in units) where an alphabet ``letters`` is given."""
    r = frames_per_unit(unit_rate, codec.frame_rate)
    with torch.inference_mode():
        feats, n_feats = codec.features(x)  # [1, Ff, D]
    nu, nf = len(units), int(n_feats[0])
    if abs(nu * r - nf) > MAX_FRAME_MISMATCH + r - 1:
        raise ValueError(
            f"unit tokenizer gives {nu} units and codec {nf} frames for the same {x.shape[1]} samples: "
            f"at {unit_rate:g} and {codec.frame_rate:g} Hz they should be {r} frames per unit"
        )
    u = min(nu, nf // r)
    frame_units = torch.as_tensor(units)[:u].long().repeat_interleave(r)  # [u * r]
    spelled = None
    if letters is not None:
        words = None if text is None or starts is None else list(zip(text.split(), starts, strict=True))
        spelled = letter_windows(words, u, letters, letter_width).repeat_interleave(r, dim=0)  # [u * r, W]
    return frame_units, feats[0, : u * r].float().clone(), spelled


def cache_key(
    manifest: str | os.PathLike,
    splits: list[str] | None,
    unit_tokenizer,
    codec,
    limit: int | None,
    letters: tuple[str, ...] | None = None,
    letter_width: int = 5,
) -> str:
    """Hash of what the cached tensors depend on (the manifest's bytes, or a token store's metadata, the splits, both
    fingerprints, the limit, the letters' alphabet and window)."""
    h = hashlib.sha256()
    source = Path(manifest)
    h.update((source / "token_store.json").read_bytes() if source.is_dir() else source.read_bytes())
    extra = [] if letters is None else [list(letters), letter_width]
    h.update(json.dumps([splits, unit_tokenizer.fingerprint, codec.fingerprint, limit, *extra]).encode())
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
    letters: tuple[str, ...] | None = None,
    letter_width: int = 5,
) -> Utterances:
    """Units and codec features of the utterances in ``splits`` (the first ``limit`` files, in order), and with an
    alphabet ``letters`` the letters of each frame's word (:func:`encode_utterance`); read from / written to
    ``cache_dir`` when given (atomic write).

    ``manifest``: a manifest (each distinct ``audio`` file is encoded by ``unit_tokenizer``), or a token store
    folder that ``unit_tokenizer`` made (``audiopalm tokenize``, with ``--words`` for letters): the units and word
    starts are read from it and only the codec's features are computed (the store's ``audio`` files)."""
    from audiopalm.audio import io as audio_io

    cache = None
    if cache_dir is not None:
        cache = (
            Path(cache_dir) / f"{Path(manifest).stem}-{'+'.join(splits or ['all'])}-"
            f"{cache_key(manifest, splits, unit_tokenizer, codec, limit, letters, letter_width)}"
        )
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    items: list[_Item]
    if Path(manifest).is_dir():
        items = _store_items(manifest, splits, unit_tokenizer, words=letters is not None)[:limit]
    else:
        items = [(p, spk, text, None, None) for p, spk, text in manifest_utterances(manifest, splits)]
        items = items[:limit]
    if not items:
        raise ValueError(f"{manifest}: no rows with audio in splits {splits}")
    units: list[torch.Tensor] = []
    feats: list[torch.Tensor] = []
    spelled: list[torch.Tensor | None] = []
    offsets = [0]

    def encode(item: _Item) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        path, _, text, stored, starts = item
        wav = audio_io.load(path, codec.sample_rate)[0]
        if stored is None:
            return encode_utterance(wav, unit_tokenizer, codec, text=text, letters=letters, letter_width=letter_width)
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32))[None]  # [1, T]
        return align_utterance(x, stored, unit_tokenizer.frame_rate, codec, text, starts, letters, letter_width)

    # one short file per thread, each op on one core (intra-op threads on a file this short only add sync overhead,
    # x10 slower on a busy CPU); the files are spread over one worker per core, in manifest order
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for u, f, s in tqdm(
                pool.map(encode, items),
                total=len(items),
                desc=f"acoustic: features ({Path(manifest).name})",
                unit="utt",
                disable=not progress,
            ):
                units.append(u)
                feats.append(f)
                spelled.append(s)
                offsets.append(offsets[-1] + len(u))
    finally:
        torch.set_num_threads(threads)
    out = Utterances(
        [item[0] for item in items],
        [item[1] for item in items],
        torch.tensor(offsets, dtype=torch.long),
        torch.cat(units),
        torch.cat(feats),
        None if letters is None else torch.cat([x for x in spelled if x is not None]),
    )
    if cache is not None:
        _write_cache(cache, out)
    return out


_Item = tuple[str, str, "str | None", "torch.Tensor | None", "list[int] | None"]
"""(audio path, speaker, transcript, its units from a token store or None, their word starts or None)."""


def _store_items(path: str | os.PathLike, splits: list[str] | None, unit_tokenizer, *, words: bool) -> list[_Item]:
    """The distinct ``audio`` files of a token store's rows in ``splits``, with their stored units (and word starts)."""
    from audiopalm.data.token_store import load_token_store

    store = load_token_store(path, expected_tokenizer=unit_tokenizer)
    if words and not store.meta.words:
        raise ValueError(
            f"{path}: this token store holds no word starts, which a stage that reads letters needs "
            "(re-run `audiopalm tokenize` with --words)"
        )
    columns = ["audio", "speaker", "text", "split", "audio_codes", *(["audio_words"] if words else [])]
    rows = store.dataset.select_columns(columns).with_format(None)
    seen: dict[str, _Item] = {}
    for row in rows:
        if row["audio"] is None or (splits is not None and row["split"] not in splits) or row["audio"] in seen:
            continue
        if not row["speaker"]:
            raise ValueError(
                f"{path}: a row of {row['audio']} has no speaker; the acoustic stage needs one to pair each "
                "utterance with a voice prompt of the same speaker"
            )
        units = torch.as_tensor(np.asarray(row["audio_codes"], dtype=np.int64).reshape(-1))  # one codebook: [U]
        seen[row["audio"]] = (row["audio"], row["speaker"], row["text"], units, row.get("audio_words"))
    return list(seen.values())


def _read_cache(cache: Path) -> Utterances | None:
    from safetensors.torch import load_file

    if not (Path(f"{cache}.safetensors").is_file() and Path(f"{cache}.json").is_file()):
        return None
    t = load_file(f"{cache}.safetensors")
    meta = json.loads(Path(f"{cache}.json").read_text(encoding="utf-8"))
    return Utterances(
        meta["paths"],
        meta["speakers"],
        t["offsets"],
        t["units"].long(),
        t["feats"].float(),
        t["letters"].long() if "letters" in t else None,
    )


def _write_cache(cache: Path, out: Utterances) -> None:
    from safetensors.torch import save_file

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.parent / f".tmp-{cache.name}"
    tensors = {"offsets": out.offsets, "units": out.units.to(torch.int32), "feats": out.feats}
    if out.letters is not None:
        tensors["letters"] = out.letters.to(torch.int16)
    save_file(tensors, f"{tmp}.safetensors")
    Path(f"{tmp}.json").write_text(json.dumps({"paths": out.paths, "speakers": out.speakers}), encoding="utf-8")
    os.replace(f"{tmp}.safetensors", f"{cache}.safetensors")
    os.replace(f"{tmp}.json", f"{cache}.json")


@dataclasses.dataclass
class Batch:
    """A padded batch of pairs. Frames past a length are zero (features) / 0 (units) and never scored."""

    units: torch.Tensor  # [B, U] long
    lengths: torch.Tensor  # [B] long: valid codec frames, a whole number of units
    feats: torch.Tensor  # [B, F, D] target features, F = U * frames_per_unit
    prompt: torch.Tensor  # [B, P, D] voice-prompt features (another utterance of the same speaker)
    prompt_lengths: torch.Tensor  # [B] long
    letters: torch.Tensor | None = None  # [B, U, W] long: the letters of each unit's word (a stage with use_letters)

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
            self.units[idx, :u],
            self.lengths[idx],
            self.feats[idx, :f],
            self.prompt[idx, :p],
            self.prompt_lengths[idx],
            None if self.letters is None else self.letters[idx, :u],
        )

    def to(self, device) -> Batch:
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None
            },
        )


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
    whole units of ``frames_per_unit`` codec frames). Where the set has letters, each target's letters are dropped
    (all padding) with probability ``letter_dropout``, so that the stage also speaks units given without words.
    """

    def __init__(
        self,
        utts: Utterances,
        *,
        max_frames: int,
        max_prompt_frames: int,
        seed: int = 0,
        frames_per_unit: int = 1,
        letter_dropout: float = 0.0,
    ):
        self.utts, self.max_frames, self.max_prompt_frames, self.seed = utts, max_frames, max_prompt_frames, seed
        self.frames_per_unit = frames_per_unit
        if not 0 <= letter_dropout <= 1:
            raise ValueError(f"letter_dropout {letter_dropout}: must be in [0, 1]")
        self.letter_dropout = letter_dropout
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

    def pair(
        self, i: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(units [U], feats [U * frames_per_unit, D], prompt feats [P, D], letters [U, W] or None) for target
        utterance ``i``."""
        others = [j for j in self.by_speaker[self.utts.speakers[i]] if j != i]
        j = others[int(torch.randint(0, len(others), (1,), generator=gen))]
        u, f = self.utts.item(i)
        r = self.frames_per_unit
        a, b = self._crop(len(u) // r, max(self.max_frames // r, 1), gen)  # in units
        _, pf = self.utts.item(j)
        pa, pb = self._crop(len(pf), self.max_prompt_frames, gen)
        spelled = self.utts.item_letters(i)
        if spelled is not None:
            spelled = spelled[a * r : b * r : r]
            if self.letter_dropout and float(torch.rand((), generator=gen)) < self.letter_dropout:
                spelled = torch.zeros_like(spelled)
        return u[a * r : b * r : r], f[a * r : b * r], pf[pa:pb], spelled

    def batch(self, indices: list[int], step: int) -> Batch:
        """The batch of target utterances ``indices`` at ``step`` (prompts and crops drawn from (seed, step))."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pairs = [self.pair(i, gen) for i in indices]
        units, _ = _pad([t[0] for t in pairs])
        feats, lengths = _pad([t[1] for t in pairs])
        prompt, prompt_lengths = _pad([t[2] for t in pairs])
        spelled = None if pairs[0][3] is None else _pad([t[3] for t in pairs])[0]  # type: ignore[misc]
        return Batch(units, lengths, feats, prompt, prompt_lengths, spelled)
