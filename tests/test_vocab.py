"""UnifiedVocab: id layout, HF round trips of mixed text+audio sequences, save/load checks, masks.

``builders.tiny_text_tokenizer`` (shared with other test modules) builds real Llama / Qwen2 /
GPT-2 tokenizer classes over a byte- or character-level vocabulary, so nothing is downloaded.
"""

import json
import time

import pytest
import torch
from builders import tiny_text_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from audiopalm.data.patterns import PATTERNS
from audiopalm.data.vocab import LAYOUT_NAME, UnifiedVocab, VocabError

TOKENIZER_KINDS = ("llama", "qwen2", "gpt2")


@pytest.fixture(params=TOKENIZER_KINDS)
def text_tok(request):
    return tiny_text_tokenizer(request.param)


def test_layout_and_special_ids(text_tok):
    n = len(text_tok)
    v = UnifiedVocab.build(text_tok, codebook_size=16, num_codebooks=3, pattern="delay")
    assert len(text_tok) == n, "build must not change the caller's tokenizer"
    assert v.audio_offset == n and v.audio_end_offset == n + 48
    assert v.audio_token_id(0, 0) == n and v.audio_token_id(2, 5) == n + 2 * 16 + 5
    assert v.tokenizer.convert_ids_to_tokens(v.audio_token_id(1, 7)) == "<a_1_7>"
    specials = {v.audio_start_id, v.audio_end_id, v.audio_pad_id, v.sep_id}
    assert len(specials) == 4 and all(i >= v.audio_end_offset for i in specials)
    assert v.eos_id == v.tokenizer.eos_token_id and v.pad_id == v.tokenizer.pad_token_id
    assert v.pad_id is not None and v.eos_id is not None
    assert v.bos_id == text_tok.bos_token_id
    # text ids are the text tokenizer's own, kept for the next call (a copy each time), the cache bounded
    assert v.text_ids("the dog.") == text_tok.encode("the dog.", add_special_tokens=False)
    v.text_ids("the dog.").append(-1)
    assert v.text_ids("the dog.") == text_tok.encode("the dog.", add_special_tokens=False)
    v.TEXT_CACHE = 3
    for text in ("a", "b", "c", "d", "a cat."):
        assert v.text_ids(text) == text_tok.encode(text, add_special_tokens=False)
    assert len(v._text_ids) <= 3
    assert v.is_audio(n) and v.is_audio(n + 47) and not v.is_audio(n - 1) and not v.is_audio(v.audio_start_id)
    with pytest.raises(VocabError, match=r"\(codebook 3, code 0\) outside"):
        v.audio_token_id(3, 0)


def test_gpt2_gets_a_pad_token_qwen2_keeps_its_own():
    gpt2 = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=1)
    assert gpt2.tokenizer.pad_token == "<|pad|>" and gpt2.pad_id != gpt2.eos_id
    qwen = UnifiedVocab.build(tiny_text_tokenizer("qwen2"), codebook_size=4, num_codebooks=1)
    assert qwen.tokenizer.pad_token == "<|endoftext|>" and qwen.bos_id is None


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_audio_ids_round_trip(pattern):
    v = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=10, num_codebooks=2, pattern=pattern)
    codes = torch.tensor([[1, 2, 3], [4, 5, 9], [7, 7, 7]])  # third codebook unused (first-k)
    ids = v.audio_to_ids(codes)
    assert ids[0] == v.audio_start_id and ids[-1] == v.audio_end_id
    off = v.audio_offset
    if pattern == "flatten":
        assert ids[1:-1] == [off + 1, off + 14, off + 2, off + 15, off + 3, off + 19]
    else:
        p = v.audio_pad_id
        assert ids[1:-1] == [off + 1, p, off + 2, off + 14, off + 3, off + 15, p, off + 19]
    assert torch.equal(v.ids_to_audio(ids), codes[:2])
    assert torch.equal(v.ids_to_audio(ids[1:-1]), codes[:2])  # start/end optional


def test_ids_to_audio_rejects_bad_segments():
    v = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=10, num_codebooks=2)
    ids = v.audio_to_ids(torch.tensor([[1, 2], [3, 4]]))
    with pytest.raises(VocabError, match="position 1 of the audio segment holds id 5"):
        v.ids_to_audio(ids[1:2] + [5] + ids[3:-1])
    with pytest.raises(VocabError, match="ends with id"):
        v.ids_to_audio(ids[:-1])
    with pytest.raises(VocabError, match="malformed audio segment: .*not a multiple"):
        v.ids_to_audio(ids[1:-2])


def _mixed_ids(v):
    """text, an audio segment, text, a second audio segment with the same codes twice, eos."""
    a1 = v.audio_to_ids(torch.tensor([[0, 3, 3], [1, 1, 2]]))
    a2 = v.audio_to_ids(torch.tensor([[2, 2], [0, 0]]))
    return (
        v.text_ids("[ASR English]")
        + a1
        + [v.sep_id]
        + v.text_ids("the cat")
        + [v.sep_id]
        + a2
        + v.text_ids("le chien.")
        + [v.eos_id]
    )


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_mixed_sequence_decodes_and_reencodes_to_same_ids(text_tok, pattern, tmp_path):
    v = UnifiedVocab.build(text_tok, codebook_size=4, num_codebooks=2, pattern=pattern)
    ids = _mixed_ids(v)
    s = v.tokenizer.decode(ids)
    if pattern == "flatten":
        assert "<|audio_start|><a_0_0><a_1_1><a_0_3><a_1_1><a_0_3><a_1_2><|audio_end|><|sep|>" in s, s
    else:
        assert "<|audio_start|><a_0_0><|audio_pad|><a_0_3><a_1_1>" in s, s
    assert v.tokenizer.encode(s, add_special_tokens=False) == ids, s
    assert v.decode_text(ids).replace(" ", "") == "[ASREnglish]thecatlechien."
    # and through a plain AutoTokenizer load of the saved vocabulary
    v.save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(plain) == len(v) and plain.encode(s, add_special_tokens=False) == ids
    assert plain.decode(ids) == s


def test_save_load_round_trip(tmp_path):
    v = UnifiedVocab.build(
        tiny_text_tokenizer("llama"), codebook_size=8, num_codebooks=2, pattern="delay", tasks=["ASR", "TTS"]
    )
    v.save_pretrained(tmp_path)
    layout = json.loads((tmp_path / LAYOUT_NAME).read_text())
    assert layout["audio_offset"] == v.audio_offset and layout["pattern"] == "delay"
    assert layout["special_tokens"]["audio_start"] == {"token": "<|audio_start|>", "id": v.audio_start_id}
    w = UnifiedVocab.from_pretrained(tmp_path)
    assert w.layout == v.layout and w.tasks == ["ASR", "TTS"]
    assert (w.tokenizer.pad_token, w.tokenizer.pad_token_id) == (
        "<|pad|>",
        v.pad_id,
    ) and w.tokenizer.bos_token_id == v.bos_id
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert w.audio_to_ids(codes) == v.audio_to_ids(codes)


def test_load_detects_disagreement(tmp_path):
    v = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=8, num_codebooks=2)
    v.save_pretrained(tmp_path)
    path = tmp_path / LAYOUT_NAME
    layout = json.loads(path.read_text())
    bad = dict(layout, special_tokens=dict(layout["special_tokens"], sep={"token": "<|sep|>", "id": v.sep_id + 1}))
    path.write_text(json.dumps(bad))
    with pytest.raises(VocabError, match=r"disagree: special token sep '<\|sep\|>' has id \d+, expected"):
        UnifiedVocab.from_pretrained(tmp_path)
    path.write_text(json.dumps(dict(layout, codebook_size=9, vocab_size=layout["vocab_size"] + 2)))
    with pytest.raises(VocabError, match="disagree: len.tokenizer. is"):
        UnifiedVocab.from_pretrained(tmp_path)
    tok_cfg = tmp_path / "tokenizer_config.json"
    saved = tok_cfg.read_text()
    tok_cfg.write_text(json.dumps(dict(json.loads(saved), pad_token="<|sep|>")))
    path.write_text(json.dumps(layout))
    with pytest.raises(VocabError, match=r"tokenizer.pad_token_id is \d+, expected \d+ \('<\|pad\|>'\)"):
        UnifiedVocab.from_pretrained(tmp_path)
    tok_cfg.write_text(saved)
    path.write_text(json.dumps(dict(layout, pattern="zigzag")))
    with pytest.raises(VocabError, match="pattern: unknown 'zigzag'"):
        UnifiedVocab.from_pretrained(tmp_path)
    path.write_text(json.dumps(dict(layout, colour="red")))
    with pytest.raises(VocabError, match=r"unknown field\(s\) \['colour'\]"):
        UnifiedVocab.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="audiopalm.json: no such file"):
        UnifiedVocab.from_pretrained(tmp_path / "nowhere")


def test_masks():
    v = UnifiedVocab.build(tiny_text_tokenizer("qwen2"), codebook_size=4, num_codebooks=2)
    size = len(v) + 5  # a model's padded embedding
    text, audio, cb1 = v.text_mask(size), v.audio_mask(size), v.codebook_mask(1, size)
    assert text.shape == audio.shape == cb1.shape == (size,)
    assert text.sum() == v.audio_offset and audio.sum() == 8 and cb1.sum() == 4
    assert not (text & audio).any() and cb1[v.audio_token_id(1, 0)] and not cb1[v.audio_token_id(0, 3)]
    assert not text[v.audio_start_id] and not audio[v.audio_start_id] and not text[len(v) :].any()


def test_adding_2k_audio_tokens_is_quick():
    tok = tiny_text_tokenizer("llama")
    t0 = time.perf_counter()
    v = UnifiedVocab.build(tok, codebook_size=1024, num_codebooks=2)
    seconds = time.perf_counter() - t0
    assert len(v) == len(tok) + 2048 + 4 + 1  # audio + 4 specials + <|pad|> (llama has none)
    assert seconds < 5.0, f"building a 2k-token vocabulary took {seconds:.2f}s"


def test_build_checks_audio_tokenizer_fit():
    with pytest.raises(VocabError, match="give codebook_size and num_codebooks"):
        UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=8)


WORDS = ["the", "dog", "sleeps.", "le", "chien", "dort,", "pequeño", "Hund", "[ASR", "English]", "é", "42"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mixed_sequences_round_trip(data, text_tok):
    """Random interleavings of text, audio segments and special tokens decode and re-encode to the same ids."""
    pattern = data.draw(st.sampled_from(sorted(PATTERNS)))
    v = _vocab_for(text_tok, pattern)
    ids: list[int] = []
    previous = None
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["audio", "special"] + (["text"] if previous != "text" else [])))
        if kind == "text":
            ids += v.text_ids(" ".join(data.draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4))))
        elif kind == "audio":
            frames = data.draw(st.integers(1, 4))
            codes = data.draw(
                st.lists(st.lists(st.integers(0, 3), min_size=frames, max_size=frames), min_size=2, max_size=2)
            )
            ids += v.audio_to_ids(codes)
        else:
            ids.append(data.draw(st.sampled_from([v.sep_id, v.eos_id, v.audio_pad_id, v.audio_start_id])))
        previous = kind
    s = v.tokenizer.decode(ids)
    assert v.tokenizer.encode(s, add_special_tokens=False) == ids, s


_VOCABS: dict = {}


def _vocab_for(text_tok, pattern):
    key = (type(text_tok).__name__, pattern)
    if key not in _VOCABS:
        _VOCABS[key] = UnifiedVocab.build(text_tok, codebook_size=4, num_codebooks=2, pattern=pattern)
    return _VOCABS[key]
