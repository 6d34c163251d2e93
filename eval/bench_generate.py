"""Benchmark generation: KV-cached vs uncached decoding, against the hardware's limits; where a decode's time goes;
the cost of the segment constraint; LM calls per second of generated speech.

    python eval/bench_generate.py --quick --out runs/bench_generate.json     # < 1 minute on 2 CPU cores
    python eval/bench_generate.py --out runs/bench_generate.json --device cuda

The model is a random Llama of the stage-0 size (recipes/configs/pretrain_text.yaml: hidden 256,
4 layers, 4 heads, SwiGLU 688, 4096 text tokens) extended with an audio vocabulary (``--codebooks`` x 256
codes, flatten pattern). The workload is a TTS output of exactly ``--tokens`` audio tokens (500 by
default: 10 s of 2-codebook audio at 25 frames/s): a logits processor forbids ``<|audio_end|>``,
``<|sep|>`` and eos, so every run decodes the same number of tokens, with greedy search.

Measured in one run, at batch sizes 1 and 8 (``--batch-sizes``), each the best of ``--repeats`` timed runs
after one warm-up (1 torch thread by default):

- ``cached_tokens_per_s``: generated tokens / s with the KV cache (``use_cache=True``), constrained;
  ``static_cache_tokens_per_s``: the same with ``cache_implementation="static"`` (a preallocated cache),
  whose greedy output is checked to equal the dynamic cache's (``static_cache_same_output``);
- ``uncached_tokens_per_s``: the same with ``use_cache=False`` (each step re-runs the whole sequence), at the
  batch sizes of ``--uncached-batch-sizes`` (default 1) and the full length (``--quick``: the first
  ``--uncached-tokens`` tokens only, since its cost grows with length: the figure is then an upper bound
  for the full length, and the JSON says so); ``speedup_cache`` = cached / uncached at batch 1;
- ``limits`` (batch 1): the compute limit, the matmul peak (fp32 ``torch.matmul`` of two square
  ``--peak-size`` matrices, best of the measurements taken before each batch size) over 2 x N FLOPs per
  token (N: parameters, a tied embedding / lm_head once); and the weight-streaming limit: one
  ``[1, H] x [H, N / H]`` product (every weight read once, as a batch-1 step must, in a single call with no
  per-layer overhead), measured the same way. Batch-1 decoding of a small model is bound by the second;
- ``profile`` (batch 1, ``--no-profile`` to skip): one constrained decode under cProfile, its time split
  into the model's forward (of which torch's operators, of which ``linear``; the rest is the modelling
  code's Python), the logits processors (the segment constraint among them) and ``generate``'s own loop
  (input preparation, cache bookkeeping, stopping criteria); cProfile inflates Python-heavy parts, so read
  the shares, not the seconds;
- ``speech_output``: LM decoder calls per second of generated speech: a codec's K codebooks at 25 frames/s
  flattened (K x 25) before the acoustic stage, one semantic-unit stream (25) after it, and what
  multi-token prediction (m tokens per call) would leave; with the measured batch-1 decode rate, the LM
  seconds per second of speech;
- ``constrained_overhead_fraction``: (time with :class:`~audiopalm.inference.generation.SegmentConstraint` -
  time without) / time without, cached; process CPU time on CPU (wall time there also counts waiting
  for a core on a shared machine, which swings by +-20%: ``constrained_overhead_fraction_wall``), wall
  time on GPU. Goal: under 0.05. ``constraint_time_fraction`` is the wall time spent inside the
  processor's ``__call__`` over the whole constrained run, a direct cross-check;
- ``sampled_tokens_per_s`` and ``speech_sampler_overhead_fraction``: the same constrained run with the
  default speech sampling (:class:`~audiopalm.inference.generation.SpeechSampler`, the pipeline's
  ``SPEECH_SAMPLING``: a generator per row, one draw per row and step), its cost over the greedy
  constrained run measured like the constraint's, and ``sampler_time_fraction``, the wall time inside the
  sampler's ``__call__`` over the sampled run (the low-noise figure).

Headline numbers in the JSON are at batch 1 (the goal's setting); ``per_batch`` holds every batch size.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import inspect
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from audiopalm.data.tasks import prompt_ids
from audiopalm.data.vocab import UnifiedVocab
from audiopalm.inference.generation import SegmentConstraint, SpeechSampler, split_segments
from audiopalm.modeling.extend import extend_model

FRAME_RATE = 25.0  # frames per second of both the mel_rvq codec and the semantic units (docs/acoustic_stage.md)
MULTI_TOKEN = (2, 3, 4)  # tokens per decoder call a multi-token-prediction head would give (projection only)


def _bench_train():
    """eval/bench_train.py as a module (the matmul peak is measured there; eval/ is not a package)."""
    name = "_audiopalm_eval_bench_train"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent / "bench_train.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def weight_stream_flops(n_params: int, hidden: int, *, reps: int = 5) -> tuple[float, float]:
    """FLOP/s of one ``[1, hidden] x [hidden, n_params / hidden]`` fp32 product (each weight read once, as in a
    batch-1 decoding step, with no per-layer call overhead), best of ``reps``: (per wall second, per CPU second)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, hidden, generator=g), torch.randn(hidden, n_params // hidden, generator=g)  # [1,H] [H,N/H]
    torch.matmul(x, w)
    best_wall = best_cpu = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(10):
            torch.matmul(x, w)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    flops = 10 * 2 * hidden * (n_params // hidden)
    return flops / best_wall, flops / max(best_cpu, 1e-9)


def text_tokenizer(size: int = 4096):
    """A word-level HF fast tokenizer with ``size`` tokens (the stage-0 vocabulary size; no training needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    words = "the a dog cat sleeps runs [TTS English] . , le chien dort".replace("[", " [ ").replace("]", " ] ").split()
    for w in words + [f"w{i}" for i in range(size)]:
        if len(vocab) >= size:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def build(codebooks: int, device: str):
    """Stage-0-sized random Llama extended with ``codebooks`` x 256 audio tokens; returns (model, vocab)."""
    torch.manual_seed(0)
    vocab = UnifiedVocab.build(text_tokenizer(), codebook_size=256, num_codebooks=codebooks, pattern="flatten")
    cfg = transformers.LlamaConfig(
        vocab_size=len(vocab.tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    model = extend_model(transformers.LlamaForCausalLM(cfg), vocab).to(device).eval()
    return model, vocab


class ForbidEnd(transformers.LogitsProcessor):
    """Forbid every way to finish (``<|audio_end|>``, ``<|sep|>``, eos), so the length is exactly max_new_tokens."""

    def __init__(self, vocab: UnifiedVocab):
        self.ids = [vocab.audio_end_id, vocab.sep_id, vocab.eos_id]

    def __call__(self, input_ids, scores):
        scores[:, self.ids] = float("-inf")
        return scores


class Timed(transformers.LogitsProcessor):
    """A logits processor that adds up the wall time spent in the wrapped one's ``__call__`` (a low-noise
    cross-check of the difference between whole runs)."""

    def __init__(self, inner: transformers.LogitsProcessor):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def generate_once(
    model,
    vocab,
    prompt: list[int],
    batch: int,
    new_tokens: int,
    *,
    use_cache: bool,
    constrained: bool,
    sampled: bool = False,
    cache_implementation: str | None = None,
    compile_config=None,
) -> tuple[float, float, torch.Tensor, float]:
    """One greedy run of exactly ``new_tokens`` (``sampled``: with the default speech sampling); returns
    (wall seconds, process CPU seconds, ids [B, P + N], wall seconds inside the constraint, or inside the
    sampler when ``sampled``)."""
    from audiopalm.inference.pipeline import SPEECH_SAMPLING

    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt] * batch, device=device)  # [B, P]
    procs = transformers.LogitsProcessorList([ForbidEnd(vocab)])
    timed = None
    if constrained:
        constraint = SegmentConstraint(vocab, "TTS", input_ids.shape[1], model.get_output_embeddings().weight.shape[0])
        timed = Timed(constraint)
        procs.append(timed)
        if sampled:
            timed = Timed(SpeechSampler(constraint, SPEECH_SAMPLING, [prompt] * batch))
            procs.append(timed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=use_cache,
            logits_processor=procs,
            pad_token_id=vocab.pad_id,
            eos_token_id=vocab.eos_id,
            cache_implementation=cache_implementation,
            **({} if compile_config is None else {"compile_config": compile_config}),
        )  # [B, P + N]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out.shape == (batch, len(prompt) + new_tokens), (out.shape, batch, len(prompt), new_tokens)
    return seconds, cpu, out, 0.0 if timed is None else timed.seconds


def profile_decode(model, vocab, prompt: list[int], new_tokens: int) -> dict:
    """One constrained batch-1 decode under cProfile; the time split described in the module docstring."""
    prof = cProfile.Profile()
    prof.enable()
    generate_once(model, vocab, prompt, 1, new_tokens, use_cache=True, constrained=True)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}

    def code_key(fn) -> tuple[str, int, str]:
        code = inspect.unwrap(fn).__code__
        return code.co_filename, code.co_firstlineno, code.co_name

    def cum(fn) -> float:
        return stats.get(code_key(fn), (0, 0, 0.0, 0.0))[3]

    total = cum(generate_once)
    forward = cum(type(model).forward)
    processors = cum(transformers.LogitsProcessorList.__call__)
    constraint = cum(SegmentConstraint.__call__)
    # torch's operators (builtins named torch.* or tensor methods): kernels plus their dispatch; under the
    # model's forward nearly all of them, elsewhere (processors, argmax, cat of the ids) a few
    ops = sum(v[2] for (f, _, name), v in stats.items() if f == "~" and "torch" in name)
    linear = sum(v[2] for (f, _, name), v in stats.items() if f == "~" and name.endswith("torch._C._nn.linear>"))
    calls = sum(v[1] for v in stats.values())
    share = {
        "model_forward": forward / total,
        "logits_processors": processors / total,
        "segment_constraint": constraint / total,
        "generate_loop_rest": (total - forward - processors) / total,
        "torch_operators_all": ops / total,
        "linear": linear / total,
        "python_not_torch_operators": (total - ops) / total,
    }
    return {
        "seconds_under_profiler": round(total, 3),
        "new_tokens": new_tokens,
        "python_function_calls_per_token": round(calls / new_tokens, 1),
        "share": {k: round(v, 4) for k, v in share.items()},
    }


def compiled_decode(model, vocab, prompt: list[int], new_tokens: int, repeats: int, reference: torch.Tensor) -> dict:
    """Batch-1 decoding with the static cache and transformers' own compiled step (torch.compile, inductor;
    transformers compiles only on accelerators unless told, hence the flag it documents for testing on CPU):
    the first call's seconds (compilation included), the best of ``repeats`` after it, and whether the ids equal
    the eager dynamic-cache run's ``reference`` [1, P + N]."""
    from transformers.generation.configuration_utils import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    config._compile_all_devices = True  # type: ignore[assignment]  # typed None in transformers; True is its switch
    kw: dict[str, Any] = dict(use_cache=True, constrained=True, cache_implementation="static", compile_config=config)
    t_first, _, ids, _ = generate_once(model, vocab, prompt, 1, new_tokens, **kw)
    same = torch.equal(ids, reference)
    t_best = c_best = float("inf")
    for _ in range(repeats):
        t, c, ids, _ = generate_once(model, vocab, prompt, 1, new_tokens, **kw)
        t_best, c_best, same = min(t_best, t), min(c_best, c), same and torch.equal(ids, reference)
    torch._dynamo.reset()  # the profiled run after this one is eager
    return {
        "tokens_per_s": round(new_tokens / t_best, 1),
        "tokens_per_cpu_s": round(new_tokens / c_best, 1),
        "first_call_seconds": round(t_first, 2),
        "same_output": same,
    }


def speech_output(batch1_tokens_per_s: float, codebooks: int, acoustic_rtf: float | None) -> dict:
    """LM decoder calls per second of generated speech (and, at the measured batch-1 rate, LM seconds per second
    of speech): the codec's ``codebooks`` streams flattened, one semantic-unit stream (the acoustic stage's input),
    and one stream with ``m`` tokens per call."""
    rows = {f"codec_k{codebooks}_flatten": FRAME_RATE * codebooks, "units_acoustic_stage": FRAME_RATE}
    rows.update({f"units_multi_token_{m}": FRAME_RATE / m for m in MULTI_TOKEN})
    return {
        "frame_rate": FRAME_RATE,
        "decoder_calls_per_audio_s": rows,
        "lm_seconds_per_audio_s_at_batch1": {k: round(v / batch1_tokens_per_s, 4) for k, v in rows.items()},
        "acoustic_stage_rtf": acoustic_rtf,
        "note": "the acoustic stage is one non-autoregressive network call per utterance plus Griffin-Lim, not "
        "per frame; acoustic_stage_rtf: seconds of audio per second of its compute, from "
        "eval/results/bench_acoustic.json (the default 20:0 decoder, 1 thread)",
    }


def run_bench(
    *,
    tokens: int,
    uncached_tokens: int,
    batch_sizes: list[int],
    uncached_batch_sizes: list[int],
    repeats: int,
    codebooks: int,
    device: str,
    peak_size: int = 2048,
    profile: bool = True,
    compiled: bool = False,
) -> dict:
    bench_train = _bench_train()
    load_before = os.getloadavg()
    model, vocab = build(codebooks, device)
    n_params = sum(p.numel() for p in model.parameters())
    hidden = model.config.hidden_size
    prompt = prompt_ids({"lang": "en", "text": "the dog sleeps ."}, "TTS", vocab)
    new = tokens + 1  # <|audio_start|> + the audio tokens
    peaks: list[tuple[float, float]] = []
    streams: list[tuple[float, float]] = []
    per_batch: dict[str, dict[str, Any]] = {}
    for b in batch_sizes:
        # measured before every batch size, the best kept: other load on the machine only slows them down
        peaks.append(bench_train.matmul_peak_flops(peak_size, reps=3))
        streams.append(weight_stream_flops(n_params, hidden))
        generate_once(model, vocab, prompt, b, 32, use_cache=True, constrained=True)  # warm-up
        generate_once(model, vocab, prompt, b, 32, use_cache=True, constrained=True, cache_implementation="static")
        # the variants alternate, so a load change on the machine hits them alike
        t_con = t_free = t_smp = t_sta = c_con = c_free = c_smp = c_sta = in_proc = in_smp = float("inf")
        same_static = True
        for _ in range(repeats):
            t, c, out, inside = generate_once(model, vocab, prompt, b, new, use_cache=True, constrained=True)
            if t < t_con:
                t_con, in_proc = t, inside
            c_con = min(c_con, c)
            t, c, static_out, _ = generate_once(
                model, vocab, prompt, b, new, use_cache=True, constrained=True, cache_implementation="static"
            )
            t_sta, c_sta = min(t_sta, t), min(c_sta, c)
            same_static = same_static and torch.equal(static_out, out)
            t, c, _, _ = generate_once(model, vocab, prompt, b, new, use_cache=True, constrained=False)
            t_free, c_free = min(t_free, t), min(c_free, c)
            t, c, sampled, inside = generate_once(
                model, vocab, prompt, b, new, use_cache=True, constrained=True, sampled=True
            )
            if t < t_smp:
                t_smp, in_smp = t, inside
            c_smp = min(c_smp, c)
        # on a CPU shared with other work, process CPU time is what the decoding itself cost (wall time
        # also counts waiting for a core); on a GPU the host CPU time is not the cost, so use wall time
        con, free, smp = (c_con, c_free, c_smp) if device == "cpu" else (t_con, t_free, t_smp)
        for ids in (out, sampled):
            codes = split_segments(ids[0, len(prompt) :].tolist(), "TTS", vocab)[0]  # the constraint held: [k, F]
            assert isinstance(codes, torch.Tensor), codes
            assert codes.shape == (codebooks, tokens // codebooks), codes.shape
        row: dict[str, Any] = {
            "cached_tokens_per_s": round(b * new / t_con, 1),
            "cached_tokens_per_cpu_s": round(b * new / c_con, 1),
            "static_cache_tokens_per_s": round(b * new / t_sta, 1),
            "static_cache_tokens_per_cpu_s": round(b * new / c_sta, 1),
            "static_cache_same_output": same_static,
            "cached_unconstrained_tokens_per_s": round(b * new / t_free, 1),
            "constrained_overhead_fraction": round((con - free) / free, 4),
            "constrained_overhead_fraction_wall": round((t_con - t_free) / t_free, 4),
            "constraint_time_fraction": round(in_proc / t_con, 4),
            "sampled_tokens_per_s": round(b * new / t_smp, 1),
            "speech_sampler_overhead_fraction": round((smp - con) / free, 4),
            "sampler_time_fraction": round(in_smp / t_smp, 4),
            "seconds": {
                "cached_constrained": round(t_con, 4),
                "cached_static": round(t_sta, 4),
                "cached_unconstrained": round(t_free, 4),
                "inside_constraint": round(in_proc, 4),
                "cpu_cached_constrained": round(c_con, 4),
                "cpu_cached_static": round(c_sta, 4),
                "cpu_cached_unconstrained": round(c_free, 4),
                "cached_sampled": round(t_smp, 4),
                "cpu_cached_sampled": round(c_smp, 4),
            },
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        if b in uncached_batch_sizes:
            n_unc = min(new, uncached_tokens)
            t_unc = c_unc = float("inf")
            for _ in range(repeats):
                t, c, _, _ = generate_once(model, vocab, prompt, b, n_unc, use_cache=False, constrained=True)
                t_unc, c_unc = min(t_unc, t), min(c_unc, c)
            row.update(
                {
                    "uncached_tokens_per_s": round(b * n_unc / t_unc, 1),
                    "uncached_tokens_per_cpu_s": round(b * n_unc / c_unc, 1),
                    "uncached_tokens_timed": n_unc,
                    # the same length on both sides: a cached run of the first n_unc tokens
                    "speedup_cache": round(t_unc / (t_con * n_unc / new), 2) if n_unc == new else None,
                }
            )
            row["seconds"].update(
                {"uncached_constrained": round(t_unc, 4), "cpu_uncached_constrained": round(c_unc, 4)}
            )
        per_batch[str(b)] = row
        if b == min(batch_sizes):
            out_batch1 = out
        print(f"batch {b}: {row}", file=sys.stderr)
    peak, peak_cpu = max(p[0] for p in peaks), max(p[1] for p in peaks)
    stream, stream_cpu = max(p[0] for p in streams), max(p[1] for p in streams)
    head_b = min(batch_sizes)
    head = per_batch[str(head_b)]
    compute_limit = peak / (2 * n_params)  # tokens/s
    stream_limit = stream / (2 * n_params)
    limits = {
        "matmul_peak_flops": round(peak),
        "matmul_peak_flops_per_cpu_s": round(peak_cpu),
        "matmul_peak_size": peak_size,
        "weight_stream_flops": round(stream),
        "weight_stream_flops_per_cpu_s": round(stream_cpu),
        "flops_per_token": 2 * n_params,
        "compute_limit_tokens_per_s": round(compute_limit, 1),
        "weight_stream_limit_tokens_per_s": round(stream_limit, 1),
        "batch1_fraction_of_compute_limit": round(head["cached_tokens_per_s"] / compute_limit, 4),
        "batch1_fraction_of_compute_limit_cpu_time": round(
            head["cached_tokens_per_cpu_s"] / (peak_cpu / (2 * n_params)), 4
        ),
        "batch1_fraction_of_weight_stream_limit": round(head["cached_tokens_per_s"] / stream_limit, 4),
    }
    acoustic = Path(__file__).resolve().parent / "results" / "bench_acoustic.json"
    acoustic_rtf = None
    if acoustic.is_file():
        acoustic_rtf = json.loads(acoustic.read_text()).get("settings", {}).get("20:0", {}).get("rtf")
    result = {
        "cached_tokens_per_s": head["cached_tokens_per_s"],
        "static_cache_tokens_per_s": head["static_cache_tokens_per_s"],
        "uncached_tokens_per_s": head.get("uncached_tokens_per_s"),
        "speedup_cache": head.get("speedup_cache"),
        "constrained_overhead_fraction": head["constrained_overhead_fraction"],
        "constraint_time_fraction": head["constraint_time_fraction"],
        "sampled_tokens_per_s": head["sampled_tokens_per_s"],
        "speech_sampler_overhead_fraction": head["speech_sampler_overhead_fraction"],
        "sampler_time_fraction": head["sampler_time_fraction"],
        "headline_batch_size": head_b,
        "limits": limits,
        "per_batch": per_batch,
        "speech_output": speech_output(head["cached_tokens_per_s"], codebooks, acoustic_rtf),
    }
    if compiled:
        result["compiled"] = compiled_decode(model, vocab, prompt, new, repeats, out_batch1)
    if profile:
        result["profile"] = profile_decode(model, vocab, prompt, new)
    result["setup"] = {
        "audio_tokens": tokens,
        "uncached_tokens_timed": min(new, uncached_tokens),
        "uncached_is_upper_bound": uncached_tokens < new,
        "uncached_batch_sizes": uncached_batch_sizes,
        "codebooks": codebooks,
        "codebook_size": 256,
        "model": "random Llama, hidden 256, 4 layers, 4 heads, 4096 text tokens (stage-0 size)",
        "parameters": n_params,
        "vocab_size": len(vocab),
        "repeats": repeats,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one timed run each, uncached on 40 tokens, 1 thread (< 1 min on 2 CPU cores)",
    )
    parser.add_argument("--tokens", type=int, default=500, help="audio tokens per output (default 500)")
    parser.add_argument(
        "--uncached-tokens", type=int, help="time uncached decoding on this many tokens (default: all; --quick: 40)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--uncached-batch-sizes", type=int, nargs="+", default=[1], help="batch sizes timed uncached too (default 1)"
    )
    parser.add_argument("--peak-size", type=int, help="side of the matmul that measures the peak (default 2048)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled batch-1 decode")
    parser.add_argument(
        "--compile", action="store_true", help="also time batch 1 with the static cache and a compiled step"
    )
    parser.add_argument("--repeats", type=int, help="timed runs per setting, best kept (default 3; --quick: 1)")
    parser.add_argument("--codebooks", type=int, default=2, help="audio codebooks in the vocabulary (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default on CPU: 1, since a small model gains nothing from more and threads spin "
        "on a busy machine; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.tokens < args.codebooks or args.tokens % args.codebooks:
        parser.error(f"--tokens {args.tokens} must be a positive multiple of --codebooks {args.codebooks}")
    repeats = args.repeats or (1 if args.quick else 3)
    uncached = args.uncached_tokens or (40 if args.quick else args.tokens + 1)
    result = run_bench(
        tokens=args.tokens,
        uncached_tokens=uncached,
        batch_sizes=args.batch_sizes,
        uncached_batch_sizes=[b for b in args.uncached_batch_sizes if b in args.batch_sizes],
        repeats=repeats,
        peak_size=args.peak_size or (1024 if args.quick else 2048),
        profile=not args.no_profile,
        compiled=args.compile,
        codebooks=args.codebooks,
        device=args.device,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
