"""LibriSpeech (English read audiobooks, 16 kHz) -> manifest, for ASR and TTS.

Sources (``source=``):

* the hub dataset ``openslr/librispeech_asr`` (parquet; streamed). Config ``all`` has the splits
  ``train.clean.100``, ``train.clean.360``, ``train.other.500``, ``validation.clean``,
  ``validation.other``, ``test.clean``, ``test.other``; configs ``clean`` / ``other`` name them
  ``train.100`` / ``train.360`` / ``train.500``, ``validation``, ``test``. Columns: ``file``,
  ``audio``, ``text``, ``speaker_id``, ``chapter_id``, ``id``.
* a ``save_to_disk`` copy with those columns, or a downloaded copy of the hub repository (its
  parquet files and README) -- read from disk, or streamed with ``streaming=True``;
* the OpenSLR release folder (e.g. ``LibriSpeech/train-clean-100``): ``SPK/CHAP/SPK-CHAP.trans.txt``
  lines ``SPK-CHAP-UTT TRANSCRIPT`` next to ``SPK-CHAP-UTT.flac``.

Writes ``OUT/librispeech.SPLIT.jsonl`` and ``OUT/audio/librispeech/SPK-CHAP-UTT.wav``. Records:
``id`` ``ls-SPK-CHAP-UTT``, ``lang`` ``en``, ``text`` the transcript lower-cased (LibriSpeech is all
upper case without punctuation, so case carries nothing; ``lowercase=False`` keeps it),
``speaker`` ``ls-SPK``, ``split`` the split asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from audiopalm.data.manifest import Record
from data_prep import hf_common as hc

HUB_NAME = "openslr/librispeech_asr"
DEFAULT_CONFIG = "all"
COLUMNS = ("id", "text", "speaker_id", "audio")


def _folder_rows(folder: Path) -> Iterator[dict]:
    """Rows of an OpenSLR LibriSpeech folder, in sorted transcript-file order."""
    trans = sorted(folder.rglob("*.trans.txt"))
    if not trans:
        raise hc.SourceError(
            f"{folder}: no *.trans.txt files (expected the OpenSLR LibriSpeech layout "
            "SPK/CHAP/SPK-CHAP.trans.txt), and not a save_to_disk copy"
        )
    for tf in trans:
        with tf.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                utt, _, text = line.strip().partition(" ")
                parts = utt.split("-")
                if len(parts) != 3 or not text:
                    raise hc.SourceError(f"{tf}:{lineno}: expected 'SPK-CHAP-UTT TRANSCRIPT', got {line.strip()!r}")
                yield {
                    "id": utt,
                    "text": text,
                    "speaker_id": parts[0],
                    "chapter_id": parts[1],
                    "audio": {"bytes": None, "path": str(tf.parent / f"{utt}.flac")},
                }


def _rows(source: str, *, config: str | None, split: str, streaming: bool | None, revision: str | None):
    """``(rows, total)`` from any of the three kinds of source."""
    if Path(source).is_dir() and next(Path(source).rglob("*.trans.txt"), None) is not None:
        return _folder_rows(Path(source)), None
    ds = hc.open_dataset(source, config=config, split=split, streaming=streaming, revision=revision)
    hc.require_columns(ds, COLUMNS, source)
    return ds, hc.dataset_len(ds)


def prepare(
    source: str | os.PathLike = HUB_NAME,
    out_dir: str | os.PathLike = "data/librispeech",
    *,
    split: str = "train.clean.100",
    config: str | None = DEFAULT_CONFIG,
    max_items: int | None = None,
    skip_bad: bool = False,
    sample_rate: int | None = None,
    lowercase: bool = True,
    streaming: bool | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Import one LibriSpeech split; returns the manifest path (``OUT/librispeech.SPLIT.jsonl``).

    ``config`` only matters for the hub (ignored for local copies). ``sample_rate`` resamples the
    wavs (default: keep 16 kHz). See the module docstring for sources and fields.
    """
    source, out_dir = str(source), Path(out_dir).resolve()
    rows, total = _rows(source, config=config, split=split, streaming=streaming, revision=revision)
    wav_dir = out_dir / "audio" / "librispeech"

    def items():
        for row in rows:
            utt = str(row["id"])
            text = str(row["text"]).strip()
            yield hc.Item(
                record=Record(
                    id=f"ls-{utt}",
                    lang="en",
                    text=text.lower() if lowercase else text,
                    audio=str(wav_dir / f"{utt}.wav"),
                    speaker=f"ls-{row['speaker_id']}",
                    split=split,
                ),
                audio=row["audio"],
            )

    manifest, stats = hc.run_import(
        items(),
        out_dir / f"librispeech.{split}.jsonl",
        max_items=max_items,
        skip_bad=skip_bad,
        sample_rate=sample_rate,
        total=total,
        desc=f"librispeech {split}",
        progress=progress,
    )
    hc.report("librispeech", manifest, stats)
    return manifest
