"""The finetune_audiopalm recipe (audiopalm/recipes/finetune_audiopalm.py) end to end: a 2-layer Llama "pretrained" LM, a tiny fitted mel_rvq tokenizer and a
token store of toy 4-language sentences spoken as word tones (seconds)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from builders import build_world, losses, recipe_env, reset_accelerate, weight_of
from builders import finetune_audiopalm_args as common

REPO = Path(__file__).resolve().parents[1]
RECIPE_MODULE = "audiopalm.recipes.finetune_audiopalm"  # run as a module of the package, never by path
RECIPE_CMD = [sys.executable, "-m", RECIPE_MODULE]
CONFIGS = REPO / "recipes" / "configs"
TINY = CONFIGS / "finetune_audiopalm_tiny.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")


def run_recipe(args: list[str], *, ok: bool = True, timeout: int = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RECIPE_CMD, *args], capture_output=True, text=True, timeout=timeout, env=recipe_env())
    if ok:
        assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _recipe_module():
    from audiopalm.recipes import finetune_audiopalm

    return finetune_audiopalm


def run_in_process(args: list[str]) -> None:
    """Run the recipe's ``main`` here (no interpreter start-up), then reset accelerate's singletons."""
    try:
        assert _recipe_module().main(args) == 0
    finally:
        reset_accelerate()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory) -> tuple[Path, str]:
    """Full fine-tune, 8 steps (checkpoints at 4 and 8 -> step 4 kept as resumable, final at 8; an export at 4)."""
    out = tmp_path_factory.mktemp("full")
    proc = run_recipe(common(world, out) + ["train.log_with=tensorboard", "train.export_every=4"])
    return out, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ full fine-tune


def test_loss_decreases_and_metrics_are_logged(full_run):
    from audiopalm.training import read_jsonl

    out, _ = full_run
    rows = read_jsonl(out / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert all({"lr", "tokens_per_s", "tokens_seen", "grad_norm"} <= set(r) for r in train)
    assert train[-1]["loss"] < train[0]["loss"] - 0.5, [r["loss"] for r in train]
    assert [r["lr"] for r in train[:3]] == pytest.approx([0.0, 5e-3, 1e-2])
    dev = [r for r in rows if "dev_loss/all" in r]
    assert [r["step"] for r in dev] == [4, 8]
    assert {"dev_loss/ASR", "dev_loss/TTS", "dev_loss/S2ST", "dev_loss/ASR AST S2ST"} <= set(dev[-1])
    assert dev[-1]["dev_loss/all"] < dev[0]["dev_loss/all"]
    assert list(out.rglob("events.out.tfevents.*")), "TensorBoard events"


def test_summary_counts_skips_and_trainable_parameters(full_run, world):
    out, log = full_run
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 8 and s["trainable_parameters"] == s["parameters"] and not s["lora"]
    assert s["tokens_seen"] > 0 and s["wall_s_this_run"] > 0
    # the 2 monolingual rows have no translation: AST, S2ST and MT leave them out; the chain is en-fr/fr-en only
    assert s["skips"]["rows_left_out"] == {"AST: no tgt_lang": 2, "S2ST: no tgt_lang": 2, "MT: no tgt_lang": 2}
    assert "rows left out (missing fields)" in log
    # ASR is de-duplicated by source audio: 26 translated rows have 24 source wavs, + 2 monolingual rows
    assert "ASR 26 rows" in log and "AST 26 rows" in log and "ASR AST S2ST 8 rows" in log, log[-3000:]


def test_final_checkpoint_loads_with_plain_transformers_and_generates(full_run, world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audiopalm.data.tasks import prompt_ids
    from audiopalm.data.token_store import load_token_store
    from audiopalm.inference.generation import generate, split_segments
    from audiopalm.modeling.extend import load_checkpoint

    out, _ = full_run
    final = out / "final"
    assert (final / "model.safetensors").is_file() and (final / "audiopalm.json").is_file()
    assert not [p for p in final.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    plain = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert plain.config.vocab_size % 64 == 0 and plain.config.vocab_size >= len(tok)
    last, first = tok.convert_tokens_to_ids("<a_1_15>"), tok.convert_tokens_to_ids("<a_0_0>")
    assert isinstance(last, int) and isinstance(first, int) and last > first, (last, first)

    model, vocab, audio_tok = load_checkpoint(final)
    assert vocab.num_codebooks == 2 and "ASR AST S2ST" in vocab.tasks
    # the languages of each task's training rows (what lets the pipeline fill in a language left out)
    langs = vocab.layout.task_languages
    assert set(langs) == set(vocab.tasks) and {"en-fr", "fr-en"} <= set(langs["ASR AST S2ST"]), langs
    assert all("-" not in x for x in langs["ASR"]) and all("-" in x for x in langs["AST"]), langs
    row = load_token_store(world["store"])[0]
    for task in ("ASR", "TTS", "ASR AST S2ST"):
        [ids] = generate(model, vocab, [prompt_ids(row, task, vocab)], task, max_new_tokens=24)
        assert len(ids) >= 1
        segments = split_segments(ids, task, vocab)
        assert isinstance(segments[0], str if task.startswith("ASR") else torch.Tensor), (task, segments)


def test_exports_are_evaluable_models_of_their_step(full_run):
    """``train.export_every``: ``exports/step_N`` loads as ``final/`` does, holds step N's weights (not the final
    ones) and its card names its step; the last step is ``final/`` itself, not exported twice."""
    from audiopalm.modeling.extend import COMPLETE_MARKER, load_checkpoint
    from audiopalm.training import read_jsonl

    out, _ = full_run
    assert sorted(p.name for p in (out / "exports").iterdir()) == ["step_0000004"]
    export = out / "exports" / "step_0000004"
    model, vocab, _ = load_checkpoint(export)
    final, final_vocab, _ = load_checkpoint(out / "final")
    assert vocab.layout == final_vocab.layout
    same = [torch.equal(a, b) for a, b in zip(model.state_dict().values(), final.state_dict().values(), strict=True)]
    assert not all(same), "the export holds the final weights"
    assert json.loads((export / COMPLETE_MARKER).read_text())["step"] == 4
    dev = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("step") == 4 and "dev_loss/all" in r]
    assert f"| all | {dev[0]['dev_loss/all']:.4g} |" in (export / "README.md").read_text()


def test_checkpoints_are_complete_and_pruned(full_run):
    out, _ = full_run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004"]
    ck = out / "checkpoints" / "step_0000004"
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["step"] == 4 and set(state["data"]) == {"mixture", "closed", "open"}  # the packer's state
    assert set(state["data"]["mixture"]) == {"epoch", "position", "skipped", "seed"}
    for name in ("model.safetensors", "tokenizer.json", "optimizer.safetensors", "scheduler.json", "rng_rank0.json"):
        assert (ck / name).is_file(), name


def test_resume_is_bit_for_bit(full_run, world, tmp_path):
    """Resuming from the step-4 checkpoint reproduces steps 5..8 exactly (weights, Adam, schedule, batch stream)."""
    ref, _ = full_run
    out = tmp_path / "resumed"
    shutil.copytree(ref / "checkpoints", out / "checkpoints")
    shutil.copy(ref / "metrics.jsonl", out / "metrics.jsonl")  # holds steps 5..8: resume drops them first
    run_in_process(common(world, out) + ["--resume"])
    assert losses(out) == losses(ref)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004"]


def test_gradient_checkpointing_gives_the_same_losses(full_run, world, tmp_path):
    ref, _ = full_run
    out = tmp_path / "gc"
    run_in_process(
        common(world, out) + ["train.gradient_checkpointing=true", "train.save_every=0", "train.eval_every=0"]
    )
    got, want = losses(out), losses(ref)
    assert sorted(got) == sorted(want)
    assert all(got[s] == pytest.approx(want[s], rel=1e-5) for s in want), (got, want)


def _setup_in_process(world, tmp_path, overrides: list[str]):
    """Build the recipe in this process and run its setup (the accelerator state is reset afterwards)."""
    from audiopalm.config import FinetuneAudioPaLMConfig, load_config

    cfg = load_config(
        FinetuneAudioPaLMConfig, TINY, common(world, tmp_path / "x")[2:] + overrides + ["train.overwrite=true"]
    )
    recipe = _recipe_module().FinetuneAudioPaLMRecipe(cfg)
    try:
        recipe.setup()
    finally:
        reset_accelerate()
    return recipe


def test_read_weight_adds_the_reading_loss_to_training_batches_only(world, tmp_path):
    """``data.read_weight``: training batches carry the input audio's reading spans and the step's loss is the token
    loss plus read_weight x the reading loss of those spans; dev batches and the default (0) have none."""
    from audiopalm.training.core import reading_loss_sum, token_loss_sum

    recipe = _setup_in_process(world, tmp_path, ["data.read_weight=0.5", "data.tasks=[{task: ASR}, {task: TTS}]"])
    batch = next(iter(recipe.batches))
    # the accelerator state was reset after setup: forward_loss needs only its device and autocast
    recipe.accelerator = types.SimpleNamespace(device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert int((batch["read_span"] > 0).sum()) > 0 and "read_span" not in recipe.collate_dev(recipe.dev_sets[0][1])
    with torch.no_grad():
        got = recipe.forward_loss(batch).loss
        logits = recipe.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    reading = reading_loss_sum(logits, batch["read_span"], batch["read_targets"], blank=recipe.vocab.pad_id)
    assert float(reading) > 0
    torch.testing.assert_close(got, token_loss_sum(logits, batch["labels"]) + 0.5 * reading, atol=1e-3, rtol=1e-5)
    assert "read_span" not in next(iter(_setup_in_process(world, tmp_path, []).batches))


def test_read_layer_reads_an_inner_layer(world, tmp_path):
    """``data.read_layer=1``: the reading loss reads decoder layer 1 through the final norm and output layer (the
    target's loss still reads the output); a layer the model does not have is refused before training."""
    from audiopalm.training.core import layer_logits, reading_loss_sum, token_loss_sum

    recipe = _setup_in_process(world, tmp_path, ["data.read_weight=0.5", "data.read_layer=1"])
    batch = next(iter(recipe.batches))
    recipe.accelerator = types.SimpleNamespace(
        device=torch.device("cpu"), autocast=contextlib.nullcontext, unwrap_model=lambda m: m
    )
    with torch.no_grad():
        got = recipe.forward_loss(batch).loss
        out = recipe.model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False, output_hidden_states=True
        )
        inner = layer_logits(recipe.model, out.hidden_states[1])
    span, targets = batch["read_span"], batch["read_targets"]
    reading = reading_loss_sum(inner, span, targets, blank=recipe.vocab.pad_id)
    torch.testing.assert_close(got, token_loss_sum(out.logits, batch["labels"]) + 0.5 * reading, atol=1e-3, rtol=1e-5)
    at_output = reading_loss_sum(out.logits, span, targets, blank=recipe.vocab.pad_id)
    assert abs(float(reading - at_output)) > 1e-2  # the layer read is not the output
    with pytest.raises(ValueError, match="data.read_layer=2: .* has 2 decoder layers; read one of 1..1"):
        _setup_in_process(world, tmp_path, ["data.read_weight=0.5", "data.read_layer=2"])


def test_store_from_another_tokenizer_is_refused(world, tmp_path):
    from audiopalm.data.token_store import TokenStoreMismatch

    with pytest.raises(TokenStoreMismatch, match="token store fingerprint") as e:
        _setup_in_process(world, tmp_path, [f"model.audio_tokenizer={world['other_tok']}"])
    assert str(world["store"]) in str(e.value) and "mel_rvq" in str(e.value)


def test_output_words_refuse_a_store_without_word_starts(world, tmp_path):
    from audiopalm.config import ConfigError

    with pytest.raises(ConfigError, match="model.output_words: the token store .* has no word starts"):
        _setup_in_process(world, tmp_path, ["model.output_words=true", "model.num_codebooks=1"])


def test_max_len_over_the_model_context_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="data.max_len=100000 is longer than the model's context"):
        _setup_in_process(world, tmp_path, ["data.max_len=100000"])


def test_task_without_rows_names_the_task(world, tmp_path):
    with pytest.raises(ValueError, match="task 'AST' .*has no training rows"):
        _setup_in_process(world, tmp_path, ["data.tasks=[{task: AST, pairs: [de-es]}]"])


def test_rows_are_filtered_and_deduplicated(world, tmp_path):
    """ASR/TTS see each source wav / sentence once; a chain filtered to en-fr/fr-en sees only those rows."""
    recipe = _setup_in_process(
        world, tmp_path, ["data.tasks=[{task: ASR}, {task: ASR, dedupe: false}, {task: ASR AST S2ST, pairs: [en-fr]}]"]
    )
    asr, asr_all, chain = recipe.mixture.sources
    assert (asr.name, asr_all.name) == ("ASR", "ASR #1")
    assert len(asr.rows) == 26 and len(asr_all.rows) == 28  # 2 English wavs are the source of 2 rows each
    audio = [asr.rows[i]["audio"] for i in range(len(asr.rows))]
    assert len(set(audio)) == len(audio)
    assert {(chain.rows[i]["lang"], chain.rows[i]["tgt_lang"]) for i in range(len(chain.rows))} == {("en", "fr")}
    batch = next(iter(recipe.batches))
    assert batch["input_ids"].shape == (2, 256) and int(batch["num_target_tokens"]) > 0


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_saves_adapter_and_merged_model_changes_only_lora_and_new_rows_and_resumes(world, tmp_path):
    """LoRA (dropout on, padded batches): adapter + merged model; only LoRA and new rows change; exact resume.
    The LM ties its embeddings and has exactly its tokenizer's rows, so the vocabulary grows the tied embedding
    (the resume once failed there: "unexpected keys [...lm_head.token_adapter.trainable_tokens_delta]")."""
    from transformers import AutoModelForCausalLM

    from audiopalm.data.vocab import UnifiedVocab

    world = {**world, "lm": world["lm_exact"]}
    base = AutoModelForCausalLM.from_pretrained(world["lm"])
    assert base.config.tie_word_embeddings and base.config.vocab_size == weight_of(base.get_input_embeddings()).shape[0]
    args = [
        "lora.enabled=true",
        "lora.dropout=0.1",
        "data.packing=false",
        "train.eval_every=0",
        "train.micro_batch_size=4",
    ]
    out = tmp_path / "lora"
    run_in_process(common(world, out) + args)
    s = json.loads((out / "summary.json").read_text())
    assert s["lora"] and 0 < s["trainable_parameters"] < s["parameters"] / 2, s
    ref_losses = losses(out)
    first, last = [ref_losses[i] for i in range(1, 5)], [ref_losses[i] for i in range(5, 9)]
    assert sum(last) / 4 < sum(first) / 4 - 0.2, ref_losses  # one padded batch of 4 examples is noisy: compare halves
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (
        out / "adapter" / "adapter_config.json"
    ).is_file()
    assert not list((out / "adapter").glob("*.bin"))

    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    vocab = UnifiedVocab.from_pretrained(out / "final")
    text, n = vocab.audio_offset, len(vocab)
    assert n > base.config.vocab_size and merged.config.tie_word_embeddings  # the tied embedding grew
    emb0, emb1 = weight_of(base.get_input_embeddings()), weight_of(merged.get_input_embeddings())
    assert torch.equal(emb1[:text], emb0[:text]), "text rows must stay bit-identical"
    assert not torch.allclose(emb1[text:n], emb0[:text].mean(0).expand(n - text, -1)), "new rows must train"
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    changed = sorted(
        k for k in base_sd if "embed" not in k and "lm_head" not in k and not torch.equal(base_sd[k], merged_sd[k])
    )
    assert changed and all(any(m in k for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed), changed

    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints", resumed / "checkpoints")
    assert (resumed / "checkpoints" / "step_0000004" / "adapter_model.safetensors").is_file()
    run_in_process(common(world, resumed) + args + ["--resume"])
    assert {k: v for k, v in losses(resumed).items() if k > 4} == {k: v for k, v in ref_losses.items() if k > 4}


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", ["finetune_audiopalm.yaml", "finetune_audiopalm_tiny.yaml"])
def test_shipped_yaml_loads_and_shows_its_launch_command(name):
    from audiopalm.config import FinetuneAudioPaLMConfig, load_config

    cfg = load_config(FinetuneAudioPaLMConfig, CONFIGS / name)
    assert cfg.recipe == "finetune_audiopalm" and cfg.data.tasks
    header = (CONFIGS / name).read_text().splitlines()[:12]
    assert any(line.startswith("#") and "audiopalm train finetune_audiopalm --config" in line for line in header)
    assert any(line.startswith("#") and "=" in line and "." in line.split("=")[0] for line in header)


def test_config_errors_name_the_field():
    from audiopalm.config import ConfigError, FinetuneAudioPaLMConfig, load_config

    with pytest.raises(ConfigError, match="data.tasks.task: .*unknown task 'ASX'"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["data.tasks=[{task: ASX}]"])
    with pytest.raises(ConfigError, match="data.tasks.pairs: .*'en_fr'"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["data.tasks=[{task: AST, pairs: [en_fr]}]"])
    with pytest.raises(ConfigError, match="lora.r: must be >= 1"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["lora.r=0"])
    with pytest.raises(ConfigError, match="model.input_dedup: needs model.num_codebooks=1"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["model.input_dedup=true", "model.num_codebooks=2"])
    with pytest.raises(ConfigError, match="model.output_words: needs model.num_codebooks=1 and pattern=flatten"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["model.output_words=true", "model.num_codebooks=2"])
    with pytest.raises(ConfigError, match="train.export_every: is not supported with lora.enabled"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["lora.enabled=true", "train.export_every=4"])
    with pytest.raises(ConfigError, match="recipe: this config is for 'finetune_audiopalm'"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["recipe=pretrain_text"])


# ------------------------------------------------------------------------------------------------ slow: processes


def _launch(args: list[str], *, timeout: int = 600) -> str:
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / "cpu.yaml"),
        "-m",
        RECIPE_MODULE,
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=recipe_env(), cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_ddp_two_processes_match_one(world, tmp_path):
    """2 processes x micro-batch 1 x accumulation 2 == 1 process x micro-batch 4 (same global batches)."""
    one = tmp_path / "one"
    run_recipe(common(world, one) + ["train.micro_batch_size=4", "train.save_every=0"])
    two = tmp_path / "two"
    log = _launch(common(world, two) + ["train.micro_batch_size=1", "train.grad_accum_steps=2", "train.save_every=0"])
    assert "MULTI_CPU x2" in log and "global batch 4 = 1 x 2 accum x 2" in log, log[-3000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5), (step, a[step], b[step])


@pytest.mark.slow
def test_sigkill_then_resume_matches_unbroken_run(world, tmp_path):
    """Kill -9 a run after its step-6 checkpoint, resume, and compare every step's loss exactly."""
    args = ["train.max_steps=24", "train.save_every=6", "train.keep_last=1", "train.eval_every=0"]
    ref = tmp_path / "ref"
    run_recipe(common(world, ref) + args)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*RECIPE_CMD, *common(world, out), *args],
        env=recipe_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None  # stderr=PIPE
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "checkpoints" / "step_0000006").is_dir() and max(losses(out) or [0]) >= 8:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    killed_at = max(losses(out))
    assert 8 <= killed_at < 24, killed_at
    run_recipe(common(world, out) + args + ["--resume"])
    assert losses(out) == losses(ref)


def test_lora_modules_to_save_trains_the_whole_tied_embedding(world, tmp_path):
    """``lora.new_rows=modules_to_save``: embedding copy trains (text rows too); the tied lm_head follows it."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "mts"
    run_in_process(
        common(world, out)
        + [
            "lora.enabled=true",
            "lora.new_rows=modules_to_save",
            "train.save_every=0",
            "train.eval_every=0",
            "train.micro_batch_size=4",
        ]
    )
    got = losses(out)
    assert sum(got[i] for i in range(5, 9)) < sum(got[i] for i in range(1, 5)) - 0.8, got
    base = AutoModelForCausalLM.from_pretrained(world["lm"])
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    emb = weight_of(merged.get_input_embeddings())
    assert merged.config.tie_word_embeddings and weight_of(merged.get_output_embeddings()).data_ptr() == emb.data_ptr()
    assert not torch.equal(emb[:100], weight_of(base.get_input_embeddings())[:100])


def test_from_scratch_reinitialises_and_zeros_init_starts_new_rows_at_zero(world, tmp_path):
    from transformers import AutoModelForCausalLM

    base = weight_of(AutoModelForCausalLM.from_pretrained(world["lm"]).get_input_embeddings())
    pretrained = _setup_in_process(world, tmp_path, ["model.init=zeros"])
    emb = weight_of(pretrained.accelerator.unwrap_model(pretrained.model).get_input_embeddings())
    text = pretrained.vocab.audio_offset
    assert torch.equal(emb[:text], base[:text]) and not emb[text:].any()
    scratch = _setup_in_process(world, tmp_path, ["model.from_scratch=true"])
    emb = weight_of(scratch.accelerator.unwrap_model(scratch.model).get_input_embeddings())
    assert emb.shape == base.shape and not torch.allclose(emb[:text], base[:text])


def test_final_is_written_atomically_and_a_folder_without_its_marker_is_refused(full_run, tmp_path):
    """A kill while final/ is written leaves the previous final/ whole; a folder whose save did not finish (no
    complete.json) is refused by the loader the pipeline and `audiopalm generate` use."""
    from audiopalm.modeling.extend import COMPLETE_MARKER, CheckpointError, atomic_folder, load_checkpoint

    out, _ = full_run
    final = tmp_path / "final"
    shutil.copytree(out / "final", final)
    assert json.loads((final / COMPLETE_MARKER).read_text())["recipe"] == "finetune_audiopalm"
    before = (final / "model.safetensors").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(final) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt  # killed mid-save
    assert (final / "model.safetensors").read_bytes() == before
    load_checkpoint(final)
    (final / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match=f"incomplete checkpoint \\(no {COMPLETE_MARKER}"):
        load_checkpoint(final)


# ------------------------------------------------------------------------------------------- the acoustic stage


def test_final_holds_the_acoustic_stage_it_was_given(world, tmp_path, capsys):
    """``model.acoustic_stage``: the final checkpoint holds the stage (the pipeline loads it with no extra argument);
    a stage trained on other units is refused before any training."""
    from audiopalm.acoustic import AcousticConfig, AcousticStage
    from audiopalm.inference.pipeline import AudioPaLM
    from audiopalm.tokenizers.base import load_audio_tokenizer

    units, other = load_audio_tokenizer(world["tok"]), load_audio_tokenizer(world["other_tok"])
    tiny = AcousticConfig(hidden_size=16, num_blocks=1, dilations=(1,), voice_dim=4, voice_hidden=4)
    stage = AcousticStage.build(tiny, units, units).save_pretrained(tmp_path / "stage")
    wrong = AcousticStage.build(tiny, units, other).save_pretrained(tmp_path / "wrong")
    out = tmp_path / "run"
    run_in_process(
        common(world, out)
        + [
            f"model.acoustic_stage={stage}",
            "train.max_steps=2",
            "train.save_every=2",
            "train.eval_every=0",
            "optim.warmup_steps=1",
        ]
    )
    pipe = AudioPaLM.from_pretrained(out / "final", device="cpu")
    assert pipe.acoustic is not None and pipe.acoustic.unit_tokenizer["fingerprint"] == units.fingerprint
    try:
        code = _recipe_module().main(common(world, tmp_path / "refused") + [f"model.acoustic_stage={wrong}"])
    finally:
        reset_accelerate()
    assert code == 2 and "model.acoustic_stage: the acoustic stage was trained on units" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "final").exists()


def test_unit_noise_moves_only_input_units_to_their_nearest(world, tmp_path):
    """``data.unit_noise``: training examples read some input units replaced by one of their nearest units (by the
    tokenizer's code vectors); targets, text and dev examples are untouched; more than one codebook is refused."""
    from audiopalm.config import ConfigError
    from audiopalm.data.batching import nearest_units

    over = ["model.num_codebooks=1", "data.tasks=[{task: ASR}, {task: TTS}]"]
    clean = _setup_in_process(world, tmp_path, over)
    noisy = _setup_in_process(world, tmp_path, [*over, "data.unit_noise=0.5", "data.unit_noise_neighbours=2"])
    vocab = noisy.vocab
    near = nearest_units(noisy.audio_tokenizer.code_vectors()[0], 2).tolist()
    moved = kept = 0
    for address in [(0, p) for p in range(12)]:
        a, b = clean.mixture.example_at(address), noisy.mixture.example_at(address)
        assert a["labels"] == b["labels"] and len(a["input_ids"]) == len(b["input_ids"])
        for x, y, lab in zip(a["input_ids"], b["input_ids"], a["labels"], strict=True):
            if x == y:
                kept += vocab.is_audio(x) and lab == -100
                continue
            assert lab == -100 and vocab.is_audio(x), "only the units the model reads move"
            assert y - vocab.audio_offset in near[x - vocab.audio_offset]
            moved += 1
    assert moved > 0 and 0.3 < moved / (moved + kept) < 0.7, (moved, kept)
    assert noisy.dev_sets == clean.dev_sets
    with pytest.raises(ConfigError, match="data.unit_noise / unit_shift: needs one codebook"):
        _setup_in_process(world, tmp_path, ["model.num_codebooks=2", "data.unit_noise=0.1"])


def test_unit_shift_alone_moves_input_units_to_a_neighbouring_place(world, tmp_path):
    """``data.unit_shift`` without ``unit_noise``: some input units take the unit before or after them; labels,
    lengths and dev examples stay; unit_noise + unit_shift must stay under 1."""
    from audiopalm.config import ConfigError, FinetuneAudioPaLMConfig, load_config

    over = ["model.num_codebooks=1", "data.tasks=[{task: ASR}]"]
    clean = _setup_in_process(world, tmp_path, over)
    shifted = _setup_in_process(world, tmp_path, [*over, "data.unit_shift=0.4"])
    moved = 0
    for address in [(0, p) for p in range(8)]:
        a, b = clean.mixture.example_at(address), shifted.mixture.example_at(address)
        assert a["labels"] == b["labels"] and len(a["input_ids"]) == len(b["input_ids"])
        ids = a["input_ids"]
        for i, (x, y) in enumerate(zip(ids, b["input_ids"], strict=True)):
            if x != y:
                assert shifted.vocab.is_audio(x) and y in (ids[i - 1], ids[i + 1]), "a unit from beside it"
                moved += 1
    assert moved > 0
    assert shifted.dev_sets == clean.dev_sets
    with pytest.raises(ConfigError, match="data.unit_shift"):
        load_config(FinetuneAudioPaLMConfig, TINY, ["data.unit_noise=0.6", "data.unit_shift=0.5"])
