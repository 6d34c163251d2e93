"""The acoustic stage's training pieces that need no recipe config: :func:`l1_errors` / :func:`loss_sums` (the
loss of a batch), :func:`set_default_voice` (stored in the saved folder) and :func:`concat` (utterance sets).

The recipe (:mod:`audiopalm.recipes.train_acoustic`) puts them together with its config,
:class:`audiopalm.config.TrainAcousticConfig`.
"""

from __future__ import annotations

import torch

from audiopalm.acoustic.data import Batch, Utterances
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
def set_default_voice(stage: AcousticStage, utts: Utterances, *, max_utterances: int = 32) -> dict:
    """Store the mean voice embedding of one training speaker (the one with most utterances; ties: the first
    name) as the stage's default voice; returns what ``acoustic.json`` records about it."""
    counts: dict[str, int] = {}
    for s in utts.speakers:
        counts[s] = counts.get(s, 0) + 1
    speaker = sorted(counts, key=lambda s: (-counts[s], s))[0]
    idx = [i for i, s in enumerate(utts.speakers) if s == speaker][:max_utterances]
    info = {"speaker": speaker, "utterances": len(idx)}
    if not stage.config.use_voice:
        return info
    feats = [utts.item(i)[1][: stage.max_prompt_frames] for i in idx]
    lengths = torch.tensor([len(f) for f in feats])
    padded = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        padded[i, : len(f)] = f
    stage.model.eval()
    voice = stage.model.encode_voice(padded, lengths)  # [B, V]
    assert voice is not None, "a default voice is set only for a stage with a voice encoder"
    stage.default_voice.copy_(voice.mean(0))
    stage.default_voice_info = info
    return info
