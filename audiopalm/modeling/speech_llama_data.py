"""Speech-Llama training data: (utterance, task) examples of manifest rows, and their encoder inputs.

Used by the Speech-Llama recipe (:mod:`audiopalm.recipes.finetune_speech_llama`); the model itself is
:mod:`audiopalm.modeling.speech_llama`.
"""

from __future__ import annotations

from collections import Counter

import torch

from audiopalm.data.tasks import parse_task


class FeatureCache:
    """Encoder input of each wav, computed once (the corpus is small): path -> ``[F, n_mels]`` (or ``[T]``)."""

    def __init__(self, featurize, sample_rate: int, max_seconds: float):
        """``featurize``: :meth:`audiopalm.modeling.speech_llama.SpeechLlama.featurize` of the model (called
        the first time a wav is needed, so the cache can exist before the model)."""
        self.featurize, self.sample_rate, self.max_seconds = featurize, sample_rate, max_seconds
        self.cache: dict[str, torch.Tensor] = {}

    def duration_ok(self, path: str) -> bool:
        import soundfile as sf

        try:
            info = sf.info(path)
        except Exception as e:  # noqa: BLE001 - name the file, whatever soundfile raised
            raise ValueError(f"{path}: cannot read audio ({e})") from None
        return info.frames / info.samplerate <= self.max_seconds

    def get(self, path: str) -> torch.Tensor:
        if path not in self.cache:
            from audiopalm.audio import io as audio_io

            wav, _ = audio_io.load(path, self.sample_rate)
            with torch.no_grad():
                feats, lengths = self.featurize([torch.from_numpy(wav)])  # [1, F, n_mels], [1]
            self.cache[path] = feats[0, : int(lengths[0])].cpu()
        return self.cache[path]

    def batch(self, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded encoder inputs ``[B, F, n_mels]`` and lengths ``[B]``."""
        items = [self.get(p) for p in paths]
        lengths = torch.tensor([x.shape[0] for x in items], dtype=torch.long)
        out = torch.zeros((len(items), int(lengths.max()), *items[0].shape[1:]), dtype=items[0].dtype)
        for i, x in enumerate(items):
            out[i, : x.shape[0]] = x
        return out, lengths


def build_examples(records, tasks: list[str], skips: Counter, cache: FeatureCache | None) -> list[dict]:
    """(utterance, task) examples of manifest records: ``{"audio", "prompt", "target", "task", "id"}``.

    ASR: one per source clip (the synthetic corpus repeats a clip once per target language); AST: one per
    row with a translation. Rows lacking a field, or with clips longer than ``data.max_seconds``, are counted."""
    out, seen_asr = [], set()
    for r in records:
        for task in tasks:
            spec = parse_task(task)
            if task == "ASR":
                if not r.audio or not r.text:
                    skips["ASR: no audio/text"] += 1
                    continue
                if r.audio in seen_asr:
                    continue
                seen_asr.add(r.audio)
                target, tag = r.text, spec.tag(r.lang)
            else:
                if not r.audio or not r.tgt_text or not r.tgt_lang:
                    skips["AST: no audio/tgt_text/tgt_lang"] += 1
                    continue
                target, tag = r.tgt_text, spec.tag(r.lang, r.tgt_lang)
            if cache is not None and not cache.duration_ok(r.audio):
                skips[f"{task}: longer than data.max_seconds"] += 1
                continue
            lang = r.lang if task == "ASR" else f"{r.lang}-{r.tgt_lang}"  # what the model card lists
            out.append({"audio": r.audio, "prompt": tag, "target": target, "task": task, "id": r.id, "lang": lang})
    return out
