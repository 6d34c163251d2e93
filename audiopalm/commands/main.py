"""The `audiopalm` console script.

Each subcommand lives in the module that does the work; that module exposes
``add_arguments(parser)`` and ``run(args) -> int | None``. Modules are imported only when their
subcommand is used, so ``audiopalm --help`` is instant (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from audiopalm import errors, runtime

# name -> (module, one-line help). A plain dict registry: add a line to add a subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("data_prep.synth_corpus", "speak a generated parallel corpus (en/fr/es/de) with espeak-ng"),
    "prepare": (
        "data_prep.prepare",
        "turn a Hugging Face corpus (LibriSpeech, CoVoST 2, CVSS, FLEURS) into a manifest",
    ),
    "manifest": ("audiopalm.data.manifest", "check a manifest: fields, audio files, durations, summary table"),
    "tokenizer": ("audiopalm.commands.tokenizer", "fit / inspect an audio tokenizer"),
    "text-tokenizer": (
        "audiopalm.data.text_tokenizer",
        "train a byte-level BPE text tokenizer on manifest text (stage 0)",
    ),
    "tokenize": ("audiopalm.commands.tokenize", "manifest + audio tokenizer -> token store"),
    "eval": (
        "audiopalm.evaluation.evaluate",
        "evaluate a checkpoint on tasks of a manifest: outputs, WER/BLEU/ASR-BLEU, report",
    ),
    "transcribe": (
        "audiopalm.evaluation.transcribe",
        "transcribe a manifest's audio with an ASR judge (the peer's transcripts for audiopalm eval)",
    ),
    "generate": (
        "audiopalm.commands.generate",
        "run a checkpoint on your audio files or sentences: text out, wav files out",
    ),
    "score": ("audiopalm.evaluation.metrics", "WER/CER/BLEU/chrF of a hypothesis text file against a reference file"),
    "train": (
        "audiopalm.commands.train",
        "train with a recipe: audiopalm train RECIPE --config NAME_OR_PATH [key=value ...]",
    ),
    "demo": ("audiopalm.commands.demo", "run the whole offline demo, stage by stage"),
    "push": ("audiopalm.modeling.hub", "upload a complete saved model folder (with its model card) to the hub"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return errors.OneLineParser(
        prog="audiopalm",
        description="audiopalm: teach a text LLM to listen and speak.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun `audiopalm COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="audiopalm [-h] [--version] COMMAND ...",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line: show the traceback of a refused input
    argv = [a for a in argv if a != "--debug"]
    top = _top_parser()
    top.add_argument("--version", action="store_true", help="print the version and exit")
    top.add_argument(
        "--debug", action="store_true", help=f"print the traceback of a refused input (or set {errors.DEBUG_ENV}=1)"
    )
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] == "--version":
        from audiopalm import __version__

        print(__version__)
        return 0
    name = argv[0]
    runtime.keep_freed_memory()  # before any torch work (audiopalm/runtime.py)
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = errors.OneLineParser(
        prog=f"audiopalm {name}",
        description=(module.__doc__ or help_).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    # a refused input: one line naming it, exit code 2 (errors.py); a bug keeps its traceback
    return errors.run_command(lambda: module.run(args), prog=f"audiopalm {name}", debug=debug)


if __name__ == "__main__":
    sys.exit(main())
