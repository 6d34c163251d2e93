"""CoVoST 2 (Common Voice speech + translations, 21 X->en and 15 en->X pairs) -> manifest, for AST.

Sources (``source=``):

* a hub dataset with the CoVoST 2 columns ``client_id``, ``file``, ``audio``, ``sentence``,
  ``translation``, ``id`` and one config per pair (``fr_en``, ``en_de``, ``zh-CN_en``...), splits
  ``train`` / ``validation`` / ``test``. The official ``facebook/covost2`` is a loading script over a
  local Common Voice 4 download, which ``datasets>=4`` cannot run: use a parquet copy with the same
  columns, a ``save_to_disk`` copy, or the release folder below.
* a ``save_to_disk`` copy with those columns, or a downloaded copy of a hub repository with them;
* the release folder: ``covost_v2.SRC_TGT.tsv`` (from the CoVoST 2 release; columns ``path``,
  ``sentence``, ``translation``, ``split``, optionally ``client_id``) with the Common Voice 4
  ``clips/`` folder next to it, or given as ``clips_dir``. TSV split ``dev`` is ``validation``, and
  ``train_covost`` rows are part of ``train``.

Writes ``OUT/covost2.SRC_TGT.SPLIT.jsonl`` and ``OUT/audio/commonvoice/CLIP.wav`` (shared by every
pair and by the CVSS importer, so a clip is decoded once). Records: ``id``
``cv2-SRC_TGT-CLIP``, ``lang`` / ``tgt_lang`` the ISO codes of the pair (``zh-CN`` -> ``zh``),
``text`` the transcript, ``tgt_text`` the translation, ``speaker`` ``cv-`` + the client id's first
16 characters, ``split``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from audiopalm.data.manifest import Record
from data_prep import hf_common as hc

HUB_NAME = "facebook/covost2"
COLUMNS = ("id", "sentence", "translation", "audio")
TSV_COLUMNS = ("path", "sentence", "translation", "split")


def _tsv_rows(folder: Path, pair: str, split: str, clips_dir: Path | None) -> Iterator[dict | str]:
    """Rows of a CoVoST 2 release TSV for one split; other splits are yielded as a skip reason."""
    tsv = folder if folder.is_file() else folder / f"covost_v2.{pair}.tsv"
    if not tsv.is_file():
        raise hc.SourceError(
            f"{folder}: no {tsv.name} (expected the CoVoST 2 release TSV for pair {pair}), and not a save_to_disk copy"
        )
    clips = clips_dir or tsv.parent / "clips"
    if not Path(clips).is_dir():
        raise hc.SourceError(f"{clips}: no Common Voice clips folder; pass clips_dir (--clips)")
    wanted = {split, *hc.SPLIT_ALIASES.get(split, ())}
    if split == "train":
        wanted.add("train_covost")
    rows = hc.read_tsv(tsv, header=True)
    first = True
    for _lineno, row in rows:
        assert isinstance(row, dict), row  # header=True: rows keyed by the header
        if first:
            hc.require_columns(row, TSV_COLUMNS, str(tsv))
            first = False
        if row["split"] not in wanted:
            yield f"split {row['split']!r}"
            continue
        yield {
            "id": hc.strip_audio_ext(row["path"]),
            "sentence": row["sentence"],
            "translation": row["translation"],
            "client_id": row.get("client_id"),
            "audio": {"bytes": None, "path": str(Path(clips) / row["path"])},
        }


def covost_rows(
    source: str,
    *,
    pair: str,
    split: str,
    clips_dir: str | os.PathLike | None = None,
    config: str | None = None,
    streaming: bool | None = None,
    revision: str | None = None,
) -> tuple[Iterator[dict | str], int | None]:
    """``(rows, total)`` of a CoVoST 2 source; each row has ``clip`` (Common Voice file stem, the key
    CVSS joins on), ``sentence``, ``translation``, ``client_id``, ``audio``. Strings are skip reasons."""
    p = Path(source)
    if p.is_file() or (p.is_dir() and next(p.glob("covost_v2.*.tsv"), None) is not None):
        rows, total = _tsv_rows(Path(source), pair, split, Path(clips_dir) if clips_dir else None), None
    else:
        ds = hc.open_dataset(source, config=config or pair, split=split, streaming=streaming, revision=revision)
        hc.require_columns(ds, COLUMNS, source)
        rows, total = ds, hc.dataset_len(ds)

    def normalised():
        for row in rows:
            if isinstance(row, str):
                yield row
                continue
            clip = hc.strip_audio_ext(str(row.get("id") or row.get("file") or ""))
            if not clip:
                yield "row without id or file"
                continue
            yield {
                "clip": clip,
                "sentence": str(row["sentence"] or "").strip(),
                "translation": str(row["translation"] or "").strip(),
                "client_id": row.get("client_id"),
                "audio": row["audio"],
            }

    return normalised(), total


def speaker_of(client_id) -> str | None:
    """Common Voice client ids are 128-hex-digit hashes; 16 digits are unique enough and readable."""
    return f"cv-{str(client_id)[:16]}" if client_id else None


def prepare(
    source: str | os.PathLike = HUB_NAME,
    out_dir: str | os.PathLike = "data/covost2",
    *,
    pair: str = "fr_en",
    split: str = "train",
    max_items: int | None = None,
    skip_bad: bool = False,
    sample_rate: int | None = None,
    clips_dir: str | os.PathLike | None = None,
    config: str | None = None,
    streaming: bool | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Import one CoVoST 2 pair and split; returns the manifest path (``OUT/covost2.PAIR.SPLIT.jsonl``).

    ``pair`` is the corpus' name for it (``fr_en``, ``en_de``, ``zh-CN_en``), also the hub config
    unless ``config`` is given. See the module docstring for sources and fields.
    """
    source, out_dir = str(source), Path(out_dir).resolve()
    _, _, src_iso, tgt_iso = hc.parse_pair(pair)
    rows, total = covost_rows(
        source, pair=pair, split=split, clips_dir=clips_dir, config=config, streaming=streaming, revision=revision
    )
    wav_dir = out_dir / "audio" / "commonvoice"

    def items():
        for row in rows:
            if isinstance(row, str):
                yield row
                continue
            yield hc.Item(
                record=Record(
                    id=f"cv2-{src_iso}_{tgt_iso}-{row['clip']}",
                    lang=src_iso,
                    text=row["sentence"],
                    audio=str(wav_dir / f"{row['clip']}.wav"),
                    tgt_lang=tgt_iso,
                    tgt_text=row["translation"],
                    speaker=speaker_of(row["client_id"]),
                    split=split,
                ),
                audio=row["audio"],
            )

    manifest, stats = hc.run_import(
        items(),
        out_dir / f"covost2.{src_iso}_{tgt_iso}.{split}.jsonl",
        max_items=max_items,
        skip_bad=skip_bad,
        sample_rate=sample_rate,
        total=total,
        desc=f"covost2 {pair} {split}",
        progress=progress,
    )
    hc.report("covost2", manifest, stats)
    return manifest
