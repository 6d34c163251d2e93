"""ASR judges: the speech recognisers that score generated speech (ASR-BLEU, TTS round-trip WER).

A judge is anything with a ``name`` and ``transcribe(wavs, sample_rate, lang) -> list[str]``
(:class:`ASRJudge`); each judge resamples to the rate its model wants. Four are built in:

- :class:`PocketSphinxJudge`: CMU PocketSphinx 5 with the US English model its PyPI wheel ships;
  fully offline, fast, weak (a sanity check, not a publishable number). English only.
- :class:`WhisperJudge`: a Whisper checkpoint through transformers, by hub name (``openai/whisper-large-v3``,
  the usual choice in papers) or local path, with the language forced.
- :class:`CTCJudge`: a small character-CTC encoder trained here (``audiopalm tokenizer fit-ctc-units``;
  train it apart from the model under test), all languages of its training manifest, fully offline.
- :class:`CallableJudge`: wraps any function, e.g. the trained model's own ASR.

:data:`JUDGES` maps names to judge classes; :func:`make_judge` builds one by name::

    judge = make_judge("whisper", model="openai/whisper-small")
    texts = judge.transcribe([wav], 24000, "fr")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from audiopalm.audio.io import resample, validate


@runtime_checkable
class ASRJudge(Protocol):
    """Transcribes waveforms. ``wavs``: mono float [T] arrays at ``sample_rate``; one str per wav."""

    name: str

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, lang: str) -> list[str]: ...


def _prepare(wavs: Sequence[np.ndarray], sample_rate: int, target_rate: int, judge: str) -> list[np.ndarray]:
    """Validate each waveform [T] and resample it to ``target_rate``; errors name the judge and index."""
    if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
        raise TypeError(f"{judge}: wavs must be a list of waveforms, got a single array of shape {wavs.shape}")
    out = []
    for i, w in enumerate(wavs):
        w = validate(np.asarray(w, dtype=np.float32), sample_rate, name=f"{judge}: wav {i}")
        out.append(resample(w, sample_rate, target_rate))  # [T']
    return out


class PocketSphinxJudge:
    """Offline English ASR with PocketSphinx (the ``pocketsphinx`` PyPI package, 5.x).

    Audio is resampled to 16 kHz and fed as 16-bit mono PCM, one utterance at a time. ``hmm``, ``lm``
    and ``dict`` default to the US English acoustic model, language model and CMUdict shipped in the
    wheel; pass paths (and ``langs``) to use another PocketSphinx model.
    """

    name = "pocketsphinx"
    sample_rate = 16000

    def __init__(
        self,
        *,
        hmm: str | None = None,
        lm: str | None = None,
        dict: str | None = None,
        langs: tuple[str, ...] = ("en",),
    ):
        self.langs = tuple(langs)
        self._kwargs = {k: v for k, v in (("hmm", hmm), ("lm", lm), ("dict", dict)) if v is not None}
        self._decoder = None  # built on first use (about 0.3 s)

    def _get_decoder(self):
        if self._decoder is None:
            try:
                from pocketsphinx import Decoder
            except ImportError as e:
                raise ImportError("PocketSphinxJudge needs the pocketsphinx package: pip install pocketsphinx") from e
            self._decoder = Decoder(samprate=self.sample_rate, loglevel="FATAL", **self._kwargs)
        return self._decoder

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, lang: str) -> list[str]:
        if lang not in self.langs:
            raise ValueError(
                f"PocketSphinxJudge: no model for language {lang!r} (this judge knows "
                f"{', '.join(self.langs)}); use WhisperJudge for other languages"
            )
        decoder = self._get_decoder()
        texts = []
        for w in _prepare(wavs, sample_rate, self.sample_rate, self.name):
            pcm = (np.clip(w, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()  # 16-bit little-endian mono
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            texts.append(hyp.hypstr if hyp is not None else "")
        return texts


@dataclasses.dataclass
class WhisperJudge:
    """Whisper (transformers ``WhisperForConditionalGeneration`` + ``WhisperProcessor``) as a judge.

    The model is loaded on first use. The language is forced (``generate(language=lang,
    task="transcribe")``), so Whisper never translates or guesses. Inputs longer than 30 s are cut at
    30 s by the feature extractor (judges score utterances).
    """

    model: str = "openai/whisper-large-v3"
    """Hub name or local folder of a Whisper checkpoint (never loaded with trust_remote_code)."""
    device: str | None = None
    """torch device; default cuda if available, else cpu."""
    batch_size: int = 8
    """Waveforms per generate() call."""
    max_new_tokens: int = 200
    """Longest transcript in tokens (Whisper's decoder holds 448 positions in all)."""
    name: str = "whisper"
    """Name recorded in metric signatures."""
    _model: object = dataclasses.field(default=None, init=False, repr=False)
    _processor: object = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"WhisperJudge.batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"WhisperJudge.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def _load(self):
        if self._model is None:
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._processor = WhisperProcessor.from_pretrained(self.model)
            model = WhisperForConditionalGeneration.from_pretrained(self.model)
            # transformers decorates .to with functools.wraps, whose typeshed type does not bind the instance
            self._model = model.to(device).eval()  # type: ignore[arg-type]
        return self._model, self._processor

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, lang: str) -> list[str]:
        import torch
        from tqdm import tqdm

        model, processor = self._load()
        sr = processor.feature_extractor.sampling_rate
        wavs = _prepare(wavs, sample_rate, sr, self.name)
        texts: list[str] = []
        starts = range(0, len(wavs), self.batch_size)
        for s in tqdm(starts, desc=f"whisper ASR ({lang})", unit="batch", disable=len(starts) < 4):
            feats = processor(audio=wavs[s : s + self.batch_size], sampling_rate=sr, return_tensors="pt")
            feats = feats.input_features.to(model.device, model.dtype)  # [B, n_mels, 3000]
            with torch.inference_mode():
                ids = model.generate(
                    feats, language=lang, task="transcribe", max_new_tokens=self.max_new_tokens
                )  # [B, L]
            texts.extend(t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True))
        return texts


@dataclasses.dataclass
class CTCJudge:
    """A saved character-CTC speech encoder (:mod:`audiopalm.tokenizers.speech_encoder`) as a judge: CTC decoding
    constrained to the words of its training transcripts (greedy where it has none).

    ``model``: a folder written by ``SpeechEncoder.save_pretrained`` (``speech_encoder.json``), or a
    ``ctc_units`` tokenizer folder (its ``encoder/`` is used). One character vocabulary for all languages,
    so ``lang`` only names the call. To judge a model that reads ``ctc_units`` tokens, train the judge's
    encoder apart, so that it shares no weights with the model under test: another seed and the other
    augmentation setting (``fit-ctc-units --seed 1 --augment``; see docs/semantic_units.md)."""

    model: str = ""
    """Folder of the saved encoder (or of a ctc_units tokenizer)."""
    batch_size: int = 32
    """Waveforms per forward pass."""
    lexicon: bool = True
    """Decode with the encoder's lexicon for ``lang`` (the words of its training transcripts, recorded by
    ``fit-ctc-units``): a beam search that emits only known words, no language model. Greedy CTC where the
    encoder has no lexicon for ``lang`` (or with ``lexicon=False``)."""
    name: str = "ctc"
    """Name recorded in metric signatures."""
    _model: object = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not self.model:
            raise ValueError("CTCJudge needs model= (a saved speech-encoder folder, e.g. runs/judge/encoder)")
        if self.batch_size < 1:
            raise ValueError(f"CTCJudge.batch_size must be >= 1, got {self.batch_size}")

    def _load(self):
        if self._model is None:
            from pathlib import Path

            from audiopalm.tokenizers.speech_encoder import CONFIG_NAME, SpeechEncoder

            folder = Path(self.model)
            if not (folder / CONFIG_NAME).is_file() and (folder / "encoder" / CONFIG_NAME).is_file():
                folder = folder / "encoder"
            self._model = SpeechEncoder.from_pretrained(folder)
        return self._model

    def words(self, lang: str) -> list[str] | None:
        """The lexicon this judge decodes ``lang`` with (None: greedy CTC)."""
        return self._load().record.get("lexicon", {}).get(lang) if self.lexicon else None

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, lang: str) -> list[str]:
        model = self._load()
        wavs = _prepare(wavs, sample_rate, model.config.sample_rate, self.name)
        return model.transcribe(wavs, batch_size=self.batch_size, lexicon=self.words(lang))


class CallableJudge:
    """Wraps ``fn(wavs, sample_rate, lang) -> list[str]`` (e.g. the trained model's own ASR) as a judge."""

    def __init__(self, fn: Callable[[list[np.ndarray], int, str], list[str]], name: str = "callable"):
        if not callable(fn):
            raise TypeError(f"CallableJudge needs a callable, got {type(fn).__name__}")
        self.fn, self.name = fn, name

    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, lang: str) -> list[str]:
        texts = list(self.fn(list(wavs), sample_rate, lang))
        if len(texts) != len(wavs):
            raise ValueError(f"CallableJudge {self.name!r}: {len(texts)} transcripts for {len(wavs)} waveforms")
        return texts


# name -> judge class. A plain dict registry: add a line to add a judge.
JUDGES: dict[str, type] = {
    "pocketsphinx": PocketSphinxJudge,
    "whisper": WhisperJudge,
    "ctc": CTCJudge,
    "callable": CallableJudge,
}


def make_judge(name: str, **kwargs) -> ASRJudge:
    """Build a judge by registry name, e.g. ``make_judge("whisper", model="openai/whisper-small")``."""
    if name not in JUDGES:
        raise KeyError(f"unknown ASR judge {name!r}; choose from: {', '.join(JUDGES)}")
    return JUDGES[name](**kwargs)
