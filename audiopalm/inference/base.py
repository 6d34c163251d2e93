"""What the AudioPaLM and Speech-Llama pipelines share: outputs, request checks, audio input, batching.

A pipeline subclass says what differs: how a checkpoint is loaded (``from_pretrained``), which tasks it can run
(:meth:`SpeechTextPipeline._check_task`), how one input becomes a task record (:meth:`SpeechTextPipeline._record`)
and how a batch of records is decoded (:meth:`SpeechTextPipeline._run`). The base gives both the same user API
(``asr``, ``ast``, ``generate`` on one input or a list), the same language checks and error messages, the same
audio reading (file path or waveform at any rate), the same batching with a progress bar, and the same
:class:`Output` (so ``audiopalm eval`` writes both into the same files and report).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import LANGUAGES
from audiopalm.data.tasks import TaskError, TaskSpec, parse_task
from audiopalm.data.vocab import split_language_key

DEFAULT_TEXT_TOKENS = 256
"""Longest text output when the caller gives no ``max_new_tokens``: a few long sentences."""


class PipelineError(ValueError):
    """A request the pipeline refuses (unknown language, empty audio, too long, cannot decode audio)."""


@dataclasses.dataclass
class Output:
    """What one input became. Fields a task does not produce are None."""

    task: str
    """The task or chain that ran (``"ASR AST S2ST"``)."""
    text: str | None = None
    """Transcript (ASR) of the input speech."""
    translation: str | None = None
    """Translated text (AST, MT)."""
    codes: torch.Tensor | None = None
    """Generated audio codes ``[k, F]`` (TTS, S2ST); None if decoding stopped before a whole frame."""
    audio: np.ndarray | None = None
    """The codes decoded to a mono float32 waveform ``[T]`` at :attr:`sample_rate`."""
    sample_rate: int | None = None
    """Hz of :attr:`audio`."""
    ids: list[int] = dataclasses.field(default_factory=list, repr=False)
    """The generated token ids (after the prompt, up to and including eos)."""
    finished: bool = True
    """False when ``max_new_tokens`` ran out before eos (outputs may then be missing or cut)."""

    def to_dict(self) -> dict[str, Any]:
        """The output as the dicts Hugging Face pipelines return, only for the fields this task produced:
        ``{"text": ...}`` (speech recognition), ``{"translation_text": ...}`` (translation),
        ``{"audio": ..., "sampling_rate": ...}`` (text to speech); a chain gives all of its fields in one dict."""
        out: dict[str, Any] = {}
        if self.text is not None:
            out["text"] = self.text
        if self.translation is not None:
            out["translation_text"] = self.translation
        if self.audio is not None:
            out["audio"] = self.audio
            out["sampling_rate"] = self.sample_rate
        return out


def default_device(device: str | torch.device | None) -> str | torch.device:
    """``device``, or cuda when there is one, else cpu."""
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_single(inputs: Any) -> bool:
    """Whether ``inputs`` is one input (a text, a path, a waveform) rather than a list of them."""
    return isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor))


class SpeechTextPipeline:
    """The base of :class:`audiopalm.inference.pipeline.AudioPaLM` and
    :class:`audiopalm.inference.speech_llama_pipeline.SpeechLlamaPipeline` (see the module docstring)."""

    _TASK_METHODS: tuple[str, ...] = ("asr", "ast")
    """The one-task methods :meth:`__call__` dispatches to by name."""

    def __init__(self, model, *, device: str | torch.device | None = None, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        if device is not None:
            self.model.to(device)

    # ---- what a subclass says ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Hz the model's speech input is read at."""
        raise NotImplementedError

    @property
    def tasks(self) -> list[str]:
        """Task names the model can run (AudioPaLM: the ones its checkpoint was trained on; may be empty)."""
        raise NotImplementedError

    def _check_task(self, spec: TaskSpec) -> None:
        """Refuse a task this model cannot run (after the language checks)."""

    def trained_languages(self, spec: TaskSpec) -> list[str]:
        """Languages (``en``) or pairs (``en-fr``, translation tasks) the model was trained on for ``spec``; empty
        when the checkpoint does not say. A language the user leaves out is taken from here when only one fits."""
        return []

    def _record(self, spec: TaskSpec, item, src: str, tgt: str | None, sample_rate: int | None, index: int) -> dict:
        """One user input -> a task record (``id``, ``lang``, ``tgt_lang`` and the task's input field)."""
        raise NotImplementedError

    def _run(self, spec: TaskSpec, records: Sequence[dict], **kwargs) -> list[Output]:
        """Checked task records -> one :class:`Output` each, in order."""
        raise NotImplementedError

    # ---- the user API --------------------------------------------------------------------------------
    def __call__(self, task: str | TaskSpec, inputs, *args, **kwargs):
        """``pipe("asr", "clip.wav", lang="en")``: the method of that name where there is one (``asr``, ``ast``, and
        AudioPaLM's ``tts``, ``mt``, ``s2st``, with their keywords), else :meth:`generate` (any task or chain, in
        any case: ``pipe("asr ast", wavs, "en", "fr")``)."""
        if isinstance(task, str):
            method = task.strip().lower()
            if method in self._TASK_METHODS:
                return getattr(self, method)(inputs, *args, **kwargs)
            task = task.upper()
        return self.generate(task, inputs, *args, **kwargs)

    def asr(self, wav, lang: str | None = None, **kwargs):
        """Speech (a waveform [T], a file path, or a list of them) -> transcript (``Output.text``)."""
        return self.generate("ASR", wav, lang, **kwargs)

    def ast(self, wav, src: str | None = None, tgt: str | None = None, **kwargs):
        """Speech in ``src`` -> text translated into ``tgt`` (``Output.translation``)."""
        return self.generate("AST", wav, src, tgt, **kwargs)

    def generate(
        self,
        task: str | TaskSpec,
        inputs,
        src: str | None = None,
        tgt: str | None = None,
        *,
        sample_rate: int | None = None,
        **kwargs,
    ):
        """Run ``task`` on one input (returns an :class:`Output`) or a list (returns a list, in order).

        ``inputs``: text or speech (a waveform [T] at ``sample_rate``, default :attr:`sample_rate`, or an audio
        file path). ``src``/``tgt``: ISO codes (``tgt`` only for translation tasks). Other keyword arguments go
        to the subclass's decoding (``batch_size``, ``max_new_tokens``, ``progress``, generation kwargs ...)."""
        spec, src, tgt = self._check_request(task, src, tgt)
        single = is_single(inputs)
        try:
            items = [inputs] if single else list(inputs)
        except TypeError:  # a number, None ...: neither one input nor a list of them
            raise PipelineError(
                f"inputs: expected text, a waveform (numpy/torch [T]), an audio file path or a list of them, "
                f"got {type(inputs).__name__}"
            ) from None
        records = [self._record(spec, item, src, tgt, sample_rate, i) for i, item in enumerate(items)]
        outs = self._run(spec, records, **kwargs)
        return outs[0] if single else outs

    def generate_records(self, task: str | TaskSpec, records: Sequence[dict], **kwargs) -> list[Output]:
        """Run ``task`` on task records (:mod:`audiopalm.data.tasks`: ``lang``, ``tgt_lang`` and the task's input
        field), e.g. the rows ``audiopalm eval`` reads from a manifest or a token store. Keywords as for
        :meth:`generate` (less ``sample_rate``); every record's languages are checked before any decoding."""
        spec = None
        needs_tgt = self._parse(task).needs_tgt_lang
        for pair in dict.fromkeys((r.get("lang"), r.get("tgt_lang") if needs_tgt else None) for r in records):
            spec, *_ = self._check_request(task, *pair, fill=False)
        spec = spec or self._parse(task)
        self._check_records(spec, records, kwargs)
        return self._run(spec, records, **kwargs)

    def _check_records(self, spec: TaskSpec, records: Sequence[dict], kwargs: dict) -> None:
        """Refuse records (or keywords) :meth:`generate_records` cannot run, before any decoding."""

    # ---- shared helpers ------------------------------------------------------------------------------
    @staticmethod
    def _parse(task: str | TaskSpec) -> TaskSpec:
        try:
            return parse_task(task)
        except TaskError as e:
            raise PipelineError(str(e)) from None

    def _check_request(self, task, src, tgt, *, fill: bool = True) -> tuple[TaskSpec, str, str | None]:
        """Parse the task and check the languages and the task before any work: ``(spec, src, tgt)``, with a
        language left out filled in (``fill``) when the model was trained on one that fits only."""
        spec = self._parse(task)
        for name, code in (("src", src), ("tgt", tgt)):
            if code is not None and code not in LANGUAGES:
                raise PipelineError(f"{name}: unknown language {code!r}; known: {', '.join(sorted(LANGUAGES))}")
        trained = [split_language_key(x) for x in self.trained_languages(spec)]
        fits = [(s, t) for s, t in trained if src in (None, s) and (tgt is None or t == tgt)]
        if fill and (src is None or (spec.needs_tgt_lang and tgt is None)) and len(fits) == 1:
            src, tgt = fits[0][0], fits[0][1] if spec.needs_tgt_lang else tgt
        if src is None:
            known = sorted({s for s, _ in trained}) or sorted(LANGUAGES)
            where = "; this model was trained on" if trained else ", one of"
            raise PipelineError(
                f"task {spec.name}: give the language of the input (lang= / src=){where}: " + ", ".join(known)
            )
        if spec.needs_tgt_lang and tgt is None:
            known = sorted({t for s, t in trained if s == src and t}) or sorted(set(LANGUAGES) - {src})
            where = f"; this model was trained on {src} to" if trained else ", one of"
            raise PipelineError(
                f"task {spec.name} translates: give the target language (tgt=){where}: " + ", ".join(known)
            )
        if not spec.needs_tgt_lang and tgt is not None:
            raise PipelineError(f"task {spec.name} does not translate, but tgt={tgt!r} was given")
        if tgt is not None and tgt == src:
            raise PipelineError(f"src and tgt are both {src!r}; translation tasks need two languages")
        self._check_task(spec)
        return spec, src, tgt

    def load_audio(self, item, *, sample_rate: int | None = None, name: str = "input") -> np.ndarray:
        """A waveform [T] (at ``sample_rate``, default :attr:`sample_rate`) or an audio file path -> float32 [T]
        at :attr:`sample_rate`, validated."""
        sr = self.sample_rate
        try:
            if isinstance(item, (str, os.PathLike)):
                wav, _ = audio_io.load(item, sr)  # [T]
                return wav
            if isinstance(item, (np.ndarray, torch.Tensor)):
                arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
                return audio_io.resample(audio_io.validate(arr, sample_rate or sr, name=name), sample_rate or sr, sr)
        except audio_io.AudioError as e:
            raise PipelineError(str(e)) from None
        raise PipelineError(
            f"{name}: expected a waveform (numpy/torch [T]) or an audio file path, got {type(item).__name__}"
        )

    def _batches(self, spec: TaskSpec, n: int, batch_size: int | None, progress: bool) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each batch of ``n`` items (``batch_size``, default the pipeline's), with a bar."""
        bs = batch_size or self.batch_size
        if bs < 1:
            raise PipelineError(f"batch_size: expected >= 1, got {bs}")
        for s in tqdm(range(0, n, bs), desc=f"generate {spec.name}", unit="batch", disable=not progress):
            yield s, min(s + bs, n)
