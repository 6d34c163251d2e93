"""The acoustic stage's training pieces that need no recipe config: :func:`l1_errors` / :func:`loss_sums` (the
loss of a batch), :func:`set_default_voice` (stored in the saved folder) and :func:`concat` (utterance sets).

The recipe (:mod:`audiopalm.recipes.train_acoustic`) puts them together with its config,
:class:`audiopalm.config.TrainAcousticConfig`.
"""

from __future__ import annotations

import torch

from audiopalm.acoustic.data import Batch, Utterances, _pad
from audiopalm.acoustic.stage import AcousticStage


def concat(parts: list[Utterances]) -> Utterances:
    """One :class:`Utterances` holding ``parts`` in order."""
    offsets, base = [torch.zeros(1, dtype=torch.long)], 0
    for p in parts:
        offsets.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Utterances(
        [x for p in parts for x in p.paths],
        [x for p in parts for x in p.speakers],
        torch.cat(offsets),
        torch.cat([p.units for p in parts]),
        torch.cat([p.feats for p in parts]),
        None
        if any(p.letters is None for p in parts)
        else torch.cat([p.letters for p in parts if p.letters is not None]),
    )


def l1_errors(model, batch: Batch) -> torch.Tensor:
    """|predicted - target| in normalised feature units, zero past each length.  # [B, F, D] float32
    ``model`` is the stage's :class:`AcousticModel` (possibly wrapped by accelerate)."""
    pred = model(
        batch.units, batch.unit_lengths, prompt=batch.prompt, prompt_lengths=batch.prompt_lengths, letters=batch.letters
    )  # [B, F, D]
    mask = (torch.arange(pred.shape[1], device=pred.device)[None] < batch.lengths[:, None]).float()  # [B, F]
    return (pred.float() - batch.feats).abs() * mask[..., None]


def loss_sums(model, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of :func:`l1_errors`  # [], number of terms: valid frames x feature dims)."""
    err = l1_errors(model, batch)  # [B, F, D]
    return err.sum(), int(batch.lengths.sum()) * err.shape[-1]


@torch.no_grad()
def set_default_voice(stage: AcousticStage, utts: Utterances, *, per_speaker: int = 8) -> dict:
    """Store the average voice of the training speakers as the stage's default voice: the mean over every speaker
    of its mean voice embedding (its first ``per_speaker`` utterances, each a prompt of at most
    ``max_prompt_frames``), so each speaker counts alike; returns what ``acoustic.json`` records about it.

    The average voice, not one speaker's: the default demo's fine-tuned LMs (two batch orders) speak through it at
    dev TTS WER 17.8 / 20.0 against 23.6 / 25.6 through its most frequent speaker's voice (a French one), and at
    dev S2ST ASR-BLEU 24.8 / 24.2 against 22.1 / 24.0; the English speakers' average alone is no better for English
    (17.3 / 19.8) (docs/acoustic_stage.md#the-default-voice-the-speakers-average)."""
    by_speaker: dict[str, list[int]] = {}
    for i, s in enumerate(utts.speakers):
        idx = by_speaker.setdefault(s, [])
        if len(idx) < per_speaker:
            idx.append(i)
    if not by_speaker:
        raise ValueError("set_default_voice: no utterances")
    info = {"speakers": len(by_speaker), "utterances": sum(len(v) for v in by_speaker.values())}
    if not stage.config.use_voice:
        return info
    stage.model.eval()
    means = []
    for speaker in sorted(by_speaker):
        padded, lengths = _pad([utts.item(i)[1][: stage.max_prompt_frames] for i in by_speaker[speaker]])
        voice = stage.model.encode_voice(padded, lengths)  # [n, V]
        assert voice is not None, "a default voice is set only for a stage with a voice encoder"
        means.append(voice.mean(0))
    stage.default_voice.copy_(torch.stack(means).mean(0))
    stage.default_voice_info = info
    return info
