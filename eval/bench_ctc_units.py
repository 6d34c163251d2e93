"""How much do ``ctc_units`` carry, next to the mel-RVQ first codebook? And how good are the encoders as ASR?

For each trained speech encoder (``--encoders``, folders of ``SpeechEncoder.save_pretrained``): its greedy
CER / WER per language on the dev split (seen voices) and on the test split's seen voices and held-out
voice. Then, on the first encoder, k-means units (``--units`` K values, layer ``--layer``) fitted on its
states of the training audio, and the CTC probe of ``eval/probe_tokens.py`` (a small BiGRU, tokens ->
characters) trained on ``--lang`` training utterances as units, scored on dev / test-seen / test-held-out;
the same probe on the first codebook of a fitted mel-RVQ tokenizer (``--melrvq``) as the baseline.

  python eval/bench_ctc_units.py --corpus runs/corpus --encoders runs/enc_a runs/enc_judge \\
      --melrvq runs/melrvq --units 256 512 1024 --out eval/results/ctc_units.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_tokens import train_probe, transcribe  # noqa: E402

from audiopalm.tokenizers.kmeans import kmeans, nearest  # noqa: E402
from audiopalm.tokenizers.speech_encoder import (
    SpeechEncoder,
    _pad,
    evaluate_feats,
    load_feats,  # noqa: E402
    manifest_utterances,
    normalize_feats,
    normalize_text,
)

SUBSETS = ("dev", "test_seen", "test_heldout")


def corpus_sets(corpus: Path) -> dict[str, list]:
    """(wav, text, lang, voice) lists: train, dev (seen voices), test_seen, test_heldout (the voices that
    ``corpus.json`` lists as held out: they speak test sentences only)."""
    held = json.loads((corpus / "corpus.json").read_text())["held_out_voices"]
    return {
        "train": manifest_utterances(corpus / "train.jsonl"),
        "dev": manifest_utterances(corpus / "dev.jsonl"),
        "test_seen": manifest_utterances(corpus / "test.jsonl", exclude_speakers=held),
        "test_heldout": manifest_utterances(corpus / "test.jsonl", speakers=held),
    }


def encoder_scores(model: SpeechEncoder, sets: dict, feats: dict) -> dict:
    """CER / WER per subset and language (and all languages together)."""
    out = {}
    for name in SUBSETS:
        utts, f = sets[name], feats[name]
        row = {"all": {k: v for k, v in evaluate_feats(model, f, [u[1] for u in utts]).items() if k != "examples"}}
        for lang in sorted({u[2] for u in utts}):
            idx = [i for i, u in enumerate(utts) if u[2] == lang]
            r = evaluate_feats(model, [f[i] for i in idx], [utts[i][1] for i in idx])
            row[lang] = {k: v for k, v in r.items() if k != "examples"}
        out[name] = row
    return out


@torch.no_grad()
def layer_states(model: SpeechEncoder, feats: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
    """States [F', D] of ``layer`` for each raw log-mel [F, M]."""
    out = []
    for i in range(0, len(feats), 64):
        x, n = _pad(feats[i : i + 64])
        states, frames = model.forward_feats(normalize_feats(x, n), n, upto=layer)
        out += [states[layer][b, :f] for b, f in enumerate(frames.tolist())]
    return out


def probe_scores(train: list, evals: dict, codebook_size: int, steps: int, seed: int) -> dict:
    """Train the CTC probe on ``train`` (codes [1, F], text) and score it on each of ``evals``."""
    model, chars, loss, seconds = train_probe(
        train, k=1, codebook_size=codebook_size, steps=steps, seed=seed, progress=False
    )
    out: dict[str, Any] = {"train_loss": round(loss, 4), "train_seconds": round(seconds, 1)}
    for name, pairs in evals.items():
        hyps = transcribe(model, chars, [c for c, _ in pairs])
        refs = [t for _, t in pairs]
        out[name] = {
            "cer": round(100 * jiwer.cer(refs, hyps), 2),
            "wer": round(100 * jiwer.wer(refs, hyps), 2),
            "utts": len(refs),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", required=True, help="folder with train/dev/test.jsonl (audiopalm synth)")
    parser.add_argument("--encoders", nargs="*", default=[], help="saved speech-encoder folders; units from the first")
    parser.add_argument("--melrvq", help="fitted mel_rvq tokenizer folder (the baseline's first codebook)")
    parser.add_argument("--units", type=int, nargs="*", default=[256, 512, 1024], help="K values to probe")
    parser.add_argument("--layer", type=int, default=None, help="encoder layer clustered (default: the last)")
    parser.add_argument("--no-scores", action="store_true", help="skip the encoders' own CER (units probe only)")
    parser.add_argument("--lang", default="en", help="language of the probe's utterances (default en)")
    parser.add_argument("--probe-steps", type=int, default=400, help="CTC probe training steps (default 400)")
    parser.add_argument("--max-frames", type=int, default=100_000, help="k-means on at most this many frames")
    parser.add_argument("--kmeans-iters", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="write the results here as JSON")
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    sets = corpus_sets(corpus)
    if args.units and not args.encoders:
        parser.error("--units needs --encoders (the units are k-means of the first encoder's states)")
    result: dict = {
        "corpus": str(corpus),
        "utterances": {k: len(v) for k, v in sets.items()},
        "encoders": {},
        "probe": {"lang": args.lang, "steps": args.probe_steps, "units": {}},
    }
    if args.encoders:
        first = SpeechEncoder.from_pretrained(args.encoders[0])
        feats = {name: load_feats([u[0] for u in utts], first.frontend, desc=name) for name, utts in sets.items()}
    for path in [] if args.no_scores else args.encoders:
        model = SpeechEncoder.from_pretrained(path)
        t0 = time.perf_counter()
        result["encoders"][path] = {
            "config": {k: v for k, v in vars(model.config).items() if k != "chars"},
            "record": model.record,
            "scores": encoder_scores(model, sets, feats),
            "eval_seconds": round(time.perf_counter() - t0, 1),
        }
        print(path, json.dumps({k: v["all"] for k, v in result["encoders"][path]["scores"].items()}), flush=True)

    lang_idx = {name: [i for i, u in enumerate(utts) if u[2] == args.lang] for name, utts in sets.items()}
    texts = {name: [normalize_text(sets[name][i][1]) for i in idx] for name, idx in lang_idx.items()}
    if args.units:
        layer = first.config.num_layers if args.layer is None else args.layer
        states = {name: layer_states(first, [feats[name][i] for i in idx], layer) for name, idx in lang_idx.items()}
        # k-means on every language's training frames (the tokenizer's fit), a seeded sample
        x = torch.cat(layer_states(first, feats["train"], layer))
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.max_frames]]
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
        result["probe"].update(layer=layer, encoder=args.encoders[0])
    for k in args.units:
        t0 = time.perf_counter()
        km = kmeans((x - mean) / std, k, iters=args.kmeans_iters, seed=args.seed)
        fit_s = time.perf_counter() - t0
        pairs = {
            name: [
                (nearest((s - mean) / std, km.centroids)[0].numpy()[None], t)
                for s, t in zip(states[name], texts[name], strict=True)
            ]
            for name in states
        }
        runs = [1 + int((np.diff(c[0]) != 0).sum()) for c, _ in pairs["train"]]  # deduplicated length
        frames = sum(c.shape[1] for c, _ in pairs["train"])
        row = probe_scores(pairs["train"], {n: pairs[n] for n in SUBSETS}, k, args.probe_steps, args.seed)
        row.update(
            kmeans_seconds=round(fit_s, 1),
            inertia=round(km.inertia, 4),
            units_used=int((torch.bincount(km.assignments, minlength=k) > 0).sum()),
            dedup_ratio=round(sum(runs) / frames, 3),
        )
        result["probe"]["units"][str(k)] = row
        print(f"units K={k}", json.dumps(row), flush=True)
    if args.melrvq:
        from audiopalm.audio import io as audio_io
        from audiopalm.tokenizers.base import load_audio_tokenizer

        tok = load_audio_tokenizer(args.melrvq)
        pairs = {}
        for name, idx in lang_idx.items():
            pairs[name] = []
            for i, t in zip(idx, texts[name], strict=True):
                wav, _ = audio_io.load(sets[name][i][0], tok.sample_rate)
                codes, n = tok.encode(torch.from_numpy(wav)[None])
                pairs[name].append((codes[0, :1, : int(n[0])].numpy(), t))
        row = probe_scores(
            pairs["train"], {n: pairs[n] for n in SUBSETS}, tok.codebook_size, args.probe_steps, args.seed
        )
        result["probe"]["mel_rvq_first_codebook"] = row
        print("mel-RVQ k=1", json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(args.out) + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
