"""CTC forced alignment (audiopalm.tokenizers.ctc_align): the Viterbi path through a known transcript, and where
each of its words starts."""

import itertools

import numpy as np
import pytest

from audiopalm.tokenizers.ctc_align import ctc_align, word_starts


def _one_hot(path, classes, rng=None):
    """Log-probs [T, classes] that make ``path`` (one class per frame) by far the likeliest."""
    lp = np.full((len(path), classes), -8.0)
    lp[np.arange(len(path)), path] = -0.01
    if rng is not None:
        lp += 0.1 * rng.standard_normal(lp.shape)
    return lp


def _collapse(path, blank=0):
    return [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]


@pytest.mark.parametrize("targets", [[1, 2], [1, 1], [2, 1, 2], [1]])
def test_the_path_is_the_best_of_all_paths_that_spell_the_targets(targets):
    """On random log-probs, every frame sequence of 3 classes over 6 frames is tried: the aligner's first frames
    are those of the likeliest sequence that collapses to the targets."""
    rng = np.random.default_rng(len(targets) * 7 + targets[0])
    lp = np.log(rng.dirichlet(np.ones(3), size=6))
    best = max(
        (p for p in itertools.product(range(3), repeat=6) if _collapse(p) == targets),
        key=lambda p: lp[np.arange(6), p].sum(),
    )
    first = [t for t, c in enumerate(best) if c and (t == 0 or c != best[t - 1])]
    assert ctc_align(lp, targets) == first


def test_clean_paths_are_recovered_and_too_few_frames_is_none():
    lp = _one_hot([0, 0, 1, 1, 0, 2, 2, 0, 3], 4, np.random.default_rng(0))
    assert ctc_align(lp, [1, 2, 3]) == [2, 5, 8]
    doubled = _one_hot([0, 1, 0, 1, 1, 0], 4)
    assert ctc_align(doubled, [1, 1]) == [1, 3]
    assert ctc_align(doubled[:2], [1, 1]) is None  # a repeated letter needs a blank between: 3 frames at least
    assert ctc_align(doubled[:3], [1, 1]) == [0, 2]
    assert ctc_align(doubled, []) == []


CHARS = [" ", "'", "a", "b", "c"]  # log-prob column 1 + i; 0 is the blank


def test_word_starts_follow_the_first_letter_of_each_word():
    # "ab ? c": a b, then the space (column 1) and a pause, then c
    lp = _one_hot([0, 3, 4, 0, 1, 1, 0, 5, 5], 6)
    # the first word starts at 0; "?" has no letter: it starts where the next word does; the pause stays before
    assert word_starts(lp, "Ab ? c", CHARS) == [0, 7, 7]
    # a letter the encoder does not know is left out of the alignment; a word of only such letters has no frames
    assert word_starts(lp, "Ab x c", CHARS) == [0, 7, 7]
    assert word_starts(lp, "Ab c", CHARS) == [0, 7]
    assert word_starts(lp, "abc", CHARS) == [0]
    assert word_starts(lp, "?", CHARS) == [0]


def test_word_starts_share_the_frames_by_letters_when_they_cannot_spell_the_text():
    lp = _one_hot([0, 3, 4], 6)  # 3 frames for 5 letters and a space
    assert word_starts(lp, "ab cab", CHARS) == [0, 1]  # 2 of 5 letters before the second word: 3 * 2 / 5 -> 1
