"""audiopalm.evaluation.report (eval/report.py is its command line): a fake results folder -> report.md +
report.html, rendered in headless Chromium."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiopalm.audio import io as audio
from audiopalm.evaluation import report

REPO = Path(__file__).resolve().parents[1]


METRICS: list[dict[str, Any]] = [  # summary.json's rows
    {
        "task": "ASR",
        "src": "en",
        "tgt": None,
        "split": "test",
        "subset": "seen_voices",
        "metric": "WER",
        "value": 12.3,
        "n": 100,
        "signature": "norm:audiopalm.evaluation.metrics.normalize",
    },
    {
        "task": "ASR",
        "src": "en",
        "tgt": None,
        "split": "test",
        "subset": "heldout_voice",
        "metric": "WER",
        "value": 27.85,
        "n": 40,
    },
    {
        "task": "ASR",
        "src": "en",
        "tgt": None,
        "split": "test",
        "subset": "seen_voices",
        "metric": "CER",
        "value": 4.5,
        "n": 100,
    },
    {
        "task": "AST",
        "src": "en",
        "tgt": "fr",
        "split": "test",
        "subset": "all",
        "metric": "BLEU",
        "value": 31.07,
        "n": 140,
        "signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
    },
    {
        "task": "S2ST",
        "src": "en",
        "tgt": "fr",
        "split": "test",
        "subset": "all",
        "metric": "ASR-BLEU",
        "value": 9.81,
        "n": 140,
        "signature": "judge:whisper|norm:yes|nrefs:1|tok:13a",
    },
    {"task": "TTS", "src": "en", "tgt": None, "split": "test", "subset": "all", "metric": "WER", "value": None, "n": 0},
]


def _tone(freq, seconds=0.4, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _results_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    summary = {
        "checkpoint": "runs/demo/audiopalm",
        "metrics": METRICS,
        "extra_tables": {
            "Ablation: codebook pattern": [
                {"pattern": "flatten", "TTS WER": 40.5},
                {"pattern": "delay", "TTS WER": 35.25},
            ]
        },
    }
    (root / "summary.json").write_text(json.dumps(summary))
    with (root / "train_metrics.jsonl").open("w") as f:
        for step in range(0, 50, 5):
            f.write(json.dumps({"step": step, "loss": 5.0 / (1 + step / 10), "lr": 1e-3}) + "\n")
        f.write(json.dumps({"step": 50, "eval_loss": 1.2}) + "\n")
    audio.save(root / "outputs" / "wav" / "tts-0001.wav", _tone(220), 16000)
    audio.save(root / "outputs" / "wav" / "ref-0001.wav", _tone(330), 16000)
    rows = [
        {
            "id": "en-0001",
            "task": "TTS",
            "src": "en",
            "text": "the small dog sleeps.",
            "hyp_text": "the small dog sleeps",
            "audio": "outputs/wav/tts-0001.wav",
            "ref_audio": "outputs/wav/ref-0001.wav",
        },
        {"id": "en-0002", "task": "ASR", "src": "en", "text": "no audio here", "hyp_text": "no audio"},
    ]
    (root / "outputs" / "tts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.fail(
            "headless Chromium is needed to render the report: apt-get install -y chromium (`make setup` installs it)"
        )
    return exe


def _chromium_run(page: Path, tmp: Path, *extra: str) -> str:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *extra,
        page.resolve().as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"chromium failed ({out.returncode}): {out.stderr[-2000:]}"
    return out.stdout


class _DomScan(HTMLParser):
    """Collects table cells (per table), <img> and <audio> attributes from a rendered DOM."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.audios, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "audio":
            self.audios.append(dict(attrs))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1].append(self._cell.strip())
            self._cell = None


def test_report_renders_in_chromium(tmp_path):
    root = _results_folder(tmp_path / "results")
    md, page = report.write_report(root)
    assert md == root / "report.md" and page == root / "report.html"
    assert (root / report.LOSS_PNG).stat().st_size > 1000

    dom = _chromium_run(page, tmp_path, "--dump-dom")
    scan = _DomScan()
    scan.feed(dom)
    assert "Evaluation report" in dom and "runs/demo/audiopalm" in dom
    cells = [c for t in scan.tables for c in t]
    for m in METRICS:  # every number from summary.json is in a table, 2 decimals
        if m["value"] is not None:
            assert f"{m['value']:.2f}" in cells, (m, cells)
    assert "—" in cells  # the null TTS value
    # the ASR en table: one row per subset, WER and CER columns, n
    asr = next(t for t in scan.tables if "CER" in t)
    assert asr[:5] == ["split", "subset", "WER", "CER", "n"], asr
    assert asr[5:10] == ["test", "seen_voices", "12.30", "4.50", "100"], asr
    assert asr[10:15] == ["test", "heldout_voice", "27.85", "—", "40"], asr
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0" in dom.replace("BLEU: ", "")
    assert "35.25" in cells and "delay" in cells  # the extra table
    # the goals chart and the loss plot are embedded, not linked
    assert sorted(i["alt"] for i in scan.imgs) == ["goals: measured / target", "loss curves"]
    assert all(i["src"].startswith("data:image/png;base64,") for i in scan.imgs)
    # one sample (the row without audio is not one): two players, both pointing at real wavs, and the first
    # screen's copies of them
    srcs = sorted(a["src"] for a in scan.audios)
    assert srcs == [
        "examples/00_TTS_ours.wav",
        "examples/00_TTS_reference.wav",
        "outputs/wav/ref-0001.wav",
        "outputs/wav/tts-0001.wav",
    ]
    for src in srcs:
        wav, sr = audio.load(root / src)
        assert sr == 16000 and len(wav) == 6400
    assert "the small dog sleeps." in cells


def test_report_screenshot_is_not_blank(tmp_path):
    root = _results_folder(tmp_path / "results")
    _, page = report.write_report(root)
    shot = tmp_path / "shot.png"
    _chromium_run(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1800", "--hide-scrollbars")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)  # [H, W, C] floats
    assert pixels.shape[:2] == (1800, 1200), pixels.shape
    assert pixels[..., :3].std() > 0.05  # text, tables and the plot, not an empty page


def test_markdown_report(tmp_path):
    root = _results_folder(tmp_path / "results")
    md, _ = report.write_report(root)
    text = md.read_text()
    assert "### ASR English (en)" in text and "### AST English → French (en→fr)" in text
    assert "| test | seen_voices | 12.30 | 4.50 | 100 |" in text
    assert "| test | all | 31.07 | 140 |" in text
    assert f"![loss curves]({report.LOSS_PNG})" in text
    assert "[generated](<outputs/wav/tts-0001.wav>)" in text and "[reference](<outputs/wav/ref-0001.wav>)" in text
    assert "## Ablation: codebook pattern" in text


def test_summary_rows_from_metrics_module_are_read(tmp_path):
    from audiopalm.evaluation.metrics import bleu, summary_row, wer

    root = tmp_path / "results"
    root.mkdir()
    rows = [
        summary_row(wer(["a b c"], ["a b x"], "en"), task="ASR", src="en", subset="seen_voices"),
        summary_row(bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), task="AST", src="en", tgt="de"),
    ]
    (root / "summary.json").write_text(json.dumps({"checkpoint": "ckpt", "metrics": rows}))
    md, _ = report.write_report(root)
    text = md.read_text()
    assert "| test | seen_voices | 33.33 | 1 |" in text and "| test | all | 53.73 | 1 |" in text
    assert "WER: norm:audiopalm|lang:en|jiwer:" in text


def test_runs_named_by_folder_or_mapping(tmp_path):
    root = _results_folder(tmp_path / "results")
    (root / "train_metrics.jsonl").unlink()
    for name in ("audiopalm", "speech_llama"):
        (root / "runs" / name).mkdir(parents=True)
        (root / "runs" / name / "train_metrics.jsonl").write_text(
            '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.0}\n'
        )
    res = report.load_results(root)
    assert sorted(res.runs) == ["runs/audiopalm", "runs/speech_llama"]
    summary = json.loads((root / "summary.json").read_text())
    summary["train_logs"] = {"AudioPaLM": "runs/audiopalm/train_metrics.jsonl"}
    (root / "summary.json").write_text(json.dumps(summary))
    res = report.load_results(root)
    assert list(res.runs) == ["AudioPaLM"] and [r["loss"] for r in res.runs["AudioPaLM"]] == [3.0, 2.0]


def test_no_training_log_no_plot_and_missing_audio_is_shown(tmp_path, capsys):
    root = _results_folder(tmp_path / "results")
    (root / "train_metrics.jsonl").unlink()
    (root / "outputs" / "wav" / "ref-0001.wav").unlink()
    md, page = report.write_report(root)
    assert not (root / report.LOSS_PNG).exists()
    assert "Loss curves" not in md.read_text()
    body = page.read_text()
    samples = body[body.index("<h2>Samples") :]
    assert "missing: outputs/wav/ref-0001.wav" in samples and samples.count("<audio") == 1
    assert "1 sample wav file(s) missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda s: s["metrics"][0].pop("metric"), r"metrics\[0\]: field 'metric': missing"),
        (lambda s: s["metrics"][1].update(value="12"), r"metrics\[1\]: field 'value': expected a finite number"),
        (lambda s: s["metrics"][2].update(lang="en"), r"metrics\[2\]: field 'lang': unknown"),
        (lambda s: s.update(metrics={}), r"field 'metrics': expected a list"),
        (
            lambda s: s.update(extra_tables={"t": {"columns": ["a"], "rows": [[1, 2]]}}),
            r"rows\[0\]: expected a list of 1",
        ),
    ],
)
def test_bad_summary_names_the_field(tmp_path, mutate, match):
    root = _results_folder(tmp_path / "results")
    summary = json.loads((root / "summary.json").read_text())
    mutate(summary)
    (root / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(report.ReportError, match=match):
        report.write_report(root)


def test_bad_train_log_names_file_and_line(tmp_path):
    root = _results_folder(tmp_path / "results")
    with (root / "train_metrics.jsonl").open("a") as f:
        f.write('{"loss": 1.0}\n')
    with pytest.raises(report.ReportError, match=r"train_metrics.jsonl:12: field 'step'"):
        report.write_report(root)


def test_cli(tmp_path):
    root = _results_folder(tmp_path / "results")
    out = subprocess.run(
        [sys.executable, str(REPO / "eval" / "report.py"), str(root)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert f"wrote {root / 'report.html'}" in out.stdout and (root / "report.md").is_file()
    out = subprocess.run(
        [sys.executable, str(REPO / "eval" / "report.py"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "no such results folder" in out.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "eval" / "report.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "summary.json" in out.stdout


def test_text_is_escaped(tmp_path):
    root = _results_folder(tmp_path / "results")
    rows = [
        {
            "id": "x<1>",
            "task": "TTS",
            "src": "en",
            "text": "a <script>alert(1)</script> | b",
            "audio": "outputs/wav/tts-0001.wav",
        }
    ]
    (root / "outputs" / "tts.jsonl").write_text(json.dumps(rows[0]) + "\n")
    md, page = report.write_report(root)
    body = page.read_text()
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "x&lt;1&gt;" in body
    assert "a <script>alert(1)</script> \\| b" in md.read_text()  # a pipe cannot break the md table


def test_package_never_runs_files_by_location():
    """`audiopalm eval` renders its report by import, never by executing a file found beside the package."""
    for path in (REPO / "audiopalm").rglob("*.py"):
        text = path.read_text()
        assert "spec_from_file_location" not in text and "runpy" not in text, path
