"""Evaluate a checkpoint on any tasks of a manifest (or token store): outputs, scores, report.

    audiopalm eval --checkpoint runs/demo/audiopalm --manifest runs/demo/corpus/test.jsonl \\
        --tasks ASR AST TTS S2ST "ASR AST S2ST" MT --out runs/demo/eval [--max-items 20] \\
        [--batch-size 8] [--judge model|pocketsphinx|whisper:openai/whisper-large-v3]

Writes, into ``--out`` (the results-folder format of :mod:`audiopalm.evaluation.report`)::

    outputs/<TASK>.jsonl        one line per utterance: id, task, src, tgt, speaker, split, subset, text
                                (input text / reference transcript), ref_text (reference translation),
                                hyp_text (the model's text; for speech outputs the judge's transcript),
                                hyp_transcript / hyp_translation (chained tasks), audio, ref_audio
                                (wav paths relative to --out), judge_ref_text, finished, new_tokens
    outputs/wav/<TASK>/<id>.wav generated speech (TTS, S2ST)
    summary.json                {"checkpoint", "judge", "data", "metrics": [summary rows], ...}
    report.md, report.html      audiopalm.evaluation.report's report of the folder

Metrics, corpus-level, per task, language pair, split and subset (:mod:`audiopalm.evaluation.metrics`): ASR output
-> WER and CER; translated text (AST, MT) -> BLEU and chrF; TTS -> round-trip WER (``TTS-WER``) and
S2ST -> ``ASR-BLEU``, both through an ASR judge. The judge (``--judge``) is the checkpoint's own ASR by
default (``model``), PocketSphinx (``pocketsphinx``, English only) or a Whisper model
(``whisper:NAME``). The judge also transcribes the *reference* audio (``TTS-WER (ref audio)``,
``ASR-BLEU (ref audio)``), so a reader sees how good the judge itself is on real speech.

Subsets: when ``corpus.json`` next to the manifest (or ``--corpus``) lists ``held_out_voices``
(:mod:`data_prep.synth_corpus`), utterances whose ``speaker`` (the voice of the source audio) is held
out form the ``heldout_voice`` subset and the rest ``seen_voices``, for tasks with speech input; text-input
tasks (TTS, MT) and corpora without that key give one subset, ``all``.

Utterances are de-duplicated per task (a source clip paired with three translations is transcribed once
for ASR); ``--max-items`` keeps the first N per task and language pair, except for the pairs named by
``--full-pairs`` (e.g. ``en-fr``: AST, S2ST, MT en->fr and ASR, TTS of en), which keep all their rows, so the
report's first screen (:mod:`audiopalm.evaluation.goals`) scores its goals on every test utterance of the focus pair.
``--runs DIR...`` names training runs (folders with ``metrics.jsonl``) whose loss curves the report plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiopalm.errors import inside

# Placeholder for a speech output that produced no whole frame (decoding ran out): a judge hears
# silence, so the utterance counts as all errors instead of being silently dropped.
SILENCE_SECONDS = 0.1
BEAM_TASKS = ("ASR", "AST", "MT")
"""Tasks beam-searched by default (``--num-beams``, 4): the tasks whose outputs are all text. On the default demo
model's dev split 4 beams against greedy: English ASR WER 9.07 against 9.46, AST BLEU 71.26 against 70.39; MT BLEU
28.6 against 20.4 on an earlier model (docs/decoding.md)."""
PAIR_RE = r"[a-z]{2,3}(-[a-z]{2,3})?"
"""A ``full_pairs`` entry: ``SRC-TGT`` or ``SRC`` (language codes)."""
HELD_OUT_KEY = "held_out_voices"
"""Key of ``corpus.json`` (data_prep/synth_corpus.py) listing the voices kept out of training."""


@dataclasses.dataclass
class EvalConfig:
    """Settings of one evaluation run (the ``audiopalm eval`` options)."""

    checkpoint: str
    """Checkpoint folder or hub repo id (:meth:`audiopalm.inference.pipeline.AudioPaLM.from_pretrained`), or a
    Speech-Llama run folder (:class:`audiopalm.inference.speech_llama_pipeline.SpeechLlamaPipeline`: ASR and AST from
    a manifest)."""
    out: str
    """Results folder to write."""
    tasks: list[str]
    """Task names or chains: ``["ASR", "AST", "TTS", "S2ST", "ASR AST S2ST", "MT"]``."""
    manifest: str | None = None
    """Manifest to evaluate on (audio is encoded with the checkpoint's audio tokenizer)."""
    store: str | None = None
    """Or a token store made with the checkpoint's audio tokenizer (codes are read, not recomputed)."""
    corpus: str | None = None
    """corpus.json with held-out voices; default: next to the manifest, if present."""
    max_items: int | None = None
    """Keep the first N utterances per task and language pair (None: all)."""
    full_pairs: list[str] = dataclasses.field(default_factory=list)
    """Language pairs scored on all their rows whatever ``max_items`` says (the focus pairs of the report's
    first screen): ``SRC-TGT`` for translation tasks, and its source ``SRC`` for same-language tasks (ASR, TTS);
    a bare ``SRC`` covers the same-language tasks only. E.g. ``["en-fr"]``."""
    runs: list[str] = dataclasses.field(default_factory=list)
    """Training runs whose loss curves the report plots: run folders holding ``metrics.jsonl`` (what the
    recipes write) or the ``.jsonl`` files themselves (:func:`audiopalm.evaluation.report.run_log`)."""
    batch_size: int = 8
    """Prompts per ``model.generate`` call."""
    judge: str = "model"
    """ASR judge for speech outputs: ``model``, ``pocketsphinx``, ``whisper:NAME`` or ``ctc:FOLDER``."""
    peer: str | None = None
    """A second ASR system on the same audio (``pocketsphinx`` or ``whisper:NAME``), reported beside the model:
    on ASR input audio (``WER [peer]``) and on generated / reference speech (``TTS-WER [peer]``, ...)."""
    peer_max_items: int | None = None
    """The peer hears the first N utterances of each voice subset of a task and pair only (None: all it is
    given): a CPU peer such as PocketSphinx takes about a second per clip, so scoring a focus pair in full
    (``full_pairs``) would triple its time; its rows state their own n."""
    peer_transcripts: str | None = None
    """A JSONL file of the peer's transcripts of input and reference audio, made before by `audiopalm transcribe`
    with the same peer (:mod:`audiopalm.evaluation.transcribe`): those files are not heard again; generated speech
    and files it lacks are."""
    max_new_tokens: int | None = None
    """Cap on generated tokens per output (None: the pipeline's default per output kind)."""
    cap_speech: bool = True
    """End each speech output at a length set by its input (``AudioPaLM.generate``'s ``cap_speech``)."""
    speech_temperature: float | None = None
    """Speech outputs are sampled at this temperature among the ``speech_top_k`` likeliest codes; 0: greedy speech;
    None: the checkpoint's own (``AudioPaLM.default_speech_sampling``: 0.6, or 0.2 for speech written word by
    word). Text: greedy, or ``num_beams`` for ``beam_tasks``."""
    speech_top_k: int = 20
    """Top-k of the speech sampling (0: every allowed code)."""
    num_beams: int = 4
    """Beam search with this many beams for the ``beam_tasks``; 1: every output greedy."""
    beam_tasks: list[str] = dataclasses.field(default_factory=lambda: list(BEAM_TASKS))
    """Tasks decoded with beam search (outputs all text: ASR, AST, MT, ``ASR AST``); other text is greedy."""
    seed: int = 0
    """Seed of the speech sampling (with each prompt it seeds that row: the same run gives the same audio)."""
    device: str | None = None
    """torch device (default: cuda if available)."""
    report: bool = True
    """Write report.md / report.html (audiopalm.evaluation.report) at the end."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        from audiopalm.data.tasks import TaskError, parse_task

        if (self.manifest is None) == (self.store is None):
            raise ValueError(
                f"give exactly one of manifest / store (got manifest={self.manifest!r}, store={self.store!r})"
            )
        if not self.tasks:
            raise ValueError("tasks: give at least one task")
        for t in self.tasks:
            try:
                parse_task(t)
            except TaskError as e:
                raise ValueError(f"tasks: {e}") from None
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items: expected >= 1, got {self.max_items}")
        for pair in self.full_pairs:
            if not re.fullmatch(PAIR_RE, pair):
                raise ValueError(f"full_pairs: expected SRC-TGT or SRC language codes (e.g. en-fr, en), got {pair!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.peer_max_items is not None and self.peer_max_items < 1:
            raise ValueError(f"peer_max_items: expected >= 1, got {self.peer_max_items}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        check_beam_search(self.num_beams, self.beam_tasks)
        if (self.speech_temperature or 0) < 0 or self.speech_top_k < 0:
            raise ValueError(
                f"speech_temperature / speech_top_k: expected >= 0 (temperature 0: greedy speech), got "
                f"{self.speech_temperature} / {self.speech_top_k}"
            )
        if not (self.judge in ("model", "pocketsphinx") or re.fullmatch(r"(whisper|ctc):\S+", self.judge)):
            raise ValueError(
                f"judge: expected 'model', 'pocketsphinx', 'whisper:NAME' or 'ctc:FOLDER', got {self.judge!r}"
            )
        if self.peer is not None and not (self.peer == "pocketsphinx" or re.fullmatch(r"(whisper|ctc):\S+", self.peer)):
            raise ValueError(f"peer: expected 'pocketsphinx', 'whisper:NAME' or 'ctc:FOLDER', got {self.peer!r}")
        if self.peer_transcripts is not None:
            from audiopalm.evaluation.transcribe import read_transcripts

            if self.peer is None:
                raise ValueError("peer_transcripts: give the peer they were made by (peer / --peer)")
            read_transcripts(self.peer_transcripts, self.peer)  # refused now, not after the model's outputs
        from audiopalm.evaluation.report import ReportError, run_log

        for run in self.runs:  # refused now, not after the whole evaluation
            try:
                run_log(run)
            except ReportError as e:
                raise ValueError(f"runs: {e}") from None


# ----------------------------------------------------------------------------- data


def load_rows(cfg: EvalConfig, audio_tokenizer=None) -> tuple[list[dict], Path | None]:
    """The utterances to evaluate (manifest fields, audio paths absolute, plus ``audio_codes`` /
    ``tgt_audio_codes`` [K, F] from a token store) and the folder the data came from."""
    if cfg.manifest is not None:
        from audiopalm.data.manifest import read_manifest

        rows = [dataclasses.asdict(r) for r in read_manifest(cfg.manifest)]
        return rows, Path(cfg.manifest).parent
    from audiopalm.data.token_store import load_token_store

    assert cfg.store is not None  # EvalConfig: a manifest or a store
    store = load_token_store(cfg.store, expected_tokenizer=audio_tokenizer)
    rows = []
    for i in range(len(store)):
        row = {k: v for k, v in store[i].items() if k not in ("audio_codes", "tgt_audio_codes")}
        row["audio_codes"] = store.codes(i, "audio_codes")
        row["tgt_audio_codes"] = store.codes(i, "tgt_audio_codes")
        rows.append(row)
    origin = Path(store.meta.manifest).parent if store.meta.manifest else None
    return rows, origin


def held_out_voices(cfg: EvalConfig, origin: Path | None) -> set[str] | None:
    """Voices marked held out in corpus.json (``--corpus``, else next to the data); None if unknown."""
    path = Path(cfg.corpus) if cfg.corpus else (origin / "corpus.json" if origin else None)
    if path is None or not path.is_file():
        if cfg.corpus:
            raise FileNotFoundError(f"{cfg.corpus}: no such corpus.json")
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    voices = meta.get(HELD_OUT_KEY) if isinstance(meta, dict) else None
    if voices is None:
        return None
    if not isinstance(voices, list) or not all(isinstance(v, str) for v in voices):
        raise ValueError(f"{path}: field {HELD_OUT_KEY!r}: expected a list of voice ids, got {voices!r}")
    return set(voices)


def is_full_pair(src: str, tgt: str | None, full_pairs: Sequence[str]) -> bool:
    """Whether the group (src, tgt) is scored on all its rows (:attr:`EvalConfig.full_pairs`)."""
    if tgt is not None:
        return f"{src}-{tgt}" in full_pairs
    return any(p.split("-")[0] == src for p in full_pairs)


def task_items(
    spec, rows: list[dict], max_items: int | None, skipped: Counter, full_pairs: Sequence[str] = ()
) -> dict[tuple, list[dict]]:
    """Rows usable for ``spec``, de-duplicated, grouped by (src, tgt), first ``max_items`` of each group
    (all of a group that ``full_pairs`` names: :func:`is_full_pair`).

    A row lacking what the task needs (a translation; the audio of a task that listens, or TTS's reference
    audio, which a text-only row has not) is counted in ``skipped`` under ``"<task>: no <field>"``."""
    from audiopalm.data.tasks import AUDIO

    kind, field = spec.input_segment
    need = ["tgt_lang", "tgt_text"] if spec.needs_tgt_lang else []
    if kind == AUDIO or (AUDIO, "audio_codes") in spec.output_segments:
        need = ["audio"] + need
    groups: dict[tuple, list[dict]] = defaultdict(list)
    seen = set()
    for row in rows:
        missing = [f for f in need if not row.get(f)]
        if missing:
            skipped[f"{spec.name}: no {missing[0]}"] += 1
            continue
        tgt = row.get("tgt_lang") if spec.needs_tgt_lang else None
        key = (row["audio"] if kind == AUDIO else (row["lang"], row["text"]), tgt)
        if key in seen:
            continue
        seen.add(key)
        group = groups[(row["lang"], tgt)]
        if max_items is None or len(group) < max_items or is_full_pair(row["lang"], tgt, full_pairs):
            group.append(row)
    return dict(groups)


def subset_of(row: dict, spec, held_out: set[str] | None) -> str:
    """``heldout_voice`` / ``seen_voices`` for speech-input tasks when held-out voices are known, else ``all``."""
    from audiopalm.data.tasks import AUDIO

    if held_out is None or spec.input_segment[0] != AUDIO:
        return "all"
    return "heldout_voice" if row.get("speaker") in held_out else "seen_voices"


# ----------------------------------------------------------------------------- judges


def make_eval_judge(name: str, pipe, *, batch_size: int, max_new_tokens: int | None):
    """``model`` (the checkpoint's own ASR), ``pocketsphinx``, ``whisper:NAME`` or ``ctc:FOLDER`` (a character-CTC
    speech encoder trained apart from the model under test: :class:`audiopalm.evaluation.judges.CTCJudge`) as an ASR
    judge."""
    from audiopalm.evaluation.judges import CallableJudge, PocketSphinxJudge, WhisperJudge

    if name == "model":

        def own_asr(wavs, sample_rate, lang):
            outs = pipe.asr(
                list(wavs), lang, sample_rate=sample_rate, batch_size=batch_size, max_new_tokens=max_new_tokens
            )
            return [o.text or "" for o in outs]

        return CallableJudge(own_asr, name="model-asr")
    if name == "pocketsphinx":
        return PocketSphinxJudge()
    if name.startswith("ctc:"):
        from audiopalm.evaluation.judges import CTCJudge

        return CTCJudge(model=name.split(":", 1)[1], batch_size=batch_size, name="ctc")
    return WhisperJudge(model=name.split(":", 1)[1], batch_size=batch_size, name=name)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# ----------------------------------------------------------------------------- the run


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation described by ``cfg``; returns the summary written to ``summary.json``."""
    from tqdm import tqdm

    from audiopalm.audio import io as audio_io
    from audiopalm.data.tasks import AUDIO, parse_task
    from audiopalm.data.vocab import language_key
    from audiopalm.inference.pipeline import AudioPaLM
    from audiopalm.inference.speech_llama_pipeline import SpeechLlamaPipeline, find_run

    out_dir = Path(cfg.out)
    (out_dir / "outputs").mkdir(parents=True, exist_ok=True)
    # a Speech-Llama run (recipes/finetune_speech_llama.py; ASR/AST from a manifest) or an AudioPaLM checkpoint
    loader = SpeechLlamaPipeline if find_run(cfg.checkpoint) is not None else AudioPaLM
    pipe = loader.from_pretrained(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size)
    rows, origin = load_rows(cfg, pipe.audio_tokenizer)
    held_out = held_out_voices(cfg, origin)
    judge = make_eval_judge(cfg.judge, pipe, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)
    peer = None if cfg.peer is None else make_eval_judge(cfg.peer, pipe, batch_size=cfg.batch_size, max_new_tokens=None)
    known = {}  # the peer's transcripts of input and reference audio, made before (audiopalm transcribe)
    if cfg.peer_transcripts is not None:
        from audiopalm.evaluation.transcribe import read_transcripts

        known = read_transcripts(cfg.peer_transcripts, str(cfg.peer))
    sr = getattr(pipe, "output_sample_rate", pipe.sample_rate)  # generated speech (an acoustic stage's rate, if any)
    sampling = speech_sampling(cfg.speech_temperature, cfg.speech_top_k, cfg.seed, pipe)
    metrics: list[dict] = []
    skipped: Counter = Counter()
    notes: list[str] = []
    encoded: dict[str, object] = {}  # audio path -> codes [K, F] (manifest input)

    def rel(path: str | os.PathLike | None) -> str | None:
        return None if path is None else os.path.relpath(os.path.abspath(path), out_dir.resolve())

    for task in cfg.tasks:
        spec = parse_task(task)
        kind_in, field_in = spec.input_segment
        out_fields = {f for _, f in spec.output_segments}
        speech_field = next((f for k, f in spec.output_segments if k == AUDIO), None)
        slug = _slug(spec.name)
        lines: list[dict] = []
        trained = pipe.trained_languages(spec)  # empty: the checkpoint does not say, every pair is scored
        for (src, tgt), items in task_items(spec, rows, cfg.max_items, skipped, cfg.full_pairs).items():
            key = language_key(src, tgt)
            if trained and key not in trained:
                skipped[f"{spec.name}: {key} not trained"] += len(items)
                continue
            records = []
            for row in tqdm(
                items,
                desc=f"{spec.name} {src}{'-' + tgt if tgt else ''}: encode",
                unit="utt",
                disable=not cfg.progress or kind_in != AUDIO or row_has_codes(items),
            ):
                rec = {"id": row["id"], "lang": src, "tgt_lang": tgt, "text": row["text"]}
                if kind_in == AUDIO:
                    codes = row.get("audio_codes")
                    if codes is None:  # a clip serves several tasks and pairs: encode it once
                        if row["audio"] not in encoded:
                            encoded[row["audio"]] = pipe.encode_audio(row["audio"], name=row["audio"])
                        codes = encoded[row["audio"]]
                    rec[field_in] = codes
                records.append(rec)
            outs = pipe.generate_records(
                spec,
                records,
                max_new_tokens=cfg.max_new_tokens,
                progress=cfg.progress,
                **(
                    {"cap_speech": cfg.cap_speech, "speech_sampling": sampling}
                    if speech_field
                    else text_decoding_kwargs(spec.name, cfg.num_beams, cfg.beam_tasks)
                ),
            )
            # speech outputs -> wavs on disk (and silence for the judge where nothing came out)
            wavs = []
            for row, o in zip(items, outs, strict=True):
                line = {
                    "id": row["id"],
                    "task": spec.name,
                    "src": src,
                    "tgt": tgt,
                    "speaker": row.get("speaker"),
                    "split": row.get("split") or "test",
                    "subset": subset_of(row, spec, held_out),
                    "text": row["text"],
                    "ref_text": row.get("tgt_text") if spec.needs_tgt_lang else None,
                    "hyp_text": o.translation if "tgt_text" in out_fields else o.text,
                    "finished": o.finished,
                    "new_tokens": len(o.ids),
                }
                if "text" in out_fields and "tgt_text" in out_fields:
                    line["hyp_transcript"], line["hyp_translation"] = o.text, o.translation
                if kind_in == AUDIO and row.get("audio"):  # the report's examples play input, reference, ours
                    line["input_audio"] = rel(row["audio"])
                if speech_field is not None:
                    ref = row.get("audio") if speech_field == "audio_codes" else row.get("tgt_audio")
                    line["ref_audio"] = rel(ref)
                    if o.audio is not None:
                        wav_path = inside(
                            out_dir / "outputs" / "wav" / slug / f"{_slug(row['id'])}.wav",
                            out_dir,
                            what=f"the speech output of id {row['id']!r}",
                        )
                        audio_io.save(wav_path, o.audio, sr)
                        line["audio"] = rel(wav_path)
                        wavs.append(o.audio)
                    else:
                        line["audio"] = None
                        wavs.append(np.zeros(int(SILENCE_SECONDS * sr), np.float32))
                lines.append(line)
            group_lines = lines[-len(items) :]
            # judge transcripts of generated and reference speech, once per language pair
            judged, judged_ref = None, None
            if speech_field is not None:
                out_lang = tgt if speech_field == "tgt_audio_codes" else src
                try:
                    judged = judge.transcribe(wavs, sr, out_lang)
                    refs_audio = [
                        r.get("audio") if speech_field == "audio_codes" else r.get("tgt_audio") for r in items
                    ]
                    if all(refs_audio):
                        ref_wavs = [audio_io.load(p, sr)[0] for p in refs_audio if p is not None]
                        judged_ref = judge.transcribe(ref_wavs, sr, out_lang)
                except ValueError as e:  # e.g. PocketSphinx has no model for this language
                    notes.append(f"{spec.name} {src}{'-' + tgt if tgt else ''}: no judged metric ({e})")
                    print(f"warning: {notes[-1]}", file=sys.stderr)
                for i, line in enumerate(group_lines):
                    if judged is not None:
                        line["hyp_text"] = judged[i]
                    if judged_ref is not None:
                        line["judge_ref_text"] = judged_ref[i]
            metrics += score_group(
                spec, src, tgt, items, outs, group_lines, wavs, sr, judged, judged_ref, getattr(judge, "name", "judge")
            )
            if peer is not None:
                keep = first_per_subset(group_lines, cfg.peer_max_items)

                def pick(xs: list, keep: list[int] = keep) -> list:
                    return [xs[i] for i in keep] if xs else xs

                try:
                    metrics += peer_rows(
                        peer,
                        str(cfg.peer),
                        spec,
                        src,
                        tgt,
                        pick(items),
                        pick(outs),
                        pick(group_lines),
                        pick(wavs),
                        sr,
                        known,
                    )
                except ValueError as e:  # e.g. PocketSphinx has no model for this language
                    notes.append(f"{spec.name} {src}{'-' + tgt if tgt else ''}: no {cfg.peer} row ({e})")
        with (out_dir / "outputs" / f"{slug}.jsonl").open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        if not lines:
            notes.append(f"{spec.name}: no usable utterances in the data")
            print(f"warning: {notes[-1]}", file=sys.stderr)

    summary: dict[str, Any] = {
        "checkpoint": str(cfg.checkpoint),
        "judge": cfg.judge,
        "text_decoding": describe_text_decoding(cfg.num_beams, cfg.beam_tasks),
        "speech_decoding": "greedy"
        if sampling is None
        else f"sampled: temperature {sampling.temperature}, top-k {sampling.top_k or 'all'}, seed {sampling.seed}",
        "data": str(cfg.manifest or cfg.store),
        "tasks": list(cfg.tasks),
        "subsets": "by held-out voice" if held_out is not None else "all",
        "max_items": cfg.max_items,
        "full_pairs": list(cfg.full_pairs),
        "peer_max_items": cfg.peer_max_items,
        "peer_transcripts": cfg.peer_transcripts,
        "metrics": metrics,
        "notes": notes,
    }
    if cfg.runs:  # the report plots their loss curves; paths relative to the results folder
        summary["train_logs"] = {
            name: os.path.relpath(path.resolve(), out_dir.resolve()) for name, path in run_logs(cfg.runs).items()
        }
    if skipped:
        summary["extra_tables"] = {
            "Skipped utterances": [{"reason": k, "count": v} for k, v in sorted(skipped.items())]
        }
    tmp = out_dir / "summary.json.tmp"  # what the report reads: whole or absent
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "summary.json")
    if cfg.report:
        write_report(out_dir)
    return summary


def score_group(
    spec,
    src: str,
    tgt: str | None,
    items: list[dict],
    outs: list,
    lines: list[dict],
    wavs: list[np.ndarray],
    sample_rate: int,
    judged: list[str] | None,
    judged_ref: list[str] | None,
    judge_name: str,
) -> list[dict]:
    """summary.json rows of one task and language pair, one set per (split, subset) of ``lines``.

    ``outs``: the pipeline outputs of ``items``; ``wavs``: their speech ([T] each; silence where none);
    ``judged`` / ``judged_ref``: the judge's transcripts of the generated / reference speech (or None)."""
    from audiopalm.evaluation.judges import CallableJudge
    from audiopalm.evaluation.metrics import asr_bleu, bleu, cer, chrf, summary_row, tts_roundtrip_wer, wer

    out_fields = {f for _, f in spec.output_segments}
    by_subset: dict[tuple, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        by_subset[(line["split"], line["subset"])].append(i)
    rows = []
    for (split, subset), idx in by_subset.items():
        kw = {"task": spec.name, "src": src, "tgt": tgt, "split": split, "subset": subset}
        if "text" in out_fields:  # a transcript
            refs, hyps = [items[i]["text"] for i in idx], [outs[i].text or "" for i in idx]
            rows += [summary_row(wer(refs, hyps, src), **kw), summary_row(cer(refs, hyps, src), **kw)]
        if "tgt_text" in out_fields:  # a translation
            refs, hyps = [items[i]["tgt_text"] for i in idx], [outs[i].translation or "" for i in idx]
            rows += [summary_row(bleu(refs, hyps, tgt), **kw), summary_row(chrf(refs, hyps), **kw)]
        for transcripts, suffix in ((judged, ""), (judged_ref, " (ref audio)")):
            if transcripts is None:
                continue
            # one judge pass served every subset: hand the metric the transcripts already made
            subset_texts = [transcripts[i] for i in idx]

            def given(w, sr, lang, t=subset_texts):
                return t

            fixed = CallableJudge(given, name=judge_name)
            sub_wavs = [wavs[i] for i in idx]
            if "audio_codes" in out_fields:  # TTS: round trip against the input text
                score, _ = tts_roundtrip_wer(sub_wavs, sample_rate, [items[i]["text"] for i in idx], src, fixed)
                rows.append(summary_row(score, metric="TTS-WER" + suffix, **kw))
            else:  # S2ST: ASR-BLEU against the reference translation
                assert tgt is not None, spec.name  # a speech translation has a target language
                bleu_score, _ = asr_bleu(sub_wavs, sample_rate, [items[i]["tgt_text"] for i in idx], tgt, fixed)
                rows.append(summary_row(bleu_score, metric="ASR-BLEU" + suffix, **kw))
    return rows


def peer_rows(
    peer,
    name: str,
    spec,
    src: str,
    tgt: str | None,
    items: list[dict],
    outs: list,
    lines: list[dict],
    wavs: list[np.ndarray],
    sample_rate: int,
    known: dict | None = None,
) -> list[dict]:
    """summary.json rows of a second ASR system (``peer``) on the audio of one task and language pair, named
    ``<metric> [name]`` so the report puts them beside the model's: for ASR its own transcripts of the input
    audio (WER/CER), for TTS its transcripts of the generated and the reference speech (other tasks: none;
    a CPU peer such as PocketSphinx takes about 0.4 s per clip). ``known``: its transcripts of audio files made
    before (:func:`audiopalm.evaluation.transcribe.read_transcripts`), used instead of hearing those files again.

    Raises ValueError where the peer has no model for the language."""
    from audiopalm.data.tasks import AUDIO, TEXT
    from audiopalm.evaluation.transcribe import transcribe_files

    if spec.output_segments == [(TEXT, "text")] and spec.input_segment[0] == AUDIO:  # plain ASR
        heard = transcribe_files(peer, [r["audio"] for r in items], sample_rate, src, known)
        fake = [dataclasses.replace(o, text=t) for o, t in zip(outs, heard, strict=True)]
        rows = score_group(spec, src, tgt, items, fake, lines, wavs, sample_rate, None, None, name)
    elif spec.output_segments == [(AUDIO, "audio_codes")]:  # TTS (speech-to-speech tasks: the judge's rows only)
        refs = [r.get("audio") for r in items]
        heard = peer.transcribe(wavs, sample_rate, src)
        heard_ref = transcribe_files(peer, [p for p in refs if p], sample_rate, src, known) if all(refs) else None
        rows = [
            r
            for r in score_group(spec, src, tgt, items, outs, lines, wavs, sample_rate, heard, heard_ref, name)
            if r["metric"].startswith(("TTS-WER", "ASR-BLEU"))
        ]
    else:
        return []
    for r in rows:
        metric, paren, rest = r["metric"].partition(" (")
        r["metric"] = f"{metric} [{name}]" + (f" ({rest}" if paren else "")
    return rows


def first_per_subset(lines: list[dict], n: int | None) -> list[int]:
    """Indices of the first ``n`` of ``lines`` in each (split, subset), in order (all of them if ``n`` is None)."""
    seen: Counter = Counter()
    keep = []
    for i, line in enumerate(lines):
        key = (line["split"], line["subset"])
        if n is None or seen[key] < n:
            keep.append(i)
            seen[key] += 1
    return keep


def run_logs(runs: list[str]) -> dict[str, Path]:
    """Run name (its folder's name; parent/name where two share it) -> its training log."""
    from audiopalm.evaluation.report import run_log

    paths = [run_log(r) for r in runs]
    names = [p.parent.name or "run" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.parent.name}/{p.parent.name}" for p in paths]
    return dict(zip(names, paths, strict=True))


def row_has_codes(items: list[dict]) -> bool:
    """Whether the rows carry precomputed audio codes (token store): then there is nothing to encode."""
    return bool(items) and items[0].get("audio_codes") is not None


def write_report(results_dir: str | os.PathLike):
    """Render report.md / report.html of a results folder (:mod:`audiopalm.evaluation.report`)."""
    from audiopalm.evaluation.report import write_report as _write

    return _write(results_dir)


# ----------------------------------------------------------------------------- CLI: audiopalm eval


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """How outputs are decoded and where: the options `audiopalm eval` and `audiopalm generate` share."""
    parser.add_argument("--max-new-tokens", type=int, metavar="N", help="cap on tokens generated per output")
    parser.add_argument(
        "--no-speech-cap",
        action="store_true",
        help="let speech outputs run to --max-new-tokens "
        "(default: each ends by 2.5x its input speech, or 0.2 s per input character)",
    )
    defaults = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    parser.add_argument(
        "--speech-temperature",
        type=float,
        default=defaults["speech_temperature"],
        metavar="T",
        help="speech outputs are sampled at temperature T (text: greedy or --num-beams); "
        "0: greedy speech, which tends to loop until the cap (default: the checkpoint's: 0.2 for speech written "
        "word by word, else 0.6)",
    )
    parser.add_argument(
        "--speech-top-k",
        type=int,
        default=defaults["speech_top_k"],
        metavar="K",
        help="sample speech among the K likeliest codes; 0: all (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults["seed"], help="seed of the speech sampling (default %(default)s)"
    )
    parser.add_argument(
        "--num-beams",
        type=int,
        default=defaults["num_beams"],
        metavar="N",
        help="beam search with N beams for the --beam-tasks; 1: all text greedy (default %(default)s)",
    )
    parser.add_argument(
        "--beam-tasks",
        nargs="+",
        default=list(BEAM_TASKS),
        metavar="TASK",
        help='tasks with text outputs only (ASR, AST, MT, "ASR AST") to decode with beam search; '
        "the other text is greedy (default: %(default)s; chosen on the demo's dev split)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


def check_beam_search(num_beams: int, beam_tasks: list[str]) -> None:
    """Refuse a beam width below 1 and beam tasks that are unknown or output speech (speech is sampled)."""
    from audiopalm.data.tasks import TaskError, parse_task

    if num_beams < 1:
        raise ValueError(f"num_beams: expected >= 1 (1: greedy), got {num_beams}")
    for task in beam_tasks:
        try:
            spec = parse_task(task)
        except TaskError as e:
            raise ValueError(f"beam_tasks: {e}") from None
        if spec.speaks:
            raise ValueError(
                f"beam_tasks: beam search is for tasks whose outputs are all text; {spec.name} speaks "
                "(its speech is sampled: speech_temperature, speech_top_k)"
            )


def text_decoding_kwargs(task: str, num_beams: int, beam_tasks: list[str]) -> dict:
    """``model.generate`` keyword arguments of a text-output ``task``: beam search if it is a beam task."""
    from audiopalm.data.tasks import parse_task

    beam = num_beams > 1 and parse_task(task).name in {parse_task(t).name for t in beam_tasks}
    return {"num_beams": num_beams, "early_stopping": True} if beam else {}


def describe_text_decoding(num_beams: int, beam_tasks: list[str]) -> str:
    """summary.json's ``text_decoding``."""
    if num_beams == 1 or not beam_tasks:
        return "greedy"
    return f"beam search ({num_beams} beams): {', '.join(beam_tasks)}; the other text greedy"


def speech_sampling(temperature: float | None, top_k: int, seed: int, pipe=None):
    """The pipeline's ``speech_sampling`` for these settings: None (greedy speech) at temperature 0; temperature None:
    ``pipe``'s own (:meth:`audiopalm.inference.pipeline.AudioPaLM.default_speech_sampling`)."""
    from audiopalm.inference.generation import SpeechSampling
    from audiopalm.inference.pipeline import SPEECH_SAMPLING

    if temperature is None:
        default = getattr(pipe, "default_speech_sampling", None)
        temperature = (default() if default is not None else SPEECH_SAMPLING).temperature
    return SpeechSampling(temperature=temperature, top_k=top_k, seed=seed) if temperature > 0 else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--manifest", help="manifest (JSONL) to evaluate on")
    data.add_argument("--store", help="or a token store made with the checkpoint's audio tokenizer")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or hub repo id")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["ASR", "AST", "TTS", "S2ST", "MT"],
        metavar="TASK",
        help='tasks or quoted chains, e.g. ASR AST TTS S2ST "ASR AST S2ST" MT',
    )
    parser.add_argument("--out", required=True, help="results folder to write")
    parser.add_argument("--corpus", help="corpus.json with held_out_voices (default: next to the manifest)")
    parser.add_argument("--max-items", type=int, metavar="N", help="first N utterances per task and language pair")
    parser.add_argument(
        "--full-pairs",
        nargs="+",
        default=[],
        metavar="PAIR",
        help="language pairs scored on ALL their rows despite --max-items, e.g. en-fr (its translation tasks, "
        "and ASR / TTS of en); a bare SRC (en): the same-language tasks of SRC only",
    )
    parser.add_argument(
        "--peer-max-items",
        type=int,
        metavar="N",
        help="the peer hears only the first N utterances per voice subset of each task and pair (its rows say n)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="DIR",
        help="training run folders (holding metrics.jsonl) whose train and per-task dev loss the report plots",
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="prompts per generate call (default 8)")
    parser.add_argument(
        "--judge",
        default="model",
        help="ASR judge of speech outputs: model (default), "
        "pocketsphinx (English only), whisper:NAME (e.g. whisper:openai/whisper-large-v3) or ctc:FOLDER "
        "(a CTC speech encoder trained apart from the model: `audiopalm tokenizer fit-ctc-units`)",
    )
    parser.add_argument(
        "--peer",
        metavar="ASR",
        help="a second ASR system on the same audio, reported beside the "
        "model: pocketsphinx (English only), whisper:NAME or ctc:FOLDER",
    )
    parser.add_argument(
        "--peer-transcripts",
        metavar="FILE",
        help="the peer's transcripts of the manifest's audio, made before by `audiopalm transcribe --judge PEER`: "
        "those files are not heard again (generated speech always is)",
    )
    add_decoding_arguments(parser)
    parser.add_argument("--no-report", action="store_true", help="do not write report.md / report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    cfg = EvalConfig(
        checkpoint=args.checkpoint,
        out=args.out,
        tasks=args.tasks,
        manifest=args.manifest,
        store=args.store,
        corpus=args.corpus,
        max_items=args.max_items,
        full_pairs=args.full_pairs,
        runs=args.runs,
        batch_size=args.batch_size,
        judge=args.judge,
        peer=args.peer,
        peer_max_items=args.peer_max_items,
        peer_transcripts=args.peer_transcripts,
        max_new_tokens=args.max_new_tokens,
        cap_speech=not args.no_speech_cap,
        speech_temperature=args.speech_temperature,
        speech_top_k=args.speech_top_k,
        num_beams=args.num_beams,
        beam_tasks=args.beam_tasks,
        seed=args.seed,
        device=args.device,
        report=not args.no_report,
        progress=not args.quiet,
    )
    summary = evaluate(cfg)  # a refused input raises: one line, exit 2 (audiopalm.errors)
    for m in summary["metrics"]:
        pair = m["src"] + (f"-{m['tgt']}" if m["tgt"] else "")
        print(f"{m['task']:<14} {pair:<6} {m['subset']:<14} {m['metric']:<22} {m['value']:8.2f}  (n={m['n']})")
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from audiopalm.errors import OneLineParser, run_command

    parser = OneLineParser(
        prog="audiopalm eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: run(args), prog="audiopalm eval", debug="--debug" in (argv or []))


if __name__ == "__main__":
    sys.exit(main())
