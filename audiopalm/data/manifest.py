"""The manifest: one JSON object per line, one utterance (group) per line.

Every tool in audiopalm reads and writes this format and nothing else::

    {"id": "en-0001-f3", "lang": "en", "text": "the small dog sleeps.", "audio": "wav/en-0001-f3.wav",
     "tgt_lang": "fr", "tgt_text": "le petit chien dort.", "tgt_audio": "wav/fr-0001-m1.wav",
     "speaker": "en-f3", "split": "train"}

``id``, ``lang`` and ``text`` are required; ``audio`` is required for every task that listens or
speaks, and absent on a *text-only* row (an MT pair, LM text): such rows are tokenized with no codes and
skipped, counted, by the tasks that need audio. The ``tgt_*`` fields pair the utterance with a
translation (AST, S2ST, MT); ``speaker`` and ``split`` are optional. Audio paths in the file are
relative to the manifest's folder; in memory (:class:`Record`) they are absolute.

An ``id`` becomes a file name (tokenizer round trips, eval outputs, importers' wavs), so it must be a
safe file-name stem: no path separator, no ``..``, no NUL or control character, no leading dot
(:func:`audiopalm.errors.id_problem`). A manifest must be UTF-8 and hold at least one row.

Subcommand ``audiopalm manifest check FILE`` validates a manifest and prints a summary table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from audiopalm.errors import id_problem

# ISO 639-1 code -> the English name used in task tags ("[ASR English]", as in the AudioPaLM paper).
# Covers LibriSpeech, CoVoST 2, CVSS and the larger FLEURS languages; add a line for another one.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ca": "Catalan",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "fa": "Persian",
    "tr": "Turkish",
    "sv": "Swedish",
    "et": "Estonian",
    "mn": "Mongolian",
    "cy": "Welsh",
    "lv": "Latvian",
    "sl": "Slovenian",
    "ta": "Tamil",
    "id": "Indonesian",
    "hi": "Hindi",
    "pl": "Polish",
    "uk": "Ukrainian",
    "cs": "Czech",
    "ro": "Romanian",
    "el": "Greek",
    "fi": "Finnish",
    "hu": "Hungarian",
    "da": "Danish",
    "nb": "Norwegian",
    "vi": "Vietnamese",
    "th": "Thai",
    "he": "Hebrew",
    "sw": "Swahili",
    "bn": "Bengali",
    "ur": "Urdu",
    "ms": "Malay",
}

REQUIRED = ("id", "lang", "text")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ManifestError(ValueError):
    """A bad manifest line. ``str()`` names the file, the line number and the field."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = (f"{path}:{line}" if line else f"{path}") + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass
class Record:
    """One manifest line. Audio paths are absolute in memory, relative to the manifest on disk."""

    id: str
    """Unique within the manifest."""
    lang: str
    """ISO 639-1 code of ``text`` and ``audio`` (a key of :data:`LANGUAGES`)."""
    text: str
    """Transcript of ``audio``."""
    audio: str | None = None
    """Path of the source audio; None on a text-only row (MT pairs, LM text)."""
    tgt_lang: str | None = None
    """Language of the translation, if any."""
    tgt_text: str | None = None
    """Translation of ``text`` into ``tgt_lang``."""
    tgt_audio: str | None = None
    """The translation spoken (for S2ST)."""
    speaker: str | None = None
    """Speaker (or voice) id."""
    split: str | None = None
    """train / dev / test, or any other name."""

    def to_json(self, root: str | os.PathLike | None = None) -> dict:
        """As a JSON object, with audio paths relative to ``root`` (the manifest's folder)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name in ("audio", "tgt_audio") and root is not None:
                v = os.path.relpath(v, root)
            out[f.name] = v
        return out


FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def parse_line(
    obj: object, *, path: str | os.PathLike = "<manifest>", line: int = 0, root: str | os.PathLike | None = None
) -> Record:
    """Validate one decoded JSON line and make a :class:`Record`; raises :class:`ManifestError`."""
    if not isinstance(obj, dict):
        raise ManifestError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise ManifestError(path, line, unknown[0], f"unknown field; allowed fields: {', '.join(FIELDS)}")
    for name in REQUIRED:
        if name not in obj or obj[name] is None:
            raise ManifestError(path, line, name, "missing required field")
    for name, value in obj.items():
        if value is not None and not isinstance(value, str):
            raise ManifestError(path, line, name, f"expected a string, got {type(value).__name__} {value!r}")
        if name != "split" and isinstance(value, str) and not value.strip():
            raise ManifestError(path, line, name, "empty string")
    for name in ("lang", "tgt_lang"):
        if obj.get(name) is not None and obj[name] not in LANGUAGES:
            raise ManifestError(
                path,
                line,
                name,
                f"unknown language {obj[name]!r}; known: {', '.join(sorted(LANGUAGES))}"
                " (add it to audiopalm.data.manifest.LANGUAGES)",
            )
    has_tgt = obj.get("tgt_text") is not None or obj.get("tgt_audio") is not None
    if has_tgt and obj.get("tgt_lang") is None:
        raise ManifestError(path, line, "tgt_lang", "tgt_text/tgt_audio given without tgt_lang")
    if obj.get("tgt_lang") is not None and not has_tgt:
        raise ManifestError(path, line, "tgt_lang", "tgt_lang given without tgt_text or tgt_audio")
    if obj.get("tgt_lang") is not None and obj["tgt_lang"] == obj["lang"]:
        raise ManifestError(path, line, "tgt_lang", f"same as lang ({obj['lang']!r})")
    problem = id_problem(obj["id"])
    if problem:
        raise ManifestError(path, line, "id", f"bad id {obj['id']!r}: {problem}")
    if obj.get("split") is not None and not _SPLIT_RE.match(obj["split"]):
        raise ManifestError(path, line, "split", f"bad split name {obj['split']!r} (letters, digits, _ . -)")
    rec = Record(**obj)
    if root is not None:
        if rec.audio is not None:
            rec.audio = os.path.normpath(os.path.join(root, rec.audio))
        if rec.tgt_audio is not None:
            rec.tgt_audio = os.path.normpath(os.path.join(root, rec.tgt_audio))
    return rec


def read_manifest(
    path: str | os.PathLike, *, skip_bad: bool = False, errors: list[ManifestError] | None = None, report: bool = True
) -> list[Record]:
    """Read and validate a JSONL manifest.

    A bad line raises :class:`ManifestError` (file, line, field). With ``skip_bad=True`` bad lines are
    skipped instead, collected into ``errors`` if given, and their count printed to stderr (unless
    ``report=False``: the caller lists them). A file
    that is not UTF-8, or holds no row (or, with ``skip_bad``, no good row) is a :class:`ManifestError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    root = path.parent.resolve()
    records: list[Record] = []
    seen: dict[str, int] = {}
    bad: list[ManifestError] = []
    with path.open("rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:  # the whole file is suspect: not skippable
                raise ManifestError(
                    path,
                    lineno,
                    None,
                    f"not UTF-8 text (byte 0x{raw_bytes[e.start]:02x} at column "
                    f"{e.start + 1}); save the manifest as UTF-8",
                ) from None
            if not raw.strip():
                continue
            try:
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ManifestError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
                rec = parse_line(obj, path=path, line=lineno, root=root)
                if rec.id in seen:
                    raise ManifestError(path, lineno, "id", f"duplicate id {rec.id!r} (first on line {seen[rec.id]})")
            except ManifestError as e:
                if not skip_bad:
                    raise
                bad.append(e)
                continue
            seen[rec.id] = lineno
            records.append(rec)
    if not records and not bad:
        raise ManifestError(path, 0, None, "empty manifest (no JSON lines); write one JSON object per utterance")
    if bad:
        if not records:
            raise ManifestError(path, 0, None, f"no good line: all {len(bad)} are bad; first: {bad[0]}")
        if report:
            print(
                f"{path}: skipped {len(bad)} bad line(s) of {len(bad) + len(records)}; first: {bad[0]}", file=sys.stderr
            )
        if errors is not None:
            errors.extend(bad)
    return records


def write_manifest(path: str | os.PathLike, records: Iterable[Record]) -> Path:
    """Write records as JSONL, audio paths relative to the manifest's folder. Atomic (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec.to_json(root), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- check


def check_manifest(path: str | os.PathLike, *, decode: bool = True, progress: bool = True) -> dict:
    """Validate a manifest and its audio; return a summary (see :func:`format_summary`).

    Every line is parsed; with ``decode`` every audio file is opened and decoded (via
    :func:`audiopalm.audio.io.load`). Problems are collected, not raised, so one run lists them all.
    """
    from tqdm import tqdm

    from audiopalm.audio import io as audio

    errors: list[ManifestError] = []
    records = read_manifest(path, skip_bad=True, errors=errors, report=False)  # listed in the summary
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    utts: Counter = Counter()
    speakers: dict[str, set] = defaultdict(set)
    pairs: Counter = Counter()
    audio_errors: list[str] = []
    text_only = 0
    for rec in tqdm(records, desc="checking audio", disable=not progress or not decode, unit="utt"):
        split = rec.split or "-"
        utts[(rec.lang, split)] += 1
        if rec.speaker:
            speakers[rec.lang].add(rec.speaker)
        if rec.tgt_lang:
            pairs[(rec.lang, rec.tgt_lang, "speech" if rec.tgt_audio else "text")] += 1
        text_only += rec.audio is None
        for field, p in (("audio", rec.audio), ("tgt_audio", rec.tgt_audio)):
            if p is None:
                continue
            try:
                if decode:
                    wav, sr = audio.load(p)
                    dur = len(wav) / sr
                else:
                    if not os.path.isfile(p):
                        raise audio.AudioError(f"{p}: no such audio file")
                    dur = audio.duration(p)
            except audio.AudioError as e:
                audio_errors.append(f"{rec.id}: {field}: {e}")
                continue
            if field == "audio":
                seconds[(rec.lang, split)] += dur
    return {
        "path": str(path),
        "utterances": len(records),
        "text_only": text_only,
        "bad_lines": [str(e) for e in errors],
        "audio_errors": audio_errors,
        "by_lang_split": {
            f"{lang}/{split}": {"utterances": utts[(lang, split)], "hours": seconds[(lang, split)] / 3600}
            for (lang, split) in sorted(utts)
        },
        "speakers": {lang: len(s) for lang, s in sorted(speakers.items())},
        "pairs": {f"{s}->{t} ({kind})": n for (s, t, kind), n in sorted(pairs.items())},
    }


def format_summary(summary: dict) -> str:
    """A plain-text table of a :func:`check_manifest` summary."""
    text_only = f" ({summary['text_only']} text-only, no audio)" if summary.get("text_only") else ""
    lines = [
        f"manifest {summary['path']}: {summary['utterances']} utterances{text_only}",
        f"{'lang/split':<20} {'utts':>7} {'hours':>8} {'speakers':>9}",
    ]
    for key, row in summary["by_lang_split"].items():
        lang = key.split("/")[0]
        lines.append(f"{key:<20} {row['utterances']:>7} {row['hours']:>8.3f} {summary['speakers'].get(lang, 0):>9}")
    total_h = sum(r["hours"] for r in summary["by_lang_split"].values())
    lines.append(f"{'total':<20} {summary['utterances']:>7} {total_h:>8.3f} {sum(summary['speakers'].values()):>9}")
    if summary["pairs"]:
        lines.append("pairs: " + ", ".join(f"{k}: {v}" for k, v in summary["pairs"].items()))
    for kind in ("bad_lines", "audio_errors"):
        if summary[kind]:
            lines.append(f"{len(summary[kind])} {kind.replace('_', ' ')}:")
            lines.extend("  " + e for e in summary[kind][:20])
            if len(summary[kind]) > 20:
                lines.append(f"  ... and {len(summary[kind]) - 20} more")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser(
        "check",
        help="validate a manifest and print a summary table",
        description="Validate every line (fields, languages, pairs, duplicate ids), open and "
        "decode every audio file, and print utterances and hours per language and "
        "split, speakers and translation pairs. Exit code 2 (one line on stderr) if "
        "anything is wrong.",
    )
    p.add_argument("manifest", help="the JSONL manifest")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="count bad lines and audio instead of failing (exit code 0 if any good line remains)",
    )
    p.add_argument("--no-decode", action="store_true", help="only check that audio files exist (fast)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    summary = check_manifest(args.manifest, decode=not args.no_decode)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    problems = summary["bad_lines"] + summary["audio_errors"]
    if problems and not args.skip_bad:
        raise ManifestError(
            args.manifest,
            0,
            None,
            f"{len(problems)} problem(s), listed above; first: {problems[0]}; "
            "fix them, or pass --skip-bad to count and skip them",
        )
    return 0
