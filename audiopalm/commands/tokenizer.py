"""Fit, inspect and listen to an audio tokenizer.

    audiopalm tokenizer fit --manifest corpus/manifest.jsonl --out runs/tok [--split train]
                            [--num-codebooks 8 --codebook-size 256 --stack 4 --max-hours 2]
    audiopalm tokenizer fit-ctc-units --manifest corpus/train.jsonl --out runs/units [--steps 600 --num-units 512
                            --layer 4 --dedup --seed 0]
    audiopalm tokenizer info runs/tok
    audiopalm tokenizer roundtrip runs/tok --manifest corpus/manifest.jsonl --out runs/tok/roundtrip
                            [--limit 4 --num-codebooks 1 2 8]

``fit`` fits the built-in ``mel_rvq`` codec (log-mel + residual VQ by k-means) and saves it with
``save_pretrained``; ``info`` prints any saved tokenizer's settings, fingerprint and LM cost in tokens
per second of audio; ``roundtrip`` encodes and decodes some utterances and writes the wavs, to listen to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

AUGMENTATIONS = ("speed", "vtlp", "noise", "specaugment")
"""speech_encoder.AUGMENTATIONS, named here so that building the parser imports no torch (a test keeps them equal)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser(
        "fit",
        help="fit the built-in mel_rvq codec on a manifest's audio",
        description="Fit log-mel normalisation and K residual codebooks (k-means) on the audio "
        "(and tgt_audio) of a manifest, then save the tokenizer folder.",
    )
    p.add_argument("--manifest", required=True, help="JSONL manifest whose audio to fit on")
    p.add_argument("--out", required=True, help="folder to write the tokenizer to")
    p.add_argument("--split", default=None, help="use only rows of this split (e.g. train); default: all rows")
    p.add_argument("--num-codebooks", type=int, default=8, help="K residual codebooks (default 8)")
    p.add_argument("--codebook-size", type=int, default=256, help="codes per codebook (default 256)")
    p.add_argument(
        "--stack", type=int, default=4, help="mel frames (10 ms) per code frame: 4 -> 25 Hz (default), 2 -> 50 Hz"
    )
    p.add_argument("--n-mels", type=int, default=80, help="mel bands (default 80)")
    p.add_argument("--max-hours", type=float, default=None, help="read at most this much audio (default: all)")
    p.add_argument(
        "--max-frames",
        type=int,
        default=100_000,
        help="k-means on at most this many code frames, drawn at random (default 100000)",
    )
    p.add_argument("--kmeans-iters", type=int, default=20, help="Lloyd iterations per codebook (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame sample and k-means (default 0)")

    p = sub.add_parser(
        "fit-semantic",
        help="fit k-means units over MFCC (default) or an SSL model's hidden layer",
        description="Fit a semantic-unit tokenizer (K = 1 stream of k-means units, no decoder): over "
        "MFCC features (HuBERT's first iteration) or over hidden layer --layer of a "
        "HuBERT / wav2vec 2.0 / w2v-BERT model given by --ssl-model (hub name or folder).",
    )
    p.add_argument("--manifest", required=True, help="JSONL manifest whose audio to fit on")
    p.add_argument("--out", required=True, help="folder to write the tokenizer to")
    p.add_argument("--split", default=None, help="use only rows of this split (e.g. train); default: all rows")
    p.add_argument("--ssl-model", default=None, help="SSL model (hub name or folder); default: MFCC features")
    p.add_argument("--layer", type=int, default=6, help="hidden layer of the SSL model (default 6)")
    p.add_argument("--num-units", type=int, default=100, help="k-means units (default 100)")
    p.add_argument("--max-frames", type=int, default=200_000, help="k-means on at most this many frames")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame sample and k-means (default 0)")

    p = sub.add_parser(
        "fit-ctc-units",
        help="train a character-CTC speech encoder and fit k-means units on it",
        description="Train the small speech encoder of audiopalm.tokenizers.speech_encoder with a "
        "character CTC loss on the transcripts of a manifest (audio+text and "
        "tgt_audio+tgt_text, every language), with speed / VTLP / noise / SpecAugment "
        "augmentation; then fit --num-units k-means units on layer --layer of its states "
        "(the ctc_units tokenizer, 25 Hz / --stride, no decoder). Prints the encoder's dev CER.",
    )
    p.add_argument("--manifest", required=True, help="JSONL manifest to train on")
    p.add_argument("--out", required=True, help="folder to write the tokenizer to (the encoder alone in OUT/encoder)")
    p.add_argument("--split", default="train", help="rows to train on (default: train; 'all': every row)")
    p.add_argument("--dev-split", default="dev", help="rows to score the encoder's CER on (default: dev)")
    p.add_argument(
        "--dev-manifest",
        default=None,
        help="manifest holding the --dev-split rows (default: --manifest), e.g. corpus/dev.jsonl",
    )
    p.add_argument("--steps", type=int, default=None, help="encoder training steps (default: EncoderTrainConfig's)")
    p.add_argument("--batch-size", type=int, default=None, help="utterances per step (default: EncoderTrainConfig's)")
    p.add_argument("--layer", type=int, default=None, help="layer whose states are clustered (default: the last)")
    p.add_argument("--num-units", type=int, default=None, help="k-means units (default: CTCUnitsConfig's)")
    p.add_argument("--hidden-size", type=int, default=None, help="encoder width (default: SpeechEncoderConfig's)")
    p.add_argument("--num-layers", type=int, default=None, help="transformer layers (default: SpeechEncoderConfig's)")
    p.add_argument(
        "--conv-kernel",
        type=int,
        default=None,
        help="depthwise convolution width of the module after each layer, odd; 0: none (default: SpeechEncoderConfig's)",
    )
    p.add_argument(
        "--bucket",
        type=int,
        default=None,
        help="batches drawn together and cut by length, so that a step pads little (1: plain random batches; "
        "default: EncoderTrainConfig's, 16)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="train the encoder's forward pass in bfloat16 autocast (1.24x faster a step on a CPU with AVX512-BF16)",
    )
    p.add_argument("--dedup", action="store_true", help="collapse repeated units when encoding (SpeechGPT-style)")
    p.add_argument(
        "--stride",
        type=int,
        default=1,
        help="encoder frames averaged into one unit (default 1: 25 Hz units; 2: 12.5 Hz, half the LM's tokens)",
    )
    p.add_argument(
        "--augment",
        nargs="*",
        choices=AUGMENTATIONS,
        metavar="KIND",
        default=None,
        help="augment the encoder's training audio: alone, all four kinds (speed vtlp noise specaugment); with KINDs, "
        "those (--augment speed vtlp: the warps of the voice alone, the default demo's units). Default: off",
    )
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False, help="no augmentation")
    p.add_argument(
        "--exclude-voices",
        nargs="*",
        default=[],
        help="wav-name voice suffixes to leave out of training (e.g. v00 v01)",
    )
    p.add_argument("--eval-every", type=int, default=0, help="print the dev CER every this many steps (0: at the end)")
    p.add_argument("--max-frames", type=int, default=200_000, help="k-means on at most this many frames")
    p.add_argument("--kmeans-iters", type=int, default=50, help="Lloyd iterations at most (default 50)")
    p.add_argument(
        "--encoder",
        default=None,
        help="a trained encoder folder (e.g. another tokenizer's OUT/encoder): fit only the k-means units",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the encoder, batches, augmentation and k-means")

    p = sub.add_parser("info", help="print a saved tokenizer's settings, fingerprint and tokens per second")
    p.add_argument("path", help="tokenizer folder (holding audio_tokenizer.json)")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser(
        "roundtrip",
        help="encode + decode some utterances and write the wavs",
        description="Encode utterances with the tokenizer, decode them with the first k codebooks "
        "for each k asked, and write ORIGINAL_ID.kK.wav files (plus the original, "
        "resampled) into --out.",
    )
    p.add_argument("path", help="tokenizer folder")
    p.add_argument("--manifest", required=True, help="JSONL manifest to take utterances from")
    p.add_argument("--out", required=True, help="folder for the wavs")
    p.add_argument("--split", default=None, help="only rows of this split")
    p.add_argument("--limit", type=int, default=4, help="utterances to write (default 4)")
    p.add_argument(
        "--num-codebooks",
        type=int,
        nargs="+",
        default=None,
        help="decode with these numbers of codebooks (default: all K)",
    )


def run(args) -> int:
    return {
        "fit": _fit,
        "fit-semantic": _fit_semantic,
        "fit-ctc-units": _fit_ctc_units,
        "info": _info,
        "roundtrip": _roundtrip,
    }[args.action](args)


def _fit(args) -> int:
    from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer, manifest_waves

    tok_kwargs = dict(stack=args.stack, n_mels=args.n_mels)
    sample_rate = MelRVQTokenizer(**tok_kwargs).sample_rate
    waves = manifest_waves(args.manifest, sample_rate, split=args.split, seed=args.seed)
    tok = MelRVQTokenizer.fit(
        waves,
        num_codebooks=args.num_codebooks,
        codebook_size=args.codebook_size,
        max_frames=args.max_frames,
        max_seconds=None if args.max_hours is None else args.max_hours * 3600,
        seed=args.seed,
        kmeans_iters=args.kmeans_iters,
        progress=True,
        **tok_kwargs,
    )
    out = tok.save_pretrained(args.out)
    info = tok.fit_info
    assert info is not None, "fit() records fit_info"
    (Path(out) / "fit_info.json").write_text(
        json.dumps({"manifest": str(args.manifest), "split": args.split, **info}, indent=2) + "\n"
    )
    print(
        f"fitted mel_rvq on {info['seconds'] / 3600:.3f} h ({info['frames_used']} of "
        f"{info['frames_available']} frames); saved to {out} (fingerprint {tok.fingerprint})"
    )
    return 0


def _fit_semantic(args) -> int:
    from audiopalm.tokenizers.semantic import SemanticTokenizer

    kwargs = {"features": "ssl", "ssl_model": args.ssl_model, "layer": args.layer} if args.ssl_model else {}
    tok = SemanticTokenizer(num_units=args.num_units, **kwargs).fit(
        args.manifest, split=args.split, max_frames=args.max_frames, seed=args.seed
    )
    tok.save_pretrained(args.out)
    print(
        f"fitted {args.num_units} semantic units over {f'layer {args.layer} of {args.ssl_model}' if args.ssl_model else 'MFCC'}; "
        f"saved to {args.out} (fingerprint {tok.fingerprint})"
    )
    return 0


def _augment_fields(augment: list[str] | bool | None) -> dict:
    """``--augment`` as EncoderTrainConfig fields: None (not given): its defaults; False (``--no-augment``): off;
    [] (``--augment`` alone): all kinds; [KIND, ...]: those."""
    if augment is None:
        return {}
    if isinstance(augment, bool):
        return {"augment": augment}
    return {"augment": True, **({"augmentations": tuple(dict.fromkeys(augment))} if augment else {})}


def _fit_ctc_units(args) -> int:
    import dataclasses

    from audiopalm.tokenizers.ctc_units import CTCUnitsConfig, CTCUnitsTokenizer
    from audiopalm.tokenizers.speech_encoder import EncoderTrainConfig, SpeechEncoderConfig

    train_defaults, units_defaults = EncoderTrainConfig(), CTCUnitsConfig()
    train = dataclasses.replace(
        train_defaults,
        seed=args.seed,
        eval_every=args.eval_every,
        bf16=args.bf16,
        **{
            k: v
            for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("bucket", args.bucket))
            if v is not None
        },
        **_augment_fields(args.augment),
    )
    encoder = {
        k: v
        for k, v in (
            ("hidden_size", args.hidden_size),
            ("num_layers", args.num_layers),
            ("conv_kernel", args.conv_kernel),
        )
        if v is not None
    }
    if "hidden_size" in encoder:  # keep the usual ratios: 64-wide heads, a 4x feed-forward
        encoder.update(num_heads=max(encoder["hidden_size"] // 64, 1), ffn_size=4 * encoder["hidden_size"])
    SpeechEncoderConfig(**encoder)  # a bad size fails here, before any audio is read
    tok = CTCUnitsTokenizer.fit(
        args.manifest,
        split=None if args.split == "all" else args.split,
        dev_split=args.dev_split or None,
        train=train,
        encoder=encoder,
        num_units=args.num_units or units_defaults.num_units,
        layer=args.layer,
        dedup=args.dedup,
        stride=args.stride,
        exclude_voices=tuple(args.exclude_voices),
        pretrained=args.encoder,
        max_frames=args.max_frames,
        kmeans_iters=args.kmeans_iters,
        dev_manifest=args.dev_manifest,
    )
    out = tok.save_pretrained(args.out)
    info = tok.fit_info
    cer = info["encoder_dev_cer"]
    print(
        f"fitted ctc_units ({tok.codebook_size} units, layer {tok.config.layer}, {tok.frame_rate:g} Hz) in "
        f"{info['seconds']['total']:.0f} s; encoder dev CER {'n/a' if cer is None else f'{cer:.1f}'}; "
        f"saved to {out} (fingerprint {tok.fingerprint})"
    )
    return 0


def describe(tok) -> dict:
    """Settings, fingerprint and costs of any audio tokenizer, as a JSON-able dict."""
    return {
        "type": tok.type_name,
        "fingerprint": tok.fingerprint,
        "sample_rate": tok.sample_rate,
        "frame_rate": tok.frame_rate,
        "num_codebooks": tok.num_codebooks,
        "codebook_size": tok.codebook_size,
        "tokens_per_second": {k: tok.tokens_per_second(k) for k in range(1, tok.num_codebooks + 1)},
        "can_decode": tok.can_decode,
        "config": tok.get_config(),
    }


def _info(args) -> int:
    from audiopalm.errors import UserError
    from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer

    if not (Path(args.path) / CONFIG_NAME).is_file():
        raise UserError(f"{args.path}: no {CONFIG_NAME} here; not a saved audiopalm tokenizer")
    d = describe(load_audio_tokenizer(args.path))
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['type']} tokenizer at {args.path}  fingerprint {d['fingerprint']}")
    print(
        f"  {d['sample_rate']} Hz audio, {d['frame_rate']:g} frames/s, K={d['num_codebooks']} codebooks "
        f"x {d['codebook_size']} codes"
    )
    print(
        "  LM tokens per second of audio, first k codebooks: "
        + ", ".join(f"k={k}: {v:g}" for k, v in d["tokens_per_second"].items())
    )
    print("  config: " + ", ".join(f"{k}={v}" for k, v in d["config"].items()))
    return 0


def _roundtrip(args) -> int:
    import numpy as np
    import torch

    from audiopalm.audio import io as audio
    from audiopalm.data.manifest import read_manifest
    from audiopalm.errors import UserError, inside
    from audiopalm.tokenizers.base import load_audio_tokenizer

    tok = load_audio_tokenizer(args.path)
    if not tok.can_decode:
        raise UserError(f"{args.path}: a {tok.type_name} tokenizer cannot decode; roundtrip needs a codec")
    ks = args.num_codebooks or [tok.num_codebooks]
    bad = [k for k in ks if not 1 <= k <= tok.num_codebooks]
    if bad:
        raise UserError(f"--num-codebooks {bad}: must be in 1..{tok.num_codebooks}")
    records = [
        r for r in read_manifest(args.manifest) if r.audio is not None and (args.split is None or r.split == args.split)
    ]  # (text-only rows: no audio)
    # one per audio file: a parallel manifest repeats a source audio in a row per translation pair
    records = list({r.audio: r for r in reversed(records)}.values())[::-1][: args.limit]
    out = Path(args.out)
    for rec in records:  # ids are file names here: every path checked before anything is written
        inside(out / f"{rec.id}.orig.wav", out, what=f"the roundtrip of id {rec.id!r}")
    for rec in records:
        wav, sr = audio.load(str(rec.audio), tok.sample_rate)  # (rows without audio were left out above)
        audio.save(out / f"{rec.id}.orig.wav", wav, sr)
        with torch.no_grad():
            codes, n = tok.encode(torch.from_numpy(wav)[None])  # [1, K, F]
            for k in ks:
                rec_wav = tok.decode(codes[:, :k])[0].cpu().numpy()  # [T']
                audio.save(out / f"{rec.id}.k{k}.wav", rec_wav[: len(wav)].astype(np.float32), sr)
    print(f"wrote {len(records) * (len(ks) + 1)} wavs to {out}")
    return 0
