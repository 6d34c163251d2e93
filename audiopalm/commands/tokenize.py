"""Turn a manifest's audio into codes: manifest + audio tokenizer -> token store.

    audiopalm tokenize --manifest data/train.jsonl --tokenizer runs/tok --out runs/store/train
    audiopalm tokenize --manifest M.jsonl --tokenizer facebook/encodec_24khz --bandwidth 6 --out STORE
    audiopalm tokenize --check STORE
    audiopalm tokenize --manifest M.jsonl --tokenizer runs/demo/units --words --out STORE   # + word starts

The tokenizer is a folder saved by audiopalm (mel_rvq, hf_codec, semantic) or a transformers codec
(EnCodec / Mimi / DAC) by hub name or local folder. Files are sorted by duration, batched up to
--batch-seconds of padded audio, encoded on --num-proc threads, and written in shards: an interrupted
run picks up where it stopped when run again with the same arguments.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--manifest", help="the JSONL manifest to tokenize")
    parser.add_argument("--tokenizer", help="saved audio tokenizer folder, or a codec hub name / HF folder")
    parser.add_argument("--out", help="output store folder (created; resumed if it holds an unfinished build)")
    parser.add_argument("--check", metavar="STORE", help="instead: check an existing store and print its summary")
    parser.add_argument(
        "--num-proc", type=int, default=None, help="CPU threads for encoding and reading (default: all)"
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=60.0,
        help="padded seconds of audio per encoder call (default 60; lower it if memory runs out)",
    )
    parser.add_argument("--shard-size", type=int, default=256, help="audio files per resumable shard (default 256)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out rows with unreadable audio (counted, listed in the store) instead of failing",
    )
    parser.add_argument("--keep-shards", action="store_true", help="keep the shards/ folder after finishing")
    parser.add_argument(
        "--words",
        action="store_true",
        help="also store where each word of the transcripts starts in the codes (ctc_units tokenizers: their CTC "
        "head aligns the text): what a model that writes its speech word by word (model.output_words) trains on",
    )
    parser.add_argument(
        "--revision",
        default=None,
        help="hub codec only: the tag or commit to fetch (the commit loaded is recorded in the store)",
    )
    parser.add_argument("--bandwidth", type=float, default=None, help="EnCodec: kbps (e.g. 1.5, 3, 6, 12, 24)")
    parser.add_argument("--num-codebooks", type=int, default=None, help="Mimi / DAC: codebooks to keep")
    parser.add_argument("--device", default=None, help="torch device for the tokenizer (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from audiopalm.data.token_store import build_token_store, check_token_store
    from audiopalm.errors import UserError

    if args.check:
        summary = check_token_store(args.check, progress=not args.no_progress)  # a bad store: one line, exit 2
        print(
            f"{summary['path']}: {summary['rows']} rows ({summary['text_only']} text-only, {summary['skipped']} skipped), "
            f"{summary['hours']:.3f} h source audio, {summary['tgt_hours']:.3f} h target audio"
        )
        print(f"tokenizer: {summary['tokenizer']}")
        return 0
    missing = [f"--{n}" for n in ("manifest", "tokenizer", "out") if getattr(args, n) is None]
    if missing:
        raise UserError(f"{', '.join(missing)} required (or --check STORE)")

    import torch

    from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer

    codec_kwargs = {
        k: v for k, v in (("bandwidth", args.bandwidth), ("num_codebooks", args.num_codebooks)) if v is not None
    }
    if codec_kwargs and (Path(args.tokenizer) / CONFIG_NAME).is_file():
        raise UserError(
            f"--bandwidth/--num-codebooks apply when loading a codec by name or HF folder; {args.tokenizer} "
            "is a saved audiopalm tokenizer whose codebook choice is fixed"
        )
    tok = load_audio_tokenizer(args.tokenizer, revision=args.revision, **codec_kwargs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = tok.to(device).eval()
    # bad rows, audio or stores raise (ManifestError, AudioError, TokenStoreError): one line, exit 2 (cli)
    if args.words and not hasattr(tok, "encode_words"):
        raise UserError(
            f"--words: {args.tokenizer} is a {tok.type_name} tokenizer, which has no CTC head to align words"
        )
    store = build_token_store(
        args.manifest,
        tok,
        args.out,
        batch_seconds=args.batch_seconds,
        num_proc=args.num_proc,
        shard_size=args.shard_size,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        keep_shards=args.keep_shards,
        words=args.words,
    )
    print(f"{args.out}: {len(store)} rows, {len(store.meta.skipped)} skipped; {store.meta.describe()}")
    print(json.dumps(store.stats))
    return 0
