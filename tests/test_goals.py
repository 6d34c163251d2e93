"""The report's first screen (audiopalm.evaluation.goals + audiopalm.evaluation.report): goals against targets from a synthetic summary,
the chart and audio examples in report.html / report.md, and loss curves read from the recipes' metrics.jsonl."""

import json
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest

from audiopalm.audio import io as audio
from audiopalm.evaluation import goals, report
from audiopalm.evaluation.report import MetricRow


def _row(task, metric, value, *, src="en", tgt=None, subset="all", n=50):
    return MetricRow(task=task, metric=metric, value=value, src=src, tgt=tgt, subset=subset, n=n)


def _metrics(*, tts_ref: float = 15.0) -> list[MetricRow]:
    """A summary where each goal kind is met, missed or absent (AST has no rows at all)."""
    return [
        _row("ASR", "WER", 8.0, subset="seen_voices"),
        _row("ASR", "WER", 30.0, subset="heldout_voice"),
        _row("ASR", "WER [pocketsphinx]", 85.5, subset="seen_voices"),
        _row("MT", "BLEU", 52.0, tgt="fr", n=100),
        _row("TTS", "TTS-WER", 20.0),
        _row("TTS", "TTS-WER (ref audio)", tts_ref),
        _row("TTS", "TTS-WER [pocketsphinx]", 90.0),
        _row("TTS", "TTS-WER [pocketsphinx] (ref audio)", 81.0),
        _row("S2ST", "ASR-BLEU", 22.0, tgt="fr", subset="seen_voices"),
        _row("S2ST", "ASR-BLEU", 12.0, tgt="fr", subset="heldout_voice", n=10),
        _row("ASR AST S2ST", "ASR-BLEU", 25.0, tgt="fr", subset="seen_voices"),
        _row("ASR AST S2ST", "ASR-BLEU", 10.0, tgt="fr", subset="heldout_voice", n=10),
        _row("S2ST", "ASR-BLEU", 99.0, tgt="es", subset="seen_voices"),  # another pair: no goal reads it
    ]


def _by_label(results) -> dict:
    return {r.goal.label: r for r in results}


def test_goal_statuses_from_a_synthetic_summary():
    res = _by_label(goals.measure_goals(_metrics(), judge="ctc"))
    assert [r.goal.label for r in goals.measure_goals(_metrics(), "ctc")] == [g.label for g in goals.GOALS]
    asr = res["English ASR WER, seen voices"]
    assert (asr.status, asr.measured.value, asr.measured.n, asr.bound) == (goals.MET, 8.0, 50, 10)
    assert (asr.peer.name, asr.peer.value) == ("pocketsphinx", 85.5) and asr.ref_audio is None and not asr.notes
    assert res["English ASR WER, held-out voice"].status == goals.NOT_MET  # 30 > 25
    for label in ("AST en→fr BLEU, seen voices", "AST en→fr BLEU, held-out voice"):
        assert res[label].status == goals.NOT_MEASURED and res[label].measured is None
        assert "no AST en-fr seen_voices BLEU" in res["AST en→fr BLEU, seen voices"].notes[0]
    mt = res["MT en→fr BLEU"]
    assert mt.status == goals.MET and mt.notes == ["n = 100 < 500"]
    tts = res["TTS English, judge WER"]
    assert tts.status == goals.MET and tts.ref_audio.value == 15.0
    assert (tts.peer.name, tts.peer.value, tts.peer_ref.value) == ("pocketsphinx", 90.0, 81.0)
    rel = res["TTS English, judge WER vs reference audio"]
    assert rel.status == goals.MET and rel.bound == 30.0 and rel.base.value == 15.0  # 20 <= 2 x 15
    s2st = res["S2ST en→fr ASR-BLEU, held-out voice"]
    assert s2st.status == goals.NOT_MET and s2st.notes == ["n = 10 < 50"]
    assert res["S2ST en→fr ASR-BLEU, seen voices"].status == goals.MET
    # where --max-items capped the figure, the note says how to score the pair in full
    capped = _by_label(goals.measure_goals(_metrics(), "ctc", max_items=10))
    assert capped["S2ST en→fr ASR-BLEU, held-out voice"].notes == [
        "n = 10 < 50 (--max-items 10: add --full-pairs en-fr)"
    ]
    full = _by_label(goals.measure_goals(_metrics(), "ctc", max_items=10, full_pairs=["en-fr"]))
    assert full["S2ST en→fr ASR-BLEU, held-out voice"].notes == ["n = 10 < 50"]
    chained_seen, chained_held = (
        res["S2ST en→fr chained ≥ direct, seen voices"],
        res["S2ST en→fr chained ≥ direct, held-out voice"],
    )
    assert (chained_seen.status, chained_seen.bound) == (goals.MET, 22.0)  # 25 >= 22
    assert (chained_held.status, chained_held.bound) == (goals.NOT_MET, 12.0)  # 10 < 12
    assert chained_seen.progress == pytest.approx(25 / 22) and res["English ASR WER, held-out voice"].progress < 1


def test_relative_goal_fails_when_far_from_the_reference_and_self_judging_is_not_measured():
    res = _by_label(goals.measure_goals(_metrics(tts_ref=5.0), judge="ctc"))
    assert res["TTS English, judge WER"].status == goals.MET  # 20 <= 30
    assert res["TTS English, judge WER vs reference audio"].status == goals.NOT_MET  # 20 > 2 x 5
    own = _by_label(goals.measure_goals(_metrics(), judge=goals.SELF_JUDGE))
    for label, r in own.items():
        if r.goal.judged:
            assert r.status == goals.NOT_MEASURED and "not independent" in r.notes[-1], label
            assert r.measured.value is not None  # the figure is still shown
        else:
            assert r.status == res[label].status, label


def test_goal_definitions_are_checked():
    with pytest.raises(ValueError, match="op: expected"):
        goals.Goal("x", "ASR", "en", None, "all", "WER", "<", 10)
    pairs = {(g.task, g.src, g.tgt) for g in goals.GOALS}
    assert ("S2ST", "en", "fr") in pairs and ("ASR", "en", None) in pairs


def _tone(freq, seconds=0.3, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _eval_folder(root):
    """A results folder as `audiopalm eval` writes it: the corpus wavs outside, outputs inside."""
    corpus = root / "corpus" / "wav"
    for name, f in (("en-1", 220), ("fr-1", 330), ("en-2", 440), ("fr-2", 550)):
        audio.save(corpus / f"{name}.wav", _tone(f), 16000)
    out = root / "eval"
    for name, f in (("tts-1", 660), ("s2st-1", 770), ("s2st-2", 880)):
        audio.save(out / "outputs" / "wav" / f"{name}.wav", _tone(f), 16000)
    metrics = [
        {"task": m.task, "src": m.src, "tgt": m.tgt, "subset": m.subset, "metric": m.metric, "value": m.value, "n": m.n}
        for m in _metrics()
    ]
    (out / "summary.json").write_text(json.dumps({"checkpoint": "ckpt", "judge": "ctc", "metrics": metrics}))
    tts = [
        {
            "id": "s1-en",
            "task": "TTS",
            "src": "en",
            "subset": "all",
            "text": "the dog sleeps.",
            "hyp_text": "the dog sleeps",
            "audio": "outputs/wav/tts-1.wav",
            "ref_audio": "../corpus/wav/en-1.wav",
        }
    ]
    s2st = [
        {
            "id": f"s{i}-en-fr",
            "task": "S2ST",
            "src": "en",
            "tgt": "fr",
            "subset": subset,
            "text": "the dog sleeps.",
            "ref_text": "le chien dort.",
            "hyp_text": "le chien",
            "audio": f"outputs/wav/s2st-{i}.wav",
            "ref_audio": f"../corpus/wav/fr-{i}.wav",
            "input_audio": f"../corpus/wav/en-{i}.wav",
        }
        for i, subset in ((1, "seen_voices"), (2, "heldout_voice"))
    ]
    for name, rows in (("TTS", tts), ("S2ST", s2st)):
        (out / "outputs" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


class _Scan(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.audios, self.sections = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "audio":
            self.audios.append((self.sections[-1] if self.sections else None, a))
        elif tag == "section":
            self.sections.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag == "section":
            self.sections.append(None)


def test_first_screen_html_embeds_the_chart_and_plays_examples_that_exist(tmp_path):
    out = _eval_folder(tmp_path)
    md, page = report.write_report(out)
    body = page.read_text()
    assert body.index('id="goals"') < body.index("<h2>Metrics</h2>")  # the goals come first
    scan = _Scan()
    scan.feed(body)
    chart = [i for i in scan.imgs if i.get("alt") == "goals: measured / target"]
    assert len(chart) == 1 and chart[0]["src"].startswith("data:image/png;base64,")
    assert (out / report.GOALS_PNG).stat().st_size > 1000
    first = [a["src"] for where, a in scan.audios if where == "goals"]
    # TTS: reference + ours (text input); S2ST: input + reference + ours, one per voice subset
    assert len(first) == 2 + 3 * 2, first
    assert all(src.startswith(report.EXAMPLES_DIR + "/") and (out / src).is_file() for src in first)
    copied = sorted(p.name for p in (out / report.EXAMPLES_DIR).glob("*.wav"))
    assert copied == sorted(src.split("/")[1] for src in first)
    wav, _ = audio.load(out / "examples" / "01_S2ST_input.wav")
    ref, _ = audio.load(tmp_path / "corpus" / "wav" / "en-1.wav")
    assert np.allclose(wav, ref, atol=1e-4)  # the input of the seen-voice example
    for status in ("✓ met", "✗ not met", "– not measured"):
        assert status in body
    assert "pocketsphinx: 85.5 (n=50)" in body
    text = md.read_text()
    assert text.index("## Goals") < text.index("## Metrics")
    assert f"Chart: [{report.GOALS_PNG}](<{report.GOALS_PNG}>)" in text
    assert "| English ASR WER, seen voices | ≤ 10 | 8.0 | 50 | ✓ met | pocketsphinx: 85.5 (n=50) | — |  |" in text
    assert "[input](<examples/01_S2ST_input.wav>)" in text and "[ours](<examples/00_TTS_ours.wav>)" in text
    # a second report replaces the examples of the first
    (out / "outputs" / "S2ST.jsonl").unlink()
    report.write_report(out)
    assert sorted(p.name for p in (out / report.EXAMPLES_DIR).glob("*.wav")) == [
        "00_TTS_ours.wav",
        "00_TTS_reference.wav",
    ]


def test_first_screen_without_any_goal_figure(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / report.GOALS_PNG).write_bytes(b"stale")
    (root / "summary.json").write_text(json.dumps({"checkpoint": "c", "metrics": []}))
    md, _ = report.write_report(root)
    assert not (root / report.GOALS_PNG).exists()
    assert md.read_text().count("– not measured") == len(goals.GOALS)


METRICS_JSONL = [
    {"step": 10, "loss": 6.0, "lr": 1e-3, "tokens_per_s": 600.0},
    {"step": 20, "loss": 4.0, "lr": 1e-3},
    {"step": 20, "dev_loss/ASR": 4.5, "dev_loss/TTS": 6.5, "dev_loss/all": 5.5},
    {"step": 30, "loss": 3.0},
    {"step": 40, "dev_loss/ASR": 3.5, "dev_loss/TTS": 6.0, "dev_loss/all": 4.75},
]


def test_loss_curves_read_the_recipes_metrics_jsonl():
    curves = report.loss_curves(METRICS_JSONL)
    assert curves == {
        "train": [(10, 6.0), (20, 4.0), (30, 3.0)],
        "dev ASR": [(20, 4.5), (40, 3.5)],
        "dev TTS": [(20, 6.5), (40, 6.0)],
        "dev all": [(20, 5.5), (40, 4.75)],
    }
    one_task = report.loss_curves([{"step": 5, "loss": 2.0}, {"step": 5, "dev_loss/text": 1.7, "dev_loss/all": 1.7}])
    assert one_task == {"train": [(5, 2.0)], "dev text": [(5, 1.7)]}  # "all" would repeat the one task
    legacy = report.loss_curves([{"step": 1, "eval_loss": 1.2}, {"step": 2, "dev_l1": 0.3}])
    assert legacy == {"dev loss": [(1, 1.2)], "dev l1": [(2, 0.3)]}


def test_report_plots_runs_given_by_folder(tmp_path):
    root = tmp_path / "eval"
    root.mkdir()
    (root / "summary.json").write_text(json.dumps({"checkpoint": "c", "metrics": []}))
    runs = []
    for name in ("text_lm", "audiopalm"):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS_JSONL))
        runs.append(run)
    res = report.load_results(root, runs=runs)
    assert list(res.runs) == ["text_lm", "audiopalm"] and len(res.runs["audiopalm"]) == len(METRICS_JSONL)
    md, page = report.write_report(root, runs=runs)
    assert (root / report.LOSS_PNG).stat().st_size > 1000 and "## Loss curves" in md.read_text()
    assert page.read_text().count('alt="loss curves"') == 1
    # metrics.jsonl inside the results folder is found too; a folder without a log is a clear error
    (root / "audiopalm").mkdir()
    (root / "audiopalm" / "metrics.jsonl").write_text(json.dumps(METRICS_JSONL[0]) + "\n")
    assert list(report.load_results(root).runs) == ["audiopalm"]
    with pytest.raises(report.ReportError, match=r"nothing: no metrics.jsonl or train_metrics.jsonl"):
        (tmp_path / "nothing").mkdir()
        report.load_results(root, runs=[tmp_path / "nothing"])


def test_cli_runs_option(tmp_path):
    root = tmp_path / "eval"
    root.mkdir()
    (root / "summary.json").write_text(json.dumps({"checkpoint": "c", "metrics": []}))
    run = tmp_path / "text_lm"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS_JSONL))
    assert report.main([str(root), "--runs", str(run)]) == 0
    assert (root / report.LOSS_PNG).is_file()


def test_focus_pair_keeps_all_its_rows_the_others_max_items():
    """A manifest like the demo's test split: 100 sentences per pair, 50 of them by the held-out voice."""
    from audiopalm.data.tasks import parse_task
    from audiopalm.evaluation.evaluate import is_full_pair, subset_of, task_items

    rows = []
    for i in range(100):
        speaker = "en-v09" if i % 2 == 0 else f"en-v0{i % 9}"
        for tgt in ("fr", "es"):
            rows.append(
                {
                    "id": f"s{i:05d}-en-{tgt}",
                    "lang": "en",
                    "text": f"sentence {i}.",
                    "audio": f"wav/en/s{i:05d}.wav",
                    "tgt_lang": tgt,
                    "tgt_text": f"phrase {i}.",
                    "tgt_audio": f"wav/{tgt}/s{i:05d}.wav",
                    "speaker": speaker,
                    "split": "test",
                }
            )
    held_out = {"en-v09"}
    counts = {}
    for task in ("ASR", "AST", "TTS", "S2ST", "MT"):
        spec = parse_task(task)
        groups = task_items(spec, rows, 10, Counter(), ["en-fr"])
        counts[task] = {k: Counter(subset_of(r, spec, held_out) for r in v) for k, v in groups.items()}
    both = {"seen_voices": 50, "heldout_voice": 50}
    assert counts["ASR"] == {("en", None): both}  # one clip per sentence, however many translations
    assert counts["AST"] == {("en", "fr"): both, ("en", "es"): {"seen_voices": 5, "heldout_voice": 5}}
    assert counts["S2ST"][("en", "fr")] == both
    assert counts["TTS"] == {("en", None): {"all": 100}} and counts["MT"][("en", "es")] == {"all": 10}
    assert is_full_pair("en", None, ["en"]) and not is_full_pair("en", "fr", ["en"])
    without = task_items(parse_task("AST"), rows, 10, Counter(), [])
    assert {k: len(v) for k, v in without.items()} == {("en", "fr"): 10, ("en", "es"): 10}


def test_first_per_subset():
    from audiopalm.evaluation.evaluate import first_per_subset

    lines = [{"split": "test", "subset": s} for s in ("seen", "held", "seen", "seen", "held", "held")]
    assert first_per_subset(lines, 2) == [0, 1, 2, 4]
    assert first_per_subset(lines, None) == list(range(6))
