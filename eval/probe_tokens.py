"""CTC probe: how much of the transcript do an audio tokenizer's first k codebooks carry?

A small bidirectional GRU over the summed code embeddings, trained with CTC on characters for a fixed
number of steps, then greedy-decoded on the dev split: its character error rate is a measure of the
tokens' phonetic content that needs no audio decoding (PocketSphinx on decoded espeak-ng audio is
near 100% WER for every codebook count, so it cannot tell tokenizers apart; see "Tokenizer benchmark").
It also separates two causes of a bad ASR WER in the LM: tokens that do not carry the words, or an
LM that has not learned to read them (see README "Ablations").

  python eval/probe_tokens.py --train runs/demo/tokens/train --dev runs/demo/tokens/dev --lang en \\
      --codebooks 1 2 4 --out eval/results/probe_tokens.json

As a judge of generated speech (:class:`ProbeJudge`: waveform -> the codec's tokens -> a probe per language),
one for every model, stronger on the demo's voices than the LM's own ASR or PocketSphinx::

  python eval/probe_tokens.py --train runs/demo/tokens/train --tokenizer runs/demo/tokenizer \\
      --langs en fr --judge-eval runs/demo/eval

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
    from audiopalm.data.token_store import load_token_store

    store = load_token_store(path)
    rows = store.dataset.select_columns(["audio_codes", "audio", "text", "lang"])
    seen, pairs = set(), []
    for row in rows:
        if row["lang"] != lang or row["audio"] in seen or row["audio_codes"] is None:
            continue
        seen.add(row["audio"])
        pairs.append(
            (np.asarray(row["audio_codes"], dtype=np.int64).reshape(store.meta.num_codebooks, -1), row["text"].lower())
        )
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
        codes[i, :, : c.shape[1]] = torch.from_numpy(c[:k])
    targets = [torch.tensor([char_ids[ch] for ch in text if ch in char_ids], dtype=torch.long) for _, text in pairs]
    lengths = torch.tensor([upsample * c.shape[1] for c, _ in pairs])
    return codes, lengths, torch.cat(targets), torch.tensor([len(t) for t in targets])


def _greedy(log_probs: torch.Tensor, lengths: torch.Tensor, chars: list[str]) -> list[str]:
    out = []
    for row, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), strict=True):
        prev, text = 0, []
        for j in row[:n]:
            if j and j != prev:
                text.append(chars[j - 1])
            prev = j
        out.append("".join(text))
    return out


def train_probe(
    train: list[Pair],
    *,
    k: int,
    codebook_size: int,
    steps: int = 600,
    batch: int = 32,
    lr: float = 2e-3,
    hidden: int = 192,
    seed: int = 0,
    progress: bool = True,
) -> tuple[CTCProbe, list[str], float, float]:
    """Train a :class:`CTCProbe` on ``train``; returns it (in eval mode), its characters, the last batch's
    loss and the training seconds."""
    if k > min(c.shape[0] for c, _ in train):
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
    return model.eval(), chars, loss.item(), time.perf_counter() - t0


def transcribe(model: CTCProbe, chars: list[str], codes: list[np.ndarray], batch: int = 64) -> list[str]:
    """Greedy CTC transcripts of code arrays [K >= k, F] (the first k codebooks are read)."""
    k = len(model.embed)
    hyps: list[str] = []
    with torch.no_grad():
        for i in range(0, len(codes), batch):
            part = [(c, "") for c in codes[i : i + batch]]
            x, lengths, _, _ = _batch(part, k, {}, model.upsample)
            hyps += _greedy(model(x), lengths, chars)
    return hyps


def probe(
    train: list[Pair],
    dev: list[Pair],
    *,
    k: int,
    codebook_size: int,
    steps: int = 600,
    batch: int = 32,
    lr: float = 2e-3,
    hidden: int = 192,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train a :class:`CTCProbe` on ``train`` for ``steps`` steps; CER / WER (%) of its greedy output on ``dev``."""
    if k > min(c.shape[0] for c, _ in train + dev):
        raise ValueError(f"k={k}: the codes have fewer codebooks")
    model, chars, loss, seconds = train_probe(
        train,
        k=k,
        codebook_size=codebook_size,
        steps=steps,
        batch=batch,
        lr=lr,
        hidden=hidden,
        seed=seed,
        progress=progress,
    )
    hyps = transcribe(model, chars, [c for c, _ in dev])
    refs = [text for _, text in dev]
    return {
        "k": k,
        "cer": 100 * jiwer.cer(refs, hyps),
        "wer": 100 * jiwer.wer(refs, hyps),
        "train_loss": loss,
        "steps": steps,
        "train_seconds": seconds,
        "train_utts": len(train),
        "dev_utts": len(dev),
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:3]],
    }


class ProbeJudge:
    """An ASR judge (:class:`audiopalm.evaluation.judges.ASRJudge`) made of the audio tokenizer and one CTC probe per
    language: waveform -> codes -> probe transcript. It reads the codec's tokens as the LM does, and on the
    demo's espeak-ng voices it is a far stronger judge than the LM's own ASR or PocketSphinx (README)."""

    name = "ctc-probe"

    def __init__(self, tokenizer, probes: dict[str, tuple[CTCProbe, list[str]]]):
        self.tokenizer, self.probes = tokenizer, probes

    @classmethod
    def train(
        cls,
        tokenizer,
        store: str | Path,
        langs: list[str],
        *,
        steps: int = 600,
        seed: int = 0,
        progress: bool = True,
        **kwargs,
    ) -> ProbeJudge:
        """One first-codebook probe per language on ``store`` (made by ``tokenizer``); ``kwargs`` go to
        :func:`train_probe` (batch, lr, hidden)."""
        probes = {}
        for lang in langs:
            pairs, size = store_pairs(store, lang)
            model, chars, _, _ = train_probe(
                pairs, k=1, codebook_size=size, steps=steps, seed=seed, progress=progress, **kwargs
            )
            probes[lang] = (model, chars)
        return cls(tokenizer, probes)

    def transcribe(self, wavs, sample_rate: int, lang: str) -> list[str]:
        from audiopalm.audio.io import resample

        if lang not in self.probes:
            raise ValueError(f"ProbeJudge: no probe for language {lang!r} (has {', '.join(self.probes)})")
        model, chars = self.probes[lang]
        codes = []
        for w in wavs:
            w = resample(np.asarray(w, dtype=np.float32), sample_rate, self.tokenizer.sample_rate)
            c, n = self.tokenizer.encode(torch.from_numpy(w)[None])  # [1, K, F], [1]
            codes.append(c[0, :, : int(n[0])].numpy())
        return transcribe(model, chars, codes)


SPEECH_OUTPUTS = {"TTS": "TTS.jsonl", "S2ST": "S2ST.jsonl", "ASR AST S2ST": "ASR_AST_S2ST.jsonl"}
"""Tasks whose output is speech -> their outputs file in an `audiopalm eval` folder."""


def judge_outputs(eval_dir: str | Path, judge: ProbeJudge, tasks: list[str] | None = None) -> list[dict]:
    """An `audiopalm eval` folder's generated speech, and the reference audio of the same sentences, judged by
    ``judge``: TTS round-trip WER and CER, S2ST ASR-BLEU, per language pair and voice subset, as ``summary.json``
    metric rows (metric names end in ``[ctc-probe]``, ``[ctc-probe] (ref audio)``, or ``[ctc-probe] (another's ref
    audio)``: each reference transcript scored against the next sentence's, the chance level). An output without speech
    is judged as silence, as `audiopalm eval` does. ``tasks``: default every speech task the folder has."""
    from audiopalm.audio import io as audio
    from audiopalm.evaluation import metrics
    from audiopalm.evaluation.evaluate import SILENCE_SECONDS
    from audiopalm.evaluation.judges import CallableJudge

    eval_dir = Path(eval_dir)
    tasks = (
        [t for t in SPEECH_OUTPUTS if (eval_dir / "outputs" / SPEECH_OUTPUTS[t]).is_file()] if tasks is None else tasks
    )
    sr = judge.tokenizer.sample_rate
    silence = np.zeros(int(SILENCE_SECONDS * sr), np.float32)
    rows = []
    for task in tasks:
        with (eval_dir / "outputs" / SPEECH_OUTPUTS[task]).open(encoding="utf-8") as f:
            outputs = [json.loads(line) for line in f]
        groups: dict[tuple, list[dict]] = {}
        for o in outputs:
            groups.setdefault((o["src"], o["tgt"], o["subset"]), []).append(o)
        for (src, tgt, subset), items in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
            lang = src if task == "TTS" else tgt
            if lang not in judge.probes:
                continue
            refs = [o["text"] if task == "TTS" else o["ref_text"] for o in items]
            generated = [audio.load(eval_dir / o["audio"], sr)[0] if o["audio"] else silence for o in items]
            reference = [audio.load(eval_dir / o["ref_audio"], sr)[0] for o in items]
            said, heard = judge.transcribe(generated, sr, lang), judge.transcribe(reference, sr, lang)
            # three readings: the generated speech, the reference speech, and another sentence's reference speech
            # (rotated by one: what a judged figure is when the speech says nothing of its sentence); each is
            # transcribed once and scored through the metrics' own judge interface
            for suffix, wavs, texts in (
                ("", generated, said),
                (" (ref audio)", reference, heard),
                (" (another's ref audio)", reference, heard[1:] + heard[:1]),
            ):

                def given(w, rate, lg, t=texts):
                    return t

                j = CallableJudge(given, name=judge.name)
                if task == "TTS":
                    score, hyps = metrics.tts_roundtrip_wer(wavs, sr, refs, lang, j)
                    char = metrics.cer(refs, hyps, lang)
                    char.signature = f"judge:{judge.name}|{char.signature}"
                    rows.append(
                        metrics.summary_row(
                            char, task=task, src=src, tgt=tgt, subset=subset, metric=f"TTS-CER [ctc-probe]{suffix}"
                        )
                    )
                    metric = f"TTS-WER [ctc-probe]{suffix}"
                else:
                    bleu, _ = metrics.asr_bleu(wavs, sr, refs, lang, j)
                    metric = f"ASR-BLEU [ctc-probe]{suffix}"
                rows.append(
                    metrics.summary_row(
                        score if task == "TTS" else bleu, task=task, src=src, tgt=tgt, subset=subset, metric=metric
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--train", required=True, help="token store to train the probe on (`audiopalm tokenize` output)"
    )
    parser.add_argument("--dev", help="token store to score it on (other sentences); not with --judge-eval")
    parser.add_argument("--lang", default="en", help="language of the utterances to use (default: en)")
    parser.add_argument(
        "--codebooks", type=int, nargs="+", default=[1, 2, 4], help="k values to probe (default: 1 2 4)"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps per probe (default: 600)")
    parser.add_argument("--batch", type=int, default=32, help="utterances per step (default: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results here as JSON")
    parser.add_argument(
        "--judge-eval",
        nargs="+",
        metavar="EVAL_DIR",
        help="instead: train a first-codebook probe per --langs on --train and judge the speech of "
        "these `audiopalm eval` folders with it (writes EVAL_DIR/probe_judge.json)",
    )
    parser.add_argument("--tokenizer", help="with --judge-eval: the audio tokenizer that made --train")
    parser.add_argument(
        "--langs", nargs="+", default=["en", "fr"], help="with --judge-eval: languages (default: en fr)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.judge_eval:
        if not args.tokenizer:
            parser.error("--judge-eval needs --tokenizer")
        return _judge_main(args)
    if not args.dev:
        parser.error("--dev is required (or --judge-eval)")
    try:
        train, size = store_pairs(args.train, args.lang)
        dev, _ = store_pairs(args.dev, args.lang)
        results = [
            probe(train, dev, k=k, codebook_size=size, steps=args.steps, batch=args.batch, seed=args.seed)
            for k in args.codebooks
        ]
    except ValueError as exc:
        print(f"probe_tokens: {exc}", file=sys.stderr)
        return 2
    print(f"CTC probe, {args.lang}: {len(train)} train / {len(dev)} dev utterances, {args.steps} steps x {args.batch}")
    print("| codebooks | dev CER | dev WER | train loss | train s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['k']} | {r['cer']:.1f} | {r['wer']:.1f} | {r['train_loss']:.3f} | {r['train_seconds']:.0f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"train": args.train, "dev": args.dev, "lang": args.lang, "results": results}, indent=1),
            encoding="utf-8",
        )
        print(f"wrote {args.out}")
    return 0


def _judge_main(args) -> int:
    from audiopalm.tokenizers.base import load_audio_tokenizer

    try:
        judge = ProbeJudge.train(
            load_audio_tokenizer(args.tokenizer), args.train, args.langs, steps=args.steps, seed=args.seed
        )
        for folder in args.judge_eval:
            rows = judge_outputs(folder, judge)
            (Path(folder) / "probe_judge.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
            print(f"{folder} (CTC-probe judge, {args.steps} steps per language):")
            print("| task | pair | subset | metric | value | n |\n|---|---|---|---|---|---|")
            for r in rows:
                print(
                    f"| {r['task']} | {r['src']}->{r['tgt'] or ''} | {r['subset']} | {r['metric']} | {r['value']:.2f} "
                    f"| {r['n']} |"
                )
    except (ValueError, FileNotFoundError) as exc:
        print(f"probe_tokens: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
