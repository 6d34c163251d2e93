"""Stage 0: train a small Llama-architecture text LM from scratch on the corpus text.

The offline stand-in for a hub LLM (Llama, Gemma...): with no hub, the AudioPaLM recipe extends
*this* model with audio tokens. With a hub, skip this stage and give the AudioPaLM recipe a model name.

Launch (see audiopalm/recipes/configs/pretrain_text.yaml and audiopalm/recipes/accelerate/*.yaml)::

    accelerate launch --config_file "$(audiopalm train --list-accelerate cpu)" -m audiopalm.recipes.pretrain_text \\
        --config pretrain_text data.manifests=[corpus/manifest.jsonl]

Features:

- Corpus: ``text`` and ``tgt_text`` of manifest records in ``data.train_splits`` (dev split for the
  dev loss; other splits, e.g. test, are never read), rendered as plain sentences (``mono``) and as
  translation pairs ``[MT English French] src -> tgt`` (``mt``), de-duplicated, each line wrapped
  in ``<s> ... </s>``, concatenated and cut into blocks of ``data.seq_len`` tokens; every token is a
  target.
- Text tokenizer: trained on the training lines first (byte-level BPE) unless
  ``data.tokenizer`` names one.
- Model: ``LlamaConfig`` sized by ``model.*``, vocabulary padded to a multiple of 64.
- AdamW (no decay on norms/biases/embeddings, optional per-name LRs), cosine schedule with linear
  warm-up, gradient clipping, gradient accumulation, bf16 where supported (fp32 on CPU), optional
  gradient checkpointing.
- The loss of a step is the sum of token losses over all micro-batches and processes divided by
  their target tokens: the same number for any process count / accumulation split of a global batch.
- The data order is a pure function of (seed, step): 1 process and N processes see the same global
  batches; resuming needs only the step.
- Checkpoints every ``train.save_every`` steps, written atomically, newest ``train.keep_last`` kept;
  ``--resume`` (or ``train.resume=true``) continues bit-for-bit from the newest one.
- Final save in HF format (safetensors) in ``output_dir/final``: plain
  ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it.
- Logs: a tqdm bar (loss, tokens/s, ETA) on the main process, ``metrics.jsonl`` (step, loss, lr,
  tokens/s, dev loss/perplexity), TensorBoard through accelerate's trackers, ``summary.json``.
- Checks that the process count accelerate set up is the one launched (``WORLD_SIZE``), so a
  launcher that silently falls back to independent single processes fails loudly.
"""

from __future__ import annotations

import math
import sys

import torch

from audiopalm import training
from audiopalm.config import PretrainTextConfig
from audiopalm.data.manifest import read_manifest
from audiopalm.training.recipe import LossSum, Recipe


class PretrainTextRecipe(Recipe):
    """Stage-0 text LM pre-training."""

    name, config_class = "pretrain_text", PretrainTextConfig
    last_dev: dict = {}

    def _render_lines(self, split_kind: str) -> list[str]:
        """Corpus lines of the train or dev records, in manifest order, de-duplicated."""
        from audiopalm.data.tasks import parse_task
        from audiopalm.data.vocab import SPECIAL_TOKENS

        d = self.cfg.data
        mt, sep = parse_task("MT"), SPECIAL_TOKENS["sep"]
        lines: list[str] = []
        for path in d.manifests:
            for rec in read_manifest(path):
                is_train = rec.split is None or rec.split in d.train_splits
                is_dev = rec.split == d.dev_split
                if (split_kind == "train" and not is_train) or (split_kind == "dev" and not is_dev):
                    continue
                if "mono" in d.include:
                    lines.append(rec.text)
                    if rec.tgt_text:
                        lines.append(rec.tgt_text)
                if "mt" in d.include and rec.tgt_text and rec.tgt_lang:
                    # the MT prompt of audiopalm.data.tasks, so the fine-tune's MT task starts from text the LM knows
                    lines.append(f"{mt.tag(rec.lang, rec.tgt_lang)} {rec.text}{sep}{rec.tgt_text}")
        return list(dict.fromkeys(lines))

    def _pack(self, lines: list[str]) -> torch.Tensor:
        """Lines -> ``<s> line </s>`` token stream -> blocks.  # [N, seq_len]"""
        tok, L = self.tokenizer, self.cfg.data.seq_len
        ids = tok(lines, add_special_tokens=False)["input_ids"] if lines else []
        stream = []
        for x in ids:
            stream += [tok.bos_token_id, *x, tok.eos_token_id]
        n = len(stream) // L
        return torch.tensor(stream[: n * L], dtype=torch.long).view(n, L)

    def build_data(self) -> None:
        from pathlib import Path

        from transformers import AutoTokenizer

        from audiopalm.data.text_tokenizer import train_text_tokenizer

        d, acc = self.cfg.data, self.accelerator
        if not d.manifests:
            raise ValueError("data.manifests: empty; give data.manifests=[path/to/manifest.jsonl]")
        train_lines = self._render_lines("train")
        if not train_lines:
            raise ValueError(
                f"data.manifests: no records in splits {d.train_splits} (or without split) in {d.manifests}"
            )
        tok_dir = d.tokenizer
        if tok_dir is None:
            tok_dir = str(self.out / "tokenizer")
            with acc.main_process_first():
                if acc.is_main_process and not (self.cfg.train.resume and Path(tok_dir, "tokenizer.json").is_file()):
                    train_text_tokenizer(train_lines, tok_dir, vocab_size=d.vocab_size, model=d.tokenizer_model)
        self.tokenizer = self.checkpoint_tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise ValueError(f"data.tokenizer: {tok_dir} has no {name[:-3]}; it must define bos, eos and pad")
        self.train_blocks = self._pack(train_lines)  # [N, L]
        if len(self.train_blocks) == 0:
            raise ValueError(
                f"data.seq_len: the corpus ({len(train_lines)} lines) is shorter than one block of {d.seq_len}"
            )
        self.dev_sets = [("text", list(self._pack(self._render_lines("dev"))))]  # M blocks [L]
        self.sampler = training.StepSampler(len(self.train_blocks), self.global_batch, seed=self.cfg.train.seed)
        self.log(
            f"{len(train_lines)} train lines -> {len(self.train_blocks)} blocks of {d.seq_len} "
            f"({self.train_blocks.numel()} tokens); dev: {len(self.dev_sets[0][1])} blocks; "
            f"tokenizer {tok_dir} ({len(self.tokenizer)} tokens); "
            f"{self.cfg.train.max_steps} steps = {self.sampler.epoch_of(self.cfg.train.max_steps):.1f} epochs"
        )

    def build_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, LlamaConfig

        m, tok = self.cfg.model, self.tokenizer
        vocab = math.ceil(len(tok) / 64) * 64  # a multiple of 64: faster matmuls, and room for later tokens
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_heads,
            num_key_value_heads=m.num_kv_heads,
            max_position_embeddings=max(m.max_position_embeddings, self.cfg.data.seq_len),
            rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
            attention_dropout=m.dropout,
            tie_word_embeddings=m.tie_word_embeddings,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(self.cfg.train.seed)
        self.log(f"Llama {m.num_layers} layers x {m.hidden_size}, vocab {vocab}")
        return AutoModelForCausalLM.from_config(config)

    def micro_batches(self) -> tuple[list[dict], int]:
        tr = self.cfg.train
        gidx = self.sampler.global_indices(self.step)
        micros = [
            {
                "input_ids": self.train_blocks[
                    training.StepSampler.micro_batch(
                        gidx, m, self.rank, micro_batch_size=tr.micro_batch_size, world_size=self.world
                    )
                ]
            }
            for m in range(tr.grad_accum_steps)
        ]  # each [B, L]
        targets = training.global_sum(self.accelerator, sum(training.count_targets(x["input_ids"]) for x in micros))
        return micros, int(targets)

    def forward_loss(self, batch: dict) -> LossSum:
        x = batch["input_ids"].to(self.accelerator.device)  # [B, L]: every token is a target
        with self.accelerator.autocast():
            logits = self.model(input_ids=x).logits  # [B, L, V]
        return LossSum(training.token_loss_sum(logits, x), training.count_targets(x), x.numel())

    def collate_dev(self, items: list) -> dict:
        return {"input_ids": torch.stack(items)}  # [b, L]

    def epoch(self) -> float:
        return self.sampler.epoch_of(self.step)

    def resume_checks(self) -> dict:
        return {"num_blocks": len(self.train_blocks)}

    def summary_extra(self) -> dict:
        return {"dev_ppl": training.perplexity(self.last_dev["all"]) if self.last_dev else None}

    def evaluate(self) -> dict[str, float]:
        self.last_dev = super().evaluate()
        return self.last_dev

    def card(self, summary: dict) -> dict:
        d, m = self.cfg.data, self.cfg.model
        langs: set[str] = set()
        pairs: set[str] = set()
        for path in d.manifests:
            for rec in read_manifest(path):
                if rec.split is None or rec.split in d.train_splits:
                    langs.update(x for x in (rec.lang, rec.tgt_lang) if x)
                    if rec.tgt_lang and rec.tgt_text:
                        pairs.add(f"{rec.lang}-{rec.tgt_lang}")
        tasks = {"LM": sorted(langs)}
        if "mt" in d.include and pairs:
            tasks["MT"] = sorted(pairs)
        return {
            "title": "audiopalm stage-0 text LM",
            "summary": f"A {m.num_layers}-layer Llama-architecture text LM ({self.num_params / 1e6:.1f}M parameters) "
            "trained from scratch on the corpus text by the audiopalm `pretrain_text` recipe: the offline stand-in "
            "for a hub LLM, which the `finetune_audiopalm` recipe then extends with audio tokens.",
            "tasks": tasks,
            "tags": ["text-generation"],
            "load_code": "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            'model = AutoModelForCausalLM.from_pretrained("REPO_OR_FOLDER")\n'
            'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")',
        }


def main(argv: list[str] | None = None) -> int:
    return PretrainTextRecipe.main(argv)


if __name__ == "__main__":
    sys.exit(main())
