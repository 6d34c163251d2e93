"""Inference for a saved Speech-Llama run: ``.asr`` / ``.ast``, and the interface ``audiopalm eval`` uses.

    from audiopalm import SpeechLlamaPipeline

    model = SpeechLlamaPipeline.from_pretrained("runs/finetune_speech_llama")   # run folder or its final/
    model.asr("clip.wav", lang="en").text
    model.ast(wav, src="en", tgt="fr", sample_rate=16000).translation
    model.asr(["a.wav", "b.wav"], lang="fr")                                  # a list in, a list out

The prompt is the task tag of :mod:`audiopalm.data.tasks` (``[ASR English]``, ``[AST English French]``) after
the audio embeddings, as in training (recipes/finetune_speech_llama.py); decoding is greedy through the
LLM's ``generate`` unless generation kwargs say otherwise. The user API, the request checks, audio reading,
batching and the :class:`~audiopalm.inference.base.Output` are :class:`~audiopalm.inference.base.SpeechTextPipeline`'s,
shared with :class:`audiopalm.inference.pipeline.AudioPaLM`, so results land in the same ``audiopalm eval`` files
and report as the AudioPaLM path's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from audiopalm.data.tasks import TaskSpec
from audiopalm.inference.base import DEFAULT_TEXT_TOKENS, Output, PipelineError, SpeechTextPipeline, default_device

SUPPORTED = ("ASR", "AST")


def find_run(path: str | os.PathLike) -> Path | None:
    """The folder holding ``speech_llama.json``: ``path`` itself or ``path/final``; None if neither."""
    from audiopalm.modeling.speech_llama import CONFIG_NAME

    for p in (Path(path), Path(path) / "final"):
        if (p / CONFIG_NAME).is_file():
            return p
    return None


class SpeechLlamaPipeline(SpeechTextPipeline):
    """A :class:`~audiopalm.modeling.speech_llama.SpeechLlama` + the LLM's tokenizer, ready to transcribe and
    translate. Same call shapes as :class:`audiopalm.inference.pipeline.AudioPaLM` for the text-output speech tasks."""

    audio_tokenizer = None
    """No discrete audio tokenizer: the model reads waveforms (``audiopalm eval`` reads manifests, not stores)."""

    def __init__(self, model, tokenizer, *, device: str | torch.device | None = None, batch_size: int = 8):
        super().__init__(model, device=device, batch_size=batch_size)
        self.tokenizer = tokenizer

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
        (saved beside the model) or else the base LLM. A folder whose save did not finish is refused."""
        from transformers import AutoTokenizer

        from audiopalm.modeling.extend import check_complete
        from audiopalm.modeling.speech_llama import SpeechLlama

        run = find_run(path)
        if run is None:
            raise FileNotFoundError(
                f"{path}: no speech_llama.json here or in {Path(path) / 'final'}; not a Speech-Llama run"
            )
        check_complete(run)
        model = SpeechLlama.from_pretrained(run, base_model=base_model)
        tok_src = run if (run / "tokenizer_config.json").is_file() else (base_model or model.config.llm)
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
        return cls(model, tokenizer, device=default_device(device), batch_size=batch_size)

    @property
    def sample_rate(self) -> int:
        """Hz the model's waveform input is read at."""
        return self.model.config.sample_rate

    @property
    def tasks(self) -> list[str]:
        return list(SUPPORTED)

    # ---- SpeechTextPipeline's hooks -----------------------------------------------------------------
    def _check_task(self, spec: TaskSpec) -> None:
        if len(spec.names) != 1 or spec.names[0] not in SUPPORTED:
            raise PipelineError(
                f"task {spec.name}: a Speech-Llama model only does {', '.join(SUPPORTED)} (text output)"
            )

    def _check_records(self, spec: TaskSpec, records: Sequence[dict], kwargs: dict) -> None:
        field = spec.input_segment[1]
        for r in records:
            x = r.get(field)
            if not isinstance(x, torch.Tensor) or x.dim() != 1 or not x.is_floating_point():
                raise PipelineError(
                    f"{r.get('id', 'record')}: a Speech-Llama run reads waveforms; evaluate it on a "
                    "manifest (--manifest), not a token store"
                )

    def _record(self, spec: TaskSpec, item, src: str, tgt: str | None, sample_rate: int | None, index: int) -> dict:
        name = f"input {index}"
        return {
            "id": name,
            "lang": src,
            "tgt_lang": tgt,
            spec.input_segment[1]: self.encode_audio(item, sample_rate=sample_rate, name=name),
        }

    def encode_audio(self, item, *, sample_rate: int | None = None, name: str = "input") -> torch.Tensor:
        """A waveform [T] (at ``sample_rate``, default the model's) or an audio file path -> waveform [T] at
        the model's rate (features are computed per batch in :meth:`_run`)."""
        wav = self.load_audio(item, sample_rate=sample_rate, name=name)  # [T]
        return torch.as_tensor(np.ascontiguousarray(wav), dtype=torch.float32)  # [T]

    @torch.no_grad()
    def _run(
        self,
        spec: TaskSpec,
        records: Sequence[dict],
        *,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        **generate_kwargs,
    ) -> list[Output]:
        from audiopalm.modeling.speech_llama import encode_text

        outs: list[Output] = []
        eos = self.tokenizer.eos_token_id
        field = spec.input_segment[1]
        for s, e in self._batches(spec, len(records), batch_size, progress):
            batch = records[s:e]
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
