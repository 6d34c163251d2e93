"""The pretrain_text recipe (audiopalm/recipes/pretrain_text.py) end to end on a tiny model and a small generated corpus (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import losses, recipe_env, write_corpus

REPO = Path(__file__).resolve().parents[1]
RECIPE_MODULE = "audiopalm.recipes.pretrain_text"  # run as a module of the package, never by path
RECIPE_CMD = [sys.executable, "-m", RECIPE_MODULE]
TINY = REPO / "recipes" / "configs" / "pretrain_text_tiny.yaml"


def run_in_process(args: list[str]) -> None:
    """Run the recipe's ``main`` here (no interpreter start-up), then reset accelerate's singletons."""
    from accelerate.state import AcceleratorState, GradientState

    from audiopalm.recipes import pretrain_text

    try:
        assert pretrain_text.main(args) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def run_recipe(args: list[str], *, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RECIPE_CMD, *args], capture_output=True, text=True, timeout=timeout, env=recipe_env())
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory) -> Path:
    """One tiny run (8 steps, checkpoints at 4 and 8 -> only the 4 is kept as resumable, final at 8)."""
    out = tmp_path_factory.mktemp("run")
    train, dev = corpus
    run_recipe(
        [
            "--config",
            str(TINY),
            f"data.manifests=[{train},{dev}]",
            f"train.output_dir={out}",
            "train.log_with=tensorboard",
        ]
    )  # a real subprocess once: the script runs as `python recipe.py`
    return out


def test_run_writes_a_loadable_hf_model_and_tokenizer(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = tiny_run / "final"
    assert (final / "model.safetensors").is_file()
    assert not list(final.glob("*.bin")), "weights must be safetensors only"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tok)
    ids = tok("the small dog sleeps.", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 3


def test_metrics_loss_decreases_and_logs_every_step(tiny_run):
    from audiopalm.training import read_jsonl

    rows = [r for r in read_jsonl(tiny_run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all({"lr", "tokens_per_s", "tokens_seen"} <= set(r) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.25, [r["loss"] for r in rows]
    # warm-up over 2 steps to 3e-3 (the LR each step used), then cosine down
    assert [r["lr"] for r in rows[:3]] == pytest.approx([0.0, 1.5e-3, 3e-3])
    assert all(a["lr"] >= b["lr"] for a, b in zip(rows[2:], rows[3:], strict=False))
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["dev_loss"]["all"] > 0 and summary["dev_ppl"] > 1


def test_checkpoints_are_complete_and_pruned(tiny_run):
    ckpts = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert ckpts == ["step_0000004"], ckpts  # save_every=4; the end of the run is the final save
    ck = tiny_run / "checkpoints" / "step_0000004"
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
        "rng_rank0.safetensors",
    ):
        assert (ck / name).is_file(), name
    assert not list(ck.glob("*.pkl")) and not list(ck.glob("*.bin")) and not list(ck.glob("*.pt"))


def test_tensorboard_events_written(tiny_run):
    assert list(tiny_run.rglob("events.out.tfevents.*")), sorted(p.name for p in tiny_run.rglob("*"))


def test_resume_is_bit_for_bit(tiny_run, corpus, tmp_path):
    """Resuming from the step-4 checkpoint reproduces steps 5..8 exactly."""
    import shutil

    train, dev = corpus
    out = tmp_path / "resumed"
    shutil.copytree(tiny_run / "checkpoints", out / "checkpoints")
    shutil.copytree(tiny_run / "tokenizer", out / "tokenizer")
    rows = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # includes steps 5..8
    run_in_process(["--config", str(TINY), f"data.manifests=[{train},{dev}]", f"train.output_dir={out}", "--resume"])
    assert losses(out) == losses(tiny_run)  # exact float equality: same data, weights, Adam state, schedule


def test_bad_override_names_the_field(corpus, tmp_path):
    proc = subprocess.run(
        [*RECIPE_CMD, "--config", str(TINY), "optim.lrr=1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=recipe_env(),
    )
    assert proc.returncode != 0 and "optim.lrr: unknown key" in proc.stderr, proc.stderr[-2000:]


def test_training_lines_cover_mono_and_mt_and_skip_test(corpus, tmp_path):
    from audiopalm.config import PretrainTextConfig, load_config
    from audiopalm.recipes.pretrain_text import PretrainTextRecipe

    train, dev = corpus
    rec_test = tmp_path / "test.jsonl"
    rec_test.write_text(
        json.dumps(
            {
                "id": "t1",
                "lang": "en",
                "text": "secret test sentence.",
                "audio": str(train.parent / "wav" / "tone.wav"),
                "split": "test",
            }
        )
        + "\n"
    )
    cfg = load_config(PretrainTextConfig, TINY, [f"data.manifests=[{train},{dev},{rec_test}]"])
    r = PretrainTextRecipe(cfg)
    lines = r._render_lines("train")
    assert any(s.startswith("[MT English French] the ") and "<|sep|>le " in s for s in lines)
    assert "the small dog sleeps." in lines or any(s.startswith("the ") for s in lines)
    assert not any("secret" in s for s in lines) and not any("secret" in s for s in r._render_lines("dev"))
    assert len(lines) == len(set(lines))


def test_gradient_checkpointing_gives_the_same_losses(tiny_run, corpus, tmp_path):
    train, dev = corpus
    out = tmp_path / "gc"
    run_in_process(
        [
            "--config",
            str(TINY),
            f"data.manifests=[{train},{dev}]",
            f"train.output_dir={out}",
            "train.gradient_checkpointing=true",
            "train.save_every=0",
        ]
    )
    got, want = losses(out), losses(tiny_run)
    assert sorted(got) == sorted(want)
    assert all(got[s] == pytest.approx(want[s], rel=1e-5) for s in want), (got, want)


def test_stage0_mt_lines_are_the_finetune_mt_examples_token_for_token(tmp_path, corpus):
    """Stage 0 pre-teaches the fine-tune's MT format: a rendered MT line, packed as <s> line </s>, is exactly
    prompt_ids + target_ids of the same pair once the vocabulary is extended (<|sep|> keeps its stage-0 id)."""
    from audiopalm.config import PretrainTextConfig, load_config
    from audiopalm.data.manifest import read_manifest
    from audiopalm.data.tasks import prompt_ids, target_ids
    from audiopalm.data.text_tokenizer import SEP, train_text_tokenizer
    from audiopalm.data.vocab import UnifiedVocab
    from audiopalm.recipes.pretrain_text import PretrainTextRecipe

    train, _ = corpus
    r = PretrainTextRecipe(load_config(PretrainTextConfig, TINY, [f"data.manifests=[{train}]"]))
    lines = r._render_lines("train")
    tok = train_text_tokenizer(lines, vocab_size=400)
    sep_id = tok.convert_tokens_to_ids(SEP)
    vocab = UnifiedVocab.build(tok, codebook_size=8, num_codebooks=1)
    assert vocab.sep_id == sep_id < vocab.audio_offset  # reused, not added again
    rec = next(x for x in read_manifest(train) if x.lang == "en" and x.tgt_lang == "fr")
    line = next(s for s in lines if s.startswith("[MT English French] " + rec.text + SEP))
    stage0 = [tok.bos_token_id, *tok(line, add_special_tokens=False).input_ids, tok.eos_token_id]
    record = {"id": rec.id, "lang": "en", "tgt_lang": "fr", "text": rec.text, "tgt_text": rec.tgt_text}
    assert stage0 == prompt_ids(record, "MT", vocab) + target_ids(record, "MT", vocab)
    assert stage0.count(sep_id) == 1


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RECIPE_CMD, *args], capture_output=True, text=True, timeout=180, env=recipe_env(), cwd=cwd)


def test_used_output_folder_is_refused_unless_resume_or_overwrite(tiny_run, corpus, tmp_path):
    """A fresh run into another run's folder would let keep-last delete its own checkpoints and a later --resume
    continue the other run: refused (exit 2, one line); --overwrite replaces the old run's files."""
    import shutil

    train, dev = corpus
    out = tmp_path / "used"
    shutil.copytree(tiny_run, out)
    args = ["--config", str(TINY), f"data.manifests=[{train},{dev}]", f"train.output_dir={out}"]
    proc = _run_cli(args, tmp_path)
    assert proc.returncode == 2 and "is not empty" in proc.stderr and "--resume" in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004"]  # untouched
    run_in_process(args + ["train.max_steps=2", "train.save_every=1", "train.keep_last=5", "--overwrite"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001"]  # the old run's are gone
    assert sorted(losses(out)) == [1, 2]


def test_resume_refuses_a_changed_config_with_a_diff(tiny_run, corpus, tmp_path):
    import shutil

    train, dev = corpus
    out = tmp_path / "resumed"
    shutil.copytree(tiny_run, out)
    base = [
        "--config",
        str(TINY),
        f"data.manifests=[{train},{dev}]",
        f"train.output_dir={out}",
        "train.log_with=tensorboard",
        "--resume",
    ]
    proc = _run_cli(base + ["optim.lr=0.01"], tmp_path)
    assert proc.returncode == 2 and "optim.lr: 0.003 -> 0.01" in proc.stderr, proc.stderr[-2000:]
    assert "train.max_steps" in proc.stderr  # the fields that may change are listed
    # a field listed as changeable on resume is accepted: two more steps from the step-4 checkpoint
    (out / "final").rename(out / "final_before")
    run_in_process(base + ["train.max_steps=10", "train.eval_every=0"])
    assert sorted(losses(out)) == list(range(1, 11))
