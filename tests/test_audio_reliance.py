"""eval/audio_reliance.py: the ASR loss it computes is the model's loss on the transcript, and swapping the
audio changes it only when the audio differs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import make_checkpoint

from audiopalm.data.tasks import prompt_ids, target_ids
from audiopalm.inference.pipeline import AudioPaLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
import audio_reliance  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = AudioPaLM.from_pretrained(make_checkpoint(tmp_path_factory.mktemp("ckpt")), device="cpu")
    with torch.no_grad():  # larger weights: at init scale (std 0.02) the logits hardly depend on the input
        for p in pipe.model.parameters():
            p.mul_(20.0)
    return pipe


def _pairs(n, seed=0, same_audio=False):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (2, 12))
    texts = ["the dog.", "a cat runs.", "the old man reads a book.", "we eat."][:n]
    return [(codes if same_audio else rng.integers(0, 16, (2, 8 + i)), t) for i, t in enumerate(texts)]


def test_asr_loss_is_the_models_loss_on_the_transcript(pipe):
    pairs = _pairs(3)
    losses = []
    for codes, text in pairs:  # reference: transformers' own loss with the prompt masked out of the labels
        rec = {"lang": "en", "text": text, "audio_codes": torch.as_tensor(codes)}
        prompt, target = prompt_ids(rec, "ASR", pipe.vocab), target_ids(rec, "ASR", pipe.vocab)
        labels = torch.tensor([[-100] * len(prompt) + target])
        with torch.no_grad():
            losses.append((pipe.model(torch.tensor([prompt + target]), labels=labels).loss.item(), len(target)))
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert audio_reliance.asr_loss(pipe, pairs, "en") == pytest.approx(expected, rel=1e-5)


def test_swapping_audio_matters_only_when_the_audio_differs(pipe):
    same = audio_reliance.audio_reliance(pipe, _pairs(4, same_audio=True), "en")
    assert same["gap"] == pytest.approx(0.0, abs=1e-6) and same["utterances"] == 4
    different = audio_reliance.audio_reliance(pipe, _pairs(4), "en")
    assert abs(different["gap"]) > 1e-3, different  # a random model's transcript loss depends on its input
    with pytest.raises(ValueError, match="at least 2"):
        audio_reliance.audio_reliance(pipe, _pairs(1), "en")
