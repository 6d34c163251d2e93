"""Train a small text tokenizer on corpus text (stage 0, when no hub LLM and its tokenizer are at hand).

Uses the Hugging Face ``tokenizers`` library and saves a ``PreTrainedTokenizerFast`` with
``<s>`` (bos), ``</s>`` (eos), ``<pad>`` and ``<unk>``, so ``AutoTokenizer.from_pretrained(folder)``
loads it like any hub tokenizer. Like Llama's, encoding adds ``<s>`` in front (not ``</s>``).

The algorithm is byte-level BPE (GPT-2 / Llama 3 style): every string encodes, ``<unk>`` never
appears. (``tokenizers``' unigram trainer learned almost no multi-character pieces on small corpora
in our trials, so it is not offered.)

Subcommand::

    audiopalm text-tokenizer --manifest corpus/manifest.jsonl --out runs/text_tokenizer --vocab-size 4096
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# The segment separator of audiopalm's task format (audiopalm.data.vocab.SPECIAL_TOKENS["sep"]): stage 0 trains
# MT lines as "[MT English French] src<|sep|>tgt", the exact tokens the fine-tune's MT examples are made of,
# so the fine-tune starts from a model that already knows its text format (the vocabulary reuses this id).
SEP = "<|sep|>"
# Order fixes the ids: <s>=0, </s>=1, <pad>=2, <unk>=3, <|sep|>=4 in every tokenizer trained here.
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK, SEP]


def train_text_tokenizer(
    lines: Iterable[str],
    out_dir: str | Path | None = None,
    *,
    vocab_size: int = 4096,
    model: str = "bpe",
    min_frequency: int = 2,
):
    """Train a tokenizer on ``lines`` and (if ``out_dir``) save it; returns a ``PreTrainedTokenizerFast``.

    ``vocab_size`` is an upper bound: a small corpus may stop earlier (the returned ``len(tok)`` says).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if model != "bpe":
        raise ValueError(f"model: only 'bpe' is supported, got {model!r}")
    if vocab_size < 300:
        raise ValueError(f"vocab_size: must be >= 300 (256 bytes + specials), got {vocab_size}")
    lines = [s for s in lines if s and s.strip()]
    if not lines:
        raise ValueError("no text to train the tokenizer on (all lines empty)")

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[SEP],
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def manifest_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every ``text`` and ``tgt_text`` of the given manifests, in file order."""
    from audiopalm.data.manifest import read_manifest

    for path in paths:
        for rec in read_manifest(path):
            yield rec.text
            if rec.tgt_text:
                yield rec.tgt_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", action="append", required=True, help="manifest JSONL (repeat for several)")
    parser.add_argument("--out", required=True, help="folder to save the tokenizer in")
    parser.add_argument("--vocab-size", type=int, default=4096, help="upper bound on the vocabulary (default 4096)")


def run(args: argparse.Namespace) -> int:
    tok = train_text_tokenizer(manifest_lines(args.manifest), args.out, vocab_size=args.vocab_size)
    sample = "the small dog sleeps."
    print(f"wrote {args.out}: {len(tok)} tokens; {sample!r} -> {tok.tokenize(sample)}")
    return 0
