"""extend_model / save_checkpoint / load_checkpoint on tiny Llama, Qwen2 and GPT-2 models, tied and untied."""

import json

import pytest
import torch
from builders import TinyCodec, tiny_text_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, Qwen2Config

from audiopalm.data.vocab import UnifiedVocab
from audiopalm.modeling.extend import (
    CheckpointError,
    codebook_rows,
    extend_model,
    letter_rows,
    load_checkpoint,
    new_token_ids,
    save_checkpoint,
    trainable_token_indices,
)
from audiopalm.tokenizers import base


def tiny_model(family: str, tied: bool, vocab_size: int):
    """A 2-layer model of ``family`` with hidden size 16 (llama, gpt2) or 32 (qwen2)."""
    cfg: LlamaConfig | Qwen2Config | GPT2Config
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
        )
    elif family == "qwen2":
        cfg = Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=tied,
        )
    else:
        cfg = GPT2Config(
            vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=128, tie_word_embeddings=tied
        )
    return AutoModelForCausalLM.from_config(cfg).eval()


CASES = [("llama", False), ("llama", True), ("qwen2", True), ("qwen2", False), ("gpt2", True), ("gpt2", False)]


def _setup(family, tied, extra_rows=0):
    text_tok = tiny_text_tokenizer(family)
    model = tiny_model(family, tied, len(text_tok) + extra_rows)
    codec = TinyCodec()
    vocab = UnifiedVocab.build(text_tok, audio_tokenizer=codec, pattern="flatten", tasks=["ASR", "TTS"])
    return model, vocab, codec


def _weights(model):
    emb = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings().weight.detach().clone()
    return emb, head


@pytest.mark.parametrize("family, tied", CASES)
@pytest.mark.parametrize("init", ["mean", "zeros"])
def test_extend_rows_and_config(family, tied, init):
    model, vocab, _ = _setup(family, tied)
    old_emb, old_head = _weights(model)
    text = vocab.audio_offset
    assert old_emb.shape[0] == text
    extend_model(model, vocab, init=init)
    emb, head = _weights(model)
    rows = emb.shape[0]
    assert rows % 64 == 0 and len(vocab) <= rows < len(vocab) + 64, (rows, len(vocab))
    assert head.shape == emb.shape and model.config.vocab_size == rows
    assert torch.equal(emb[:text], old_emb) and torch.equal(head[:text], old_head)  # bit-identical
    for new, old in ((emb, old_emb), (head, old_head)):
        want = old.mean(0) if init == "mean" else torch.zeros(old.shape[1])
        assert torch.equal(new[text:], want.expand(rows - text, -1))
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    assert model.config.pad_token_id == vocab.pad_id and model.config.eos_token_id == vocab.eos_id
    assert model.config.bos_token_id == vocab.bos_id and model.generation_config.pad_token_id == vocab.pad_id


@pytest.mark.parametrize("family, tied", CASES)
def test_codebook_init_keeps_the_codes_geometry(family, tied):
    """init='codebook': audio rows are the code vectors rotated and scaled (pairwise distances kept up to one
    factor per codebook), centred on the text mean at the text rows' spread; text and special rows as before."""
    model, vocab, _ = _setup(family, tied)
    old_emb, old_head = _weights(model)
    text, k, c = vocab.audio_offset, vocab.num_codebooks, vocab.codebook_size
    vectors = torch.randn(k + 1, c, 5, generator=torch.Generator().manual_seed(0))  # one codebook more than used
    vectors[0, 1] = vectors[0, 0] + 1e-3  # two codes that sound alike
    extend_model(model, vocab, init="codebook", code_vectors=vectors)
    emb, head = _weights(model)
    assert torch.equal(emb[:text], old_emb) and torch.equal(head[:text], old_head)
    for new, old in ((emb, old_emb), (head, old_head)):
        mean = old.mean(0)
        spread = (old - mean).pow(2).sum(1).mean().sqrt()
        for q in range(k):
            rows = new[text + q * c : text + (q + 1) * c]
            assert torch.allclose(rows.mean(0), mean, atol=1e-5)
            assert torch.allclose((rows - mean).pow(2).sum(1).mean().sqrt(), spread, rtol=1e-4)
            got, want = torch.cdist(rows, rows), torch.cdist(vectors[q], vectors[q])
            ratio = got[want > 0] / want[want > 0]
            assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)  # an isometry up to scale
        assert torch.equal(new[text + k * c :], mean.expand(new.shape[0] - text - k * c, -1))  # special + padding rows
    a, b, other = emb[text], emb[text + 1], emb[text + 2]
    assert (a - b).norm() < 0.01 * (a - other).norm()


def test_codebook_init_needs_matching_code_vectors():
    model, vocab, _ = _setup("llama", True)
    k, c = vocab.num_codebooks, vocab.codebook_size
    for bad in (None, torch.randn(k, c), torch.randn(k - 1, c, 4), torch.randn(k, c + 1, 4)):
        with pytest.raises(ValueError, match="code vectors"):
            extend_model(model, vocab, init="codebook", code_vectors=bad)
    with pytest.raises(ValueError, match="init"):
        extend_model(model, vocab, init="centroids")


@pytest.mark.parametrize("family, tied", [("llama", True), ("llama", False), ("gpt2", True)])
def test_letters_init_starts_each_unit_at_the_characters_it_sounds_like(family, tied):
    """init='letters': a unit the encoder hears as "a" starts at the text row that spells "a", a blank unit at the
    mean text row, a 50/50 "a"/"b" unit halfway; text and special rows as before."""
    text_tok = tiny_text_tokenizer(family)
    model = tiny_model(family, tied, len(text_tok))
    vocab = UnifiedVocab.build(text_tok, audio_tokenizer=TinyCodec(num_codebooks=1), tasks=["ASR"])
    old_emb, old_head = _weights(model)
    text, c = vocab.audio_offset, vocab.codebook_size
    chars = [" ", "a", "b"]
    probs = torch.full((c, 4), 0.25)  # every other unit: a quarter each
    probs[0], probs[1], probs[2] = (
        torch.tensor([0.0, 0, 1, 0]),
        torch.tensor([1.0, 0, 0, 0]),
        torch.tensor([0, 0, 0.5, 0.5]),
    )
    extend_model(model, vocab, init="letters", unit_characters=(chars, probs))
    emb, head = _weights(model)
    assert torch.equal(emb[:text], old_emb) and torch.equal(head[:text], old_head)
    spell = {ch: text_tok.encode(ch, add_special_tokens=False) for ch in chars}
    assert spell["a"] and spell["b"], spell  # the test's premise: the tokenizer spells both letters
    for new, old in ((emb, old_emb), (head, old_head)):
        mean = old.mean(0)
        a, b = old[spell["a"]].mean(0), old[spell["b"]].mean(0)
        torch.testing.assert_close(new[text], a)
        torch.testing.assert_close(new[text + 1], mean)
        torch.testing.assert_close(new[text + 2], (a + b) / 2)
        assert torch.equal(new[text + c :], mean.expand(new.shape[0] - text - c, -1))  # special + padding rows
    assert not torch.allclose(emb[text], emb[text + 2])


def test_letters_init_needs_one_codebook_of_units_with_characters():
    model, vocab, _ = _setup("llama", True)  # two codebooks
    with pytest.raises(ValueError, match="init='letters' needs one codebook"):
        extend_model(model, vocab, init="letters", unit_characters=(["a"], torch.ones(vocab.codebook_size, 2) / 2))
    one = UnifiedVocab.build(tiny_text_tokenizer("llama"), audio_tokenizer=TinyCodec(num_codebooks=1), tasks=["ASR"])
    with pytest.raises(ValueError, match="init='letters' needs one codebook"):
        extend_model(tiny_model("llama", True, len(one.tokenizer)), one, init="letters")  # e.g. a codec: None
    with pytest.raises(ValueError, match=r"gives \(8, 3\) probabilities"):
        extend_model(
            tiny_model("llama", True, len(one.tokenizer)),
            one,
            init="letters",
            unit_characters=(["a"], torch.ones(8, 3)),
        )
    with pytest.raises(ValueError, match="2 characters in char_probs but 1"):
        letter_rows(torch.ones(4, 3) / 3, [[1]], torch.randn(5, 2))


def test_codebook_rows_project_wider_vectors_onto_their_top_directions():
    """D > H: the rows keep the H principal directions of the codes (the variance along the rest is lost)."""
    gen = torch.Generator().manual_seed(1)
    text_rows = torch.randn(50, 4, generator=gen)
    low = torch.randn(32, 3, generator=gen) * torch.tensor([5.0, 3.0, 2.0])
    vectors = torch.cat([low, 0.01 * torch.randn(32, 5, generator=gen)], dim=1)[None]  # [1, 32, 8], rank ~3
    rows = codebook_rows(vectors, text_rows)
    assert rows.shape == (32, 4)
    got, want = torch.cdist(rows, rows), torch.cdist(vectors[0], vectors[0])
    mask = want > 1.0
    ratio = got[mask] / want[mask]
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=0.02)


def test_extra_rows_of_a_padded_hub_embedding_are_reinitialised():
    model, vocab, _ = _setup("qwen2", False, extra_rows=10)  # like Qwen2: embedding larger than its tokenizer
    old_emb, _ = _weights(model)
    extend_model(model, vocab)
    emb, _ = _weights(model)
    text = vocab.audio_offset
    assert torch.equal(emb[:text], old_emb[:text])
    assert torch.equal(emb[text : text + 10], old_emb[:text].mean(0).expand(10, -1))


@pytest.mark.parametrize("family, tied", [("llama", False), ("gpt2", True)])
def test_text_logits_unchanged_by_extension(family, tied):
    model, vocab, _ = _setup(family, tied)
    ids = torch.tensor([vocab.text_ids("the dog sleeps.")])
    with torch.no_grad():
        before = model(ids).logits  # [1, T, V_text]
        extend_model(model, vocab)
        after = model(ids).logits  # [1, T, V_padded]
    assert torch.equal(after[..., : vocab.audio_offset], before)


@pytest.mark.parametrize("family, tied", CASES)
def test_checkpoint_loads_with_plain_transformers(family, tied, tmp_path, monkeypatch):
    monkeypatch.setitem(base.TOKENIZERS, TinyCodec.type_name, f"{TinyCodec.__module__}:TinyCodec")
    model, vocab, codec = _setup(family, tied)
    extend_model(model, vocab)
    with torch.no_grad():  # train the new rows a little so that a load that re-initialised them shows
        model.get_input_embeddings().weight[vocab.audio_offset :] += torch.randn_like(
            model.get_input_embeddings().weight[vocab.audio_offset :]
        )
    ids = (
        vocab.text_ids("[ASR English]")
        + vocab.audio_to_ids(torch.tensor([[1, 2, 3], [4, 5, 6]]))
        + [vocab.sep_id]
        + vocab.text_ids("the dog.")
        + [vocab.eos_id]
    )
    x = torch.tensor([ids])
    with torch.no_grad():
        want = model(x).logits  # [1, T, V]
    save_checkpoint(model, vocab, codec, tmp_path)

    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "audiopalm.json", "audio_tokenizer"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()  # no trust_remote_code
    with torch.no_grad():
        assert torch.equal(plain(x).logits, want)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids
    layout = json.loads((tmp_path / "audiopalm.json").read_text())
    assert layout["audio_tokenizer"]["fingerprint"] == codec.fingerprint and layout["tasks"] == ["ASR", "TTS"]

    model2, vocab2, codec2 = load_checkpoint(tmp_path)
    assert vocab2.layout == vocab.layout and codec2.fingerprint == codec.fingerprint
    with torch.no_grad():
        assert torch.equal(model2.eval()(x).logits, want)


def test_checkpoint_errors(tmp_path):
    model, vocab, codec = _setup("gpt2", True)
    with pytest.raises(CheckpointError, match="call extend_model first"):
        save_checkpoint(model, vocab, codec, tmp_path)
    extend_model(model, vocab)
    with torch.no_grad():
        codec.scale += 1  # a different tokenizer
    with pytest.raises(CheckpointError, match="fingerprint .* differs"):
        save_checkpoint(model, vocab, codec, tmp_path)
    with pytest.raises(CheckpointError, match=r"audio tokenizer \(2 codebooks of 4\) does not fit"):
        save_checkpoint(model, vocab, TinyCodec(codebook_size=4), tmp_path)
    with pytest.raises(ValueError, match="init: expected 'mean', 'zeros', 'codebook' or 'letters', got 'normal'"):
        extend_model(model, vocab, init="normal")
    small = tiny_model("gpt2", True, 10)
    with pytest.raises(CheckpointError, match="embedding has 10 rows but the text tokenizer has 257"):
        extend_model(small, vocab)


@pytest.mark.parametrize("family, tied", [("llama", False), ("gpt2", True)])
def test_lora_trains_only_the_new_rows(family, tied):
    from peft import LoraConfig, get_peft_model

    model, vocab, _ = _setup(family, tied)
    extend_model(model, vocab)
    indices = trainable_token_indices(model, vocab)
    assert indices == (
        {"embed_tokens": new_token_ids(vocab), "lm_head": new_token_ids(vocab)}
        if not tied
        else {"wte": new_token_ids(vocab)}
    )
    old_emb, old_head = _weights(model)
    targets = ["q_proj", "v_proj"] if family == "llama" else ["c_attn"]
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, trainable_token_indices=indices)
    )
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    x = torch.tensor([vocab.text_ids("[TTS English] the dog") + vocab.audio_to_ids(torch.tensor([[1, 2], [3, 4]]))])
    peft_model(x, labels=x).loss.backward()
    opt.step()
    merged = peft_model.merge_and_unload()
    emb, head = _weights(merged)
    text = vocab.audio_offset
    assert torch.equal(emb[:text], old_emb[:text]) and torch.equal(head[:text], old_head[:text])
    assert not torch.equal(emb[text : len(vocab)], old_emb[text : len(vocab)])
    assert not torch.equal(head[text : len(vocab)], old_head[text : len(vocab)])
