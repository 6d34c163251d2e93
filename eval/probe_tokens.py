"""CTC probe: how much of the transcript do an audio tokenizer's first k codebooks carry?

A small bidirectional GRU over the summed code embeddings, trained with CTC on characters for a fixed
number of steps, then greedy-decoded on the dev split: its character error rate is a measure of the
tokens' phonetic content that needs no audio decoding (PocketSphinx on decoded espeak-ng audio is
near 100% WER for every codebook count, so it cannot tell tokenizers apart; see "Tokenizer benchmark").
It also separates two causes of a bad ASR WER in the LM: tokens that do not carry the words, or an
LM that has not learned to read them (see README "Ablations").

  python eval/probe_tokens.py --train runs/demo/tokens/train --dev runs/demo/tokens/dev --lang en \\
      --codebooks 1 2 4 --out eval/results/probe_tokens.json

One row per (utterance wav); a wav that several manifest rows share is used once. Characters are the
lower-cased transcript; no language model, so WER counts every misspelt word.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

Pair = tuple[np.ndarray, str]  # codes [K, F], transcript


def store_pairs(path: str | Path, lang: str) -> tuple[list[Pair], int]:
    """(codes, text) of the store's ``lang`` source utterances, one per wav; and the codebook size."""
    from audiopalm.token_store import load_token_store

    store = load_token_store(path)
    rows = store.dataset.select_columns(["audio_codes", "audio", "text", "lang"])
    seen, pairs = set(), []
    for row in rows:
        if row["lang"] != lang or row["audio"] in seen or row["audio_codes"] is None:
            continue
        seen.add(row["audio"])
        pairs.append((np.asarray(row["audio_codes"], dtype=np.int64).reshape(store.meta.num_codebooks, -1),
                      row["text"].lower()))
    if not pairs:
        raise ValueError(f"{path}: no {lang!r} utterances")
    return pairs, int(store.meta.codebook_size)


class CTCProbe(nn.Module):
    """Embeddings of k codebooks (summed) -> 2-layer BiGRU -> ``upsample`` character slots per frame."""

    def __init__(self, k: int, codebook_size: int, num_chars: int, hidden: int = 192, upsample: int = 2):
        super().__init__()
        self.embed = nn.ModuleList(nn.Embedding(codebook_size, hidden) for _ in range(k))
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, upsample * (num_chars + 1))  # +1: the CTC blank (id 0)
        self.upsample = upsample

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, k, F] -> log-probs [B, F * upsample, chars + 1]."""
        x = sum(emb(codes[:, i]) for i, emb in enumerate(self.embed))
        h, _ = self.rnn(x)
        return self.out(h).view(h.shape[0], h.shape[1] * self.upsample, -1).log_softmax(-1)


def _batch(pairs: list[Pair], k: int, char_ids: dict[str, int], upsample: int):
    frames = max(c.shape[1] for c, _ in pairs)
    codes = torch.zeros(len(pairs), k, frames, dtype=torch.long)
    for i, (c, _) in enumerate(pairs):
        codes[i, :, :c.shape[1]] = torch.from_numpy(c[:k])
    targets = [torch.tensor([char_ids[ch] for ch in text if ch in char_ids], dtype=torch.long) for _, text in pairs]
    lengths = torch.tensor([upsample * c.shape[1] for c, _ in pairs])
    return codes, lengths, torch.cat(targets), torch.tensor([len(t) for t in targets])


def _greedy(log_probs: torch.Tensor, lengths: torch.Tensor, chars: list[str]) -> list[str]:
    out = []
    for row, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist()):
        prev, text = 0, []
        for j in row[:n]:
            if j and j != prev:
                text.append(chars[j - 1])
            prev = j
        out.append("".join(text))
    return out


def probe(train: list[Pair], dev: list[Pair], *, k: int, codebook_size: int, steps: int = 600, batch: int = 32,
          lr: float = 2e-3, hidden: int = 192, seed: int = 0, progress: bool = True) -> dict:
    """Train a :class:`CTCProbe` on ``train`` for ``steps`` steps; CER / WER (%) of its greedy output on ``dev``."""
    if k > min(c.shape[0] for c, _ in train + dev):
        raise ValueError(f"k={k}: the codes have fewer codebooks")
    torch.manual_seed(seed)
    chars = sorted({ch for _, text in train for ch in text})
    char_ids = {ch: i + 1 for i, ch in enumerate(chars)}
    model = CTCProbe(k, codebook_size, len(chars), hidden=hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ctc = nn.CTCLoss(zero_infinity=True)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"probe k={k}", disable=not progress, leave=False)
    for _ in bar:
        if len(order) < batch:
            order += torch.randperm(len(train), generator=gen).tolist()
        idx, order = order[:batch], order[batch:]
        codes, lengths, targets, target_lengths = _batch([train[i] for i in idx], k, char_ids, model.upsample)
        loss = ctc(model(codes).transpose(0, 1), targets, lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    seconds = time.perf_counter() - t0
    model.eval()
    hyps = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            codes, lengths, _, _ = _batch(dev[i:i + 64], k, char_ids, model.upsample)
            hyps += _greedy(model(codes), lengths, chars)
    refs = [text for _, text in dev]
    return {"k": k, "cer": 100 * jiwer.cer(refs, hyps), "wer": 100 * jiwer.wer(refs, hyps), "train_loss": loss.item(),
            "steps": steps, "train_seconds": seconds, "train_utts": len(train), "dev_utts": len(dev),
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="token store to train the probe on (`audiopalm tokenize` output)")
    parser.add_argument("--dev", required=True, help="token store to score it on (other sentences)")
    parser.add_argument("--lang", default="en", help="language of the utterances to use (default: en)")
    parser.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 4], help="k values to probe (default: 1 2 4)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per probe (default: 600)")
    parser.add_argument("--batch", type=int, default=32, help="utterances per step (default: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        train, size = store_pairs(args.train, args.lang)
        dev, _ = store_pairs(args.dev, args.lang)
        results = [probe(train, dev, k=k, codebook_size=size, steps=args.steps, batch=args.batch, seed=args.seed)
                   for k in args.codebooks]
    except ValueError as exc:
        print(f"probe_tokens: {exc}", file=sys.stderr)
        return 2
    print(f"CTC probe, {args.lang}: {len(train)} train / {len(dev)} dev utterances, {args.steps} steps x {args.batch}")
    print("| codebooks | dev CER | dev WER | train loss | train s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['k']} | {r['cer']:.1f} | {r['wer']:.1f} | {r['train_loss']:.3f} | {r['train_seconds']:.0f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"train": args.train, "dev": args.dev, "lang": args.lang,
                                              "results": results}, indent=1), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
