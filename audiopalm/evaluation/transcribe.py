"""Transcribe a manifest's audio with an ASR judge: what a peer ASR hears in the reference audio, made once.

    audiopalm transcribe --manifest corpus/test.jsonl --judge pocketsphinx --langs en --out peer/transcripts.jsonl
    audiopalm eval ... --peer pocketsphinx --peer-transcripts peer/transcripts.jsonl

Every distinct audio file of the manifest (``audio`` in the row's ``lang``, ``tgt_audio`` in its ``tgt_lang``) whose
language is in ``--langs`` is transcribed (each language's in manifest order) into one JSONL line
``{"audio": real path, "lang", "judge", "text"}``. `audiopalm eval --peer-transcripts FILE` takes the peer's
transcripts of input and reference audio from FILE instead of hearing them again, so a slow CPU peer (PocketSphinx:
about 0.4 s a clip) can run before the model exists (the demo runs it beside the other stages that need only the
corpus). Generated speech is always heard by the peer itself.

A judge whose state carries from one utterance to the next (PocketSphinx adapts its cepstral mean as it goes)
transcribes a clip a little differently in another order: the file's transcripts are the judge's in manifest order.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TRANSCRIPT_FIELDS = ("audio", "lang", "judge", "text")


def manifest_audio(manifest: str | os.PathLike, langs: list[str] | None = None) -> list[tuple[str, str]]:
    """(real path, language) of every distinct audio file of ``manifest`` (``audio`` in the row's ``lang``,
    ``tgt_audio`` in its ``tgt_lang``), in manifest order; only ``langs`` if given."""
    from audiopalm.data.manifest import read_manifest

    seen: set[tuple[str, str]] = set()
    out = []
    for r in read_manifest(manifest):
        for path, lang in ((r.audio, r.lang), (r.tgt_audio, r.tgt_lang)):
            if path is None or lang is None or (langs and lang not in langs):
                continue
            key = (os.path.realpath(path), lang)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


def read_transcripts(path: str | os.PathLike, judge: str) -> dict[tuple[str, str], str]:
    """(real path, language) -> text of a file written by `audiopalm transcribe` with ``judge``.

    Raises ValueError for a missing or malformed file, or one made by another judge."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such transcripts file (make it with `audiopalm transcribe`)")
    from audiopalm.evaluation.report import read_json_lines

    known: dict[tuple[str, str], str] = {}
    for lineno, row in read_json_lines(path, ValueError):
        if any(not isinstance(row.get(k), str) for k in TRANSCRIPT_FIELDS):
            raise ValueError(f"{path}:{lineno}: expected string fields {', '.join(TRANSCRIPT_FIELDS)}")
        if row["judge"] != judge:
            raise ValueError(f"{path}:{lineno}: transcribed by {row['judge']!r}, not by the peer {judge!r}")
        known[(os.path.realpath(row["audio"]), row["lang"])] = row["text"]
    return known


def transcribe_files(judge, paths: list[str], sample_rate: int, lang: str, known: dict | None = None) -> list[str]:
    """``judge``'s transcripts of the audio files ``paths`` in ``lang``: from ``known`` (:func:`read_transcripts`)
    where it has them, the others heard now, in order. Raises the judge's ValueError for a language it lacks."""
    from audiopalm.audio import io as audio_io

    known = known or {}
    texts: list[str | None] = [known.get((os.path.realpath(p), lang)) for p in paths]
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        heard = judge.transcribe([audio_io.load(paths[i], sample_rate)[0] for i in missing], sample_rate, lang)
        for i, text in zip(missing, heard, strict=True):
            texts[i] = text
    return [t or "" for t in texts]


def add_arguments(parser) -> None:
    parser.add_argument("--manifest", required=True, help="the JSONL manifest whose audio to transcribe")
    parser.add_argument(
        "--judge",
        required=True,
        help="pocketsphinx (English only), whisper:NAME or ctc:FOLDER (a CTC encoder of `audiopalm tokenizer "
        "fit-ctc-units`): the name `audiopalm eval --peer` is given",
    )
    parser.add_argument("--langs", nargs="+", metavar="LANG", help="only audio in these languages (default: all)")
    parser.add_argument("--out", required=True, help="JSONL file to write (one line per audio file)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per judge call (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from tqdm import tqdm

    from audiopalm.errors import UserError
    from audiopalm.evaluation.evaluate import make_eval_judge

    if args.judge == "model":
        raise UserError("--judge model: the model's own ASR needs a checkpoint; use audiopalm eval --judge model")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    files = manifest_audio(args.manifest, args.langs)
    if not files:
        raise UserError(f"{args.manifest}: no audio in {', '.join(args.langs or ['any language'])}")
    judge = make_eval_judge(args.judge, None, batch_size=args.batch_size, max_new_tokens=None)
    sample_rate = getattr(judge, "sample_rate", 16000)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    t0 = time.time()
    by_lang: dict[str, list[str]] = {}  # each language's files in manifest order
    for path, lang in files:
        by_lang.setdefault(lang, []).append(path)
    bar = tqdm(total=len(files), desc=f"transcribe ({args.judge})", unit="clip", disable=args.quiet)
    with tmp.open("w", encoding="utf-8") as f:
        for lang, paths in by_lang.items():
            for start in range(0, len(paths), args.batch_size):
                chunk = paths[start : start + args.batch_size]
                try:
                    texts = transcribe_files(judge, chunk, sample_rate, lang)
                except ValueError as e:  # e.g. PocketSphinx has no model for the language
                    raise UserError(f"{e} (--langs picks the languages to transcribe)") from None
                for path, text in zip(chunk, texts, strict=True):
                    f.write(
                        json.dumps({"audio": path, "lang": lang, "judge": args.judge, "text": text}, ensure_ascii=False)
                        + "\n"
                    )
                bar.update(len(chunk))
    bar.close()
    tmp.replace(out)
    print(f"{out}: {len(files)} clips transcribed by {args.judge} in {time.time() - t0:.0f} s")
    return 0
