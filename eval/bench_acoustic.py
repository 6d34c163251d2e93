"""Benchmark of the acoustic stage: speed on one core, mel L1, intelligibility (ASR judges) and voice similarity.

    python eval/bench_acoustic.py --stage runs/acoustic/final --unit-tokenizer runs/units \\
        --train runs/corpus/train.jsonl --dev runs/corpus/dev.jsonl --out eval/results/bench_acoustic.json

On the dev split (seen voices, unseen sentences), every distinct source utterance (``--max-items``) is
decoded four ways and compared with its reference audio:

- ``reference``: the audio itself (what each judge scores on real speech: the bar to compare with);
- ``codec``: the mel_rvq codec's own round trip, all codebooks (the ceiling: Griffin-Lim on quantised mel);
- ``stage``: units -> the stage, voice prompt = another dev utterance of the same speaker;
- ``no_prompt``: units -> the stage with its stored default voice (the floor: what the prompt buys).

Measures:

- speed: real-time factor (audio seconds / compute seconds) of units -> features and of units -> wav, on
  one thread (``torch.set_num_threads(1)``), for several Griffin-Lim iteration counts;
- ``mel_l1``: mean |log-mel(output) - log-mel(reference)| (natural-log mel, per bin and 10 ms frame), with
  the output's mel re-analysed from its waveform (so Griffin-Lim's phase errors count), and ``pred_mel_l1``,
  the stage's predicted log-mel before Griffin-Lim;
- ``wer`` / ``cer`` per judge: PocketSphinx (English only; weak on espeak voices, read it against its
  reference row) and a CTC probe (``eval/probe_tokens.py``) trained here on the *train* split's reference
  audio, per language, reading the codec's first codebook: it never saw the stage's output;
- ``speaker_acc``: voice similarity, as the fraction of outputs whose mean log-mel vector is closest (cosine,
  after removing the mean over all speakers) to the centroid of the prompt speaker's *reference* dev
  utterances among all dev speakers of that language (chance: 1 / speakers), and ``speaker_cos_gap``, the
  cosine to the own speaker's centroid minus the mean cosine to the others'.

Timings on a shared CPU are noisy; the JSON records the CPU load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "eval"))  # eval/ is not a package: its scripts import each other by file name

ARMS = ("reference", "codec", "stage", "no_prompt")


def utterances(manifest: str, max_items: int | None, langs: list[str] | None) -> list[dict]:
    """Distinct source audio of a manifest (path, text, lang, speaker), manifest order, ``max_items`` per language."""
    from audiopalm.data.manifest import read_manifest

    seen: set[str | None] = set()
    per_lang: defaultdict[str, int] = defaultdict(int)
    out: list[dict] = []
    for r in read_manifest(manifest):
        if r.audio in seen or (langs and r.lang not in langs):
            continue
        if max_items and per_lang[r.lang] >= max_items:
            continue
        seen.add(r.audio)
        per_lang[r.lang] += 1
        out.append({"audio": str(r.audio), "text": r.text, "lang": r.lang, "speaker": r.speaker})
    return out


def speed(stage, units: list[torch.Tensor], settings: list[str]) -> dict:
    """Real-time factors on one thread: units -> features, and units -> wav for each decoder setting
    ``"GL:NNLS"`` (Griffin-Lim iterations : mel -> linear magnitude refinement iterations)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = sum(len(u) for u in units) / stage.frame_rate
        t = time.perf_counter()
        feats = [stage.predict_features(u[None])[0] for u in units]
        t_feat = time.perf_counter() - t
        out = {"audio_seconds": round(seconds, 2), "features_rtf": round(seconds / t_feat, 1)}
        for setting in settings:
            gl, nnls = (int(x) for x in setting.split(":"))
            t = time.perf_counter()
            wavs = [stage.synthesize(u[None], griffin_lim_iters=gl, nnls_iters=nnls) for u in units]
            out[f"wav_rtf_gl{gl}_nnls{nnls}"] = round(seconds / (time.perf_counter() - t), 1)
            # how faithfully this decoder setting realises the predicted log-mel (re-analysed from its wav)
            errs = []
            for f, w in zip(feats, wavs, strict=True):
                want = stage.codec.features_to_log_mel(f)[0]  # f: [1, F, D] -> [M, n_mels]
                got, m = stage.codec.log_mel(w)
                k = min(int(m[0]), want.shape[0])
                errs.append(float((got[0, :k] - want[:k]).abs().mean()))
            out[f"decoder_mel_l1_gl{gl}_nnls{nnls}"] = round(float(np.mean(errs)), 4)
    finally:
        torch.set_num_threads(threads)
    return out


def mean_logmel(codec, wav: np.ndarray) -> torch.Tensor:
    """Mean natural-log mel vector over all frames of a waveform [T] -> [n_mels]."""
    logmel, n = codec.log_mel(torch.from_numpy(wav)[None])
    return logmel[0, : int(n[0])].mean(0)


def voice_scores(
    vectors: dict[str, list[tuple[str, torch.Tensor, str]]],
    refs: dict[str, list[tuple[str, torch.Tensor]]],
    speakers_of_lang: dict[str, list[str]],
) -> dict:
    """Nearest-centroid speaker accuracy and cosine gap of output vectors against reference centroids."""
    out = {}
    for arm, items in vectors.items():
        hits, gaps, n = 0, [], 0
        for lang, spk_list in speakers_of_lang.items():
            cent = {s: torch.stack([v for s2, v in refs[lang] if s2 == s]).mean(0) for s in spk_list}
            mu = torch.stack(list(cent.values())).mean(0)
            cent = {s: torch.nn.functional.normalize(c - mu, dim=0) for s, c in cent.items()}
            for spk, v, _ in (x for x in items if x[0] in cent and x[2] == lang):
                v = torch.nn.functional.normalize(v - mu, dim=0)
                cos = {s: float(v @ c) for s, c in cent.items()}
                hits += max(cos, key=lambda s: cos[s]) == spk
                gaps.append(cos[spk] - np.mean([c for s, c in cos.items() if s != spk]))
                n += 1
        out[arm] = {
            "speaker_acc": round(100 * hits / max(n, 1), 1),
            "speaker_cos_gap": round(float(np.mean(gaps)), 3),
            "n": n,
        }
    return out


def train_probes(codec, train_manifest: str, langs: list[str], per_lang: int, steps: int, seed: int):
    """A CTC probe per language on the codec's first codebook of the train split's reference audio."""
    from probe_tokens import ProbeJudge, train_probe

    from audiopalm.audio import io as audio_io

    probes = {}
    for lang in langs:
        pairs = []
        for u in utterances(train_manifest, per_lang, [lang]):
            wav, _ = audio_io.load(u["audio"], codec.sample_rate)
            codes, n = codec.encode(torch.from_numpy(wav)[None], num_codebooks=1)
            pairs.append((codes[0, :, : int(n[0])].numpy().astype(np.int64), u["text"].lower()))
        model, chars, _, _ = train_probe(
            pairs, k=1, codebook_size=codec.codebook_size, steps=steps, seed=seed, progress=False
        )
        probes[lang] = (model, chars)
    return ProbeJudge(codec, probes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, help="acoustic stage folder (AcousticStage.from_pretrained)")
    p.add_argument("--unit-tokenizer", required=True, help="the unit tokenizer the stage was trained with")
    p.add_argument("--train", required=True, help="train manifest (the CTC probe judge is trained on it)")
    p.add_argument("--dev", required=True, help="dev manifest (scored)")
    p.add_argument("--langs", nargs="+", default=["en", "fr"], help="languages scored (default en fr)")
    p.add_argument("--max-items", type=int, default=100, help="dev utterances per language (default 100)")
    p.add_argument("--probe-train", type=int, default=1500, help="train utterances per language for the probe")
    p.add_argument("--probe-steps", type=int, default=600, help="CTC probe training steps (default 600)")
    p.add_argument("--speed-items", type=int, default=20, help="utterances timed (default 20)")
    p.add_argument(
        "--decoder-settings",
        nargs="+",
        default=["48:30", "16:30", "8:10", "4:0"],
        help="decoder settings timed, GL:NNLS iterations (default: 48:30 (the codec's) 16:30 8:10 4:0)",
    )
    p.add_argument(
        "--speed-only", action="store_true", help="only time; replace the 'speed' entry of an existing --out file"
    )
    p.add_argument(
        "--gl-quality",
        type=int,
        default=16,
        help="Griffin-Lim iterations of every arm's audio in the quality measures (default 16)",
    )
    p.add_argument("--no-pocketsphinx", action="store_true", help="skip the PocketSphinx judge")
    p.add_argument("--wav-out", default=None, help="write a few example wavs here (reference, codec, stage, no_prompt)")
    p.add_argument("--out", default=str(REPO / "eval/results/bench_acoustic.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from audiopalm.acoustic import AcousticStage
    from audiopalm.audio import io as audio_io
    from audiopalm.evaluation import metrics
    from audiopalm.tokenizers.base import load_audio_tokenizer

    torch.manual_seed(args.seed)
    stage = AcousticStage.from_pretrained(args.stage)
    units_tok = load_audio_tokenizer(args.unit_tokenizer)
    if units_tok.fingerprint != stage.unit_tokenizer["fingerprint"]:
        print(
            f"error: --unit-tokenizer {args.unit_tokenizer} ({units_tok.fingerprint}) is not the stage's "
            f"({stage.unit_tokenizer['fingerprint']})",
            file=sys.stderr,
        )
        return 2
    codec = stage.codec
    sr = codec.sample_rate
    items = utterances(args.dev, args.max_items, args.langs)
    print(f"[bench_acoustic] {len(items)} dev utterances ({', '.join(args.langs)})", flush=True)

    # units, reference audio and a prompt per item: another dev utterance of the same speaker (fixed order)
    by_spk = defaultdict(list)
    for i, it in enumerate(items):
        by_spk[it["speaker"]].append(i)
    for it in items:
        it["wav"] = audio_io.load(it["audio"], sr)[0]
        with torch.inference_mode():
            codes, n = units_tok.encode(torch.from_numpy(it["wav"])[None])
        it["units"] = codes[0, 0, : int(n[0])].long()
    for idx in by_spk.values():
        for k, i in enumerate(idx):
            items[i]["prompt"] = idx[(k + 1) % len(idx)] if len(idx) > 1 else None

    result: dict = {
        "stage": str(args.stage),
        "stage_config": stage.meta(),
        "dev": str(args.dev),
        "items": len(items),
        "load_avg_at_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    result["speed"] = speed(stage, [it["units"] for it in items[: args.speed_items]], args.decoder_settings)
    print(f"[bench_acoustic] speed: {result['speed']}", flush=True)
    if args.speed_only:
        old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        old["speed"], old["load_avg_at_speed"] = result["speed"], result["load_avg_at_start"]
        result = old

    if args.speed_only:
        _write(result, args.out)
        return 0
    codec.config.griffin_lim_iters = args.gl_quality  # every arm (codec ceiling included) decoded alike
    result["gl_quality_iters"] = args.gl_quality
    outputs: dict[str, list[np.ndarray]] = {a: [] for a in ARMS}
    l1: dict[str, list[float]] = {a: [] for a in ARMS if a != "reference"}
    pred_l1: dict[str, list[float]] = {"stage": [], "no_prompt": []}
    for it in items:
        ref = torch.from_numpy(it["wav"])[None]
        ref_mel, m = codec.log_mel(ref)  # [1, M, n_mels]
        codes, _ = codec.encode(ref)
        f = min(len(it["units"]), codes.shape[2])
        units = it["units"][None, :f]
        prompt = items[it["prompt"]]["wav"] if it["prompt"] is not None else None
        outputs["reference"].append(it["wav"])
        outputs["codec"].append(codec.decode(codes)[0].numpy())
        for arm, kw in (("stage", {"voice_wav": prompt} if prompt is not None else {}), ("no_prompt", {})):
            feats, lengths = stage.predict_features(units, **kw)
            wav = stage.features_to_wav(feats, lengths)[0].numpy()
            outputs[arm].append(wav)
            pm = codec.features_to_log_mel(feats)[0]  # [f * stack, n_mels]
            k = min(pm.shape[0], int(m[0]))
            pred_l1[arm].append(float((pm[:k] - ref_mel[0, :k]).abs().mean()))
        for arm in l1:
            out_mel, om = codec.log_mel(torch.from_numpy(outputs[arm][-1])[None])
            k = min(int(om[0]), int(m[0]))
            l1[arm].append(float((out_mel[0, :k] - ref_mel[0, :k]).abs().mean()))
    arms: dict[str, dict[str, Any]] = {a: {} for a in ARMS}
    for a in l1:
        arms[a]["mel_l1"] = round(float(np.mean(l1[a])), 4)
    for a in pred_l1:
        arms[a]["pred_mel_l1"] = round(float(np.mean(pred_l1[a])), 4)
    print(f"[bench_acoustic] mel L1: { {a: arms[a].get('mel_l1') for a in ARMS} }", flush=True)

    # voice similarity against the reference centroids of the dev speakers
    vecs = {
        a: [(it["speaker"], mean_logmel(codec, w), it["lang"]) for it, w in zip(items, outputs[a], strict=True)]
        for a in ARMS
    }
    refs = defaultdict(list)
    for it, w in zip(items, outputs["reference"], strict=True):
        refs[it["lang"]].append((it["speaker"], mean_logmel(codec, w)))
    spk_of_lang = {lang: sorted({s for s, _ in refs[lang]}) for lang in refs}
    for a, v in voice_scores(vecs, refs, spk_of_lang).items():
        arms[a].update(v)
    result["speakers_per_language"] = {lang: len(s) for lang, s in spk_of_lang.items()}
    result["arms"] = arms
    _write(result, args.out)  # the judges take minutes: keep what is measured so far

    # intelligibility: judges per language
    judges = {}
    t = time.perf_counter()
    judges["ctc-probe"] = train_probes(codec, args.train, args.langs, args.probe_train, args.probe_steps, args.seed)
    result["probe_train_s"] = round(time.perf_counter() - t, 1)
    if not args.no_pocketsphinx:
        from audiopalm.evaluation.judges import make_judge

        try:
            judges["pocketsphinx"] = make_judge("pocketsphinx")
        except Exception as e:  # not installed: say so, score the rest
            result["pocketsphinx_error"] = str(e)
    for name, judge in judges.items():
        for lang in args.langs:
            if name == "pocketsphinx" and lang != "en":
                continue
            idx = [i for i, it in enumerate(items) if it["lang"] == lang]
            refs_txt = [items[i]["text"] for i in idx]
            for a in ARMS:
                hyps = judge.transcribe([outputs[a][i] for i in idx], sr, lang)
                arms[a][f"wer[{name},{lang}]"] = round(metrics.wer(refs_txt, hyps, lang).value, 1)
                arms[a][f"cer[{name},{lang}]"] = round(metrics.cer(refs_txt, hyps, lang).value, 1)
        print(
            f"[bench_acoustic] judge {name}: "
            + json.dumps({a: {k: v for k, v in arms[a].items() if name in k} for a in ARMS}),
            flush=True,
        )
    result["arms"] = arms
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.wav_out:
        out = Path(args.wav_out)
        for i in range(min(3, len(items))):
            for a in ARMS:
                audio_io.save(out / f"{Path(items[i]['audio']).stem}.{a}.wav", outputs[a][i], sr)
    _write(result, args.out)
    return 0


def _write(result: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{out}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"[bench_acoustic] wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
