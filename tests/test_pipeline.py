"""audiopalm.inference.pipeline: a tiny random checkpoint saved with save_checkpoint and loaded by
AudioPaLM.from_pretrained."""

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from builders import SR, TASKS, TinyCodec, make_checkpoint, tone

from audiopalm.audio import io as audio_io
from audiopalm.data.tasks import parse_task
from audiopalm.inference.pipeline import AudioPaLM, Output, PipelineError
from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread


class PushToEnd(transformers.LogitsProcessor):
    """Raise the logits of segment ends, so a random model finishes its outputs within a small budget."""

    def __init__(self, vocab, boost: float = 6.0):
        self.ids, self.boost = [vocab.sep_id, vocab.eos_id, vocab.audio_end_id, vocab.audio_pad_id], boost

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += self.boost
        return scores


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def pipe(ckpt):
    return AudioPaLM.from_pretrained(ckpt, device="cpu")


def test_loads_everything(pipe, ckpt):
    assert pipe.sample_rate == SR and pipe.tasks == TASKS
    assert pipe.max_length == 512
    assert isinstance(pipe.audio_tokenizer, MelRVQTokenizer)
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        AudioPaLM.from_pretrained(ckpt / "missing")
    with pytest.raises(FileNotFoundError, match="fetching it from the Hugging Face hub failed"):
        AudioPaLM.from_pretrained("nobody/no-such-model")  # HF_HUB_OFFLINE=1 in tests


def test_each_method_returns_the_right_fields(pipe, tmp_path):
    wav = tone(0.6, 300)
    path = audio_io.save(tmp_path / "a.wav", tone(0.6, 300, 8000), 8000)  # a file at another rate
    kw = {"max_new_tokens": 12}
    asr = pipe.asr(wav, "en", **kw)
    assert isinstance(asr, Output) and isinstance(asr.text, str) and asr.translation is None and asr.audio is None
    assert asr.task == "ASR" and len(asr.ids) <= 12
    assert isinstance(pipe.asr(str(path), "en", **kw).text, str)
    ast = pipe.ast(torch.from_numpy(wav), "en", "fr", **kw)
    assert isinstance(ast.translation, str) and ast.text is None
    mt = pipe.mt("the dog.", "en", "de", **kw)
    assert isinstance(mt.translation, str) and mt.codes is None
    # greedy speech: this random model never ends it, so max_new_tokens sets its length
    tts = pipe.tts("the dog.", "en", max_new_tokens=21, speech_sampling=None)  # <|audio_start|> + 20 tokens = 10 frames
    assert tts.codes.shape == (2, 10) and tts.codes.dtype == torch.long and int(tts.codes.max()) < 16
    assert tts.sample_rate == SR and tts.audio.dtype == np.float32 and tts.audio.ndim == 1
    assert tts.audio.size == pytest.approx(10 * 640, abs=640)  # 640 samples per frame (hop 160 x stack 4)
    assert tts.text is None and tts.translation is None and not tts.finished
    direct = pipe.s2st(wav, "en", "fr", chained=False, max_new_tokens=9, speech_sampling=None)
    assert direct.task == "S2ST" and direct.codes.shape == (2, 4) and direct.text is None
    chained = pipe.s2st(wav, "en", "fr", max_new_tokens=60, logits_processor=[PushToEnd(pipe.vocab)])
    assert chained.task == "ASR AST S2ST" and chained.finished, chained
    assert isinstance(chained.text, str) and isinstance(chained.translation, str)
    assert chained.codes.shape[0] == 2 and chained.audio.size == chained.codes.shape[1] * 640


def test_list_in_list_out_and_batched_equals_one_by_one(pipe):
    wavs = [tone(0.4, 200), tone(0.9, 500), tone(0.6, 700)]
    batched = pipe.generate("ASR AST", wavs, "en", "es", max_new_tokens=16, batch_size=2)
    assert isinstance(batched, list) and len(batched) == 3
    single = [pipe.generate("ASR AST", w, "en", "es", max_new_tokens=16) for w in wavs]
    assert [o.ids for o in batched] == [o.ids for o in single]
    texts = ["the dog.", "a cat runs fast."]
    tts_b = pipe.tts(texts, "en", max_new_tokens=15)
    tts_1 = [pipe.tts(t, "en", max_new_tokens=15) for t in texts]
    for b, s in zip(tts_b, tts_1, strict=True):
        assert torch.equal(b.codes, s.codes) and np.allclose(b.audio, s.audio)


def test_one_generate_call_per_batch(pipe, monkeypatch):
    calls: list[torch.Size] = []
    original = pipe.model.generate

    def generate(*a, **k):
        calls.append(k["input_ids"].shape)
        return original(*a, **k)

    monkeypatch.setattr(pipe.model, "generate", generate)
    pipe.mt(["a.", "b.", "c.", "d.", "e."], "en", "fr", batch_size=2, max_new_tokens=3)
    assert [s[0] for s in calls] == [2, 2, 1]


def test_clear_errors(pipe, ckpt):
    with pytest.raises(PipelineError, match="unknown language 'xx'"):
        pipe.asr(tone(0.3, 100), "xx")
    with pytest.raises(PipelineError, match="give the target language"):
        pipe.ast(tone(0.3, 100), "en", None)
    with pytest.raises(PipelineError, match="does not translate"):
        pipe.generate("ASR", tone(0.3, 100), "en", "fr")
    with pytest.raises(PipelineError, match="empty audio"):
        pipe.asr(np.zeros(0, np.float32), "en")
    with pytest.raises(PipelineError, match="no such audio file"):
        pipe.asr("/nonexistent/x.wav", "en")
    with pytest.raises(PipelineError, match="empty text"):
        pipe.tts("  ", "en")
    with pytest.raises(PipelineError, match="takes text"):
        pipe.tts(tone(0.3, 100), "en")
    with pytest.raises(PipelineError, match="unknown task 'FOO'"):
        pipe.generate("FOO", "x", "en")
    with pytest.raises(PipelineError, match=r"prompt is \d+ tokens, but the model's context is 512"):
        pipe.mt("the dog sleeps. " * 60, "en", "fr")


def test_untrained_task_warns_and_undecodable_audio_is_refused(tmp_path):
    class Undecodable(TinyCodec):
        type_name = "tiny_undecodable"
        can_decode = property(lambda self: False)

    from audiopalm.tokenizers import base

    base.TOKENIZERS["tiny_undecodable"] = f"{__name__}:_Undecodable"
    globals()["_Undecodable"] = Undecodable
    try:
        ckpt = make_checkpoint(tmp_path / "ckpt", tasks=["ASR"], audio_tokenizer=Undecodable())
        pipe = AudioPaLM.from_pretrained(ckpt, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe.asr(np.ones(32, np.float32) * 0.1, "en", sample_rate=16, max_new_tokens=2)  # trained: no warning
        with pytest.warns(UserWarning, match="not among the tasks this checkpoint was trained on"):
            pipe.mt("ab.", "en", "fr", max_new_tokens=2)
        with pytest.raises(PipelineError, match="cannot turn codes back into audio"):
            pipe.tts("ab.", "en")
    finally:
        del base.TOKENIZERS["tiny_undecodable"]


def test_save_pretrained_round_trips(pipe, tmp_path):
    out = pipe.save_pretrained(tmp_path / "copy")
    again = AudioPaLM.from_pretrained(out, device="cpu")
    assert again.audio_tokenizer.fingerprint == pipe.audio_tokenizer.fingerprint
    assert again.vocab.layout == pipe.vocab.layout
    for (n1, p1), (n2, p2) in zip(pipe.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    a = pipe.mt("the cat.", "en", "fr", max_new_tokens=8)
    b = again.mt("the cat.", "en", "fr", max_new_tokens=8)
    assert a.ids == b.ids


def test_push_to_hub_builds_the_upload(pipe, monkeypatch):
    import huggingface_hub

    calls: list[tuple[Any, ...]] = []  # (method, its arguments ...)

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["private"], kw["exist_ok"]))

        def upload_folder(self, *, folder_path, repo_id, **kw):
            from pathlib import Path

            names = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload", repo_id, names, kw["commit_message"]))
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert pipe.push_to_hub("me/tiny", private=True, token="t") == "commit-info"
    assert calls[0] == ("init", "t") and calls[1] == ("create", "me/tiny", True, True)
    kind, repo, names, msg = calls[2]
    assert repo == "me/tiny" and {"audiopalm.json", "config.json", "model.safetensors", "audio_tokenizer"} <= set(names)


def test_delay_pattern_speech_and_a_cut_short_output(tmp_path):
    pipe = AudioPaLM.from_pretrained(make_checkpoint(tmp_path / "delay", pattern="delay"), device="cpu")
    torch.manual_seed(0)
    done = pipe.tts("the dog.", "en", max_new_tokens=80, logits_processor=[PushToEnd(pipe.vocab, boost=2.0)])
    assert done.finished and done.codes.shape[0] == 2 and done.codes.shape[1] >= 1, done
    assert done.audio.size == done.codes.shape[1] * 640
    cut = pipe.tts("the dog.", "en", max_new_tokens=4)  # <|audio_start|> + 3 stream slots: an unfinished delay stream
    assert not cut.finished and cut.ids[0] == pipe.vocab.audio_start_id and len(cut.ids) == 4


def test_speech_outputs_end_at_a_length_set_by_their_input(pipe):
    from audiopalm.inference.pipeline import MIN_SPEECH_SECONDS, SPEECH_LENGTH_RATIO, SPEECH_SECONDS_PER_CHAR

    rate = pipe.audio_tokenizer.frame_rate  # 25 frames/s
    never_end = PushToEnd(pipe.vocab, boost=-100.0)  # a model that never ends its speech by itself
    text = "the small dog sleeps under the old table."  # 41 characters -> 8.2 s at most
    tts = pipe.tts(text, "en", logits_processor=[never_end])
    assert tts.finished and tts.codes.shape[1] == math.ceil(SPEECH_SECONDS_PER_CHAR * len(text) * rate)
    short = pipe.tts("a.", "en", logits_processor=[never_end])  # 0.4 s -> the 1 s floor
    assert short.finished and short.codes.shape[1] == math.ceil(MIN_SPEECH_SECONDS * rate)
    wav = tone(0.6, 300)
    frames_in = pipe.encode_audio(wav).shape[1]
    s2st = pipe.s2st(wav, "en", "fr", chained=False, logits_processor=[never_end])
    assert s2st.finished and s2st.codes.shape[1] == math.ceil(SPEECH_LENGTH_RATIO * frames_in)
    capped = pipe.tts("the dog.", "en", max_new_tokens=101, logits_processor=[never_end])  # cap 1.6 s: 40 frames
    free = pipe.tts("the dog.", "en", max_new_tokens=101, cap_speech=False, logits_processor=[never_end])
    assert capped.finished and capped.codes.shape[1] == 40
    assert not free.finished and free.codes.shape[1] == 50  # only max_new_tokens stops it
    assert pipe.speech_frame_caps(parse_task("ASR AST"), [{"audio_codes": torch.zeros(2, 5)}]) is None


def test_speech_is_sampled_by_default_text_is_greedy(pipe):
    from audiopalm.inference.generation import SpeechSampling
    from audiopalm.inference.pipeline import SPEECH_SAMPLING, PipelineError

    with torch.no_grad():  # the new audio rows start equal: break the ties of this random model's code logits
        saved = pipe.model.get_output_embeddings().weight.clone()
        pipe.model.get_output_embeddings().weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    try:
        texts = ["the dog.", "a cat runs fast."]
        sampled = pipe.tts(texts, "en", max_new_tokens=41)
        again = pipe.tts(texts, "en", max_new_tokens=41)
        assert all(
            torch.equal(a.codes, b.codes) for a, b in zip(sampled, again, strict=True)
        )  # seeded: the same speech
        greedy = pipe.tts(texts, "en", max_new_tokens=41, speech_sampling=None)
        assert any(not torch.equal(a.codes, b.codes) for a, b in zip(sampled, greedy, strict=True))
        # the same default, reached explicitly, and an input alone gives the speech it gave in a batch
        assert torch.equal(
            pipe.tts(texts[1], "en", max_new_tokens=41, speech_sampling=SPEECH_SAMPLING).codes, sampled[1].codes
        )
        # the caller's decoding options win over the default; with an explicit sampling they clash
        beams = pipe.tts(texts[0], "en", max_new_tokens=41, num_beams=2)
        assert torch.equal(
            beams.codes, pipe.tts(texts[0], "en", max_new_tokens=41, speech_sampling=None, num_beams=2).codes
        )
        with pytest.raises(PipelineError, match="both choose the decoding"):
            pipe.tts(texts[0], "en", speech_sampling=SpeechSampling(temperature=0.9), do_sample=True)
        # chained S2ST: transcript and translation are greedy search's
        wav = tone(0.6, 300)
        kw = {"max_new_tokens": 60, "logits_processor": [PushToEnd(pipe.vocab)]}
        s, g = pipe.s2st(wav, "en", "fr", **kw), pipe.s2st(wav, "en", "fr", speech_sampling=None, **kw)
        assert (s.text, s.translation) == (g.text, g.translation)
    finally:
        with torch.no_grad():
            pipe.model.get_output_embeddings().weight.copy_(saved)


def test_the_default_speech_sampling_is_the_checkpoints_own(pipe, monkeypatch):
    """Speech written frame by frame is drawn at SPEECH_SAMPLING by default, speech written word by word at the
    colder WORDED_SPEECH_SAMPLING; the default the pipeline reports is the one its outputs are drawn with."""
    import dataclasses
    import types

    from audiopalm.inference.generation import SpeechSampling
    from audiopalm.inference.pipeline import SPEECH_SAMPLING, WORDED_SPEECH_SAMPLING

    assert WORDED_SPEECH_SAMPLING.temperature < SPEECH_SAMPLING.temperature
    assert pipe.default_speech_sampling(3) == dataclasses.replace(SPEECH_SAMPLING, seed=3)
    monkeypatch.setattr(pipe.vocab, "layout", types.SimpleNamespace(output_words=True))  # what the choice reads
    assert pipe.default_speech_sampling() == WORDED_SPEECH_SAMPLING
    monkeypatch.undo()
    with torch.no_grad():  # break the ties of this random model's new audio rows
        saved = pipe.model.get_output_embeddings().weight.clone()
        pipe.model.get_output_embeddings().weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    try:  # whatever the default is, an output drawn without a speech_sampling is drawn with it
        hot = SpeechSampling(temperature=3.0, top_k=0, seed=5)
        monkeypatch.setattr(type(pipe), "default_speech_sampling", lambda self, seed=0: hot)
        texts = ["the dog.", "a cat runs fast.", "my red car."]
        default = pipe.tts(texts, "en", max_new_tokens=41)
        assert all(
            torch.equal(a.codes, b.codes)
            for a, b in zip(default, pipe.tts(texts, "en", max_new_tokens=41, speech_sampling=hot), strict=True)
        )
        usual = pipe.tts(texts, "en", max_new_tokens=41, speech_sampling=dataclasses.replace(SPEECH_SAMPLING))
        assert any(not torch.equal(a.codes, b.codes) for a, b in zip(default, usual, strict=True))
    finally:
        with torch.no_grad():
            pipe.model.get_output_embeddings().weight.copy_(saved)


@pytest.mark.parametrize("name", ["runs/tiny_ckpt", "./ckpt", "/no/such/ckpt", "~/ckpt", "a/b/c", "EXISTS/ckpt"])
def test_a_local_looking_name_is_never_fetched(name, tmp_path, monkeypatch):
    """A checkpoint path that does not exist but looks local (or whose first folder exists here) is refused
    before any hub request: it used to become an unpinned hub download of whatever repo has that name."""
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    (tmp_path / "EXISTS").mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail(f"hub request for {a}"))
    with pytest.raises(ValueError, match="looks like a local path"):
        AudioPaLM.from_pretrained(name)


def test_checkpoint_without_tokenizer_json_or_with_truncated_weights(ckpt, tmp_path):
    import shutil

    broken = tmp_path / "no_tok"
    shutil.copytree(ckpt, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"no_tok: no tokenizer.json \(the text tokenizer\)"):
        AudioPaLM.from_pretrained(broken)
    cut = tmp_path / "cut"
    shutil.copytree(ckpt, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: truncated or corrupt safetensors file"):
        AudioPaLM.from_pretrained(cut)


def test_do_sample_batched_equals_one_by_one(pipe):
    """HF do_sample=True through the pipeline used transformers' batch-wide generator: an input's sampled
    output depended on what was batched with it. It now goes through the seeded per-input sampler."""
    from audiopalm.inference.pipeline import PipelineError

    with torch.no_grad():  # a random model whose new rows start equal: spread its logits so sampling shows
        saved = pipe.model.get_output_embeddings().weight.clone()
        pipe.model.get_output_embeddings().weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    try:
        texts = ["the dog sleeps.", "a cat runs fast.", "the bird sings."]
        kw = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.5, "top_k": 0}
        batched = pipe.mt(texts, "en", "fr", batch_size=3, **kw)
        alone = [pipe.mt(t, "en", "fr", **kw) for t in texts]
        assert [o.translation for o in batched] == [o.translation for o in alone]
        greedy = pipe.mt(texts, "en", "fr", max_new_tokens=12)
        assert [o.translation for o in batched] != [o.translation for o in greedy]  # it did sample
        tts_b = pipe.tts(texts[:2], "en", max_new_tokens=30, batch_size=2, do_sample=True, temperature=1.2)
        tts_a = [pipe.tts(t, "en", max_new_tokens=30, do_sample=True, temperature=1.2) for t in texts[:2]]
        assert all(torch.equal(a.codes, b.codes) for a, b in zip(tts_b, tts_a, strict=True))
        with pytest.raises(PipelineError, match=r"do_sample=True with \['top_p'\]"):
            pipe.mt(texts[0], "en", "fr", do_sample=True, top_p=0.9)
    finally:
        with torch.no_grad():
            pipe.model.get_output_embeddings().weight.copy_(saved)
