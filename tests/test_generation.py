"""audiopalm.inference.generation: constrained decoding always follows the task's output template."""

from collections.abc import Sequence
from typing import TypedDict

import pytest
import torch
import transformers
from builders import tiny_text_tokenizer

from audiopalm.data.tasks import prompt_ids
from audiopalm.data.vocab import UnifiedVocab
from audiopalm.inference.generation import SegmentConstraint, SpeechSampling, generate, split_segments
from audiopalm.modeling.extend import extend_model


def _setup(pattern="flatten", k=2, seed=0, output_words=False):
    torch.manual_seed(seed)
    vocab = UnifiedVocab.build(
        tiny_text_tokenizer("llama"), codebook_size=16, num_codebooks=k, pattern=pattern, output_words=output_words
    )
    cfg = transformers.LlamaConfig(
        vocab_size=len(vocab.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = extend_model(transformers.LlamaForCausalLM(cfg), vocab).eval()
    return model, vocab


class _PushToEnd(transformers.LogitsProcessor):
    """Raise the logits of every segment end, so a random model tries to end segments everywhere
    (also where the template forbids it) and its outputs finish within a small budget."""

    def __init__(self, vocab):
        self.ids = [vocab.sep_id, vocab.eos_id, vocab.audio_end_id, vocab.audio_pad_id]

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += 4.0
        return scores


def _record(frames, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "id": "r",
        "lang": "en",
        "tgt_lang": "fr",
        "text": "the dog.",
        "audio_codes": torch.randint(0, 16, (k, frames), generator=g),
    }


@pytest.mark.parametrize(
    "pattern,k,task",
    [
        ("flatten", 2, "ASR AST S2ST"),
        ("flatten", 2, "TTS"),
        ("flatten", 1, "S2ST"),
        ("delay", 3, "ASR AST S2ST"),
        ("delay", 3, "TTS"),
    ],
)
def test_sampled_outputs_always_follow_the_template(pattern, k, task):
    model, vocab = _setup(pattern, k)
    prompts = [prompt_ids(_record(f, k, seed=f), task, vocab) for f in (3, 5, 4)]
    for seed in range(2):
        torch.manual_seed(seed)
        outs = generate(
            model, vocab, prompts, task, max_new_tokens=150, do_sample=True, logits_processor=[_PushToEnd(vocab)]
        )
        for out in outs:
            assert out[-1] == vocab.eos_id, out[-5:]  # finished within the budget with eos
            segments = split_segments(out, task, vocab)  # raises on any malformed segment
            kinds = ["audio" if isinstance(s, torch.Tensor) else "text" for s in segments]
            assert kinds == (["text", "text", "audio"] if task == "ASR AST S2ST" else ["audio"])
            for s in segments:
                if isinstance(s, torch.Tensor):
                    assert s.shape[0] == k and s.shape[1] >= 1 and int(s.max()) < 16, s.shape


def test_unconstrained_random_model_breaks_the_template():
    """The check above can fail: without the processor a random model does not follow the template."""
    model, vocab = _setup()
    prompts = [prompt_ids(_record(4), "S2ST", vocab)]
    torch.manual_seed(0)
    out = generate(model, vocab, prompts, "S2ST", max_new_tokens=40, do_sample=True, constrained=False)[0]
    with pytest.raises((ValueError, AssertionError)):  # a segment out of template, or none
        segs = split_segments(out, "S2ST", vocab)
        assert segs and out[-1] == vocab.eos_id


def test_batched_equals_one_by_one_greedy():
    model, vocab = _setup()
    prompts = [prompt_ids(_record(f, seed=f), "ASR AST S2ST", vocab) for f in (2, 7, 4)]
    batched = generate(model, vocab, prompts, "ASR AST S2ST", max_new_tokens=60)
    single = [generate(model, vocab, [p], "ASR AST S2ST", max_new_tokens=60)[0] for p in prompts]
    assert batched == single


def test_static_cache_gives_the_dynamic_caches_greedy_outputs():
    """``cache_implementation="static"`` (what a compiled decoding step needs) passes through ``generate`` and
    decodes exactly the ids of the default dynamic cache: left-padded batch, constrained, speech sampled too."""
    model, vocab = _setup()
    prompts = [prompt_ids(_record(f, seed=f), "ASR AST S2ST", vocab) for f in (2, 7, 4)]
    for sampling in (None, SpeechSampling(top_k=4)):
        push = [_PushToEnd(vocab)]
        dynamic = generate(
            model, vocab, prompts, "ASR AST S2ST", max_new_tokens=60, speech_sampling=sampling, logits_processor=push
        )
        static = generate(
            model,
            vocab,
            prompts,
            "ASR AST S2ST",
            max_new_tokens=60,
            speech_sampling=sampling,
            logits_processor=push,
            cache_implementation="static",
        )
        assert static == dynamic
        assert any(vocab.is_audio(i) for out in dynamic for i in out)  # the audio segment was reached


def test_beam_search_text_task():
    model, vocab = _setup()
    prompts = [prompt_ids(_record(3), "ASR", vocab), prompt_ids(_record(5, seed=1), "ASR", vocab)]
    outs = generate(model, vocab, prompts, "ASR", max_new_tokens=20, num_beams=3)
    for out in outs:
        (text,) = split_segments(out, "ASR", vocab)
        assert isinstance(text, str)
        assert not any(vocab.is_audio(i) for i in out)
        assert vocab.sep_id not in out


def test_flatten_audio_end_only_at_frame_boundaries():
    model, vocab = _setup(k=2)
    proc = SegmentConstraint(vocab, "TTS", prompt_length=0, vocab_size=len(vocab))
    scores = torch.zeros(1, len(vocab))

    def a(q, c):
        return vocab.audio_token_id(q, c)

    seq = [vocab.audio_start_id]
    out = proc(torch.tensor([seq]), scores)
    assert torch.isfinite(out[0]).sum() == 16 and torch.isfinite(out[0, a(0, 0) : a(0, 16 - 1) + 1]).all()
    seq.append(a(0, 3))
    out = proc(torch.tensor([seq]), scores)  # half a frame: only codebook 1, no end
    assert torch.isfinite(out[0, a(1, 0) : a(1, 15) + 1]).all() and out[0, vocab.audio_end_id] == float("-inf")
    seq.append(a(1, 5))
    out = proc(torch.tensor([seq]), scores)  # a whole frame: codebook 0 or end
    assert out[0, vocab.audio_end_id] == 0 and torch.isfinite(out[0]).sum() == 17
    seq.append(vocab.audio_end_id)
    out = proc(torch.tensor([seq]), scores)  # TTS has one segment: eos only
    assert torch.isfinite(out[0]).sum() == 1 and out[0, vocab.eos_id] == 0


def test_output_words_allow_text_inside_speech_that_does_not_count_as_frames():
    """A vocabulary that writes speech word by word: inside the stream a word's text or a unit, never a segment
    end; the frame cap counts units only; generated outputs read back as their units alone."""
    model, vocab = _setup(k=1, output_words=True)
    proc = SegmentConstraint(vocab, "TTS", prompt_length=0, vocab_size=len(vocab), max_audio_frames=[2])
    scores = torch.zeros(1, len(vocab))
    word = vocab.text_ids(" dog")[0]
    seq = [vocab.audio_start_id]
    out = proc(torch.tensor([seq]), scores)  # a word or a unit; no end before a frame
    assert out[0, word] == 0 and out[0, vocab.audio_token_id(0, 3)] == 0
    assert all(out[0, i] == float("-inf") for i in (vocab.audio_end_id, vocab.sep_id, vocab.eos_id))
    for token in (word, vocab.audio_token_id(0, 3), word, vocab.audio_token_id(0, 4)):
        assert proc(torch.tensor([seq]), scores)[0, token] == 0
        seq.append(token)
    out = proc(torch.tensor([seq]), scores)  # two frames (the cap), two words: only the end
    assert torch.isfinite(out[0]).sum() == 1 and out[0, vocab.audio_end_id] == 0
    prompts = [prompt_ids(_record(3, k=1, seed=s), "S2ST", vocab) for s in (0, 1)]
    outs = generate(
        model, vocab, prompts, "S2ST", max_new_tokens=40, max_audio_frames=[3, 3], speech_sampling=SpeechSampling()
    )
    for ids in outs:
        (codes,) = split_segments(ids, "S2ST", vocab)
        assert isinstance(codes, torch.Tensor) and ids[-1] == vocab.eos_id
        assert codes.shape[0] == 1 and 1 <= codes.shape[1] <= 3, ids
        units = [i for i in ids if vocab.is_audio(i)]
        assert codes[0].tolist() == [i - vocab.audio_offset for i in units]


def _said(ids, vocab):
    """The text written inside the audio segment of generated ids."""
    start = ids.index(vocab.audio_start_id)
    return vocab.decode_text([i for i in ids[start:] if not vocab.is_audio(i)]).strip()


def test_forced_words_are_said_in_order_each_with_a_unit_and_the_end_waits_for_them():
    from audiopalm.data.tasks import speech_words

    model, vocab = _setup(k=1, output_words=True)
    text = "the dog sleeps ."
    words = speech_words(text, vocab)
    proc = SegmentConstraint(vocab, "TTS", prompt_length=0, vocab_size=len(vocab), speech_words=[words])
    scores = torch.randn(1, len(vocab))
    seq = [vocab.audio_start_id]
    out = proc(torch.tensor([seq]), scores)  # speech opens with the first word
    assert torch.isfinite(out[0]).sum() == 1 and torch.isfinite(out[0, words[0][0]])
    seq += words[0]
    out = proc(torch.tensor([seq]), scores)  # a word with letters: a unit before anything else
    assert torch.isfinite(out[0]).sum() == 16 and bool(torch.isfinite(out[0, vocab.audio_token_id(0, 0) :][:16]).all())
    seq.append(vocab.audio_token_id(0, 5))
    out = proc(torch.tensor([seq]), scores)  # a unit or the next word, which takes the score of writing any text
    assert torch.isfinite(out[0]).sum() == 17 and out[0, vocab.audio_end_id] == float("-inf")
    assert torch.isclose(out[0, words[1][0]], torch.logsumexp(scores[0, proc._masks["words"]], 0))
    for w in words[1:]:
        seq += [*w, vocab.audio_token_id(0, 1)]
    out = proc(torch.tensor([seq]), scores)  # every word said: units or the end
    assert torch.isfinite(out[0]).sum() == 17 and torch.isfinite(out[0, vocab.audio_end_id])
    # generation: TTS says the given words; a chain's speech says the translation it wrote; caps still end speech
    prompts = [prompt_ids({"lang": "en", "text": t}, "TTS", vocab) for t in ("the dog sleeps .", "a cat")]
    given = [speech_words(t, vocab) for t in ("the dog sleeps .", "a cat")]
    outs = generate(
        model, vocab, prompts, "TTS", max_new_tokens=80, speech_sampling=SpeechSampling(), speech_words=given
    )
    for o, t in zip(outs, ("the dog sleeps .", "a cat"), strict=True):
        assert o[-1] == vocab.eos_id and _said(o, vocab) == t, vocab.tokenizer.decode(o)
    capped = generate(model, vocab, prompts, "TTS", max_new_tokens=80, max_audio_frames=[2, 2], speech_words=given)
    for o in capped:
        (codes,) = split_segments(o, "TTS", vocab)
        assert isinstance(codes, torch.Tensor) and codes.shape[1] <= 2 and o[-1] == vocab.eos_id
    chain = [prompt_ids(_record(4, k=1, seed=s), "ASR AST S2ST", vocab) for s in (0, 1)]
    chained = generate(model, vocab, chain, "ASR AST S2ST", max_new_tokens=120, logits_processor=[_PushToEnd(vocab)])
    assert all(o[-1] == vocab.eos_id for o in chained)
    for o in chained:
        _, translation, _ = split_segments(o, "ASR AST S2ST", vocab)
        assert isinstance(translation, str) and _said(o, vocab) == " ".join(translation.split()), (
            vocab.tokenizer.decode(o)
        )
    plain = UnifiedVocab.build(tiny_text_tokenizer("llama"), codebook_size=16, num_codebooks=1)
    with pytest.raises(ValueError, match="output_words is off"):
        SegmentConstraint(plain, "TTS", prompt_length=0, vocab_size=len(plain), speech_words=[words])


class _NeverEnd(transformers.LogitsProcessor):
    """Lower the logits of every way to end audio, so a random model never ends its speech by itself."""

    def __init__(self, vocab):
        self.ids = [vocab.audio_end_id, vocab.audio_pad_id]

    def __call__(self, input_ids, scores):
        scores[:, self.ids] -= 100.0
        return scores


@pytest.mark.parametrize("pattern,k", [("flatten", 2), ("delay", 3)])
def test_audio_frame_cap_ends_each_row_at_its_own_cap(pattern, k):
    model, vocab = _setup(pattern, k)
    prompts = [prompt_ids(_record(f, k, seed=f), "S2ST", vocab) for f in (3, 5)]
    budget = 60
    free = generate(model, vocab, prompts, "S2ST", max_new_tokens=budget, logits_processor=[_NeverEnd(vocab)])
    assert all(len(o) == budget and o[-1] != vocab.eos_id for o in free)  # without caps: runs to the budget
    capped = generate(
        model,
        vocab,
        prompts,
        "S2ST",
        max_new_tokens=budget,
        max_audio_frames=[2, 5],
        logits_processor=[_NeverEnd(vocab)],
    )
    for out, cap in zip(capped, (2, 5), strict=True):
        assert out[-1] == vocab.eos_id, out[-5:]
        (codes,) = split_segments(out, "S2ST", vocab)
        assert isinstance(codes, torch.Tensor) and codes.shape == (k, cap), codes
    # the cap only closes the segment: up to it the tokens are the uncapped run's
    assert capped[0][1 : 1 + 2 * k] == free[0][1 : 1 + 2 * k]


def test_audio_frame_cap_with_beam_search_and_chains():
    model, vocab = _setup("flatten", 2)
    prompts = [prompt_ids(_record(f, seed=f), "ASR AST S2ST", vocab) for f in (3, 4)]
    outs = generate(
        model,
        vocab,
        prompts,
        "ASR AST S2ST",
        max_new_tokens=80,
        num_beams=2,
        max_audio_frames=[1, 3],
        logits_processor=[_NeverEnd(vocab), _PushToEnd(vocab)],
    )
    for out, cap in zip(outs, (1, 3), strict=True):
        text, translation, codes = split_segments(out, "ASR AST S2ST", vocab)
        assert out[-1] == vocab.eos_id and isinstance(codes, torch.Tensor) and codes.shape == (2, cap)
    with pytest.raises(ValueError, match="one cap per prompt"):
        generate(model, vocab, prompts, "S2ST", max_audio_frames=[2])
    with pytest.raises(ValueError, match=">= 1"):
        generate(model, vocab, prompts, "S2ST", max_audio_frames=[2, 0])


def _chained_prompts(vocab, k=2):
    return [prompt_ids(_record(f, k, seed=f), "ASR AST S2ST", vocab) for f in (3, 5, 4)]


class GenerateKwargs(TypedDict):
    """The :func:`generate` keywords that a test's calls share."""

    max_new_tokens: int
    max_audio_frames: Sequence[int | None]


def _as_codes(segment: str | torch.Tensor) -> torch.Tensor:
    """An audio segment of :func:`split_segments`: codes [k, F]."""
    assert isinstance(segment, torch.Tensor), segment
    return segment


def _distinct_rows(model):
    """New audio rows start equal (the mean text row), so a random model's code logits tie; break the ties."""
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    return model


def test_speech_sampling_keeps_text_greedy_and_samples_audio():
    model, vocab = _setup()
    model = _distinct_rows(model)
    prompts, task, caps = _chained_prompts(vocab), "ASR AST S2ST", [6, 6, 6]
    kw = GenerateKwargs(max_new_tokens=120, max_audio_frames=caps)  # and a new _PushToEnd for each call
    greedy = generate(model, vocab, prompts, task, logits_processor=[_PushToEnd(vocab)], **kw)
    state = torch.random.get_rng_state()
    runs = {
        seed: generate(
            model,
            vocab,
            prompts,
            task,
            speech_sampling=SpeechSampling(temperature=1.5, seed=seed),
            logits_processor=[_PushToEnd(vocab)],
            **kw,
        )
        for seed in (0, 1)
    }
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is not touched
    codes: dict[tuple[int, int], torch.Tensor] = {}  # (seed, prompt) -> speech codes
    for seed, outs in runs.items():
        for b, (out, ref) in enumerate(zip(outs, greedy, strict=True)):
            text, translation, audio = split_segments(out, task, vocab)
            assert [text, translation] == split_segments(ref, task, vocab)[:2]  # text: exactly greedy search
            codes[seed, b] = _as_codes(audio)
    greedy_codes = [_as_codes(split_segments(o, task, vocab)[2]) for o in greedy]
    # the speech is drawn: it differs from greedy and between seeds
    assert any(not torch.equal(codes[0, b], greedy_codes[b]) for b in range(3))
    assert any(not torch.equal(codes[0, b], codes[1, b]) for b in range(3))
    # ... and is the same for the same seed, alone or in another batch
    alone = generate(
        model,
        vocab,
        prompts[2:],
        task,
        max_new_tokens=kw["max_new_tokens"],
        max_audio_frames=caps[2:],
        speech_sampling=SpeechSampling(temperature=1.5, seed=0),
        logits_processor=[_PushToEnd(vocab)],
    )
    assert alone[0] == runs[0][2]


def test_speech_sampling_top_1_is_greedy_and_bad_settings_are_refused():
    model, vocab = _setup("delay", 3)
    model = _distinct_rows(model)
    prompts = _chained_prompts(vocab, k=3)
    kw = GenerateKwargs(max_new_tokens=120, max_audio_frames=[4, 4, 4])
    greedy = generate(model, vocab, prompts, "ASR AST S2ST", logits_processor=[_PushToEnd(vocab)], **kw)
    top1 = generate(
        model,
        vocab,
        prompts,
        "ASR AST S2ST",
        logits_processor=[_PushToEnd(vocab)],
        speech_sampling=SpeechSampling(temperature=3.0, top_k=1),
        **kw,
    )
    assert top1 == greedy
    with pytest.raises(ValueError, match="temperature"):
        SpeechSampling(temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        SpeechSampling(top_k=-1)
    with pytest.raises(ValueError, match="num_beams"):
        generate(model, vocab, prompts, "S2ST", speech_sampling=SpeechSampling(), num_beams=2)
    with pytest.raises(ValueError, match="constrained"):
        generate(model, vocab, prompts, "S2ST", speech_sampling=SpeechSampling(), constrained=False)


class _Repeat(transformers.LogitsProcessor):
    """Raise one text token far above the rest, so greedy search writes it over and over (a loop), and the segment
    ends (``_PushToEnd``'s ids) above every other token, so a speech segment closes soon."""

    def __init__(self, vocab, token):
        self.token, self.ends = token, [vocab.sep_id, vocab.eos_id, vocab.audio_end_id]

    def __call__(self, input_ids, scores):
        scores[:, self.ends] += 50.0
        scores[:, self.token] += 100.0
        return scores


@pytest.mark.parametrize("task", ["MT", "ASR AST S2ST"])
def test_a_text_loop_ends_at_the_prompts_text_cap(task):
    """A model that would write one word without end: every text segment (the chain's transcript and translation
    alike) holds exactly text_token_cap(prompt length) tokens and the output still ends with eos; with
    cap_text=False it runs to max_new_tokens."""
    from audiopalm.inference.generation import text_token_cap

    model, vocab = _setup(k=1)
    word = vocab.text_ids(" dog")[0]
    records = [_record(f, k=1, seed=f) | {"text": t} for f, t in ((3, "the dog."), (9, "a big cat is here."))]
    prompts = [prompt_ids(rec, task, vocab) for rec in records]
    assert len(set(map(len, prompts))) == 2  # two caps
    outs = generate(model, vocab, prompts, task, max_new_tokens=200, logits_processor=[_Repeat(vocab, word)])
    for p, out in zip(prompts, outs, strict=True):
        cap = text_token_cap(len(p))
        if task == "MT":
            assert out == [word] * cap + [vocab.eos_id]
        else:  # transcript, <|sep|>, translation, <|sep|>, speech, eos
            assert out[: 2 * cap + 2] == [word] * cap + [vocab.sep_id] + [word] * cap + [vocab.sep_id]
            assert out[-1] == vocab.eos_id and len(split_segments(out, task, vocab)) == 3
    free = generate(
        model, vocab, prompts, task, max_new_tokens=200, logits_processor=[_Repeat(vocab, word)], cap_text=False
    )
    assert all(len(out) == 200 and vocab.eos_id not in out for out in free)


def test_the_text_cap_leaves_only_the_segments_end():
    model, vocab = _setup(k=1)
    proc = SegmentConstraint(vocab, "MT", prompt_length=0, vocab_size=len(vocab), max_text_tokens=[2])
    scores = torch.zeros(1, len(vocab))
    word = vocab.text_ids(" dog")[0]
    assert proc(torch.tensor([[word]]), scores)[0, word] == 0  # one token: text or the end
    out = proc(torch.tensor([[word, word]]), scores)  # two (the cap): the end only
    assert torch.isfinite(out[0]).sum() == 1 and out[0, vocab.eos_id] == 0
    with pytest.raises(ValueError, match="max_text_tokens: expected caps >= 1"):
        SegmentConstraint(vocab, "MT", prompt_length=0, vocab_size=len(vocab), max_text_tokens=[0])
