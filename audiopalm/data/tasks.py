"""Tasks as data, and rendering a token-store row into one training example (input_ids, labels).

A task maps one input segment of a record to one output segment. The prompt is a plain-text tag
tokenized by the text tokenizer, as in the AudioPaLM paper (``[ASR English]``, ``[S2ST English French]``),
followed by the input; the target is the output segment(s) and eos. Loss is computed on the target only
(labels are -100 on the prompt). Tasks that share an input chain into one target, in the order given:
``[ASR AST S2ST English French]`` decodes the transcript, then the translation, then the translated
speech, in one pass. Segments are separated by ``<|sep|>``; audio is ``<|audio_start|> .. <|audio_end|>``::

    ASR           [ASR English]<|audio_start|>a a a a<|audio_end|><|sep|> | the dog sleeps.</s>
    TTS           [TTS English] the dog sleeps.<|sep|> | <|audio_start|>a a a a<|audio_end|></s>
    MT            [MT English French] the dog sleeps.<|sep|> | le chien dort.</s>
    ASR AST S2ST  [ASR AST S2ST English French]<|audio_start|>a a<|audio_end|><|sep|>
                  | the dog sleeps.<|sep|>le chien dort.<|sep|><|audio_start|>b b<|audio_end|></s>
                  `--------- prompt (labels -100) --------'  `----------- target (scored) -----------'

(``a`` = audio tokens of ``audio_codes`` through the vocabulary's codebook pattern; a bos token, if
the text tokenizer has one distinct from eos, comes first.) With
:attr:`~audiopalm.data.vocab.VocabLayout.output_words` the speech a target holds is written word by word,
each word's text before its units (the record's ``audio_words`` / ``tgt_audio_words`` say where each word
starts)::

    TTS           [TTS English] the dog sleeps.<|sep|> | <|audio_start|> the a a dog a sleeps. a a<|audio_end|></s>
 A text segment of the target ends at
``<|sep|>`` or at eos; that, and :func:`output_template`, is what the constrained decoder needs.

A record is a token-store row: a dict with the manifest fields (``id``, ``lang``, ``text``,
``tgt_lang``, ``tgt_text``) plus ``audio_codes`` and ``tgt_audio_codes`` as ``[K, F]`` nested lists,
numpy arrays or tensors.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import overload

import torch

from audiopalm.data.manifest import LANGUAGES
from audiopalm.data.patterns import PatternError
from audiopalm.data.token_store import WORD_COLUMNS
from audiopalm.data.vocab import UnifiedVocab, VocabError

IGNORE_INDEX = -100
"""Label of prompt positions: ``torch.nn.CrossEntropyLoss`` (and HF models) skip it."""

TEXT, AUDIO = "text", "audio"


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: which record field goes in, which comes out."""

    name: str
    """The tag word (``"ASR"``)."""
    input: tuple[str, str]
    """(``"text"`` | ``"audio"``, record field) of the prompt's input segment."""
    output: tuple[str, str]
    """(``"text"`` | ``"audio"``, record field) of the target segment."""

    @property
    def needs_tgt_lang(self) -> bool:
        """Whether the tag names a target language (the output is a translation)."""
        return self.output[1].startswith("tgt_")


# WARNING: this table, the tag format and the segment layout above are part of every trained
# checkpoint (the model learnt these exact tags and orders). Changing an entry breaks trained
# checkpoints; add new tasks under new names instead.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("ASR", input=(AUDIO, "audio_codes"), output=(TEXT, "text")),
        Task("AST", input=(AUDIO, "audio_codes"), output=(TEXT, "tgt_text")),
        Task("S2ST", input=(AUDIO, "audio_codes"), output=(AUDIO, "tgt_audio_codes")),
        Task("TTS", input=(TEXT, "text"), output=(AUDIO, "audio_codes")),
        Task("MT", input=(TEXT, "text"), output=(TEXT, "tgt_text")),
    )
}


class TaskError(ValueError):
    """A task that cannot be rendered for a record. ``reason`` is short and shared by like errors
    (``"missing tgt_audio_codes"``, ``"too long"``), so skips can be counted by it."""

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        task: str | None = None,
        field: str | None = None,
        reason: str = "invalid",
    ):
        self.record_id, self.task, self.field, self.reason = record_id, task, field, reason
        where = ", ".join(f"{k} {v!r}" for k, v in (("record", record_id), ("task", task), ("field", field)) if v)
        super().__init__(f"{where}: {message}" if where else message)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task or a chain of tasks sharing one input (``("ASR", "AST", "S2ST")``)."""

    names: tuple[str, ...]
    """Task names in output order; each a key of :data:`TASKS`."""

    def __post_init__(self):
        if not self.names:
            raise TaskError("names: empty task")
        unknown = [n for n in self.names if n not in TASKS]
        if unknown:
            raise TaskError(f"names: unknown task {unknown[0]!r}; known: {', '.join(TASKS)}", task=" ".join(self.names))
        tasks = [TASKS[n] for n in self.names]
        inputs = {t.input for t in tasks}
        if len(inputs) > 1:
            raise TaskError(f"names: chained tasks must share one input, got {sorted(inputs)}", task=self.name)
        outputs = [t.output for t in tasks]
        if len(set(outputs)) != len(outputs):
            raise TaskError(f"names: a chain repeats an output ({outputs})", task=self.name)

    @property
    def name(self) -> str:
        """``"ASR AST S2ST"``: the tag words, also the task's name in configs and ``audiopalm.json``."""
        return " ".join(self.names)

    @property
    def input_segment(self) -> tuple[str, str]:
        """(kind, field) of the input."""
        return TASKS[self.names[0]].input

    @property
    def output_segments(self) -> list[tuple[str, str]]:
        """[(kind, field), ...] of the target, in order."""
        return [TASKS[n].output for n in self.names]

    @property
    def needs_tgt_lang(self) -> bool:
        return any(TASKS[n].needs_tgt_lang for n in self.names)

    @property
    def speaks(self) -> bool:
        """Whether any output is speech (TTS, S2ST and chains ending in it)."""
        return any(kind == AUDIO for kind, _ in self.output_segments)

    @property
    def fields(self) -> list[str]:
        """Record fields rendering needs (languages included)."""
        out = ["lang"] + (["tgt_lang"] if self.needs_tgt_lang else [])
        return out + [self.input_segment[1]] + [f for _, f in self.output_segments]

    def tag(self, lang: str, tgt_lang: str | None = None) -> str:
        """``"[ASR AST English French]"`` from ISO codes."""
        if self.needs_tgt_lang and tgt_lang is None:
            raise TaskError(f"{self.name}: a target language (tgt_lang) is needed")
        words = [LANGUAGES[lang]] + ([LANGUAGES[str(tgt_lang)]] if self.needs_tgt_lang else [])
        return f"[{self.name} {' '.join(words)}]"


def parse_task(task: str | TaskSpec) -> TaskSpec:
    """``"ASR AST S2ST"`` (words separated by spaces, any case) -> :class:`TaskSpec`."""
    if isinstance(task, TaskSpec):
        return task
    if not isinstance(task, str) or not task.split():
        raise TaskError(f"expected a task name such as 'ASR' or 'ASR AST', got {task!r}")
    return TaskSpec(tuple(w.upper() for w in task.split()))


def tag_lines() -> list[str]:
    """One line per language holding every task word, e.g. ``"[ASR AST S2ST TTS MT English]"``.

    Add these to a text tokenizer's training text (stage 0) so that no tag word becomes ``<unk>``."""
    return [f"[{' '.join(TASKS)} {name}]" for name in LANGUAGES.values()]


def output_template(task: str | TaskSpec) -> list[tuple[str, str]]:
    """The target's segments in order, e.g. ``[("text", "text"), ("text", "tgt_text"), ("audio", "tgt_audio_codes")]``."""
    return parse_task(task).output_segments


# ----------------------------------------------------------------------------- rendering


def _field(record: dict, spec: TaskSpec, field: str):
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TaskError(
            "missing or empty" + (" (this record has no translation)" if field.startswith("tgt_") else ""),
            record_id=record.get("id"),
            task=spec.name,
            field=field,
            reason=f"missing {field}",
        )
    return value


def _lang(record: dict, spec: TaskSpec, field: str) -> str:
    code = _field(record, spec, field)
    if code not in LANGUAGES:
        raise TaskError(
            f"unknown language {code!r} (add it to audiopalm.data.manifest.LANGUAGES)",
            record_id=record.get("id"),
            task=spec.name,
            field=field,
            reason=f"unknown {field}",
        )
    return code


def _segment_ids(
    record: dict, spec: TaskSpec, kind: str, field: str, vocab: UnifiedVocab, *, dedup: bool = False
) -> list[int]:
    """Token ids of one text or audio segment of ``record``; ``dedup``: each run of a repeated code in the first
    codebook as one token."""
    value = _field(record, spec, field)
    if kind == TEXT:
        return vocab.text_ids(value)
    codes = torch.as_tensor(value)  # [K, F]
    if codes.dim() != 2 or codes.shape[1] == 0:
        raise TaskError(
            f"expected audio codes [K, F] with F >= 1, got shape {tuple(codes.shape)}",
            record_id=record.get("id"),
            task=spec.name,
            field=field,
            reason=f"bad {field}",
        )
    if dedup:  # the vocabulary reads one codebook (VocabLayout checks it): the first, however many the store holds
        codes = torch.unique_consecutive(codes[0])[None]  # [1, runs]
    try:
        return vocab.audio_to_ids(codes)
    except (PatternError, VocabError) as e:
        raise TaskError(
            str(e), record_id=record.get("id"), task=spec.name, field=field, reason=f"bad {field}"
        ) from None


def prompt_ids(record: dict, task: str | TaskSpec, vocab: UnifiedVocab) -> list[int]:
    """The prompt (what generation starts from): [bos] tag, input segment, ``<|sep|>``.

    Only the languages and the input field of ``record`` are needed. Input audio is collapsed into runs when the
    vocabulary says so (:attr:`audiopalm.data.vocab.VocabLayout.input_dedup`)."""
    spec = parse_task(task)
    head, audio = _prompt_parts(record, spec, vocab)
    return head + audio + [vocab.sep_id]


def _prompt_parts(record: dict, spec: TaskSpec, vocab: UnifiedVocab) -> tuple[list[int], list[int]]:
    """The prompt before ``<|sep|>``, in two parts: ([bos] tag [text input], the input audio segment or [])."""
    lang = _lang(record, spec, "lang")
    tgt_lang = _lang(record, spec, "tgt_lang") if spec.needs_tgt_lang else None
    tag = spec.tag(lang, tgt_lang)
    kind, field = spec.input_segment
    ids = [vocab.bos_id] if vocab.bos_id is not None and vocab.bos_id != vocab.eos_id else []
    if kind == TEXT:  # tag and text in one string, as a person would write it
        return ids + vocab.text_ids(f"{tag} {_field(record, spec, field)}"), []
    return ids + vocab.text_ids(tag), _segment_ids(record, spec, kind, field, vocab, dedup=vocab.layout.input_dedup)


def target_ids(record: dict, task: str | TaskSpec, vocab: UnifiedVocab) -> list[int]:
    """The target: output segments joined by ``<|sep|>``, then eos."""
    spec = parse_task(task)
    ids: list[int] = []
    for i, (kind, field) in enumerate(spec.output_segments):
        if i:
            ids.append(vocab.sep_id)
        if kind == AUDIO and vocab.layout.output_words:
            ids += _worded_speech_ids(record, spec, field, vocab)
        else:
            ids += _segment_ids(record, spec, kind, field, vocab)
    return ids + [vocab.eos_id]


def _worded_speech_ids(record: dict, spec: TaskSpec, field: str, vocab: UnifiedVocab) -> list[int]:
    """An output audio segment written word by word: ``<|audio_start|>`` then, per word of the transcript, the
    word's text tokens (with its leading space) and the units of its frames, then ``<|audio_end|>``."""
    ids = _segment_ids(record, spec, AUDIO, field, vocab)  # checks the codes; [start, units..., end]
    units = ids[1:-1]
    starts, text = record.get(WORD_COLUMNS[field]), record.get(TRANSCRIPTS[field])
    words = text.split() if isinstance(text, str) else []
    if starts is None or not words:
        raise TaskError(
            "no word starts: the model writes speech word by word (output_words); tokenize with --words",
            record_id=record.get("id"),
            task=spec.name,
            field=WORD_COLUMNS[field],
            reason=f"no {WORD_COLUMNS[field]}",
        )
    starts = [int(s) for s in starts]
    if len(starts) != len(words) or starts != sorted(starts) or starts[-1] > len(units):
        raise TaskError(
            f"{len(starts)} word starts {starts[:8]} for {len(words)} words and {len(units)} frames",
            record_id=record.get("id"),
            task=spec.name,
            field=WORD_COLUMNS[field],
            reason=f"bad {WORD_COLUMNS[field]}",
        )
    out = [ids[0]]
    for i, word in enumerate(speech_words(" ".join(words), vocab)):
        end = starts[i + 1] if i + 1 < len(words) else len(units)
        out += word + units[starts[i] if i else 0 : end]
    return out + [ids[-1]]


def speech_words(text: str, vocab: UnifiedVocab) -> list[list[int]]:
    """The text tokens of each word of ``text`` as speech written word by word holds them (with a leading space)."""
    return [vocab.text_ids(" " + word) for word in text.split()]


@overload
def render(
    record: dict, task: str | TaskSpec, vocab: UnifiedVocab, *, max_len: int, skip: None = None, read: bool = False
) -> dict: ...
@overload
def render(
    record: dict, task: str | TaskSpec, vocab: UnifiedVocab, *, max_len: int, skip: Counter, read: bool = False
) -> dict | None: ...
def render(
    record: dict,
    task: str | TaskSpec,
    vocab: UnifiedVocab,
    *,
    max_len: int,
    skip: Counter | None = None,
    read: bool = False,
) -> dict | None:
    """One training example: ``{"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}``.

    ``read``: when the input is audio whose transcript the record holds (``text`` for ``audio_codes``, ``tgt_text``
    for ``tgt_audio_codes``), the example also gets ``"read": (start, end, text_ids)``: the input audio segment's
    positions ``[start, end)`` and the transcript's text token ids, for the reading loss
    (:func:`audiopalm.training.core.reading_loss_sum`).

    A record that cannot be rendered (missing field, unknown language, bad codes, longer than
    ``max_len``) raises :class:`TaskError` naming the record, task and field; with a ``skip`` counter
    it is counted there instead (key ``"<task>: <reason>"``) and None is returned. A target is never
    truncated. An unknown task always raises.
    """
    spec = parse_task(task)
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len: expected a positive integer, got {max_len!r}")
    try:
        head, audio = _prompt_parts(record, spec, vocab)
        prompt = head + audio + [vocab.sep_id]
        target = target_ids(record, spec, vocab)
        total = len(prompt) + len(target)
        if total > max_len:
            raise TaskError(
                f"{total} tokens (prompt {len(prompt)} + target {len(target)}) > max_len {max_len}",
                record_id=record.get("id"),
                task=spec.name,
                reason="too long",
            )
    except TaskError as e:
        if skip is None:
            raise
        skip[f"{spec.name}: {e.reason}"] += 1
        return None
    example: dict = {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}
    transcript = record.get(TRANSCRIPTS.get(spec.input_segment[1], ""))
    if read and audio and isinstance(transcript, str) and transcript.strip():
        example["read"] = (len(head), len(head) + len(audio), vocab.text_ids(transcript))
    return example


TRANSCRIPTS = {"audio_codes": "text", "tgt_audio_codes": "tgt_text"}
"""The record field that transcribes each audio field (what the reading loss reads the audio as)."""
