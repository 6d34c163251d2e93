"""Typed configs: every shipped YAML loads; overrides, types and validation name the failing field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiopalm.config import (
    CONFIGS,
    ConfigError,
    OptimConfig,
    PretrainTextConfig,
    config_class,
    flat_dict,
    load_any,
    load_config,
    save_config,
    to_dict,
)
from audiopalm.recipes import CONFIG_DIR  # the package's own copy (the top-level recipes/ is a link to it)

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_configs_are_shipped():
    from audiopalm.recipes import RECIPES

    assert {p.stem for p in SHIPPED} == {name + suffix for name in RECIPES for suffix in ("", "_tiny")}


def test_shipped_configs_are_package_data_and_top_level_recipes_is_a_link():
    import configparser

    repo = Path(__file__).resolve().parents[1]
    assert (repo / "recipes").is_symlink() and (repo / "recipes").resolve() == CONFIG_DIR.parent
    data = configparser.ConfigParser()
    data.read(repo / "setup.cfg")
    globs = [g.strip() for g in data["options.package_data"]["audiopalm.recipes"].split(",")]
    assert globs == ["configs/*.yaml", "accelerate/*.yaml"]


def test_config_by_shipped_name_and_print_config(tmp_path):
    import subprocess
    import sys

    from audiopalm.config import resolve_config

    assert resolve_config("pretrain_text_tiny") == CONFIG_DIR / "pretrain_text_tiny.yaml"
    with pytest.raises(ConfigError, match="did you mean 'pretrain_text_tiny'"):
        resolve_config("pretrain_text_tinny", "pretrain_text")
    cli = Path(sys.executable).with_name("audiopalm")
    proc = subprocess.run(
        [str(cli), "train", "pretrain_text", "--config", "pretrain_text_tiny", "optim.lr=0.5", "--print-config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["optim"]["lr"] == 0.5 and printed["recipe"] == "pretrain_text" and not list(tmp_path.iterdir())
    for args, message in (
        (["optim.lrr=1"], "optim.lrr: unknown key; did you mean 'lr'?"),
        (["train.max_steps=abc"], "train.max_steps: expected an integer, got 'abc'"),
    ):
        proc = subprocess.run(
            [str(cli), "train", "pretrain_text", "--config", "pretrain_text_tiny", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
            proc.returncode,
            proc.stderr,
        )
    (tmp_path / "empty.yaml").write_text("")
    proc = subprocess.run(
        [str(cli), "train", "pretrain_text", "--config", str(tmp_path / "empty.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "empty config file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_loads_into_its_dataclass(path):
    cfg = load_any(path)
    recipe = yaml.safe_load(path.read_text())["recipe"]
    assert isinstance(cfg, config_class(recipe))
    header = path.read_text().splitlines()[:12]
    assert any(line.startswith("#") and f"audiopalm train {recipe} --config {path.stem}" in line for line in header), (
        f"{path.name}: the header must show the launch command"
    )
    assert any(line.startswith("#") and f"-m audiopalm.recipes.{recipe}" in line for line in header), (
        f"{path.name}: the header must show the accelerate launch command"
    )
    assert any("=" in line and line.startswith("#") and "." in line.split("=")[0] for line in header), (
        f"{path.name}: the header must show a key=value override example"
    )


def test_registered_recipes_point_at_dataclasses():
    for name in CONFIGS:
        cls = config_class(name)
        assert cls().recipe == name


def test_overrides_reach_sections_and_parse_yaml_values():
    cfg = load_config(
        PretrainTextConfig,
        CONFIG_DIR / "pretrain_text.yaml",
        [
            "optim.lr=1e-3",
            "train.max_steps=7",
            "data.manifests=[a.jsonl, b.jsonl]",
            "data.tokenizer=null",
            "train.gradient_checkpointing=true",
            "optim.group_lrs={embed: 1e-4}",
            "optim.warmup_steps=0",
        ],
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.max_steps == 7 and cfg.data.manifests == ["a.jsonl", "b.jsonl"]
    assert cfg.data.tokenizer is None and cfg.train.gradient_checkpointing is True
    assert cfg.optim.group_lrs == {"embed": 1e-4}


def test_int_given_for_float_is_converted():
    assert load_config(OptimConfig, None, ["lr=1"]).lr == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "optim.lrr: unknown key; did you mean 'lr'? known keys here: lr,"),
        ("trian.max_steps=1", "trian: unknown key"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("optim.lr=-1", "optim.lr: must be > 0, got -1.0"),
        ("train.max_steps=1.5", "train.max_steps: expected an integer, got 1.5"),
        ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing: expected bool, got 'maybe'"),
        ("train.mixed_precision=fp8", "train.mixed_precision: 'fp8' is not one of"),
        ("model.num_heads=3", "model.hidden_size: 256 is not divisible by model.num_heads=3"),
        ("model.num_kv_heads=3", "model.num_kv_heads: model.num_heads=4 is not divisible by num_kv_heads=3"),
        ("data.include=[mono, speech]", "data.include[1]: 'speech' is not one of"),
        ("data.mt_template=[MT] {src}", "data.mt_template: unknown key"),  # the MT format is audiopalm.data.tasks'
        ("train.log_with=tensorbord", "train.log_with: unknown tracker 'tensorbord'"),
        ("optim.warmup_steps=5000", "optim.warmup_steps: 5000 is more than train.max_steps=900"),
        ("recipe=finetune", "recipe: this config is for 'pretrain_text', got 'finetune'"),
        ("optim.lr", "expected key=value"),
        ("data.manifests=a.jsonl", "data.manifests: expected a list"),
    ],
)
def test_bad_values_name_file_and_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainTextConfig, CONFIG_DIR / "pretrain_text.yaml", [override])
    assert message in str(err.value), str(err.value)
    if "expected key=value" not in message:
        assert "pretrain_text.yaml" in str(err.value)


def test_missing_recipe_key_and_unknown_recipe(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model: {hidden_size: 64}\n")
    with pytest.raises(ConfigError, match="recipe: missing"):
        load_any(p)
    p.write_text("recipe: nope\n")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; registered: pretrain_text"):
        load_any(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_any(p)
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_any(tmp_path / "absent.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(PretrainTextConfig, CONFIG_DIR / "pretrain_text.yaml", ["optim.group_lrs={embed: 1e-4}"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_any(tmp_path / "c.yaml")
    assert again == cfg and to_dict(again) == to_dict(cfg)


def test_flat_dict_is_tensorboard_friendly():
    flat = flat_dict(PretrainTextConfig())
    assert flat["optim.lr"] == 3e-3 and flat["model.num_layers"] == 4
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values()), flat


def test_empty_yaml_is_refused(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="empty.yaml: empty config file"):
        load_config(PretrainTextConfig, p)


def test_config_diff_lists_changed_fields_except_those_resume_may_change():
    from audiopalm.config import config_diff, to_dict

    a = to_dict(PretrainTextConfig())
    b = to_dict(load_config(PretrainTextConfig, None, ["optim.lr=1e-4", "train.max_steps=900"]))
    assert config_diff(a, b) == ["optim.lr: 0.003 -> 0.0001"]


def test_model_section_is_the_model_config_and_its_errors_name_the_field():
    from audiopalm.config import FinetuneSpeechLlamaConfig
    from audiopalm.modeling.speech_llama import SpeechLlamaConfig

    cfg = load_config(
        FinetuneSpeechLlamaConfig, None, ["model.llm=lm", "model.encoder_dim=64", "model.encoder_heads=4"]
    )
    assert isinstance(cfg.model, SpeechLlamaConfig) and cfg.model.encoder_dim == 64
    with pytest.raises(ConfigError, match=r"^model.conv_kernel must be odd, got 4$"):
        load_config(FinetuneSpeechLlamaConfig, None, ["model.llm=lm", "model.conv_kernel=4"])


def test_speech_llama_lora_is_the_shared_lora_section():
    from audiopalm.config import FinetuneSpeechLlamaConfig, LoraConfig, resolve_config

    cfg = load_config(FinetuneSpeechLlamaConfig, None, ["model.llm=lm", "lora.r=4", "lora.alpha=8", "lora.dropout=0"])
    assert isinstance(cfg.lora, LoraConfig)
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout) == (4, 8.0, 0.0)
    off = load_config(FinetuneSpeechLlamaConfig, None, ["model.llm=lm", "lora.enabled=false"])
    assert off.model.lora_r == 0
    shipped = load_config(FinetuneSpeechLlamaConfig, resolve_config("finetune_speech_llama"), [])
    assert (shipped.model.lora_r, shipped.model.lora_alpha) == (8, 16.0)  # the paper's
    with pytest.raises(ConfigError, match=r"^model.lora_r.*lora.r"):
        load_config(FinetuneSpeechLlamaConfig, None, ["model.llm=lm", "model.lora_r=4"])


def test_a_partial_section_keeps_the_recipes_defaults_of_the_fields_it_does_not_name():
    from audiopalm.config import FinetuneAudioPaLMConfig, OptimConfig

    recipe_default = FinetuneAudioPaLMConfig().optim.lr
    assert recipe_default != OptimConfig().lr  # the recipe's own default, not the class's
    cfg = load_config(FinetuneAudioPaLMConfig, None, ["optim.warmup_steps=5", "train.max_steps=20"])
    assert (cfg.optim.lr, cfg.optim.warmup_steps) == (recipe_default, 5)
    assert cfg.train.output_dir == FinetuneAudioPaLMConfig().train.output_dir
