"""FLEURS (read FLoRes sentences, 102 languages, 16 kHz) -> manifest, for multilingual ASR and TTS.

Sources (``source=``):

* a hub dataset with the ``google/fleurs`` columns ``id`` (the FLoRes sentence id, shared by every
  recording of that sentence), ``num_samples``, ``path``, ``audio``, ``transcription`` (normalised),
  ``raw_transcription`` (as written), ``gender`` / ``lang_id`` / ``lang_group_id`` (ClassLabels),
  ``language``; one config per language (``en_us``, ``fr_fr``, ``cmn_hans_cn``...), splits
  ``train`` / ``validation`` / ``test``. ``google/fleurs`` itself is a loading script, which
  ``datasets>=4`` cannot run: use a parquet copy (``revision="refs/convert/parquet"`` where the hub
  has one), a ``save_to_disk`` copy, or the release folder.
* a ``save_to_disk`` copy with those columns, or a downloaded copy of a hub repository with them;
* the release folder of one language: ``train.tsv``, ``dev.tsv``, ``test.tsv`` (no header; fields
  id, file name, raw transcription, transcription, characters, num_samples, gender) and
  ``audio/train/``, ``audio/dev/``, ``audio/test/`` holding the wavs.

Writes ``OUT/fleurs.CONFIG.SPLIT.jsonl`` and ``OUT/audio/fleurs/CONFIG/FILE.wav``. Records: ``id``
``fleurs-CONFIG-FILE`` (FILE: the recording's file name without extension, unique per recording),
``lang`` the ISO code of the config (``en_us`` -> ``en``, ``cmn_hans_cn`` -> ``zh``; a multi-language
copy takes each row's ``lang_id``), ``text`` the raw transcription (``normalized=True``: the
normalised one), ``speaker`` none (FLEURS publishes only a gender), ``split``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from audiopalm.manifest import Record
from data_prep import hf_common as hc

HUB_NAME = "google/fleurs"
COLUMNS = ("id", "path", "audio", "transcription", "raw_transcription")
_RELEASE_FIELDS = ("id", "path", "raw_transcription", "transcription", "characters", "num_samples", "gender")


def _folder_rows(folder: Path, split: str) -> Iterator[dict]:
    """Rows of a FLEURS release folder for one split."""
    for name in (split, *hc.SPLIT_ALIASES.get(split, ())):
        tsv = folder / f"{name}.tsv"
        if tsv.is_file():
            break
    else:
        raise hc.SourceError(f"{folder}: no {split}.tsv (expected a FLEURS release folder: train.tsv, dev.tsv, "
                             "test.tsv and audio/SPLIT/*.wav), and not a save_to_disk copy")
    for lineno, cells in hc.read_tsv(tsv, header=False):
        if len(cells) != len(_RELEASE_FIELDS):
            raise hc.SourceError(f"{tsv}:{lineno}: {len(cells)} fields, expected {len(_RELEASE_FIELDS)} "
                                 f"({', '.join(_RELEASE_FIELDS)})")
        row = dict(zip(_RELEASE_FIELDS, cells))
        row["audio"] = {"bytes": None, "path": str(folder / "audio" / name / row["path"])}
        yield row


def prepare(source: str | os.PathLike = HUB_NAME, out_dir: str | os.PathLike = "data/fleurs", *,
            config: str = "en_us", split: str = "train", max_items: int | None = None, skip_bad: bool = False,
            sample_rate: int | None = None, normalized: bool = False, lang: str | None = None,
            streaming: bool | None = None, revision: str | None = None, progress: bool = True) -> Path:
    """Import one FLEURS language (``config``) and split; returns ``OUT/fleurs.CONFIG.SPLIT.jsonl``.

    ``lang`` overrides the ISO code derived from ``config`` / ``lang_id``. See the module docstring.
    """
    source, out_dir = str(source), Path(out_dir).resolve()
    fixed_lang = hc.iso_lang(lang or config, field="lang" if lang else "config") if (lang or config != "all") else None
    lang_names = None
    if Path(source).is_dir() and any((Path(source) / f"{n}.tsv").is_file() for n in ("train", "dev", "test")):
        rows, total = _folder_rows(Path(source), split), None
    else:
        ds = hc.open_dataset(source, config=config, split=split, streaming=streaming, revision=revision)
        hc.require_columns(ds, COLUMNS, source)
        rows, total, lang_names = ds, hc.dataset_len(ds), hc.class_names(ds, "lang_id")
    if fixed_lang is None and lang_names is None:
        raise hc.SourceError(f"{source}: config 'all' but no lang_id ClassLabel column to tell languages apart; "
                             "pass lang")
    wav_dir = out_dir / "audio" / "fleurs" / config

    def items():
        for row in rows:
            row_lang = fixed_lang
            if lang is None and lang_names is not None and row.get("lang_id") is not None:
                row_lang = hc.iso_lang(lang_names[int(row["lang_id"])], field="lang_id")
            stem = hc.strip_audio_ext(str(row["path"]))
            text = str(row["transcription"] if normalized else row["raw_transcription"]).strip()
            yield hc.Item(
                record=Record(id=f"fleurs-{config}-{stem}", lang=row_lang, text=text,
                              audio=str(wav_dir / f"{stem}.wav"), split=split),
                audio=row["audio"])

    manifest, stats = hc.run_import(items(), out_dir / f"fleurs.{config}.{split}.jsonl", max_items=max_items,
                                    skip_bad=skip_bad, sample_rate=sample_rate, total=total,
                                    desc=f"fleurs {config} {split}", progress=progress)
    hc.report("fleurs", manifest, stats)
    return manifest
