"""audiopalm.data.text_tokenizer: trained tokenizers load with AutoTokenizer and round-trip text."""

from __future__ import annotations

import pytest

from audiopalm.data.text_tokenizer import BOS, EOS, PAD, UNK, train_text_tokenizer

LINES = [
    "the small dog sleeps.",
    "le petit chien dort.",
    "el perro pequeño duerme.",
    "der kleine Hund schläft.",
    "[MT English French] the small dog sleeps. -> le petit chien dort.",
] * 40


def test_trained_tokenizer_loads_with_autotokenizer_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    train_text_tokenizer(LINES, tmp_path, vocab_size=400)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (BOS, EOS, PAD, UNK)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert 256 + 4 < len(tok) <= 400
    for text in ["der kleine Hund schläft.", "[MT English French] le chien -> the dog"]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # Llama-style: <s> only
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("the small dog sleeps.", add_special_tokens=False).input_ids) <= 6  # merges were learned


def test_byte_level_bpe_never_produces_unk(tmp_path):
    tok = train_text_tokenizer(LINES, tmp_path, vocab_size=300, model="bpe")
    ids = tok("日本語 ✓ Ωμέγα", add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids and tok.decode(ids) == "日本語 ✓ Ωμέγα"


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="model: only 'bpe' is supported, got 'unigram'"):
        train_text_tokenizer(LINES, tmp_path, model="unigram")
    with pytest.raises(ValueError, match="vocab_size: must be >= 300"):
        train_text_tokenizer(LINES, tmp_path, vocab_size=100)
    with pytest.raises(ValueError, match="no text"):
        train_text_tokenizer(["", "  "], tmp_path)


def test_subcommand_trains_on_manifest_text(tmp_path, capsys):
    import argparse

    from builders import write_corpus
    from transformers import AutoTokenizer

    from audiopalm.data import text_tokenizer

    train, dev = write_corpus(tmp_path / "corpus")
    parser = argparse.ArgumentParser()
    text_tokenizer.add_arguments(parser)
    args = parser.parse_args(
        ["--manifest", str(train), "--manifest", str(dev), "--out", str(tmp_path / "tok"), "--vocab-size", "320"]
    )
    assert text_tokenizer.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok) == 320 and tok.convert_ids_to_tokens(tok("der kleine Hund").input_ids)[0] == "<s>"
