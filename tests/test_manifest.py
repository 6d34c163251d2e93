"""audiopalm.data.manifest: schema, read/write round trip, every kind of bad line, and `manifest check`."""

import json

import numpy as np
import pytest
import soundfile as sf

from audiopalm.commands import main as cli
from audiopalm.data.manifest import ManifestError, Record, check_manifest, read_manifest, write_manifest


def _wav(path, seconds=0.5, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.arange(int(sr * seconds)) / 5)).astype(np.float32), sr)
    return path


GOOD = {
    "id": "u1",
    "lang": "en",
    "text": "the dog sleeps.",
    "audio": "wav/u1.wav",
    "tgt_lang": "fr",
    "tgt_text": "le chien dort.",
    "tgt_audio": "wav/u1_fr.wav",
    "speaker": "en-v01",
    "split": "train",
}


@pytest.fixture
def corpus(tmp_path):
    _wav(tmp_path / "wav/u1.wav")
    _wav(tmp_path / "wav/u1_fr.wav", 0.7)
    _wav(tmp_path / "wav/u2.wav", 0.25)
    return tmp_path


def _write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_round_trip(corpus):
    recs = [
        Record(**{**GOOD, "audio": str(corpus / "wav/u1.wav"), "tgt_audio": str(corpus / "wav/u1_fr.wav")}),
        Record(id="u2", lang="de", text="der hund schläft.", audio=str(corpus / "wav/u2.wav"), split="test"),
    ]
    path = write_manifest(corpus / "m.jsonl", recs)
    on_disk = [json.loads(line) for line in path.read_text().splitlines()]
    assert on_disk[0]["audio"] == "wav/u1.wav"  # relative to the manifest's folder on disk
    assert "tgt_lang" not in on_disk[1]  # None fields are left out
    back = read_manifest(path)
    assert back == recs  # absolute paths in memory


def test_paths_resolve_against_manifest_folder(corpus, monkeypatch, tmp_path_factory):
    _write_lines(corpus / "m.jsonl", [GOOD])
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    rec = read_manifest(corpus / "m.jsonl")[0]
    assert rec.audio == str(corpus / "wav/u1.wav") and rec.tgt_audio == str(corpus / "wav/u1_fr.wav")


BAD_LINES = [
    ("{not json", None, "invalid JSON"),
    ('["a list"]', None, "expected a JSON object"),
    ({**GOOD, "txt": "typo"}, "txt", "unknown field"),
    ({k: v for k, v in GOOD.items() if k != "text"}, "text", "missing required field"),
    ({**GOOD, "id": "../../etc/evil"}, "id", "path separator"),
    ({**GOOD, "id": "a\\b"}, "id", "path separator"),
    ({**GOOD, "id": ".."}, "id", "'..'"),
    ({**GOOD, "id": "a\u0000b"}, "id", "NUL"),
    ({**GOOD, "id": "a\nb"}, "id", "control character"),
    ({**GOOD, "id": ".hidden"}, "id", "starts with a dot"),
    ({**GOOD, "id": "a b"}, "id", "file-name stems"),
    ({**GOOD, "text": 42}, "text", "expected a string"),
    ({**GOOD, "text": "  "}, "text", "empty string"),
    ({**GOOD, "lang": "xx"}, "lang", "unknown language 'xx'"),
    ({**GOOD, "tgt_lang": "klingon"}, "tgt_lang", "unknown language"),
    ({k: v for k, v in GOOD.items() if k != "tgt_lang"}, "tgt_lang", "without tgt_lang"),
    ({k: v for k, v in GOOD.items() if k not in ("tgt_text", "tgt_audio")}, "tgt_lang", "without tgt_text"),
    ({**GOOD, "tgt_lang": "en"}, "tgt_lang", "same as lang"),
    ({**GOOD, "split": "my split!"}, "split", "bad split name"),
]


@pytest.mark.parametrize("line,field,message", BAD_LINES)
def test_bad_line_names_file_line_and_field(tmp_path, line, field, message):
    other = {**GOOD, "id": "u0"}
    path = _write_lines(tmp_path / "bad.jsonl", [other, "", line])
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(path)
    assert e.value.line == 3 and e.value.field == field
    assert str(e.value).startswith(f"{path}:3")


def test_duplicate_id(tmp_path):
    path = _write_lines(tmp_path / "dup.jsonl", [GOOD, GOOD])
    with pytest.raises(ManifestError, match="duplicate id 'u1' \\(first on line 1\\)") as e:
        read_manifest(path)
    assert e.value.line == 2


def test_skip_bad_counts_and_keeps_good(tmp_path, capsys):
    lines = [GOOD, BAD_LINES[0][0], {**GOOD, "id": "u2"}, BAD_LINES[2][0]]
    path = _write_lines(tmp_path / "mixed.jsonl", lines)
    errors: list[ManifestError] = []
    recs = read_manifest(path, skip_bad=True, errors=errors)
    assert [r.id for r in recs] == ["u1", "u2"]
    assert [e.line for e in errors] == [2, 4]
    assert "skipped 2 bad line(s) of 4" in capsys.readouterr().err


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        read_manifest(tmp_path / "none.jsonl")


def test_check_summary_and_audio_errors(corpus):
    lines = [
        GOOD,
        {"id": "u2", "lang": "de", "text": "hallo.", "audio": "wav/u2.wav", "split": "test", "speaker": "de-v02"},
        {"id": "u3", "lang": "de", "text": "weg.", "audio": "wav/missing.wav", "split": "test"},
    ]
    path = _write_lines(corpus / "m.jsonl", lines)
    s = check_manifest(path, progress=False)
    assert s["utterances"] == 3
    assert s["by_lang_split"]["en/train"]["utterances"] == 1
    assert s["by_lang_split"]["en/train"]["hours"] == pytest.approx(0.5 / 3600)
    assert s["by_lang_split"]["de/test"]["hours"] == pytest.approx(0.25 / 3600)
    assert s["speakers"] == {"de": 1, "en": 1}
    assert s["pairs"] == {"en->fr (speech)": 1}
    assert len(s["audio_errors"]) == 1 and "u3: audio:" in s["audio_errors"][0]


def test_cli_manifest_check(corpus, capsys):
    path = _write_lines(corpus / "m.jsonl", [GOOD, {**GOOD, "id": "u9", "audio": "wav/gone.wav"}])
    assert cli.main(["manifest", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert "en/train" in out.out and "gone.wav" in out.out and "--skip-bad" in out.err
    errors = [line for line in out.err.splitlines() if "error:" in line]  # (the rest: progress bar)
    assert len(errors) == 1 and str(path) in errors[0] and "Traceback" not in out.err
    assert cli.main(["manifest", "check", "--skip-bad", str(path)]) == 0


def test_cli_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "synth" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["manifest", "check", "--help"])
    assert e.value.code == 0
    assert "--skip-bad" in capsys.readouterr().out


def test_text_only_rows(corpus, capsys):
    """A row without audio (an MT pair, LM text) is valid; `manifest check` counts it."""
    mt = {
        "id": "t1",
        "lang": "en",
        "text": "the cat runs.",
        "tgt_lang": "fr",
        "tgt_text": "le chat court.",
        "split": "test",
    }
    path = _write_lines(corpus / "m.jsonl", [GOOD, mt])
    recs = read_manifest(path)
    assert recs[1].audio is None and recs[1].tgt_text == "le chat court."
    assert "audio" not in recs[1].to_json(corpus)
    s = check_manifest(path, progress=False)
    assert s["text_only"] == 1 and not s["audio_errors"]
    assert cli.main(["manifest", "check", str(path)]) == 0
    assert "1 text-only" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty manifest"),
        (b"\n  \n", "empty manifest"),
        (b'{"id": "u1", "lang": "en", "text": "caf\xe9."}\n', "not UTF-8"),
    ],
)
def test_empty_or_non_utf8_manifest(tmp_path, capsys, content, message):
    path = tmp_path / "m.jsonl"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)
    assert cli.main(["manifest", "check", str(path)]) == 2  # was exit 1 with no reason for an empty one
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and message in err[0]


def test_all_lines_bad_with_skip_bad(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", ["{oops", {**GOOD, "lang": "xx"}])
    with pytest.raises(ManifestError, match="no good line: all 2 are bad"):
        read_manifest(path, skip_bad=True)
