"""Turn a speech corpus (LibriSpeech, CoVoST 2, CVSS, FLEURS) into an audiopalm manifest.

Each corpus is read from the Hugging Face hub (streamed), from a local ``save_to_disk`` copy, or
from its own release folder (``--source``). Audio is written as 16-bit wavs under OUT/audio/ and
the manifest as OUT/CORPUS.SUBSET.SPLIT.jsonl (printed at the end). Re-running keeps wavs already
written. Bad audio stops the run with the row named, unless --skip-bad (then it is counted).

examples:
  audiopalm prepare librispeech --split train.clean.100 --max-items 2000 --out data/librispeech
  audiopalm prepare covost2 --pair fr_en --split train --source covost_fr_en_copy/ --out data/covost2
  audiopalm prepare cvss --pair fr_en --source cvss_c_fr_en_v1.0/ --covost covost_fr_en_copy/ --out data/cvss
  audiopalm prepare fleurs --config fr_fr --split test --source fleurs_copy/ --out data/fleurs
  audiopalm prepare fleurs --config fr_fr --tgt-config en_us --split test --source fleurs_copy/ --out data/fleurs
"""

from __future__ import annotations

import argparse

# corpus -> (module, one-line help). Modules are imported only when used.
CORPORA: dict[str, tuple[str, str]] = {
    "librispeech": ("data_prep.librispeech", "English read speech (ASR, TTS)"),
    "covost2": ("data_prep.covost2", "Common Voice speech + translations (AST)"),
    "cvss": ("data_prep.cvss", "CoVoST 2 X->en with spoken English targets (S2ST)"),
    "fleurs": ("data_prep.fleurs", "read speech in 102 languages (ASR, TTS)"),
}


def _common(p: argparse.ArgumentParser, *, source_default: str | None, split_default: str) -> None:
    p.add_argument(
        "--source",
        default=source_default,
        required=source_default is None,
        help="hub name, save_to_disk folder, or release folder"
        + (f" (default: {source_default})" if source_default else ""),
    )
    p.add_argument("--out", required=True, help="output folder (manifest + audio/)")
    p.add_argument("--split", default=split_default, help=f"split to import (default: {split_default})")
    p.add_argument("--max-items", type=int, default=None, help="stop after N good records")
    p.add_argument("--skip-bad", action="store_true", help="count and skip rows with bad audio or fields")
    p.add_argument("--sample-rate", type=int, default=None, help="resample wavs to this rate (default: keep)")
    p.add_argument("--revision", default=None, help="hub revision (e.g. refs/convert/parquet)")
    p.add_argument("--no-streaming", action="store_true", help="download the hub split instead of streaming it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")

    p = sub.add_parser("librispeech", help=CORPORA["librispeech"][1])
    _common(p, source_default="openslr/librispeech_asr", split_default="train.clean.100")
    p.add_argument("--config", default="all", help="hub config: all, clean or other (default: all)")
    p.add_argument("--keep-case", action="store_true", help="keep LibriSpeech's upper-case transcripts")

    p = sub.add_parser("covost2", help=CORPORA["covost2"][1])
    _common(p, source_default="facebook/covost2", split_default="train")
    p.add_argument("--pair", required=True, help="language pair as the corpus names it: fr_en, en_de, zh-CN_en ...")
    p.add_argument("--config", default=None, help="hub config (default: the pair)")
    p.add_argument("--clips", default=None, help="Common Voice clips/ folder (release-folder source)")

    p = sub.add_parser("cvss", help=CORPORA["cvss"][1])
    _common(p, source_default=None, split_default="train")
    p.add_argument("--covost", required=True, help="CoVoST 2 source for the same pair (as for `prepare covost2`)")
    p.add_argument("--pair", required=True, help="SRC_en, e.g. fr_en")
    p.add_argument("--variant", default="c", choices=("c", "t"), help="CVSS-C or CVSS-T (names the output)")
    p.add_argument(
        "--tgt-text",
        default="cvss",
        choices=("cvss", "covost"),
        help="translation text: CVSS's normalised one (default) or CoVoST 2's original",
    )
    p.add_argument("--clips", default=None, help="Common Voice clips/ folder (release-folder CoVoST source)")
    p.add_argument("--covost-config", default=None, help="hub config of the CoVoST source (default: the pair)")
    p.add_argument("--config", default=None, help="hub config of the CVSS source")

    p = sub.add_parser("fleurs", help=CORPORA["fleurs"][1])
    _common(p, source_default="google/fleurs", split_default="train")
    p.add_argument("--config", default="en_us", help="language config: en_us, fr_fr, cmn_hans_cn ... (default: en_us)")
    p.add_argument("--lang", default=None, help="ISO code to write instead of the one derived from --config")
    p.add_argument("--normalized", action="store_true", help="use the normalised transcription, not the raw one")
    p.add_argument(
        "--tgt-config",
        default=None,
        help="make translation pairs with this second language (FLEURS is n-way parallel), e.g. en_us",
    )
    p.add_argument("--tgt-source", default=None, help="source of the --tgt-config language (default: --source)")
    p.add_argument("--no-tgt-speech", action="store_true", help="pairs with target text only (no tgt_audio)")


def run(args) -> int:
    import importlib

    module = importlib.import_module(CORPORA[args.corpus][0])
    kw = dict(
        split=args.split,
        max_items=args.max_items,
        skip_bad=args.skip_bad,
        sample_rate=args.sample_rate,
        streaming=False if args.no_streaming else None,
        revision=args.revision,
        progress=not args.quiet,
    )
    if args.corpus == "librispeech":
        kw.update(config=args.config, lowercase=not args.keep_case)
    elif args.corpus == "covost2":
        kw.update(pair=args.pair, config=args.config, clips_dir=args.clips)
    elif args.corpus == "cvss":
        kw.update(
            covost=args.covost,
            pair=args.pair,
            variant=args.variant,
            tgt_text_from=args.tgt_text,
            clips_dir=args.clips,
            covost_config=args.covost_config,
            config=args.config,
        )
    elif args.corpus == "fleurs":
        kw.update(
            config=args.config,
            lang=args.lang,
            normalized=args.normalized,
            tgt_config=args.tgt_config,
            tgt_source=args.tgt_source,
            tgt_speech=not args.no_tgt_speech,
        )
    # a bad source, row or audio file raises (SourceError, AudioError, ManifestError): one line, exit 2 (cli)
    manifest = module.prepare(args.source, args.out, **kw)
    print(manifest)
    return 0
