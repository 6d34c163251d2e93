"""eval/bench_train.py: synthetic corpus-shaped rows, batch accounting, and a tiny end-to-end run."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("eval_bench_train", REPO / "eval" / "bench_train.py")
    assert spec is not None and spec.loader is not None, spec
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_synthetic_rows_are_corpus_shaped(bench):
    rows = bench.synthetic_rows(120, codebook_size=256, seed=3)
    assert len(rows) == 120
    frames = [r["audio_codes"].shape[1] for r in rows] + [r["tgt_audio_codes"].shape[1] for r in rows]
    seconds = statistics.mean(frames) / bench.MEL_RVQ_FRAME_RATE
    assert 1.5 < seconds < 2.5, seconds  # the corpus' utterances are ~2 s (measured mean 1.95 s)
    for r in rows:
        assert r["audio_codes"].shape[0] == bench.MEL_RVQ_CODEBOOKS, r["audio_codes"].shape
        assert int(r["audio_codes"].max()) < 256 and int(r["audio_codes"].min()) >= 0
        assert r["lang"] != r["tgt_lang"] and "en" in (r["lang"], r["tgt_lang"]), (r["lang"], r["tgt_lang"])
        assert r["text"] and r["tgt_text"]
    again = bench.synthetic_rows(120, codebook_size=256, seed=3)
    assert all(torch.equal(a["tgt_audio_codes"], b["tgt_audio_codes"]) for a, b in zip(rows, again, strict=True))


def test_examples_in_counts_packed_examples_not_padding_runs(bench):
    from audiopalm.data.batching import PackedCollator, PaddingCollator

    ex = lambda n: {"input_ids": list(range(10, 10 + n)), "labels": [-100] + list(range(11, 10 + n))}  # noqa: E731
    packed = PackedCollator(max_len=8, pad_id=0)([[ex(3), ex(5)], [ex(2), ex(3)]])  # row 0 full, row 1 padded
    assert bench._examples_in(packed, pad_id=0) == 4
    padded = PaddingCollator(pad_id=0)([ex(3), ex(5), ex(2)])
    assert bench._examples_in(padded, pad_id=0) == 3


def test_parse_tasks_and_config_errors(bench):
    assert bench.parse_tasks("ASR:2, MT") == {"ASR": 2.0, "MT": 1.0}
    with pytest.raises(ValueError, match="bad weight"):
        bench.parse_tasks("ASR:x")
    with pytest.raises(ValueError, match="num_heads"):
        bench.BenchConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="warmup_steps"):
        bench.BenchConfig(warmup_steps=0)


def test_tiny_quick_run_writes_consistent_results(bench, tmp_path):
    out = tmp_path / "bench.json"
    argv = [
        "--quick",
        "--out",
        str(out),
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--intermediate-size",
        "64",
        "--text-vocab-size",
        "400",
        "--num-sentences",
        "60",
        "--steps",
        "2",
        "--rows-per-batch",
        "4",
        "--peak-size",
        "256",
        "--threads",
        "1",
    ]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    for key in (
        "packed_tokens_per_s",
        "padded_tokens_per_s",
        "hf_trainer_tokens_per_s",
        "packed_nonpad_fraction",
        "padded_nonpad_fraction",
        "mfu",
        "threads",
        "matmul_peak_flops",
    ):
        assert res[key] > 0, (key, res[key])
    assert res["threads"] == 1
    assert set(res["mean_example_tokens_by_task"]) == {"ASR", "AST", "TTS", "S2ST", "MT"}
    # packing leaves fewer holes than padding each example to the longest of its batch
    assert 0 < res["padded_nonpad_fraction"] < res["packed_nonpad_fraction"] <= 1, res
    # the Trainer saw exactly the padded run's batches (same examples, same order, same padding)
    assert res["hf_trainer_nonpad_fraction"] == res["padded_nonpad_fraction"]
    assert res["hf_trainer_useful_tokens_per_step"] == res["padded_useful_tokens_per_step"]
    assert res["hf_trainer_examples_per_step"] == res["padded_examples_per_step"]
    # HF's flattening trained on the same examples with no padding at all, masked between examples
    assert res["hf_flatten_nonpad_fraction"] == 1.0
    assert res["hf_flatten_useful_tokens_per_step"] == res["hf_trainer_useful_tokens_per_step"]
    assert res["hf_flatten_target_tokens_per_step"] == res["hf_trainer_target_tokens_per_step"] > 0
    assert res["hf_flatten_masks_across_examples"] is True and res["hf_flatten_tokens_per_s"] > 0
    # same global batch in tokens: packed slots are rows x max_len; useful tokens per step roughly match
    assert res["packed_slots_per_step"] == 4 * res["max_len"]
    ratio = res["padded_useful_tokens_per_step"] / res["packed_useful_tokens_per_step"]
    assert 0.5 < ratio < 2.0, ratio
    mfu = 6 * res["parameters"] * res["packed_tokens_per_s"] / res["matmul_peak_flops"]
    assert res["mfu"] == pytest.approx(mfu, rel=2e-3)
    table = out.with_suffix(".md").read_text()
    assert table.count("\n|") == 5 and "DataCollatorWithFlattening" in table and "packed" in table, table


def test_rows_from_a_token_store(bench, tmp_path):
    """--store: rows come from a real store (semantic units on tones), tasks it cannot serve are refused."""
    import argparse

    import numpy as np
    import soundfile as sf

    from audiopalm.data.manifest import Record, write_manifest
    from audiopalm.data.token_store import build_token_store
    from audiopalm.data.vocab import UnifiedVocab
    from audiopalm.tokenizers.semantic import SemanticTokenizer

    sr = 16000
    tone = lambda f, s: (0.3 * np.sin(2 * np.pi * f * np.arange(int(sr * s)) / sr)).astype(np.float32)  # noqa: E731
    tok = SemanticTokenizer(num_units=8).fit([tone(150 + 100 * i, 0.5) for i in range(4)], progress=False)
    records = []
    for i in range(4):
        src, tgt = tmp_path / f"s{i}.wav", tmp_path / f"t{i}.wav"
        sf.write(src, tone(200 + 50 * i, 0.4), sr)
        sf.write(tgt, tone(300 + 50 * i, 0.6), sr)
        records.append(
            Record(
                id=f"r{i}",
                lang="en",
                text=f"the dog {i}.",
                audio=str(src),
                tgt_lang="fr",
                tgt_text=f"le chien {i}.",
                tgt_audio=str(tgt),
            )
        )
    build_token_store(
        write_manifest(tmp_path / "m.jsonl", records), tok, tmp_path / "store", num_proc=1, progress=False
    )

    cfg = bench.BenchConfig(num_codebooks=1, text_vocab_size=300)
    rows, desc, codebook_size = bench.load_rows(argparse.Namespace(store=str(tmp_path / "store")), cfg)
    assert len(rows) == 4 and codebook_size == 8 and "token store" in desc, (len(rows), codebook_size, desc)
    vocab = UnifiedVocab.build(bench.train_tokenizer(rows, 300), codebook_size=8, num_codebooks=1)
    examples, skip = bench.render_examples(rows, vocab, bench.parse_tasks("ASR,S2ST"), max_len=448, count=20, seed=0)
    assert {e["source"] for e in examples} == {"ASR", "S2ST"} and not skip, skip
    s2st = next(e for e in examples if e["source"] == "S2ST")
    assert vocab.audio_start_id in s2st["labels"]  # the target is speech
    with pytest.raises(ValueError, match="could not be rendered"):
        bench.render_examples(rows, vocab, {"ASR": 1.0}, max_len=8, count=5, seed=0)  # every example too long
    with pytest.raises(ValueError, match="only K=1"):
        bench.load_rows(argparse.Namespace(store=str(tmp_path / "store")), bench.BenchConfig(num_codebooks=2))
