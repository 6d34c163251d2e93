"""Benchmark the built-in ``mel_rvq`` audio tokenizer: speed, and what each number of codebooks keeps.

    python eval/bench_tokenizers.py --quick --out runs/bench/tokenizers.json
    python eval/bench_tokenizers.py --manifest data/synth/test.jsonl --out runs/bench/tokenizers.json \
        [--tokenizer runs/tok]    # measure a fitted tokenizer instead of fitting one on data/synth/train.jsonl

Measures, on the corpus' English test audio:

- ``mel_rvq_realtime_factor_per_core``: seconds of audio encoded per second of wall time with one
  thread (``torch.set_num_threads(1)``); the same for ``decode`` (Griffin-Lim);
- ``reconstruction``: for K = 1, 2, 4, 8 codebooks, the log-mel L1 of the quantised features against
  the original ones (``mel_l1``, natural-log units, mean over valid frames and mel bands), the same
  after decoding to audio and re-analysing it (``mel_l1_decoded``, adds Griffin-Lim's phase error),
  and the WER of PocketSphinx (offline, English) on the decoded audio (``pocketsphinx_wer``) next to
  its WER on the original audio (``reference_wer``): the gap is what the codec costs a listener;
- tokens per second of audio that the LM pays for each K.

Writes ``--out`` (JSON), a markdown table beside it (same name, ``.md``) and, in an ``examples``
folder beside it, two test utterances decoded with all K codebooks and their originals (wav).

The corpus: ``--manifest`` (its test split is measured; the tokenizer is fitted on ``--fit-manifest``,
else on ``train.jsonl`` beside it, else on its train split), or with ``--quick`` and no manifest a
small one spoken here with espeak-ng: ``data_prep.synth_corpus`` if the tree has it, else sentences
from ``data_prep.grammar`` (4 languages for fitting, English for testing). ``--quick`` also
fits on fewer frames with fewer k-means iterations, to finish in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiopalm.audio import io as audio
from audiopalm.data.manifest import Record, read_manifest, write_manifest
from audiopalm.tokenizers.base import load_audio_tokenizer
from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

KS = (1, 2, 4, 8)
# espeak-ng voice variants used for the fallback corpus: several "speakers" per language
VOICES = ("", "+m3", "+f2", "+f4", "+m7")


def make_espeak_corpus(out_dir: Path, *, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Speak ``n_train`` sentences (random language of en/fr/es/de, random voice) and ``n_test``
    English ones with espeak-ng; return the manifest (splits ``train`` / ``test``)."""
    from data_prep.grammar import generate_sentences

    rng = random.Random(seed)
    records = []
    for split, sentences in (
        ("train", generate_sentences(n_train, seed)),
        ("test", generate_sentences(n_test, seed, start=n_train)),
    ):
        for s in sentences:
            lang = "en" if split == "test" else rng.choice(("en", "fr", "es", "de"))
            voice = lang + rng.choice(VOICES)
            path = out_dir / "wav" / f"{split}-{s.id}-{lang}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(rng.randint(140, 180)), "-w", str(path), s.texts[lang]],
                check=True,
                capture_output=True,
            )
            records.append(
                Record(
                    id=f"{split}-{s.id}-{lang}",
                    lang=lang,
                    text=s.texts[lang],
                    audio=str(path),
                    speaker=voice,
                    split=split,
                )
            )
    return write_manifest(out_dir / "manifest.jsonl", records)


def make_corpus(out_dir: Path, *, train_sentences: int, test_sentences: int, seed: int) -> tuple[Path, Path, str]:
    """A small corpus -> (fit manifest, test manifest, description): the project's synthesiser
    (``data_prep.synth_corpus``: each sentence in en/fr/es/de) if present, else :func:`make_espeak_corpus`
    (as many utterances, each sentence in one language)."""
    try:
        from data_prep.synth_corpus import synthesize
    except ImportError:
        manifest = make_espeak_corpus(out_dir, n_train=4 * train_sentences, n_test=test_sentences, seed=seed)
        return manifest, manifest, "espeak-ng sentences spoken by this bench"
    synthesize(out_dir, train=train_sentences, dev=1, test=test_sentences, seed=seed, progress=False)
    return out_dir / "train.jsonl", out_dir / "test.jsonl", "data_prep.synth_corpus"


def resolve_corpus(args, work: Path) -> tuple[list[Record], list[Record], str]:
    """(rows to fit on, English test rows, description) from --manifest / --fit-manifest or a quick corpus.

    Test rows: the rows of split ``test`` in --manifest (all its rows if none is marked test),
    English only (PocketSphinx is an English recogniser), one per audio file. Fit rows: --fit-manifest,
    else ``train.jsonl`` beside --manifest (the synth corpus layout), else --manifest's ``train`` rows.
    """
    if args.manifest:
        manifest = Path(args.manifest)
        fit_manifest = (
            Path(args.fit_manifest)
            if args.fit_manifest
            else (manifest.parent / "train.jsonl" if (manifest.parent / "train.jsonl").is_file() else manifest)
        )
        source = f"manifest {manifest}"
    else:
        fit_manifest, manifest, source = make_corpus(
            work, train_sentences=args.train_sentences, test_sentences=args.test_sentences, seed=args.seed
        )
    rows = read_manifest(manifest)
    test = [r for r in rows if r.split == "test"] or rows
    test = list({r.audio: r for r in test if r.lang == "en" and r.audio is not None}.values())[: args.max_test_utts]
    fit_rows = (
        [r for r in read_manifest(fit_manifest) if r.split in ("train", None)]
        if fit_manifest != manifest
        else [r for r in rows if r.split == "train"]
    )
    return fit_rows, test, source


def pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of [T_i] -> (zero-padded batch [B, T], lengths [B])."""
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths


def realtime_factor(fn, seconds_of_audio: float, min_wall: float) -> float:
    """Seconds of audio per wall second of ``fn()`` (repeated until ``min_wall`` seconds have passed)."""
    fn()  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        wall = time.perf_counter() - start
        if wall >= min_wall:
            return seconds_of_audio * runs / wall


def masked_l1(a: torch.Tensor, b: torch.Tensor, mel_lengths: torch.Tensor) -> float:
    """Mean |a - b| over the valid frames of log-mels [B, M, n_mels]."""
    m = min(a.shape[1], b.shape[1])
    valid = torch.arange(m)[None, :] < mel_lengths[:, None]  # [B, M]
    return float((a[:, :m] - b[:, :m]).abs()[valid].mean())


def bench(args, work: Path) -> dict:
    from audiopalm.evaluation.judges import PocketSphinxJudge
    from audiopalm.evaluation.metrics import wer

    t0 = time.perf_counter()
    train, test, source = resolve_corpus(args, work)
    if not test:
        raise SystemExit(f"{source}: no English test rows (split 'test', lang 'en') to measure on")
    corpus_seconds = time.perf_counter() - t0

    # ---- the tokenizer: given, or fitted on the train split
    t0 = time.perf_counter()
    if args.tokenizer:
        tok = load_audio_tokenizer(args.tokenizer)
        if not isinstance(tok, MelRVQTokenizer):
            raise SystemExit(f"{args.tokenizer}: a {tok.type_name} tokenizer; this bench measures mel_rvq")
        fit: dict[str, Any] = {"tokenizer": str(args.tokenizer)}
    else:
        if not train:
            raise SystemExit(f"{source}: no train rows to fit the tokenizer on (or pass --tokenizer)")
        fit_manifest = write_manifest(work / "fit.jsonl", train)
        tok = MelRVQTokenizer.fit(
            fit_manifest,
            num_codebooks=max(KS),
            codebook_size=args.codebook_size,
            max_frames=args.max_frames,
            kmeans_iters=args.kmeans_iters,
            seed=args.seed,
            stack=args.stack,
            progress=not args.quiet,
        )
        fit = {"train_manifest_rows": len(train), **(tok.fit_info or {}), "wall_seconds": time.perf_counter() - t0}
    ks = [k for k in KS if k <= tok.num_codebooks]

    waves = [audio.load(str(r.audio), tok.sample_rate)[0] for r in test]
    texts = [r.text for r in test]
    test_seconds = sum(len(w) for w in waves) / tok.sample_rate
    batch, lengths = pad(waves)

    # ---- speed, one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_rtf = realtime_factor(lambda: tok.encode(batch, lengths), test_seconds, args.min_wall)
        codes, frame_lengths = tok.encode(batch, lengths)  # [B, K, F]
        decode_rtf = realtime_factor(lambda: tok.decode(codes[:1]), codes.shape[2] / tok.frame_rate, args.min_wall)
    finally:
        torch.set_num_threads(threads)

    # ---- reconstruction per K
    speed_seconds = time.perf_counter() - t0 - fit.get("wall_seconds", 0.0)
    t0 = time.perf_counter()
    judge = PocketSphinxJudge()
    reference_hyps = judge.transcribe(waves, tok.sample_rate, "en")
    reference = wer(texts, reference_hyps, "en")
    x, _ = tok.features(batch, lengths)  # [B, F, D]
    original_logmel, mel_lengths = tok.log_mel(batch, lengths)  # [B, M, n_mels]
    examples = Path(args.out).parent / "examples"
    rows = []
    for k in ks:
        quantised = tok.features_to_log_mel(tok.dequantize(codes[:, :k]))  # [B, F * stack, n_mels]
        decoded = tok.decode(codes[:, :k], frame_lengths)  # [B, T']
        decoded_waves = [decoded[i, : len(w)].numpy() for i, w in enumerate(waves)]
        redone, _ = tok.log_mel(*pad(decoded_waves))
        hyps = judge.transcribe(decoded_waves, tok.sample_rate, "en")
        rows.append(
            {
                "num_codebooks": k,
                "tokens_per_second": tok.tokens_per_second(k),
                "bits_per_second": tok.frame_rate * k * float(np.log2(tok.codebook_size)),
                "mel_l1": masked_l1(quantised, original_logmel, mel_lengths),
                "mel_l1_decoded": masked_l1(redone, original_logmel, mel_lengths),
                "pocketsphinx_wer": wer(texts, hyps, "en").value,
                "reference_wer": reference.value,
                "example_hypothesis": hyps[0],
            }
        )
        if k == ks[-1]:
            for i in range(min(2, len(waves))):
                name = Path(str(test[i].audio)).stem  # the audio file's name: one test row per audio file
                audio.save(examples / f"{name}.orig.wav", waves[i], tok.sample_rate)
                audio.save(examples / f"{name}.k{k}.wav", decoded_waves[i], tok.sample_rate)
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "corpus": {
            "source": source,
            "test_utterances": len(test),
            "test_seconds": test_seconds,
            "seconds_to_make": corpus_seconds,
        },
        "fit": fit,
        "tokenizer": {
            "type": tok.type_name,
            "fingerprint": tok.fingerprint,
            "frame_rate": tok.frame_rate,
            "num_codebooks": tok.num_codebooks,
            "codebook_size": tok.codebook_size,
            "config": tok.get_config(),
        },
        "tokens_per_second": {str(k): tok.tokens_per_second(k) for k in ks},
        "mel_rvq_realtime_factor_per_core": encode_rtf,
        "mel_rvq_decode_realtime_factor_per_core": decode_rtf,
        "reference_example": {"text": texts[0], "pocketsphinx": reference_hyps[0]},
        "timings": {
            "corpus": corpus_seconds,
            "fit": fit.get("wall_seconds", 0.0),
            "speed": speed_seconds,
            "reconstruction_and_asr": time.perf_counter() - t0,
        },
        # the speed figures are only comparable between runs on an equally loaded machine
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "reconstruction": rows,
        "examples": sorted(str(p) for p in examples.glob("*.wav")),
    }


def to_markdown(result: dict) -> str:
    """The measured table, ready to paste."""
    c, t = result["corpus"], result["tokenizer"]
    lines = [
        f"`{result['command']}`",
        "",
        f"mel_rvq {t['frame_rate']:g} frames/s, K={t['num_codebooks']} x {t['codebook_size']} codes; "
        f"{c['test_utterances']} English test utterances ({c['test_seconds']:.1f} s) from {c['source']}.",
        f"Encode: {result['mel_rvq_realtime_factor_per_core']:.0f}x real time per core; "
        f"decode (Griffin-Lim): {result['mel_rvq_decode_realtime_factor_per_core']:.0f}x.",
        "",
        "| codebooks | tokens/s | bits/s | mel L1 (quantised) | mel L1 (decoded) | PocketSphinx WER | WER on original |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["reconstruction"]:
        lines.append(
            f"| {r['num_codebooks']} | {r['tokens_per_second']:g} | {r['bits_per_second']:g} | "
            f"{r['mel_l1']:.3f} | {r['mel_l1_decoded']:.3f} | {r['pocketsphinx_wer']:.1f} | "
            f"{r['reference_wer']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write (a .md table and examples/ go beside it)")
    p.add_argument("--manifest", help="corpus manifest: train split to fit on, English test split to measure")
    p.add_argument(
        "--fit-manifest",
        help="manifest to fit on (default: train.jsonl beside --manifest, else --manifest's train rows)",
    )
    p.add_argument("--tokenizer", help="a fitted mel_rvq folder to measure (default: fit one on the train split)")
    p.add_argument("--quick", action="store_true", help="small corpus and fit, under a minute on 2 CPU cores")
    p.add_argument("--stack", type=int, default=4, help="mel frames per code frame when fitting (4: 25 Hz)")
    p.add_argument("--codebook-size", type=int, default=256, help="codes per codebook when fitting")
    p.add_argument(
        "--train-sentences",
        type=int,
        default=None,
        help="without --manifest: sentences to synthesise for fitting (default 40; 4 languages each)",
    )
    p.add_argument(
        "--test-sentences",
        type=int,
        default=None,
        help="without --manifest: English test sentences to synthesise (default 4)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.quick and not args.manifest and args.train_sentences is None:
        p.error("give --manifest (the full benchmark), --quick, or --train-sentences/--test-sentences")
    # sizes: --quick keeps the whole run under a minute; the full run uses the whole test split
    # the corpus made without --manifest: 40 sentences x 4 languages (~0.1 h) to fit on, 4 English to test on
    args.train_sentences = args.train_sentences or 40
    args.test_sentences = args.test_sentences or 4
    args.max_test_utts = 4 if args.quick else 10**9
    args.max_frames = 5000 if args.quick else 100_000
    args.kmeans_iters = 6 if args.quick else 20
    args.min_wall = 1.0 if args.quick else 5.0

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_tokenizers_") as work:
        result = bench(args, Path(work))
    result["wall_seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time()  # this process's CPU time, all threads: the run's cost unloaded
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(
        f"wrote {out}, {out.with_suffix('.md')} and {len(result['examples'])} example wavs "
        f"({result['wall_seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s CPU, "
        f"load average {result['load_average_1min']:.1f} on {result['cpu_count']} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
