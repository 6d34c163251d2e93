"""`audiopalm tokenizer fit / info / roundtrip` on a tiny manifest of synthetic audio."""

import json

import numpy as np
import pytest

from audiopalm.audio import io as audio
from audiopalm.commands.main import main
from audiopalm.data.manifest import Record, write_manifest
from audiopalm.tokenizers.base import load_audio_tokenizer


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        t = np.arange(int(rng.uniform(0.5, 1.0) * 16000)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t * (1 + 0.3 * t)) + 0.02 * rng.normal(size=t.size)
        # the corpus is stored at 22.05 kHz (as espeak-ng writes it): fit must resample to 16 kHz
        audio.save(root / "wav" / f"u{i}.wav", audio.resample(wav.astype(np.float32), 16000, 22050), 22050)
        records.append(
            Record(
                id=f"u{i}",
                lang="en",
                text="hello",
                audio=str(root / "wav" / f"u{i}.wav"),
                split="train" if i < 4 else "test",
            )
        )
    return write_manifest(root / "manifest.jsonl", records)


@pytest.fixture(scope="module")
def fitted(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tok"
    rc = main(
        [
            "tokenizer",
            "fit",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--split",
            "train",
            "--num-codebooks",
            "3",
            "--codebook-size",
            "8",
            "--n-mels",
            "32",
            "--kmeans-iters",
            "5",
        ]
    )
    assert rc == 0
    return out


def test_fit_writes_a_loadable_tokenizer(fitted):
    tok = load_audio_tokenizer(fitted)
    assert tok.type_name == "mel_rvq" and tok.num_codebooks == 3 and tok.codebook_size == 8
    assert tok.get_config()["n_mels"] == 32
    info = json.loads((fitted / "fit_info.json").read_text())
    assert info["split"] == "train"
    # 4 train utterances of 0.5-1.0 s were read, not the 2 test ones
    assert 2.0 <= info["seconds"] <= 4.0 and info["frames_used"] == info["frames_available"]


def test_info_prints_settings_and_fingerprint(fitted, capsys):
    assert main(["tokenizer", "info", str(fitted)]) == 0
    out = capsys.readouterr().out
    assert load_audio_tokenizer(fitted).fingerprint in out
    assert "25 frames/s" in out and "k=3: 75" in out
    assert main(["tokenizer", "info", str(fitted), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["tokens_per_second"]["2"] == 50.0 and d["config"]["stack"] == 4


def test_info_on_a_folder_without_tokenizer(tmp_path, capsys):
    assert main(["tokenizer", "info", str(tmp_path)]) == 2
    assert "not a saved audiopalm tokenizer" in capsys.readouterr().err


def test_roundtrip_writes_wavs(fitted, manifest, tmp_path):
    out = tmp_path / "rt"
    rc = main(
        [
            "tokenizer",
            "roundtrip",
            str(fitted),
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--split",
            "test",
            "--num-codebooks",
            "1",
            "3",
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["u4.k1.wav", "u4.k3.wav", "u4.orig.wav", "u5.k1.wav", "u5.k3.wav", "u5.orig.wav"]
    orig, sr = audio.load(out / "u4.orig.wav")
    dec, sr2 = audio.load(out / "u4.k3.wav")
    assert sr == sr2 == 16000 and len(dec) == len(orig)
    assert (
        main(
            [
                "tokenizer",
                "roundtrip",
                str(fitted),
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--num-codebooks",
                "4",
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_bench_quick_writes_the_table(tmp_path):
    """eval/bench_tokenizers.py --quick: synthesises a small corpus, fits, measures (about a minute)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_tokenizers", Path(__file__).parents[1] / "eval" / "bench_tokenizers.py"
    )
    assert spec is not None and spec.loader is not None, spec
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench" / "tokenizers.json"
    assert bench.main(["--quick", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mel_rvq_realtime_factor_per_core"] > 1.0
    rows = result["reconstruction"]
    assert [r["num_codebooks"] for r in rows] == [1, 2, 4, 8]
    l1 = [r["mel_l1"] for r in rows]
    assert all(a > b for a, b in zip(l1, l1[1:], strict=False)), l1
    for r in rows:
        assert 0 <= r["pocketsphinx_wer"] and r["reference_wer"] == rows[0]["reference_wer"]
    assert len(result["examples"]) == 4 and all(Path(p).is_file() for p in result["examples"])
    assert "| 8 | 200 |" in out.with_suffix(".md").read_text()


def test_fit_semantic_units(manifest, tmp_path):
    out = tmp_path / "units"
    assert (
        main(
            [
                "tokenizer",
                "fit-semantic",
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--split",
                "train",
                "--num-units",
                "5",
            ]
        )
        == 0
    )
    tok = load_audio_tokenizer(out)
    assert tok.type_name == "semantic" and tok.num_codebooks == 1 and tok.codebook_size == 5
    assert not tok.can_decode


def test_roundtrip_never_writes_outside_out(fitted, manifest, tmp_path, capsys):
    """Ids become wav names: one with '../' used to write outside --out."""
    import shutil

    line = json.loads(manifest.read_text().splitlines()[0])
    evil = tmp_path / "m.jsonl"
    shutil.copytree(manifest.parent / "wav", tmp_path / "wav")
    evil.write_text(json.dumps({**line, "id": "../../escaped"}) + "\n")
    out = tmp_path / "a" / "rt"
    assert main(["tokenizer", "roundtrip", str(fitted), "--manifest", str(evil), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "field 'id': bad id '../../escaped'" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*escaped*")) and not out.exists()


def test_from_pretrained_refuses_missing_changed_or_truncated_weights(fitted, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from audiopalm.tokenizers.base import WEIGHTS_NAME

    def copy(name):
        shutil.copytree(fitted, tmp_path / name)
        return tmp_path / name

    gone = copy("gone")
    (gone / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=f"gone: no {WEIGHTS_NAME}"):
        load_audio_tokenizer(gone)
    changed = copy("changed")
    state = load_file(str(changed / WEIGHTS_NAME))
    key = max(state, key=lambda k: state[k].numel())  # the codebooks
    state[key] = state[key] + 0.5
    save_file(state, str(changed / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="changed: the weights do not match the saved fingerprint"):
        load_audio_tokenizer(changed)
    cut = copy("cut")
    data = (cut / WEIGHTS_NAME).read_bytes()
    (cut / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt safetensors"):
        load_audio_tokenizer(cut)


@pytest.mark.parametrize("name", ["runs/tiny_tok", "./tok", "/nowhere/tok", "a/b/c"])
def test_a_local_looking_tokenizer_name_is_never_fetched(name, monkeypatch, tmp_path):
    """The tiny config's default `runs/tiny_tok`, before it was fitted, became a hub request."""
    import transformers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: pytest.fail(f"hub request for {a}"))
    with pytest.raises(ValueError, match="looks like a local path"):
        load_audio_tokenizer(name)
