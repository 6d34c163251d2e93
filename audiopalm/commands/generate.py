"""Run one task of a checkpoint on your own inputs: audio files or sentences in, text and wav files out.

    audiopalm generate --checkpoint runs/demo/audiopalm/final --task ASR --src en clip.wav other.wav
    audiopalm generate --checkpoint runs/demo/audiopalm/final --task TTS --src en "the dog sleeps." --out-dir speech
    audiopalm generate --checkpoint runs/demo/audiopalm/final --task "ASR AST S2ST" --src en --tgt fr clip.wav
    audiopalm generate --checkpoint runs/demo/audiopalm/final --task MT --src en --tgt fr - < sentences.txt

INPUT is an audio file (any format soundfile reads, resampled to the tokenizer's rate) for the tasks that
listen (ASR, AST, S2ST and chains), a sentence for those that read (TTS, MT); ``-`` reads one input per line
from standard input. Each input prints its transcript / translation; speech outputs are written to
``--out-dir`` as ``NNN_TASK_LANG.wav`` (NNN: the input's number, from 001). ``--json`` prints one JSON object
per input instead. Decoding is ``audiopalm eval``'s: ASR, AST and MT beam-searched (``--num-beams``, ``--beam-tasks``),
other text greedy, speech sampled (seeded), so the same command gives the same output. The checkpoint is a folder or
a hub repo id (an AudioPaLM checkpoint, or a Speech-Llama run for ASR / AST).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiopalm.evaluation.evaluate import (
    add_decoding_arguments,
    check_beam_search,
    speech_sampling,
    text_decoding_kwargs,
)


def _slug(task: str) -> str:
    return task.replace(" ", "_")


def _stdin_lines(stdin) -> list[str]:
    """Lines of standard input, decoded as UTF-8 with the line named when it is not."""
    from audiopalm.errors import UserError

    raw = getattr(stdin, "buffer", None)
    if raw is None:  # a text stream (tests, a StringIO): already decoded
        return [line.rstrip("\r\n") for line in stdin]
    lines = []
    for lineno, data in enumerate(raw, start=1):
        try:
            lines.append(data.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise UserError(
                f"standard input, line {lineno}: not UTF-8 text (byte 0x{data[e.start]:02x} at column "
                f"{e.start + 1}); convert it, e.g. iconv -t UTF-8"
            ) from None
    return lines


def read_inputs(inputs: list[str], stdin=None) -> list[str]:
    """The command line's inputs, ``-`` replaced by the non-empty lines of ``stdin``."""
    out: list[str] = []
    for item in inputs:
        if item == "-":
            out += [line for line in _stdin_lines(stdin or sys.stdin) if line.strip()]
        else:
            out.append(item)
    return out


def generate(args) -> list[dict]:
    """Run ``args.task`` on ``args.inputs``; write speech outputs; return one result dict per input."""
    from audiopalm.audio import io as audio_io
    from audiopalm.data.tasks import AUDIO, parse_task
    from audiopalm.inference.pipeline import AudioPaLM
    from audiopalm.inference.speech_llama_pipeline import SpeechLlamaPipeline, find_run

    spec = parse_task(args.task)
    inputs = read_inputs(args.inputs)
    if not inputs:
        raise ValueError("no inputs (give audio files or sentences, or - to read them from standard input)")
    if spec.input_segment[0] == AUDIO:
        missing = [p for p in inputs if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"task {spec.name} takes audio files; no such file: {missing[0]}")
        for p in inputs:  # every file checked (decoded whole) before the model is loaded and anything written
            audio_io.load(p)
    check_beam_search(args.num_beams, args.beam_tasks)
    pipe = (SpeechLlamaPipeline if find_run(args.checkpoint) is not None else AudioPaLM).from_pretrained(
        args.checkpoint, device=args.device, batch_size=args.batch_size
    )
    if not spec.speaks:
        options = text_decoding_kwargs(spec.name, args.num_beams, args.beam_tasks)
    else:  # (a Speech-Llama run has no speech outputs: its pipeline refuses the task)
        options = {
            "cap_speech": not args.no_speech_cap,
            "speech_sampling": speech_sampling(args.speech_temperature, args.speech_top_k, args.seed, pipe),
        }
    outs = pipe.generate(
        spec, inputs, args.src, args.tgt, max_new_tokens=args.max_new_tokens, progress=not args.quiet, **options
    )
    out_dir = Path(args.out_dir)
    results = []
    for i, (item, out) in enumerate(zip(inputs, outs, strict=True), start=1):
        result = {
            "input": item,
            "task": spec.name,
            "text": out.text,
            "translation": out.translation,
            "audio": None,
            "seconds": None,
            "finished": out.finished,
        }
        if spec.speaks and out.audio is not None:
            path = out_dir / f"{i:03d}_{_slug(spec.name)}_{args.tgt or args.src}.wav"
            audio_io.save(path, out.audio, out.sample_rate)
            result["audio"], result["seconds"] = str(path), round(len(out.audio) / out.sample_rate, 2)
        results.append(result)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="audio files (tasks with speech input) or sentences (TTS, MT); - reads lines from stdin",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or hub repo id")
    parser.add_argument(
        "--task", required=True, help='a task or a quoted chain: ASR, AST, TTS, S2ST, MT, "ASR AST S2ST"'
    )
    parser.add_argument("--src", required=True, metavar="LANG", help="language of the inputs (ISO code: en, fr, ...)")
    parser.add_argument("--tgt", metavar="LANG", help="target language (AST, S2ST, MT and chains with them)")
    parser.add_argument(
        "--out-dir", default="generated", metavar="DIR", help="folder for speech outputs (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="inputs per generate call (default 8)")
    add_decoding_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from audiopalm.data.tasks import parse_task

    # a refused input (PipelineError, TaskError, AudioError: ValueErrors) raises: one line, exit 2 (cli)
    speaks = parse_task(args.task).speaks
    results = generate(args)
    for i, r in enumerate(results, start=1):
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
            continue
        print(f"[{i}] {r['input']}")
        for key, label in (("text", "transcript"), ("translation", "translation")):
            if r[key] is not None:
                print(f"  {label}: {r[key]}")
        if r["audio"]:
            print(f"  speech: {r['audio']} ({r['seconds']:.2f} s)")
        elif speaks:
            print("  speech: none (decoding stopped before a whole audio frame)")
        if not r["finished"]:
            print("  (stopped at --max-new-tokens before the end of the output)")
    return 0
