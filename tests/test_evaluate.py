"""audiopalm eval on a tiny manifest (tones as speech, corpus.json with a held-out voice) and a tiny checkpoint."""

import json

import pytest
import torch
from builders import SR, make_checkpoint, tone

from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import Record, write_manifest
from audiopalm.data.tasks import parse_task
from audiopalm.evaluation.evaluate import EvalConfig, main, task_items

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread

ALL_TASKS = ["ASR", "AST", "TTS", "S2ST", "MT", "ASR AST S2ST"]


def make_corpus(root):
    """4 manifest rows over 3 source clips: en-1 is paired with fr and es (ASR must see it once)."""
    wav = root / "wav"
    for name, f in (("en-1", 220), ("en-2", 330), ("fr-1", 440), ("fr-2", 550), ("es-1", 660), ("en-3", 770)):
        audio_io.save(wav / f"{name}.wav", tone(0.5, f), SR)
    rows = [
        Record(
            "s1-en-fr",
            "en",
            "the dog sleeps.",
            str(wav / "en-1.wav"),
            "fr",
            "le chien dort.",
            str(wav / "fr-1.wav"),
            speaker="en-v00",
            split="test",
        ),
        Record(
            "s1-en-es",
            "en",
            "the dog sleeps.",
            str(wav / "en-1.wav"),
            "es",
            "el perro duerme.",
            str(wav / "es-1.wav"),
            speaker="en-v00",
            split="test",
        ),
        Record(
            "s2-en-fr",
            "en",
            "a cat runs.",
            str(wav / "en-2.wav"),
            "fr",
            "un chat court.",
            str(wav / "fr-2.wav"),
            speaker="en-v09",
            split="test",
        ),
        Record(
            "s3-fr-en",
            "fr",
            "le chien dort.",
            str(wav / "fr-1.wav"),
            "en",
            "the dog sleeps.",
            str(wav / "en-3.wav"),
            speaker="fr-v01",
            split="test",
        ),
    ]
    manifest = write_manifest(root / "test.jsonl", rows)
    (root / "corpus.json").write_text(json.dumps({"seed": 0, "held_out_voices": ["en-v09", "fr-v09"]}))
    return manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return make_checkpoint(root / "ckpt"), make_corpus(root / "corpus"), root


def test_task_items_dedup_and_grouping(setup):
    import collections
    import dataclasses

    from audiopalm.data.manifest import read_manifest

    rows = [dataclasses.asdict(r) for r in read_manifest(setup[1])]
    skipped = collections.Counter[str]()
    asr = task_items(parse_task("ASR"), rows, None, skipped)
    assert {k: [r["id"] for r in v] for k, v in asr.items()} == {
        ("en", None): ["s1-en-fr", "s2-en-fr"],
        ("fr", None): ["s3-fr-en"],
    }
    ast = task_items(parse_task("AST"), rows, 1, skipped)
    assert {k: len(v) for k, v in ast.items()} == {("en", "fr"): 1, ("en", "es"): 1, ("fr", "en"): 1}
    rows.append({**rows[0], "id": "mono", "tgt_lang": None, "tgt_text": None, "tgt_audio": None})
    task_items(parse_task("MT"), rows, None, skipped)
    assert skipped == {"MT: no tgt_lang": 1}


def test_eval_writes_outputs_summary_and_report(setup, tmp_path, capsys):
    ckpt, manifest, _ = setup
    out = tmp_path / "results"
    rc = main(
        [
            "--checkpoint",
            str(ckpt),
            "--manifest",
            str(manifest),
            "--tasks",
            *ALL_TASKS,
            "--out",
            str(out),
            "--max-new-tokens",
            "8",
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    got = {(m["task"], m["src"], m["tgt"], m["subset"], m["metric"]) for m in summary["metrics"]}
    want: set[tuple[str, str, str | None, str, str]] = set()  # task, src, tgt, subset, metric
    for src, subset in (("en", "seen_voices"), ("en", "heldout_voice"), ("fr", "seen_voices")):
        want |= {("ASR", src, None, subset, m) for m in ("WER", "CER")}
    for src, tgt, subset in (
        ("en", "fr", "seen_voices"),
        ("en", "fr", "heldout_voice"),
        ("en", "es", "seen_voices"),
        ("fr", "en", "seen_voices"),
    ):
        want |= {("AST", src, tgt, subset, m) for m in ("BLEU", "chrF")}
        want |= {("S2ST", src, tgt, subset, m) for m in ("ASR-BLEU", "ASR-BLEU (ref audio)")}
        want |= {
            ("ASR AST S2ST", src, tgt, subset, m)
            for m in ("WER", "CER", "BLEU", "chrF", "ASR-BLEU", "ASR-BLEU (ref audio)")
        }
    for src, tgt in (("en", "fr"), ("en", "es"), ("fr", "en")):
        want |= {("MT", src, tgt, "all", m) for m in ("BLEU", "chrF")}
    for src in ("en", "fr"):  # TTS: text input, one subset; en text "the dog sleeps." occurs twice, once scored
        want |= {("TTS", src, None, "all", m) for m in ("TTS-WER", "TTS-WER (ref audio)")}
    assert got == want, (got - want, want - got)
    by_key = {(m["task"], m["src"], m["tgt"], m["subset"], m["metric"]): m for m in summary["metrics"]}
    assert by_key[("ASR", "en", None, "seen_voices", "WER")]["n"] == 1
    assert by_key[("TTS", "en", None, "all", "TTS-WER")]["n"] == 2
    assert "judge:model-asr" in by_key[("S2ST", "en", "fr", "seen_voices", "ASR-BLEU")]["signature"]
    for m in summary["metrics"]:
        assert m["split"] == "test" and 0 <= m["value"] and m["n"] >= 1, m

    files = sorted(p.name for p in (out / "outputs").glob("*.jsonl"))
    assert files == sorted(["ASR.jsonl", "AST.jsonl", "TTS.jsonl", "S2ST.jsonl", "MT.jsonl", "ASR_AST_S2ST.jsonl"])
    tts = [json.loads(line) for line in (out / "outputs" / "TTS.jsonl").read_text().splitlines()]
    assert len(tts) == 3 and all(r["audio"].startswith("outputs/wav/TTS/") for r in tts)
    for r in tts:
        wav, sr = audio_io.load(out / r["audio"])
        assert sr == SR and wav.size == 3 * 640  # 8 new tokens: <|audio_start|> + 7 -> 3 whole frames of 640 samples
        assert (out / r["ref_audio"]).is_file() and isinstance(r["hyp_text"], str) and "judge_ref_text" in r
    chained = [json.loads(line) for line in (out / "outputs" / "ASR_AST_S2ST.jsonl").read_text().splitlines()]
    assert len(chained) == 4 and {"hyp_transcript", "hyp_translation", "ref_text", "ref_audio"} <= set(chained[0])
    asr = [json.loads(line) for line in (out / "outputs" / "ASR.jsonl").read_text().splitlines()]
    assert [r["subset"] for r in asr] == ["seen_voices", "heldout_voice", "seen_voices"]
    html = (out / "report.html").read_text()
    assert "ASR-BLEU" in html and "heldout_voice" in html and (out / "report.md").is_file()
    assert "wrote" in capsys.readouterr().out
    # speech is sampled with the pipeline's default (text greedy), and the report says so
    from audiopalm.inference.pipeline import SPEECH_SAMPLING

    s = SPEECH_SAMPLING
    assert summary["speech_decoding"] == f"sampled: temperature {s.temperature}, top-k {s.top_k}, seed {s.seed}"
    assert f"Speech decoding: {summary['speech_decoding']}" in (out / "report.md").read_text()
    assert summary["text_decoding"] == "beam search (4 beams): ASR, AST, MT; the other text greedy"  # the default


def test_eval_from_a_token_store_without_corpus_json(setup, tmp_path):
    from audiopalm.data.token_store import build_token_store
    from audiopalm.inference.pipeline import AudioPaLM

    ckpt, manifest, root = setup
    tok = AudioPaLM.from_pretrained(ckpt, device="cpu").audio_tokenizer
    store = build_token_store(manifest, tok, tmp_path / "store", progress=False, num_proc=1)
    (manifest.parent / "corpus.json").rename(tmp_path / "corpus.json")  # no held-out voices known
    try:
        out = tmp_path / "results"
        rc = main(
            [
                "--checkpoint",
                str(ckpt),
                "--store",
                str(store.path),
                "--tasks",
                "ASR",
                "--out",
                str(out),
                "--max-new-tokens",
                "4",
                "--no-report",
                "--quiet",
            ]
        )
    finally:
        (tmp_path / "corpus.json").rename(manifest.parent / "corpus.json")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {(m["src"], m["subset"], m["metric"], m["n"]) for m in summary["metrics"]} == {
        ("en", "all", "WER", 2),
        ("en", "all", "CER", 2),
        ("fr", "all", "WER", 1),
        ("fr", "all", "CER", 1),
    }
    assert not (out / "report.html").exists()


@pytest.fixture
def heard(monkeypatch):
    """The peer "pocketsphinx" replaced by a fake English-only ASR that hears "the dog sleeps." in every clip; the
    list it returns holds the number of clips of each call."""
    import audiopalm.evaluation.evaluate as ev
    from audiopalm.evaluation.judges import CallableJudge

    calls: list[int] = []

    def fake_peer(wavs, sample_rate, lang):
        if lang != "en":
            raise ValueError(f"no model for {lang!r}")
        calls.append(len(wavs))
        return ["the dog sleeps."] * len(wavs)

    real = ev.make_eval_judge
    monkeypatch.setattr(
        ev,
        "make_eval_judge",
        lambda name, pipe, **kw: (
            CallableJudge(fake_peer, name="peer") if name == "pocketsphinx" else real(name, pipe, **kw)
        ),
    )
    return calls


def test_peer_asr_rows_sit_beside_the_models(setup, tmp_path, heard):
    """--peer: a second ASR system transcribes the ASR input audio and the generated / reference speech;
    its rows are named "<metric> [peer]"; a language it lacks becomes a note, not a failure."""
    ckpt, manifest, _ = setup
    out = tmp_path / "results"
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--manifest",
                str(manifest),
                "--tasks",
                "ASR",
                "TTS",
                "--out",
                str(out),
                "--peer",
                "pocketsphinx",
                "--max-new-tokens",
                "4",
                "--no-report",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    by_key = {(m["task"], m["src"], m["subset"], m["metric"]): m["value"] for m in summary["metrics"]}
    # ASR en: s1 "the dog sleeps." (seen voice) heard right, s2 "a cat runs." (held-out voice) all wrong
    assert by_key[("ASR", "en", "seen_voices", "WER [pocketsphinx]")] == 0
    assert by_key[("ASR", "en", "heldout_voice", "WER [pocketsphinx]")] == 100
    assert ("ASR", "en", "seen_voices", "WER") in by_key  # the model's own row is still there
    assert {k for k in by_key if k[0] == "TTS" and "[" in k[3]} == {
        ("TTS", "en", "all", "TTS-WER [pocketsphinx]"),
        ("TTS", "en", "all", "TTS-WER [pocketsphinx] (ref audio)"),
    }
    assert not any(k[1] == "fr" and "[" in k[3] for k in by_key)
    assert any("fr" in n and "no pocketsphinx row" in n for n in summary["notes"])
    assert heard == [2, 2, 2]  # ASR en inputs, TTS en generated speech, TTS en reference speech
    # --peer-max-items 1: the peer hears the first utterance of each subset only, and its rows say so
    heard.clear()
    argv = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--tasks", "TTS", "--out", str(tmp_path / "r1")]
    assert main([*argv, "--peer", "pocketsphinx", "--peer-max-items", "1", "--max-new-tokens", "4", "--quiet"]) == 0
    assert heard == [1, 1]
    rows = json.loads((tmp_path / "r1" / "summary.json").read_text())["metrics"]
    assert {m["metric"]: m["n"] for m in rows if m["src"] == "en"} == {
        "TTS-WER": 2,
        "TTS-WER (ref audio)": 2,
        "TTS-WER [pocketsphinx]": 1,
        "TTS-WER [pocketsphinx] (ref audio)": 1,
    }
    with pytest.raises(ValueError, match="peer: expected"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["ASR"], manifest=str(manifest), peer="model")


def test_peer_transcripts_made_before_are_not_heard_again(setup, tmp_path, heard):
    """`audiopalm transcribe` writes a peer's transcripts of a manifest's audio (each distinct file once, in manifest
    order, only the languages asked); eval --peer-transcripts takes the input and reference audio's transcripts from
    that file and hears only the generated speech; a file made by another judge, or given without --peer, is refused
    before the model runs."""
    from pathlib import Path

    from audiopalm.commands.main import main as cli

    ckpt, manifest, _ = setup
    made = tmp_path / "peer.jsonl"
    transcribe = ["transcribe", "--manifest", str(manifest), "--judge", "pocketsphinx", "--quiet", "--out"]
    assert cli([*transcribe, str(made), "--langs", "en"]) == 0
    lines = [json.loads(line) for line in made.read_text().splitlines()]
    assert [Path(x["audio"]).name for x in lines] == ["en-1.wav", "en-2.wav", "en-3.wav"]  # en-1 once, en-3 a target
    assert {(x["lang"], x["judge"], x["text"]) for x in lines} == {("en", "pocketsphinx", "the dog sleeps.")}
    assert heard == [3]
    assert cli([*transcribe, str(tmp_path / "all.jsonl")]) == 2  # French too: this peer has no French model
    assert not (tmp_path / "all.jsonl").exists()
    # the held-out voice's clip (en-2) written down right by hand: eval takes it from the file instead of hearing it
    lines[1]["text"] = "a cat runs."
    made.write_text("".join(json.dumps(x) + "\n" for x in lines))
    heard.clear()
    out = tmp_path / "results"
    argv = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--tasks", "ASR", "TTS", "--out", str(out)]
    argv += ["--peer", "pocketsphinx", "--max-new-tokens", "4", "--no-report", "--quiet"]
    assert main([*argv, "--peer-transcripts", str(made)]) == 0
    assert heard == [2]  # the TTS speech the model wrote, nothing else
    summary = json.loads((out / "summary.json").read_text())
    by_key = {(m["task"], m["subset"], m["metric"]): m["value"] for m in summary["metrics"] if m["src"] == "en"}
    assert by_key[("ASR", "heldout_voice", "WER [pocketsphinx]")] == 0  # 100 when heard (the test above)
    assert by_key[("ASR", "seen_voices", "WER [pocketsphinx]")] == 0
    assert by_key[("TTS", "all", "TTS-WER [pocketsphinx] (ref audio)")] == 0
    other = tmp_path / "other.jsonl"
    other.write_text(made.read_text().replace('"pocketsphinx"', '"whisper:tiny"'))
    for peer, transcripts, match in (
        ("pocketsphinx", other, "not by the peer 'pocketsphinx'"),
        (None, made, "give the peer"),
        ("pocketsphinx", tmp_path / "none.jsonl", "no such"),
    ):
        with pytest.raises(ValueError, match=match):
            EvalConfig(
                checkpoint=str(ckpt),
                out=str(tmp_path),
                tasks=["ASR"],
                manifest=str(manifest),
                peer=peer,
                peer_transcripts=str(transcripts),
            )


def test_greedy_speech_option(setup, tmp_path):
    """--speech-temperature 0: greedy speech, and summary.json says so."""
    ckpt, manifest, _ = setup
    out = tmp_path / "greedy"
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--manifest",
                str(manifest),
                "--tasks",
                "TTS",
                "--out",
                str(out),
                "--max-new-tokens",
                "8",
                "--speech-temperature",
                "0",
                "--quiet",
                "--no-report",
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["speech_decoding"] == "greedy"


def test_beam_search_option_is_for_text_outputs(setup, tmp_path):
    """--num-beams 2 --beam-tasks ASR: ASR is beam-searched (the pipeline's beam output), TTS's sampled speech is
    untouched; --num-beams 1: all greedy."""
    ckpt, manifest, _ = setup
    runs = {}
    for beams in (1, 2):
        out = tmp_path / f"beams{beams}"
        assert (
            main(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--manifest",
                    str(manifest),
                    "--tasks",
                    "ASR",
                    "TTS",
                    "--out",
                    str(out),
                    "--max-new-tokens",
                    "6",
                    "--num-beams",
                    str(beams),
                    "--beam-tasks",
                    "ASR",
                    "MT",
                    "--quiet",
                ]
            )
            == 0
        )
        runs[beams] = out
    summary = json.loads((runs[2] / "summary.json").read_text())
    assert summary["text_decoding"] == "beam search (2 beams): ASR, MT; the other text greedy"
    assert f"Text decoding: {summary['text_decoding']}" in (runs[2] / "report.md").read_text()
    assert json.loads((runs[1] / "summary.json").read_text())["text_decoding"] == "greedy"
    from audiopalm.inference.pipeline import AudioPaLM

    asr = [json.loads(line) for line in (runs[2] / "outputs/ASR.jsonl").read_text().splitlines()]
    pipe = AudioPaLM.from_pretrained(ckpt, device="cpu")
    want = pipe.generate(
        "ASR", [str(manifest.parent / "wav/en-1.wav")], "en", max_new_tokens=6, num_beams=2, early_stopping=True
    )
    assert asr[0]["id"] == "s1-en-fr" and asr[0]["hyp_text"] == want[0].text
    for r1, r2 in zip(
        *[[json.loads(x) for x in (runs[b] / "outputs/TTS.jsonl").read_text().splitlines()] for b in (1, 2)],
        strict=True,
    ):
        assert (runs[1] / r1["audio"]).read_bytes() == (runs[2] / r2["audio"]).read_bytes()
    with pytest.raises(ValueError, match="num_beams"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["ASR"], manifest=str(manifest), num_beams=0)
    with pytest.raises(ValueError, match="S2ST speaks"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["ASR"], manifest=str(manifest), beam_tasks=["S2ST"])
    assert EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["MT"], manifest=str(manifest)).beam_tasks == [
        "ASR",
        "AST",
        "MT",
    ]


def test_bad_options_are_clear_errors(setup, tmp_path, capsys):
    ckpt, manifest, _ = setup
    with pytest.raises(ValueError, match="judge: expected"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["ASR"], manifest=str(manifest), judge="google")
    with pytest.raises(ValueError, match="unknown task 'XYZ'"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["XYZ"], manifest=str(manifest))
    with pytest.raises(ValueError, match="exactly one of manifest / store"):
        EvalConfig(checkpoint=str(ckpt), out=str(tmp_path), tasks=["ASR"])
    with pytest.raises(ValueError, match="speech_temperature"):
        EvalConfig(
            checkpoint=str(ckpt), out=str(tmp_path), tasks=["TTS"], manifest=str(manifest), speech_temperature=-1
        )
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--manifest",
                str(tmp_path / "none.jsonl"),
                "--tasks",
                "ASR",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "no such manifest" in capsys.readouterr().err


def test_bench_generate_quick_writes_the_figures(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "eval" / "bench_generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", path)
    assert spec is not None and spec.loader is not None, path
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    n = torch.get_num_threads()
    try:
        assert (
            bench.main(["--quick", "--tokens", "6", "--batch-sizes", "1", "2", "--out", str(tmp_path / "b.json")]) == 0
        )
    finally:
        torch.set_num_threads(n)
    res = json.loads((tmp_path / "b.json").read_text())
    for key in (
        "cached_tokens_per_s",
        "uncached_tokens_per_s",
        "constrained_overhead_fraction",
        "sampled_tokens_per_s",
        "speech_sampler_overhead_fraction",
    ):
        assert isinstance(res[key], float), (key, res[key])
    assert res["cached_tokens_per_s"] > 0 and res["uncached_tokens_per_s"] > 0 and res["sampled_tokens_per_s"] > 0
    assert set(res["per_batch"]) == {"1", "2"} and res["headline_batch_size"] == 1
    assert "uncached_tokens_per_s" not in res["per_batch"]["2"]  # uncached: batch 1 only by default
    assert res["setup"]["audio_tokens"] == 6 and 0 <= res["constraint_time_fraction"] < 1
    assert 0 < res["sampler_time_fraction"] < 1
    # the static cache decodes exactly what the dynamic one does (greedy), at both batch sizes
    assert all(row["static_cache_same_output"] is True for row in res["per_batch"].values())
    lim = res["limits"]
    assert lim["flops_per_token"] == 2 * res["setup"]["parameters"]
    assert lim["compute_limit_tokens_per_s"] == pytest.approx(lim["matmul_peak_flops"] / lim["flops_per_token"], 1e-3)
    share = res["profile"]["share"]
    assert 0 < share["model_forward"] < 1 and 0 < share["segment_constraint"] <= share["logits_processors"] < 1
    parts = share["model_forward"] + share["logits_processors"] + share["generate_loop_rest"]
    assert parts == pytest.approx(1, abs=2e-3)
    calls = res["speech_output"]["decoder_calls_per_audio_s"]
    assert calls["codec_k2_flatten"] == 50 and calls["units_acoustic_stage"] == 25


def test_mt_is_scored_on_text_only_rows(setup, tmp_path):
    """A manifest of text-only MT pairs (no audio, no placeholder clips): MT is scored on every row and the
    tasks that need audio skip them, counted."""
    ckpt, _, _ = setup
    rows = [
        Record(f"t{i}-en-fr", "en", text, tgt_lang="fr", tgt_text=fr, split="test")
        for i, (text, fr) in enumerate(
            [
                ("the dog sleeps.", "le chien dort."),
                ("a cat runs.", "un chat court."),
                ("the bird sings.", "l'oiseau chante."),
            ]
        )
    ]
    manifest = write_manifest(tmp_path / "data" / "mt.jsonl", rows)
    cfg = EvalConfig(
        checkpoint=str(ckpt),
        out=str(tmp_path / "r"),
        tasks=["MT", "ASR", "TTS"],
        manifest=str(manifest),
        max_new_tokens=6,
        report=False,
        progress=False,
    )
    from audiopalm.evaluation.evaluate import evaluate

    summary = evaluate(cfg)
    mt = [m for m in summary["metrics"] if m["task"] == "MT"]
    assert mt and {m["n"] for m in mt} == {3} and not any(m["task"] in ("ASR", "TTS") for m in summary["metrics"])
    skipped = {r["reason"]: r["count"] for r in summary["extra_tables"]["Skipped utterances"]}
    assert skipped == {"ASR: no audio": 3, "TTS: no audio": 3}


def test_full_pairs_keep_all_rows_and_runs_give_loss_curves(setup, tmp_path):
    """--max-items 1 with --full-pairs en-fr: en->fr (and ASR of en) on all their rows, the other pairs on one;
    --runs: the report plots the run's metrics.jsonl (train + per-task dev loss)."""
    ckpt, manifest, _ = setup
    run = tmp_path / "audiopalm_run"
    run.mkdir()
    lines = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "dev_loss/ASR": 4.5, "dev_loss/AST": 5.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "results"
    argv = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--tasks", "ASR", "AST", "--out", str(out)]
    argv += ["--max-items", "1", "--max-new-tokens", "4", "--batch-size", "2", "--quiet"]
    assert main([*argv, "--full-pairs", "en-fr", "--runs", str(run)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    n = {
        (m["task"], m["src"], m["tgt"], m["subset"]): m["n"]
        for m in summary["metrics"]
        if "WER" in m["metric"] or m["metric"] == "BLEU"
    }
    assert n == {
        ("ASR", "en", None, "seen_voices"): 1,  # en: both clips (one per voice subset)
        ("ASR", "en", None, "heldout_voice"): 1,
        ("ASR", "fr", None, "seen_voices"): 1,
        ("AST", "en", "fr", "seen_voices"): 1,  # en->fr: both rows
        ("AST", "en", "fr", "heldout_voice"): 1,
        ("AST", "en", "es", "seen_voices"): 1,
        ("AST", "fr", "en", "seen_voices"): 1,
    }
    assert summary["full_pairs"] == ["en-fr"] and summary["max_items"] == 1
    assert summary["train_logs"] == {"audiopalm_run": "../audiopalm_run/metrics.jsonl"}
    assert (out / "loss_curves.png").stat().st_size > 1000 and "## Loss curves" in (out / "report.md").read_text()
    asr = [json.loads(line) for line in (out / "outputs" / "ASR.jsonl").read_text().splitlines()]
    assert all((out / r["input_audio"]).is_file() for r in asr)
    # a run folder without a log is refused before any evaluation (without --full-pairs: test_goals.py)
    with pytest.raises(ValueError, match=r"runs: .*nowhere: no such run folder"):
        EvalConfig(
            checkpoint=str(ckpt),
            out=str(tmp_path / "r3"),
            tasks=["ASR"],
            manifest=str(manifest),
            runs=[str(tmp_path / "nowhere")],
        )
    with pytest.raises(ValueError, match=r"full_pairs: expected SRC-TGT"):
        EvalConfig(
            checkpoint=str(ckpt), out=str(tmp_path / "r3"), tasks=["ASR"], manifest=str(manifest), full_pairs=["en>fr"]
        )


def test_pairs_a_checkpoint_was_not_trained_on_are_skipped_and_counted(setup, tmp_path):
    """A checkpoint that records its training languages (audiopalm.json ``task_languages``) is scored on those
    only: an untrained direction would only measure the prior of the tasks it was trained on."""
    import shutil

    from audiopalm.evaluation.evaluate import evaluate

    ckpt, manifest, _ = setup
    mine = tmp_path / "ckpt"
    shutil.copytree(ckpt, mine)
    layout = json.loads((mine / "audiopalm.json").read_text())
    layout["task_languages"] = {"ASR": ["en"], "MT": ["en-fr"]}
    (mine / "audiopalm.json").write_text(json.dumps(layout))
    cfg = EvalConfig(
        checkpoint=str(mine),
        out=str(tmp_path / "r"),
        tasks=["ASR", "MT"],
        manifest=str(manifest),
        max_new_tokens=4,
        report=False,
        progress=False,
    )
    summary = evaluate(cfg)
    assert {(m["task"], m["src"], m.get("tgt")) for m in summary["metrics"]} <= {
        ("ASR", "en", None),
        ("MT", "en", "fr"),
    }
    assert any(m["task"] == "ASR" for m in summary["metrics"]) and any(m["task"] == "MT" for m in summary["metrics"])
    skipped = {r["reason"]: r["count"] for r in summary["extra_tables"]["Skipped utterances"]}
    assert skipped == {"ASR: fr not trained": 1, "MT: en-es not trained": 1, "MT: fr-en not trained": 1}, skipped
