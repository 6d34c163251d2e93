"""LoRA runs as peft documents them for added tokens: an extended base model plus an adapter.

peft's trainable-tokens docs: "this method does not add tokens for you, you have to add tokens to the
tokenizer yourself and resize the embedding matrix of the model accordingly". The base an AudioPaLM adapter
applies to is therefore not the text LM but the text LM *with its embedding grown* for the audio vocabulary
(:func:`audiopalm.modeling.extend.extend_model`, new rows initialised, untrained). A LoRA run writes it once::

    output_dir/base/      config.json  model.safetensors  tokenizer files  README.md  complete.json
    output_dir/adapter/   adapter_config.json  adapter_model.safetensors  tokenizer files  audiopalm.json
                          README.md  complete.json

and then plain peft loads the pair, with nothing resized by hand::

    base = AutoModelForCausalLM.from_pretrained("output_dir/base")
    model = PeftModel.from_pretrained(base, "output_dir/adapter")      # .merge_and_unload() == final/

The adapter holds the LoRA weights and the trained new rows (``trainable_token_indices``, or the whole
embedding with ``lora.new_rows=modules_to_save``), never a second copy of the embedding
(``save_embedding_layers=False``: the base already has its shape). ``adapter_config.json`` names its base by a
path relative to the adapter folder (``../base``), not an absolute one; ``audiopalm push --base-repo`` names the
base's hub repo instead when the adapter is uploaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from audiopalm.modeling.extend import COMPLETE_MARKER, _gathered, atomic_folder

ADAPTER_CONFIG = "adapter_config.json"


def write_base(model, vocab, out_dir: str | os.PathLike, *, source: str | None, is_main: bool = True) -> Path | None:
    """Write the extended, untrained base model (and its tokenizer and card) into ``out_dir`` unless a complete one
    is there already (a resumed run). Call on every process (ZeRO-3 gathers the weights); only ``is_main`` writes."""
    from audiopalm.data.sources import source_of
    from audiopalm.modeling.card import write_model_card

    out = Path(out_dir)
    if (out / COMPLETE_MARKER).is_file():
        return out
    with _gathered(model.parameters()):
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if is_main else None
    if not is_main:
        return None
    with atomic_folder(out, {"what": "extended base model"}) as tmp:
        model.save_pretrained(str(tmp), state_dict=state)
        vocab.tokenizer.save_pretrained(str(tmp))
        base = source_of(source)
        write_model_card(
            tmp,
            title="audiopalm extended base model (untrained audio rows)",
            summary="The text LM with its embedding (and lm_head) grown for the audiopalm audio vocabulary "
            f"({len(vocab)} tokens: {vocab.audio_offset} text + audio codes + special tokens); the new rows are "
            "initialised, not trained. It is the base model that the run's LoRA adapter applies to (peft's way for "
            "added tokens: the base has the grown embedding, the adapter the trained rows).",
            base_model=source,
            base_source=base,
            tags=["base-model"],
            load_code="from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("BASE"), "ADAPTER")',
        )
    return out


def write_adapter(
    model,
    vocab,
    out_dir: str | os.PathLike,
    *,
    state_dict: dict | None,
    base_dir: str | os.PathLike,
    card: dict,
) -> Path:
    """Write a peft model's adapter, the vocabulary (tokenizer + ``audiopalm.json``) and the card into ``out_dir``,
    atomically; the adapter's ``base_model_name_or_path`` is ``base_dir`` relative to ``out_dir``."""
    from audiopalm.modeling.card import write_model_card

    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True, save_embedding_layers=False)
        vocab.save_pretrained(tmp)
        set_adapter_base(tmp, os.path.relpath(Path(base_dir).resolve(), out.resolve()))
        write_model_card(tmp, **card)
    return out


def set_adapter_base(adapter_dir: str | os.PathLike, base: str) -> Path:
    """Rewrite ``adapter_config.json``'s ``base_model_name_or_path`` (atomically)."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
