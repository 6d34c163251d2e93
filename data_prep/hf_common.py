"""What the four corpus importers share: open a source, decode audio cells, write wavs + a manifest.

A *source* is one of:

* a Hugging Face hub name (``openslr/librispeech_asr``), opened with ``datasets.load_dataset``
  (streaming by default: these corpora are tens to hundreds of GB and we usually want a slice);
* a local copy written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``);
* a local folder holding a downloaded hub repository (parquet files + README configs), opened with
  ``load_dataset(folder, config)`` like the hub itself;
* a local folder in the corpus' own release layout; each importer reads its own layout and hands
  plain row dicts to :func:`run_import`.

Audio columns are always cast to ``Audio(decode=False)``: datasets' own decoding needs torchcodec,
which we do not depend on. A cell is then ``{"bytes": ..., "path": ...}`` and is decoded here with
:func:`audiopalm.audio.io.load_bytes` (or :func:`audiopalm.audio.io.load` when only a path is stored).

:func:`run_import` is the one loop every importer uses: it materialises each row's audio as a 16-bit
wav next to the manifest (keeping wavs that already exist, so a re-run is cheap and resumes an
interrupted one), validates each record with the manifest's own rules, counts and skips bad rows
with ``skip_bad`` (or stops with an error naming the row), and writes the manifest atomically.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from audiopalm.audio import io as audio
from audiopalm.audio.io import AudioError
from audiopalm.data.manifest import LANGUAGES, ManifestError, Record, parse_line, write_manifest

# Split names differ between releases of the same corpus (CoVoST 2 on the hub says "validation",
# its TSVs and the CVSS release say "dev"); each name maps to the others we try in turn.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "validation": ("dev", "valid"),
    "dev": ("validation", "valid"),
    "valid": ("validation", "dev"),
}

# Corpus language codes that are not an ISO 639-1 code followed by a region: FLEURS writes Mandarin
# as "cmn_hans_cn" and Cantonese as "yue_hant_hk"; both are written Chinese in our task tags.
_LANG_EXCEPTIONS = {"cmn": "zh", "yue": "zh"}


class SourceError(ValueError):
    """A source that cannot be opened or lacks what an importer needs. The message says what to do."""


# ----------------------------------------------------------------------------- languages


def iso_lang(code: str, *, field: str = "language") -> str:
    """Turn a corpus language code into a key of :data:`audiopalm.data.manifest.LANGUAGES`.

    ``"en"`` -> ``"en"``, ``"zh-CN"`` -> ``"zh"``, ``"sv-SE"`` -> ``"sv"``, ``"en_us"`` -> ``"en"``,
    ``"cmn_hans_cn"`` -> ``"zh"``. Raises :class:`SourceError` for a language we have no tag for.
    """
    head = code.strip().replace("-", "_").split("_")[0].lower()
    iso = _LANG_EXCEPTIONS.get(head, head)
    if iso not in LANGUAGES:
        raise SourceError(
            f"{field} {code!r} -> {iso!r} is not a known language; known: "
            f"{', '.join(sorted(LANGUAGES))} (add it to audiopalm.data.manifest.LANGUAGES, "
            "or pass --lang to override)"
        )
    return iso


def parse_pair(pair: str) -> tuple[str, str, str, str]:
    """``"fr_en"`` / ``"en_zh-CN"`` -> ``(src_code, tgt_code, src_iso, tgt_iso)``; codes as the corpus writes them."""
    parts = pair.split("_")
    if len(parts) != 2 or not all(parts):
        raise SourceError(f"pair {pair!r}: expected SRC_TGT, e.g. fr_en or en_de")
    src, tgt = parts
    src_iso, tgt_iso = iso_lang(src, field="pair source"), iso_lang(tgt, field="pair target")
    if src_iso == tgt_iso:
        raise SourceError(f"pair {pair!r}: source and target are both {src_iso!r}")
    return src, tgt, src_iso, tgt_iso


def strip_audio_ext(name: str) -> str:
    """``"clips/common_voice_fr_1.mp3.wav"`` -> ``"common_voice_fr_1"``: the key that joins releases."""
    stem = os.path.basename(name)
    while True:
        root, ext = os.path.splitext(stem)
        if ext.lower() not in (".wav", ".mp3", ".flac", ".ogg", ".opus"):
            return stem
        stem = root


# ----------------------------------------------------------------------------- opening sources


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def _pick_split(dsdict, split: str, where: str):
    for name in (split, *SPLIT_ALIASES.get(split, ())):
        if name in dsdict:
            return dsdict[name]
    raise SourceError(f"{where}: no split {split!r}; it has: {', '.join(dsdict)}")


def open_dataset(
    source: str,
    *,
    config: str | None = None,
    split: str,
    streaming: bool | None = None,
    revision: str | None = None,
    audio_columns: Iterable[str] = ("audio",),
):
    """Open one split of a hub dataset, a ``save_to_disk`` copy, or a local copy of a hub repository,
    with the audio columns cast to ``decode=False``.

    Returns a ``datasets.Dataset`` (local copies, or the hub with ``streaming=False``) or an
    ``IterableDataset`` (the hub, streaming: the default, since these corpora are large). A corpus'
    own release layout is the importer's business, checked before calling this.
    """
    import datasets

    if is_saved_dataset(source):
        ds = datasets.load_from_disk(str(source))
        if isinstance(ds, datasets.DatasetDict):
            ds = _pick_split(ds, split, str(source))
    else:
        # a hub name, or a local folder holding a hub repository's files (parquet + README configs,
        # e.g. from `hf download --repo-type dataset`): streamed from the hub by default, read from disk
        local = Path(source).exists()
        if local and not Path(source).is_dir():
            raise SourceError(f"{source}: a file, expected a hub name or a folder")
        streaming = (not local) if streaming is None else streaming
        try:
            ds = datasets.load_dataset(
                str(source), config, split=split, streaming=streaming, revision=None if local else revision
            )
        except (ConnectionError, FileNotFoundError) as e:
            raise SourceError(
                f"{source}: {e}. Without the hub, pass a save_to_disk copy, a downloaded "
                "copy of the hub repository, or the corpus' release folder as the source"
            ) from None
        except RuntimeError as e:
            if "scripts are no longer supported" in str(e):
                raise SourceError(
                    f"{source}: the hub copy is a loading-script dataset, which datasets>=4 cannot run "
                    "(and audiopalm never runs remote code). Use a parquet copy (another hub name, or "
                    "--revision refs/convert/parquet if the hub has converted it), a save_to_disk copy, "
                    "or the corpus' release folder."
                ) from None
            raise
        except ValueError as e:
            if "split" in str(e).lower():
                raise SourceError(f"{source} ({config}): {e}") from None
            raise
    cols = column_names(ds)
    for col in audio_columns:
        if col not in cols:
            raise SourceError(f"{source}: no {col!r} column; columns: {', '.join(cols)}")
        ds = ds.cast_column(col, datasets.Audio(decode=False))
    return ds


def column_names(ds) -> list[str]:
    """Columns of a dataset; a stream whose features are not declared is asked for its first row."""
    cols = ds.column_names
    if cols is None:  # IterableDataset without declared features
        first = next(iter(ds.take(1)), None)
        cols = list(first) if first is not None else []
    return list(cols)


def require_columns(ds, needed: Iterable[str], where: str) -> None:
    """Raise :class:`SourceError` naming the missing columns of a dataset (or row dict)."""
    cols = column_names(ds) if hasattr(ds, "column_names") else list(ds)
    missing = [c for c in needed if c not in cols]
    if missing:
        raise SourceError(f"{where}: missing column(s) {', '.join(missing)}; has: {', '.join(cols)}")


def class_names(ds, column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` column, or None if the column is not one (or features are unknown)."""
    import datasets

    features = getattr(ds, "features", None)
    if not features or column not in features:
        return None
    feat = features[column]
    return list(feat.names) if isinstance(feat, datasets.ClassLabel) else None


class LazyCell:
    """An audio cell in row ``i`` of a map-style dataset, read only when :meth:`get` is called
    (joins index the other side by id without holding its audio in memory)."""

    def __init__(self, ds, i: int, column: str = "audio"):
        self.ds, self.i, self.column = ds, i, column

    def get(self):
        return self.ds[self.i][self.column]


def dataset_len(ds) -> int | None:
    """Number of rows if known without iterating (map-style datasets), else None."""
    try:
        return len(ds)
    except TypeError:
        return None


def read_tsv(path: Path, *, header: bool) -> Iterator[tuple[int, list[str] | dict]]:
    """Rows of a tab-separated file as ``(line_number, fields)``; dicts keyed by the header if ``header``.

    Corpus TSVs contain bare quotes in the text, so no CSV quoting is applied: a line is split on tabs.
    """
    with path.open(encoding="utf-8") as f:
        names = None
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cells = line.split("\t")
            if header and names is None:
                names = cells
                continue
            if names is not None:
                if len(cells) != len(names):
                    raise SourceError(f"{path}:{lineno}: {len(cells)} fields, header has {len(names)}")
                yield lineno, dict(zip(names, cells, strict=True))
            else:
                yield lineno, cells


# ----------------------------------------------------------------------------- audio


def decode_cell(cell, *, name: str, base_dir: str | os.PathLike | None = None, sample_rate: int | None = None):
    """Decode an ``Audio(decode=False)`` cell ``{"bytes", "path"}`` -> ``(wav [T] float32, sr)``.

    Bytes win when present; otherwise the path is read (relative paths against ``base_dir``).
    Raises :class:`AudioError` naming ``name`` for a missing, unreadable or invalid waveform.
    """
    if cell is None:
        raise AudioError(f"{name}: no audio in this row")
    if isinstance(cell, (str, os.PathLike)):
        cell = {"bytes": None, "path": str(cell)}
    if not isinstance(cell, dict):
        raise AudioError(f"{name}: audio cell is a {type(cell).__name__}, expected {{'bytes', 'path'}}")
    data, path = cell.get("bytes"), cell.get("path")
    if data:
        return audio.load_bytes(data, sample_rate, name=f"{name} ({path or 'bytes'})")
    if path:
        p = Path(path)
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        return audio.load(p, sample_rate)
    raise AudioError(f"{name}: audio cell has neither bytes nor a path")


def _wav_is_usable(path: Path, sample_rate: int | None) -> bool:
    """An existing wav is kept if it decodes whole (not truncated, see :func:`audiopalm.audio.io.load`) and,
    when a rate is asked for, has that rate."""
    try:
        _, sr = audio.load(path)
    except AudioError:
        return False
    return sample_rate is None or sr == sample_rate


def materialise(cell, dest: Path, *, name: str, sample_rate: int | None = None) -> bool:
    """Write ``cell``'s audio to the wav ``dest`` unless a usable one is there. True if written."""
    if dest.is_file() and _wav_is_usable(dest, sample_rate):
        return False
    wav, sr = decode_cell(cell, name=name, sample_rate=sample_rate)  # [T]
    tmp = dest.with_name(dest.stem + ".partial.wav")  # a crash mid-write never leaves a "done" wav
    audio.save(tmp, wav, sr)
    os.replace(tmp, dest)
    return True


# ----------------------------------------------------------------------------- the import loop


@dataclasses.dataclass
class Item:
    """One row on its way to the manifest: the record (audio fields = absolute destination wavs)
    and the audio cells to write there."""

    record: Record
    """The manifest line; ``audio`` / ``tgt_audio`` are the absolute wav paths to write."""
    audio: object
    """Audio cell of the source side (``{"bytes", "path"}``, or a path)."""
    tgt_audio: object = None
    """Audio cell of the target side (CVSS), or None."""


@dataclasses.dataclass
class ImportStats:
    """What :func:`run_import` did, printed as a one-line summary."""

    written: int = 0
    """Records in the manifest."""
    wavs_new: int = 0
    """Wav files decoded and written this run."""
    wavs_kept: int = 0
    """Wav files that already existed and were kept."""
    bad: int = 0
    """Rows skipped for bad audio or fields (only with ``skip_bad``)."""
    errors: list[str] = dataclasses.field(default_factory=list)
    """The messages of the skipped rows."""
    other_skips: dict[str, int] = dataclasses.field(default_factory=dict)
    """Rows left out for a reason that is not an error (e.g. another split, no CVSS target)."""

    def summary(self) -> str:
        parts = [f"{self.written} records", f"{self.wavs_new} wavs written", f"{self.wavs_kept} kept"]
        if self.bad:
            parts.append(f"{self.bad} bad rows skipped (first: {self.errors[0]})")
        parts += [f"{n} skipped: {why}" for why, n in self.other_skips.items()]
        return ", ".join(parts)


def run_import(
    items: Iterable[Item | str],
    manifest: str | os.PathLike,
    *,
    max_items: int | None = None,
    skip_bad: bool = False,
    sample_rate: int | None = None,
    desc: str = "importing",
    total: int | None = None,
    progress: bool = True,
    stats: ImportStats | None = None,
) -> tuple[Path, ImportStats]:
    """Materialise audio and write the manifest; returns ``(manifest_path, stats)``.

    ``items`` yields :class:`Item` s; a plain string yielded instead is a *reason* a row was left out
    on purpose (counted in ``stats.other_skips``). A row whose audio is bad, or whose record breaks
    the manifest rules, raises (naming the row) unless ``skip_bad``, in which case it is counted. Ids
    come from the dataset and become file names: an id that is not a safe file-name stem (a path
    separator, ``..``, a control character) breaks the manifest rules, and every wav path is checked to
    lie inside the manifest's folder before anything is written.
    Stops after ``max_items`` good records. Wavs that already exist are kept (idempotent).
    """
    from tqdm import tqdm

    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
    manifest = Path(manifest)
    root = manifest.parent.resolve()
    stats = stats or ImportStats()
    records: list[Record] = []
    seen: set[str] = set()
    if total is not None and max_items is not None:
        total = min(total, max_items)
    bar = tqdm(total=total or max_items, desc=desc, unit="utt", disable=not progress, file=sys.stderr)
    try:
        for row_no, item in enumerate(items):
            if isinstance(item, str):
                stats.other_skips[item] = stats.other_skips.get(item, 0) + 1
                continue
            rec = item.record
            try:
                if rec.id in seen:
                    raise ManifestError(manifest, row_no, "id", f"duplicate id {rec.id!r}")
                parse_line(rec.to_json(root), path=f"{desc}: id {rec.id!r}: row", line=row_no)
                dests = [
                    (f, Path(getattr(rec, f)), c)
                    for f, c in (("audio", item.audio), ("tgt_audio", item.tgt_audio))
                    if getattr(rec, f) is not None
                ]
                for field, dest, _ in dests:  # all checked before any is written
                    if root not in dest.resolve().parents:
                        raise ManifestError(manifest, row_no, field, f"{dest} lies outside {root} (id {rec.id!r})")
                for field, dest, cell in dests:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    new = materialise(cell, dest, name=f"row {row_no} (id {rec.id}) {field}", sample_rate=sample_rate)
                    stats.wavs_new += new
                    stats.wavs_kept += not new
            except (AudioError, ManifestError) as e:
                if not skip_bad:
                    if isinstance(e, AudioError):
                        raise AudioError(f"{e} (pass --skip-bad to count and skip bad rows)") from None
                    raise
                stats.bad += 1
                stats.errors.append(str(e))
                continue
            seen.add(rec.id)
            records.append(rec)
            stats.written += 1
            bar.update(1)
            if max_items is not None and stats.written >= max_items:
                break
    finally:
        bar.close()
    if not records:
        raise SourceError(f"no records to write to {manifest}: {stats.summary()}")
    write_manifest(manifest, records)
    return manifest, stats


def report(corpus: str, manifest: Path, stats: ImportStats) -> None:
    """Print the import summary (stderr) in one place, so every importer says the same thing."""
    print(f"{corpus}: wrote {manifest}: {stats.summary()}", file=sys.stderr)
    if stats.bad:
        for msg in stats.errors[:10]:
            print(f"  bad: {msg}", file=sys.stderr)
        if stats.bad > 10:
            print(f"  ... and {stats.bad - 10} more", file=sys.stderr)
