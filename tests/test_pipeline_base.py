"""The shared pipeline base (audiopalm/inference/base.py): both pipelines answer the same requests the same way,
and a Speech-Llama run is loaded only when its save finished (as an AudioPaLM checkpoint is)."""

import numpy as np
import pytest
from builders import make_checkpoint, tiny_config, tiny_llm, tiny_tokenizer, tone

from audiopalm import AudioPaLM, SpeechLlamaPipeline
from audiopalm.inference.base import Output, PipelineError, SpeechTextPipeline
from audiopalm.modeling.extend import COMPLETE_MARKER, CheckpointError, atomic_folder
from audiopalm.modeling.speech_llama import SpeechLlama

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft probes it; not ours
]


def _save_speech_llama(folder, llm_dir) -> None:
    model = SpeechLlama.from_config(tiny_config(), base_model=str(llm_dir))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)


@pytest.fixture(scope="module")
def speech_llama_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_llama_run")
    tiny_llm().save_pretrained(root / "llm")
    with atomic_folder(root / "final") as tmp:
        _save_speech_llama(tmp, root / "llm")
    return root


@pytest.fixture(scope="module")
def pipes(speech_llama_run, tmp_path_factory):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("audiopalm") / "ckpt")
    return AudioPaLM.from_pretrained(ckpt, device="cpu"), SpeechLlamaPipeline.from_pretrained(
        speech_llama_run, device="cpu"
    )


def test_both_pipelines_share_the_base(pipes):
    for pipe in pipes:
        assert isinstance(pipe, SpeechTextPipeline)
        assert type(pipe).asr is SpeechTextPipeline.asr and type(pipe).ast is SpeechTextPipeline.ast


def test_speech_llama_run_with_an_unfinished_save_is_refused(speech_llama_run, tmp_path):
    _save_speech_llama(tmp_path / "final", speech_llama_run / "llm")  # written in place: no completion marker
    with pytest.raises(CheckpointError, match=COMPLETE_MARKER):
        SpeechLlamaPipeline.from_pretrained(tmp_path, device="cpu")
    (tmp_path / "final" / COMPLETE_MARKER).write_text("{}\n")
    assert SpeechLlamaPipeline.from_pretrained(tmp_path, device="cpu").tasks == ["ASR", "AST"]


def test_speech_llama_asr_one_in_one_out_list_in_list_out(pipes):
    pipe = pipes[1]
    wav = tone(0.5, 300, sr=pipe.sample_rate)
    one = pipe.asr(wav, lang="en", max_new_tokens=3)
    assert isinstance(one, Output) and isinstance(one.text, str) and one.translation is None and len(one.ids) <= 3
    many = pipe.ast([wav, wav[: len(wav) // 2]], src="en", tgt="fr", max_new_tokens=3, batch_size=1)
    assert [type(o) for o in many] == [Output, Output] and all(o.text is None for o in many)
    assert many[0].translation == pipe.ast(wav, src="en", tgt="fr", max_new_tokens=3).translation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, w: p.asr(w, lang="xx"), "src: unknown language 'xx'"),
        (lambda p, w: p.asr(w), "give the language of the input (lang= / src=), one of: ar, bn, ca"),
        (lambda p, w: p.ast(w, src="en"), "give the target language (tgt=), one of: ar, bn, ca"),
        (lambda p, w: p.ast(w, src="en", tgt="en"), "src and tgt are both 'en'"),
        (lambda p, w: p.generate("AST", w, "en"), "give the target language"),
        (lambda p, w: p.generate("ASR", w, "en", "fr"), "does not translate"),
        (lambda p, w: p.asr(3.0, lang="en"), "inputs: expected text, a waveform"),
        (lambda p, w: p.asr([w, 3.0], lang="en"), "input 1: expected a waveform"),
        (lambda p, w: p.asr(np.zeros(0, dtype=np.float32), lang="en"), "input 0"),
        (lambda p, w: p.generate("XYZ", w, "en"), "XYZ"),
    ],
)
def test_both_pipelines_refuse_a_bad_request_with_the_same_words(pipes, call, message):
    errors = []
    for pipe in pipes:
        with pytest.raises(PipelineError) as info:
            call(pipe, tone(0.5, 300, sr=pipe.sample_rate))
        errors.append(str(info.value))
    assert message in errors[0], errors
    assert errors[0] == errors[1]


def test_speech_llama_refuses_a_speech_output_task(pipes):
    with pytest.raises(PipelineError, match="only does ASR, AST"):
        pipes[1].generate("TTS", "the cat", "en")


def test_output_to_dict_gives_the_hugging_face_pipeline_keys():
    assert Output(task="ASR", text="the cat").to_dict() == {"text": "the cat"}
    assert Output(task="MT", translation="le chat").to_dict() == {"translation_text": "le chat"}
    wav = np.zeros(8, dtype=np.float32)
    tts = Output(task="TTS", codes=None, audio=wav, sample_rate=16000).to_dict()
    assert tts.keys() == {"audio", "sampling_rate"} and tts["audio"] is wav and tts["sampling_rate"] == 16000
    chain = Output(task="ASR AST S2ST", text="a", translation="b", audio=wav, sample_rate=24000).to_dict()
    assert chain.keys() == {"text", "translation_text", "audio", "sampling_rate"}
    assert Output(task="TTS", finished=False).to_dict() == {}  # cut short before a whole frame: nothing to give


def test_call_runs_the_task_it_is_named(pipes):
    for pipe in pipes:
        wav = tone(0.5, 300, sr=pipe.sample_rate)
        expected = pipe.asr(wav, lang="en", max_new_tokens=3)
        assert pipe("asr", wav, lang="en", max_new_tokens=3) == expected  # the method of that name, its keywords
        assert pipe("ASR", wav, "en", max_new_tokens=3) == expected
        with pytest.raises(PipelineError, match="XYZ"):
            pipe("xyz", wav, "en")
    audiopalm = pipes[0]
    chain = audiopalm("asr ast", tone(0.5, 300), "en", "fr", max_new_tokens=8)  # any chain, through generate
    assert chain.task == "ASR AST"


def test_a_language_left_out_is_taken_from_what_the_checkpoint_was_trained_on(tmp_path):
    import json

    ckpt = make_checkpoint(tmp_path / "ckpt")
    layout = json.loads((ckpt / "audiopalm.json").read_text())
    layout["task_languages"] = {"ASR": ["en"], "AST": ["en-de", "en-fr"], "TTS": ["en", "fr"], "MT": ["fr-en"]}
    (ckpt / "audiopalm.json").write_text(json.dumps(layout))
    pipe = AudioPaLM.from_pretrained(ckpt, device="cpu")
    wav = tone(0.5, 300, sr=pipe.sample_rate)
    assert pipe.asr(wav, max_new_tokens=3).ids == pipe.asr(wav, lang="en", max_new_tokens=3).ids
    assert pipe.mt("le chat", max_new_tokens=3).ids == pipe.mt("le chat", src="fr", tgt="en", max_new_tokens=3).ids
    with pytest.raises(
        PipelineError, match=r"give the target language \(tgt=\); this model was trained on en to: de, fr"
    ):
        pipe.ast(wav, src="en")
    with pytest.raises(
        PipelineError, match=r"give the language of the input \(lang= / src=\); this model was trained on: en, fr"
    ):
        pipe.tts("the cat")
