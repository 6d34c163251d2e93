"""The README's main command on the smoke profile: every stage runs, writes its files, and resumes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

AUDIOPALM = str(Path(sys.executable).with_name("audiopalm"))
STAGES = ("corpus", "tokenizer", "tokens", "text_lm", "audiopalm", "eval")


@pytest.mark.slow
def test_smoke_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([AUDIOPALM, "demo", "--profile", "smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in STAGES:
        assert (out / stage / ".done").is_file(), stage
        assert f"[{stage}] " in run.stdout
    assert (out / "audiopalm/final/model.safetensors").is_file()
    summary = json.loads((out / "eval/summary.json").read_text())
    tasks = {m["task"] for m in summary["metrics"]}
    assert {"ASR", "AST", "TTS", "S2ST", "ASR AST S2ST", "MT"} <= tasks, tasks
    html = (out / "eval/report.html").read_text()
    assert "<audio" in html and "data:image/png;base64" in html  # audio players and the loss plot
    again = subprocess.run([AUDIOPALM, "demo", "--profile", "smoke", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"[{stage}] done already" in again.stdout for stage in STAGES), again.stdout
    other = subprocess.run([AUDIOPALM, "demo", "--profile", "default", "--out", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "holds a demo run with" in other.stderr  # profiles never mix in one folder
