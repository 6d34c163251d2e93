"""Speech-Llama: train a speech encoder + projector in front of a frozen text LLM with LoRA (ASR, AST).

Fathullah et al., arXiv 2307.11795: the comparison path to AudioPaLM. The LLM reads audio *embeddings*
(log-mel -> encoder -> stacked frames -> MLP) followed by the task tag and the target text; its weights
stay frozen, LoRA (r=8, alpha=16 on q/k/v/o) adapts it, encoder and projector train from scratch.

Launch (see audiopalm/recipes/configs/finetune_speech_llama.yaml and audiopalm/recipes/accelerate/*.yaml)::

    audiopalm train finetune_speech_llama --config finetune_speech_llama \\
        model.llm=runs/demo/text_lm/final data.train_manifests=[runs/demo/corpus/train.jsonl] \\
        data.dev_manifest=runs/demo/corpus/dev.jsonl [ctc.steps=200] [--resume]

Features:

- Data: the same manifests as the AudioPaLM path (``audiopalm synth``), audio read with
  :func:`audiopalm.audio.io.load`; log-mel features are computed once per wav and kept in memory.
  Each row gives an ASR example (once per source clip) and an AST example (when it has a
  translation); the prompt is the task tag of :mod:`audiopalm.data.tasks` (``[ASR English]``).
- Batches: a pure function of (seed, step) through :class:`audiopalm.training.StepSampler`, split
  into micro-batches and processes the same way for any process count.
- Optional CTC pre-training of the encoder (``ctc.steps``) over the LLM tokenizer's ids.
- AdamW with cosine schedule, gradient clipping and accumulation; the loss of a step is the sum of
  target-token losses over all micro-batches and processes divided by their target tokens.
- Checkpoints every ``train.save_every`` steps (atomic, newest ``train.keep_last`` kept): the model
  as :meth:`SpeechLlama.save_pretrained` writes it (LoRA adapter + encoder/projector safetensors),
  optimizer, scheduler and RNG; ``--resume`` continues bit-for-bit.
- Final save in ``output_dir/final`` (model + the LLM's tokenizer; ``audiopalm eval --checkpoint``
  and :class:`audiopalm.inference.speech_llama_pipeline.SpeechLlamaPipeline` load it), ``summary.json``,
  ``metrics.jsonl`` (loss, lr, LLM positions/s, dev loss per task), tqdm bar.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiopalm import training
from audiopalm.config import FinetuneSpeechLlamaConfig
from audiopalm.modeling.speech_llama_data import FeatureCache, build_examples
from audiopalm.training.recipe import LossSum, Recipe


def _local_or_hub(name: str) -> str:
    """An existing local folder as an absolute path (so a saved run finds its LLM from anywhere), else a hub name."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


class FinetuneSpeechLlamaRecipe(Recipe):
    """Encoder + projector + LoRA on a frozen LLM."""

    name, config_class = "finetune_speech_llama", FinetuneSpeechLlamaConfig

    # ---- data and model -----------------------------------------------------------------------------------------------

    def build_data(self) -> None:
        from transformers import AutoTokenizer

        from audiopalm.data.manifest import read_manifest

        d = self.cfg.data
        self.llm_name = _local_or_hub(self.cfg.model.llm)
        self.tokenizer = self.checkpoint_tokenizer = AutoTokenizer.from_pretrained(self.llm_name)
        if not d.train_manifests:
            raise ValueError("data.train_manifests: empty; give data.train_manifests=[path/to/train.jsonl]")
        # the model does not exist yet: features are computed (by its front end) on first use
        self.features = FeatureCache(
            lambda wavs: self.accelerator.unwrap_model(self.model).featurize(wavs),
            self.cfg.model.sample_rate,
            d.max_seconds,
        )
        self.skips: Counter = Counter()
        records = [r for path in d.train_manifests for r in read_manifest(path)]
        self.examples = build_examples(records, d.tasks, self.skips, self.features)
        missing = [t for t in d.tasks if not any(e["task"] == t for e in self.examples)]
        if missing:
            raise ValueError(
                f"data.tasks: task(s) {missing} have no training examples in {d.train_manifests}; "
                f"left out: {dict(self.skips)}"
            )
        self.sampler = training.StepSampler(len(self.examples), self.global_batch, seed=self.cfg.train.seed)
        if d.dev_manifest and d.dev_examples_per_task:
            dev = build_examples(read_manifest(d.dev_manifest), d.tasks, Counter(), self.features)
            self.dev_sets = [(t, [e for e in dev if e["task"] == t][: d.dev_examples_per_task]) for t in d.tasks]
        counts = Counter(e["task"] for e in self.examples)
        self.log(
            f"{len(self.examples)} training examples ({dict(counts)}), dev "
            f"{ {t: len(x) for t, x in self.dev_sets} }" + (f"; left out: {dict(self.skips)}" if self.skips else "")
        )

    def build_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        from audiopalm.modeling.speech_llama import SpeechLlama

        config = dataclasses.replace(
            self.cfg.model, llm=self.llm_name, ctc_vocab_size=len(self.tokenizer) if self.cfg.ctc.steps else 0
        )
        torch.manual_seed(self.cfg.train.seed)
        # fp32 master weights; accelerate's autocast runs the matmuls in bf16 where enabled
        model = SpeechLlama(config, AutoModelForCausalLM.from_pretrained(self.llm_name, dtype=torch.float32))
        self.counts = model.parameter_counts()
        self.log(
            f"{self.llm_name}: LLM {self.counts['llm'] / 1e6:.2f}M (LoRA {self.counts['lora'] / 1e3:.1f}k), encoder "
            f"{self.counts['encoder'] / 1e6:.2f}M, projector {self.counts['projector'] / 1e6:.2f}M; "
            f"{model.seconds_per_embedding * 1000:.0f} ms of audio per LLM embedding"
        )
        return model

    def checkpointed_module(self) -> torch.nn.Module:
        return self.model.llm

    def before_prepare(self) -> None:
        for e in tqdm(
            self.examples, desc="log-mel features", disable=not self.accelerator.is_main_process, leave=False
        ):
            self.features.get(e["audio"])
        if self.step == 0 and self.cfg.ctc.steps:
            self.ctc_pretrain()
        if self.model.ctc_head is not None:  # only for pre-training; unused (and so frozen) in the main loop
            self.model.ctc_head.requires_grad_(False)

    # ---- CTC pre-training ---------------------------------------------------------------------------------------------

    def ctc_pretrain(self) -> None:
        """``ctc.steps`` AdamW steps of the encoder + CTC head on ASR examples (targets: the LLM tokenizer's ids)."""
        asr = [e for e in self.examples if e["task"] == "ASR"]
        if not asr:
            raise ValueError("ctc.steps > 0 needs ASR examples (data.tasks has no ASR)")
        model = self.model.to(self.accelerator.device)  # in place: the main optimizer keeps its parameters
        params = list(model.encoder.parameters()) + list(model.ctc_head.parameters())
        opt = torch.optim.AdamW(params, lr=self.cfg.ctc.lr)
        sampler = training.StepSampler(len(asr), self.cfg.train.micro_batch_size, seed=self.cfg.train.seed + 1)
        model.train()
        bar = tqdm(range(self.cfg.ctc.steps), desc="ctc pre-training", disable=not self.accelerator.is_main_process)
        for step in bar:
            batch = [asr[i] for i in sampler.global_indices(step)]
            feats, lengths = self.features.batch([e["audio"] for e in batch])  # [B, F, n_mels]
            ids = [self.tokenizer(e["target"], add_special_tokens=False)["input_ids"] for e in batch]
            t_len = torch.tensor([len(x) for x in ids])
            targets = torch.zeros(len(ids), int(t_len.max()), dtype=torch.long)  # [B, U]
            for i, x in enumerate(ids):
                targets[i, : len(x)] = torch.tensor(x)
            loss = model.ctc_loss(feats.to(self.accelerator.device), lengths, targets, t_len)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip or float("inf"))
            opt.step()
            bar.set_postfix(ctc=f"{loss.item():.3f}")
            if step % self.cfg.train.log_every == 0 or step == self.cfg.ctc.steps - 1:
                self.metrics.write({"step": 0, "ctc_step": step + 1, "ctc_loss": loss.item()})
        self.log(f"CTC pre-training: {self.cfg.ctc.steps} steps, last loss {loss.item():.4f}")

    # ---- steps --------------------------------------------------------------------------------------------------------

    def _batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Features ``[B, F, n_mels]`` + lengths ``[B]`` and prompt+target ids/mask/labels ``[B, L]``."""
        from audiopalm.modeling.speech_llama import encode_text

        feats, lengths = self.features.batch([e["audio"] for e in examples])
        text = encode_text(self.tokenizer, [e["prompt"] for e in examples], [e["target"] for e in examples])
        return {"feats": feats, "feat_lengths": lengths, **text}

    def _num_targets(self, examples: list[dict]) -> int:
        """Target tokens (target text + eos) of some examples."""
        from audiopalm.modeling.speech_llama import encode_text

        labels = encode_text(self.tokenizer, [e["prompt"] for e in examples], [e["target"] for e in examples])["labels"]
        return int((labels != training.IGNORE_INDEX).sum())

    def micro_batches(self) -> tuple[list[dict], int]:
        tr = self.cfg.train
        rows = self.sampler.global_indices(self.step)

        def examples(m: int, rank: int) -> list[dict]:
            idx = training.StepSampler.micro_batch(
                rows, m, rank, micro_batch_size=tr.micro_batch_size, world_size=self.world
            )
            return [self.examples[i] for i in idx]

        # every process can count the whole step's target tokens from the text alone: no communication
        global_targets = sum(
            self._num_targets(examples(m, r)) for r in range(self.world) for m in range(tr.grad_accum_steps)
        )
        return [self._batch(examples(m, self.rank)) for m in range(tr.grad_accum_steps)], global_targets

    def forward_loss(self, batch: dict) -> LossSum:
        acc = self.accelerator
        with acc.autocast():
            out = self.model(
                batch["feats"].to(acc.device),
                batch["feat_lengths"],
                batch["input_ids"].to(acc.device),
                attention_mask=batch["attention_mask"].to(acc.device),
                labels=batch["labels"].to(acc.device),
            )
        return LossSum(
            training.token_loss_sum(out.logits, out.labels),
            training.count_targets(out.labels),
            int(out.attention_mask.sum()),
        )  # LLM positions: audio embeddings + text

    def collate_dev(self, items: list) -> dict:
        return self._batch(items)

    def epoch(self) -> float:
        return self.sampler.epoch_of(self.step)

    # ---- state --------------------------------------------------------------------------------------------------------

    def resume_checks(self) -> dict:
        return {"examples": len(self.examples), "tasks": self.cfg.data.tasks}

    def write_model(self, folder: Path, state_dict: dict | None) -> None:
        """:meth:`SpeechLlama.save_pretrained`: LoRA adapter + encoder/projector safetensors (no base LLM: a
        resumable checkpoint; the run has its base)."""
        self.accelerator.unwrap_model(self.model).save_pretrained(folder, state_dict=state_dict, copy_base=False)

    def write_final(self, folder: Path, state_dict: dict | None) -> None:
        """``final/``: as a checkpoint, plus a copy of a local base LLM (a hub one is referenced), so the folder
        loads elsewhere with nothing else; the tokenizer beside."""
        self.accelerator.unwrap_model(self.model).save_pretrained(folder, state_dict=state_dict, copy_base=None)
        self.tokenizer.save_pretrained(folder)  # (checkpoint_tokenizer: the same object, typed Optional by the base)

    def card(self, summary: dict) -> dict:
        from audiopalm.data.sources import is_local, source_of
        from audiopalm.modeling.card import LIBRARY

        c = self.cfg.model
        return {
            "title": "audiopalm Speech-Llama model",
            "summary": "Speech-Llama (arXiv 2307.11795): a speech encoder "
            f"(`{c.encoder}`) and a projector in front of a frozen LLM with LoRA (r={c.lora_r}, on "
            f"{', '.join(c.lora_target_modules)}), trained by the audiopalm `finetune_speech_llama` recipe. "
            + (
                "The base LLM is a hub model, referenced (not copied)."
                if self.cfg.model.llm and not is_local(self.cfg.model.llm)
                else "The base LLM was a local folder; a copy of it is in `llm/`."
            ),
            "library_name": LIBRARY,
            "base_model": self.cfg.model.llm,
            "base_source": source_of(self.cfg.model.llm),
            "tasks": {t: sorted({e["lang"] for e in self.examples if e["task"] == t}) for t in self.cfg.data.tasks},
            "load_code": "from audiopalm import SpeechLlamaPipeline\n"
            'model = SpeechLlamaPipeline.from_pretrained("FOLDER")  # huggingface_hub.snapshot_download(REPO) first\n'
            'text = model.asr("speech.wav", lang="en").text',
        }

    def load_model_state(self, ckpt: Path) -> None:
        from safetensors.torch import load_model

        from audiopalm.modeling.extend import load_adapter_weights
        from audiopalm.modeling.speech_llama import ADAPTER_DIR, WEIGHTS_NAME

        load_model(self.model._speech_modules(), str(ckpt / WEIGHTS_NAME), strict=True)
        if self.model.config.lora_r > 0:
            load_adapter_weights(self.model.llm, ckpt / ADAPTER_DIR / "adapter_model.safetensors")

    def summary_extra(self) -> dict:
        return {
            "parameter_counts": self.counts,
            "seconds_per_embedding": self.accelerator.unwrap_model(self.model).seconds_per_embedding,
            "ctc_steps": self.cfg.ctc.steps,
            "skips": dict(self.skips),
        }


def main(argv: list[str] | None = None) -> int:
    return FinetuneSpeechLlamaRecipe.main(argv)


if __name__ == "__main__":
    sys.exit(main())
