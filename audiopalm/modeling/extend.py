"""Extend a Hugging Face causal LM with the audio vocabulary, and save / load the result HF-natively.

AudioPaLM (arXiv 2306.12925, section 3.2): the only change to the text decoder is a bigger input
embedding and output projection; text rows and every other weight come from the pretrained LM::

    embedding / lm_head rows:  [ text rows (kept bit-identical) | audio + special rows (new) | padding ]
                               0                                 audio_offset          len(vocab)   multiple of 64

New rows start at the mean of the old text rows (``init="mean"``: the new tokens begin with the
average logit, so the text distribution barely moves; Hewitt 2021) or at zero (``init="zeros"``, as
the AudioPaLM paper). Rows a hub model already had past its tokenizer (Qwen2 pads its embedding) are
unused and re-initialised the same way.

A checkpoint (:func:`save_checkpoint`) is a plain HF directory, loadable without ``trust_remote_code``::

    ckpt/
      config.json  generation_config.json  model.safetensors      <- AutoModelForCausalLM.from_pretrained
      tokenizer.json  tokenizer_config.json ...                   <- AutoTokenizer.from_pretrained
      audiopalm.json                                              <- vocabulary layout, pattern, tasks
      audio_tokenizer/audio_tokenizer.json (+ .safetensors)       <- load_audio_tokenizer
      complete.json                                               <- written last: the folder is whole

It is written atomically (:func:`atomic_folder`: a temporary sibling, the marker last, then a rename), so
a kill mid-save never leaves new weights beside an old ``audiopalm.json``; :func:`load_checkpoint`
refuses a folder without the marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from audiopalm.data.vocab import UnifiedVocab

AUDIO_TOKENIZER_DIR = "audio_tokenizer"
ACOUSTIC_DIR = "acoustic"
"""Sub-folder of a checkpoint holding its acoustic stage (semantic units + voice -> sound), if it has one."""


COMPLETE_MARKER = "complete.json"
"""Written last into a saved model folder; a folder without it is incomplete (a save was interrupted)."""


class CheckpointError(ValueError):
    """A model, vocabulary and audio tokenizer that do not belong together, or an incomplete folder."""


@contextlib.contextmanager
def atomic_folder(out_dir: str | os.PathLike, info: dict | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` to write into; on success write :data:`COMPLETE_MARKER`
    (``info`` + time) last and swap the folder into place. An exception leaves ``out_dir`` as it was."""
    out = Path(out_dir)
    tmp, old = out.with_name(f".tmp-{out.name}"), out.with_name(f".old-{out.name}")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    yield tmp
    (tmp / COMPLETE_MARKER).write_text(json.dumps({"time": time.time(), **(info or {})}) + "\n", encoding="utf-8")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def check_complete(directory: str | os.PathLike) -> None:
    """Refuse a saved model folder whose save did not finish (no :data:`COMPLETE_MARKER`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder")
    if not (directory / COMPLETE_MARKER).is_file():
        raise CheckpointError(
            f"{directory}: incomplete checkpoint (no {COMPLETE_MARKER}: its save was interrupted); "
            "re-run the training (--resume) or use another checkpoint"
        )


def _gathered(params):
    """Under DeepSpeed ZeRO-3 the weights are sharded: gather them to edit rows (no-op otherwise)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - transformers without deepspeed integration
        return contextlib.nullcontext()
    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=0)


def codebook_rows(code_vectors: torch.Tensor, text_rows: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Embedding rows for the audio codes from the audio tokenizer's own code vectors.

    ``code_vectors`` [k, C, D] (codebook q's code c in the codec's feature space), ``text_rows`` [T, H]
    -> [k * C, H] in the vocabulary's order (codebook-major). Each codebook's vectors are centred and
    projected on their top principal directions (at most H), mapped into the H-dim space by a fixed
    random orthonormal matrix, and scaled to the text rows' spread around their mean: codes that sound
    alike start as nearby rows, at the size of a text row.
    """
    k, c, d = code_vectors.shape
    h = text_rows.shape[1]
    mean = text_rows.mean(dim=0)
    scale = (text_rows - mean).pow(2).sum(dim=1).mean().sqrt()  # RMS distance of a text row from the mean
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for q in range(k):
        x = code_vectors[q].double()
        x = x - x.mean(dim=0)
        r = min(d, h, c)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        z = x @ vh[:r].T  # [C, r]: coordinates on the top r principal directions
        basis, _ = torch.linalg.qr(torch.randn(h, r, generator=gen, dtype=torch.float64))  # [H, r], orthonormal
        y = z @ basis.T  # [C, H]
        y = y * (scale / y.pow(2).sum(dim=1).mean().sqrt().clamp_min(1e-12))
        rows.append((mean.double() + y).to(text_rows.dtype))
    return torch.cat(rows)


def letter_rows(char_probs: torch.Tensor, char_tokens: list[list[int]], text_rows: torch.Tensor) -> torch.Tensor:
    """Embedding rows for units from what a CTC encoder hears in them.

    ``char_probs`` [C, 1 + n]: unit c's distribution over the CTC blank (column 0) and n characters;
    ``char_tokens``: for each character, the text tokens that spell it (empty: the text tokenizer has none);
    ``text_rows`` [T, H] -> [C, H]: each unit's row is its characters' rows (a character's row: the mean of its
    tokens' rows) weighted by their probabilities, the blank and spell-less characters standing at the mean text
    row. A unit that sounds like "s" starts near the text row of "s", one between words near the mean.
    """
    n = char_probs.shape[1] - 1
    if len(char_tokens) != n:
        raise ValueError(f"letter_rows: {n} characters in char_probs but {len(char_tokens)} in char_tokens")
    mean = text_rows.double().mean(dim=0)
    rows = [mean] + [text_rows[ids].double().mean(dim=0) if ids else mean for ids in char_tokens]
    return (char_probs.double() @ torch.stack(rows)).to(text_rows.dtype)  # [C, 1 + n] @ [1 + n, H]


def extend_model(
    model,
    vocab: UnifiedVocab,
    *,
    init: str = "mean",
    pad_to_multiple_of: int = 64,
    code_vectors: torch.Tensor | None = None,
    unit_characters: tuple[list[str], torch.Tensor] | None = None,
):
    """Grow ``model``'s input embedding and lm_head to cover ``vocab``; returns ``model`` (changed in place).

    Rows ``[0, vocab.audio_offset)`` keep their exact values; rows from ``audio_offset`` on are set to
    the mean of the old text rows (``init="mean"``) or zeros (``init="zeros"``); with ``init="codebook"`` the
    audio rows come from ``code_vectors`` (the audio tokenizer's ``code_vectors()``, see :func:`codebook_rows`)
    and the special rows from the mean; with ``init="letters"`` the audio rows of a one-codebook vocabulary come
    from ``unit_characters`` (the audio tokenizer's ``unit_characters()``, see :func:`letter_rows`), each character
    spelled by the vocabulary's text tokenizer. Each is done separately for the
    input embedding and an untied lm_head (and its bias, if any). The row count is rounded up to a
    multiple of ``pad_to_multiple_of`` (64: matmuls over the vocabulary run on GPU tensor cores only
    when that dimension is a multiple of 8/64, so the lm_head matmul is markedly faster) and never
    shrinks. Sets ``config.vocab_size`` and the pad/bos/eos ids of the config and generation config.
    Call it once, on a text LM, before training (``accelerator.prepare``).
    """
    if init not in ("mean", "zeros", "codebook", "letters"):
        raise ValueError(f"init: expected 'mean', 'zeros', 'codebook' or 'letters', got {init!r}")
    char_tokens: list[list[int]] = []
    if init == "letters":
        if unit_characters is None or vocab.num_codebooks != 1:
            raise ValueError(
                "init='letters' needs one codebook of units whose tokenizer can say what each sounds like "
                "(unit_characters(): a ctc_units tokenizer clustered at its encoder's last layer)"
            )
        chars, char_probs = unit_characters
        if char_probs.shape != (vocab.codebook_size, 1 + len(chars)):
            raise ValueError(
                f"init='letters': unit_characters gives {tuple(char_probs.shape)} probabilities, the vocabulary needs "
                f"[{vocab.codebook_size}, {1 + len(chars)}]"
            )
        char_tokens = [vocab.tokenizer.encode(ch, add_special_tokens=False) for ch in chars]
    if init == "codebook":
        need = (vocab.num_codebooks, vocab.codebook_size)
        if (
            code_vectors is None
            or code_vectors.dim() != 3
            or code_vectors.shape[0] < need[0]
            or code_vectors.shape[1] != need[1]
        ):
            shape = None if code_vectors is None else tuple(code_vectors.shape)
            raise ValueError(
                f"init='codebook' needs the audio tokenizer's code vectors [k>={need[0]}, {need[1]}, D], got {shape}"
            )
        code_vectors = code_vectors[: vocab.num_codebooks]
    if pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of: expected >= 1, got {pad_to_multiple_of}")
    text = vocab.audio_offset
    old_rows = _rows(model)  # the full count, also when ZeRO-3 shards the weight
    if old_rows < text:
        raise CheckpointError(
            f"the model's embedding has {old_rows} rows but the text tokenizer has {text} tokens: "
            "tokenizer and model do not belong together"
        )
    model.resize_token_embeddings(max(len(vocab), old_rows), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is emb.weight
    params = [emb.weight] + ([] if tied else [head.weight] + ([head.bias] if head.bias is not None else []))
    with _gathered(params), torch.no_grad():
        for weight in params:
            new = weight[text:]  # [V_new, H] or [V_new] for a bias
            new.copy_(torch.zeros_like(new[0]) if init == "zeros" else weight[:text].mean(dim=0))
            if init == "codebook" and weight.dim() == 2:  # audio rows; special rows and a bias stay at the mean
                audio = vocab.num_codebooks * vocab.codebook_size
                assert code_vectors is not None  # checked above for init == "codebook"
                new[:audio].copy_(codebook_rows(code_vectors.detach().cpu().float(), weight[:text].detach().cpu()))
            if init == "letters" and weight.dim() == 2:
                assert unit_characters is not None  # checked above for init == "letters"
                new[: vocab.codebook_size].copy_(
                    letter_rows(unit_characters[1].cpu(), char_tokens, weight[:text].detach().cpu())
                )
    rows = _rows(model)

    # config: vocab_size (resize sets it; set it again for configs that keep it on a text sub-config)
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.vocab_size = rows
    ids = {"pad_token_id": vocab.pad_id, "eos_token_id": vocab.eos_id, "bos_token_id": vocab.bos_id}
    for cfg in {id(c): c for c in (model.config, text_config)}.values():
        for name, value in ids.items():
            setattr(cfg, name, value)
    if getattr(model, "generation_config", None) is not None:
        for name, value in ids.items():
            setattr(model.generation_config, name, value)
    return model


def _rows(model, state_dict: dict | None = None) -> int:
    """Rows of the input embedding. Under ZeRO-3 a parameter is a shard of shape (0,): its full shape is
    ``ds_shape``; a gathered ``state_dict`` holds the full tensor."""
    weight = model.get_input_embeddings().weight
    if state_dict is not None:
        full = next(
            (v for k, v in state_dict.items() if k.endswith("embed_tokens.weight") or k.endswith("wte.weight")), None
        )
        if full is not None:
            return full.shape[0]
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def new_token_ids(vocab: UnifiedVocab) -> list[int]:
    """Ids added by the vocabulary (audio block and special tokens): ``[audio_offset, len(vocab))``."""
    return list(range(vocab.audio_offset, len(vocab)))


def trainable_token_indices(model, vocab: UnifiedVocab) -> dict[str, list[int]]:
    """``peft.LoraConfig(trainable_token_indices=...)`` that trains only the new rows under LoRA.

    Keys are the module names of the input embedding and, when it is not tied to it, the lm_head
    (``{"embed_tokens": ids, "lm_head": ids}`` for Llama; ``{"wte": ids}`` for tied GPT-2)."""
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    out = {names[id(emb)]: new_token_ids(vocab)}
    if head is not None and head.weight is not emb.weight:
        out[names[id(head)]] = new_token_ids(vocab)
    return out


def _check_audio_tokenizer(vocab: UnifiedVocab, audio_tokenizer) -> None:
    """The audio tokenizer makes the codes the vocabulary was laid out for."""
    if audio_tokenizer.codebook_size != vocab.codebook_size or audio_tokenizer.num_codebooks < vocab.num_codebooks:
        raise CheckpointError(
            f"audio tokenizer ({audio_tokenizer.num_codebooks} codebooks of {audio_tokenizer.codebook_size}) "
            f"does not fit the vocabulary ({vocab.num_codebooks} codebooks of {vocab.codebook_size})"
        )
    recorded = vocab.layout.audio_tokenizer
    if recorded is not None and recorded.get("fingerprint") != audio_tokenizer.fingerprint:
        raise CheckpointError(
            f"audio tokenizer fingerprint {audio_tokenizer.fingerprint} differs from the one the "
            f"vocabulary was built for ({recorded.get('fingerprint')})"
        )


def save_checkpoint(model, vocab: UnifiedVocab, audio_tokenizer, out_dir: str | os.PathLike, *, acoustic=None) -> Path:
    """Write model (safetensors), tokenizer, ``audiopalm.json``, ``audio_tokenizer/`` and, for a model whose
    audio tokens are semantic units, its acoustic stage (``acoustic/``: units + voice -> sound) into ``out_dir``,
    atomically (:func:`atomic_folder`)."""
    with atomic_folder(out_dir) as tmp:
        write_checkpoint_files(model, vocab, audio_tokenizer, tmp, acoustic=acoustic)
    return Path(out_dir)


def write_checkpoint_files(
    model,
    vocab: UnifiedVocab,
    audio_tokenizer,
    out_dir: str | os.PathLike,
    state_dict: dict | None = None,
    *,
    acoustic=None,
) -> Path:
    """The files of :func:`save_checkpoint`, written in place into ``out_dir`` (the caller makes it atomic).
    ``state_dict``: the full weights when the model is sharded (ZeRO-3), else read from ``model``."""
    rows = _rows(model, state_dict)
    if rows < len(vocab):
        raise CheckpointError(
            f"the model's embedding has {rows} rows, the vocabulary {len(vocab)}: call extend_model first"
        )
    _check_audio_tokenizer(vocab, audio_tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), state_dict=state_dict)  # transformers writes safetensors only
    layout = vocab.layout
    if layout.audio_tokenizer is None:
        layout = dataclasses.replace(
            layout,
            audio_tokenizer={
                "type": audio_tokenizer.type_name,
                "fingerprint": audio_tokenizer.fingerprint,
                "num_codebooks": audio_tokenizer.num_codebooks,
            },
        )
    UnifiedVocab(vocab.tokenizer, layout).save_pretrained(out)
    audio_tokenizer.save_pretrained(out / AUDIO_TOKENIZER_DIR)
    if acoustic is not None:
        acoustic.save_pretrained(out / ACOUSTIC_DIR)
    pickled = sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    if pickled:
        raise CheckpointError(f"{out}: pickle-format files written: {pickled}; only safetensors are allowed")
    return out


def load_checkpoint(directory: str | os.PathLike, **model_kwargs):
    """Load ``(model, vocab, audio_tokenizer)`` from a :func:`save_checkpoint` directory and check they agree.

    ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (e.g. ``dtype``, ``device_map``)."""
    from transformers import AutoModelForCausalLM

    from audiopalm.tokenizers.base import load_audio_tokenizer

    directory = Path(directory)
    check_complete(directory)
    vocab = UnifiedVocab.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(str(directory), **model_kwargs)
    rows = _rows(model)
    if rows < len(vocab):
        raise CheckpointError(f"{directory}: the model's embedding has {rows} rows, the vocabulary {len(vocab)}")
    tok_dir = directory / AUDIO_TOKENIZER_DIR
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"{tok_dir}: no audio tokenizer folder in the checkpoint")
    audio_tokenizer = load_audio_tokenizer(tok_dir)
    try:
        _check_audio_tokenizer(vocab, audio_tokenizer)
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    return model, vocab, audio_tokenizer


def load_adapter_weights(model, path: str | os.PathLike) -> None:
    """Load a peft adapter file (``adapter_model.safetensors``) into a peft model, strictly.

    With tied embeddings peft trains the new rows through one ``trainable_tokens_delta`` shared by the
    embedding and the lm_head; the saved file names it under both modules, but only the embedding's is a
    key of the model: the lm_head copy is the same tensor and is not an unexpected key."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result: Any = set_peft_model_state_dict(model, load_file(str(path)))  # torch's _IncompatibleKeys
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    tied = getattr(base.config, "tie_word_embeddings", False) and head is not None
    head_name = next((n for n, m in base.named_modules() if m is head), None) if tied else None
    unexpected = [
        k
        for k in result.unexpected_keys
        if not (head_name and f"{head_name}.token_adapter." in k and k.endswith("trainable_tokens_delta"))
    ]
    if unexpected:
        raise ValueError(f"{path}: adapter has unexpected keys {sorted(unexpected)[:5]}")
