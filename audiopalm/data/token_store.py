"""Token stores: a manifest's audio turned into codes once, saved as a ``datasets`` dataset on disk.

Layout of a store folder::

    STORE/
      token_store.json     metadata: tokenizer fingerprint/type/config, K, codebook size, frame rate,
                           rows, skipped rows; written last, so its presence means "complete"
      dataset/             datasets.Dataset.save_to_disk: one row per manifest row, columns
                           id, lang, text, audio, tgt_lang, tgt_text, tgt_audio, speaker, split
                           (audio paths absolute), audio_codes [K, F] and tgt_audio_codes [K, F']
                           (None when the row has no audio / tgt_audio: a text-only row keeps its
                           text for MT and LM tasks), codes as int16 (int32 if they need it); with
                           ``words`` also audio_words and tgt_audio_words: the frame at which each word
                           of text / tgt_text starts in those codes (audiopalm/tokenizers/ctc_align.py)
      shards/              work in progress (removed when done unless keep_shards): plan.json and
                           one finished shard of unique audio files per folder

Building is resumable: the unique audio files are sorted by duration and cut into shards; each
shard is written atomically when done, and a re-run with the same manifest and tokenizer skips the
finished shards. A wav that several rows share (a source utterance paired with several translations)
is encoded once.

Contract: training refuses a store whose fingerprint differs from its audio tokenizer's:
:func:`load_token_store` with ``expected_fingerprint`` / ``expected_tokenizer`` raises
:class:`TokenStoreMismatch` naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import FIELDS, Record, read_manifest

if TYPE_CHECKING:
    import datasets  # imported where used: loading it costs seconds

META_NAME = "token_store.json"
DATASET_DIR = "dataset"
SHARDS_DIR = "shards"
PLAN_NAME = "plan.json"
CODE_COLUMNS = ("audio_codes", "tgt_audio_codes")
WORD_COLUMNS = {"audio_codes": "audio_words", "tgt_audio_codes": "tgt_audio_words"}
"""Per code column, the column of its word starts (stores built with ``words``)."""


class TokenStoreError(ValueError):
    """A store folder that is missing, incomplete or inconsistent. The message names the folder."""


class TokenStoreMismatch(TokenStoreError):
    """The store was made by a different audio tokenizer than the one expected."""


@dataclasses.dataclass
class StoreMeta:
    """What ``token_store.json`` holds."""

    fingerprint: str
    """:attr:`AudioTokenizer.fingerprint` of the tokenizer that made the codes."""
    tokenizer_type: str
    """Its registry name (``mel_rvq``, ``hf_codec``, ``semantic``)."""
    tokenizer_config: dict
    """Its :meth:`get_config`."""
    num_codebooks: int
    """K: rows of every ``audio_codes`` array."""
    codebook_size: int
    """Every code is in ``[0, codebook_size)``."""
    frame_rate: float
    """Code frames per second of audio."""
    sample_rate: int
    """Rate the audio was resampled to before encoding."""
    num_rows: int
    """Rows in the dataset (manifest rows less skipped ones)."""
    num_audio_files: int
    """Unique audio files encoded."""
    manifest: str | None = None
    """The manifest it was built from, if it came from a file."""
    plan_hash: str = ""
    """Hash of (rows, audio files, tokenizer): a re-run with the same inputs finds the store done."""
    skipped: list = dataclasses.field(default_factory=list)
    """``{"id", "field", "error"}`` of each manifest row left out because of bad audio (``skip_bad``)."""
    words: bool = False
    """Whether the rows hold ``audio_words`` / ``tgt_audio_words``: where each word of the transcript starts."""

    def describe(self) -> str:
        """One line naming the tokenizer, for error messages."""
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.tokenizer_config.items()) if v is not None)
        return (
            f"{self.tokenizer_type}({opts}) [K={self.num_codebooks}, codebook_size={self.codebook_size}, "
            f"{self.frame_rate:g} Hz], fingerprint {self.fingerprint}"
        )


def describe_tokenizer(tokenizer) -> str:
    """The same one-line description for a live tokenizer."""
    return StoreMeta(
        tokenizer.fingerprint,
        tokenizer.type_name,
        tokenizer.get_config(),
        tokenizer.num_codebooks,
        tokenizer.codebook_size,
        tokenizer.frame_rate,
        tokenizer.sample_rate,
        0,
        0,
    ).describe()


@dataclasses.dataclass
class TokenStore:
    """A loaded store: the dataset (code columns as numpy [K, F] arrays) and its metadata."""

    path: Path
    """The store folder."""
    dataset: datasets.Dataset
    """One row per kept manifest row; ``store.dataset[i]["audio_codes"]`` is an int array [K, F]."""
    meta: StoreMeta
    """Contents of ``token_store.json``."""
    stats: dict = dataclasses.field(default_factory=dict)
    """Set by :func:`build_token_store`: shards total / computed / reused, files encoded."""

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]

    def codes(self, i: int, field: str = "audio_codes") -> np.ndarray | None:
        """Codes of row ``i``: [K, F] int64, or None (no ``tgt_audio``)."""
        if field not in CODE_COLUMNS:
            raise KeyError(f"field {field!r}: expected one of {CODE_COLUMNS}")
        value = self.dataset[i][field]
        return None if value is None else np.asarray(value, dtype=np.int64).reshape(self.meta.num_codebooks, -1)


# ----------------------------------------------------------------------------- loading


def read_meta(path: str | os.PathLike) -> StoreMeta:
    """Read ``token_store.json``; a missing one means the store is not (yet) complete."""
    path = Path(path)
    meta_file = path / META_NAME
    if not meta_file.is_file():
        hint = (
            " (an unfinished build: re-run `audiopalm tokenize` to finish it)" if (path / SHARDS_DIR).is_dir() else ""
        )
        raise TokenStoreError(f"{path}: not a token store, no {META_NAME}{hint}")
    try:
        raw = json.loads(meta_file.read_text())
        return StoreMeta(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise TokenStoreError(f"{meta_file}: unreadable store metadata ({e})") from None


def load_token_store(
    path: str | os.PathLike, *, expected_fingerprint: str | None = None, expected_tokenizer=None
) -> TokenStore:
    """Load a store. With ``expected_fingerprint`` (or ``expected_tokenizer``, an :class:`AudioTokenizer`
    whose fingerprint and description are used), refuse a store made by another tokenizer with
    :class:`TokenStoreMismatch`."""
    import datasets

    path = Path(path)
    meta = read_meta(path)
    if expected_tokenizer is not None:
        expected_fingerprint = expected_tokenizer.fingerprint
    if expected_fingerprint is not None and expected_fingerprint != meta.fingerprint:
        expected = (
            describe_tokenizer(expected_tokenizer)
            if expected_tokenizer is not None
            else f"a tokenizer with fingerprint {expected_fingerprint}"
        )
        raise TokenStoreMismatch(
            f"{path}: token store fingerprint {meta.fingerprint} != expected {expected_fingerprint}.\n"
            f"  store was made by:  {meta.describe()}\n  expected tokenizer: {expected}\n"
            "Codes from one tokenizer mean nothing to a model trained on another: re-run `audiopalm tokenize` "
            "with the model's audio tokenizer, or train with the tokenizer that made this store."
        )
    if not (path / DATASET_DIR).is_dir():
        raise TokenStoreError(f"{path}: {META_NAME} present but no {DATASET_DIR}/ folder")
    ds = datasets.load_from_disk(str(path / DATASET_DIR))
    if len(ds) != meta.num_rows:
        raise TokenStoreError(f"{path}: {len(ds)} rows on disk but {META_NAME} says {meta.num_rows}")
    ds = ds.with_format("numpy", columns=list(CODE_COLUMNS), output_all_columns=True)
    return TokenStore(path=path, dataset=ds, meta=meta)


def check_token_store(path: str | os.PathLike, *, progress: bool = True) -> dict:
    """Check every row (K rows per array, codes in range, frames > 0); return a summary, raise on problems."""
    store = load_token_store(path)
    m = store.meta
    frames = {"audio_codes": 0, "tgt_audio_codes": 0}
    problems: list[str] = []
    for i in tqdm(range(len(store)), desc="checking store", disable=not progress, unit="row"):
        row = store.dataset[i]
        for field in CODE_COLUMNS:
            c = row[field]
            if c is None:
                if field == "audio_codes" and row.get("audio") is not None:
                    problems.append(f"row {i} ({row['id']}): no audio_codes")
                continue
            c = np.asarray(c)
            if c.ndim != 2 or c.shape[0] != m.num_codebooks or c.shape[1] == 0:
                problems.append(f"row {i} ({row['id']}): {field} shape {c.shape}, expected [{m.num_codebooks}, F>0]")
            elif c.min() < 0 or c.max() >= m.codebook_size:
                problems.append(
                    f"row {i} ({row['id']}): {field} codes in [{c.min()}, {c.max()}], outside [0, {m.codebook_size})"
                )
            else:
                frames[field] += c.shape[1]
        for path_field, field in (("audio", "audio_codes"), ("tgt_audio", "tgt_audio_codes")):
            if (row.get(path_field) is None) != (row[field] is None):
                problems.append(f"row {i} ({row['id']}): {path_field} and {field} disagree")
    if problems:
        raise TokenStoreError(f"{path}: {len(problems)} bad row(s); first: " + "; ".join(problems[:5]))
    text_only = sum(1 for a in store.dataset["audio"] if a is None)
    return {
        "path": str(path),
        "rows": len(store),
        "text_only": text_only,
        "skipped": len(m.skipped),
        "tokenizer": m.describe(),
        "frames": frames["audio_codes"],
        "tgt_frames": frames["tgt_audio_codes"],
        "hours": frames["audio_codes"] / m.frame_rate / 3600,
        "tgt_hours": frames["tgt_audio_codes"] / m.frame_rate / 3600,
    }


# ----------------------------------------------------------------------------- building


def _plan(records: Sequence[Record], tokenizer, shard_size: int, skip_bad: bool) -> tuple[list[list[str]], dict, dict]:
    """Unique audio files sorted by duration, cut into shards. Returns (shards, durations, header errors)."""
    first_use: dict[str, str] = {}
    for rec in records:
        for p in (rec.audio, rec.tgt_audio):
            if p is not None:
                first_use.setdefault(p, rec.id)
    durations, errors = {}, {}
    for p, rid in first_use.items():
        try:
            if not os.path.isfile(p):
                raise audio_io.AudioError(f"{p}: no such audio file")
            durations[p] = audio_io.duration(p)
        except audio_io.AudioError as e:
            if not skip_bad:
                raise audio_io.AudioError(
                    f"{e} (manifest row {rid!r}; use skip_bad / --skip-bad to skip such rows)"
                ) from None
            errors[p] = str(e)
    order = sorted(durations, key=lambda p: (durations[p], p))
    shards = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
    return shards, durations, errors


def _batches(paths: list[str], durations: dict, batch_seconds: float) -> list[list[str]]:
    """Greedy batches of duration-sorted paths whose padded size (n x longest) stays under ``batch_seconds``."""
    out: list[list[str]] = []
    cur: list[str] = []
    for p in paths:
        if cur and (len(cur) + 1) * max(durations[p], durations[cur[-1]]) > batch_seconds:
            out.append(cur)
            cur = []
        cur.append(p)
    if cur:
        out.append(cur)
    return out


def _load(path: str, sample_rate: int):
    try:
        return audio_io.load(path, sample_rate)[0]
    except audio_io.AudioError as e:
        return e


def _encode_shard(
    paths: list[str],
    durations: dict,
    tokenizer,
    *,
    batch_seconds: float,
    pool: ThreadPoolExecutor,
    skip_bad: bool,
    bar,
    code_dtype,
    texts: dict | None = None,
) -> dict:
    """Encode one shard's files. Returns columns {"path", "codes", "error"}, and "words" (the frame at which each
    word of the file's transcript starts) when ``texts`` maps each path to its transcript (or None)."""
    cols: dict[str, list] = {"path": [], "codes": [], "error": [], **({"words": []} if texts is not None else {})}
    batches = _batches(sorted(paths, key=lambda p: (durations[p], p)), durations, batch_seconds)
    pending = [pool.submit(_load, p, tokenizer.sample_rate) for p in batches[0]] if batches else []
    for bi, batch in enumerate(batches):
        wavs = [f.result() for f in pending]
        if bi + 1 < len(batches):  # read the next batch while this one is encoded
            pending = [pool.submit(_load, p, tokenizer.sample_rate) for p in batches[bi + 1]]
        good = []
        for p, w in zip(batch, wavs, strict=True):
            if isinstance(w, Exception):
                if not skip_bad:
                    raise audio_io.AudioError(f"{w} (use skip_bad / --skip-bad to skip rows with bad audio)") from None
                cols["path"].append(p)
                cols["codes"].append(None)
                cols["error"].append(str(w))
                if texts is not None:
                    cols["words"].append(None)
            else:
                good.append((p, w))
        if good:
            lengths = torch.tensor([len(w) for _, w in good])
            wav = torch.zeros(len(good), int(lengths.max()))  # [B, T]
            for i, (_, w) in enumerate(good):
                wav[i, : len(w)] = torch.from_numpy(w)
            with torch.inference_mode():
                if texts is None:
                    codes, frames = tokenizer.encode(wav, lengths)  # [B, K, F], [B]
                else:
                    codes, frames, starts = tokenizer.encode_words(wav, lengths, [texts.get(p) for p, _ in good])
                    cols["words"] += starts
            codes = codes.cpu().numpy()
            for i, (p, _) in enumerate(good):
                c = codes[i, :, : int(frames[i])]
                assert c.shape[0] == tokenizer.num_codebooks and c.shape[1] > 0, (
                    f"{p}: tokenizer returned codes of shape {c.shape} (frames {int(frames[i])})"
                )
                cols["path"].append(p)
                cols["codes"].append(c.astype(code_dtype))
                cols["error"].append(None)
        bar.update(len(batch))
    return cols


def _row_generator(records: list[dict], shard_dirs: list[str], words: bool = False):
    """Rows of the final dataset: manifest fields + codes (and word starts) looked up (memory-mapped) by path."""
    import datasets

    shards = [datasets.load_from_disk(d) for d in shard_dirs]
    where = {}
    for si, ds in enumerate(shards):
        for ri, p in enumerate(ds["path"]):
            where[p] = (si, ri)
    for rec in records:
        row = dict(rec)
        for field, col in (("audio", "audio_codes"), ("tgt_audio", "tgt_audio_codes")):
            p = rec.get(field)
            hit = None if p is None else shards[where[p][0]][where[p][1]]  # one read of the shard row
            row[col] = None if hit is None else hit["codes"]
            if words:
                row[WORD_COLUMNS[col]] = None if hit is None else hit["words"]
        yield row


def _write_dataset(
    out_dir: Path, header_errors: dict, shard_dirs: list[str], rows_json: list[dict], code_dtype, words: bool = False
):
    """Join manifest rows with their shards' codes into ``out_dir/dataset``. Returns (kept, skipped, bad files)."""
    import datasets

    bad = dict(header_errors)  # bad files: from headers (planning) and from decoding (shards)
    for d in shard_dirs:
        ds = datasets.load_from_disk(d)
        for p, err in zip(ds["path"], ds["error"], strict=True):
            if err is not None:
                bad[p] = err
    kept, skipped = [], []
    for row in rows_json:
        why = next(((f, bad[row[f]]) for f in ("audio", "tgt_audio") if row[f] is not None and row[f] in bad), None)
        if why:
            skipped.append({"id": row["id"], "field": why[0], "error": why[1]})
        else:
            kept.append(row)
    if not kept:
        raise TokenStoreError(f"{out_dir}: every row has bad audio ({len(skipped)} skipped); first: {skipped[0]}")
    code_feature = datasets.List(datasets.List(datasets.Value(np.dtype(code_dtype).name)))
    word_feature = {c: datasets.List(datasets.Value("int32")) for c in WORD_COLUMNS.values()} if words else {}
    features = datasets.Features(
        {**{f: datasets.Value("string") for f in FIELDS}, **{c: code_feature for c in CODE_COLUMNS}, **word_feature}
    )
    cache = out_dir / ".cache"
    ds = datasets.Dataset.from_generator(
        _row_generator,
        features=features,
        cache_dir=str(cache),
        gen_kwargs={"records": tuple(kept), "shard_dirs": tuple(shard_dirs), "words": words},
    )  # tuples: not split
    tmp = out_dir / (DATASET_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    del ds
    shutil.rmtree(out_dir / DATASET_DIR, ignore_errors=True)
    os.replace(tmp, out_dir / DATASET_DIR)
    shutil.rmtree(cache, ignore_errors=True)
    return kept, skipped, bad


def build_token_store(
    manifest: str | os.PathLike | Sequence[Record],
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    batch_seconds: float = 60.0,
    num_proc: int | None = None,
    shard_size: int = 256,
    skip_bad: bool = False,
    progress: bool = True,
    keep_shards: bool = False,
    words: bool = False,
) -> TokenStore:
    """Encode every audio file of ``manifest`` with ``tokenizer`` into a store at ``out_dir``.

    - ``batch_seconds``: files are sorted by duration and batched up to this much padded audio.
    - ``num_proc``: torch threads for encoding, and threads reading audio ahead (default: all cores).
    - ``shard_size``: unique files per shard, the unit of resumption.
    - ``skip_bad``: a row whose audio or tgt_audio is unreadable is left out, counted, and listed in
      the metadata and a printed summary; otherwise the first bad file raises :class:`AudioError`.
    - ``keep_shards``: keep ``shards/`` after the dataset is written (default: delete it).
    - ``words``: also store where each word of a file's transcript (``text`` for ``audio``, ``tgt_text`` for
      ``tgt_audio``) starts in its codes (columns ``audio_words`` / ``tgt_audio_words``), aligned by the
      tokenizer's own CTC head (``ctc_units`` without dedup: :meth:`encode_words`), in the same pass.

    Re-running after an interruption recomputes only the missing shards; re-running a finished store
    with the same manifest and tokenizer returns it at once.
    """
    import datasets

    if batch_seconds <= 0 or shard_size < 1:
        raise ValueError(f"batch_seconds={batch_seconds} must be > 0 and shard_size={shard_size} >= 1")
    out_dir = Path(out_dir)
    manifest_path = None
    if isinstance(manifest, (str, os.PathLike)):
        manifest_path = str(Path(manifest).resolve())
        records = read_manifest(manifest, skip_bad=skip_bad)  # bad lines: an error, or counted and skipped
    else:
        records = list(manifest)
    if not records:
        raise ValueError(f"{manifest_path or 'manifest'}: no rows to tokenize")
    texts: dict[str, str | None] | None = None
    if words:
        if not hasattr(tokenizer, "encode_words") or tokenizer.get_config().get("dedup"):
            raise ValueError(
                f"words: the {tokenizer.type_name} tokenizer cannot align words to its frames (a ctc_units tokenizer "
                "without dedup can: its CTC head spells the transcript)"
            )
        texts = {}
        for rec in records:
            for path, text in ((rec.audio, rec.text), (rec.tgt_audio, rec.tgt_text)):
                if path is not None:
                    texts.setdefault(path, text or None)
    fingerprint = tokenizer.fingerprint
    shards, durations, header_errors = _plan(records, tokenizer, shard_size, skip_bad)
    plan = {
        "fingerprint": fingerprint,
        "shard_size": shard_size,
        "shards": shards,
        **({"words": True} if words else {}),
    }
    rows_json = [{f: getattr(r, f) for f in FIELDS} for r in records]
    # what the finished store depends on (not how the work was cut into shards or batches)
    plan_hash = hashlib.sha256(
        json.dumps(
            [fingerprint, rows_json, sorted(durations), sorted(header_errors), *(["words"] if words else [])],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]

    if (out_dir / META_NAME).is_file():
        meta = read_meta(out_dir)
        if meta.plan_hash == plan_hash:
            store = load_token_store(out_dir, expected_fingerprint=fingerprint)
            store.stats = {"shards": len(shards), "computed": 0, "reused": len(shards), "files_encoded": 0}
            print(
                f"{out_dir}: already complete for this manifest and tokenizer ({meta.num_rows} rows)", file=sys.stderr
            )
            return store
        raise TokenStoreError(
            f"{out_dir}: holds a finished store of another manifest or tokenizer "
            f"({meta.describe()}); choose another output folder or delete it"
        )

    shard_root = out_dir / SHARDS_DIR
    shard_root.mkdir(parents=True, exist_ok=True)
    plan_file = shard_root / PLAN_NAME
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old != plan:
            raise TokenStoreError(
                f"{out_dir}: holds an unfinished build of another manifest, tokenizer or shard "
                f"size (fingerprint {old.get('fingerprint')} vs {fingerprint}, shard size "
                f"{old.get('shard_size')} vs {shard_size}); delete {shard_root} or choose another output folder"
            )
    else:
        plan_file.write_text(json.dumps(plan) + "\n")

    code_dtype = np.int16 if tokenizer.codebook_size <= np.iinfo(np.int16).max + 1 else np.int32
    shard_dirs = [str(shard_root / f"shard-{i:05d}") for i in range(len(shards))]
    todo = [i for i, d in enumerate(shard_dirs) if not Path(d).is_dir()]
    done_files = sum(len(shards[i]) for i in range(len(shards)) if i not in set(todo))
    if len(todo) < len(shards):
        print(f"{out_dir}: resuming, {len(shards) - len(todo)} of {len(shards)} shards already done", file=sys.stderr)

    num_proc = num_proc or os.cpu_count() or 1
    threads_before = torch.get_num_threads()
    torch.set_num_threads(num_proc)
    bars_before = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    shard_features = datasets.Features(
        {
            "path": datasets.Value("string"),
            "codes": datasets.List(datasets.List(datasets.Value(np.dtype(code_dtype).name))),
            "error": datasets.Value("string"),
            **({"words": datasets.List(datasets.Value("int32"))} if words else {}),
        }
    )
    try:
        with (
            ThreadPoolExecutor(max_workers=max(1, min(4, num_proc))) as pool,
            tqdm(
                total=sum(len(s) for s in shards),
                initial=done_files,
                desc="tokenizing",
                unit="file",
                disable=not progress,
            ) as bar,
        ):
            for i in todo:
                cols = _encode_shard(
                    shards[i],
                    durations,
                    tokenizer,
                    batch_seconds=batch_seconds,
                    pool=pool,
                    skip_bad=skip_bad,
                    bar=bar,
                    code_dtype=code_dtype,
                    texts=texts,
                )
                tmp = Path(shard_dirs[i] + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                datasets.Dataset.from_dict(cols, features=shard_features).save_to_disk(str(tmp))
                os.replace(tmp, shard_dirs[i])  # a shard is there whole or not at all
        _assembled = _write_dataset(out_dir, header_errors, shard_dirs, rows_json, code_dtype, words)
    finally:
        torch.set_num_threads(threads_before)
        if bars_before:
            datasets.enable_progress_bars()

    kept, skipped, bad = _assembled
    meta = StoreMeta(
        fingerprint=fingerprint,
        tokenizer_type=tokenizer.type_name,
        tokenizer_config=tokenizer.get_config(),
        num_codebooks=tokenizer.num_codebooks,
        codebook_size=tokenizer.codebook_size,
        frame_rate=float(tokenizer.frame_rate),
        sample_rate=int(tokenizer.sample_rate),
        num_rows=len(kept),
        num_audio_files=len(durations) - len(bad.keys() - header_errors.keys()),
        manifest=manifest_path,
        plan_hash=plan_hash,
        skipped=skipped,
        words=words,
    )
    tmp_meta = out_dir / (META_NAME + ".tmp")  # the "complete" marker: whole or absent
    tmp_meta.write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
    os.replace(tmp_meta, out_dir / META_NAME)
    if skipped:
        print(
            f"{out_dir}: skipped {len(skipped)} of {len(rows_json)} rows ({len(bad)} bad audio files); "
            f"first: {skipped[0]['id']}: {skipped[0]['field']}: {skipped[0]['error']}",
            file=sys.stderr,
        )
    if not keep_shards:
        shutil.rmtree(shard_root, ignore_errors=True)
    store = load_token_store(out_dir, expected_fingerprint=fingerprint)
    store.stats = {
        "shards": len(shards),
        "computed": len(todo),
        "reused": len(shards) - len(todo),
        "files_encoded": sum(len(shards[i]) for i in todo),
    }
    return store
