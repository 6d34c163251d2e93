"""Token stores: round trip, resume, skip-bad, fingerprint refusal, and the `audiopalm tokenize` command."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import Record, write_manifest
from audiopalm.data.token_store import (
    META_NAME,
    SHARDS_DIR,
    TokenStore,
    TokenStoreError,
    TokenStoreMismatch,
    build_token_store,
    check_token_store,
    load_token_store,
)
from audiopalm.tokenizers.semantic import SemanticTokenizer

SR = 16000


def _codes(store: TokenStore, i: int, field: str = "audio_codes") -> np.ndarray:
    """Row ``i``'s codes, which the test knows the row has."""
    codes = store.codes(i, field)
    assert codes is not None, (i, field)
    return codes


def _tone(freq, seconds, sr=SR):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tok():
    """MFCC units fitted on a few tones: a real tokenizer that builds in well under a second."""
    return SemanticTokenizer(num_units=8).fit([_tone(150 + 100 * i, 0.5) for i in range(5)], progress=False)


@pytest.fixture
def corpus(tmp_path):
    """6 wavs (one at 8 kHz, resampled on load) and 8 rows; wav 0 is the source of three rows."""
    wav_dir = tmp_path / "wav"
    wav_dir.mkdir()
    paths = []
    for i in range(6):
        sr = 8000 if i == 3 else SR
        p = wav_dir / f"u{i}.wav"
        sf.write(p, _tone(200 + 90 * i, 0.2 + 0.1 * i, sr), sr)
        paths.append(str(p))
    rows = [Record(id=f"r{i}", lang="en", text=f"utterance {i}", audio=paths[i], split="train") for i in range(1, 6)]
    rows += [
        Record(id=f"s2st-{t}", lang="en", text="zero", audio=paths[0], tgt_lang=t, tgt_text="zéro", tgt_audio=paths[j])
        for t, j in (("fr", 1), ("es", 2), ("de", 4))
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    return manifest, rows


class CountingTokenizer:
    """Wraps a tokenizer, counting the files it encodes; optionally fails after some calls (a 'kill')."""

    def __init__(self, inner, fail_after_calls=None):
        self.inner, self.files, self.calls, self.fail_after_calls = inner, [], 0, fail_after_calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, wav, lengths=None):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.files.extend([None] * wav.shape[0])
        return self.inner.encode(wav, lengths)


def test_round_trip_codes_equal_direct_encoding(tok, corpus, tmp_path):
    manifest, rows = corpus
    counting = CountingTokenizer(tok)
    store = build_token_store(
        manifest, counting, tmp_path / "store", batch_seconds=1.0, num_proc=1, shard_size=2, progress=False
    )
    assert len(counting.files) == 6, "each of the 6 unique wavs is encoded once, though wav 0 is in 3 rows"
    assert len(store) == len(rows) and store.stats == {"shards": 3, "computed": 3, "reused": 0, "files_encoded": 6}
    assert not (tmp_path / "store" / SHARDS_DIR).exists()
    meta = json.loads((tmp_path / "store" / META_NAME).read_text())
    assert meta["fingerprint"] == tok.fingerprint and meta["tokenizer_type"] == "semantic"
    assert meta["num_codebooks"] == 1 and meta["codebook_size"] == 8 and meta["frame_rate"] == 50.0
    by_id = {r.id: r for r in rows}
    for i in range(len(store)):
        row = store[i]
        rec = by_id[row["id"]]
        assert row["text"] == rec.text and row["audio"] == rec.audio and row["tgt_lang"] == rec.tgt_lang
        wav, _ = audio_io.load(rec.audio, SR)
        direct, frames = tok.encode(torch.from_numpy(wav)[None])
        assert np.array_equal(_codes(store, i), direct[0, :, : int(frames[0])].numpy()), row["id"]
        assert row["audio_codes"].shape == (1, int(frames[0]))
        if rec.tgt_audio is None:
            assert row["tgt_audio_codes"] is None and store.codes(i, "tgt_audio_codes") is None
        else:
            twav, _ = audio_io.load(rec.tgt_audio, SR)
            assert np.array_equal(
                _codes(store, i, "tgt_audio_codes"), tok.encode(torch.from_numpy(twav)[None])[0][0].numpy()
            )
    summary = check_token_store(tmp_path / "store", progress=False)
    assert summary["rows"] == 8 and summary["skipped"] == 0 and summary["tgt_frames"] > 0
    # a second run with the same inputs finds it complete and encodes nothing
    again = CountingTokenizer(tok)
    build_token_store(manifest, again, tmp_path / "store", num_proc=1, progress=False)
    assert again.files == []


def test_resume_after_deleted_shard_recomputes_only_it(tok, corpus, tmp_path):
    manifest, _ = corpus
    out = tmp_path / "store"
    first = build_token_store(manifest, tok, out, num_proc=1, shard_size=2, progress=False, keep_shards=True)
    before = [_codes(first, i) for i in range(len(first))]
    (out / META_NAME).unlink()  # as if killed before the end
    shutil.rmtree(out / SHARDS_DIR / "shard-00001")
    counting = CountingTokenizer(tok)
    store = build_token_store(manifest, counting, out, num_proc=1, shard_size=2, progress=False)
    assert len(counting.files) == 2 and store.stats["computed"] == 1 and store.stats["reused"] == 2
    assert all(np.array_equal(a, _codes(store, i)) for i, a in enumerate(before))


def test_resume_after_kill(tok, corpus, tmp_path):
    manifest, _ = corpus
    out = tmp_path / "store"
    killer = CountingTokenizer(tok, fail_after_calls=2)  # batch_seconds tiny: one file per call
    with pytest.raises(KeyboardInterrupt):
        build_token_store(manifest, killer, out, num_proc=1, shard_size=2, batch_seconds=0.01, progress=False)
    assert sorted(p.name for p in (out / SHARDS_DIR).iterdir() if p.name.startswith("shard-")) == ["shard-00000"]
    with pytest.raises(TokenStoreError, match="unfinished build"):
        load_token_store(out)
    counting = CountingTokenizer(tok)
    store = build_token_store(manifest, counting, out, num_proc=1, shard_size=2, batch_seconds=0.01, progress=False)
    assert len(counting.files) == 4 and store.stats["reused"] == 1 and len(store) == 8


def test_other_tokenizer_cannot_resume_or_overwrite(tok, corpus, tmp_path):
    manifest, _ = corpus
    build_token_store(manifest, tok, tmp_path / "store", num_proc=1, progress=False)
    other = SemanticTokenizer(num_units=4).fit([_tone(300, 0.5)], progress=False)
    with pytest.raises(TokenStoreError, match="another manifest or tokenizer"):
        build_token_store(manifest, other, tmp_path / "store", num_proc=1, progress=False)


def test_bad_audio_is_named_or_counted(tok, corpus, tmp_path, capsys):
    manifest, rows = corpus
    (tmp_path / "wav" / "u2.wav").write_bytes(b"not a wav at all")  # r2 and the s2st-es target
    sf.write(
        tmp_path / "wav" / "u5.wav", np.full(1000, np.nan, dtype=np.float32), SR, subtype="FLOAT"
    )  # bad when decoded
    with pytest.raises(audio_io.AudioError, match="u2.wav"):
        build_token_store(manifest, tok, tmp_path / "a", num_proc=1, progress=False)
    store = build_token_store(manifest, tok, tmp_path / "b", num_proc=1, progress=False, skip_bad=True)
    err = capsys.readouterr().err
    assert "skipped 3 of 8 rows (2 bad audio files)" in err, err
    assert sorted(s["id"] for s in store.meta.skipped) == ["r2", "r5", "s2st-es"]
    assert {s["field"] for s in store.meta.skipped} == {"audio", "tgt_audio"}
    assert len(store) == 5 and "r2" not in set(store.dataset["id"])


def test_mismatch_refusal_names_both(tok, corpus, tmp_path):
    manifest, _ = corpus
    build_token_store(manifest, tok, tmp_path / "store", num_proc=1, progress=False)
    assert len(load_token_store(tmp_path / "store", expected_tokenizer=tok)) == 8
    other = SemanticTokenizer(num_units=4).fit([_tone(300, 0.5)], progress=False)
    with pytest.raises(TokenStoreMismatch) as e:
        load_token_store(tmp_path / "store", expected_tokenizer=other)
    msg = str(e.value)
    assert tok.fingerprint in msg and other.fingerprint in msg and "num_units=8" in msg and "num_units=4" in msg
    with pytest.raises(TokenStoreMismatch, match="0123456789abcdef"):
        load_token_store(tmp_path / "store", expected_fingerprint="0123456789abcdef")


def test_cli_tokenize_and_check(tok, corpus, tmp_path, capsys):
    from audiopalm.commands.main import main

    manifest, _ = corpus
    tok.save_pretrained(tmp_path / "tok")
    rc = main(
        [
            "tokenize",
            "--manifest",
            str(manifest),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--out",
            str(tmp_path / "store"),
            "--num-proc",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert load_token_store(tmp_path / "store", expected_fingerprint=tok.fingerprint).meta.num_rows == 8
    assert main(["tokenize", "--check", str(tmp_path / "store"), "--no-progress"]) == 0
    assert "8 rows" in capsys.readouterr().out
    assert main(["tokenize", "--check", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert (
        main(
            [
                "tokenize",
                "--manifest",
                str(manifest),
                "--tokenizer",
                str(tmp_path / "tok"),
                "--out",
                str(tmp_path / "s2"),
                "--bandwidth",
                "6",
            ]
        )
        == 2
    )  # codec options on a saved tokenizer: refused


def test_text_only_rows_are_stored_without_codes(tok, corpus, tmp_path, capsys):
    """Rows without audio (MT pairs) are kept with their text and no codes; a task that needs audio
    skips them with a counted reason, and MT renders them."""
    from collections import Counter

    from builders import tiny_text_tokenizer

    from audiopalm.commands.main import main
    from audiopalm.data.tasks import render
    from audiopalm.data.vocab import UnifiedVocab

    manifest, rows = corpus
    mt = [
        Record(id=f"mt{i}", lang="en", text=f"sentence {i}.", tgt_lang="fr", tgt_text=f"phrase {i}.", split="test")
        for i in range(3)
    ]
    path = write_manifest(tmp_path / "mixed.jsonl", rows[:2] + mt)
    store = build_token_store(path, tok, tmp_path / "store", num_proc=1, progress=False)
    assert len(store) == 5 and store.meta.num_audio_files == 2
    i = list(store.dataset["id"]).index("mt1")
    assert store.codes(i) is None and store.dataset[i]["tgt_text"] == "phrase 1."
    assert check_token_store(tmp_path / "store", progress=False)["text_only"] == 3
    vocab = UnifiedVocab.build(
        tiny_text_tokenizer("gpt2"), codebook_size=tok.codebook_size, num_codebooks=1, pattern="flatten"
    )
    row, skipped = store[i], Counter[str]()
    assert render(row, "ASR", vocab, max_len=512, skip=skipped) is None
    assert render(row, "TTS", vocab, max_len=512, skip=skipped) is None
    assert skipped == {"ASR: missing audio_codes": 1, "TTS: missing audio_codes": 1}
    assert render(row, "MT", vocab, max_len=512)["labels"]  # MT needs no audio
    only = write_manifest(tmp_path / "only_text.jsonl", mt)  # no audio at all: still a store
    assert len(build_token_store(only, tok, tmp_path / "store2", num_proc=1, progress=False)) == 3
    assert main(["tokenize", "--check", str(tmp_path / "store2"), "--no-progress"]) == 0
    assert "3 text-only" in capsys.readouterr().out
