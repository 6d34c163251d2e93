"""Every kind of bad input a user can hand the `audiopalm` commands is refused the same way: exit code 2,
one line on stderr naming the input (file, line, field) and what to do, no traceback (unless --debug),
nothing written outside the output folder and nothing left there that looks finished.

Categories: audio files, manifests, configs, checkpoints, token stores, command-line arguments. Inputs
are tiny and every command runs in-process (``cli.main``), so the whole module takes seconds.
"""

import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from builders import make_checkpoint

from audiopalm import errors
from audiopalm.commands import main as cli
from audiopalm.data.manifest import Record, write_manifest

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread

SR = 16000


def _tone(seconds, amp=0.3, freq=300.0):
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Valid inputs, shared read-only by every case: a wav, a manifest, an audio tokenizer, a checkpoint."""
    from audiopalm.tokenizers.semantic import SemanticTokenizer

    root = tmp_path_factory.mktemp("good")
    sf.write(root / "ok.wav", _tone(0.4), SR, subtype="PCM_16")
    manifest = write_manifest(root / "m.jsonl", [Record("u1", "en", "hello.", str(root / "ok.wav"))])
    tok = SemanticTokenizer(num_units=8).fit([_tone(0.5, freq=150 + 100 * i) for i in range(4)], progress=False)
    tok.save_pretrained(root / "tok")
    return {
        "root": root,
        "wav": root / "ok.wav",
        "manifest": manifest,
        "tok": root / "tok",
        "ckpt": make_checkpoint(root / "ckpt"),
    }


# ----------------------------------------------------------------------------- the bad inputs
# Each builder gets (good, folder for its inputs, output folder) and returns (argv, what the line must name).


def _cut_wav(d):
    sf.write(d / "cut.wav", _tone(1.0), SR, subtype="PCM_16")
    data = (d / "cut.wav").read_bytes()
    (d / "cut.wav").write_bytes(data[: 44 + int(0.03 * SR) * 2])  # the header still says 1 s
    return d / "cut.wav"


def _manifest_with(d, wav, name="m.jsonl"):
    return write_manifest(d / name, [Record("u1", "en", "hello.", str(wav))])


def _raw(d, name, data: bytes):
    (d / name).write_bytes(data)
    return d / name


def audio_truncated_check(g, d, out):
    return ["manifest", "check", str(_manifest_with(d, _cut_wav(d)))], "cut.wav: truncated file"


def audio_truncated_tokenize(g, d, out):
    return [
        "tokenize",
        "--manifest",
        str(_manifest_with(d, _cut_wav(d))),
        "--tokenizer",
        str(g["tok"]),
        "--out",
        str(out),
        "--no-progress",
    ], "cut.wav: truncated file"


def audio_float_peak_15(g, d, out):
    sf.write(d / "loud.wav", _tone(0.4, amp=15.0), SR, subtype="FLOAT")
    return [
        "tokenize",
        "--manifest",
        str(_manifest_with(d, d / "loud.wav")),
        "--tokenizer",
        str(g["tok"]),
        "--out",
        str(out),
        "--no-progress",
    ], "loud.wav: samples reach 15"


def audio_not_audio(g, d, out):
    wav = _raw(d, "text.wav", b"this is not a wav file at all")
    return [
        "tokenize",
        "--manifest",
        str(_manifest_with(d, wav)),
        "--tokenizer",
        str(g["tok"]),
        "--out",
        str(out),
        "--no-progress",
    ], "text.wav: unreadable audio"


def audio_truncated_generate(g, d, out):
    return [
        "generate",
        "--checkpoint",
        str(g["ckpt"]),
        "--task",
        "ASR",
        "--src",
        "en",
        str(_cut_wav(d)),
        "--out-dir",
        str(out),
        "--quiet",
    ], "cut.wav: truncated file"


def manifest_empty(g, d, out):
    m = _raw(d, "empty.jsonl", b"")
    return ["manifest", "check", str(m)], f"{m}: empty manifest"


def manifest_not_utf8(g, d, out):
    m = _raw(d, "latin1.jsonl", '{"id": "u1", "lang": "fr", "text": "café.", "audio": "x.wav"}\n'.encode("latin-1"))
    return [
        "tokenize",
        "--manifest",
        str(m),
        "--tokenizer",
        str(g["tok"]),
        "--out",
        str(out),
        "--no-progress",
    ], f"{m}:1: not UTF-8 text"


def manifest_bad_json(g, d, out):
    m = _raw(d, "bad.jsonl", b'{"id": "u1", "lang": "en", "text": "hi.", "audio": "x.wav"}\n{oops\n')
    return ["manifest", "check", str(m)], f"{m}:2: invalid JSON"


def manifest_id_with_a_path(g, d, out):
    m = _raw(
        d,
        "evil.jsonl",
        json.dumps({"id": "../../escaped", "lang": "en", "text": "hi.", "audio": str(g["wav"])}).encode() + b"\n",
    )
    return [
        "tokenizer",
        "roundtrip",
        str(g["ckpt"] / "audio_tokenizer"),
        "--manifest",
        str(m),
        "--out",
        str(out),
    ], "field 'id': bad id '../../escaped'"


def manifest_empty_eval(g, d, out):
    m = _raw(d, "empty.jsonl", b"\n\n")
    return [
        "eval",
        "--checkpoint",
        str(g["ckpt"]),
        "--manifest",
        str(m),
        "--tasks",
        "MT",
        "--out",
        str(out),
    ], f"{m}: empty manifest"


def manifest_missing(g, d, out):
    return ["text-tokenizer", "--manifest", str(d / "none.jsonl"), "--out", str(out)], "none.jsonl: no such manifest"


def checkpoint_without_tokenizer_json(g, d, out):
    ckpt = d / "ckpt"
    shutil.copytree(g["ckpt"], ckpt)
    (ckpt / "tokenizer.json").unlink()
    return [
        "generate",
        "--checkpoint",
        str(ckpt),
        "--task",
        "MT",
        "--src",
        "en",
        "--tgt",
        "fr",
        "hi.",
        "--out-dir",
        str(out),
        "--quiet",
    ], f"{ckpt}: no tokenizer.json"


def checkpoint_truncated_safetensors(g, d, out):
    ckpt = d / "ckpt"
    shutil.copytree(g["ckpt"], ckpt)
    w = ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    return [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--manifest",
        str(g["manifest"]),
        "--tasks",
        "ASR",
        "--out",
        str(out),
    ], f"{w}: truncated or corrupt safetensors"


def checkpoint_local_looking_missing(g, d, out):
    return [
        "generate",
        "--checkpoint",
        "runs/no_such_run/final",
        "--task",
        "MT",
        "--src",
        "en",
        "--tgt",
        "fr",
        "hi.",
        "--out-dir",
        str(out),
        "--quiet",
    ], "runs/no_such_run/final: no such checkpoint folder"


def checkpoint_tokenizer_local_looking_missing(g, d, out):
    return [
        "tokenize",
        "--manifest",
        str(g["manifest"]),
        "--tokenizer",
        "runs/tiny_tok",
        "--out",
        str(out),
        "--no-progress",
    ], "runs/tiny_tok: no such audio tokenizer folder"


def checkpoint_tokenizer_truncated_weights(g, d, out):
    tok = d / "tok"
    shutil.copytree(g["tok"], tok)
    w = tok / "audio_tokenizer.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    return [
        "tokenize",
        "--manifest",
        str(g["manifest"]),
        "--tokenizer",
        str(tok),
        "--out",
        str(out),
        "--no-progress",
    ], f"{w}: truncated or corrupt safetensors"


def store_not_a_store(g, d, out):
    return ["tokenize", "--check", str(d)], f"{d}: not a token store"


def store_bad_metadata(g, d, out):
    (d / "store").mkdir()
    _raw(d / "store", "token_store.json", b"{truncated")
    return ["tokenize", "--check", str(d / "store")], "token_store.json: unreadable store metadata"


def cli_unknown_command(g, d, out):
    return ["tokenise", "--out", str(out)], "unknown command 'tokenise'"


def cli_missing_argument(g, d, out):
    return ["generate", "--task", "ASR", "--src", "en", str(g["wav"])], "--checkpoint"


def cli_bad_number(g, d, out):
    return [
        "tokenize",
        "--manifest",
        str(g["manifest"]),
        "--tokenizer",
        str(g["tok"]),
        "--out",
        str(out),
        "--batch-seconds",
        "lots",
    ], "--batch-seconds: invalid float value: 'lots'"


def cli_score_line_counts(g, d, out):
    refs, hyps = _raw(d, "refs.txt", b"a\nb\n"), _raw(d, "hyps.txt", b"a\n")
    return ["score", str(refs), str(hyps)], f"{hyps}: 1 lines but {refs} has 2"


def cli_score_not_utf8(g, d, out):
    refs, hyps = _raw(d, "refs.txt", "caf\xe9\n".encode("latin-1")), _raw(d, "hyps.txt", b"cafe\n")
    return ["score", str(refs), str(hyps)], f"{refs}:1: text file is not UTF-8"


def cli_synth_text_only_zero(g, d, out):
    return ["synth", "--out", str(out), "--text-only", "0", "--quiet"], "--text-only: expected a positive number"


CASES = {
    "audio": [
        audio_truncated_check,
        audio_truncated_tokenize,
        audio_float_peak_15,
        audio_not_audio,
        audio_truncated_generate,
    ],
    "manifests": [
        manifest_empty,
        manifest_not_utf8,
        manifest_bad_json,
        manifest_id_with_a_path,
        manifest_empty_eval,
        manifest_missing,
    ],
    "checkpoints": [
        checkpoint_without_tokenizer_json,
        checkpoint_truncated_safetensors,
        checkpoint_local_looking_missing,
        checkpoint_tokenizer_local_looking_missing,
        checkpoint_tokenizer_truncated_weights,
    ],
    "token stores": [store_not_a_store, store_bad_metadata],
    "CLI arguments": [
        cli_unknown_command,
        cli_missing_argument,
        cli_bad_number,
        cli_score_line_counts,
        cli_score_not_utf8,
        cli_synth_text_only_zero,
    ],
}


def _main(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse exits; the code is what the shell sees
        return e.code if isinstance(e.code, int) else 1  # (a message as the code: the shell sees 1)


def _files(root):
    return {p for p in root.rglob("*") if p.is_file()}


def _error_lines(err: str) -> list[str]:
    """stderr less progress bars (tqdm, transformers' loading bar): what the user reads as messages."""
    return [line for line in err.splitlines() if line.strip() and "\r" not in line and "%|" not in line]


def _assert_refused(rc, err, must_name, *, written, out):
    assert rc == errors.EXIT_BAD_INPUT, (rc, err)
    assert "Traceback" not in err, err
    lines = _error_lines(err)
    assert len(lines) == 1, lines
    assert ": error: " in lines[0] and must_name in lines[0], (must_name, lines[0])
    outside = {p for p in written if out not in p.parents}
    assert not outside, f"written outside the output folder: {sorted(outside)}"
    # nothing that looks finished: at most the resumable work of an interrupted store build (shards/)
    leftover = {p for p in written if out in p.parents and "shards" not in p.relative_to(out).parts}
    assert not leftover, f"partly written output: {sorted(leftover)}"


@pytest.mark.parametrize("build", [b for bs in CASES.values() for b in bs], ids=lambda b: b.__name__)
def test_bad_input_is_one_line_exit_2(build, good, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names ("runs/...") resolve here; nothing may land here
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    argv, must_name = build(good, d, out)
    capsys.readouterr()
    before = _files(tmp_path) | _files(good["root"])
    rc = _main(argv)
    err = capsys.readouterr().err
    written = (_files(tmp_path) | _files(good["root"])) - before
    _assert_refused(rc, err, must_name, written=written, out=out)


def test_non_utf8_stdin_to_generate(good, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hello.\n\xff\xfe\n"), encoding="utf-8"))
    out = tmp_path / "out"
    rc = _main(
        [
            "generate",
            "--checkpoint",
            str(good["ckpt"]),
            "--task",
            "MT",
            "--src",
            "en",
            "--tgt",
            "fr",
            "-",
            "--out-dir",
            str(out),
            "--quiet",
        ]
    )
    _assert_refused(rc, capsys.readouterr().err, "standard input, line 2: not UTF-8", written=_files(tmp_path), out=out)


# ----------------------------------------------------------------------------- configs


def _config_cases(d):
    from audiopalm.config import load_any

    ok = d / "ok.yaml"
    ok.write_text("recipe: pretrain_text\n")
    latin = _raw(d, "latin.yaml", "recipe: pretrain_text\nname: caf\xe9\n".encode("latin-1"))
    broken = _raw(d, "broken.yaml", b"recipe: [pretrain_text\n")
    return [
        (lambda: load_any(ok, ["optim.lrr=3e-3"]), "optim.lrr: unknown key"),
        (lambda: load_any(ok, ["optim.lr=fast"]), "optim.lr"),
        (lambda: load_any(latin), f"{latin}: not UTF-8 text"),
        (lambda: load_any(broken), f"{broken}: not valid YAML"),
        (lambda: load_any(d / "none.yaml"), "none.yaml: no such config file"),
    ]


def test_config_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """Config loading is the `train` command's first step: its errors (ConfigError, a missing or non-UTF-8
    file) go through the same wrapper as every command."""
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    for fn, must_name in _config_cases(tmp_path):
        rc = errors.run_command(fn, prog="audiopalm train")
        _assert_refused(rc, capsys.readouterr().err, must_name, written=set(), out=tmp_path / "out")


# ----------------------------------------------------------------------------- --debug, and bugs


def test_debug_shows_the_traceback(good, tmp_path, capsys, monkeypatch):
    m = _raw(tmp_path, "empty.jsonl", b"")
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    assert _main(["manifest", "check", str(m), "--debug"]) == 2
    err = capsys.readouterr().err
    assert (
        "Traceback" in err
        and "ManifestError" in err
        and err.strip().splitlines()[-1].startswith("audiopalm manifest: error:")
    )
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    assert _main(["manifest", "check", str(m)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_is_not_dressed_as_bad_input():
    def bug():
        raise RuntimeError("an internal error")

    with pytest.raises(RuntimeError):
        errors.run_command(bug, prog="audiopalm x")
