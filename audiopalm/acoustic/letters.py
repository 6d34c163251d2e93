"""The letters of the word each unit says: the acoustic stage's second input, beside the unit itself.

A model fine-tuned with ``model.output_words`` writes each word before the units that say it
(docs/decoding.md), so where speech is generated the stage knows, for every unit, which word it belongs to.
At 8.3 units a second one unit spans about a syllable and 2048 k-means classes say only part of how it
sounds; the word's spelling says the rest. Each unit gets a window of ``width`` letter ids of its word,
centred on the letter at the unit's place in the word (letters spread evenly over the word's units)::

    "guitars" over 4 units, width 5:  unit 0 -> _ _ g u i   unit 1 -> u i t a r ... (``_``: outside the word)

Letter ids: 0 outside any word (and for every unit of an utterance given without words), 1 for a letter not in
the stage's alphabet, ``2 + i`` for ``letters[i]``; words are normalised as the CTC encoder's transcripts are
(:func:`audiopalm.tokenizers.speech_encoder.normalize_text`: lower case, punctuation dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from audiopalm.tokenizers.speech_encoder import normalize_text

PAD, UNKNOWN = 0, 1

WordSpans = Sequence[tuple[str, int]]
"""(word, the unit at which it starts) of one utterance, in order; the text of a word as written (normalised here)."""


def unit_letters(tokenizer) -> tuple[str, ...]:
    """The alphabet of a letter-reading stage on ``tokenizer``'s units: its CTC encoder's characters (space aside)."""
    encoder = getattr(tokenizer, "encoder", None)
    chars = getattr(getattr(encoder, "config", None), "chars", None)
    if not chars or not hasattr(tokenizer, "encode_words"):
        raise ValueError(
            f"model.use_letters: the {tokenizer.type_name} unit tokenizer cannot place words on its units "
            "(a ctc_units tokenizer, whose CTC head aligns them, can)"
        )
    return tuple(c for c in chars if c != " ")


def spell(word: str, letters: Sequence[str]) -> list[int]:
    """The letter ids of ``word`` (normalised; spaces inside it dropped)."""
    index = {c: i + 2 for i, c in enumerate(letters)}
    return [index.get(c, UNKNOWN) for c in normalize_text(word) if c != " "]


def letter_windows(words: WordSpans | None, n_units: int, letters: Sequence[str], width: int) -> torch.Tensor:
    """``[n_units, width]`` long: for each unit, ``width`` letter ids of its word around the letter at its place in
    the word (module docstring). A word runs from its start to the next word's start (the last one to the end);
    units before the first start, words with no letter, ``words`` None or empty: all :data:`PAD`."""
    if width < 1 or width % 2 == 0:
        raise ValueError(f"letter window width {width}: must be odd and >= 1")
    out = torch.zeros(n_units, width, dtype=torch.long)
    if not words:
        return out
    starts = [int(s) for _, s in words]
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)) or starts[0] < 0:
        raise ValueError(f"word starts must be non-decreasing and >= 0, got {starts}")
    half = width // 2
    for w, (word, start) in enumerate(words):
        end = min(starts[w + 1] if w + 1 < len(words) else n_units, n_units)
        ids = spell(word, letters)
        if not ids or end <= start:
            continue
        padded = torch.tensor([PAD] * half + ids + [PAD] * half, dtype=torch.long)
        span = end - start
        for u in range(start, end):
            c = min((2 * (u - start) + 1) * len(ids) // (2 * span), len(ids) - 1)  # the letter at the unit's middle
            out[u] = padded[c : c + width]
    return out
