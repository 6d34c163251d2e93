"""Hub-ready folders (docs/model.md, "Sharing checkpoints"): a model card in every saved folder, no absolute paths,
folders that load from a new place with nothing else, LoRA adapters the peft way, and ``audiopalm push``."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from builders import build_world, embedding_rows, run_recipe_in_process, split_manifests
from builders import finetune_audiopalm_args as common
from builders import finetune_speech_llama_args as speech_llama_args

from audiopalm.modeling.card import CARD_NAME, find_absolute_paths, read_card_data
from audiopalm.modeling.extend import COMPLETE_MARKER

run_in_process = partial(run_recipe_in_process, "finetune_audiopalm")
run_speech_llama = partial(run_recipe_in_process, "finetune_speech_llama")

LORA_ARGS = [
    "lora.enabled=true",
    "data.packing=false",
    "train.micro_batch_size=4",
    "train.max_steps=4",
    "train.save_every=2",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    w = build_world(tmp_path_factory.mktemp("world"))
    from transformers import AutoModelForCausalLM

    untied = AutoModelForCausalLM.from_pretrained(w["lm_exact"])
    untied.config.tie_word_embeddings = False
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone() * 0.5)  # its own values
    untied.save_pretrained(w["lm_exact"].with_name("text_lm_untied"))
    shutil.copy(w["lm_exact"] / "tokenizer.json", w["lm_exact"].with_name("text_lm_untied"))
    for f in w["lm_exact"].glob("tokenizer*"):
        shutil.copy(f, w["lm_exact"].with_name("text_lm_untied"))
    return {**w, "lm_untied": w["lm_exact"].with_name("text_lm_untied")}


def _moved(src: Path, dst: Path) -> Path:
    """Copy a run folder to a new place and delete the original: whatever it points at by path is gone."""
    shutil.copytree(src, dst)
    shutil.rmtree(src)
    return dst


@pytest.mark.parametrize("lm", ["lm_exact", "lm_untied"])
def test_lora_adapter_loads_the_peft_way_and_merges_to_final(world, tmp_path, lm):
    """``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)`` with nothing resized by
    hand, on a tied and an untied LM whose embedding grows; ``merge_and_unload()`` gives ``final/``'s logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    run_in_process(common({**world, "lm": world[lm]}, run) + LORA_ARGS)
    run = _moved(run, tmp_path / "elsewhere" / "run")
    base_dir, adapter_dir, final_dir = run / "base", run / "adapter", run / "final"
    for folder in (base_dir, adapter_dir, final_dir):
        assert (folder / COMPLETE_MARKER).is_file() and (folder / CARD_NAME).is_file(), folder
    for folder in (base_dir, adapter_dir, final_dir, *(run / "checkpoints").iterdir()):
        assert find_absolute_paths(folder) == [], folder
    ckpt_cfg = json.loads((run / "checkpoints" / "step_0000002" / "adapter_config.json").read_text())
    assert ckpt_cfg["base_model_name_or_path"] == "../../base", ckpt_cfg
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "../base", cfg["base_model_name_or_path"]

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    text_lm = AutoModelForCausalLM.from_pretrained(world[lm])
    assert base.config.tie_word_embeddings == text_lm.config.tie_word_embeddings
    assert embedding_rows(base) > embedding_rows(text_lm)
    model = PeftModel.from_pretrained(base, adapter_dir)
    merged = model.merge_and_unload()
    final = AutoModelForCausalLM.from_pretrained(final_dir)
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    ids = torch.tensor([[tok.bos_token_id, *range(5, 12), len(tok) - 3, len(tok) - 40]])
    with torch.no_grad():
        got, want = merged(ids).logits, final(ids).logits  # [1, L, V]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits, want, atol=1e-3)
    adapter_files = {p.name for p in adapter_dir.iterdir()}
    assert "adapter_model.safetensors" in adapter_files and not any(f.endswith(".bin") for f in adapter_files)
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:  # no copy of the whole embedding
        assert not [k for k in f.keys() if k.endswith(("embed_tokens.weight", "lm_head.weight"))], list(f.keys())

    card = read_card_data(adapter_dir)
    assert card["library_name"] == "peft" and "lora" in card["tags"] and "base_model" not in card  # a local base
    assert set(card["language"]) >= {"en", "fr"}, card


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    run_in_process(common(world, out) + ["train.max_steps=2", "train.save_every=0"])
    return out


def test_final_has_a_card_provenance_and_loads_from_a_new_place(full_run, world, tmp_path):
    """``final/``: a card with metadata (tasks, languages, tokenizer and its source, dev figures, how to load), no
    absolute path in any JSON/YAML, and a copy elsewhere (the original gone) loads with AudioPaLM and plain HF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audiopalm import AudioPaLM

    src = tmp_path / "copy_src"
    shutil.copytree(full_run / "final", src)
    final = _moved(src, tmp_path / "moved" / "final")
    assert find_absolute_paths(final) == []
    layout = json.loads((final / "audiopalm.json").read_text())
    assert layout["audio_tokenizer"]["source"] == {"local": "mel_rvq"}, layout["audio_tokenizer"]
    data = read_card_data(final)
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "any-to-any", data
    assert {"en", "fr", "es", "de"} <= set(data["language"]) and "asr" in data["tags"], data
    text = (final / CARD_NAME).read_text()
    summary = json.loads((full_run / "summary.json").read_text())
    assert "## Dev figures" in text and f"{summary['dev_loss']['all']:.4g}" in text, text
    assert summary and "mel_rvq" in text and "AudioPaLM.from_pretrained" in text
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert embedding_rows(model) >= len(tok)
    pipe = AudioPaLM.from_pretrained(final)
    assert pipe.vocab.layout.audio_tokenizer["fingerprint"] == pipe.audio_tokenizer.fingerprint


def test_eval_figures_go_into_the_card_of_the_pushed_copy_and_push_refuses_incomplete(full_run, tmp_path, monkeypatch):
    """``audiopalm push FOLDER REPO``: ``HfApi.upload_folder`` of a complete folder (eval figures added to the
    uploaded card only); an incomplete folder is refused before any upload."""
    from huggingface_hub import HfApi

    from audiopalm.modeling import hub as push

    calls = []

    def fake_upload(self, *, folder_path, repo_id, **kwargs):
        files = {
            p.relative_to(folder_path).as_posix(): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()
        }
        calls.append((repo_id, files, kwargs))
        return "https://huggingface.co/fake/commit"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "summary.json").write_text(
        json.dumps({"data": "/abs/test.jsonl", "judge": "own", "metrics": [{"task": "ASR", "wer": 0.25, "n": 3}]})
    )
    final = full_run / "final"
    card_before = (final / CARD_NAME).read_text()
    assert push.main([str(final), "me/tiny-audiopalm", "--eval", str(eval_dir)]) == 0
    (repo, files, kwargs) = calls[-1]
    assert repo == "me/tiny-audiopalm" and COMPLETE_MARKER in files and "model.safetensors" in files
    card = files[CARD_NAME].decode()
    assert "## Eval figures" in card and "0.25" in card and "/abs/" not in card, card
    assert (final / CARD_NAME).read_text() == card_before  # the checkpoint itself is not changed

    broken = tmp_path / "broken"
    shutil.copytree(final, broken)
    (broken / COMPLETE_MARKER).unlink()
    n = len(calls)
    assert push.main([str(broken), "me/x"]) == 2
    assert len(calls) == n


def test_adapter_push_names_the_base_repo(world, tmp_path, monkeypatch):
    """Pushing a LoRA adapter needs the hub repo of its base (``--base-repo``): the uploaded adapter_config names
    it, the folder on disk keeps ``../base``."""
    from huggingface_hub import HfApi

    from audiopalm.modeling import hub as push

    run = tmp_path / "run"
    run_in_process(
        common({**world, "lm": world["lm_exact"]}, run)
        + LORA_ARGS[:3]
        + ["train.max_steps=2", "train.eval_every=0", "train.save_every=0"]
    )
    uploaded = {}

    def fake_upload(self, *, folder_path, repo_id, **kwargs):
        uploaded[repo_id] = json.loads((Path(folder_path) / "adapter_config.json").read_text())
        return "ok"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload)
    assert push.main([str(run / "adapter"), "me/lora"]) == 2  # refused: no --base-repo
    assert push.main([str(run / "adapter"), "me/lora", "--base-repo", "me/base"]) == 0
    assert uploaded["me/lora"]["base_model_name_or_path"] == "me/base"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base"


def test_speech_llama_final_has_a_card_and_loads_from_a_new_place(world, tmp_path):
    """The Speech-Llama ``final/``: a card, no absolute path (the local base LLM is copied into ``llm/``, the
    adapter names it relatively), and a copy elsewhere loads with the pipeline and nothing else."""

    from audiopalm import SpeechLlamaPipeline

    w = split_manifests(world)
    run = tmp_path / "run"
    run_speech_llama(speech_llama_args(w, run) + ["train.max_steps=2", "train.save_every=1", "optim.warmup_steps=0"])
    for folder in (run / "final", *(run / "checkpoints").iterdir()):
        assert find_absolute_paths(folder) == [], folder
    assert json.loads((run / "final" / "speech_llama.json").read_text())["llm"] == "./llm"
    assert json.loads((run / "final" / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "../llm"
    )
    data = read_card_data(run / "final")
    assert data["library_name"] == "audiopalm" and "en" in data["language"], data
    final = _moved(run, tmp_path / "elsewhere" / "run") / "final"
    pipe = SpeechLlamaPipeline.from_pretrained(final, device="cpu")
    assert pipe.model.config.llm == str((final / "llm").resolve())


def test_sources_never_hold_a_local_path(tmp_path):
    from audiopalm.data.sources import is_local, source_of
    from audiopalm.modeling.card import pipeline_tag

    (tmp_path / "my_lm").mkdir()
    assert source_of(tmp_path / "my_lm", fingerprint="ab") == {"local": "my_lm", "fingerprint": "ab"}
    assert source_of("meta-llama/Llama-3.2-1B", "c0ffee") == {"hub_id": "meta-llama/Llama-3.2-1B", "revision": "c0ffee"}
    assert source_of(None) is None
    assert [is_local(x) for x in ("gpt2", "org/name", "./x", "/abs/x", "a/b/c", str(tmp_path / "my_lm"))] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert [pipeline_tag(t) for t in (["ASR"], ["TTS"], ["ASR", "TTS"], ["ASR AST S2ST"], ["LM", "MT"], [])] == [
        "automatic-speech-recognition",
        "text-to-speech",
        "any-to-any",
        "any-to-any",
        "text-generation",
        None,
    ]


def test_find_absolute_paths_reads_every_json_and_yaml(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_text(json.dumps({"x": ["rel/ok", {"y": "/home/me/lm"}], "n": 3}))
    (tmp_path / "sub" / "b.yaml").write_text("base: C:/models/lm\nother: fine\n")
    (tmp_path / "c.txt").write_text("/not/checked")
    assert find_absolute_paths(tmp_path) == ["a.json: /home/me/lm", "sub/b.yaml: C:/models/lm"]
