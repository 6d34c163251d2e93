"""The unified vocabulary: a text tokenizer + a block of audio tokens + a few special tokens.

This is the one place token ids are computed. The layout (AudioPaLM: the text vocabulary is kept and
the audio codes are appended after it)::

    id:  0 ........ T-1 | T ........................ T + k*C - 1 | T + k*C ...
         text tokens    | audio tokens <a_q_c>, id = T + q*C + c | <|audio_start|> <|audio_end|>
         (unchanged)    | (audio_offset T, k codebooks of C)     | <|audio_pad|> <|sep|> [<|pad|>] [<|eos|>]

Every audio and special token is added to the Hugging Face tokenizer as a real added token (special,
not normalised), so ``AutoTokenizer.from_pretrained(checkpoint)`` gives the same ids, a decoded mixed
sequence ``"the dog<|audio_start|><a_0_17><a_1_3><|audio_end|>"`` re-encodes to the same ids, and an
audio token is never split or merged with text. ``save_pretrained`` writes the tokenizer plus
``audiopalm.json`` (the layout below); ``from_pretrained`` reads both and checks that they agree.

Codes go through a codebook pattern (:mod:`audiopalm.data.patterns`) into a stream wrapped in
``<|audio_start|> ... <|audio_end|>``; the delay pattern's filler slots become ``<|audio_pad|>``.
``<|sep|>`` separates the segments of a task example (see :mod:`audiopalm.data.tasks`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch

from audiopalm.data.patterns import PAD, PATTERNS, PatternError, get_pattern
from audiopalm.data.sources import audio_tokenizer_source

LAYOUT_NAME = "audiopalm.json"
FORMAT_VERSION = 1

# role -> token string. WARNING: these strings are stored in every checkpoint's tokenizer; renaming
# one breaks trained checkpoints.
SPECIAL_TOKENS: dict[str, str] = {
    "audio_start": "<|audio_start|>",
    "audio_end": "<|audio_end|>",
    "audio_pad": "<|audio_pad|>",  # an empty slot of the delay pattern
    "sep": "<|sep|>",  # between the segments of a task example
}
PAD_TOKEN = "<|pad|>"  # added only when the text tokenizer has no pad token
EOS_TOKEN = "<|eos|>"  # added only when the text tokenizer has no eos token
AUDIO_TOKEN_FORMAT = "<a_{q}_{code}>"


def language_key(lang: str, tgt_lang: str | None = None) -> str:
    """How :attr:`VocabLayout.task_languages` names a task's languages: ``"en"``, or ``"en-fr"`` with a target."""
    return f"{lang}-{tgt_lang}" if tgt_lang else lang


def split_language_key(key: str) -> tuple[str, str | None]:
    """``"en-fr"`` -> ``("en", "fr")``; ``"en"`` -> ``("en", None)`` (the inverse of :func:`language_key`)."""
    lang, _, tgt = key.partition("-")
    return lang, tgt or None


class VocabError(ValueError):
    """A tokenizer and an ``audiopalm.json`` that do not describe the same vocabulary."""


@dataclasses.dataclass
class VocabLayout:
    """What ``audiopalm.json`` holds: enough to recompute every id and to check the tokenizer."""

    text_vocab_size: int
    """Tokens of the text tokenizer before extension (``len(tokenizer)``); text ids are below this."""
    audio_offset: int
    """Id of audio code 0 of codebook 0 (equal to ``text_vocab_size``)."""
    num_codebooks: int
    """k: codebooks used by the LM (the first k of the audio tokenizer's K)."""
    codebook_size: int
    """C: codes per codebook."""
    pattern: str
    """Codebook pattern name, a key of :data:`audiopalm.data.patterns.PATTERNS`."""
    vocab_size: int
    """``len(tokenizer)`` after extension (the model's embedding is this, padded to a multiple of 64)."""
    special_tokens: dict
    """role -> ``{"token": str, "id": int}`` for audio_start, audio_end, audio_pad, sep, pad, eos and
    (when the text tokenizer has one) bos."""
    audio_tokenizer: dict | None = None
    """``{"type", "fingerprint", "num_codebooks"}`` of the audio tokenizer the codes come from."""
    tasks: list = dataclasses.field(default_factory=list)
    """Task names (``"ASR"``, ``"ASR AST S2ST"``, ...) the model was trained on."""
    task_languages: dict = dataclasses.field(default_factory=dict)
    """Task name -> the languages (``"en"``) or, for translation tasks, pairs (``"en-fr"``) of its training rows
    (empty: not recorded). The pipeline fills in a language the user leaves out when only one fits."""
    input_dedup: bool = False
    """The model reads its input audio with each run of a repeated code collapsed into one token (SpeechGPT-style:
    fewer tokens per second of speech) and writes speech frame by frame (the acoustic stage needs every frame).
    One codebook only."""
    output_words: bool = False
    """The model writes its speech word by word: inside an output audio segment each word's text tokens come
    before the units that speak it (an inner monologue, as Moshi's; the word starts come from the token store's
    ``audio_words``). The text is dropped before the units are turned into sound. One codebook, flatten pattern."""
    format_version: int = FORMAT_VERSION
    """Version of this file's layout."""

    def __post_init__(self):
        for name in ("text_vocab_size", "audio_offset", "num_codebooks", "codebook_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name in ("text_vocab_size", "audio_offset") else 1):
                raise VocabError(f"{name}: expected a positive integer, got {value!r}")
        if self.audio_offset != self.text_vocab_size:
            raise VocabError(f"audio_offset: {self.audio_offset} != text_vocab_size {self.text_vocab_size}")
        if self.pattern not in PATTERNS:
            raise VocabError(f"pattern: unknown {self.pattern!r}; known: {', '.join(PATTERNS)}")
        audio_end = self.audio_offset + self.num_codebooks * self.codebook_size
        if self.vocab_size < audio_end:
            raise VocabError(f"vocab_size: {self.vocab_size} < end of the audio block {audio_end}")
        missing = [r for r in (*SPECIAL_TOKENS, "pad", "eos") if r not in self.special_tokens]
        if missing:
            raise VocabError(f"special_tokens: missing role(s) {missing}")
        for role, entry in self.special_tokens.items():
            if not isinstance(entry, dict) or set(entry) != {"token", "id"} or not 0 <= entry["id"] < self.vocab_size:
                raise VocabError(
                    f"special_tokens.{role}: expected {{'token', 'id' < {self.vocab_size}}}, got {entry!r}"
                )
        if self.input_dedup and self.num_codebooks != 1:
            raise VocabError(f"input_dedup: needs one codebook, got num_codebooks={self.num_codebooks}")
        if self.output_words and (self.num_codebooks != 1 or self.pattern != "flatten"):
            raise VocabError(
                f"output_words: needs one codebook and the flatten pattern, got {self.num_codebooks} ({self.pattern})"
            )
        if self.format_version != FORMAT_VERSION:
            raise VocabError(f"format_version: {self.format_version} (this audiopalm reads {FORMAT_VERSION})")


class UnifiedVocab:
    """A Hugging Face text tokenizer extended with audio tokens; computes and checks every id.

    Make one with :meth:`build` (extends a copy of a text tokenizer) or :meth:`from_pretrained`.
    """

    TEXT_CACHE = 65536
    """Texts whose ids :meth:`text_ids` keeps (training renders the same sentences and words again and again)."""

    def __init__(self, tokenizer, layout: VocabLayout):
        self.tokenizer = tokenizer
        self.layout = layout
        self._text_ids: dict[str, tuple[int, ...]] = {}
        self.pattern = get_pattern(layout.pattern, layout.num_codebooks)
        self._check()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        text_tokenizer,
        *,
        codebook_size: int | None = None,
        num_codebooks: int | None = None,
        pattern: str = "flatten",
        audio_tokenizer=None,
        tasks=(),
        input_dedup: bool = False,
        output_words: bool = False,
    ) -> UnifiedVocab:
        """Extend a copy of ``text_tokenizer`` with ``num_codebooks * codebook_size`` audio tokens (``input_dedup``,
        ``output_words``: see :class:`VocabLayout`).

        With ``audio_tokenizer`` (an :class:`~audiopalm.tokenizers.base.AudioTokenizer`) the codebook
        size defaults to its own, ``num_codebooks`` to all of its K, and its type and fingerprint are
        recorded. The text tokenizer's ids are unchanged; its pad and eos are kept if it has them.
        """
        from transformers import AddedToken

        if audio_tokenizer is not None:
            codebook_size = codebook_size or audio_tokenizer.codebook_size
            num_codebooks = num_codebooks or audio_tokenizer.num_codebooks
            if codebook_size != audio_tokenizer.codebook_size or num_codebooks > audio_tokenizer.num_codebooks:
                raise VocabError(
                    f"codebook_size {codebook_size} / num_codebooks {num_codebooks} do not fit the audio "
                    f"tokenizer ({audio_tokenizer.codebook_size} codes, {audio_tokenizer.num_codebooks} codebooks)"
                )
        if not codebook_size or not num_codebooks:
            raise VocabError(
                f"give codebook_size and num_codebooks (got {codebook_size}, {num_codebooks}) or an audio_tokenizer"
            )
        tok = copy.deepcopy(text_tokenizer)
        text_size = len(tok)
        audio = [
            AddedToken(AUDIO_TOKEN_FORMAT.format(q=q, code=c), special=True, normalized=False)
            for q in range(num_codebooks)
            for c in range(codebook_size)
        ]
        roles = dict(SPECIAL_TOKENS)
        if tok.pad_token is None:
            roles["pad"] = PAD_TOKEN
        if tok.eos_token is None:
            roles["eos"] = EOS_TOKEN
        # a role token the text tokenizer already has (e.g. <|sep|> of a stage-0 model trained on the task
        # format, audiopalm.data.text_tokenizer) keeps its id and its trained embedding row
        known = tok.get_vocab()
        specials = [AddedToken(t, special=True, normalized=False) for t in roles.values() if t not in known]
        # one batch call: adding ~2k tokens this way takes milliseconds (one at a time is far slower)
        tok.add_tokens(audio + specials, special_tokens=True)
        if "pad" in roles:
            tok.pad_token = PAD_TOKEN
        if "eos" in roles:
            tok.eos_token = EOS_TOKEN
        roles["pad"], roles["eos"] = tok.pad_token, tok.eos_token
        if tok.bos_token is not None:
            roles["bos"] = tok.bos_token
        ids = tok.convert_tokens_to_ids(list(roles.values()))
        layout = VocabLayout(
            text_vocab_size=text_size,
            audio_offset=text_size,
            num_codebooks=num_codebooks,
            codebook_size=codebook_size,
            pattern=pattern,
            vocab_size=len(tok),
            special_tokens={r: {"token": t, "id": i} for (r, t), i in zip(roles.items(), ids, strict=True)},
            audio_tokenizer=None
            if audio_tokenizer is None
            else {
                "type": audio_tokenizer.type_name,
                "fingerprint": audio_tokenizer.fingerprint,
                "num_codebooks": audio_tokenizer.num_codebooks,
                "source": audio_tokenizer_source(audio_tokenizer),
            },
            tasks=list(tasks),
            input_dedup=input_dedup,
            output_words=output_words,
        )
        return cls(tok, layout)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> UnifiedVocab:
        """Read the tokenizer and ``audiopalm.json`` from ``directory`` and check that they agree."""
        from transformers import AutoTokenizer

        path = Path(directory) / LAYOUT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (not an audiopalm checkpoint or vocabulary)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise VocabError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        fields = {f.name for f in dataclasses.fields(VocabLayout)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise VocabError(f"{path}: unknown field(s) {unknown}")
        try:
            layout = VocabLayout(**raw)
        except TypeError as e:
            raise VocabError(f"{path}: {e}") from None
        except VocabError as e:
            raise VocabError(f"{path}: {e}") from None
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        try:
            return cls(tokenizer, layout)
        except VocabError as e:
            raise VocabError(f"{directory}: tokenizer and {LAYOUT_NAME} disagree: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer (HF files) and ``audiopalm.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        (directory / LAYOUT_NAME).write_text(json.dumps(dataclasses.asdict(self.layout), indent=2) + "\n")
        return directory

    def _check(self) -> None:
        """The tokenizer maps every audio and special token string to the id the layout says."""
        lay = self.layout
        if len(self.tokenizer) != lay.vocab_size:
            raise VocabError(f"len(tokenizer) is {len(self.tokenizer)}, layout vocab_size is {lay.vocab_size}")
        strings = [
            AUDIO_TOKEN_FORMAT.format(q=q, code=c) for q in range(lay.num_codebooks) for c in range(lay.codebook_size)
        ]
        got = self.tokenizer.convert_tokens_to_ids(strings)
        want = range(lay.audio_offset, lay.audio_offset + len(strings))
        for s, g, w in zip(strings, got, want, strict=True):
            if g != w:
                raise VocabError(f"audio token {s!r} has id {g}, expected {w}")
        for role, entry in lay.special_tokens.items():
            got_id = self.tokenizer.convert_tokens_to_ids(entry["token"])
            if got_id != entry["id"]:
                raise VocabError(f"special token {role} {entry['token']!r} has id {got_id}, expected {entry['id']}")
            if lay.audio_offset <= entry["id"] < self.audio_end_offset:
                raise VocabError(f"special token {role} id {entry['id']} lies inside the audio block")
        for role in ("pad", "eos", "bos"):
            entry = lay.special_tokens.get(role)
            got_id = getattr(self.tokenizer, f"{role}_token_id")
            if entry is not None and got_id != entry["id"]:
                raise VocabError(f"tokenizer.{role}_token_id is {got_id}, expected {entry['id']} ({entry['token']!r})")

    # ---- sizes and special ids ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.layout.vocab_size

    @property
    def num_codebooks(self) -> int:
        return self.layout.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.layout.codebook_size

    @property
    def audio_offset(self) -> int:
        """Id of code 0 of codebook 0; every text id is below it."""
        return self.layout.audio_offset

    @property
    def audio_end_offset(self) -> int:
        """One past the last audio token id."""
        return self.layout.audio_offset + self.layout.num_codebooks * self.layout.codebook_size

    def _special(self, role: str) -> int:
        return self.layout.special_tokens[role]["id"]

    @property
    def audio_start_id(self) -> int:
        return self._special("audio_start")

    @property
    def audio_end_id(self) -> int:
        return self._special("audio_end")

    @property
    def audio_pad_id(self) -> int:
        """Filler slot of the delay pattern."""
        return self._special("audio_pad")

    @property
    def sep_id(self) -> int:
        """Separator between the segments of a task example."""
        return self._special("sep")

    @property
    def pad_id(self) -> int:
        return self._special("pad")

    @property
    def eos_id(self) -> int:
        return self._special("eos")

    @property
    def bos_id(self) -> int | None:
        """The text tokenizer's bos, or None if it has none."""
        entry = self.layout.special_tokens.get("bos")
        return None if entry is None else entry["id"]

    @property
    def tasks(self) -> list[str]:
        return self.layout.tasks

    # ---- ids ------------------------------------------------------------------------------------
    def audio_token_id(self, codebook: int, code: int) -> int:
        """``audio_offset + codebook * codebook_size + code``: the id of one audio code."""
        if not (0 <= codebook < self.num_codebooks and 0 <= code < self.codebook_size):
            raise VocabError(
                f"(codebook {codebook}, code {code}) outside [0, {self.num_codebooks}) x [0, {self.codebook_size})"
            )
        return self.audio_offset + codebook * self.codebook_size + code

    def is_audio(self, token_id: int) -> bool:
        """Whether ``token_id`` is an audio code token (not a special token)."""
        return self.audio_offset <= token_id < self.audio_end_offset

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no bos/eos added); the last :attr:`TEXT_CACHE` texts' ids are kept."""
        ids = self._text_ids.get(text)
        if ids is None:
            ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            if len(self._text_ids) >= self.TEXT_CACHE:
                self._text_ids.clear()
            self._text_ids[text] = ids
        return list(ids)

    def decode_text(self, ids) -> str:
        """The text of ``ids``, leaving out audio and special tokens."""
        ids = [int(i) for i in ids]
        return self.tokenizer.decode([i for i in ids if i < self.audio_offset], skip_special_tokens=True)

    def audio_to_ids(self, codes) -> list[int]:
        """``codes`` [K>=k, F] -> ``[<|audio_start|>, stream ids..., <|audio_end|>]`` via the pattern."""
        stream = self.pattern.build(codes, self.codebook_size)  # [L] audio-local ids and PAD
        ids = torch.where(stream == PAD, self.audio_pad_id, stream + self.audio_offset)  # [L]
        return [self.audio_start_id, *ids.tolist(), self.audio_end_id]

    def ids_to_audio(self, ids) -> torch.Tensor:
        """Inverse of :meth:`audio_to_ids`; the start/end tokens are optional. Returns codes [k, F].

        Raises :class:`VocabError` for a non-audio id (naming its position) or a malformed stream."""
        ids = [int(i) for i in ids]
        if ids and ids[0] == self.audio_start_id:
            if ids[-1] != self.audio_end_id:
                raise VocabError(
                    f"audio segment starts with <|audio_start|> but ends with id {ids[-1]}, not <|audio_end|>"
                )
            ids = ids[1:-1]
        stream = torch.tensor(ids, dtype=torch.long)  # [L]
        bad = ~((stream >= self.audio_offset) & (stream < self.audio_end_offset)) & (stream != self.audio_pad_id)
        if bad.any():
            pos = int(bad.nonzero()[0])
            raise VocabError(
                f"position {pos} of the audio segment holds id {ids[pos]} "
                f"({self.tokenizer.convert_ids_to_tokens(ids[pos])!r}), not an audio token"
            )
        local = torch.where(stream == self.audio_pad_id, PAD, stream - self.audio_offset)  # [L]
        try:
            return self.pattern.revert(local, self.codebook_size)  # [k, F]
        except PatternError as e:
            raise VocabError(f"malformed audio segment: {e}") from None

    # ---- masks for the constrained decoder -------------------------------------------------------
    def text_mask(self, size: int | None = None) -> torch.Tensor:
        """[V] True for the text tokenizer's own ids (``< audio_offset``); V defaults to ``len(self)``
        (pass the model's padded embedding size to match its logits)."""
        mask = torch.zeros(size or len(self), dtype=torch.bool)  # [V]
        mask[: self.audio_offset] = True
        return mask

    def audio_mask(self, size: int | None = None) -> torch.Tensor:
        """[V] True for the audio code tokens."""
        mask = torch.zeros(size or len(self), dtype=torch.bool)  # [V]
        mask[self.audio_offset : self.audio_end_offset] = True
        return mask

    def codebook_mask(self, codebook: int, size: int | None = None) -> torch.Tensor:
        """[V] True for the tokens of one codebook."""
        mask = torch.zeros(size or len(self), dtype=torch.bool)  # [V]
        start = self.audio_token_id(codebook, 0)
        mask[start : start + self.codebook_size] = True
        return mask
