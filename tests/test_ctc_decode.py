"""Lexicon-constrained CTC decoding (audiopalm.tokenizers.ctc_decode)."""

import pytest
import torch

from audiopalm.tokenizers.ctc_decode import LexiconCTCDecoder, lexicon_from_texts
from audiopalm.tokenizers.speech_encoder import greedy_decode

CHARS = [" ", "'", *"abcdefghijklmnopqrstuvwxyz"]


def emissions(spelling: str, frames_per_char: int = 2, peak: float = 0.9) -> torch.Tensor:
    """[F, C] log-probs that say ``spelling`` (blank between characters), ``peak`` on the intended id."""
    ids = []
    for ch in spelling:
        ids += [CHARS.index(ch) + 1] * frames_per_char + [0]
    probs = torch.full((len(ids), len(CHARS) + 1), (1 - peak) / len(CHARS))
    probs[torch.arange(len(ids)), torch.tensor(ids)] = peak
    return probs.log()


def test_lexicon_from_texts_normalises_and_splits_by_language():
    lex = lexicon_from_texts([("en", "The cat, the HAT!"), ("fr", "Le chat l'a vu."), ("en", "a cat")])
    assert lex == {"en": ["a", "cat", "hat", "the"], "fr": ["chat", "l'a", "le", "vu"]}


def test_decoder_snaps_a_misspelling_to_a_lexicon_word_and_restores_the_boundary():
    # "cst sat" without its space: greedy spells it as heard, the lexicon decoder gives two known words
    lp = emissions("cstsat").unsqueeze(0)
    lengths = torch.tensor([lp.shape[1]])
    assert greedy_decode(lp, lengths, CHARS) == ["cstsat"]
    decoder = LexiconCTCDecoder(CHARS, ["cat", "sat", "mat", "dog"])
    assert decoder.decode(lp, lengths) == ["cat sat"]


def test_decoder_keeps_the_last_word_when_no_space_follows_it():
    # a model trained on transcripts without a final space is sure that none follows the last word; the lexicon spells
    # each word with a closing space, which the decoder supplies at the end (else it gave "dog": the letters of "cat"
    # cost less as blanks than a space at the end)
    lp = emissions("dog cat", peak=0.6).unsqueeze(0)
    lp[0, -7:, CHARS.index(" ") + 1] = -40.0  # from "c" on
    lengths = torch.tensor([lp.shape[1]])
    assert greedy_decode(lp, lengths, CHARS) == ["dog cat"]
    assert LexiconCTCDecoder(CHARS, ["cat", "dog"]).decode(lp, lengths) == ["dog cat"]
    # and a space heard at the end is not a second one
    lp2 = emissions("dog cat ").unsqueeze(0)
    assert LexiconCTCDecoder(CHARS, ["cat", "dog"]).decode(lp2, torch.tensor([lp2.shape[1]])) == ["dog cat"]


def test_decoder_batches_respect_lengths_and_only_emit_lexicon_words():
    a, b = emissions("dog "), emissions("mat sat ")
    lp = torch.full((2, max(len(a), len(b)), len(CHARS) + 1), -30.0)
    lp[0, : len(a)], lp[1, : len(b)] = a, b
    lp[0, len(a) :, CHARS.index("c") + 1] = 0.0  # padding frames shout "c": must be ignored
    words = ["cat", "sat", "mat", "dog"]
    out = LexiconCTCDecoder(CHARS, words).decode(lp, torch.tensor([len(a), len(b)]))
    assert out == ["dog", "mat sat"]
    assert all(w in words for text in out for w in text.split())


def test_decoder_refuses_what_it_cannot_spell():
    with pytest.raises(ValueError, match="no word of the lexicon"):
        LexiconCTCDecoder(CHARS, ["ça"])
    with pytest.raises(ValueError, match="no space"):
        LexiconCTCDecoder(["a", "b"], ["ab"])
    assert LexiconCTCDecoder(CHARS, ["ça", "cat"]).skipped == 1
