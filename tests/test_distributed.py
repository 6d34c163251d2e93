"""Multi-process training on CPU, and resuming after a SIGKILL.

What runs here (2 CPU processes, gloo):

- ``recipes/accelerate/cpu.yaml`` (DDP) through ``accelerate launch``: losses equal a 1-process run
  with the same global batch; then a 2-process resume from a mid-run checkpoint repeats the losses.
- ``recipes/accelerate/deepspeed_zero2.yaml`` through ``accelerate launch`` (the recipe names gloo
  for DeepSpeed's process group when there is no GPU; it checks WORLD_SIZE == processes set up and
  prints the engine/optimizer types, which the test checks): losses equal the 1-process run.
- A 1-process run SIGKILLed mid-way and resumed gives the same loss curve as an unbroken run.

- ``recipes/accelerate/deepspeed_zero3.yaml``, 2 CPU processes: trains (loss falls) and gathers a full
  HF model at the end; losses are not compared (zero.Init initialises the weights differently).
- ``recipes/accelerate/fsdp.yaml`` without a GPU: the recipe refuses (accelerate would quietly run DDP).

- The two fine-tune recipes (AudioPaLM, Speech-Llama) through the same launcher: 2-process DDP and DeepSpeed ZeRO-2
  equal a 1-process run with the same global batch; ZeRO-3 sets up (the full vocabulary of a sharded embedding),
  trains and saves a complete final/.

What does not run here (no GPU): ``multi_gpu.yaml`` and FSDP training, bf16. Every accelerate config
is parsed by accelerate's own loader and checked for the fields the recipes rely on.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import (
    REPO,
    finetune_audiopalm_args,
    finetune_speech_llama_args,
    losses,
    pretrain_text_args,
    recipe_env,
    run_recipe_in_process,
    write_corpus,
)

RECIPE_MODULE = "audiopalm.recipes.pretrain_text"  # the recipe of the checks above the fine-tune section
RECIPE_CMD = [sys.executable, "-m", RECIPE_MODULE]

ACCEL = REPO / "recipes" / "accelerate"
ACCELERATE = Path(sys.executable).with_name("accelerate")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


_common = pretrain_text_args


def run_in_process(args: list[str]) -> None:
    run_recipe_in_process("pretrain_text", args)


def _launch(config: str, args: list[str], *, extra: tuple[str, ...] = (), timeout: int = 600) -> str:
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ACCEL / config), *extra, "-m", RECIPE_MODULE, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=recipe_env(), cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _assert_close(a: dict[int, float], b: dict[int, float], rel: float = 1e-5) -> None:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=rel), (step, a[step], b[step])


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory) -> dict[int, float]:
    """Reference: 1 process, micro-batch 4, no accumulation (global batch 4)."""
    out = tmp_path_factory.mktemp("one")
    run_in_process(_common(corpus, out) + ["train.micro_batch_size=4"])
    return losses(out)


@pytest.mark.slow
def test_ddp_two_processes_match_one_and_resume(corpus, one_process, tmp_path):
    out = tmp_path / "ddp"
    log = _launch("cpu.yaml", _common(corpus, out) + ["train.micro_batch_size=2"])
    assert "MULTI_CPU x2" in log and "global batch 4 = 2 x 1 accum x 2" in log, log[-3000:]
    ddp = losses(out)
    _assert_close(ddp, one_process)
    # Resume the 2-process run from its step-4 checkpoint (both processes' RNG files) with 2 processes.
    (out / "final").rename(out / "final_first")
    log = _launch("cpu.yaml", _common(corpus, out) + ["train.micro_batch_size=2", "--resume"])
    assert "resumed from" in log and "step_0000004" in log, log[-3000:]
    assert losses(out) == ddp


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_match_one(corpus, one_process, tmp_path):
    """ZeRO-2 over gloo, 2 processes x micro-batch 1 x accumulation 2 (first run builds DeepSpeed's shm op)."""
    out = tmp_path / "ds"
    log = _launch(
        "deepspeed_zero2.yaml",
        _common(corpus, out) + ["train.micro_batch_size=1", "train.grad_accum_steps=2", "train.save_every=0"],
        extra=("--mixed_precision", "no"),
    )
    assert "DEEPSPEED x2" in log and "DeepSpeedZeroOptimizer, ZeRO stage 2" in log, log[-3000:]
    _assert_close(losses(out), one_process)
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_deepspeed_zero3_two_processes_train_and_save_a_full_model(corpus, tmp_path):
    """ZeRO-3 over gloo: runs with 2 processes, learns, gathers a full HF model at the end.

    Its losses are not compared with the 1-process run: zero.Init initialises the weights shard by
    shard, so the starting point differs (measured: step-1 loss 5.778 vs 5.764).
    """
    from transformers import AutoModelForCausalLM

    out = tmp_path / "z3"
    log = _launch(
        "deepspeed_zero3.yaml",
        _common(corpus, out) + ["train.micro_batch_size=2", "train.save_every=0"],
        extra=("--mixed_precision", "no"),
    )
    assert "DEEPSPEED x2" in log and "DeepSpeedZeroOptimizer_Stage3, ZeRO stage 3" in log, log[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(1, 9)) and got[8] < got[1] - 0.2, got
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert sum(p.numel() for p in model.parameters()) > 0 and model.config.num_hidden_layers == 2


@pytest.mark.slow
def test_fsdp_without_gpu_fails_loudly(corpus, tmp_path):
    """accelerate would quietly run plain DDP on CPU for an FSDP config; the recipe refuses instead."""
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ACCEL / "fsdp.yaml"),
        "--mixed_precision",
        "no",
        "-m",
        RECIPE_MODULE,
        *_common(corpus, tmp_path / "fsdp"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=recipe_env(), cwd=REPO)
    assert proc.returncode != 0 and "asks for FSDP but accelerate set up MULTI_CPU" in proc.stderr, proc.stderr[-3000:]


def test_sigkill_then_resume_matches_unbroken_run(corpus, tmp_path):
    """Kill -9 a run after its step-10 checkpoint, resume, and compare every step's loss exactly."""
    args = ["train.max_steps=40", "train.save_every=10", "train.keep_last=1", "train.micro_batch_size=8"]
    ref = tmp_path / "ref"
    run_in_process(_common(corpus, ref) + args)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*RECIPE_CMD, *_common(corpus, out), *args],
        env=recipe_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None  # stderr=PIPE
    deadline = time.time() + 90
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "checkpoints" / "step_0000010").is_dir() and max(losses(out) or [0]) >= 12:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(losses(out))
    assert 12 <= killed_at < 40, killed_at

    run_in_process(_common(corpus, out) + args + ["--resume"])
    assert losses(out) == losses(ref)  # exact: steps 1..10 from before the kill, 11..40 after the resume
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000030"]  # keep_last=1


@pytest.mark.parametrize("name", ["cpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_accelerate_configs_parse(name):
    """Every shipped accelerate config loads with accelerate's own loader and has what the recipes expect."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(ACCEL / f"{name}.yaml"))
    expected = {
        "cpu": DistributedType.MULTI_GPU,
        "multi_gpu": DistributedType.MULTI_GPU,
        "deepspeed_zero2": DistributedType.DEEPSPEED,
        "deepspeed_zero3": DistributedType.DEEPSPEED,
        "fsdp": DistributedType.FSDP,
    }[name]
    assert cfg.distributed_type == expected and cfg.num_processes == 2 and cfg.num_machines == 1
    assert cfg.main_process_port == 0  # a free port: runs side by side do not collide
    if name == "cpu":
        assert not cfg.use_cpu and cfg.mixed_precision == "no"  # use_cpu would start a single process
    if name.startswith("deepspeed"):
        ds = cfg.deepspeed_config
        assert ds["zero_stage"] == int(name[-1])
        # accumulation and clipping must come from the recipe config only
        assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds, ds
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    header = (ACCEL / f"{name}.yaml").read_text().splitlines()[:6]
    assert any(
        f'accelerate launch --config_file "$(audiopalm train --list-accelerate {name})"' in line for line in header
    ), header


# ------------------------------------------------------------------------------------------------ every recipe
# The same 2-process checks for the two fine-tune recipes (the pretrain recipe's are above): DDP equals one process,
# ZeRO-2 equals one process, ZeRO-3 sets up (the model's full vocabulary is read from the sharded weight), learns
# and gathers a full model. Resume is covered per recipe in its own test module (1 process, bit for bit) and here
# for DDP (pretrain); DeepSpeed runs take no resumable checkpoints (train.save_every=0).


@pytest.fixture(scope="module")
def finetune_worlds(tmp_path_factory):
    from builders import build_world, split_manifests

    return split_manifests(build_world(tmp_path_factory.mktemp("worlds")))


def _finetune_args(recipe: str, world: dict, out: Path) -> list[str]:
    args = {"finetune_audiopalm": finetune_audiopalm_args, "finetune_speech_llama": finetune_speech_llama_args}
    return args[recipe](world, out) + ["train.eval_every=0", "train.save_every=0"]


def _launch_recipe(recipe: str, config: str, args: list[str], *, timeout: int = 900) -> str:
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ACCEL / config),
        "--mixed_precision",
        "no",
        "-m",
        f"audiopalm.recipes.{recipe}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=recipe_env(), cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


@pytest.fixture(scope="module")
def finetune_one_process(finetune_worlds, tmp_path_factory):
    """Reference per recipe: 1 process, micro-batch 4, no accumulation (global batch 4)."""
    refs = {}
    for recipe in ("finetune_audiopalm", "finetune_speech_llama"):
        out = tmp_path_factory.mktemp(recipe)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                f"audiopalm.recipes.{recipe}",
                *_finetune_args(recipe, finetune_worlds, out),
                "train.micro_batch_size=4",
                "train.grad_accum_steps=1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=recipe_env(),
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        refs[recipe] = losses(out)
    return refs


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["finetune_audiopalm", "finetune_speech_llama"])
@pytest.mark.parametrize("config", ["cpu.yaml", "deepspeed_zero2.yaml"])
def test_finetune_two_processes_match_one(recipe, config, finetune_worlds, finetune_one_process, tmp_path):
    out = tmp_path / "two"
    log = _launch_recipe(
        recipe,
        config,
        _finetune_args(recipe, finetune_worlds, out) + ["train.micro_batch_size=1", "train.grad_accum_steps=2"],
    )
    assert "global batch 4 = 1 x 2 accum x 2" in log, log[-3000:]
    if config.startswith("deepspeed"):
        assert "DEEPSPEED x2" in log and "ZeRO stage 2" in log, log[-3000:]
    # Speech-Llama has dropout in its encoder and LoRA: the random draws of 2 processes differ from one's
    rel = 1e-4 if recipe == "finetune_audiopalm" else 0.1
    _assert_close(losses(out), finetune_one_process[recipe], rel=rel)
    assert (out / "final" / "complete.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["finetune_audiopalm", "finetune_speech_llama"])
def test_finetune_deepspeed_zero3_sets_up_learns_and_saves(recipe, finetune_worlds, tmp_path):
    """ZeRO-3 shards every weight at construction: the AudioPaLM set-up once read the embedding's shard shape (0 rows)
    and refused ("the model's embedding has 0 rows but the text tokenizer has ... tokens"). AudioPaLM runs with the
    reading loss at an inner layer, whose final norm and output layer are called outside the model's forward."""
    out = tmp_path / "z3"
    reading = ["data.read_weight=0.5", "data.read_layer=1"] if recipe == "finetune_audiopalm" else []
    log = _launch_recipe(
        recipe,
        "deepspeed_zero3.yaml",
        _finetune_args(recipe, finetune_worlds, out) + ["train.micro_batch_size=2", "optim.lr=0.01", *reading],
    )
    assert "DEEPSPEED x2" in log and "ZeRO stage 3" in log, log[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(1, 9)) and all(math.isfinite(v) for v in got.values()), got
    assert (out / "final" / "complete.json").is_file()
    if recipe == "finetune_audiopalm":
        from audiopalm.modeling.extend import load_checkpoint

        model, vocab, _ = load_checkpoint(out / "final")
        assert model.get_input_embeddings().weight.shape[0] >= len(vocab) > vocab.audio_offset
    else:  # the gathered weights, not the empty ZeRO-3 shards (from_pretrained loads them strictly)
        from audiopalm.modeling.speech_llama import SpeechLlama

        model = SpeechLlama.from_pretrained(out / "final", base_model=str(finetune_worlds["lm"]))
        assert all(p.numel() > 0 for p in model.projector.parameters())
