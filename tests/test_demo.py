"""The README's main command on the smoke profile: every stage runs, writes its files, and resumes;\nthen eval/ablations.py on its output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audiopalm.commands.demo import PROFILES

AUDIOPALM = str(Path(sys.executable).with_name("audiopalm"))
REPO = Path(__file__).resolve().parents[1]
STAGES = ("corpus", "tokenizer", "tokens", "text_lm", "peer", "audiopalm", "eval")


@pytest.mark.slow
def test_smoke_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [AUDIOPALM, "demo", "--profile", "smoke", "--out", str(out)], capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in STAGES:
        assert (out / stage / ".done").is_file(), stage
        assert f"[{stage}] " in run.stdout
    assert (out / "audiopalm/final/model.safetensors").is_file()
    assert f"try the model: audiopalm generate --checkpoint {out / 'audiopalm/final'}" in run.stdout
    gen = subprocess.run(
        [
            AUDIOPALM,
            "generate",
            "--checkpoint",
            str(out / "audiopalm/final"),
            "--task",
            "TTS",
            "--src",
            "en",
            "the dog sleeps.",
            "--out-dir",
            str(tmp_path / "gen"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0 and (tmp_path / "gen/001_TTS_en.wav").is_file(), gen.stdout + gen.stderr[-3000:]
    summary = json.loads((out / "eval/summary.json").read_text())
    tasks = {m["task"] for m in summary["metrics"]}
    assert {"ASR", "AST", "TTS", "S2ST", "ASR AST S2ST", "MT"} <= tasks, tasks
    peer = {(m["task"], m["src"], m["metric"]) for m in summary["metrics"] if "[pocketsphinx]" in m["metric"]}
    assert ("ASR", "en", "WER [pocketsphinx]") in peer and ("TTS", "en", "TTS-WER [pocketsphinx]") in peer, peer
    html = (out / "eval/report.html").read_text()
    assert "<audio" in html and "data:image/png;base64" in html  # audio players and the loss plot
    again = subprocess.run(
        [AUDIOPALM, "demo", "--profile", "smoke", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"[{stage}] done already" in again.stdout for stage in STAGES), again.stdout
    other = subprocess.run(
        [AUDIOPALM, "demo", "--profile", "default", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert other.returncode == 2 and "holds a demo run with" in other.stderr  # profiles never mix in one folder

    # eval/ablations.py on this demo: every arm trains (the base too: other steps than the demo's) and is scored
    abl = tmp_path / "ablations"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "eval/ablations.py"),
            "--demo",
            str(out),
            "--out",
            str(abl),
            "--steps",
            "4",
            "--max-items",
            "2",
            "--max-new-tokens",
            "30",
            "--probe-steps",
            "5",
            "--speech-seeds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = json.loads((abl / "ablations.json").read_text())
    arms = {(r["ablation"], r["arm"]) for r in table["rows"]}
    assert {a for a, _ in arms} == {
        "all tasks",
        "peer ASR on the same audio",
        "init: text LM vs random",
        "S2ST: direct vs chained",
        "mixture: multitask vs ASR only",
        "RVQ codebooks in the LM",
        "audio rows: mean vs codebook init",
        "vocab extension vs Speech-Llama (LoRA, ASR+AST)",
    }, arms
    assert ("init: text LM vs random", "random_init") in arms and ("RVQ codebooks in the LM", "codebooks_2") in arms
    assert ("RVQ codebooks in the LM", "codebooks_1 (base)") in arms
    assert ("audio rows: mean vs codebook init", "codebook_init") in arms
    by_arm = {r["arm"]: r for r in table["rows"]}
    for name in (
        "base",
        "codebook_init",
        "ctc-probe judge (reference audio)",
        "ctc-probe judge (another sentence's audio)",
    ):
        assert by_arm[name]["TTS-WER probe"] >= 0 and by_arm[name]["S2ST ASR-BLEU probe"] >= 0, by_arm[name]
    for r in table["rows"]:
        assert r["steps"] == (None if r["ablation"] == "peer ASR on the same audio" else 4)
        if r["arm"].startswith("ctc-probe judge"):
            continue  # its columns are the probe's, checked above
        if r["ablation"] != "S2ST: direct vs chained":
            assert r["ASR WER seen"] is not None and r["ASR WER seen"] >= 0, r
        else:
            assert r["S2ST ASR-BLEU"] is not None, r
    for arm in ("base", "random_init", "asr_only", "codebooks_2", "codebook_init"):
        assert json.loads((abl / arm / "summary.json").read_text())["steps"] == 4
    md = (abl / "ablations.md").read_text()
    assert md.count("\n| ") == len(table["rows"]) + 1 and "speech_llama" in md
    # speech is scored with 2 sampling seeds: a second, speech-only evaluation per arm with speech outputs
    assert table["info"]["speech_seeds"] == 2 and "speech seeds 0 to 1" in md
    seed1 = json.loads((abl / "eval_base_seed1" / "summary.json").read_text())
    assert set(seed1["tasks"]) == {"TTS", "S2ST", "ASR AST S2ST"} and "seed 1" in seed1["speech_decoding"]
    assert not (abl / "eval_asr_only_seed1").exists()


@pytest.mark.slow
def test_smoke_units_demo_listens_and_speaks_through_units(tmp_path):
    """The semantic-unit profile: encoder + units, acoustic stage, independent judge; the checkpoint holds the stage,
    speaks with no extra argument, and eval judges its speech with the CTC judge."""
    out = tmp_path / "demo"
    run = subprocess.run(
        [AUDIOPALM, "demo", "--profile", "smoke_units", "--out", str(out)], capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in (
        "corpus",
        "tokenizer",
        "units",
        "acoustic",
        "judge",
        "tokens",
        "text_lm",
        "peer",
        "audiopalm",
        "eval",
    ):
        assert (out / stage / ".done").is_file(), stage
    units = json.loads((out / "units/audio_tokenizer.json").read_text())
    assert units["type"] == "ctc_units"
    assert json.loads((out / "units/fit_info.json").read_text())["encoder_dev_cer"] is not None  # scored on dev
    store = json.loads((out / "tokens/train/token_store.json").read_text())
    assert units["fingerprint"] in json.dumps(store)
    final = out / "audiopalm/final"
    # the LM writes its speech word by word: the stores hold word starts, the checkpoint records it
    assert store["words"] and json.loads((final / "audiopalm.json").read_text())["output_words"]
    assert (final / "acoustic/acoustic.json").is_file()
    # the acoustic stage took its training units from those stores (made before it) instead of encoding the audio
    acoustic_cfg = yaml.safe_load((out / "acoustic/config.yaml").read_text())
    assert acoustic_cfg["data"]["stores"] == [str(out / "tokens/train"), str(out / "tokens/dev")]
    assert not acoustic_cfg["data"]["manifests"]
    assert (out / "tokens/.done").stat().st_mtime <= (out / "acoustic/.done").stat().st_mtime
    gen = subprocess.run(
        [
            AUDIOPALM,
            "generate",
            "--checkpoint",
            str(final),
            "--task",
            "TTS",
            "--src",
            "en",
            "the dog sleeps.",
            "--out-dir",
            str(tmp_path / "gen"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0 and (tmp_path / "gen/001_TTS_en.wav").is_file(), gen.stdout + gen.stderr[-3000:]
    summary = json.loads((out / "eval/summary.json").read_text())
    assert summary["judge"] == f"ctc:{out / 'judge'}"
    judged = {(m["task"], m["metric"]) for m in summary["metrics"]}
    assert ("TTS", "TTS-WER") in judged and ("TTS", "TTS-WER (ref audio)") in judged, judged
    # MT is also scored on the unseen text-only sentences the corpus stage adds to the eval manifest
    text_only = [json.loads(line) for line in (out / "corpus/text_only.jsonl").read_text().splitlines()]
    assert text_only and all("audio" not in r for r in text_only)
    test = [json.loads(line) for line in (out / "corpus/test.jsonl").read_text().splitlines()]
    en_fr = {r["text"] for r in test if (r["lang"], r.get("tgt_lang")) == ("en", "fr")}
    en_fr_text_only = {r["text"] for r in text_only if (r["lang"], r["tgt_lang"]) == ("en", "fr")}
    (mt,) = [
        m for m in summary["metrics"] if (m["task"], m["metric"], m["src"], m["tgt"]) == ("MT", "BLEU", "en", "fr")
    ]
    assert mt["n"] == len(en_fr) + len(en_fr_text_only) and en_fr_text_only, (mt, len(en_fr), len(en_fr_text_only))
    # the report plots the loss curves of the training stages
    assert "audiopalm" in json.dumps(summary.get("train_logs", {})), summary.keys()
    # the default's corpus and mixture: English and French, translation trained (and scored) en->fr only
    assert json.loads((out / "corpus/corpus.json").read_text())["languages"] == ["en", "fr"]
    scored = {(m["task"], m["src"], m["tgt"]) for m in summary["metrics"]}
    assert ("ASR", "fr", None) in scored and ("AST", "en", "fr") in scored, scored
    assert not [t for t in scored if t[0] in ("AST", "S2ST", "MT") and t[1] == "fr"], scored
    # the stages that need only the corpus ran in two lanes: the second lane's output is in OUT/STAGE.log
    assert all((out / f"{s}.log").is_file() for s in ("judge", "text_lm")), sorted(out.iterdir())
    assert not any((out / f"{s}.log").exists() for s in ("tokenizer", "units", "peer")), sorted(out.iterdir())
    # the peer heard the test split's English audio in its own stage; eval took those transcripts
    assert summary["peer_transcripts"] == str(out / "peer/transcripts.jsonl")
    assert "[judge] runs beside tokenizer / units / peer" in run.stdout

    def bench(script: str, *extra: str) -> dict:
        """eval/SCRIPT on this demo, 20 steps a run, one repeat: the JSON it wrote."""
        result = tmp_path / f"{script}.json"
        run = subprocess.run(
            [sys.executable, str(REPO / "eval" / script), "--demo", str(out), "--profile", "smoke_units"]
            + ["--steps", "20", "--repeats", "1", *extra, "--out", str(result)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return json.loads(result.read_text())

    # eval/bench_lanes.py on this demo: every arm trains and reports its speed
    lanes = bench("bench_lanes.py")
    for stage in ("stage0", "finetune"):
        got = lanes[stage]
        pair = sum(r["tokens_per_s"] for r in got["two side by side"])
        assert got["two side by side / all cores"] == round(pair / got["all cores"]["tokens_per_s"], 3) > 0
    assert set(lanes["finetune rows"]) == {"rows of 512 x 4", "rows of 256 x 8"}
    assert all(r["median tokens_per_s"] > 0 for r in lanes["finetune rows"].values())

    # eval/bench_malloc.py on this demo: glibc's defaults and keeping freed memory train the same weights bit for bit
    malloc = bench("bench_malloc.py", "--threads", "1")
    for stage in ("stage0", "acoustic", "finetune"):
        got = malloc[f"{stage}, 1 thread(s)"]
        assert got["same weights"] is True, got
        assert set(got["median tokens/s"]) == {"glibc defaults", "keep freed memory"}, got
        assert all(v > 0 for v in got["median tokens/s"].values()), got


def test_ablations_refuse_an_unknown_arm_before_any_work(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "eval/ablations.py"),
            "--demo",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "abl"),
            "--only",
            "asr_only",
            "codebooks_9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "unknown arm(s) ['codebooks_9']" in run.stderr, run.stderr
    assert not (tmp_path / "abl").exists()


def test_ablation_speech_columns_are_the_mean_over_seeds():
    sys.path.insert(0, str(REPO / "eval"))
    from ablations import mean_metrics

    def row(task, metric, value, tgt=None):
        return {"task": task, "src": "en", "tgt": tgt, "subset": "all", "metric": metric, "value": value, "n": 4}

    seed0 = [row("TTS", "TTS-WER", 10.0), row("MT", "BLEU", 5.0, "fr"), row("S2ST", "ASR-BLEU", 1.0, "fr")]
    seed1 = [row("TTS", "TTS-WER", 20.0), row("S2ST", "ASR-BLEU", 2.0, "fr")]  # a speech-only evaluation
    got = {(r["task"], r["metric"]): (r["value"], r["evaluations"]) for r in mean_metrics([seed0, seed1])}
    assert got == {("TTS", "TTS-WER"): (15.0, 2), ("MT", "BLEU"): (5.0, 1), ("S2ST", "ASR-BLEU"): (1.5, 2)}


def test_demo_runs_the_recipes_through_the_package_not_by_path(monkeypatch, tmp_path):
    from audiopalm.commands import demo

    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "_run", calls.append)
    profile = demo.PROFILES["smoke"]
    demo._text_lm(tmp_path / "corpus", profile, 0)(tmp_path / "text_lm")
    demo._audiopalm(tmp_path, profile, 0)(tmp_path / "audiopalm")
    assert [c[1:5] for c in calls] == [
        ["train", "pretrain_text", "--config", "pretrain_text"],
        ["train", "finetune_audiopalm", "--config", "finetune_audiopalm"],
    ]
    assert all(c[0].endswith("audiopalm") and not any(a.endswith(".py") for a in c) for c in calls), calls


def test_finetune_steps_replace_the_profiles_and_mark_the_folder(monkeypatch, tmp_path, capsys):
    """``--finetune-steps N``: the fine-tune runs N steps (its overrides come last, so they win), and the folder
    records N, so a folder fine-tuned another number of steps is refused rather than mixed."""
    import argparse

    from audiopalm.commands import demo
    from audiopalm.config import load_any, resolve_config

    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "_run", calls.append)

    def stage(out, name, fn, *, force=False):  # only the fine-tune's command is made; nothing runs
        if name == "audiopalm":
            fn(out / name)
        return out / name

    monkeypatch.setattr(demo, "_stage", stage)

    def args(steps):
        return argparse.Namespace(
            profile="default", out=str(tmp_path / "d"), seed=0, finetune_steps=steps, force=False, sequential=False
        )

    assert demo.run(args(2100)) == 0
    (cmd,) = calls
    overrides = [a for a in cmd if "=" in a and not a.startswith("--")]
    cfg = load_any(resolve_config("finetune_audiopalm"), overrides)
    assert (cfg.train.max_steps, cfg.train.save_every, cfg.train.eval_every) == (2100, 700, 700)
    assert json.loads((tmp_path / "d/demo.json").read_text()) == {
        "profile": "default",
        "seed": 0,
        "finetune_steps": 2100,
    }
    assert demo.run(args(None)) == 2 and "finetune_steps" in capsys.readouterr().err
    assert demo.run(args(0)) == 2 and len(calls) == 1


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_overrides_load_against_the_shipped_configs(name):
    """A profile's key=value overrides are checked when its stage starts, which for `long` is an hour in: check them
    all here, with the values they set."""
    from audiopalm.commands.demo import with_bf16
    from audiopalm.config import load_any, resolve_config

    profile = with_bf16(PROFILES[name]) if PROFILES[name].bf16 else PROFILES[name]
    for config, overrides in (
        ("pretrain_text", profile.text_lm_overrides),
        ("finetune_audiopalm", profile.finetune_overrides),
        ("train_acoustic", profile.acoustic_overrides),
    ):
        cfg = load_any(resolve_config(config), list(overrides))  # as the stage's `--config NAME` finds it
        for item in overrides:
            key, value = item.split("=", 1)
            wanted = yaml.safe_load(value)  # as apply_overrides reads it ("3e-3" stays a string until the type check)
            if isinstance(wanted, (int, float, str)):  # every scalar the profile sets is the value the stage gets
                section, field = key.split(".")
                got = getattr(getattr(cfg, section), field)
                assert got == (float(wanted) if isinstance(got, float) else wanted), (name, config, key)


def test_bf16_reaches_every_training_stage_and_only_where_native(monkeypatch, tmp_path, capsys):
    """A profile with ``bf16`` trains its encoders with ``--bf16`` and its recipes with
    ``train.mixed_precision=bf16`` where the machine computes bfloat16 natively, and in float32 elsewhere."""
    from audiopalm.commands import demo

    base = PROFILES["smoke_units"]
    bf = demo.with_bf16(base)
    assert bf.units_args[-1] == bf.judge_args[-1] == "--bf16"
    for field in ("text_lm_overrides", "finetune_overrides", "acoustic_overrides"):
        assert getattr(bf, field) == (*getattr(base, field), "train.mixed_precision=bf16"), field
    assert demo.with_bf16(PROFILES["smoke"]).judge_args == ()  # no judge stage: none is made

    seen: list[demo.Profile] = []
    monkeypatch.setattr(demo, "PROFILES", {"p": demo.dataclasses.replace(base, bf16=True)})
    monkeypatch.setattr(demo, "_corpus", lambda profile, seed: seen.append(profile))
    monkeypatch.setattr(demo, "_stage", lambda out, name, fn, force=False: (_ for _ in ()).throw(KeyboardInterrupt))
    import argparse

    args = argparse.Namespace(
        profile="p", out=str(tmp_path / "d"), seed=0, finetune_steps=None, force=False, sequential=False
    )
    for native in (True, False):
        monkeypatch.setattr(demo, "native_bf16", lambda native=native: native)
        with pytest.raises(KeyboardInterrupt):
            demo.run(args)
        assert ("--bf16" in seen[-1].units_args) is native
        assert ("bfloat16 autocast" in capsys.readouterr().out) is native


def _py(code: str):
    """A stage whose command is ``python -c code`` (nothing of audiopalm imported: quick)."""
    from audiopalm.commands import demo

    def fn(folder: Path) -> str:
        demo._run([sys.executable, "-c", code])
        return str(folder)

    return fn


def test_lanes_run_side_by_side_on_a_share_of_the_cores(monkeypatch, tmp_path, capfd):
    """Two lanes run at once (the first lane's command waits for the second's: run one after the other, it would
    time out and fail), each command with cores / lanes OMP threads; the second lane's output goes to OUT/NAME.log,
    the first's to the terminal; every stage is marked done."""
    from audiopalm.commands import demo

    monkeypatch.setattr(demo.os, "cpu_count", lambda: 4)
    flag = tmp_path / "b_started"
    wait = (
        f"import os, pathlib, sys, time\nprint('a threads', os.environ['OMP_NUM_THREADS'])\n"
        f"t = time.time()\nwhile not pathlib.Path({str(flag)!r}).exists():\n"
        f"    time.sleep(0.05)\n    if time.time() - t > 60: sys.exit(5)\nprint('a saw b')"
    )
    start = (
        f"import os, pathlib\npathlib.Path({str(flag)!r}).touch()\nprint('b threads', os.environ['OMP_NUM_THREADS'])"
    )
    lanes = [[("a", _py(wait))], [("b", _py(start)), ("c", _py("print('c ran')"))]]
    demo._side_by_side(tmp_path, lanes, sequential=False, force=False)
    terminal = capfd.readouterr().out
    assert "a threads 2" in terminal and "a saw b" in terminal and "b threads 2" not in terminal
    assert "b threads 2" in (tmp_path / "b.log").read_text() and "c ran" in (tmp_path / "c.log").read_text()
    assert all((tmp_path / s / ".done").is_file() for s in "abc")

    # --sequential: in turn, every command on all cores (OMP's default), all output on the terminal
    (tmp_path / "seq").mkdir()
    show = "import os; print('threads', os.environ.get('OMP_NUM_THREADS', 'default'))"
    demo._side_by_side(tmp_path / "seq", [[("x", _py(show))], [("y", _py(show))]], sequential=True, force=False)
    assert capfd.readouterr().out.count("threads default") == 2 and not list((tmp_path / "seq").glob("*.log"))


def test_a_failing_lane_stops_the_other(monkeypatch, tmp_path):
    """The second lane's command fails at once: the first lane's long command is stopped (not waited for), the
    failure is raised with its exit code, and neither stage is marked done."""
    import time

    from audiopalm.commands import demo

    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    lanes = [[("slow", _py("import time; time.sleep(120)"))], [("bad", _py("import sys; sys.exit(3)"))]]
    t0 = time.time()
    with pytest.raises(subprocess.CalledProcessError) as failed:
        demo._side_by_side(tmp_path, lanes, sequential=False, force=False)
    assert time.time() - t0 < 60 and failed.value.returncode == 3
    assert not (tmp_path / "slow/.done").exists() and not (tmp_path / "bad/.done").exists()
    assert not demo._RUNNING
