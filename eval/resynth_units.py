"""What the acoustic stage alone can say: reference audio -> its own units -> acoustic stage -> sound, scored by
an ASR judge beside the judge's score on the reference audio itself (the upper bound of TTS through this stage).

    python eval/resynth_units.py --demo runs/demo --manifest runs/demo/corpus/test.jsonl --max-items 100 \\
        --out eval/results/resynth_units.json

The voice prompt is the utterance itself (``--default-voice``: the stage's stored default voice, the voice of the
pipeline's speech when none is given); sources: ``audio`` with ``text`` and ``tgt_audio``
with ``tgt_text`` of the English->French rows. A stage that reads letters (``model.use_letters``) gets the words of
the transcript where the unit tokenizer's CTC head places them (``encode_words``), as the LM's speech written word by
word gives them; ``--no-words`` speaks the units alone.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jiwer
import torch
from tqdm import tqdm

from audiopalm.acoustic import AcousticStage
from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import read_manifest
from audiopalm.evaluation.judges import make_judge
from audiopalm.tokenizers.base import load_audio_tokenizer
from audiopalm.tokenizers.speech_encoder import normalize_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", required=True, help="a units demo folder (units/, judge/, audiopalm/final/acoustic)")
    p.add_argument("--manifest", required=True, help="rows with audio + text (and tgt_audio + tgt_text)")
    p.add_argument("--pair", default="en-fr", help="language pair of the rows to use (default en-fr)")
    p.add_argument("--max-items", type=int, default=100)
    p.add_argument(
        "--stage",
        help="an acoustic stage folder (train_acoustic's final/) to score instead of the one the demo's checkpoint holds",
    )
    p.add_argument("--no-words", action="store_true", help="give a letter-reading stage the units without their words")
    p.add_argument(
        "--default-voice",
        action="store_true",
        help="speak in the stage's stored default voice (as the pipeline's TTS and S2ST do) instead of the utterance's own",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    src, tgt = args.pair.split("-")
    rows = [
        r
        for r in read_manifest(args.manifest)
        if (r.lang, r.tgt_lang) == (src, tgt) and r.audio and r.tgt_audio and r.tgt_text
    ]
    rows = rows[: args.max_items]
    stage_dir = args.stage or demo / "audiopalm/final/acoustic"
    stage = AcousticStage.from_pretrained(stage_dir)
    units = load_audio_tokenizer(demo / "units")
    judge = make_judge("ctc", model=str(demo / "judge"))
    with_words = stage.config.use_letters and not args.no_words
    result: dict = {
        "stage": str(stage_dir),
        "words": with_words,
        "voice": "default" if args.default_voice else "utterance",
    }
    sides = (
        (src, [str(r.audio) for r in rows], [r.text for r in rows]),
        (tgt, [str(r.tgt_audio) for r in rows], [str(r.tgt_text) for r in rows]),
    )
    for lang, paths, texts in sides:
        wavs, resyn, t0 = [], [], time.perf_counter()
        for path, text in tqdm(zip(paths, texts, strict=True), total=len(paths), desc=f"resynthesis {lang}"):
            wav, _ = audio_io.load(path, units.sample_rate)
            w = torch.as_tensor(wav)[None]  # [1, T]
            words: list[Sequence[tuple[str, int]] | None] | None = None
            if with_words:
                codes, n, starts = units.encode_words(w, None, [text])  # type: ignore[operator]
                words = [list(zip(text.split(), starts[0], strict=True))]
            else:
                codes, n = units.encode(w)
            prompt = None if args.default_voice else w
            resyn.append(stage.synthesize(codes[0, 0, : int(n[0])][None], voice_wav=prompt, words=words)[0].numpy())
            wavs.append(wav)
        seconds = time.perf_counter() - t0
        refs = [normalize_text(t) for t in texts]
        row = {"n": len(refs), "seconds_resynthesis": round(seconds, 1)}
        for name, audio, rate in (("reference", wavs, units.sample_rate), ("resynthesis", resyn, stage.sample_rate)):
            hyps = [normalize_text(h) for h in judge.transcribe(audio, rate, lang)]
            row[f"judge_wer_{name}"] = round(100 * jiwer.wer(refs, hyps), 2)
            row[f"judge_cer_{name}"] = round(100 * jiwer.cer(refs, hyps), 2)
        result[lang] = row
        print(lang, row, flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
