"""The inference API: a trained checkpoint that listens and speaks, in a few lines.

    from audiopalm.inference.pipeline import AudioPaLM

    model = AudioPaLM.from_pretrained("runs/demo/audiopalm")        # a folder, or a hub repo id
    model.asr("clip.wav", lang="en").text                           # speech -> transcript
    model.ast(wav, src="en", tgt="fr", sample_rate=16000).translation
    out = model.tts("the dog sleeps.", lang="en")                   # out.audio [T], out.sample_rate
    model.s2st("clip.wav", src="en", tgt="fr")                      # chained: text, translation, audio
    model.mt(["the dog sleeps.", "a cat runs."], src="en", tgt="fr")  # a list in, a list out (one batch)
    model.generate("ASR AST", wavs, src="en", tgt="de", num_beams=4)  # any task or chain, any HF gen kwargs

Every method takes one item (returns one :class:`Output`) or a list (returns a list; the list is cut
into batches of ``batch_size`` and each batch is one ``model.generate`` call). Speech inputs are numpy or
torch waveforms [T] at ``sample_rate`` (default: the audio tokenizer's) or audio file paths (read and
resampled by :func:`audiopalm.audio.io.load`). Text is decoded greedily and speech is sampled
(:meth:`AudioPaLM.default_speech_sampling`, seeded per input: the same input gives the same audio in any batch) unless
generation kwargs say otherwise (``num_beams=4``, ``do_sample=True``, ``speech_sampling=None`` for greedy
speech). ``do_sample=True`` (with ``temperature`` / ``top_k``) is drawn by the same seeded per-input sampler,
over text and speech, so sampled outputs too are equal batched and one by one; sampling options it cannot
honour that way (``top_p``, beams ...) are refused. Decoding is always modality-constrained
(:mod:`audiopalm.inference.generation`), so a speech output always reverts to codes ``[k, F]`` and is decoded
to a waveform by the checkpoint's audio tokenizer.

Malformed requests are refused before any decoding, with the reason: an unknown language code, an
empty waveform, a prompt longer than the model's context, or a speech output from an audio tokenizer
that cannot decode (semantic units). A task the checkpoint was not trained on (``audiopalm.json``'s
task list) is decoded anyway, with a warning: the tag format is shared, so a fine-tuned model may
still do something sensible, but the user should know. (The checkpoint does not record its language
pairs, so pairs cannot be checked beyond the language codes.)
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiopalm.audio import io as audio_io
from audiopalm.data.tasks import AUDIO, TEXT, TRANSCRIPTS, TaskError, TaskSpec, prompt_ids, speech_words
from audiopalm.inference.base import DEFAULT_TEXT_TOKENS, Output, PipelineError, SpeechTextPipeline, default_device
from audiopalm.inference.generation import DECODING_KWARGS, SpeechSampling, speech_word_spans, split_segments
from audiopalm.inference.generation import generate as constrained_generate

# Longest speech output when the caller gives no max_new_tokens, in seconds of audio: utterances in
# the speech-translation corpora are under 20 s; the model's context caps it further.
DEFAULT_SPEECH_SECONDS = 20.0
# Each speech output also stops at a length set by its own input (``cap_speech``; ESPnet's maxlenratio does
# the same for TTS), so that a model that has not learnt to end its speech does not babble to the budget:
# speech input (S2ST): SPEECH_LENGTH_RATIO x its duration (a translation is rarely twice its source);
# text input (TTS): SPEECH_SECONDS_PER_CHAR per character (people speak ~15 characters a second, ~0.07 s
# each; espeak-ng's demo voices 0.06-0.08 s); never under MIN_SPEECH_SECONDS.
SPEECH_LENGTH_RATIO = 2.5
# Speech written word by word (``output_words``) holds its words' text too: tokens per frame, with room to spare.
WORDED_SPEECH_TOKENS = 1.5
SPEECH_SECONDS_PER_CHAR = 0.2
MIN_SPEECH_SECONDS = 1.0
# Speech outputs are sampled (AudioLM and VALL-E do the same): greedy audio decoding loops on a frame pattern
# and seldom ends (33 of 40 demo TTS outputs for dev sentences ran to the cap). Temperature and top-k were
# chosen on the demo's dev split (docs/decoding.md, "Sampling the speech"). SPEECH_SAMPLING is also the
# default value of ``speech_sampling``: a checkpoint that writes its speech word by word then samples colder
# (WORDED_SPEECH_SAMPLING): its words keep it from looping, and its speech judges better the colder it is drawn.
SPEECH_SAMPLING = SpeechSampling(temperature=0.6, top_k=20, seed=0)
WORDED_SPEECH_SAMPLING = SpeechSampling(temperature=0.2, top_k=20, seed=0)
# The key under which a record made from a user's speech input keeps that speech for ``voice="source"``.
SOURCE_VOICE = "source_wav"


def check_checkpoint_files(path: str | os.PathLike) -> None:
    """Refuse, with one line naming the file, a checkpoint folder that would fail deep inside transformers
    with a misleading message: no ``config.json``, no ``tokenizer.json`` (transformers then blames
    sentencepiece), or a truncated safetensors file."""
    from audiopalm.errors import UserError, check_safetensors

    path = Path(path)
    # the text tokenizer's own files: tokenizer.json (fast), or a slow tokenizer's vocabulary
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json")
    for names, why in ((("config.json",), "the model's config"), (tokenizer_files, "the text tokenizer")):
        if not any((path / name).is_file() for name in names):
            raise UserError(
                f"{path}: no {names[0]} ({why}); not a whole audiopalm checkpoint: copy the complete "
                "folder (e.g. the run's final/), not only its weights"
            )
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*/*.safetensors"))
    if not any(p.parent == path for p in weights):
        raise UserError(f"{path}: no model weights (*.safetensors); copy the complete checkpoint folder")
    for p in weights:
        check_safetensors(p)


def check_acoustic_stage(acoustic, audio_tokenizer) -> None:
    """Refuse an acoustic stage trained on other units than the ones this model's audio tokenizer makes."""
    want = getattr(acoustic, "unit_tokenizer", {}).get("fingerprint")
    if want != audio_tokenizer.fingerprint:
        raise PipelineError(
            f"the acoustic stage was trained on units of audio tokenizer {want}, but this model's "
            f"audio tokenizer is {audio_tokenizer.fingerprint}: pair a stage trained on the same units"
        )


def load_acoustic_stage(path: str | os.PathLike):
    """The acoustic stage saved in checkpoint ``path``'s ``acoustic/`` folder, or None where there is none."""
    from audiopalm.acoustic.stage import CONFIG_NAME, AcousticStage
    from audiopalm.modeling.extend import ACOUSTIC_DIR

    folder = Path(path) / ACOUSTIC_DIR
    if not (folder / CONFIG_NAME).is_file():
        return None
    return AcousticStage.from_pretrained(folder)


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


class AudioPaLM(SpeechTextPipeline):
    """A vocabulary-extended causal LM + its unified vocabulary + its audio tokenizer, ready to run.

    Build one with :meth:`from_pretrained`; ``AudioPaLM(model, vocab, audio_tokenizer)`` wraps objects
    already in memory (e.g. at the end of training).
    """

    _TASK_METHODS = ("asr", "ast", "tts", "mt", "s2st")

    def __init__(
        self,
        model,
        vocab,
        audio_tokenizer,
        *,
        acoustic=None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
    ):
        super().__init__(model, device=device, batch_size=batch_size)
        self.vocab = vocab
        self.audio_tokenizer = audio_tokenizer.eval()
        self.acoustic = None if acoustic is None else acoustic.eval()
        """The acoustic stage (:class:`audiopalm.acoustic.AcousticStage`) that turns generated semantic units into
        sound, or None where the audio tokenizer is a codec that decodes its own codes."""
        if acoustic is not None:
            check_acoustic_stage(acoustic, audio_tokenizer)
        if device is not None:
            self.audio_tokenizer.to(device)
            if self.acoustic is not None:
                self.acoustic.to(device)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_length: int | None = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        """The model's context in tokens (prompt + output); None if its config does not say."""

    # ---- loading and saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        batch_size: int = 8,
        **model_kwargs,
    ) -> AudioPaLM:
        """Load a checkpoint folder (:func:`audiopalm.modeling.extend.save_checkpoint`) or a hub repo id.

        A hub id is fetched with ``huggingface_hub.snapshot_download`` (safetensors and JSON only; the
        code never runs remote code). ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained``
        (``dtype=torch.bfloat16``, ...). ``device`` defaults to cuda when available."""
        from audiopalm.modeling.extend import load_checkpoint
        from audiopalm.tokenizers.base import hub_id_or_local

        path = Path(name_or_path)
        if hub_id_or_local(name_or_path, what="checkpoint") == "hub":  # a local-looking name is never fetched
            from huggingface_hub import snapshot_download

            try:
                path = Path(
                    snapshot_download(
                        str(name_or_path),
                        revision=revision,
                        allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"],
                    )
                )
            except Exception as e:  # offline, no such repo, no access: say what was tried
                raise FileNotFoundError(
                    f"{name_or_path}: not a local checkpoint folder, and fetching it from the "
                    f"Hugging Face hub failed ({type(e).__name__}: {e})"
                ) from e
        check_checkpoint_files(path)
        model, vocab, audio_tokenizer = load_checkpoint(path, **model_kwargs)
        acoustic = load_acoustic_stage(path)
        return cls(
            model, vocab, audio_tokenizer, acoustic=acoustic, device=default_device(device), batch_size=batch_size
        )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the checkpoint (model, tokenizer, ``audiopalm.json``, audio tokenizer, and the acoustic stage
        in ``acoustic/`` if there is one) into ``directory``."""
        from audiopalm.modeling.extend import save_checkpoint

        return save_checkpoint(self.model, self.vocab, self.audio_tokenizer, directory, acoustic=self.acoustic)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload audiopalm checkpoint",
        revision: str | None = None,
    ) -> Any:
        """Save into a temporary folder and upload it as one commit to the hub repo ``repo_id``
        (created if missing). Returns ``HfApi.upload_folder``'s commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="audiopalm-push-") as tmp:
            self.save_pretrained(tmp)
            return api.upload_folder(
                folder_path=tmp, repo_id=repo_id, repo_type="model", commit_message=commit_message, revision=revision
            )

    # ---- properties --------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Hz of the waveforms the audio tokenizer takes (and, without an acoustic stage, gives)."""
        return self.audio_tokenizer.sample_rate

    @property
    def output_sample_rate(self) -> int:
        """Hz of the speech this model writes: the acoustic stage's where there is one."""
        return self.acoustic.sample_rate if self.acoustic is not None else self.audio_tokenizer.sample_rate

    @property
    def can_speak(self) -> bool:
        """Whether speech outputs can be turned into sound (a codec tokenizer, or an acoustic stage)."""
        return self.acoustic is not None or self.audio_tokenizer.can_decode

    @property
    def tasks(self) -> list[str]:
        """Task names the checkpoint was trained on (from ``audiopalm.json``; may be empty)."""
        return list(self.vocab.tasks)

    def trained_languages(self, spec: TaskSpec) -> list[str]:
        """Languages or pairs the checkpoint was trained on for ``spec`` (``audiopalm.json``; may be empty)."""
        return list(self.vocab.layout.task_languages.get(spec.name, []))

    # ---- one method per task (asr and ast: SpeechTextPipeline) ----------------------------------------
    def tts(self, text, lang: str | None = None, **kwargs):
        """Text -> speech (``Output.audio`` [T] at ``Output.sample_rate``, ``Output.codes`` [k, F])."""
        return self.generate("TTS", text, lang, **kwargs)

    def mt(self, text, src: str | None = None, tgt: str | None = None, **kwargs):
        """Text -> translated text (``Output.translation``)."""
        return self.generate("MT", text, src, tgt, **kwargs)

    def s2st(self, wav, src: str | None = None, tgt: str | None = None, *, chained: bool = True, **kwargs):
        """Speech -> translated speech. ``chained=True`` runs ``[ASR AST S2ST ...]`` (AudioPaLM's best
        setting: transcript, translation, then speech in one pass; all three are in the output);
        ``chained=False`` runs the direct ``[S2ST ...]`` task (only audio)."""
        return self.generate("ASR AST S2ST" if chained else "S2ST", wav, src, tgt, **kwargs)

    # ---- the general entry point (generate_records: SpeechTextPipeline) -------------------------------
    def generate(self, task: str | TaskSpec, inputs, src: str | None = None, tgt: str | None = None, **kwargs):
        """Run any task or chain (``"ASR"``, ``"ASR AST S2ST"``, ...) on one input or a list of inputs.

        ``inputs``: text (TTS, MT) or speech (a waveform [T] at ``sample_rate`` or a file path).
        ``src``/``tgt``: ISO codes (``tgt`` only for translation tasks). Keywords: ``sample_rate``, ``batch_size``,
        ``max_new_tokens``, ``progress``, and ``cap_speech``, ``speech_sampling``, ``voice`` and generation kwargs
        as :meth:`_run` says. Returns an :class:`Output`, or a list of them for a list input."""
        return super().generate(task, inputs, src, tgt, **kwargs)

    def _check_records(self, spec: TaskSpec, records: Sequence[dict], kwargs: dict) -> None:
        voices = kwargs.get("voices")
        if voices is not None and len(voices) != len(records):
            raise PipelineError(f"voices: {len(voices)} voice prompts for {len(records)} records")

    def _run(
        self,
        spec: TaskSpec,
        records: Sequence[dict],
        *,
        cap_speech: bool = True,
        speech_sampling: SpeechSampling | None = SPEECH_SAMPLING,
        voices: Sequence | None = None,
        voice=None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        **generate_kwargs,
    ) -> list[Output]:
        """Prompts of checked records -> batched constrained generation -> outputs.

        ``cap_speech``: end each speech output at a length set by its input (:data:`SPEECH_LENGTH_RATIO` x the
        input speech, or :data:`SPEECH_SECONDS_PER_CHAR` per input character); False: only ``max_new_tokens``.
        ``speech_sampling``: how a speech output's audio tokens are drawn
        (:class:`audiopalm.inference.generation.SpeechSampling`; text stays greedy); None: greedy speech. Other
        keyword arguments go to ``model.generate`` (``num_beams`` ...); with any of those the default speech
        sampling steps aside and they decide the decoding of the whole output. ``do_sample=True`` (``temperature``,
        ``top_k``) samples every token with the seeded per-input sampler instead of transformers' batch-wide
        generator (see the module docstring). ``voice`` (speech outputs through an acoustic stage): None for the
        stage's default voice, ``"source"`` to speak in the voice of each input's own speech (S2ST: AudioPaLM's
        voice-preserving translation), or one waveform [T] at :attr:`sample_rate` / an audio file path for every
        output. ``voices`` (:meth:`generate_records`): one voice prompt per record (a waveform [T] at
        :attr:`output_sample_rate`, or None for the default voice)."""
        if voices is None and isinstance(voice, str) and voice == "source":
            if spec.input_segment[0] != AUDIO:
                raise PipelineError(f"voice='source': task {spec.name} has no input speech to take the voice from")
            voices = [rec.get(SOURCE_VOICE) for rec in records]
        elif voices is None:
            voices = [self._voice_prompt(spec, voice)] * len(records)
        if generate_kwargs.get("do_sample"):
            speech_sampling = self._seeded_sampling(speech_sampling, generate_kwargs)
        clash = sorted(DECODING_KWARGS & set(generate_kwargs))
        if not spec.speaks and not (speech_sampling is not None and speech_sampling.text):
            speech_sampling = None  # no speech to sample: the text is decoded as the kwargs say
        elif speech_sampling is SPEECH_SAMPLING and clash:
            speech_sampling = None  # the caller chose the decoding
        elif speech_sampling is SPEECH_SAMPLING:
            speech_sampling = self.default_speech_sampling()
        elif speech_sampling is not None and clash:
            raise PipelineError(
                f"speech_sampling={speech_sampling} and {clash} both choose the decoding: give one of them"
            )
        prompts = []
        for i, rec in enumerate(records):
            try:
                prompts.append(prompt_ids(rec, spec, self.vocab))
            except TaskError as err:
                raise PipelineError(f"input {i}: {err}") from None
        for i, p in enumerate(prompts):
            if self.max_length is not None and len(p) >= self.max_length:
                raise PipelineError(
                    f"input {i} ({records[i].get('id', 'no id')}): the prompt is {len(p)} tokens, "
                    f"but the model's context is {self.max_length} (max_position_embeddings); "
                    "shorten the text or audio"
                )
        caps = self.speech_frame_caps(spec, records) if cap_speech else None
        words = self.speech_words(spec, records)
        outs: list[Output] = []
        for s, e in self._batches(spec, len(prompts), batch_size, progress):
            batch = prompts[s:e]
            budget = self._budget(spec, batch, max_new_tokens)
            ids = constrained_generate(
                self.model,
                self.vocab,
                batch,
                spec,
                max_new_tokens=budget,
                max_audio_frames=None if caps is None else caps[s:e],
                speech_sampling=speech_sampling,
                speech_words=None if words is None else words[s:e],
                **generate_kwargs,
            )
            outs.extend(self._output(spec, row, voices[s + j]) for j, row in enumerate(ids))
        return outs

    def default_speech_sampling(self, seed: int = 0) -> SpeechSampling:
        """How this checkpoint's speech is drawn when the caller does not say: :data:`WORDED_SPEECH_SAMPLING` for
        speech written word by word (``model.output_words``), else :data:`SPEECH_SAMPLING`; with ``seed``."""
        base = WORDED_SPEECH_SAMPLING if self.vocab.layout.output_words else SPEECH_SAMPLING
        return dataclasses.replace(base, seed=seed)

    def _seeded_sampling(self, speech_sampling: SpeechSampling | None, kwargs: dict) -> SpeechSampling:
        """``do_sample=True`` (+ ``temperature``, ``top_k``) -> the seeded per-row sampler over every token.

        transformers' own sampling draws from one global generator for the whole batch, so an input's
        output would depend on the inputs batched with it; the per-row sampler does not (README: batched
        equals one-by-one). Options it cannot honour are refused rather than ignored."""
        if speech_sampling is not None and speech_sampling is not SPEECH_SAMPLING:
            raise PipelineError(
                f"speech_sampling={speech_sampling} and do_sample=True both choose the decoding: give one of them"
            )
        no_op = {"num_beams": 1, "num_return_sequences": 1, "top_p": 1.0, "typical_p": 1.0, "min_p": 0.0}
        other = sorted(
            k
            for k in DECODING_KWARGS - {"do_sample", "temperature", "top_k"}
            if kwargs.get(k) is not None and kwargs[k] != no_op.get(k)
        )
        if other:
            raise PipelineError(
                f"do_sample=True with {other}: the pipeline samples with temperature and top_k only "
                "(seeded per input); drop those options, or use greedy / beam search"
            )
        kwargs.pop("do_sample")
        for k in DECODING_KWARGS - {"temperature", "top_k"}:
            kwargs.pop(k, None)
        gen = getattr(self.model, "generation_config", None)
        temperature = kwargs.pop("temperature", None) or getattr(gen, "temperature", None) or 1.0
        top_k = kwargs.pop("top_k", None)
        top_k = getattr(gen, "top_k", 0) if top_k is None else top_k  # transformers' default: the model's
        seed = (speech_sampling or SPEECH_SAMPLING).seed
        try:
            return SpeechSampling(temperature=float(temperature), top_k=int(top_k or 0), seed=seed, text=True)
        except ValueError as e:
            raise PipelineError(str(e)) from None

    def speech_words(self, spec: TaskSpec, records: Sequence[dict]) -> list[list[list[int]]] | None:
        """For a checkpoint that writes speech word by word: when the task speaks its input text first (TTS), the
        words each record's speech must say (forced while decoding, :class:`SegmentConstraint`); else None (a
        chain's speech says the translation it just wrote; direct S2ST chooses its own words)."""
        kind, field = spec.input_segment
        first_kind, first_field = spec.output_segments[0]
        if not self.vocab.layout.output_words or kind != TEXT or first_kind != AUDIO:
            return None
        if TRANSCRIPTS.get(first_field) != field:
            return None
        return [speech_words(rec[field], self.vocab) for rec in records]

    def speech_frame_caps(self, spec: TaskSpec, records: Sequence[dict]) -> list[int] | None:
        """The most audio frames each record's speech output may have (None: the task outputs no speech)."""
        if not spec.speaks:
            return None
        rate = self.audio_tokenizer.frame_rate
        kind, field = spec.input_segment
        caps = []
        for rec in records:
            if kind == AUDIO:
                seconds = SPEECH_LENGTH_RATIO * torch.as_tensor(rec[field]).shape[-1] / rate
            else:
                seconds = SPEECH_SECONDS_PER_CHAR * len(rec[field])
            caps.append(max(1, math.ceil(max(seconds, MIN_SPEECH_SECONDS) * rate)))
        return caps

    # ---- helpers ------------------------------------------------------------------------------
    def _check_task(self, spec: TaskSpec) -> None:
        """Refuse speech output without a way to sound it; warn on a task the checkpoint was not trained on."""
        if spec.speaks and not self.can_speak:
            raise PipelineError(
                f"task {spec.name} outputs speech, but this checkpoint's audio tokenizer "
                f"({self.audio_tokenizer.type_name}) cannot turn codes back into audio "
                "(semantic units have no decoder) and it holds no acoustic stage (acoustic/); "
                "train one (audiopalm train train_acoustic) and give it to the fine-tune"
            )
        if self.tasks and spec.name not in self.tasks:
            warnings.warn(
                f"task {spec.name!r} is not among the tasks this checkpoint was trained on "
                f"({', '.join(self.tasks)}); its output may be meaningless",
                stacklevel=4,
            )

    def _record(self, spec: TaskSpec, item, src: str, tgt: str | None, sample_rate: int | None, index: int) -> dict:
        """One input -> a task record: languages + text or audio codes [K, F]; for a speech input also the input
        waveform [T] at :attr:`output_sample_rate` under :data:`SOURCE_VOICE` (``voice="source"``)."""
        rec: dict = {"id": f"input {index}", "lang": src, "tgt_lang": tgt}
        kind, field = spec.input_segment
        if kind == TEXT:
            if not isinstance(item, str):
                raise PipelineError(f"input {index}: task {spec.name} takes text, got {type(item).__name__}")
            if not item.strip():
                raise PipelineError(f"input {index}: empty text")
            rec[field] = item
            return rec
        wav = self.load_audio(item, sample_rate=sample_rate, name=f"input {index}")  # [T] at self.sample_rate
        rec[field] = self.encode_audio(wav, name=f"input {index}")  # [K, F]
        rec[SOURCE_VOICE] = audio_io.resample(wav, self.sample_rate, self.output_sample_rate)  # [T]
        return rec

    def _voice_prompt(self, spec: TaskSpec, voice) -> np.ndarray | None:
        """One voice prompt for every output: None, or a waveform / file -> [T] at :attr:`output_sample_rate`."""
        if voice is None:
            return None
        if not spec.speaks:
            raise PipelineError(f"voice: task {spec.name} outputs no speech")
        if self.acoustic is None:
            raise PipelineError(
                "voice: this checkpoint decodes speech with its codec, which takes no voice prompt "
                "(only an acoustic stage does)"
            )
        wav = self.load_audio(voice, name="voice")  # [T] at self.sample_rate
        return audio_io.resample(wav, self.sample_rate, self.output_sample_rate)

    @torch.no_grad()
    def encode_audio(self, item, *, sample_rate: int | None = None, name: str = "input") -> torch.Tensor:
        """A waveform [T] (at ``sample_rate``, default the tokenizer's) or an audio file path -> codes [K, F]."""
        wav = self.load_audio(item, sample_rate=sample_rate, name=name)  # [T]
        x = torch.as_tensor(np.ascontiguousarray(wav), dtype=torch.float32, device=_module_device(self.audio_tokenizer))
        codes, n = self.audio_tokenizer.encode(x[None], torch.tensor([x.shape[0]], device=x.device))  # [1, K, F], [1]
        frames = int(n[0])
        if frames < 1:
            raise PipelineError(
                f"{name}: {x.shape[0]} samples make no whole audio frame "
                f"({self.audio_tokenizer.frame_rate:g} frames/s); the audio is too short"
            )
        return codes[0, :, :frames].cpu()  # [K, F]

    def _budget(self, spec: TaskSpec, prompts: list[list[int]], max_new_tokens: int | None) -> int:
        """max_new_tokens for one batch: the caller's, or a default by output kind; never past the context."""
        if max_new_tokens is None:
            n_text = sum(kind == TEXT for kind, _ in spec.output_segments)
            per_second = self.audio_tokenizer.frame_rate * self.vocab.num_codebooks
            if self.vocab.layout.output_words:  # the words written between the units (~3 text tokens a second)
                per_second *= WORDED_SPEECH_TOKENS
            max_new_tokens = n_text * DEFAULT_TEXT_TOKENS + (
                int(DEFAULT_SPEECH_SECONDS * per_second) + 2 if spec.speaks else 0
            )
        if max_new_tokens < 1:
            raise PipelineError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
        if self.max_length is not None:
            room = self.max_length - max(len(p) for p in prompts)
            max_new_tokens = min(max_new_tokens, room)
        return max_new_tokens

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor, voice=None, words=None) -> np.ndarray:
        """Codes [k, F] -> mono float32 waveform [T] at :attr:`output_sample_rate`.

        Semantic units go through the acoustic stage, in the voice of ``voice`` (a waveform [T] at
        :attr:`output_sample_rate`: a few seconds of the wanted speaker) or the stage's default voice, with
        ``words`` (the (word, first frame) of each word the speech says) where the stage reads letters; a codec's
        codes through the codec's own decoder (``voice`` is then refused: a codec has no voice prompt)."""
        if self.acoustic is not None:
            dev = _module_device(self.acoustic)
            units = codes[:1].to(dev)  # [1, F]: the unit stream
            prompt = None if voice is None else torch.as_tensor(np.asarray(voice), dtype=torch.float32, device=dev)
            wav = self.acoustic.synthesize(units, voice_wav=prompt, words=[words] if words else None)  # [1, T]
            return wav[0].float().cpu().numpy()
        if voice is not None:
            raise PipelineError(
                "voice: this checkpoint decodes speech with its codec, which takes no voice prompt "
                "(only an acoustic stage does)"
            )
        dev = _module_device(self.audio_tokenizer)
        wav = self.audio_tokenizer.decode(codes[None].to(dev))  # [1, T]
        return wav[0].float().cpu().numpy()

    def _output(self, spec: TaskSpec, ids: list[int], voice: np.ndarray | None = None) -> Output:
        out = Output(task=spec.name, ids=ids, finished=bool(ids) and ids[-1] == self.vocab.eos_id)
        try:
            segments = split_segments(ids, spec, self.vocab)
        except ValueError:  # only when cut short inside a delay-pattern audio segment: nothing whole to give
            assert not out.finished, ("a finished output that does not follow the template", ids)
            segments = []
        # per audio segment, the words the speech says: only for an acoustic stage that reads their letters
        reads_letters = segments and self.acoustic is not None and self.acoustic.config.use_letters
        spans = iter(speech_word_spans(ids, spec, self.vocab) if reads_letters else [])
        # strict=False: an output cut short by max_new_tokens has only its completed segments
        for (kind, field), value in zip(spec.output_segments, segments, strict=False):
            if kind == AUDIO:
                assert isinstance(value, torch.Tensor), value  # split_segments: codes [k, F] for audio
                words = next(spans, None)
                if value.shape[1] == 0:
                    continue
                out.codes = value  # [k, F]
                out.audio = self.decode_codes(value, voice, words)  # [T]
                out.sample_rate = self.output_sample_rate
            elif field == "text":
                assert isinstance(value, str), value
                out.text = value
            else:
                assert isinstance(value, str), value
                out.translation = value
        return out
