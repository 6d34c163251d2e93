"""Benchmark of the acoustic stage's units -> waveform path: speed on one core and intelligibility, per decoder setting.

    OMP_NUM_THREADS=1 python eval/bench_acoustic.py --stage runs/exp/acoustic/final --units runs/exp/units \\
        --judge runs/exp/judge --manifest runs/exp/corpus/dev.jsonl --out eval/results/bench_acoustic.json

Every distinct utterance of the manifest (``audio`` + ``text`` and ``tgt_audio`` + ``tgt_text``; ``--max-items``
per language) is turned into its own units by the stage's unit tokenizer (``--units``, a ``ctc_units`` folder)
and spoken again by the stage, the voice prompt being the utterance itself (as ``eval/resynth_units.py``: an
upper bound on the voice). Each decoder setting ``GL:NNLS[:INIT]`` (Griffin-Lim iterations, mel -> magnitude
refinement iterations, Griffin-Lim's starting phase: ``phase_gradient`` (default) or ``random``) decodes the
same predicted features, and is scored by:

- ``rtf``: real-time factor (audio seconds / compute seconds) of units -> wav on one thread
  (``torch.set_num_threads(1)``), over all utterances, with its parts in milliseconds per second of audio:
  ``network_ms`` (voice prompt -> voice embedding, units -> features), ``magnitude_ms`` (log-mel -> linear
  magnitude), ``griffin_lim_ms``;
- ``wer`` / ``cer`` per language and pooled, by the CTC judge (``--judge``, an encoder trained apart from the
  unit tokenizer's; ``CTCJudge`` with its lexicon), beside the judge's score on the reference audio itself;
  optionally (``--pocketsphinx``) PocketSphinx on English;
- ``decoder_mel_l1``: mean |log-mel re-analysed from the wav - the stage's predicted log-mel| (natural log,
  per bin and 10 ms frame): what the decoder loses of what the network asked for.

Two more rows, at the stage's own decoder settings: ``codec`` (the reference audio through the codec, all
codebooks, and its decoder: the ceiling, what the stage would reach with perfect features) and
``default_voice`` (the stage without the prompt, with its stored voice: what the prompt adds).

Each setting's parts are timed on the same items, one after another, in one process. On a shared CPU the
timings follow the load (the JSON records the load average before and after): rows of one run can differ by
~20% from load changes alone, and runs compare only at equal load. ``--profile`` adds one utterance's breakdown (each STFT / inverse STFT
of a Griffin-Lim iteration). A few minutes on one core for the default 4 x 100 dev utterances.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_SETTINGS = ["48:30:random", "48:30", "32:0", "20:0", "20:0:random", "16:10", "8:0", "4:0"]


def utterances(manifest: str, max_items: int | None, langs: list[str] | None) -> list[dict]:
    """Distinct utterances of a manifest (source and target sides): {audio, text, lang}, manifest order,
    at most ``max_items`` per language."""
    from audiopalm.data.manifest import read_manifest

    seen: set[str] = set()
    per_lang: dict[str, int] = {}
    out: list[dict] = []
    for r in read_manifest(manifest):
        for audio, text, lang in ((r.audio, r.text, r.lang), (r.tgt_audio, r.tgt_text, r.tgt_lang)):
            if audio is None or not text or not lang or str(audio) in seen or (langs and lang not in langs):
                continue
            if max_items and per_lang.get(lang, 0) >= max_items:
                continue
            seen.add(str(audio))
            per_lang[lang] = per_lang.get(lang, 0) + 1
            out.append({"audio": str(audio), "text": text, "lang": lang})
    return out


def parse_setting(setting: str) -> tuple[int, int, str]:
    """``"GL:NNLS[:INIT]"`` -> (griffin_lim_iters, nnls_iters, init)."""
    parts = setting.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--settings {setting!r}: expected GL:NNLS or GL:NNLS:INIT, e.g. 16:10 or 16:10:random")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else "phase_gradient"


def profile_one(stage, units: torch.Tensor, prompt: torch.Tensor, gl: int, nnls: int, reps: int = 5) -> dict:
    """One utterance's units -> wav broken into parts, milliseconds (best of ``reps``; one thread), at the decoder
    setting ``gl`` : ``nnls``, with NNLS 10 and one STFT / inverse STFT (framed here, and torch's) beside."""
    from audiopalm.tokenizers.mel_rvq import _FramedSTFT

    codec = stage.codec
    c = codec.config

    def best(fn):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(1e3 * min(times), 2)

    feats, lengths = stage.predict_features(units, voice_wav=prompt)
    logmel = codec.features_to_log_mel(feats)  # [1, M, n_mels]
    mag = codec.log_mel_to_magnitude(logmel, nnls_iters=nnls)  # [1, n_freq, M]
    m = mag.shape[2]
    stft = _FramedSTFT(codec.window, c.n_fft, c.hop_length, m * c.hop_length)
    spec = stft.forward(torch.randn(1, m * c.hop_length))  # [1, M + 1, n_freq]
    out = {
        "audio_s": round(m * c.hop_length / c.sample_rate, 2),
        "stft_frames": m + 1,
        "n_fft": c.n_fft,
        "hop": c.hop_length,
        "network_ms": best(lambda: stage.predict_features(units, voice_wav=prompt)),
        "network_default_voice_ms": best(lambda: stage.predict_features(units)),
        "magnitude_ms": best(lambda: codec.log_mel_to_magnitude(logmel, nnls_iters=nnls)),
        "magnitude_nnls10_ms": best(lambda: codec.log_mel_to_magnitude(logmel, nnls_iters=10)),
        "stft_ms": best(lambda: stft.forward(torch.randn(1, m * c.hop_length))),
        "istft_ms": best(lambda: stft.inverse(spec)),
        "torch_stft_ms": best(
            lambda: torch.stft(
                torch.randn(1, m * c.hop_length),
                c.n_fft,
                c.hop_length,
                c.win_length,
                codec.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
        ),
        "torch_istft_ms": best(
            lambda: torch.istft(
                spec.transpose(1, 2),
                c.n_fft,
                c.hop_length,
                c.win_length,
                codec.window,
                center=True,
                length=m * c.hop_length,
            )
        ),
        "griffin_lim_1_ms": best(lambda: codec.griffin_lim(mag, iters=1)),
        f"griffin_lim_{gl}_ms": best(lambda: codec.griffin_lim(mag, iters=gl)),
    }
    out["griffin_lim_per_iteration_ms"] = round((out[f"griffin_lim_{gl}_ms"] - out["griffin_lim_1_ms"]) / (gl - 1), 3)
    out["total_ms"] = round(out["network_ms"] + out["magnitude_ms"] + out[f"griffin_lim_{gl}_ms"], 2)
    out["rtf"] = round(1e3 * out["audio_s"] / out["total_ms"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, help="acoustic stage folder (AcousticStage.from_pretrained)")
    p.add_argument("--units", required=True, help="the unit tokenizer folder the stage speaks (ctc_units)")
    p.add_argument("--judge", required=True, help="CTC judge folder (a saved speech encoder, CTCJudge)")
    p.add_argument("--manifest", required=True, help="manifest whose utterances are resynthesised (dev)")
    p.add_argument("--langs", nargs="+", default=None, help="languages scored (default: all of the manifest)")
    p.add_argument("--max-items", type=int, default=100, help="utterances per language (default 100)")
    p.add_argument(
        "--settings",
        nargs="+",
        default=DEFAULT_SETTINGS,
        help=f"decoder settings GL:NNLS[:INIT] (default: {' '.join(DEFAULT_SETTINGS)})",
    )
    p.add_argument("--pocketsphinx", action="store_true", help="also score English with PocketSphinx")
    p.add_argument("--profile", action="store_true", help="add one utterance's time breakdown")
    p.add_argument("--out", default=str(REPO / "eval/results/bench_acoustic.json"))
    args = p.parse_args(argv)

    from audiopalm.acoustic import AcousticStage
    from audiopalm.audio import io as audio_io
    from audiopalm.evaluation import metrics
    from audiopalm.evaluation.judges import make_judge
    from audiopalm.tokenizers.base import load_audio_tokenizer

    torch.set_num_threads(1)
    settings = [parse_setting(s) for s in args.settings]
    stage = AcousticStage.from_pretrained(args.stage)
    units_tok = load_audio_tokenizer(args.units)
    if units_tok.fingerprint != stage.unit_tokenizer["fingerprint"]:
        print(
            f"error: --units {args.units} ({units_tok.fingerprint}) is not the stage's unit tokenizer "
            f"({stage.unit_tokenizer['fingerprint']})",
            file=sys.stderr,
        )
        return 2
    codec = stage.codec
    sr = codec.sample_rate
    items = utterances(args.manifest, args.max_items, args.langs)
    langs = sorted({it["lang"] for it in items})
    print(f"[bench_acoustic] {len(items)} utterances ({', '.join(langs)})", flush=True)
    result: dict = {
        "stage": str(args.stage),
        "units": str(args.units),
        "judge": str(args.judge),
        "manifest": str(args.manifest),
        "items": {lang: sum(it["lang"] == lang for it in items) for lang in langs},
        "threads": torch.get_num_threads(),
        "stage_decoder_defaults": {"griffin_lim_iters": stage.griffin_lim_iters, "nnls_iters": stage.nnls_iters},
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }

    # units, then the network once per utterance (timed); every decoder setting reuses its features
    network_s, audio_s, feats = 0.0, 0.0, []
    for it in tqdm(items, desc="units + network"):
        it["wav"] = torch.from_numpy(audio_io.load(it["audio"], sr)[0])
        with torch.inference_mode():
            codes, n = units_tok.encode(it["wav"][None])
        units = codes[0, 0, : int(n[0])][None]  # [1, F]
        t = time.perf_counter()
        f, _ = stage.predict_features(units, voice_wav=it["wav"])  # [1, F, D]
        network_s += time.perf_counter() - t
        feats.append(f)
        audio_s += units.shape[1] / stage.frame_rate
        it["units"] = units
    result["audio_s"] = round(audio_s, 1)
    result["network_rtf"] = round(audio_s / network_s, 1)

    judge = make_judge("ctc", model=str(args.judge))
    sphinx = make_judge("pocketsphinx") if args.pocketsphinx else None

    def score(wavs: list[np.ndarray]) -> dict:
        row: dict = {}
        refs_all, hyps_all = [], []
        for lang in langs:
            idx = [i for i, it in enumerate(items) if it["lang"] == lang]
            refs = [items[i]["text"] for i in idx]
            hyps = judge.transcribe([wavs[i] for i in idx], sr, lang)
            row[f"wer[{lang}]"] = round(metrics.wer(refs, hyps, lang).value, 1)
            row[f"cer[{lang}]"] = round(metrics.cer(refs, hyps, lang).value, 1)
            if sphinx is not None and lang == "en":
                ps = sphinx.transcribe([wavs[i] for i in idx], sr, lang)
                row["wer[pocketsphinx,en]"] = round(metrics.wer(refs, ps, lang).value, 1)
            refs_all += [metrics.normalize(r, lang) for r in refs]
            hyps_all += [metrics.normalize(h, lang) for h in hyps]
        row["wer"] = round(metrics.wer(refs_all, hyps_all, normalized=False).value, 1)
        row["cer"] = round(metrics.cer(refs_all, hyps_all, normalized=False).value, 1)
        return row

    result["reference"] = score([it["wav"].numpy() for it in items])
    print(f"[bench_acoustic] reference audio: {result['reference']}", flush=True)
    rows = {}
    for setting, (gl, nnls, init) in zip(args.settings, settings, strict=True):
        mag_s, gl_s, wavs, l1 = 0.0, 0.0, [], []
        for f in tqdm(feats, desc=f"decode {setting}"):
            logmel = codec.features_to_log_mel(f)  # [1, M, n_mels]
            t = time.perf_counter()
            mag = codec.log_mel_to_magnitude(logmel, nnls_iters=nnls)  # [1, n_freq, M]
            t2 = time.perf_counter()
            wav = codec.griffin_lim(mag, iters=gl, init=init)  # [1, M * hop]
            t3 = time.perf_counter()
            mag_s, gl_s = mag_s + t2 - t, gl_s + t3 - t2
            again, _ = codec.log_mel(wav)  # [1, M', n_mels]
            k = min(again.shape[1], logmel.shape[1])
            l1.append(float((again[0, :k] - logmel[0, :k]).abs().mean()))
            wavs.append(wav[0].numpy())
        if init == "phase_gradient":  # the bench decodes as the stage does: check it on one item
            lengths = torch.tensor([feats[0].shape[1]])
            same = stage.features_to_wav(feats[0], lengths, griffin_lim_iters=gl, nnls_iters=nnls)[0].numpy()
            assert np.allclose(same, wavs[0], atol=1e-5), f"{setting}: the bench's decode differs from the stage's"
        total = network_s + mag_s + gl_s
        row = {
            "rtf": round(audio_s / total, 1),
            "network_ms": round(1e3 * network_s / audio_s, 2),
            "magnitude_ms": round(1e3 * mag_s / audio_s, 2),
            "griffin_lim_ms": round(1e3 * gl_s / audio_s, 2),
            "decoder_mel_l1": round(float(np.mean(l1)), 4),
        }
        row.update(score(wavs))
        rows[setting] = row
        print(f"[bench_acoustic] {setting}: {row}", flush=True)
    result["settings"] = rows
    gl, nnls = stage.griffin_lim_iters, stage.nnls_iters
    codec_wavs, default_wavs = [], []
    for it in tqdm(items, desc="codec and default-voice rows"):
        codes, _ = codec.encode(it["wav"][None])
        codec_wavs.append(codec.decode(codes, griffin_lim_iters=gl, nnls_iters=nnls)[0].numpy())
        default_wavs.append(stage.synthesize(it["units"])[0].numpy())
    result["codec"] = score(codec_wavs)
    result["default_voice"] = score(default_wavs)
    print(f"[bench_acoustic] codec: {result['codec']}; default voice: {result['default_voice']}", flush=True)
    if args.profile:
        gl, nnls = stage.griffin_lim_iters, stage.nnls_iters
        longest = max(range(len(items)), key=lambda i: items[i]["units"].shape[1])
        result["profile_one_utterance"] = profile_one(stage, items[longest]["units"], items[longest]["wav"], gl, nnls)
        print(f"[bench_acoustic] profile: {result['profile_one_utterance']}", flush=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(result, args.out)
    return 0


def _write(result: dict, out: str) -> None:
    """Write the JSON atomically (temp + rename)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{out}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"[bench_acoustic] wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
