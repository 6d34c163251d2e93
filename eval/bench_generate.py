"""Benchmark generation: KV-cached vs uncached decoding speed, and the cost of the segment constraint.

    python eval/bench_generate.py --quick --out runs/bench_generate.json     # < 1 minute on 2 CPU cores
    python eval/bench_generate.py --out runs/bench_generate.json --device cuda

The model is a random Llama of the stage-0 size (recipes/configs/pretrain_text.yaml: hidden 256,
4 layers, 4 heads, SwiGLU 688, 4096 text tokens) extended with an audio vocabulary (``--codebooks`` x 256
codes, flatten pattern). The workload is a TTS output of exactly ``--tokens`` audio tokens (500 by
default: 10 s of 2-codebook audio at 25 frames/s): a logits processor forbids ``<|audio_end|>``,
``<|sep|>`` and eos, so every run decodes the same number of tokens, with greedy search.

Measured in one run, at batch sizes 1 and 8 (``--batch-sizes``), each the best of ``--repeats`` timed runs
after one warm-up:

- ``cached_tokens_per_s``: generated tokens / s with the KV cache (``use_cache=True``), constrained;
- ``uncached_tokens_per_s``: the same with ``use_cache=False`` (each step re-runs the whole sequence;
  ``--quick`` times it on the first ``--uncached-tokens`` tokens only, since its cost grows with length:
  the figure is then an upper bound for the full length, and the JSON says so);
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

Headline numbers in the JSON are at the largest batch size; ``per_batch`` holds every one.
"""

from __future__ import annotations

import argparse
import json
import platform
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
        )  # [B, P + N]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out.shape == (batch, len(prompt) + new_tokens), (out.shape, batch, len(prompt), new_tokens)
    return seconds, cpu, out, 0.0 if timed is None else timed.seconds


def run_bench(
    *, tokens: int, uncached_tokens: int, batch_sizes: list[int], repeats: int, codebooks: int, device: str
) -> dict:
    model, vocab = build(codebooks, device)
    prompt = prompt_ids({"lang": "en", "text": "the dog sleeps ."}, "TTS", vocab)
    new = tokens + 1  # <|audio_start|> + the audio tokens
    per_batch: dict[str, dict[str, Any]] = {}
    for b in batch_sizes:
        generate_once(model, vocab, prompt, b, 32, use_cache=True, constrained=True)  # warm-up
        # constrained and unconstrained runs alternate, so a load change on the machine hits both alike
        t_con = t_free = t_smp = c_con = c_free = c_smp = in_proc = in_smp = float("inf")
        for _ in range(repeats):
            t, c, out, inside = generate_once(model, vocab, prompt, b, new, use_cache=True, constrained=True)
            if t < t_con:
                t_con, in_proc = t, inside
            c_con = min(c_con, c)
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
        n_unc = min(new, uncached_tokens)
        t_unc = min(
            generate_once(model, vocab, prompt, b, n_unc, use_cache=False, constrained=True)[0] for _ in range(repeats)
        )
        per_batch[str(b)] = {
            "cached_tokens_per_s": round(b * new / t_con, 1),
            "cached_unconstrained_tokens_per_s": round(b * new / t_free, 1),
            "uncached_tokens_per_s": round(b * n_unc / t_unc, 1),
            "uncached_tokens_timed": n_unc,
            "constrained_overhead_fraction": round((con - free) / free, 4),
            "constrained_overhead_fraction_wall": round((t_con - t_free) / t_free, 4),
            "constraint_time_fraction": round(in_proc / t_con, 4),
            "sampled_tokens_per_s": round(b * new / t_smp, 1),
            "speech_sampler_overhead_fraction": round((smp - con) / free, 4),
            "sampler_time_fraction": round(in_smp / t_smp, 4),
            "seconds": {
                "cached_constrained": round(t_con, 4),
                "cached_unconstrained": round(t_free, 4),
                "uncached_constrained": round(t_unc, 4),
                "inside_constraint": round(in_proc, 4),
                "cpu_cached_constrained": round(c_con, 4),
                "cpu_cached_unconstrained": round(c_free, 4),
                "cached_sampled": round(t_smp, 4),
                "cpu_cached_sampled": round(c_smp, 4),
            },
        }
        print(f"batch {b}: {per_batch[str(b)]}", file=sys.stderr)
    head = per_batch[str(max(batch_sizes))]
    return {
        "cached_tokens_per_s": head["cached_tokens_per_s"],
        "uncached_tokens_per_s": head["uncached_tokens_per_s"],
        "constrained_overhead_fraction": head["constrained_overhead_fraction"],
        "constraint_time_fraction": head["constraint_time_fraction"],
        "sampled_tokens_per_s": head["sampled_tokens_per_s"],
        "speech_sampler_overhead_fraction": head["speech_sampler_overhead_fraction"],
        "sampler_time_fraction": head["sampler_time_fraction"],
        "headline_batch_size": max(batch_sizes),
        "speedup_cache": round(head["cached_tokens_per_s"] / head["uncached_tokens_per_s"], 2),
        "per_batch": per_batch,
        "setup": {
            "audio_tokens": tokens,
            "uncached_tokens_timed": min(new, uncached_tokens),
            "uncached_is_upper_bound": uncached_tokens < new,
            "codebooks": codebooks,
            "codebook_size": 256,
            "model": "random Llama, hidden 256, 4 layers, 4 heads, 4096 text tokens (stage-0 size)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(vocab),
            "repeats": repeats,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.processor() or platform.machine(),
        },
    }


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
    parser.add_argument("--repeats", type=int, help="timed runs per setting, best kept (default 3; --quick: 1)")
    parser.add_argument("--codebooks", type=int, default=2, help="audio codebooks in the vocabulary (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; --quick on CPU: 1, "
        "since a tiny model gains nothing from more and threads spin on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.threads or (args.quick and args.device == "cpu"):
        torch.set_num_threads(args.threads or 1)
    if args.tokens < args.codebooks or args.tokens % args.codebooks:
        parser.error(f"--tokens {args.tokens} must be a positive multiple of --codebooks {args.codebooks}")
    repeats = args.repeats or (1 if args.quick else 3)
    uncached = args.uncached_tokens or (40 if args.quick else args.tokens + 1)
    result = run_bench(
        tokens=args.tokens,
        uncached_tokens=uncached,
        batch_sizes=args.batch_sizes,
        repeats=repeats,
        codebooks=args.codebooks,
        device=args.device,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
