"""Speak a generated parallel corpus (English, French, Spanish, German) with espeak-ng.

The offline stand-in for CoVoST 2 / CVSS: sentences come from the grammar in
:mod:`data_prep.grammar` (one meaning, rendered with real agreement in four languages), and each
sentence is spoken once per language by an espeak-ng "voice" (a language voice, a variant, a speed
and a pitch; see :data:`VOICES`). One voice per language is held out: it speaks only test utterances.
``--voices N`` gives each language N seen voices instead of 9 (:func:`voice_table`: the table's 9, then
further espeak-ng variants at other speeds and pitches); the held-out voice is the same whatever N.

Writes, under ``--out DIR``::

    wav/<lang>/<sentence>-<voice>.wav   16 kHz mono 16-bit PCM, one per (sentence, language)
    train.jsonl dev.jsonl test.jsonl    manifests (audiopalm.data.manifest), one line per (sentence,
                                        directed pair): en->fr en->es en->de fr->en es->en de->en
    corpus.json                         seed, sizes, voices and their settings, held-out voices, counts
    README.md                           what is in the folder

With ``--text-only N`` instead, no speech: ``text_only.jsonl``, a text-only manifest (no ``audio``
field) of N further sentences in every directed pair, split ``test``, taken from the same seeded
sequence *after* the spoken corpus's train + dev + test sentences, so none of them is seen in training.
It is what ``audiopalm eval --tasks MT`` scores MT on, with no placeholder clips.

Dev and test sentences never occur in train: no shared meaning and no shared text in any language.
Everything is fixed by ``--seed`` (texts, voices, ids, and bit-identical wavs), and a re-run with the
same arguments rewrites nothing (wavs are written atomically and skipped when present).

Examples::

    audiopalm synth --out data/synth                       # demo size: 1500/100/100 sentences
    audiopalm synth --out /tmp/smoke --profile smoke       # 60/10/10 sentences, for tests
    audiopalm synth --out data/big --train 20000 --jobs 16 --seed 1
    audiopalm synth --out data/many --voices 30              # 30 seen voices per language, not 9
    audiopalm synth --out data/synth --text-only 500        # + text_only.jsonl: 500 unseen sentences x 6 pairs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from audiopalm.audio import io as audio
from audiopalm.data.manifest import Record, check_manifest, format_summary, write_manifest
from audiopalm.errors import UserError
from data_prep.grammar import GRAMMAR_VERSION, LANGS, PAIRS, Sentence, generate_pairs, generate_sentences

__all__ = [
    "Voice",
    "VOICES",
    "SEEN_VOICES",
    "voice_table",
    "PROFILES",
    "SAMPLE_RATE",
    "synthesize",
    "split_sentences",
    "voice_for",
    "generate_sentences",
    "generate_pairs",
    "PAIRS",
    "LANGS",
]

SAMPLE_RATE = 16_000
"""Rate of every wav written (espeak-ng speaks at 22 050 Hz; we resample)."""
ESPEAK_RATE = 22_050
# Keep this much silence before and after the speech when trimming: enough not to clip soft onsets
# and release bursts, little enough that espeak-ng's ~0.35 s trailing pause does not dominate short clips.
PAD_SECONDS = 0.1
# A 10 ms frame is speech if its peak is above this fraction of the clip's peak (-40 dB).
SILENCE_REL = 0.01

PROFILES: dict[str, dict[str, int]] = {
    # sized so that the whole offline demo trains in under 20 minutes on 2 CPU cores
    "default": {"train": 1500, "dev": 100, "test": 100},
    # for tests and CI: seconds to synthesize
    "smoke": {"train": 60, "dev": 10, "test": 10},
}


@dataclasses.dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: ``espeak-ng -v {espeak_voice}+{variant} -s {speed} -p {pitch}``."""

    id: str
    """Stable id, ``<lang>-v<NN>`` (e.g. ``en-v03``); the ``speaker`` field of the manifest."""
    lang: str
    """Language of the corpus this voice speaks (en, fr, es, de)."""
    espeak_voice: str
    """espeak-ng language voice (``espeak-ng --voices``), e.g. en-gb-scotland, fr-be, es-419."""
    variant: str
    """espeak-ng voice variant (``espeak-ng --voices=variant``), e.g. m3, f2."""
    speed: int
    """Words per minute (espeak-ng default 175)."""
    pitch: int
    """Base pitch 0..99 (espeak-ng default 50)."""
    held_out: bool = False
    """Only used in the test split, never in train/dev: measures generalisation to an unseen speaker."""

    def __post_init__(self):
        if self.lang not in LANGS:
            raise ValueError(f"Voice {self.id}: lang {self.lang!r} not in {LANGS}")
        if not 80 <= self.speed <= 450:
            raise ValueError(f"Voice {self.id}: speed {self.speed} outside espeak-ng's 80..450 wpm")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"Voice {self.id}: pitch {self.pitch} outside 0..99")

    def command(self, wav_path: str) -> list[str]:
        """The espeak-ng command line that speaks stdin (UTF-8) into ``wav_path``."""
        return [
            "espeak-ng",
            "-b",
            "1",
            "-v",
            f"{self.espeak_voice}+{self.variant}",
            "-s",
            str(self.speed),
            "-p",
            str(self.pitch),
            "-w",
            wav_path,
            "--stdin",
        ]


def _voices(lang: str, rows: list[tuple[str, str, int, int]], held_out: tuple[str, str, int, int]) -> list[Voice]:
    out = [Voice(f"{lang}-v{i:02d}", lang, v, var, s, p) for i, (v, var, s, p) in enumerate(rows)]
    return out + [Voice(f"{lang}-v{len(rows):02d}", lang, *held_out, held_out=True)]


# Nine seen voices and one held-out voice per language. Seen voices cycle through the variants
# m1 m2 m3 m5 m7 f2 f3 f4 f5; the held-out ones use variants (f1, m4, m6) that no seen voice of any
# language uses, and, for English, an accent (West Midlands) absent from training.
VOICES: dict[str, list[Voice]] = {
    "en": _voices(
        "en",
        [
            ("en-us", "m3", 160, 50),
            ("en-us", "f2", 150, 65),
            ("en-gb", "m1", 155, 45),
            ("en-gb", "f3", 165, 70),
            ("en-gb-scotland", "m5", 150, 40),
            ("en-029", "f4", 145, 60),
            ("en-gb-x-rp", "m7", 170, 35),
            ("en-us-nyc", "f5", 160, 55),
            ("en-gb-x-gbclan", "m2", 140, 50),
        ],
        ("en-gb-x-gbcwmd", "f1", 155, 60),
    ),
    "fr": _voices(
        "fr",
        [
            ("fr-fr", "m3", 160, 50),
            ("fr-fr", "f2", 150, 65),
            ("fr-be", "m1", 155, 45),
            ("fr-be", "f3", 165, 70),
            ("fr-ch", "m5", 150, 40),
            ("fr-ch", "f4", 145, 60),
            ("fr-fr", "m7", 170, 35),
            ("fr-be", "f5", 160, 55),
            ("fr-ch", "m2", 140, 50),
        ],
        ("fr-fr", "m4", 155, 45),
    ),
    "es": _voices(
        "es",
        [
            ("es", "m3", 160, 50),
            ("es", "f2", 150, 65),
            ("es-419", "m1", 155, 45),
            ("es-419", "f3", 165, 70),
            ("es", "m5", 150, 40),
            ("es-419", "f4", 145, 60),
            ("es", "m7", 170, 35),
            ("es-419", "f5", 160, 55),
            ("es", "m2", 140, 50),
        ],
        ("es-419", "f1", 155, 60),
    ),
    "de": _voices(
        "de",
        [
            ("de", "m3", 160, 50),
            ("de", "f2", 150, 65),
            ("de", "m1", 155, 45),
            ("de", "f3", 165, 70),
            ("de", "m5", 150, 40),
            ("de", "f4", 145, 60),
            ("de", "m7", 170, 35),
            ("de", "f5", 160, 55),
            ("de", "m2", 140, 50),
        ],
        ("de", "m6", 150, 40),
    ),
}


SEEN_VOICES = 9
"""Seen voices per language of :data:`VOICES` (``--voices`` asks for more, see :func:`voice_table`)."""
# espeak-ng variants that sound like a person (no whisper, croak, robots or announcers), for voices beyond the
# table; none is a held-out voice's variant (f1, m4, m6)
EXTRA_VARIANTS = (
    "m8 klatt klatt2 klatt3 klatt4 adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb "
    "david ed edward Gene gustave Henrique Hugo iven Jacky john Lee linda marcelo Marco Mario max Michael michel "
    "miguel Mike Nguyen pablo paul pedro quincy rob robert steph zac anika grandpa grandma norbert sandro shelby "
    "travis victor"
).split()


def voice_table(seen: int = SEEN_VOICES) -> dict[str, list[Voice]]:
    """Every language's voices with ``seen`` seen voices: :data:`VOICES`'s nine first, then ``<lang>-v10``,
    ``v11``, ...: the table's accents of the language in turn, a variant of :data:`EXTRA_VARIANTS` (each once per
    language, in an order fixed per language), a speed of 130-185 words a minute and a pitch of 30-75. The held-out
    voice keeps its id (``<lang>-v09``) and settings whatever ``seen`` is, so the held-out test audio is the same."""
    if not SEEN_VOICES <= seen <= SEEN_VOICES + len(EXTRA_VARIANTS):
        raise UserError(
            f"--voices: expected {SEEN_VOICES} to {SEEN_VOICES + len(EXTRA_VARIANTS)} seen voices, got {seen}"
        )
    table = {}
    for lang, voices in VOICES.items():
        accents = list(dict.fromkeys(v.espeak_voice for v in voices if not v.held_out))
        variants = random.Random(f"voices/{lang}").sample(EXTRA_VARIANTS, len(EXTRA_VARIANTS))
        extra = [
            Voice(
                f"{lang}-v{SEEN_VOICES + 1 + i:02d}",
                lang,
                accents[i % len(accents)],
                variants[i],
                130 + (i * 23) % 56,
                30 + (i * 17) % 46,
            )
            for i in range(seen - SEEN_VOICES)
        ]
        table[lang] = [*voices, *extra]
    return table


def voice_for(
    seed: int, sentence: Sentence, lang: str, split: str, test_index: int = 0, voices: dict[str, list[Voice]] = VOICES
) -> Voice:
    """The voice that speaks ``sentence`` in ``lang``: a seen voice of ``voices`` (:func:`voice_table`) drawn from
    (seed, sentence, lang); in the test split, every other utterance (alternating by sentence and language) is the
    held-out voice."""
    own = voices[lang]
    if split == "test" and (test_index + LANGS.index(lang)) % 2 == 0:
        return next(v for v in own if v.held_out)
    seen = [v for v in own if not v.held_out]
    return seen[random.Random(f"{seed}/{sentence.id}/{lang}").randrange(len(seen))]


def split_sentences(*, train: int, dev: int, test: int, seed: int = 0) -> dict[str, list[Sentence]]:
    """The corpus sentences, without audio: test first, then dev, then train, from one deduplicated
    sequence, so the splits share no meaning and no text, and the test set stays the same when only
    ``train`` changes."""
    for name, n in (("train", train), ("dev", dev), ("test", test)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    sentences = generate_sentences(test + dev + train, seed)
    return {"test": sentences[:test], "dev": sentences[test : test + dev], "train": sentences[test + dev :]}


# --------------------------------------------------------------------------------------- speaking


def check_espeak(voices: list[Voice]) -> str:
    """Check that espeak-ng is installed and knows every voice and variant; return its version line."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: `sudo apt-get install espeak-ng` (or `make setup`)")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    version = version.split("Data at")[0].strip()  # "eSpeak NG text-to-speech: 1.51"
    langs = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
    variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    known_langs = {line.split()[1] for line in langs.splitlines()[1:] if len(line.split()) > 1}
    known_variants = {tok[3:] for line in variants.splitlines()[1:] for tok in line.split() if tok.startswith("!v/")}
    for v in voices:
        if v.espeak_voice not in known_langs:
            raise RuntimeError(f"voice {v.id}: espeak-ng has no language voice {v.espeak_voice!r} ({version})")
        if v.variant not in known_variants:  # espeak-ng silently ignores an unknown variant: refuse it here
            raise RuntimeError(f"voice {v.id}: espeak-ng has no variant {v.variant!r} ({version})")
    return version


def trim_silence(
    wav: np.ndarray, sample_rate: int, *, pad: float = PAD_SECONDS, rel: float = SILENCE_REL
) -> np.ndarray:
    """Cut leading/trailing silence, keeping ``pad`` seconds around the speech. ``wav``: [T] -> [T']."""
    frame = max(1, sample_rate // 100)  # 10 ms
    n = len(wav) // frame
    if n == 0:
        return wav
    peaks = np.abs(wav[: n * frame]).reshape(n, frame).max(axis=1)  # [n]
    loud = np.nonzero(peaks > rel * max(float(peaks.max()), 1e-9))[0]
    if loud.size == 0:
        return wav
    keep = int(pad * sample_rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(wav), (loud[-1] + 1) * frame + keep)
    return wav[start:end]


def speak(text: str, voice: Voice, path: str | os.PathLike) -> float:
    """Speak ``text`` with ``voice`` into ``path`` (16 kHz mono wav, written atomically); return seconds.

    An existing ``path`` is kept (idempotent re-runs) if it decodes whole at :data:`SAMPLE_RATE`; a
    truncated or unreadable one (a copy cut short, a full disk) is spoken again.
    """
    path = Path(path)
    if path.is_file():
        try:
            wav, sr = audio.load(path)
            if sr == SAMPLE_RATE:
                return len(wav) / SAMPLE_RATE
        except audio.AudioError:
            pass
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(prefix="espeak-", suffix=".wav")  # 22 050 Hz, outside the corpus
    os.close(fd)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    try:
        proc = subprocess.run(voice.command(raw), input=text.encode("utf-8"), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"espeak-ng failed for {path.name} (voice {voice.id}, text {text!r}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        wav, sr = audio.load(raw)  # [T] at 22 050 Hz
        wav = audio.resample(trim_silence(wav, sr), sr, SAMPLE_RATE)  # [T']
        audio.save(tmp, wav, SAMPLE_RATE)
        os.replace(tmp, path)  # atomic: a wav either exists whole or not at all
    finally:
        for p in (raw, tmp):
            if os.path.exists(p):
                os.remove(p)
    return len(wav) / SAMPLE_RATE


def _speak_job(job: tuple[str, str, Voice, str]) -> tuple[str, float, bool]:
    path, text, voice, _ = job
    existed = os.path.isfile(path)
    return path, speak(text, voice, path), existed


def _run_jobs(jobs: list[tuple[str, str, Voice, str]], n_workers: int, progress: bool) -> list[tuple[str, float, bool]]:
    from tqdm import tqdm

    bar: dict[str, Any] = dict(total=len(jobs), desc="speaking", unit="wav", disable=not progress, smoothing=0.1)
    if n_workers <= 1:
        return [_speak_job(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        return list(tqdm(pool.map(_speak_job, jobs, chunksize=4), **bar))


# --------------------------------------------------------------------------------------- corpus


def _write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it. Returns whether it wrote."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def _write_manifest_if_changed(path: Path, records: list[Record]) -> bool:
    root = path.parent.resolve()
    text = "".join(json.dumps(r.to_json(root), ensure_ascii=False) + "\n" for r in records)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_manifest(path, records)
    return True


def _readme(corpus: dict) -> str:
    sizes = corpus["sentences"]
    held = ", ".join(corpus["held_out_voices"])
    lines = [
        "# Synthetic parallel speech corpus (audiopalm)",
        "",
        "Generated by `audiopalm synth` (data_prep/synth_corpus.py): sentences from a small grammar "
        "(data_prep/grammar.py) rendered in English, French, Spanish and German with real agreement, "
        f"spoken by espeak-ng ({corpus['espeak_ng']}). Seed {corpus['seed']}, grammar version "
        f"{corpus['grammar_version']}. Texts are lowercase with punctuation.",
        "",
        "| split | sentences | manifest lines | hours of audio (all languages) |",
        "|---|---:|---:|---:|",
    ]
    for split in ("train", "dev", "test"):
        hours = sum(corpus["counts"]["seconds"].get(split, {}).values()) / 3600  # an empty split has no entry
        lines.append(f"| {split} | {sizes[split]} | {corpus['records'][split]} | {hours:.3f} |")
    lines += [
        "",
        "- `wav/<lang>/<sentence>-<voice>.wav`: 16 kHz mono, one per (sentence, language).",
        "- `train.jsonl`, `dev.jsonl`, `test.jsonl`: one line per (sentence, directed pair) for "
        + ", ".join(f"{s}->{t}" for s, t in PAIRS)
        + "; `speaker` is the voice of the source audio.",
        "- `corpus.json`: seed, sizes, every voice's espeak-ng settings, held-out voices, counts.",
        "",
        f"Held-out voices (test split only, never in train/dev): {held}. Dev and test sentences share no "
        "meaning and no text (in any language) with train.",
        "",
        "Check it: `audiopalm manifest check train.jsonl`.",
        "",
    ]
    return "\n".join(lines)


def check_langs(langs: Sequence[str]) -> tuple[str, ...]:
    """``langs`` in the grammar's order, checked: known codes, English (the pivot) and at least one other."""
    unknown = [x for x in langs if x not in LANGS]
    if unknown or "en" not in langs or len(set(langs)) < 2:
        raise UserError(
            f"--langs: expected English and at least one of {', '.join(LANGS[1:])} (codes of {', '.join(LANGS)}), "
            f"got {' '.join(langs) or 'none'}"
        )
    return tuple(x for x in LANGS if x in langs)


def pairs_of(langs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The directed pairs of :data:`PAIRS` whose two languages are both in ``langs``, in :data:`PAIRS` order."""
    return tuple((a, b) for a, b in PAIRS if a in langs and b in langs)


def synthesize(
    out_dir: str | os.PathLike,
    *,
    train: int,
    dev: int,
    test: int,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
    langs: Sequence[str] = LANGS,
    voices: int = SEEN_VOICES,
) -> dict:
    """Build the corpus in ``out_dir`` (see the module docstring) and return the corpus.json content.

    ``train``/``dev``/``test`` are numbers of sentences; each gives one wav per language and two
    manifest lines per language besides English (six with all four). ``langs``: the languages spoken (English
    and at least one other; a subset speaks exactly the wavs the full corpus has for those languages).
    ``voices``: seen voices per language (:func:`voice_table`; the held-out voice is the same whatever it is).
    ``jobs`` worker processes speak in parallel (default: all cores). Re-running into
    the same folder with the same seed skips what exists; a folder made with another seed (or
    another grammar / voice table) is refused rather than silently mixed.
    """
    out = Path(out_dir)
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    langs = check_langs(langs)
    pairs = pairs_of(langs)
    table = voice_table(voices)
    all_voices = [v for vs in table.values() for v in vs]
    version = check_espeak(all_voices)
    voices_json = {lang: [dataclasses.asdict(v) for v in vs] for lang, vs in table.items()}
    meta_path = out / "corpus.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        for field, value in (("seed", seed), ("grammar_version", GRAMMAR_VERSION), ("voices", voices_json)):
            if old.get(field) != value:
                raise UserError(
                    f"{meta_path}: this folder holds a corpus made with a different {field} "
                    f"(folder: {old.get(field)!r}, asked: {value!r}); use another --out or delete "
                    "the folder"
                )
    else:  # claim the folder before the first wav, so that an interrupted run cannot be resumed with another seed
        out.mkdir(parents=True, exist_ok=True)
        _write_text_if_changed(
            meta_path,
            json.dumps(
                {"seed": seed, "grammar_version": GRAMMAR_VERSION, "voices": voices_json, "complete": False}, indent=2
            )
            + "\n",
        )

    splits = split_sentences(train=train, dev=dev, test=test, seed=seed)
    speech_jobs: list[tuple[str, str, Voice, str]] = []
    wav_of: dict[tuple[str, str], tuple[str, Voice]] = {}  # (sentence id, lang) -> (path, voice)
    for split, sentences in splits.items():
        for i, s in enumerate(sentences):
            for lang in langs:
                voice = voice_for(seed, s, lang, split, test_index=i, voices=table)
                path = str((out / "wav" / lang / f"{s.id}-{voice.id}.wav").resolve())
                wav_of[(s.id, lang)] = (path, voice)
                speech_jobs.append((path, s.texts[lang], voice, split))

    t0 = time.perf_counter()
    results = _run_jobs(speech_jobs, min(jobs, max(1, len(speech_jobs))), progress)
    wall = time.perf_counter() - t0
    seconds_of = {path: sec for path, sec, _ in results}
    n_new = sum(not existed for _, _, existed in results)

    counts: dict[str, dict[str, Any]] = {
        "wavs": {lang: 0 for lang in langs},
        "seconds": {},
        "utterances_by_voice": {v.id: 0 for v in all_voices},
    }
    for path, _text, voice, split in speech_jobs:
        counts["wavs"][voice.lang] += 1
        counts["utterances_by_voice"][voice.id] += 1
        by_lang = counts["seconds"].setdefault(split, {lang: 0.0 for lang in langs})
        by_lang[voice.lang] = round(by_lang[voice.lang] + seconds_of[path], 3)

    records_per_split = {}
    for split, sentences in splits.items():
        records = []
        for s in sentences:
            for src, tgt in pairs:
                src_path, src_voice = wav_of[(s.id, src)]
                records.append(
                    Record(
                        id=f"{s.id}-{src}-{tgt}",
                        lang=src,
                        text=s.texts[src],
                        audio=src_path,
                        tgt_lang=tgt,
                        tgt_text=s.texts[tgt],
                        tgt_audio=wav_of[(s.id, tgt)][0],
                        speaker=src_voice.id,
                        split=split,
                    )
                )
        _write_manifest_if_changed(out / f"{split}.jsonl", records)
        records_per_split[split] = len(records)

    corpus = {
        "name": "audiopalm synthetic parallel speech corpus",
        "seed": seed,
        "grammar_version": GRAMMAR_VERSION,
        "espeak_ng": version,
        "languages": list(langs),
        "pairs": [f"{s}-{t}" for s, t in pairs],
        "sample_rate": SAMPLE_RATE,
        "text_case": "lowercase with punctuation",
        "sentences": {split: len(splits[split]) for split in ("train", "dev", "test")},
        "records": {split: records_per_split[split] for split in ("train", "dev", "test")},
        "manifests": {split: f"{split}.jsonl" for split in ("train", "dev", "test")},
        "voices": voices_json,
        "held_out_voices": [v.id for v in all_voices if v.held_out and v.lang in langs],
        "counts": counts,
        "complete": True,
    }
    _write_text_if_changed(meta_path, json.dumps(corpus, indent=2, ensure_ascii=False) + "\n")
    _write_text_if_changed(out / "README.md", _readme(corpus))
    if progress:
        print(
            f"spoke {n_new} new wav(s), kept {len(results) - n_new} existing, in {wall:.1f} s with {jobs} job(s)",
            file=sys.stderr,
        )
    return corpus


# --------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output folder (wav/, train/dev/test.jsonl, corpus.json, README.md)"
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="preset sizes: "
        + "; ".join(f"{k}: {v['train']}/{v['dev']}/{v['test']}" for k, v in PROFILES.items())
        + " train/dev/test sentences",
    )
    for split in ("train", "dev", "test"):
        parser.add_argument(
            f"--{split}", type=int, default=None, metavar="N", help=f"number of {split} sentences (overrides --profile)"
        )
    parser.add_argument("--seed", type=int, default=0, help="fixes texts, voices, ids and audio (default 0)")
    parser.add_argument(
        "--voices",
        type=int,
        default=SEEN_VOICES,
        metavar="N",
        help=f"seen voices per language (default {SEEN_VOICES}; up to {SEEN_VOICES + len(EXTRA_VARIANTS)}: more espeak-ng "
        "variants, accents, speeds and pitches); the held-out voice is the same whatever N is",
    )
    parser.add_argument(
        "--langs",
        nargs="+",
        default=list(LANGS),
        metavar="CODE",
        help=f"languages to speak: en and at least one other (default: all, {' '.join(LANGS)}); "
        "a subset gets exactly the full corpus's wavs of those languages",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel espeak-ng workers (default: all cores, %(default)s here)",
    )
    parser.add_argument(
        "--text-only",
        type=int,
        default=None,
        metavar="N",
        help="instead of speaking: write text_only.jsonl, N unseen sentences as text-only "
        "translation rows (every pair), for scoring MT with no audio",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


TEXT_ONLY_NAME = "text_only.jsonl"


def write_text_only(
    out_dir: str | os.PathLike,
    n: int,
    *,
    train: int,
    dev: int,
    test: int,
    seed: int = 0,
    langs: Sequence[str] = LANGS,
) -> Path:
    """Write ``OUT/text_only.jsonl``: sentences ``train+dev+test .. +n-1`` of the ``seed`` sequence (never in
    the spoken corpus of those sizes) as text-only rows, one per directed pair of ``langs``, split ``test``. If
    ``OUT`` holds a corpus, its seed, sizes and languages are used (the seed must agree)."""
    if not isinstance(n, int) or n < 1:
        raise UserError(f"--text-only: expected a positive number of sentences, got {n!r}")
    out = Path(out_dir)
    meta_path = out / "corpus.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("seed") != seed:
            raise UserError(
                f"{meta_path}: the corpus here was made with seed {meta.get('seed')}, not {seed}; "
                "pass its --seed so the text-only sentences are unseen by it"
            )
        if meta.get("sentences"):
            train, dev, test = (meta["sentences"][k] for k in ("train", "dev", "test"))
        langs = meta.get("languages") or langs
    pairs = pairs_of(check_langs(langs))
    start = train + dev + test
    records = [
        Record(
            id=p["id"],
            lang=p["src_lang"],
            text=p["src_text"],
            tgt_lang=p["tgt_lang"],
            tgt_text=p["tgt_text"],
            split="test",
        )
        for p in generate_pairs(n, seed, start=start, pairs=pairs)
    ]
    out.mkdir(parents=True, exist_ok=True)
    return write_manifest(out / TEXT_ONLY_NAME, records)


def run(args) -> int:
    sizes = dict(PROFILES[args.profile])
    for split in sizes:
        if getattr(args, split) is not None:
            sizes[split] = getattr(args, split)
    if args.text_only is not None:
        path = write_text_only(args.out, args.text_only, seed=args.seed, langs=args.langs, **sizes)
        if not args.quiet:
            print(format_summary(check_manifest(path, decode=False, progress=False)))
        print(path)
        return 0
    t0 = time.perf_counter()
    try:
        corpus = synthesize(
            args.out,
            **sizes,
            seed=args.seed,
            jobs=args.jobs,
            progress=not args.quiet,
            langs=args.langs,
            voices=args.voices,
        )
    except RuntimeError as e:  # espeak-ng missing or failing: the machine, not the input (bad values: exit 2)
        print(f"audiopalm synth: error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        for split in ("train", "dev", "test"):
            print(format_summary(check_manifest(Path(args.out) / f"{split}.jsonl", decode=False, progress=False)))
        print(f"held-out voices (test only): {', '.join(corpus['held_out_voices'])}")
        print(f"corpus in {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="synth_corpus.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
