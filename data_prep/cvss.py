"""CVSS (CoVoST 2 X->en with the English translation spoken) -> manifest, for S2ST.

CVSS only ships the *target* side: English speech synthesised for every CoVoST 2 X->en utterance
(CVSS-C: one canonical voice; CVSS-T: the source speaker's voice transferred), plus a normalised
English text. The *source* speech and transcript come from CoVoST 2 / Common Voice 4, joined on the
Common Voice clip name. So this importer takes two sources:

* ``source`` -- the CVSS target side, one of:
  - the release folder of one pair (``cvss_c_fr_en_v1.0.tar.gz`` extracted): ``train.tsv``,
    ``dev.tsv``, ``test.tsv`` (lines ``CLIP.mp3<TAB>normalised text``) and ``train/``, ``dev/``,
    ``test/`` holding ``CLIP.mp3.wav`` (24 kHz);
  - a ``save_to_disk`` copy (or a parquet hub copy) with the columns of ``google/cvss``: ``id`` (the
    clip name), ``file``, ``audio``, ``text``. ``google/cvss`` itself is a loading script that
    downloads the tarballs, which ``datasets>=4`` cannot run.
* ``covost`` -- the CoVoST 2 source side of the same pair, anything :mod:`data_prep.covost2` accepts.

Writes ``OUT/cvss_V.SRC_en.SPLIT.jsonl``, source wavs in ``OUT/audio/commonvoice/`` (shared with the
CoVoST 2 importer) and target wavs in ``OUT/audio/cvss_V/``. Records: ``id`` ``cvss_V-SRC_en-CLIP``,
``lang`` SRC, ``text`` the transcript, ``audio`` the source speech, ``tgt_lang`` ``en``, ``tgt_text``
the CVSS normalised translation (``tgt_text_from="covost"`` takes CoVoST 2's original instead),
``tgt_audio`` the CVSS speech, ``speaker``, ``split``. CoVoST rows without a CVSS target are counted
and left out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from audiopalm.data.manifest import Record
from data_prep import covost2
from data_prep import hf_common as hc

COLUMNS = ("id", "audio", "text")
VARIANTS = ("c", "t")


def _release_split_dir(folder: Path, split: str) -> str:
    for name in (split, *hc.SPLIT_ALIASES.get(split, ())):
        if (folder / f"{name}.tsv").is_file():
            return name
    raise hc.SourceError(
        f"{folder}: no {split}.tsv (nor an alias: {', '.join(hc.SPLIT_ALIASES.get(split, ()))}); "
        "expected an extracted CVSS release (train.tsv, dev.tsv, test.tsv + wav folders)"
    )


def target_index(
    source: str, *, split: str, config: str | None = None, streaming: bool | None = None, revision: str | None = None
) -> dict[str, tuple[str, object]]:
    """CVSS target side as ``{clip: (normalised_text, audio_cell)}``.

    For the release folder and for map-style datasets the cells are paths / lazy row lookups, so
    the index is small; a streamed hub copy is held in memory (bytes included).
    """
    path = Path(source)
    index: dict[str, tuple[str, object]] = {}
    if path.is_dir() and any((path / f"{n}.tsv").is_file() for n in ("train", "dev", "test")):
        name = _release_split_dir(path, split)
        tsv = path / f"{name}.tsv"
        for lineno, cells in hc.read_tsv(tsv, header=False):
            if len(cells) != 2:
                raise hc.SourceError(f"{tsv}:{lineno}: expected 'CLIP<TAB>text', got {len(cells)} fields")
            clip_file, text = cells
            wav = path / name / f"{clip_file}.wav"
            index[hc.strip_audio_ext(clip_file)] = (text.strip(), {"bytes": None, "path": str(wav)})
        return index
    ds = hc.open_dataset(source, config=config, split=split, streaming=streaming, revision=revision)
    hc.require_columns(ds, COLUMNS, source)
    if hc.dataset_len(ds) is not None:  # map-style: keep row numbers, fetch audio when joined
        ids, texts = ds["id"], ds["text"]
        for i, (clip, text) in enumerate(zip(ids, texts, strict=True)):
            index[hc.strip_audio_ext(str(clip))] = (str(text).strip(), hc.LazyCell(ds, i))
    else:
        print(f"cvss: holding the streamed target split {split!r} of {source} in memory to join it", file=sys.stderr)
        for row in ds:
            index[hc.strip_audio_ext(str(row["id"]))] = (str(row["text"]).strip(), row["audio"])
    return index


def prepare(
    source: str | os.PathLike,
    out_dir: str | os.PathLike = "data/cvss",
    *,
    covost: str | os.PathLike,
    pair: str = "fr_en",
    split: str = "train",
    variant: str = "c",
    max_items: int | None = None,
    skip_bad: bool = False,
    sample_rate: int | None = None,
    tgt_text_from: str = "cvss",
    clips_dir: str | os.PathLike | None = None,
    covost_config: str | None = None,
    config: str | None = None,
    streaming: bool | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Import one CVSS pair (``SRC_en``) and split; returns the manifest path (``OUT/cvss_V.SRC_en.SPLIT.jsonl``).

    ``source`` is the CVSS target side, ``covost`` the CoVoST 2 source side (see the module
    docstring). ``variant`` ``c`` or ``t`` only names the output (CVSS-C and CVSS-T are separate
    downloads). ``sample_rate`` resamples both sides (default: keep each file's rate, 16 kHz source
    and 24 kHz target).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if tgt_text_from not in ("cvss", "covost"):
        raise ValueError(f"tgt_text_from must be 'cvss' or 'covost', got {tgt_text_from!r}")
    _, _, src_iso, tgt_iso = hc.parse_pair(pair)
    if tgt_iso != "en":
        raise hc.SourceError(f"pair {pair!r}: CVSS only has X->en pairs (e.g. fr_en)")
    source, out_dir = str(source), Path(out_dir).resolve()
    targets = target_index(source, split=split, config=config, streaming=streaming, revision=revision)
    if not targets:
        raise hc.SourceError(f"{source}: split {split!r} has no rows")
    rows, _ = covost2.covost_rows(
        str(covost),
        pair=pair,
        split=split,
        clips_dir=clips_dir,
        config=covost_config,
        streaming=streaming,
        revision=revision,
    )
    src_dir, tgt_dir = out_dir / "audio" / "commonvoice", out_dir / "audio" / f"cvss_{variant}"

    def items():
        for row in rows:
            if isinstance(row, str):
                yield row
                continue
            hit = targets.get(row["clip"])
            if hit is None:
                yield "no CVSS target for the CoVoST clip"
                continue
            text, cell = hit
            if isinstance(cell, hc.LazyCell):
                cell = cell.get()
            tgt_text = text if tgt_text_from == "cvss" else row["translation"]
            yield hc.Item(
                record=Record(
                    id=f"cvss_{variant}-{src_iso}_en-{row['clip']}",
                    lang=src_iso,
                    text=row["sentence"],
                    audio=str(src_dir / f"{row['clip']}.wav"),
                    tgt_lang="en",
                    tgt_text=tgt_text,
                    tgt_audio=str(tgt_dir / f"{row['clip']}.wav"),
                    speaker=covost2.speaker_of(row["client_id"]),
                    split=split,
                ),
                audio=row["audio"],
                tgt_audio=cell,
            )

    manifest, stats = hc.run_import(
        items(),
        out_dir / f"cvss_{variant}.{src_iso}_en.{split}.jsonl",
        max_items=max_items,
        skip_bad=skip_bad,
        sample_rate=sample_rate,
        total=min(len(targets), max_items) if max_items else len(targets),
        desc=f"cvss_{variant} {pair} {split}",
        progress=progress,
    )
    hc.report(f"cvss_{variant}", manifest, stats)
    return manifest
