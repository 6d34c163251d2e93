"""Task rendering: exact sequences per task (decoded and compared as strings), label masks, chains, errors."""

from collections import Counter

import numpy as np
import pytest
import torch
from builders import tiny_text_tokenizer

from audiopalm.data.tasks import (
    IGNORE_INDEX,
    TASKS,
    TaskError,
    TaskSpec,
    output_template,
    parse_task,
    prompt_ids,
    render,
    tag_lines,
    target_ids,
)
from audiopalm.data.vocab import UnifiedVocab, VocabError

A_SRC = "<|audio_start|><a_0_1><a_1_3><a_0_2><a_1_0><|audio_end|>"  # audio_codes, flatten, 2 codebooks
A_TGT = "<|audio_start|><a_0_0><a_1_3><a_0_1><a_1_3><a_0_2><a_1_3><|audio_end|>"  # tgt_audio_codes
EOS = "<|endoftext|>"


def record(**changes):
    rec = {
        "id": "en-0001",
        "lang": "en",
        "text": "the dog sleeps.",
        "audio": "wav/en-0001.wav",
        "tgt_lang": "fr",
        "tgt_text": "le chien dort.",
        "tgt_audio": "wav/fr-0001.wav",
        "audio_codes": [[1, 2], [3, 0], [7, 7]],  # nested lists; third codebook unused
        "tgt_audio_codes": np.array([[0, 1, 2], [3, 3, 3], [5, 5, 5]]),
    }
    rec.update(changes)
    return rec


@pytest.fixture(scope="module")
def vocab():
    return UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=2, pattern="flatten")


EXPECTED = {  # prompt | target, as the tokenizer decodes them
    "ASR": ("[ASR English]" + A_SRC + "<|sep|>", "the dog sleeps." + EOS),
    "AST": ("[AST English French]" + A_SRC + "<|sep|>", "le chien dort." + EOS),
    "S2ST": ("[S2ST English French]" + A_SRC + "<|sep|>", A_TGT + EOS),
    "TTS": ("[TTS English] the dog sleeps.<|sep|>", A_SRC + EOS),
    "MT": ("[MT English French] the dog sleeps.<|sep|>", "le chien dort." + EOS),
    "ASR AST S2ST": (
        "[ASR AST S2ST English French]" + A_SRC + "<|sep|>",
        "the dog sleeps.<|sep|>le chien dort.<|sep|>" + A_TGT + EOS,
    ),
    "ASR AST": ("[ASR AST English French]" + A_SRC + "<|sep|>", "the dog sleeps.<|sep|>le chien dort." + EOS),
    "MT TTS": ("[MT TTS English French] the dog sleeps.<|sep|>", "le chien dort.<|sep|>" + A_SRC + EOS),
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_exact_rendered_sequences_and_labels(task, vocab):
    ex = render(record(), task, vocab, max_len=256)
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    n_prompt = sum(1 for lab in labels if lab == IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    want_prompt, want_target = EXPECTED[task]
    assert vocab.tokenizer.decode(ids[:n_prompt]) == want_prompt
    assert vocab.tokenizer.decode(ids[n_prompt:]) == want_target
    assert prompt_ids(record(), task, vocab) == ids[:n_prompt]
    assert ids[-1] == vocab.eos_id and ids[n_prompt - 1] == vocab.sep_id


def test_audio_segments_invert_to_the_record_codes(vocab):
    ex = render(record(), "ASR AST S2ST", vocab, max_len=256)
    ids = ex["input_ids"]
    starts = [i for i, t in enumerate(ids) if t == vocab.audio_start_id]
    ends = [i for i, t in enumerate(ids) if t == vocab.audio_end_id]
    src, tgt = (vocab.ids_to_audio(ids[s : e + 1]) for s, e in zip(starts, ends, strict=True))
    assert torch.equal(src, torch.tensor([[1, 2], [3, 0]]))
    assert torch.equal(tgt, torch.tensor([[0, 1, 2], [3, 3, 3]]))


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_read_span_is_the_input_audio_and_its_transcript(task, vocab):
    """``read=True`` marks the input audio segment and the words spoken in it, for the reading loss; the rendered
    sequence is the same with or without it."""
    plain = render(record(), task, vocab, max_len=256)
    ex = render(record(), task, vocab, max_len=256, read=True)
    assert ex["input_ids"] == plain["input_ids"] and ex["labels"] == plain["labels"] and "read" not in plain
    if parse_task(task).input_segment[0] == "text":
        assert "read" not in ex
        return
    lo, hi, words = ex["read"]
    assert vocab.tokenizer.decode(ex["input_ids"][lo:hi]) == A_SRC
    assert all(lab == IGNORE_INDEX for lab in ex["labels"][lo:hi])
    assert words == vocab.text_ids("the dog sleeps.")
    # a row that holds no transcript of its audio reads nothing (and still renders)
    assert "read" not in render(record(text=None), "S2ST", vocab, max_len=256, read=True)


def test_prompt_needs_only_input_fields(vocab):
    rec = {"id": "x", "lang": "en", "audio_codes": [[1, 2], [3, 0]], "tgt_lang": "fr"}
    assert vocab.tokenizer.decode(prompt_ids(rec, "S2ST", vocab)) == EXPECTED["S2ST"][0]


def test_input_dedup_collapses_runs_of_the_input_audio_only(tmp_path):
    """``input_dedup``: the prompt's audio is read one token per run of a repeated unit; speech the model writes
    (the S2ST target) keeps every frame; a TTS target too."""
    v = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=1, input_dedup=True)
    rec = record(audio_codes=[[1, 1, 2, 2, 2, 1, 3]], tgt_audio_codes=[[0, 0, 3, 3]])
    ex = render(rec, "S2ST", v, max_len=256)
    text = v.tokenizer.decode(ex["input_ids"])
    src = "<|audio_start|><a_0_1><a_0_2><a_0_1><a_0_3><|audio_end|>"
    tgt = "<|audio_start|><a_0_0><a_0_0><a_0_3><a_0_3><|audio_end|>"
    assert text == f"[S2ST English French]{src}<|sep|>{tgt}{EOS}", text
    assert v.tokenizer.decode(render(rec, "TTS", v, max_len=256)["input_ids"]).endswith(
        "<|audio_start|><a_0_1><a_0_1><a_0_2><a_0_2><a_0_2><a_0_1><a_0_3><|audio_end|>" + EOS
    )
    frames = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=1)
    assert len(prompt_ids(rec, "ASR", frames)) - len(prompt_ids(rec, "ASR", v)) == 3  # 7 frames -> 4 runs
    v.save_pretrained(tmp_path)  # audiopalm.json records it: a loaded checkpoint reads audio the same way
    assert prompt_ids(rec, "ASR", UnifiedVocab.from_pretrained(tmp_path)) == prompt_ids(rec, "ASR", v)
    with pytest.raises(VocabError, match="input_dedup: needs one codebook"):
        UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=2, input_dedup=True)


def test_bos_comes_first_when_the_tokenizer_has_one():
    v = UnifiedVocab.build(tiny_text_tokenizer("llama"), codebook_size=4, num_codebooks=2, pattern="delay")
    ex = render(record(), "ASR", v, max_len=256)
    assert ex["input_ids"][0] == v.bos_id == v.tokenizer.bos_token_id
    s = v.tokenizer.decode(ex["input_ids"])
    assert s.startswith("<s>") and "<|audio_pad|>" in s and s.endswith("the dog sleeps.</s>"), s


def test_output_template_and_parse():
    assert output_template("asr ast s2st") == [("text", "text"), ("text", "tgt_text"), ("audio", "tgt_audio_codes")]
    assert output_template("TTS") == [("audio", "audio_codes")]
    spec = parse_task("ASR AST")
    assert spec == TaskSpec(("ASR", "AST")) and spec.tag("de", "es") == "[ASR AST German Spanish]"
    assert parse_task(spec) is spec and set(TASKS) == {"ASR", "AST", "TTS", "S2ST", "MT"}
    assert parse_task("S2ST").fields == ["lang", "tgt_lang", "audio_codes", "tgt_audio_codes"]


@pytest.mark.parametrize(
    "task, message",
    [
        ("ASRX", "unknown task 'ASRX'"),
        ("ASR TTS", "chained tasks must share one input"),
        ("ASR ASR", "repeats an output"),
        ("", "expected a task name"),
    ],
)
def test_bad_tasks(task, message, vocab):
    with pytest.raises(TaskError, match=message):
        render(record(), task, vocab, max_len=256, skip=Counter())  # a skip counter never hides a bad task


def test_missing_field_names_record_task_and_field(vocab):
    rec = record(tgt_audio_codes=None, tgt_audio=None)
    with pytest.raises(TaskError) as e:
        render(rec, "S2ST", vocab, max_len=256)
    assert "record 'en-0001', task 'S2ST', field 'tgt_audio_codes': missing" in str(e.value)
    assert (e.value.record_id, e.value.task, e.value.field) == ("en-0001", "S2ST", "tgt_audio_codes")
    with pytest.raises(TaskError, match="field 'tgt_lang'"):
        render(record(tgt_lang=None), "AST", vocab, max_len=256)
    with pytest.raises(TaskError, match="field 'lang': unknown language 'xx'"):
        render(record(lang="xx"), "ASR", vocab, max_len=256)
    with pytest.raises(
        TaskError, match=r"field 'audio_codes': expected audio codes \[K, F\] with F >= 1, got shape \(2, 0\)"
    ):
        render(record(audio_codes=[[], []]), "ASR", vocab, max_len=256)
    with pytest.raises(TaskError, match=r"field 'audio_codes': codes must be in \[0, 4\)"):
        render(record(audio_codes=[[1, 9], [0, 0]]), "ASR", vocab, max_len=256)


def test_too_long_is_an_error_or_a_counted_skip_never_a_truncation(vocab):
    n = len(render(record(), "ASR AST S2ST", vocab, max_len=256)["input_ids"])
    assert render(record(), "ASR AST S2ST", vocab, max_len=n) is not None
    with pytest.raises(TaskError, match=rf"record 'en-0001', task 'ASR AST S2ST': {n} tokens .* > max_len {n - 1}"):
        render(record(), "ASR AST S2ST", vocab, max_len=n - 1)
    skip = Counter[str]()
    assert render(record(), "ASR AST S2ST", vocab, max_len=n - 1, skip=skip) is None
    assert render(record(tgt_audio_codes=None), "S2ST", vocab, max_len=256, skip=skip) is None
    assert render(record(tgt_audio_codes=None), "S2ST", vocab, max_len=256, skip=skip) is None
    assert skip == Counter({"ASR AST S2ST: too long": 1, "S2ST: missing tgt_audio_codes": 2})


def test_tag_lines_cover_every_tag_word():
    lines = tag_lines()
    words = {w for line in lines for w in line.strip("[]").split()}
    spec = parse_task("ASR AST S2ST")
    assert set(spec.tag("en", "fr").strip("[]").split()) <= words and set(TASKS) <= words
    assert len(lines) == len(set(lines)) and all(line.startswith("[") and line.endswith("]") for line in lines)


def test_speaks_is_whether_an_output_is_speech():
    assert [parse_task(t).speaks for t in ("ASR", "AST", "MT", "ASR AST", "TTS", "S2ST", "ASR AST S2ST")] == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


def test_output_words_writes_each_word_before_the_units_that_speak_it(tmp_path):
    """``output_words``: a speech output holds each word's text, then its frames (the record's word starts); the
    prompt and text outputs are unchanged, and the written words are dropped when the speech is read back."""
    from audiopalm.inference.generation import split_segments

    v = UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=1, output_words=True)
    rec = record(
        audio_codes=[[1, 1, 2, 3, 3]],
        audio_words=[0, 2, 3],  # the, dog, sleeps.
        tgt_audio_codes=[[0, 2, 2, 1]],
        tgt_audio_words=[0, 1, 4],  # le, chien, dort. (no frames: an alignment can give a word none)
    )
    tts = v.tokenizer.decode(render(rec, "TTS", v, max_len=256)["input_ids"])
    speech = "<|audio_start|> the<a_0_1><a_0_1> dog<a_0_2> sleeps.<a_0_3><a_0_3><|audio_end|>"
    assert tts == f"[TTS English] the dog sleeps.<|sep|>{speech}{EOS}", tts
    chained = v.tokenizer.decode(render(rec, "ASR AST S2ST", v, max_len=256)["input_ids"])
    tgt = "<|audio_start|> le<a_0_0> chien<a_0_2><a_0_2><a_0_1> dort.<|audio_end|>"
    src = "<|audio_start|><a_0_1><a_0_1><a_0_2><a_0_3><a_0_3><|audio_end|>"  # the input: frames only
    assert chained == f"[ASR AST S2ST English French]{src}<|sep|>the dog sleeps.<|sep|>le chien dort.<|sep|>{tgt}{EOS}"
    text, translation, codes = split_segments(target_ids(rec, "ASR AST S2ST", v), "ASR AST S2ST", v)
    assert (text, translation) == ("the dog sleeps.", "le chien dort.")
    assert isinstance(codes, torch.Tensor) and torch.equal(codes, torch.tensor([[0, 2, 2, 1]]))
    v.save_pretrained(tmp_path)  # audiopalm.json records it: the pipeline reads the speech the same way
    assert UnifiedVocab.from_pretrained(tmp_path).layout.output_words
    # a record without word starts, or with starts that do not fit its words and frames: an error naming it
    skips: Counter = Counter()
    bare = record(audio_codes=[[1, 1, 2, 3, 3]])
    assert render(bare, "TTS", v, max_len=256, skip=skips) is None
    assert skips == Counter({"TTS: no audio_words": 1})
    with pytest.raises(TaskError, match="tokenize with --words"):
        render(bare, "TTS", v, max_len=256)
    for starts in ([0, 2], [0, 3, 2], [0, 2, 6]):
        with pytest.raises(TaskError, match="word starts"):
            render(record(audio_codes=[[1, 1, 2, 3, 3]], audio_words=starts), "TTS", v, max_len=256)
    assert render(bare, "ASR", v, max_len=256)  # reading needs no word starts
    with pytest.raises(VocabError, match="output_words: needs one codebook"):
        UnifiedVocab.build(tiny_text_tokenizer("gpt2"), codebook_size=4, num_codebooks=2, output_words=True)
