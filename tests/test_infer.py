"""audiopalm generate: a checkpoint on audio files and sentences, text printed, speech written as wav."""

import io
import json

import numpy as np
import pytest
from builders import SR, make_checkpoint, tone

from audiopalm.audio import io as audio_io
from audiopalm.commands.generate import read_inputs
from audiopalm.commands.main import main
from audiopalm.inference.pipeline import AudioPaLM

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    wavs = []
    for name, f in (("a", 220), ("b", 550)):
        wavs.append(audio_io.save(root / f"{name}.wav", tone(0.6, f), SR))
    return make_checkpoint(root / "ckpt"), [str(w) for w in wavs]


def test_speech_input_tasks_give_the_pipelines_outputs(setup, tmp_path, capsys):
    ckpt, wavs = setup
    pipe = AudioPaLM.from_pretrained(ckpt, device="cpu")
    out = tmp_path / "speech"
    rc = main(
        [
            "generate",
            "--checkpoint",
            str(ckpt),
            "--task",
            "S2ST",
            "--src",
            "en",
            "--tgt",
            "fr",
            *wavs,
            "--out-dir",
            str(out),
            "--max-new-tokens",
            "12",
            "--json",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in lines] == wavs and all(r["task"] == "S2ST" for r in lines)
    want = pipe.generate("S2ST", wavs, "en", "fr", max_new_tokens=12)
    assert all(w.audio is not None for w in want) and not np.array_equal(want[0].audio, want[1].audio)
    for i, (r, w) in enumerate(zip(lines, want, strict=True), start=1):
        assert r["audio"] == str(out / f"{i:03d}_S2ST_fr.wav") and r["finished"] == w.finished
        wav, sr = audio_io.load(r["audio"])
        assert sr == w.sample_rate and np.allclose(wav, w.audio, atol=1e-4)  # 16-bit wav of the same speech
        assert r["seconds"] == round(len(w.audio) / sr, 2)

    # a chain prints each of its text outputs (a random model never ends its transcript: no speech, said so)
    rc = main(
        [
            "generate",
            "--checkpoint",
            str(ckpt),
            "--task",
            "ASR AST S2ST",
            "--src",
            "en",
            "--tgt",
            "fr",
            wavs[0],
            "--out-dir",
            str(tmp_path / "chain"),
            "--max-new-tokens",
            "6",
            "--quiet",
        ]
    )
    assert rc == 0
    w = pipe.generate("ASR AST S2ST", wavs[0], "en", "fr", max_new_tokens=6)
    assert capsys.readouterr().out.splitlines() == [
        f"[1] {wavs[0]}",
        f"  transcript: {w.text}",
        "  speech: none (decoding stopped before a whole audio frame)",
        "  (stopped at --max-new-tokens before the end of the output)",
    ]


def test_text_inputs_from_stdin_and_greedy_speech(setup, tmp_path, capsys, monkeypatch):
    ckpt, _ = setup
    monkeypatch.setattr("sys.stdin", io.StringIO("the dog sleeps.\n\na cat runs.\n"))
    out = tmp_path / "tts"
    rc = main(
        [
            "generate",
            "--checkpoint",
            str(ckpt),
            "--task",
            "TTS",
            "--src",
            "en",
            "-",
            "--out-dir",
            str(out),
            "--max-new-tokens",
            "8",
            "--speech-temperature",
            "0",
            "--no-speech-cap",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "[1] the dog sleeps." in text and "[2] a cat runs." in text and "[3]" not in text
    want = AudioPaLM.from_pretrained(ckpt, device="cpu").generate(
        "TTS", ["the dog sleeps.", "a cat runs."], "en", max_new_tokens=8, speech_sampling=None, cap_speech=False
    )
    for i, w in enumerate(want, start=1):
        path = out / f"{i:03d}_TTS_en.wav"
        assert f"speech: {path}" in text
        wav, _ = audio_io.load(path)
        assert np.allclose(wav, w.audio, atol=1e-4)  # greedy speech: the pipeline with speech_sampling=None


def test_beam_search_for_text_outputs(setup, tmp_path, capsys):
    ckpt, wavs = setup
    rc = main(
        [
            "generate",
            "--checkpoint",
            str(ckpt),
            "--task",
            "MT",
            "--src",
            "en",
            "--tgt",
            "fr",
            "the dog sleeps.",
            "a cat runs.",
            "--num-beams",
            "3",
            "--max-new-tokens",
            "6",
            "--json",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    got = [json.loads(line)["translation"] for line in capsys.readouterr().out.splitlines()]
    pipe = AudioPaLM.from_pretrained(ckpt, device="cpu")
    want = pipe.generate(
        "MT", ["the dog sleeps.", "a cat runs."], "en", "fr", max_new_tokens=6, num_beams=3, early_stopping=True
    )
    assert got == [w.translation for w in want]
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(ckpt),
                "--task",
                "TTS",
                "--src",
                "en",
                "hi",
                "--beam-tasks",
                "TTS",
                "--out-dir",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "beam search is for tasks whose outputs are all text" in capsys.readouterr().err


def test_read_inputs_expands_stdin():
    assert read_inputs(["x", "-", "y"], io.StringIO("a\n \nb\n")) == ["x", "a", "b", "y"]


def test_bad_requests_are_clear_errors_and_write_nothing(setup, tmp_path, capsys):
    ckpt, wavs = setup
    out = tmp_path / "none"
    base = ["generate", "--checkpoint", str(ckpt), "--out-dir", str(out), "--quiet"]
    cases = [
        (["--task", "ASR", "--src", "en", str(tmp_path / "missing.wav")], "no such file"),
        (["--task", "AST", "--src", "en", wavs[0]], "give the target language"),
        (["--task", "ASR", "--src", "xx", wavs[0]], "unknown language 'xx'"),
        (["--task", "XYZ", "--src", "en", wavs[0]], "unknown task 'XYZ'"),
        (["--task", "TTS", "--src", "en", "   "], "empty text"),
        (
            ["--checkpoint", str(tmp_path / "nockpt"), "--task", "MT", "--src", "en", "--tgt", "fr", "hi"],
            "no such checkpoint",
        ),
    ]
    for args, message in cases:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]  # (the rest: transformers' load bar)
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (args, err)
    assert not out.exists()


def test_non_utf8_stdin_and_truncated_audio_are_one_line_refusals(setup, tmp_path, capsys, monkeypatch):
    ckpt, wavs = setup
    out = tmp_path / "none"
    base = ["generate", "--checkpoint", str(ckpt), "--out-dir", str(out), "--quiet"]
    stdin = io.TextIOWrapper(io.BytesIO(b"the dog sleeps.\nle caf\xe9.\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(base + ["--task", "MT", "--src", "en", "--tgt", "fr", "-"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "standard input, line 2: not UTF-8 text" in err[0]
    cut = tmp_path / "cut.wav"
    data = open(wavs[0], "rb").read()
    cut.write_bytes(data[: len(data) // 4])  # header still promises the whole clip
    assert main(base + ["--task", "ASR", "--src", "en", str(cut)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "cut.wav: truncated file" in err[0]
    assert not out.exists()
