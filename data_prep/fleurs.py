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

Pairs: FLEURS is n-way parallel, so ``tgt_config`` (and ``tgt_source``) joins a second language on
the sentence id and writes ``tgt_lang`` / ``tgt_text`` / ``tgt_audio`` (see :func:`prepare`) -- AST
and S2ST with real speech on both sides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from audiopalm.data.manifest import Record
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
        raise hc.SourceError(
            f"{folder}: no {split}.tsv (expected a FLEURS release folder: train.tsv, dev.tsv, "
            "test.tsv and audio/SPLIT/*.wav), and not a save_to_disk copy"
        )
    for lineno, cells in hc.read_tsv(tsv, header=False):
        if len(cells) != len(_RELEASE_FIELDS):
            raise hc.SourceError(
                f"{tsv}:{lineno}: {len(cells)} fields, expected {len(_RELEASE_FIELDS)} ({', '.join(_RELEASE_FIELDS)})"
            )
        row = dict(zip(_RELEASE_FIELDS, cells, strict=True))
        row["audio"] = {"bytes": None, "path": str(folder / "audio" / name / row["path"])}
        yield row


def _open(source: str, *, config: str, split: str, streaming: bool | None, revision: str | None):
    """``(rows, total, lang_id_names)`` of a FLEURS source (release folder, saved copy or hub)."""
    if Path(source).is_dir() and any((Path(source) / f"{n}.tsv").is_file() for n in ("train", "dev", "test")):
        return _folder_rows(Path(source), split), None, None
    ds = hc.open_dataset(source, config=config, split=split, streaming=streaming, revision=revision)
    hc.require_columns(ds, COLUMNS, source)
    return ds, hc.dataset_len(ds), hc.class_names(ds, "lang_id")


def _text(row, normalized: bool) -> str:
    return str(row["transcription"] if normalized else row["raw_transcription"]).strip()


def target_index(
    source: str,
    *,
    config: str,
    split: str,
    normalized: bool = False,
    streaming: bool | None = None,
    revision: str | None = None,
) -> dict[int, tuple[str, object]]:
    """One language of FLEURS as ``{sentence_id: (text, audio_cell)}``, the first recording of each sentence.

    Map-style sources keep a lazy reference to the row (audio read only when used); a stream is
    held in memory.
    """
    rows, total, _ = _open(source, config=config, split=split, streaming=streaming, revision=revision)
    index: dict[int, tuple[str, object]] = {}
    if total is not None:
        for i, (sid, raw, norm) in enumerate(
            zip(rows["id"], rows["raw_transcription"], rows["transcription"], strict=True)
        ):
            if int(sid) not in index:
                index[int(sid)] = (str(norm if normalized else raw).strip(), hc.LazyCell(rows, i))
        return index
    for row in rows:
        index.setdefault(int(row["id"]), (_text(row, normalized), row["audio"]))
    return index


def prepare(
    source: str | os.PathLike = HUB_NAME,
    out_dir: str | os.PathLike = "data/fleurs",
    *,
    config: str = "en_us",
    split: str = "train",
    max_items: int | None = None,
    skip_bad: bool = False,
    sample_rate: int | None = None,
    normalized: bool = False,
    lang: str | None = None,
    tgt_source: str | os.PathLike | None = None,
    tgt_config: str | None = None,
    tgt_speech: bool = True,
    streaming: bool | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Import one FLEURS language (``config``) and split; returns ``OUT/fleurs.CONFIG.SPLIT.jsonl``.

    ``lang`` overrides the ISO code derived from ``config`` / ``lang_id``. See the module docstring.

    FLEURS is n-way parallel (every language reads the same FLoRes sentences), so giving a second
    language -- ``tgt_source`` (a source as above; default: ``source``) with ``tgt_config`` -- makes
    translation pairs instead, joined on the sentence ``id``: ``tgt_text`` is the target language's
    transcription and, with ``tgt_speech``, ``tgt_audio`` its first recording of the sentence (real
    speech on both sides: AST and S2ST). Written to ``OUT/fleurs.CONFIG-TGT_CONFIG.SPLIT.jsonl``,
    ids ``fleurs-CONFIG-TGT_CONFIG-FILE``; sentences the target lacks are counted and left out.
    """
    source, out_dir = str(source), Path(out_dir).resolve()
    fixed_lang = hc.iso_lang(lang or config, field="lang" if lang else "config") if (lang or config != "all") else None
    rows, total, lang_names = _open(source, config=config, split=split, streaming=streaming, revision=revision)
    if fixed_lang is None and lang_names is None:
        raise hc.SourceError(
            f"{source}: config 'all' but no lang_id ClassLabel column to tell languages apart; pass lang"
        )
    targets, tgt_lang, name = None, None, config
    if tgt_config is not None:
        if config == "all" or tgt_config == "all":
            raise hc.SourceError("pairs need one language on each side, not config 'all'")
        tgt_lang = hc.iso_lang(tgt_config, field="tgt_config")
        if tgt_lang == fixed_lang:
            raise hc.SourceError(f"{config} and {tgt_config} are both {tgt_lang!r}")
        targets = target_index(
            str(tgt_source or source),
            config=tgt_config,
            split=split,
            normalized=normalized,
            streaming=streaming,
            revision=revision,
        )
        name = f"{config}-{tgt_config}"
    wav_dir, tgt_wav_dir = out_dir / "audio" / "fleurs" / config, out_dir / "audio" / "fleurs" / str(tgt_config)

    def items():
        for row in rows:
            row_lang = fixed_lang
            if lang is None and lang_names is not None and row.get("lang_id") is not None:
                row_lang = hc.iso_lang(lang_names[int(row["lang_id"])], field="lang_id")
            if row_lang is None:
                raise hc.SourceError(f"{source}: row {row.get('id')!r} has no lang_id (config 'all'); pass lang")
            stem = hc.strip_audio_ext(str(row["path"]))
            rec = Record(
                id=f"fleurs-{name}-{stem}",
                lang=row_lang,
                text=_text(row, normalized),
                audio=str(wav_dir / f"{stem}.wav"),
                split=split,
            )
            tgt_cell = None
            if targets is not None:
                hit = targets.get(int(row["id"]))
                if hit is None:
                    yield f"sentence not in {tgt_config}"
                    continue
                rec.tgt_lang, rec.tgt_text = tgt_lang, hit[0]
                if tgt_speech:
                    # one wav per target sentence, shared by every source recording of it
                    rec.tgt_audio = str(tgt_wav_dir / f"sentence-{int(row['id'])}.wav")
                    tgt_cell = hit[1].get() if isinstance(hit[1], hc.LazyCell) else hit[1]
            yield hc.Item(record=rec, audio=row["audio"], tgt_audio=tgt_cell)

    manifest, stats = hc.run_import(
        items(),
        out_dir / f"fleurs.{name}.{split}.jsonl",
        max_items=max_items,
        skip_bad=skip_bad,
        sample_rate=sample_rate,
        total=total,
        desc=f"fleurs {name} {split}",
        progress=progress,
    )
    hc.report("fleurs", manifest, stats)
    return manifest
