"""Modality-constrained generation: the model can only emit what the task's output template allows.

A task's target is a fixed sequence of segments (:func:`audiopalm.data.tasks.output_template`), e.g. for
``[ASR AST S2ST English French]``: text, ``<|sep|>``, text, ``<|sep|>``, audio, eos. While decoding,
:class:`SegmentConstraint` (a transformers ``LogitsProcessor``) follows each row through that template
and sets the logits of every token that would break it to -inf:

* in a text segment: text tokens only, then ``<|sep|>`` (or eos after the last segment), never empty;
* in an audio segment: ``<|audio_start|>``, then exactly the codebook the codebook pattern expects at each
  position (``flatten``: q0 q1 .. qk-1 per frame; ``delay``: the MusicGen slots with ``<|audio_pad|>``
  fillers), ``<|audio_end|>`` only where the stream is a whole number of frames (>= 1), then
  ``<|sep|>`` or eos. A vocabulary that writes speech word by word (``output_words``) also allows text
  tokens inside the stream (each word's text before its units); they do not count as frames.

So a generated audio segment always reverts to codes ``[k, F]``. An optional per-row cap on frames
(``max_audio_frames``) closes a row's audio segment once it holds that many frames, as ESPnet's
``maxlenratio`` bounds a TTS output by its input: a model that never emits ``<|audio_end|>`` then stops
near the length a person would speak the input, not at ``max_new_tokens``. Text segments have a cap too
(``max_text_tokens``; :func:`generate` sets :func:`text_token_cap` of each prompt), as ESPnet's ``maxlenratio=0``
bounds an ASR hypothesis by its encoder output's length: greedy text that falls into a loop (one word over and over)
ends there. The processor keeps each row's parser
state between steps (rows keep their order in greedy search and sampling) and re-parses from the prompt
when rows were reordered (beam search), so it works with every ``model.generate`` mode and the KV cache.

Speech is sampled, text is not (:class:`SpeechSampling`): AudioLM and VALL-E sample audio
tokens, because greedy decoding of audio falls into a loop (a frame pattern repeated until the cap) and
rarely emits ``<|audio_end|>``. With ``speech_sampling``, rows inside an audio stream draw from the
temperature-scaled top-k of the allowed codes (and ``<|audio_end|>``), while rows in a text segment are
decoded greedily, so a chained task's transcript and translation are exactly what greedy search gives.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import cast

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from audiopalm.data.patterns import DelayPattern
from audiopalm.data.tasks import AUDIO, TEXT, TRANSCRIPTS, TaskSpec, output_template, parse_task, speech_words
from audiopalm.data.vocab import UnifiedVocab

TEXT_CAP_MARGIN = 8
"""Tokens a text segment may have beyond its prompt's length (:func:`text_token_cap`)."""


def text_token_cap(prompt_length: int) -> int:
    """The cap on each text segment's tokens for a prompt of ``prompt_length`` tokens: the prompt's length plus
    :data:`TEXT_CAP_MARGIN`. A transcript has far fewer tokens than the speech it is read from (the default demo:
    8.3 units a second against about 3 words), a translation about as many as its source text, so no output a
    person would write is cut; a row that repeats one word without end stops there."""
    return prompt_length + TEXT_CAP_MARGIN


# what a row may emit next: a mask name, plus single ids
_DONE = "done"
# model.generate options that choose the decoding: speech sampling decides it itself, so it refuses them
DECODING_KWARGS = frozenset(
    {"do_sample", "num_beams", "temperature", "top_k", "top_p", "min_p", "typical_p", "num_return_sequences"}
)


@dataclasses.dataclass(frozen=True)
class SpeechSampling:
    """How audio tokens are drawn: temperature-scaled top-k sampling, seeded; text stays greedy."""

    temperature: float = 1.0
    """Divides the audio logits (> 0; lower: closer to greedy)."""
    top_k: int = 0
    """Sample among the k most likely allowed tokens (0: all of them)."""
    seed: int = 0
    """With the prompt, seeds each row's own generator: an input gives the same speech in any batch."""
    text: bool = False
    """Draw text tokens the same way too (what ``do_sample=True`` through the pipeline becomes, so that
    sampled outputs do not depend on the batch); False: text stays greedy."""

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(
                f"SpeechSampling.temperature: expected a number > 0, got {self.temperature!r} "
                "(for greedy speech pass speech_sampling=None)"
            )
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"SpeechSampling.top_k: expected an integer >= 0 (0: no top-k), got {self.top_k!r}")


@dataclasses.dataclass
class _RowState:
    """Where one row is in the output template."""

    segment: int = 0  # index into the template; == len(template) once eos was emitted
    pos: int = -1  # tokens emitted in the current segment (-1: segment not started; audio: before start)
    stream: int = 0  # audio stream tokens emitted in the current audio segment
    frames: int | None = None  # delay pattern: F, once codebook 0 emitted its first trailing filler
    closed: bool = False  # audio: <|audio_end|> emitted, waiting for <|sep|>/eos
    row: int = 0  # the row's index at parse time (its prompt: row // rows per prompt)
    text: list = dataclasses.field(default_factory=list)  # ids of the current / last text segment
    words: list | None = None  # forced words still to write in this audio segment, (ids, has a letter) (None: free)
    word: list = dataclasses.field(default_factory=list)  # the rest of the word being written
    lettered: bool = False  # whether the word being written has a letter
    voiced: bool = False  # a forced word with letters was just written: a unit must come before the next word


class SegmentConstraint(LogitsProcessor):
    """Masks logits so that the generated ids follow ``template`` (see the module docstring).

    ``prompt_length`` is the (left-padded) prompt length: generated ids start there.
    ``max_audio_frames``: one cap per prompt (None: no cap) on the frames of each audio segment; with
    beam search or several sequences per prompt the rows of prompt ``b`` share its cap. ``max_text_tokens``:
    the same for the tokens of each text segment (at the cap only its ``<|sep|>`` / eos may follow).

    ``speech_words`` (a vocabulary that writes speech word by word): per prompt, the words its speech says, as
    :func:`audiopalm.data.tasks.speech_words` gives them (TTS: the input text), or None. A speech segment that
    follows the text segment transcribing it (a chain's translation before its translated speech) says that
    text's words. Those words are then forced in order: inside the stream a row writes units, or the next word
    (all of its tokens), and ends only once every word is written (or at its frame cap); the model decides
    only where each word begins and the units that speak it. Speech with neither (direct S2ST) writes its own.
    """

    def __init__(
        self,
        vocab: UnifiedVocab,
        task: str | TaskSpec,
        prompt_length: int,
        vocab_size: int,
        max_audio_frames: Sequence[int | None] | None = None,
        speech_words: Sequence[Sequence[Sequence[int]] | None] | None = None,
        max_text_tokens: Sequence[int | None] | None = None,
    ):
        for name, caps in (("max_audio_frames", max_audio_frames), ("max_text_tokens", max_text_tokens)):
            if caps is not None and any(f is not None and f < 1 for f in caps):
                raise ValueError(f"{name}: expected caps >= 1 (or None), got {caps}")
        self.vocab = vocab
        self.max_audio_frames = max_audio_frames
        self.max_text_tokens = max_text_tokens
        self.template = [kind for kind, _ in output_template(task)]
        fields = [field for _, field in output_template(task)]
        # per audio segment: whether the text segment just before it is its transcript (its words are said)
        self._says_text = [
            i > 0 and kind == AUDIO and fields[i - 1] == TRANSCRIPTS.get(fields[i])
            for i, kind in enumerate(self.template)
        ]
        if speech_words is not None and not vocab.layout.output_words:
            raise ValueError("speech_words: this vocabulary writes speech frames only (output_words is off)")
        self.speech_words = speech_words
        self.prompt_length = prompt_length
        self.k = vocab.num_codebooks
        self.delay = isinstance(vocab.pattern, DelayPattern) and self.k > 1
        V = vocab_size
        text = vocab.text_mask(V)
        for special in (vocab.pad_id, vocab.eos_id, vocab.bos_id, vocab.sep_id, vocab.tokenizer.unk_token_id):
            if special is not None and special < V:
                text[special] = False
        self._masks = {"text": text, **{f"q{q}": vocab.codebook_mask(q, V) for q in range(self.k)}}
        self.words = vocab.layout.output_words  # one codebook, flatten (the layout checks it)
        if self.words:
            words = text.clone()
            words[[i for i in (vocab.audio_start_id, vocab.audio_end_id, vocab.audio_pad_id) if i < V]] = False
            # where a row must begin a given word, the model's wish to write any text is its score
            self._masks["units"], self._masks["words"] = self._masks["q0"], words
            self._masks["q0"] = self._masks["q0"] | words  # a word's text, or a unit
        # (mask name, extra ids) -> [V] True where forbidden, on the scores' device. A template has only a
        # handful of distinct states, so each step is one stack + one masked_fill, whatever the batch size.
        self._forbidden: dict[tuple, torch.Tensor] = {}
        self._states: list[_RowState] = []
        self._seen: torch.Tensor | None = None  # input_ids of the previous call

    # ---- the parser --------------------------------------------------------------------------
    def _terminator(self, st: _RowState) -> int:
        return self.vocab.eos_id if st.segment == len(self.template) - 1 else self.vocab.sep_id

    def _allowed(
        self, st: _RowState, cap: int | None = None, text_cap: int | None = None
    ) -> tuple[str | None, list[int]]:
        """(mask name or None, extra ids) a row in state ``st`` may emit next; ``cap``: its frame cap,
        ``text_cap``: its cap on a text segment's tokens."""
        v = self.vocab
        if st.segment >= len(self.template):
            return None, [v.eos_id if v.pad_id is None else v.pad_id, v.eos_id]
        if st.closed:
            return None, [self._terminator(st)]
        if self.template[st.segment] == TEXT:
            if text_cap is not None and st.pos >= text_cap:
                return None, [self._terminator(st)]
            return "text", ([self._terminator(st)] if st.pos > 0 else [])
        if st.pos < 0:
            return None, [v.audio_start_id]
        if st.words is not None:  # forced words (one codebook, flatten)
            if st.word:  # inside a word: its next token
                return None, [st.word[0]]
            capped = cap is not None and st.stream >= cap
            if st.voiced and not capped:  # a word is spoken in one frame at least
                return "units", []
            if st.words and (st.pos == 0 or not capped):  # speech opens with the first word
                return (None if st.pos == 0 else "units"), [st.words[0][0][0]]
            if capped:
                return None, [v.audio_end_id]
            return "units", ([v.audio_end_id] if st.stream > 0 else [])
        k, n = self.k, st.stream
        whole = n > 0 and n % k == 0
        if not self.delay:
            if whole and cap is not None and n // k >= cap:
                return None, [v.audio_end_id]
            return f"q{n % k}", ([v.audio_end_id] if whole else [])
        step, q = divmod(n, k)
        if st.frames is None:
            if step < q:  # leading filler
                return None, [v.audio_pad_id]
            if q == 0 and cap is not None and step >= cap:  # codebook 0 must stop: F = cap
                return None, [v.audio_pad_id]
            if q == 0 and step >= 1:  # codebook 0 may stop here: F = step
                return "q0", [v.audio_pad_id]
            return f"q{q}", []
        if whole and step == st.frames + k - 1:  # all (F + k - 1) steps done
            return None, [v.audio_end_id]
        frame = step - q
        return (f"q{q}", []) if 0 <= frame < st.frames else (None, [v.audio_pad_id])

    def _feed(self, st: _RowState, token: int) -> None:
        """Advance ``st`` by one emitted token (which the mask allowed)."""
        v = self.vocab
        if st.segment >= len(self.template):
            return
        if st.closed or (self.template[st.segment] == TEXT and token in (v.sep_id, v.eos_id)):
            st.segment, st.pos, st.stream, st.frames, st.closed = st.segment + 1, -1, 0, None, False
            st.words, st.word = None, []
            return
        if self.template[st.segment] == TEXT:
            if self.words:  # a chain's speech says the text just written
                st.text = [token] if st.pos <= 0 else [*st.text, token]
            st.pos = max(st.pos, 0) + 1
            return
        if st.pos < 0:  # <|audio_start|>
            st.pos = 0
            st.words = self._words_to_say(st)
            return
        if token == v.audio_end_id:
            st.closed = True
            return
        if self.words and not v.is_audio(token) and token != v.audio_pad_id:  # a word's text: not a frame
            if st.words is not None:
                if not st.word:
                    ids, st.lettered = st.words.pop(0)
                    st.word = list(ids)
                st.word.pop(0)
                st.voiced = not st.word and st.lettered
            st.pos += 1
            return
        if self.delay and st.frames is None and token == v.audio_pad_id:
            step, q = divmod(st.stream, self.k)
            if q == 0 and step >= 1:
                st.frames = step
        st.stream += 1
        st.pos += 1
        st.voiced = False

    def _words_to_say(self, st: _RowState) -> list | None:
        """At ``<|audio_start|>``: the words this speech segment must say, each as (its ids, whether it has a
        letter), or None (free)."""
        if not self.words:
            return None
        given: Sequence[Sequence[int]] | None
        if self._says_text[st.segment]:
            given = speech_words(self.vocab.decode_text(st.text), self.vocab)
        elif self.speech_words is not None and st.segment == 0:
            r = max(len(self._states) // len(self.speech_words), 1)
            given = self.speech_words[min(st.row // r, len(self.speech_words) - 1)]
        else:
            return None
        if given is None:
            return None
        return [(list(w), any(ch.isalpha() for ch in self.vocab.decode_text(w))) for w in given]

    # ---- the processor -----------------------------------------------------------------------
    def _sync(self, input_ids: torch.Tensor) -> None:
        """Bring per-row states up to date with ``input_ids`` [N, L]."""
        prev = self._seen
        incremental = (
            prev is not None
            and prev.shape[0] == input_ids.shape[0]
            and prev.shape[1] + 1 == input_ids.shape[1]
            and torch.equal(input_ids[:, :-1], prev)
        )
        if incremental:
            new = input_ids[:, -1].tolist()
            for st, tok in zip(self._states, new, strict=True):
                self._feed(st, tok)
        else:  # first call, or rows were reordered (beam search): parse from the prompt
            rows = input_ids[:, self.prompt_length :].tolist()
            self._states = [_RowState(row=i) for i in range(len(rows))]
            for st, row in zip(self._states, rows, strict=True):
                for tok in row:
                    self._feed(st, tok)
        self._seen = input_ids

    def _forbidden_row(self, mask_name: str | None, ids: list[int], device: torch.device) -> torch.Tensor:
        """[V] bool, True for the ids a row in this state may not emit (built once per state, then cached)."""
        key = (mask_name, tuple(ids), device)
        row = self._forbidden.get(key)
        if row is None:
            allow = self._masks[mask_name].clone() if mask_name is not None else torch.zeros_like(self._masks["text"])
            if ids:
                allow[ids] = True
            row = self._forbidden[key] = (~allow).to(device)  # [V]
        return row

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.FloatTensor:
        self._sync(input_ids)  # input_ids [N, L], scores [N, V]
        caps, text_caps = self._per_row(self.max_audio_frames), self._per_row(self.max_text_tokens)
        forbid = torch.stack(
            [
                self._forbidden_row(*self._allowed(st, cap, text_cap), scores.device)
                for st, cap, text_cap in zip(self._states, caps, text_caps, strict=True)
            ]
        )  # [N, V]
        # forced words: where the model would begin a word (any word), it begins the next one of the text
        turns = [
            (i, st.words[0][0][0])
            for i, st in enumerate(self._states)
            if st.words
            and not st.word
            and not st.voiced
            and st.pos > 0
            and not st.closed
            and self.template[st.segment] == AUDIO
        ]
        if turns:
            rows, first = (torch.tensor(x, device=scores.device) for x in zip(*turns, strict=True))
            words = self._masks["words"].to(scores.device)
            scores = scores.clone()
            scores[rows, first] = torch.logsumexp(scores[rows][:, words[: scores.shape[1]]], dim=-1)
        return cast(torch.FloatTensor, scores.masked_fill(forbid, float("-inf")))  # (the processor API's type)

    def _per_row(self, caps: Sequence[int | None] | None) -> list[int | None]:
        """One cap per prompt -> one per row (beam search / num_return_sequences: the rows of prompt b are
        b*r .. b*r + r-1)."""
        if caps is None:
            return [None] * len(self._states)
        r = max(len(self._states) // len(caps), 1)
        return [caps[i // r] for i in range(len(self._states))]

    def in_speech(self) -> list[bool]:
        """Per row (as of the last call): True while it is inside an audio stream (after ``<|audio_start|>``,
        before ``<|audio_end|>``), where it picks codes or ends the stream."""
        return [
            st.segment < len(self.template) and self.template[st.segment] == AUDIO and st.pos >= 0 and not st.closed
            for st in self._states
        ]


class SpeechSampler(LogitsProcessor):
    """After :class:`SegmentConstraint` (whose row states it reads), in greedy search: a row inside an audio
    stream (every row, with ``sampling.text``) draws its next token from ``softmax(top-k(scores) /
    temperature)`` and leaves only that token finite; every other row is left as it is, so greedy search
    picks its argmax. Each row has its own
    generator, seeded from ``sampling.seed`` and its prompt, so an input's speech does not depend on the
    batch it is in, and the caller's RNG is never touched."""

    def __init__(self, constraint: SegmentConstraint, sampling: SpeechSampling, prompts: list[list[int]]):
        self.constraint, self.sampling = constraint, sampling
        self.seeds = [
            (sampling.seed * 1_000_003 + zlib.crc32(repr(list(map(int, p))).encode())) % 2**63 for p in prompts
        ]
        self._generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.FloatTensor:
        speech = self.constraint.in_speech()
        if len(speech) != len(self.seeds):
            raise ValueError(
                f"SpeechSampler: {len(speech)} rows for {len(self.seeds)} prompts (one sequence per prompt, no beams)"
            )
        if self._generators is None:
            self._generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        rows = list(range(len(speech))) if self.sampling.text else [i for i, on in enumerate(speech) if on]
        if not rows:
            return cast(torch.FloatTensor, scores)  # (the processor API's type)
        logits = scores[rows].float() / self.sampling.temperature  # [n, V]
        if self.sampling.top_k:  # only the k best take part: draw among them
            logits, ids = logits.topk(min(self.sampling.top_k, logits.shape[-1]), dim=-1)  # [n, k], [n, k]
        else:
            ids = None
        cdf = logits.softmax(-1).cumsum(-1)  # [n, k or V]
        u = torch.stack([torch.rand((), generator=self._generators[i], device=scores.device) for i in rows])  # [n]
        # the first index whose cdf exceeds u: a zero-probability (forbidden) token is never picked
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)  # [n, 1]
        token = pick if ids is None else ids.gather(1, pick)  # [n, 1]
        index = torch.tensor(rows, device=scores.device)
        out = scores.index_fill(0, index, float("-inf"))
        out[index, token[:, 0]] = 0.0
        return cast(torch.FloatTensor, out)  # (the processor API's type)


def split_segments(ids, task: str | TaskSpec, vocab: UnifiedVocab) -> list[str | torch.Tensor]:
    """Generated ids (after the prompt) -> one value per template segment: text, or codes [k, F].

    The ids must follow the template (as :class:`SegmentConstraint` guarantees); an output cut short by
    ``max_new_tokens`` gives only the segments that were completed (an unfinished audio segment is cut to
    its whole frames)."""
    out: list[str | torch.Tensor] = []
    for kind, seg in _segments(ids, task, vocab):
        if kind == TEXT:
            out.append(vocab.decode_text(seg).strip())
        else:
            if vocab.layout.output_words:  # the words written between the units: not sound
                keep = (vocab.audio_start_id, vocab.audio_end_id, vocab.audio_pad_id)
                seg = [i for i in seg if vocab.is_audio(i) or i in keep]
            if seg[-1] != vocab.audio_end_id:  # cut short: keep whole frames (flatten only)
                stream = seg[1:]
                stream = stream[: len(stream) - len(stream) % vocab.num_codebooks]
                seg = [vocab.audio_start_id, *stream, vocab.audio_end_id]
            out.append(vocab.ids_to_audio(seg))  # [k, F]
    return out


def _segments(ids, task: str | TaskSpec, vocab: UnifiedVocab) -> list[tuple[str, list[int]]]:
    """Generated ids -> (kind, ids) of each template segment present (separators dropped); an audio segment is
    checked to open with ``<|audio_start|>``."""
    ids = [int(i) for i in ids]
    out: list[tuple[str, list[int]]] = []
    at = 0
    for kind, _ in output_template(task):
        if at >= len(ids):
            break
        ends = [j for j in range(at, len(ids)) if ids[j] in (vocab.sep_id, vocab.eos_id)]
        end = ends[0] if ends else len(ids)
        seg = ids[at:end]
        if kind != TEXT and (not seg or seg[0] != vocab.audio_start_id):
            raise ValueError(f"audio segment does not start with <|audio_start|>: {seg[:5]}")
        out.append((kind, seg))
        at = end + 1
    return out


def speech_word_spans(ids, task: str | TaskSpec, vocab: UnifiedVocab) -> list[list[tuple[str, int]]]:
    """Generated ids of speech written word by word (``output_words``) -> per audio segment of the template, the
    (word, frame at which its units start) of each word written in it, in order (what a letter-reading acoustic
    stage reads, :mod:`audiopalm.acoustic.letters`). A word's text is its tokens decoded; a word written after the
    last frame starts at the segment's frame count. Empty lists where the vocabulary does not write words."""
    out: list[list[tuple[str, int]]] = []
    for kind, seg in _segments(ids, task, vocab):
        if kind == TEXT:
            continue
        spans: list[tuple[str, int]] = []
        if vocab.layout.output_words:
            pending: list[int] = []
            audio = 0  # audio tokens so far
            special = (vocab.audio_start_id, vocab.audio_end_id, vocab.audio_pad_id)
            for i in seg:
                if vocab.is_audio(i) or i == vocab.audio_pad_id:
                    if pending:
                        spans.append((vocab.decode_text(pending).strip(), audio // vocab.num_codebooks))
                        pending = []
                    audio += 1
                elif i not in special:
                    pending.append(i)
            if pending:
                spans.append((vocab.decode_text(pending).strip(), audio // vocab.num_codebooks))
        out.append(spans)
    return out


@torch.no_grad()
def generate(
    model,
    vocab: UnifiedVocab,
    prompts: list[list[int]],
    task: str | TaskSpec,
    *,
    max_new_tokens: int = 256,
    constrained: bool = True,
    max_audio_frames: Sequence[int | None] | None = None,
    speech_sampling: SpeechSampling | None = None,
    speech_words: Sequence[Sequence[Sequence[int]] | None] | None = None,
    cap_text: bool = True,
    **generate_kwargs,
) -> list[list[int]]:
    """Batched generation from prompt ids (as :func:`audiopalm.data.tasks.prompt_ids` makes them).

    Prompts are left-padded into one batch; decoding uses the KV cache through ``model.generate``
    (greedy by default; pass ``do_sample=True, temperature=..., top_k=..., top_p=...`` or
    ``num_beams=...``). ``max_audio_frames``: a frame cap per prompt on its audio output (see
    :class:`SegmentConstraint`; needs ``constrained``). ``speech_sampling``: sample audio tokens, keep text
    greedy (:class:`SpeechSampling`; needs ``constrained`` and excludes the other decoding options).
    ``speech_words``: per prompt, the words its speech says (a vocabulary with ``output_words``; see
    :class:`SegmentConstraint`). ``cap_text``: end each text segment at :func:`text_token_cap` of its prompt's
    length (needs ``constrained``; False: at ``max_new_tokens`` only). Returns the generated ids of each prompt, up
    to and including eos.
    """
    parse_task(task)
    if not prompts:
        return []
    if max_audio_frames is not None and (not constrained or len(max_audio_frames) != len(prompts)):
        raise ValueError(
            f"max_audio_frames: needs constrained=True and one cap per prompt "
            f"({len(prompts)}), got {len(max_audio_frames)} with constrained={constrained}"
        )
    if speech_sampling is not None:
        clash = sorted(DECODING_KWARGS & set(generate_kwargs))
        if not constrained or clash:
            raise ValueError(
                f"speech_sampling needs constrained=True and decides the decoding itself; got "
                f"constrained={constrained}, {clash or 'no clash'} "
                "(pass speech_sampling=None to use them)"
            )
    device = next(model.parameters()).device
    P = max(len(p) for p in prompts)
    pad = vocab.pad_id
    input_ids = torch.full((len(prompts), P), pad, dtype=torch.long)  # [B, P]
    attention_mask = torch.zeros((len(prompts), P), dtype=torch.long)  # [B, P]
    for b, p in enumerate(prompts):
        input_ids[b, P - len(p) :] = torch.as_tensor(p)
        attention_mask[b, P - len(p) :] = 1
    processors = LogitsProcessorList(generate_kwargs.pop("logits_processor", []))
    if constrained:
        constraint = SegmentConstraint(
            vocab,
            task,
            P,
            model.get_output_embeddings().weight.shape[0],
            max_audio_frames=max_audio_frames,
            speech_words=speech_words,
            max_text_tokens=[text_token_cap(len(p)) for p in prompts] if cap_text else None,
        )
        processors.append(constraint)
        if speech_sampling is not None:  # it draws the audio tokens itself; greedy search takes them
            processors.append(SpeechSampler(constraint, speech_sampling, prompts))
            generate_kwargs.update(do_sample=False, num_beams=1)
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        logits_processor=processors,
        pad_token_id=pad,
        eos_token_id=vocab.eos_id,
        **generate_kwargs,
    )  # [B, P + N]
    results = []
    for row in out[:, P:].tolist():
        if vocab.eos_id in row:
            row = row[: row.index(vocab.eos_id) + 1]
        results.append(row)
    return results
