"""Lexicon-constrained CTC beam search for the character-CTC speech encoder (flashlight-text's decoder).

Greedy CTC spells words as it hears them ("thera getas neksttoa"), so a judge with a fair character error rate
still scores a word error rate near 100%. Constraining the beam to the words of the training transcripts (a
closed-vocabulary decoder, as classic ASR does) puts the word boundaries and spellings back without a language
model: the decoder knows which words exist, not which sentences are likely, so it cannot turn fluent but wrong
speech into the reference sentence. ``lexicon_from_texts`` builds the per-language word lists that
``fit-ctc-units`` records beside the encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from audiopalm.tokenizers.speech_encoder import BLANK, normalize_text

UNK = "<unk>"


def lexicon_from_texts(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(lang, transcript) pairs -> {lang: sorted distinct words of the normalised transcripts}."""
    words: dict[str, set[str]] = {}
    for lang, text in pairs:
        words.setdefault(lang, set()).update(normalize_text(text).split())
    return {lang: sorted(ws) for lang, ws in sorted(words.items())}


class LexiconCTCDecoder:
    """Beam search over a character-CTC model's log-probs that emits only words of ``words``.

    ``chars``: the model's characters (id ``i + 1`` is ``chars[i]``, id 0 the blank; ``" "`` must be one of them:
    it ends a word). Words with a character the model cannot spell are left out (counted in ``skipped``).
    ``beam``: hypotheses kept per frame; ``word_score``: log-score added per emitted word (0: none)."""

    def __init__(self, chars: Sequence[str], words: Sequence[str], *, beam: int = 50, word_score: float = 0.0):
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconDecoder,
                LexiconDecoderOptions,
                SmearingMode,
                Trie,
                ZeroLM,
            )
            from flashlight.lib.text.dictionary import create_word_dict
        except ImportError as e:  # pragma: no cover - flashlight-text is a dependency
            raise ImportError("lexicon decoding needs flashlight-text: pip install flashlight-text") from e
        if " " not in chars:
            raise ValueError("LexiconCTCDecoder: the model's characters have no space, so words cannot end")
        if beam < 1:
            raise ValueError(f"LexiconCTCDecoder: beam must be >= 1, got {beam}")
        ids = {c: i + 1 for i, c in enumerate(chars)}
        self.sil = ids[" "]
        self.end = torch.full((1, len(chars) + 1), -1e9)  # [1, C]: the frame after the last, only the separator
        self.end[0, self.sil] = 0.0
        spell = {w: [list(w) + [" "]] for w in words if w and all(c in ids for c in w)}
        self.skipped = len(set(words)) - len(spell)
        if not spell:
            raise ValueError("LexiconCTCDecoder: no word of the lexicon can be spelled with the model's characters")
        self.word_dict = create_word_dict({**spell, UNK: [[UNK]]})
        self.lm = ZeroLM()
        start = self.lm.start(False)
        trie = Trie(len(chars) + 1, self.sil)
        for w, spellings in spell.items():
            index = self.word_dict.get_index(w)
            _, score = self.lm.score(start, index)
            for s in spellings:
                trie.insert([ids[c] for c in s], index, score)
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            beam_size=beam,
            beam_size_token=len(chars) + 1,
            beam_threshold=25.0,
            lm_weight=0.0,
            word_score=word_score,
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self.unk = self.word_dict.get_index(UNK)
        self.decoder = LexiconDecoder(options, trie, self.lm, self.sil, BLANK, self.unk, [], False)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """[B, F, C] log-probs, [B] frame lengths -> B transcripts (words joined by spaces).

        Each item's frames are followed by one frame that can only be the word separator, so the transcript ends its
        last word: the lexicon spells every word with a closing space, which a CTC model trained on transcripts
        without a final space never emits at the end, and without that frame the search dropped the last word
        wherever the model heard no space after it (the default demo's judge heard its English test references at
        12.3% WER without that frame, 9.8 with it)."""
        assert log_probs.dim() == 3, f"log_probs must be [B, F, C], got {tuple(log_probs.shape)}"
        log_probs = log_probs.detach().float().cpu()
        assert log_probs.shape[2] == self.end.shape[1], (
            f"{log_probs.shape[2]} classes, the decoder has {self.end.shape[1]}"
        )
        out = []
        for b, n in enumerate(lengths.tolist()):
            if n == 0:
                out.append("")
                continue
            emissions = torch.cat([log_probs[b, :n], self.end]).contiguous()  # [F + 1, C]
            best = self.decoder.decode(emissions.data_ptr(), emissions.shape[0], emissions.shape[1])[0]
            out.append(" ".join(self.word_dict.get_entry(i) for i in best.words if i >= 0 and i != self.unk))
        return out
