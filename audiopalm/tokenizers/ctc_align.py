"""Where each word of a transcript is spoken, from a character-CTC encoder's log-probs (forced alignment).

:func:`ctc_align` is the Viterbi path of CTC (blank 0) through a known character sequence; :func:`word_starts`
turns it into the frame at which each whitespace-separated word of the transcript starts. The token stores
keep these (``audio_tokenize --words``) so that a model can write its speech word by word, each word's text
before its units (:attr:`audiopalm.data.vocab.VocabLayout.output_words`)::

    starts = word_starts(log_probs[:frames], "Est-ce que le chien dort ?", chars)   # e.g. [0, 9, 14, 20, 31, 31]

Word ``i`` then covers frames ``[starts[i], starts[i + 1])`` (the last one up to the end): the first word starts at
frame 0 and takes any leading silence, each later word starts at the first frame of its first letter and the pause
before it stays with the word before. A word with no letter (``"?"``) starts where the next word does (no frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audiopalm.tokenizers.speech_encoder import normalize_text


def ctc_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0) -> list[int] | None:
    """The first frame of each target on the most likely CTC path that spells ``targets``.

    ``log_probs`` [T, C] (one utterance, its own frames only); ``targets``: class ids, none of them ``blank``.
    Returns one frame per target (non-decreasing, strictly increasing), or None when ``T`` frames cannot spell
    ``targets`` (fewer frames than targets plus their repeated neighbours, each of which needs a blank between)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    n, frames = len(targets), lp.shape[0]
    if n == 0:
        return []
    if frames < n + sum(a == b for a, b in zip(targets[:-1], targets[1:], strict=True)):
        return None
    ext = np.full(2 * n + 1, blank, dtype=np.int64)  # blank y1 blank y2 ... yn blank
    ext[1::2] = targets
    skip = np.zeros(len(ext), dtype=bool)  # s may come from s - 2: a letter unlike the letter before it
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(len(ext), -np.inf)
    score[:2] = lp[0, ext[:2]]
    back = np.zeros((frames, len(ext)), dtype=np.int8)  # 0: stay, 1: from s - 1, 2: from s - 2
    for t in range(1, frames):
        cand = np.full((3, len(ext)), -np.inf)
        cand[0] = score
        cand[1, 1:] = score[:-1]
        cand[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        back[t] = cand.argmax(0)
        score = cand[back[t], np.arange(len(ext))] + lp[t, ext]
    s = len(ext) - 1 if score[-1] >= score[-2] else len(ext) - 2
    first = [0] * n
    for t in range(frames - 1, -1, -1):
        if s % 2:
            first[s // 2] = t  # walking back: the last frame seen is the first of that target
        s -= int(back[t, s])
    return first


def word_starts(log_probs: np.ndarray, text: str, chars: Sequence[str]) -> list[int]:
    """The frame at which each word of ``text.split()`` starts (the first is 0), from CTC ``log_probs`` [T, 1 + C]
    (column 0: blank; column ``1 + i``: ``chars[i]``) of that utterance.

    Letters are those of :func:`~audiopalm.tokenizers.speech_encoder.normalize_text` that ``chars`` holds (a word's
    unknown letters are left out). When the frames cannot spell the transcript, the words share the frames in
    proportion to their letters."""
    frames = int(np.shape(log_probs)[0])
    index = {c: i + 1 for i, c in enumerate(chars)}
    targets: list[int] = []
    first_target: list[int | None] = []  # per word: index of its first letter in targets
    letters: list[int] = []
    for w, word in enumerate(text.split()):
        ids = [index[c] for c in normalize_text(word) if c in index and c != " "]
        if w and targets and ids and " " in index:
            targets.append(index[" "])  # the space CTC was trained to hear between words
        first_target.append(len(targets) if ids else None)
        targets += ids
        letters.append(len(ids))
    path = ctc_align(log_probs, targets) if targets else None
    if path is not None:
        raw = [None if i is None else path[i] for i in first_target]
    else:  # proportional to the letters
        total = max(sum(letters), 1)
        before = np.cumsum([0, *letters[:-1]])
        raw = [int(frames * b / total) if n else None for b, n in zip(before, letters, strict=True)]
    starts: list[int] = [0] * len(raw)
    nxt = frames
    for w in range(len(raw) - 1, -1, -1):  # a word with no letter starts where the next word does
        start = raw[w]
        nxt = nxt if start is None else min(int(start), nxt)
        starts[w] = nxt
    if starts:
        starts[0] = 0
    return starts
