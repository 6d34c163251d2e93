"""Evaluation metrics: WER/CER (jiwer), BLEU/chrF (sacrebleu), ASR-BLEU and TTS round-trip WER.

Every score is **corpus-level** and on a 0..100 scale:

- WER / CER = total edits (substitutions + deletions + insertions) over all utterances divided by the
  total number of reference words / characters, times 100. It is *not* the mean of per-utterance
  rates (a mean lets short utterances weigh as much as long ones). Per-utterance rates are returned too.
- BLEU / chrF are sacrebleu's corpus scores, returned with sacrebleu's signature string
  (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``) so a number can be reproduced.
- ASR-BLEU (S2ST, as in the AudioPaLM and Translatotron papers) is the BLEU of an ASR judge's
  transcript of the generated speech against the reference translation; TTS round-trip WER is the WER
  of the judge's transcript of synthesized speech against the input text. The judge is any object with
  ``transcribe(wavs, sample_rate, lang) -> list[str]`` (see :mod:`audiopalm.evaluation.judges`).

WER and CER compare :func:`normalize`-d text by default; BLEU and chrF compare the raw text (sacrebleu
tokenizes it itself), except ASR-BLEU, which normalises both sides because an ASR transcript has no
casing or punctuation to compare.

    >>> wer(["the cat sat"], ["The cat sat."]).value
    0.0

Subcommand ``audiopalm score REFS HYPS --metric wer bleu --lang en`` scores two text files (one
segment per line).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for the type hints; asr_judges imports torch lazily anyway
    from audiopalm.evaluation.judges import ASRJudge

# ----------------------------------------------------------------------------- normaliser

# Languages whose stand-alone integers are spelled out (num2words knows many more; these are the
# ones the embedded corpus speaks and the tests cover). Others keep their digits.
NUMBER_LANGS = ("en", "fr", "es", "de")

# Apostrophe look-alikes that keyboards, OCR and LLMs produce; all become "'" before the rules apply.
_APOSTROPHES = "\u2019\u2018\u02bc\u02b9\u00b4\u0060\u2032"
_APOSTROPHE_TABLE = str.maketrans({c: "'" for c in _APOSTROPHES})
# A run of digits that is a word by itself: not glued to letters ("mp3", "1st" stay as they are).
_STANDALONE_INT = re.compile(r"(?<![^\W\d_])\d+(?![^\W\d_])")


def _spell_integers(text: str, lang: str) -> str:
    """Replace each stand-alone digit run with its words in ``lang`` (num2words)."""
    try:
        from num2words import num2words
    except ImportError as e:  # a dependency of the package; a clear message if it is missing
        raise ImportError(
            "audiopalm.evaluation.metrics.normalize needs num2words to spell out numbers: "
            "pip install num2words (or pass lang=None to keep digits)"
        ) from e
    return _STANDALONE_INT.sub(lambda m: " " + num2words(int(m.group()), lang=lang) + " ", text)


def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def normalize(text: str, lang: str | None = None) -> str:
    """Normalise text before WER/CER scoring (and ASR-BLEU). The rules, applied in this order:

    1. **Unicode NFKC**: compatibility forms fold to plain ones (full-width ``ＡＢ`` -> ``AB``, the
       ligature ``ﬁ`` -> ``fi``, a decomposed ``e`` + combining accent -> ``é``).
    2. **Apostrophes unified**: ``’ ‘ ʼ ´ ` ′`` become ``'``.
    3. **Numbers spelled out** for ``lang`` in :data:`NUMBER_LANGS` (en, fr, es, de) with num2words:
       a stand-alone run of digits is one non-negative integer (``42`` -> ``forty-two``, ``quarante-deux``,
       ``cuarenta y dos``, ``zweiundvierzig``). Digits glued to letters (``mp3``, ``1st``) are left as
       they are; ``3.5`` and ``1,000`` are two numbers each (the separator is punctuation). For any other
       ``lang``, or ``lang=None``, digits are kept.
    4. **Lowercase** (``str.lower``, not ``casefold``, so German ``ß`` stays ``ß``).
    5. **Punctuation and symbols removed**: every character in a Unicode ``P*`` or ``S*`` category
       becomes a space, with one exception: an **apostrophe between two letters is kept**
       (``don't``, ``l'homme``, ``aujourd'hui`` stay one word; quote marks around a word go).
       **Hyphens split**: ``twenty-one`` -> ``twenty one``, ``peut-être`` -> ``peut être``, so a
       compound scores the same written with a hyphen or a space.
    6. **Accents kept**: ``café`` and ``cafe`` are different words (dropping accents would hide real
       errors in French, Spanish and German).
    7. **Whitespace collapsed**: any run of whitespace becomes one space; leading/trailing removed.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize expects a str, got {type(text).__name__} {text!r}")
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_APOSTROPHE_TABLE)
    if lang in NUMBER_LANGS:
        text = _spell_integers(text, lang)
    text = text.lower()
    out = []
    for i, ch in enumerate(text):
        if ch == "'" and 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha():
            out.append(ch)
        elif _is_punct_or_symbol(ch):
            out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


# ----------------------------------------------------------------------------- WER / CER


@dataclasses.dataclass
class ErrorRate:
    """A corpus-level word or character error rate and its parts."""

    metric: str
    """``"WER"`` or ``"CER"``."""
    value: float
    """100 * (substitutions + deletions + insertions) / ref_len over the whole corpus."""
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_len: int
    """Total reference words (WER) or characters, spaces included (CER)."""
    per_utterance: list[float]
    """Each utterance's own rate (100 * edits / max(ref_len, 1)); an empty reference counts as one unit."""
    n: int
    """Number of utterances."""
    signature: str = ""
    """How it was computed (normaliser on/off, language, jiwer version), to report beside the number."""

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def _check_pairs(refs: Sequence[str], hyps: Sequence[str], what: str) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError(f"{what}: refs and hyps must be lists of strings, not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"{what}: {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError(f"{what}: no utterances to score")
    for i, (r, h) in enumerate(zip(refs, hyps, strict=True)):
        if not isinstance(r, str) or not isinstance(h, str):
            raise TypeError(f"{what}: utterance {i}: expected str/str, got {type(r).__name__}/{type(h).__name__}")


def _error_rate(metric: str, refs: Sequence[str], hyps: Sequence[str], lang: str | None, normalized: bool) -> ErrorRate:
    import jiwer

    _check_pairs(refs, hyps, metric)
    if normalized:
        refs = [normalize(r, lang) for r in refs]
        hyps = [normalize(h, lang) for h in hyps]
    ref_units = [len(r.split()) if metric == "WER" else len(r) for r in refs]
    total = sum(ref_units)
    if total == 0:
        raise ValueError(
            f"{metric}: all {len(refs)} references are empty (after normalisation); an error rate needs reference words"
        )
    out = (
        jiwer.process_words(list(refs), list(hyps))
        if metric == "WER"
        else jiwer.process_characters(list(refs), list(hyps))
    )
    per_utt = []
    for units, chunks in zip(ref_units, out.alignments, strict=True):
        edits = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                edits += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                edits += c.hyp_end_idx - c.hyp_start_idx
        per_utt.append(100.0 * edits / max(units, 1))
    assert out.hits + out.substitutions + out.deletions == total, (
        metric,
        out.hits,
        out.substitutions,
        out.deletions,
        total,
    )
    edits = out.substitutions + out.deletions + out.insertions
    signature = f"norm:{'audiopalm' if normalized else 'no'}|lang:{lang or '-'}|jiwer:{_version('jiwer')}"
    return ErrorRate(
        metric=metric,
        value=100.0 * edits / total,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        hits=out.hits,
        ref_len=total,
        per_utterance=per_utt,
        n=len(refs),
        signature=signature,
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def wer(refs: Sequence[str], hyps: Sequence[str], lang: str | None = None, *, normalized: bool = True) -> ErrorRate:
    """Corpus word error rate (percent) of ``hyps`` against ``refs`` (one reference each).

    Texts go through :func:`normalize` (``lang`` picks the number words) unless ``normalized=False``.
    """
    return _error_rate("WER", refs, hyps, lang, normalized)


def cer(refs: Sequence[str], hyps: Sequence[str], lang: str | None = None, *, normalized: bool = True) -> ErrorRate:
    """Corpus character error rate (percent); spaces between words count as characters."""
    return _error_rate("CER", refs, hyps, lang, normalized)


# ----------------------------------------------------------------------------- BLEU / chrF

# sacrebleu tokenizer per target language; "13a" (the WMT default) for everything else. Japanese and
# Korean would need "ja-mecab"/"ko-mecab" and their extra packages: pass tokenize= explicitly.
BLEU_TOKENIZERS: dict[str, str] = {"zh": "zh"}


@dataclasses.dataclass
class CorpusScore:
    """A corpus-level sacrebleu score."""

    metric: str
    """``"BLEU"``, ``"chrF"``, ``"ASR-BLEU"``."""
    value: float
    """The score, 0..100."""
    signature: str
    """sacrebleu's signature (tokenizer, smoothing, version ...), to report beside the number."""
    n: int
    """Number of segments scored."""


def _check_hyps(hyps: Sequence[str], what: str) -> None:
    if isinstance(hyps, str):
        raise TypeError(f"{what}: hyps must be a list of strings, not a single string")
    for i, h in enumerate(hyps):
        if not isinstance(h, str):
            raise TypeError(f"{what}: hypothesis {i}: expected str, got {type(h).__name__}")


def _references(refs: Sequence[str] | Sequence[Sequence[str]], n_hyps: int, what: str) -> list[list[str]]:
    """One or several references per hypothesis -> sacrebleu's layout: one list per reference set."""
    if isinstance(refs, str):
        raise TypeError(f"{what}: refs must be a list, not a single string")
    if len(refs) != n_hyps:
        raise ValueError(f"{what}: {len(refs)} references but {n_hyps} hypotheses")
    if n_hyps == 0:
        raise ValueError(f"{what}: no segments to score")
    multi: list[Sequence[Any]] = [r if isinstance(r, (list, tuple)) else [r] for r in refs]
    k = len(multi[0])
    for i, r in enumerate(multi):
        if len(r) != k or not all(isinstance(x, str) for x in r):
            raise ValueError(f"{what}: segment {i}: expected {k} reference string(s), got {r!r}")
    return [[r[j] for r in multi] for j in range(k)]


def bleu(
    refs: Sequence[str] | Sequence[Sequence[str]],
    hyps: Sequence[str],
    lang: str | None = None,
    *,
    tokenize: str | None = None,
) -> CorpusScore:
    """Corpus BLEU (sacrebleu). ``refs[i]`` is a string or a list of strings (several references).

    ``tokenize`` defaults to :data:`BLEU_TOKENIZERS` for the target ``lang``, else ``"13a"``.
    """
    from sacrebleu.metrics import BLEU

    _check_hyps(hyps, "BLEU")
    ref_sets = _references(refs, len(hyps), "BLEU")
    scorer = BLEU(tokenize=tokenize or BLEU_TOKENIZERS.get(lang or "", "13a"))
    score = scorer.corpus_score(list(hyps), ref_sets)
    return CorpusScore("BLEU", float(score.score), str(scorer.get_signature()), len(hyps))


def chrf(refs: Sequence[str] | Sequence[Sequence[str]], hyps: Sequence[str], *, word_order: int = 0) -> CorpusScore:
    """Corpus chrF (sacrebleu); ``word_order=2`` gives chrF++."""
    from sacrebleu.metrics import CHRF

    _check_hyps(hyps, "chrF")
    ref_sets = _references(refs, len(hyps), "chrF")
    scorer = CHRF(word_order=word_order)
    score = scorer.corpus_score(list(hyps), ref_sets)
    return CorpusScore("chrF++" if word_order else "chrF", float(score.score), str(scorer.get_signature()), len(hyps))


# ----------------------------------------------------------------------------- judged speech metrics


def _transcribe(judge: ASRJudge, wavs: Sequence[np.ndarray], sample_rate: int, lang: str, what: str) -> list[str]:
    if not wavs:
        raise ValueError(f"{what}: no waveforms")
    texts = judge.transcribe(list(wavs), sample_rate, lang)
    if len(texts) != len(wavs) or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"{what}: judge {getattr(judge, 'name', type(judge).__name__)} returned "
            f"{len(texts)} item(s) for {len(wavs)} waveform(s), types "
            f"{sorted({type(t).__name__ for t in texts})}; expected one str each"
        )
    return texts


def asr_bleu(
    wavs: Sequence[np.ndarray],
    sample_rate: int,
    refs: Sequence[str],
    lang: str,
    judge: ASRJudge,
    *,
    normalized: bool = True,
) -> tuple[CorpusScore, list[str]]:
    """ASR-BLEU of generated speech: BLEU(judge transcripts of ``wavs``, reference translations).

    ``wavs``: mono float waveforms [T] at ``sample_rate`` in language ``lang``. With ``normalized``,
    references and transcripts both go through :func:`normalize` first (the transcript has no casing or
    punctuation). Returns the score (metric ``"ASR-BLEU"``, signature prefixed with the judge's name)
    and the transcripts.
    """
    texts = _transcribe(judge, wavs, sample_rate, lang, "ASR-BLEU")
    if normalized:
        refs = [normalize(r, lang) for r in refs]
        hyps = [normalize(t, lang) for t in texts]
    else:
        hyps = texts
    score = bleu(refs, hyps, lang)
    name = getattr(judge, "name", type(judge).__name__)
    score.metric = "ASR-BLEU"
    score.signature = f"judge:{name}|norm:{'yes' if normalized else 'no'}|{score.signature}"
    return score, texts


def tts_roundtrip_wer(
    wavs: Sequence[np.ndarray], sample_rate: int, texts: Sequence[str], lang: str, judge: ASRJudge
) -> tuple[ErrorRate, list[str]]:
    """TTS round-trip WER: WER(judge transcripts of synthesized ``wavs``, the input ``texts``).

    Returns the error rate and the transcripts.
    """
    hyps = _transcribe(judge, wavs, sample_rate, lang, "TTS round-trip WER")
    score = wer(texts, hyps, lang)
    score.signature = f"judge:{getattr(judge, 'name', type(judge).__name__)}|{score.signature}"
    return score, hyps


# ----------------------------------------------------------------------------- summary rows


def summary_row(
    score: ErrorRate | CorpusScore,
    *,
    task: str,
    src: str | None,
    tgt: str | None = None,
    split: str = "test",
    subset: str = "all",
    metric: str | None = None,
) -> dict:
    """One entry of a results folder's ``summary.json`` "metrics" list (the format eval/report.py reads).

    ``metric`` overrides the score's own name (e.g. ``"TTS-WER"`` for a round-trip WER).
    """
    return {
        "task": task,
        "src": src,
        "tgt": tgt,
        "split": split,
        "subset": subset,
        "metric": metric or score.metric,
        "value": round(float(score.value), 4),
        "n": score.n,
        "signature": score.signature or None,
    }


# ----------------------------------------------------------------------------- CLI: audiopalm score

SCORERS: dict[str, Callable[..., Any]] = {"wer": wer, "cer": cer, "bleu": bleu, "chrf": chrf}


def add_arguments(parser) -> None:
    """``audiopalm score REFS HYPS``: score two text files, one segment per line."""
    parser.add_argument("refs", help="reference text file, one segment per line (UTF-8)")
    parser.add_argument("hyps", help="hypothesis text file, same number of lines")
    parser.add_argument(
        "--metric", choices=list(SCORERS), nargs="+", default=["wer"], help="metrics to compute (default: wer)"
    )
    parser.add_argument(
        "--lang", default=None, help="language code: number words for WER/CER, tokenizer for BLEU (e.g. en, zh)"
    )
    parser.add_argument("--json", action="store_true", help="print summary.json-style rows as JSON lines")


def _read_lines(path: str) -> list[str]:
    from audiopalm.errors import read_text_lines

    return [line.rstrip("\r\n") for _, line in read_text_lines(path, what="text file")]


def run(args) -> int:
    import json

    refs, hyps = _read_lines(args.refs), _read_lines(args.hyps)
    if len(refs) != len(hyps):
        raise ValueError(
            f"{args.hyps}: {len(hyps)} lines but {args.refs} has {len(refs)}; give one hypothesis per reference line"
        )
    for name in args.metric:
        fn = SCORERS[name]
        score = fn(refs, hyps) if name == "chrf" else fn(refs, hyps, args.lang)
        if args.json:
            print(
                json.dumps(
                    {"metric": score.metric, "value": score.value, "n": score.n, "signature": score.signature},
                    ensure_ascii=False,
                )
            )
        else:
            print(f"{score.metric} = {score.value:.2f}  (n={score.n}; {score.signature})")
    return 0
