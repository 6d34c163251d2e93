"""The finetune_speech_llama recipe (audiopalm/recipes/finetune_speech_llama.py) end to end on a 2-layer Llama "pretrained" LM and toy 4-language sentences
spoken as word tones (builders.build_world): learning, what trains, exact resume,
the saved run's pipeline and ``audiopalm eval`` on it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from builders import build_world, losses, recipe_env, reset_accelerate, split_manifests
from builders import finetune_speech_llama_args as common

REPO = Path(__file__).resolve().parents[1]
RECIPE_MODULE = "audiopalm.recipes.finetune_speech_llama"  # run as a module of the package, never by path
RECIPE_CMD = [sys.executable, "-m", RECIPE_MODULE]
TINY = REPO / "recipes" / "configs" / "finetune_speech_llama_tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return split_manifests(build_world(tmp_path_factory.mktemp("speech_llama_world")))


def _recipe_module():
    from audiopalm.recipes import finetune_speech_llama

    return finetune_speech_llama


def run_in_process(args: list[str]) -> None:
    try:
        assert _recipe_module().main(args) == 0
    finally:
        reset_accelerate()


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("speech_llama_run") / "ref"
    torch.set_num_threads(1)
    run_in_process(common(world, out))
    return out


def test_loss_decreases_and_summary(full_run):
    from audiopalm.training import read_jsonl

    got = losses(full_run)
    assert sorted(got) == list(range(1, 9)), got
    first, last = sum(got[s] for s in range(1, 5)) / 4, sum(got[s] for s in range(5, 9)) / 4
    assert last < first - 0.05, got
    dev = {r["step"]: r["dev_loss/all"] for r in read_jsonl(full_run / "metrics.jsonl") if "dev_loss/all" in r}
    assert dev[8] < dev[4], dev
    s = json.loads((full_run / "summary.json").read_text())
    c = s["parameter_counts"]
    assert s["trainable_parameters"] == c["lora"] + c["encoder"] + c["projector"] > 0, s
    assert s["tokens_seen"] > 0 and s["train_tokens_per_s_this_run"] > 0, s
    assert s["seconds_per_embedding"] == pytest.approx(0.08), s


def test_only_lora_encoder_and_projector_change(full_run, world):
    """The base LLM stays bit-identical; LoRA (B starts at zero), encoder and projector move between checkpoints."""
    from transformers import AutoModelForCausalLM

    from audiopalm.modeling.speech_llama import SpeechLlama

    base = AutoModelForCausalLM.from_pretrained(world["lm"]).state_dict()
    mid = SpeechLlama.from_pretrained(full_run / "checkpoints" / "step_0000004", base_model=str(world["lm"]))
    final = SpeechLlama.from_pretrained(full_run / "final", base_model=str(world["lm"]))
    llm = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in final.llm.state_dict().items()
        if "lora_" not in k
    }
    assert set(llm) == set(base), sorted(set(llm) ^ set(base))[:5]
    assert all(torch.equal(llm[k], base[k]) for k in base)
    lora_b = [v for k, v in final.llm.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    a, b = mid.state_dict(), final.state_dict()
    for part in ("encoder.", "projector.", "lora_A", "lora_B"):
        keys = [k for k in a if part in k]
        assert keys and any(not torch.equal(a[k], b[k]) for k in keys), part


def test_checkpoints_are_complete_and_resume_is_bit_for_bit(full_run, world, tmp_path):
    ckpts = sorted(p.name for p in (full_run / "checkpoints").iterdir())
    assert ckpts == ["step_0000004"], ckpts
    names = {p.name for p in (full_run / "checkpoints" / ckpts[0]).iterdir()}
    assert {"speech_llama.json", "speech_modules.safetensors", "adapter", "trainer_state.json"} <= names, names
    out = tmp_path / "resumed"
    shutil.copytree(full_run / "checkpoints", out / "checkpoints")
    shutil.copy(full_run / "metrics.jsonl", out / "metrics.jsonl")  # holds steps 5..8: resume drops them first
    run_in_process(common(world, out) + ["--resume"])
    assert losses(out) == losses(full_run)


def test_saved_run_transcribes_translates_and_evaluates(full_run, world, tmp_path):
    from audiopalm.data.manifest import read_manifest
    from audiopalm.evaluation.evaluate import EvalConfig, evaluate
    from audiopalm.inference.speech_llama_pipeline import SpeechLlamaPipeline

    rows = read_manifest(world["dev"])
    pipe = SpeechLlamaPipeline.from_pretrained(full_run, device="cpu")
    outs = pipe.asr([rows[0].audio, rows[1].audio], lang=rows[0].lang, max_new_tokens=6)
    assert len(outs) == 2 and all(isinstance(o.text, str) and o.translation is None for o in outs)
    assert all(0 < len(o.ids) <= 6 for o in outs)
    one = pipe.ast(rows[0].audio, src=rows[0].lang, tgt=rows[0].tgt_lang, max_new_tokens=6)
    assert isinstance(one.translation, str) and one.text is None

    summary = evaluate(
        EvalConfig(
            checkpoint=str(full_run),
            out=str(tmp_path / "eval"),
            tasks=["ASR", "AST"],
            manifest=str(world["dev"]),
            max_items=2,
            max_new_tokens=6,
            report=False,
            progress=False,
        )
    )
    metrics = {(m["task"], m["metric"]) for m in summary["metrics"]}
    assert {("ASR", "WER"), ("ASR", "CER"), ("AST", "BLEU"), ("AST", "chrF")} <= metrics, metrics
    assert (tmp_path / "eval" / "outputs" / "ASR.jsonl").is_file()


def test_pipeline_refuses_speech_output_tasks(full_run):
    from audiopalm.inference.pipeline import PipelineError
    from audiopalm.inference.speech_llama_pipeline import SpeechLlamaPipeline

    pipe = SpeechLlamaPipeline.from_pretrained(full_run, device="cpu")
    with pytest.raises(PipelineError, match="only does ASR, AST"):
        pipe.generate("S2ST", torch.zeros(16000), "en", "fr")
    with pytest.raises(PipelineError, match="unknown language 'xx'"):
        pipe.asr(torch.zeros(16000), "xx")


def test_ctc_pretraining_runs_first_and_is_saved(world, tmp_path):
    from safetensors import safe_open

    from audiopalm.training import read_jsonl

    out = tmp_path / "ctc"
    run_in_process(
        common(world, out)
        + ["ctc.steps=3", "train.max_steps=2", "train.save_every=0", "train.eval_every=0", "optim.warmup_steps=0"]
    )
    ctc = [r for r in read_jsonl(out / "metrics.jsonl") if "ctc_loss" in r]
    assert [r["ctc_step"] for r in ctc] == [1, 2, 3] and all(r["ctc_loss"] > 0 for r in ctc), ctc
    with safe_open(str(out / "final" / "speech_modules.safetensors"), "pt") as f:
        assert any(k.startswith("ctc_head.") for k in f.keys())


def test_config_errors_name_the_field(world, tmp_path):
    from audiopalm.config import ConfigError

    with pytest.raises(ConfigError, match="data.tasks.*TTS"):
        _recipe_module().FinetuneSpeechLlamaRecipe.config_from_argv(
            common(world, tmp_path / "x") + ["data.tasks=[ASR,TTS]"]
        )
    with pytest.raises(ConfigError, match="model.encoder_heads"):
        _recipe_module().FinetuneSpeechLlamaRecipe.config_from_argv(
            common(world, tmp_path / "x") + ["model.encoder_heads=3"]
        )
    with pytest.raises(ValueError, match="data.train_manifests: empty"):
        run_in_process(["--config", str(TINY), f"model.llm={world['lm']}", f"train.output_dir={tmp_path / 'y'}"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_unbroken_run(world, tmp_path):
    """Kill -9 a run after its step-4 checkpoint, resume, and compare every step's loss exactly."""
    args = ["train.max_steps=16", "train.save_every=4", "train.keep_last=1", "train.eval_every=0"]
    ref = tmp_path / "ref"
    proc = subprocess.run(
        [*RECIPE_CMD, *common(world, ref), *args], env=recipe_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [*RECIPE_CMD, *common(world, out), *args],
        env=recipe_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None  # stderr=PIPE
    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            if (out / "checkpoints" / "step_0000004").is_dir() and max(losses(out) or [0]) >= 6:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"the run ended before it could be killed:\n{child.stderr.read()[-3000:]}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    killed_at = max(losses(out))
    assert 6 <= killed_at < 16, killed_at
    proc = subprocess.run(
        [*RECIPE_CMD, *common(world, out), *args, "--resume"],
        env=recipe_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert losses(out) == losses(ref)
