"""Inference for a saved Speech-Llama run: ``.asr`` / ``.ast``, and the interface ``audiopalm eval`` uses.

    from audiopalm.speech_llama_pipeline import SpeechLlamaPipeline

    model = SpeechLlamaPipeline.from_pretrained("runs/finetune_speech_llama")   # run folder or its final/
    model.asr("clip.wav", lang="en").text
    model.ast(wav, src="en", tgt="fr", sample_rate=16000).translation
    model.asr(["a.wav", "b.wav"], lang="fr")                                  # a list in, a list out

The prompt is the task tag of :mod:`audiopalm.tasks` (``[ASR English]``, ``[AST English French]``) after
the audio embeddings, as in training (recipes/finetune_speech_llama.py); decoding is greedy through the
LLM's ``generate`` unless generation kwargs say otherwise. Outputs are :class:`audiopalm.pipeline.Output`,
so results land in the same ``audiopalm eval`` files and report as the AudioPaLM path's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiopalm import audio as audio_io
from audiopalm.manifest import LANGUAGES
from audiopalm.pipeline import Output, PipelineError
from audiopalm.tasks import TaskSpec, parse_task

DEFAULT_TEXT_TOKENS = 256
"""Longest text output when the caller gives no ``max_new_tokens``."""
SUPPORTED = ("ASR", "AST")


def find_run(path: str | os.PathLike) -> Path | None:
    """The folder holding ``speech_llama.json``: ``path`` itself or ``path/final``; None if neither."""
    from audiopalm.modeling.speech_llama import CONFIG_NAME

    for p in (Path(path), Path(path) / "final"):
        if (p / CONFIG_NAME).is_file():
            return p
    return None


class SpeechLlamaPipeline:
    """A :class:`~audiopalm.modeling.speech_llama.SpeechLlama` + the LLM's tokenizer, ready to transcribe and
    translate. Same call shapes as :class:`audiopalm.pipeline.AudioPaLM` for the text-output speech tasks."""

    audio_tokenizer = None
    """No discrete audio tokenizer: the model reads waveforms (``audiopalm eval`` reads manifests, not stores)."""

    def __init__(self, model, tokenizer, *, device: str | torch.device | None = None, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if device is not None:
            self.model.to(device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        base_model: str | None = None,
    ) -> SpeechLlamaPipeline:
        """Load a run folder (or its ``final/``) written by recipes/finetune_speech_llama.py. The base LLM comes
        from ``base_model`` or the path recorded in ``speech_llama.json``; the tokenizer from the run folder
        (saved beside the model) or else the base LLM."""
        from transformers import AutoTokenizer

        from audiopalm.modeling.speech_llama import SpeechLlama

        run = find_run(path)
        if run is None:
            raise FileNotFoundError(
                f"{path}: no speech_llama.json here or in {Path(path) / 'final'}; not a Speech-Llama run"
            )
        model = SpeechLlama.from_pretrained(run, base_model=base_model)
        tok_src = run if (run / "tokenizer_config.json").is_file() else (base_model or model.config.llm)
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, tokenizer, device=device, batch_size=batch_size)

    @property
    def sample_rate(self) -> int:
        """Hz the model's waveform input is read at."""
        return self.model.config.sample_rate

    @property
    def tasks(self) -> list[str]:
        return list(SUPPORTED)

    # ---- the user API -------------------------------------------------------------------------------
    def asr(self, wav, lang: str, **kwargs):
        """Speech (waveform [T], file path, or a list of them) -> :class:`Output` with ``text``."""
        return self.generate("ASR", wav, lang, **kwargs)

    def ast(self, wav, src: str, tgt: str, **kwargs):
        """Speech in ``src`` -> :class:`Output` with ``translation`` into ``tgt``."""
        return self.generate("AST", wav, src, tgt, **kwargs)

    def generate(
        self,
        task: str | TaskSpec,
        inputs,
        src: str,
        tgt: str | None = None,
        *,
        sample_rate: int | None = None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        **generate_kwargs,
    ):
        """ASR or AST on one input (returns an :class:`Output`) or a list (returns a list)."""
        spec = self._check_request(task, src, tgt)
        single = isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor))
        items = [inputs] if single else list(inputs)
        field = spec.input_segment[1]
        records = [
            {
                "id": f"input {i}",
                "lang": src,
                "tgt_lang": tgt,
                field: self.encode_audio(x, sample_rate=sample_rate, name=f"input {i}"),
            }
            for i, x in enumerate(items)
        ]
        outs = self._run(
            spec, records, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, **generate_kwargs
        )
        return outs[0] if single else outs

    def generate_records(
        self,
        task: str | TaskSpec,
        records: Sequence[dict],
        *,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        **generate_kwargs,
    ) -> list[Output]:
        """``audiopalm eval``'s entry: task records (:mod:`audiopalm.tasks`) with ``lang``, ``tgt_lang`` and the
        input field (``audio_codes``) holding a waveform [T] from :meth:`encode_audio`."""
        spec = parse_task(task)
        field = spec.input_segment[1]
        for r in records:
            self._check_request(spec, r.get("lang"), r.get("tgt_lang") if spec.needs_tgt_lang else None)
            x = r.get(field)
            if not isinstance(x, torch.Tensor) or x.dim() != 1 or not x.is_floating_point():
                raise PipelineError(
                    f"{r.get('id', 'record')}: a Speech-Llama run reads waveforms; evaluate it on a "
                    "manifest (--manifest), not a token store"
                )
        return self._run(
            spec, records, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, **generate_kwargs
        )

    # ---- helpers --------------------------------------------------------------------------------------
    def _check_request(self, task, src, tgt) -> TaskSpec:
        spec = parse_task(task)
        if spec.names not in [(n,) for n in SUPPORTED]:
            raise PipelineError(
                f"task {spec.name}: a Speech-Llama model only does {', '.join(SUPPORTED)} (text output)"
            )
        for name, code in (("src", src), ("tgt", tgt)):
            if code is not None and code not in LANGUAGES:
                raise PipelineError(f"{name}: unknown language {code!r}; known: {', '.join(sorted(LANGUAGES))}")
        if src is None:
            raise PipelineError(f"task {spec.name}: give the source language (src)")
        if spec.needs_tgt_lang and (tgt is None or tgt == src):
            raise PipelineError(f"task {spec.name} translates: give a target language other than src (got {tgt!r})")
        if not spec.needs_tgt_lang and tgt is not None:
            raise PipelineError(f"task {spec.name} does not translate, but tgt={tgt!r} was given")
        return spec

    def encode_audio(self, item, *, sample_rate: int | None = None, name: str = "input") -> torch.Tensor:
        """A waveform [T] (at ``sample_rate``, default the model's) or an audio file path -> waveform [T] at
        the model's rate (features are computed per batch in :meth:`_run`)."""
        sr = self.sample_rate
        try:
            if isinstance(item, (str, os.PathLike)):
                wav, _ = audio_io.load(item, sr)
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
                wav = audio_io.resample(audio_io.validate(arr, sample_rate or sr, name=name), sample_rate or sr, sr)
            else:
                raise PipelineError(
                    f"{name}: expected a waveform (numpy/torch [T]) or an audio file path, got {type(item).__name__}"
                )
        except audio_io.AudioError as e:
            raise PipelineError(str(e)) from None
        return torch.as_tensor(np.ascontiguousarray(wav), dtype=torch.float32)  # [T]

    @torch.no_grad()
    def _run(
        self,
        spec: TaskSpec,
        records: Sequence[dict],
        *,
        batch_size: int | None,
        max_new_tokens: int | None,
        progress: bool,
        **generate_kwargs,
    ) -> list[Output]:
        from audiopalm.modeling.speech_llama import encode_text

        bs = batch_size or self.batch_size
        outs: list[Output] = []
        eos = self.tokenizer.eos_token_id
        for s in tqdm(range(0, len(records), bs), desc=f"generate {spec.name}", unit="batch", disable=not progress):
            batch = records[s : s + bs]
            field = spec.input_segment[1]
            feats, lengths = self.model.featurize([r[field] for r in batch])  # [B, F, n_mels], [B]
            prompts = [spec.tag(r["lang"], r.get("tgt_lang")) for r in batch]
            text = encode_text(self.tokenizer, prompts)  # left-padded [B, L]
            dev = self.model.projector.mlp[0].weight.device
            ids = self.model.generate(
                feats.to(dev),
                lengths,
                text["input_ids"].to(dev),
                text["attention_mask"].to(dev),
                max_new_tokens=max_new_tokens or DEFAULT_TEXT_TOKENS,
                eos_token_id=eos,
                **generate_kwargs,
            )  # [B, L_new]
            for row in ids.tolist():
                finished = eos in row
                row = row[: row.index(eos) + 1] if finished else row
                words = self.tokenizer.decode(row, skip_special_tokens=True).strip()
                outs.append(
                    Output(
                        task=spec.name,
                        text=words if spec.names == ("ASR",) else None,
                        translation=words if spec.names == ("AST",) else None,
                        ids=row,
                        finished=finished,
                    )
                )
        return outs
