"""AudioPaLM: extend a pretrained text LM with audio tokens and fine-tune it on a weighted task mixture.

AudioPaLM (arXiv 2306.12925): the text decoder is kept; its embedding and output projection grow by
one row per audio code (and a few special tokens); the model is then trained on ASR / AST / TTS /
S2ST / MT examples written as ``[TASK Lang Lang] input <|sep|> target``, loss on the target only.

Launch (see audiopalm/recipes/configs/finetune_audiopalm.yaml and audiopalm/recipes/accelerate/*.yaml)::

    accelerate launch --config_file "$(audiopalm train --list-accelerate cpu)" -m audiopalm.recipes.finetune_audiopalm \\
        --config finetune_audiopalm lora.enabled=true

Features:

- Model: a HF causal LM by hub name or local path (the stage-0 model of -m audiopalm.recipes.pretrain_text
  offline), or ``model.from_scratch: true`` (random init of the same config: the "text init vs
  random" ablation). Vocabulary = text tokenizer + ``k`` codebooks of the audio tokenizer through a
  codebook pattern (:class:`audiopalm.data.vocab.UnifiedVocab`); new rows start at the mean of the text
  rows or at zero (:func:`audiopalm.modeling.extend.extend_model`).
- Data: token stores made by the model's audio tokenizer (a store with another fingerprint is
  refused). Each ``data.tasks`` entry (task or chain, weight, language / pair filters) becomes one
  source of a deterministic, resumable :class:`audiopalm.data.batching.TaskMixture`. Rows lacking a field
  the task needs are left out and counted; examples longer than ``data.max_len`` are skipped and
  counted (never truncated); the skip summary is printed and saved. ASR/TTS sources are
  de-duplicated by source audio / text by default (the synthetic corpus repeats each source
  utterance once per target language).
- Batches: examples packed into rows of ``data.max_len``, best fit over a pool of open rows
  (:class:`audiopalm.data.batching.PackedBatches`; block-diagonal attention through restarting
  ``position_ids``; the model is called with ``use_cache=False`` and no attention mask),
  or padded (``data.packing=false``). Every process builds the same global batch stream and takes
  its own rows, so 1 and N processes (and any accumulation split) see identical global batches.
- Full fine-tune, or LoRA (``lora.enabled``) on ``lora.target_modules`` with the new rows trained
  through peft's ``trainable_token_indices`` (text rows stay bit-identical) or ``modules_to_save``.
  Per-name LRs through ``optim.group_lrs`` (e.g. ``{trainable_tokens: 1e-3}`` for the new rows
  under LoRA).
- AdamW, cosine schedule with warm-up, gradient clipping and accumulation, bf16 where supported,
  optional gradient checkpointing. The loss of a step is the sum of target-token losses over all
  micro-batches and processes divided by their target tokens.
- Checkpoints every ``train.save_every`` steps (atomic, newest ``train.keep_last`` kept);
  ``--resume`` continues bit-for-bit (weights or adapter, optimizer, scheduler, RNG, batch stream).
- Final save in ``output_dir/final`` with :func:`audiopalm.modeling.extend.save_checkpoint` (plain
  ``AutoModelForCausalLM`` / ``AutoTokenizer`` load it; ``audiopalm.json`` and the audio tokenizer
  beside). LoRA runs also write the peft adapter in ``output_dir/adapter``; ``final`` is merged.
- Logs: tqdm bar (loss, tokens/s, ETA), ``metrics.jsonl`` (loss, lr, tokens/s, dev loss per task),
  TensorBoard through accelerate's trackers, ``summary.json`` (wall time, tokens, trainable
  parameters, skips).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from audiopalm import training
from audiopalm.config import ConfigError, FinetuneAudioPaLMConfig, TaskEntry
from audiopalm.data.batching import (
    MixtureSource,
    PackedBatches,
    PaddedBatches,
    PaddingCollator,
    RowCache,
    StoreRows,
    TaskMixture,
    UnitNoise,
    nearest_units,
)
from audiopalm.data.tasks import TaskSpec, parse_task, render
from audiopalm.data.vocab import language_key
from audiopalm.training.recipe import LossSum, Recipe

# Store columns that hold plain metadata (read once to filter rows), and the column that says whether a code
# field is present in a row.
META_COLUMNS = ("id", "lang", "text", "audio", "tgt_lang", "tgt_text", "tgt_audio", "split")
PRESENCE = {"audio_codes": "audio", "tgt_audio_codes": "tgt_audio"}
BASE_DIR = "base"
"""LoRA runs: ``output_dir/base``, the extended (untrained) base model the adapter applies to."""


class FinetuneAudioPaLMRecipe(Recipe):
    """Vocabulary extension + task-mixture fine-tuning."""

    name, config_class = "finetune_audiopalm", FinetuneAudioPaLMConfig

    def build_data(self) -> None:
        self._setup_vocab()
        self._setup_data()

    def _setup_vocab(self) -> None:
        """Audio tokenizer + text tokenizer -> the unified vocabulary (the one place ids are computed)."""
        from transformers import AutoTokenizer

        from audiopalm.data.vocab import UnifiedVocab
        from audiopalm.tokenizers.base import load_audio_tokenizer

        m = self.cfg.model
        self.audio_tokenizer = load_audio_tokenizer(m.audio_tokenizer)
        self.acoustic = None
        if m.acoustic_stage:  # loaded and checked before any training, so a wrong pairing fails in seconds
            from audiopalm.acoustic.stage import AcousticStage
            from audiopalm.inference.pipeline import check_acoustic_stage

            self.acoustic = AcousticStage.from_pretrained(m.acoustic_stage)
            try:
                check_acoustic_stage(self.acoustic, self.audio_tokenizer)
            except ValueError as e:
                raise ConfigError(f"model.acoustic_stage: {e}") from None
        k = m.num_codebooks or self.audio_tokenizer.num_codebooks
        if k > self.audio_tokenizer.num_codebooks:
            raise ValueError(
                f"model.num_codebooks={k}, but the audio tokenizer {m.audio_tokenizer} has only "
                f"{self.audio_tokenizer.num_codebooks}"
            )
        text_tok = AutoTokenizer.from_pretrained(m.name_or_path)
        self.task_names = [parse_task(e.task).name for e in self.cfg.data.tasks]
        self.vocab = UnifiedVocab.build(
            text_tok,
            audio_tokenizer=self.audio_tokenizer,
            num_codebooks=k,
            pattern=m.pattern,
            tasks=list(dict.fromkeys(self.task_names)),
            input_dedup=m.input_dedup,
            output_words=m.output_words,
        )
        self.log(
            f"vocabulary: {self.vocab.audio_offset} text + {k} x {self.vocab.codebook_size} audio + specials "
            f"= {len(self.vocab)} tokens ({m.pattern} pattern); audio tokenizer {self.audio_tokenizer.type_name} "
            f"{self.audio_tokenizer.tokens_per_second(k):g} tokens/s"
        )

    def _unit_noise(self) -> UnitNoise | None:
        """``data.unit_noise``: each unit's nearest units in the tokenizer's code-vector space, as vocabulary ids."""
        d = self.cfg.data
        if not d.unit_noise and not d.unit_shift:
            return None
        vectors = self.audio_tokenizer.code_vectors()
        if vectors is None or self.vocab.num_codebooks != 1:
            raise ConfigError(
                f"data.unit_noise / unit_shift: needs one codebook of units with code vectors (the {self.audio_tokenizer.type_name} "
                f"tokenizer, {self.vocab.num_codebooks} codebooks here)"
            )
        near = nearest_units(vectors[0], d.unit_noise_neighbours).tolist()  # [K, k]
        ids = {
            self.vocab.audio_token_id(0, u): [self.vocab.audio_token_id(0, v) for v in row]
            for u, row in enumerate(near)
        }
        self.log(
            f"unit noise: {d.unit_noise:g} of the input units become one of their {d.unit_noise_neighbours} nearest, "
            f"{d.unit_shift:g} the unit before or after them"
        )
        return UnitNoise(ids, d.unit_noise, d.unit_shift)

    def _load_stores(self) -> None:
        from audiopalm.data.token_store import load_token_store

        d = self.cfg.data
        if not d.stores:
            raise ValueError("data.stores: empty; give data.stores=[path/to/store] (made by `audiopalm tokenize`)")
        self.stores, self.store_meta = [], []
        for path in d.stores:
            # Refuses (TokenStoreMismatch, naming both tokenizers) a store made by another audio tokenizer.
            store = load_token_store(path, expected_tokenizer=self.audio_tokenizer)
            if self.cfg.model.output_words and not store.meta.words:
                raise ConfigError(
                    f"model.output_words: the token store {path} has no word starts; make it with "
                    "`audiopalm tokenize --words` (or set model.output_words=false)"
                )
            self.stores.append(store.dataset)
            self.store_meta.append(store.dataset.select_columns(list(META_COLUMNS)).with_format(None).to_dict())

    def _select_rows(self, entry: TaskEntry, spec: TaskSpec, split_kind: str, skips: Counter) -> list[tuple[int, int]]:
        """Rows of every store for one task entry: split, language filters, required fields, de-duplication."""
        d = self.cfg.data
        needed = [PRESENCE.get(f, f) for f in spec.fields]
        dedupe = entry.dedupe if entry.dedupe is not None else not spec.needs_tgt_lang
        kind, field = spec.input_segment
        seen: set = set()
        picked = []
        for s, cols in enumerate(self.store_meta):
            for r in range(len(cols["id"])):
                split = cols["split"][r]
                if split_kind == "train" and not (split is None or split in d.train_splits):
                    continue
                if split_kind == "dev" and split != d.dev_split:
                    continue
                lang, tgt = cols["lang"][r], cols["tgt_lang"][r]
                if entry.langs and lang not in entry.langs:
                    continue
                if entry.pairs and f"{lang}-{tgt}" not in entry.pairs:
                    continue
                missing = next((f for f in needed if cols[f][r] is None or cols[f][r] == ""), None)
                if missing is not None:
                    skips[f"{spec.name}: no {missing}"] += 1
                    continue
                if dedupe:
                    key = cols[PRESENCE[field]][r] if kind == "audio" else (lang, cols[field][r])
                    if key in seen:
                        continue
                    seen.add(key)
                picked.append((s, r))
        return picked

    def _setup_data(self) -> None:
        d, tr = self.cfg.data, self.cfg.train
        self._load_stores()
        self.filter_skips: Counter = Counter()  # rows left out before training (missing fields)
        self.render_skips: Counter = Counter()  # examples skipped while rendering (too long, bad codes), this run
        sources: list[MixtureSource] = []
        self.dev_sets = []
        self.task_langs: dict[str, set[str]] = {}  # task -> languages (or pairs) of its training rows, for the card
        cache = RowCache()  # one row is read once for all the tasks that render it
        for entry, name in zip(d.tasks, self.task_names, strict=True):
            spec = parse_task(entry.task)
            train_rows = self._select_rows(entry, spec, "train", self.filter_skips)
            if not train_rows:
                raise ValueError(
                    f"data.tasks: task {name!r} (langs {entry.langs or 'all'}, pairs {entry.pairs or 'all'}) "
                    f"has no training rows in {d.stores} (splits {d.train_splits}); "
                    f"rows left out: {dict(self.filter_skips)}"
                )
            self.task_langs.setdefault(name, set()).update(self._languages(train_rows, spec))
            rows = StoreRows(self.stores, train_rows, cache)
            self._probe(name, spec, rows)
            label = f"{name} #{len(sources)}" if name in {s.name.split(" #")[0] for s in sources} else name

            def render_one(row, spec=spec):
                return render(row, spec, self.vocab, max_len=d.max_len, skip=self.render_skips, read=d.read_weight > 0)

            sources.append(MixtureSource(name=label, rows=rows, render=render_one, weight=entry.weight))
            dev_rows = self._select_rows(entry, spec, "dev", Counter())[: d.dev_examples_per_task]
            dev = [
                render(StoreRows(self.stores, dev_rows)[i], spec, self.vocab, max_len=d.max_len, skip=Counter())
                for i in range(len(dev_rows))
            ]
            self.dev_sets.append((label, [x for x in dev if x is not None]))
        self.vocab.layout.task_languages = {t: sorted(v) for t, v in self.task_langs.items()}  # -> audiopalm.json
        self.mixture = TaskMixture(sources, seed=tr.seed, augment=self._unit_noise())
        self.batches: PackedBatches | PaddedBatches
        if d.packing:
            self.batches = PackedBatches(
                self.mixture, max_len=d.max_len, rows_per_batch=self.global_batch, pad_id=self.vocab.pad_id
            )
        else:
            self.batches = PaddedBatches(self.mixture, rows_per_batch=self.global_batch, pad_id=self.vocab.pad_id)
        self.dev_collate = PaddingCollator(pad_id=self.vocab.pad_id)
        self.checkpoint_tokenizer = self.vocab.tokenizer
        weights = sum(s.weight for s in sources)
        self.log(
            "task mixture: "
            + "; ".join(
                f"{s.name} {len(s.rows)} rows, p={s.weight / weights:.2f}, dev {len(dev)}"
                for s, (_, dev) in zip(sources, self.dev_sets, strict=True)
            )
        )
        if self.filter_skips:
            self.log(f"rows left out (missing fields): {dict(self.filter_skips)}")

    def _languages(self, rows: list[tuple[int, int]], spec: TaskSpec) -> set[str]:
        """Languages (``en``) or pairs (``en-fr``, for tasks with a target language) of some store rows."""
        out = set()
        for s, r in rows:
            lang, tgt = self.store_meta[s]["lang"][r], self.store_meta[s]["tgt_lang"][r]
            out.add(language_key(lang, tgt if spec.needs_tgt_lang else None))
        return out

    def _probe(self, name: str, spec: TaskSpec, rows: StoreRows) -> None:
        """Render a few rows now: a task none of whose rows fit ``data.max_len`` fails here, not in an endless loop."""
        reasons: Counter = Counter()
        for i in range(min(16, len(rows))):
            if render(rows[i], spec, self.vocab, max_len=self.cfg.data.max_len, skip=reasons) is not None:
                return
        raise ValueError(
            f"data.tasks: none of the first {min(16, len(rows))} rows of task {name!r} renders "
            f"({dict(reasons)}); raise data.max_len={self.cfg.data.max_len} or check the store"
        )

    # ---- model --------------------------------------------------------------------------------------------------------

    def build_model(self) -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForCausalLM

        from audiopalm.modeling.extend import extend_model, trainable_token_indices

        m, tr = self.cfg.model, self.cfg.train
        torch.manual_seed(tr.seed)
        if m.from_scratch:
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(m.name_or_path))
        else:
            # fp32 master weights; accelerate's autocast runs the matmuls in bf16 where enabled
            self.model = AutoModelForCausalLM.from_pretrained(m.name_or_path, dtype=torch.float32)
        context = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None
        )
        if context is not None and self.cfg.data.max_len > context:
            raise ValueError(
                f"data.max_len={self.cfg.data.max_len} is longer than the model's context "
                f"({context} positions, {m.name_or_path}); lower data.max_len or use a longer-context model"
            )
        layers = self.model.config.num_hidden_layers
        if self.cfg.data.read_layer >= layers:
            raise ValueError(
                f"data.read_layer={self.cfg.data.read_layer}: {m.name_or_path} has {layers} decoder layers; read one "
                f"of 1..{layers - 1}, or 0 for the model's output"
            )
        if self.cfg.data.read_layer:
            training.final_norm(self.model)  # a model whose final norm is not found is refused before training
        text_rows = self.model.config.vocab_size  # the full count, also when ZeRO-3 shards the weight
        extend_model(
            self.model,
            self.vocab,
            init=m.init,
            code_vectors=self.audio_tokenizer.code_vectors() if m.init == "codebook" else None,
            unit_characters=self.audio_tokenizer.unit_characters() if m.init == "letters" else None,
        )
        if self.cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            self._write_base()
            lo = self.cfg.lora
            rows = trainable_token_indices(self.model, self.vocab)
            extra: dict[str, Any]
            if lo.new_rows == "trainable_tokens":
                extra = {"trainable_token_indices": rows}
            else:  # whole embedding (+ untied lm_head); a tied lm_head must follow the trained copy
                extra = {"modules_to_save": sorted(rows), "ensure_weight_tying": len(rows) == 1}
            self.model = get_peft_model(
                self.model,
                LoraConfig(
                    r=lo.r,
                    lora_alpha=lo.alpha,
                    lora_dropout=lo.dropout,
                    target_modules=list(lo.target_modules),
                    task_type="CAUSAL_LM",
                    **extra,
                ),
            )
        self.log(
            f"{'random-init ' if m.from_scratch else ''}{m.name_or_path}: embedding {text_rows} -> "
            f"{self.model.get_input_embeddings().weight.shape[0]} rows ({'LoRA' if self.cfg.lora.enabled else 'full'})"
        )
        return self.model

    # ---- steps --------------------------------------------------------------------------------------------------------

    def micro_batches(self) -> tuple[list[dict], int]:
        tr = self.cfg.train
        batch = next(self.batch_iter)  # the global batch, identical on every process: [G, L] tensors
        rows = list(range(self.global_batch))
        micros = [
            {
                k: v[
                    training.StepSampler.micro_batch(
                        rows, m, self.rank, micro_batch_size=tr.micro_batch_size, world_size=self.world
                    )
                ]
                for k, v in batch.items()
                if k != "num_target_tokens"
            }
            for m in range(tr.grad_accum_steps)
        ]
        return micros, int(batch["num_target_tokens"])  # every process holds the whole batch: no reduction

    def forward_loss(self, batch: dict) -> LossSum:
        acc = self.accelerator
        inputs = {k: batch[k].to(acc.device) for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
        with acc.autocast():
            # packed rows: no attention mask + restarting position_ids = block-diagonal causal attention (needs
            # use_cache=False, see audiopalm/data/batching.py)
            read_layer = self.cfg.data.read_layer if "read_span" in batch else 0
            out = self.model(**inputs, use_cache=False, output_hidden_states=read_layer > 0)
            logits = read_logits = out.logits  # [B, L, V]
            if read_layer:  # the reading loss reads decoder layer k's output through the final norm and output layer
                read_logits = training.layer_logits(acc.unwrap_model(self.model), out.hidden_states[read_layer])
        labels = batch["labels"].to(acc.device)
        # tokens of the examples (prompt and target), not the padding
        real = int(
            batch["attention_mask"].sum()
            if "attention_mask" in batch
            else (batch["input_ids"] != self.vocab.pad_id).sum()
        )
        loss = training.token_loss_sum(logits, labels)
        if "read_span" in batch:  # training batches with data.read_weight > 0 (dev batches never)
            read = training.reading_loss_sum(
                read_logits,
                batch["read_span"].to(acc.device),
                batch["read_targets"].to(acc.device),
                blank=self.vocab.pad_id,
            )
            loss = loss + self.cfg.data.read_weight * read
        return LossSum(loss, training.count_targets(labels), real)

    def collate_dev(self, items: list) -> dict:
        return self.dev_collate(items)

    def epoch(self) -> float:
        return self.mixture.epoch + self.mixture.position / self.mixture.examples_per_epoch

    def before_prepare(self) -> None:
        self.batch_iter = iter(self.batches)

    # ---- state --------------------------------------------------------------------------------------------------------

    def resume_checks(self) -> dict:
        return {"vocab_size": len(self.vocab), "tasks": self.task_names}

    def data_state(self) -> dict:
        return self.batches.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.batches.load_state_dict(state)

    def write_model(self, folder: Path, state_dict: dict | None) -> None:
        """A resumable checkpoint: HF weights, or for LoRA the adapter alone (its base, ``output_dir/base``, holds the
        grown embedding, which LoRA never changes) naming that base relatively, never by an absolute path."""
        if not self.cfg.lora.enabled:
            return super().write_model(folder, state_dict)
        from audiopalm.modeling.adapter import set_adapter_base

        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True, save_embedding_layers=False)
        set_adapter_base(folder, os.path.relpath((self.out / BASE_DIR).resolve(), Path(folder).resolve()))

    def load_model_state(self, ckpt: Path) -> None:
        if not self.cfg.lora.enabled:
            return super().load_model_state(ckpt)
        from audiopalm.modeling.extend import load_adapter_weights

        load_adapter_weights(self.model, ckpt / "adapter_model.safetensors")

    def _write_base(self) -> None:
        """LoRA runs: ``output_dir/base``, the text LM with its embedding grown for the audio vocabulary and the new
        rows initialised, untrained: the base model the adapter applies to, as peft documents for added tokens (the
        adapter carries the trained new rows, the base has their shape). Written once (kept on ``--resume``)."""
        from audiopalm.modeling.adapter import write_base

        write_base(
            self.model,
            self.vocab,
            self.out / BASE_DIR,
            source=self.cfg.model.name_or_path,
            is_main=self.accelerator.is_main_process,
        )

    def write_final(self, folder: Path, state_dict: dict | None) -> None:
        """``final/``: HF format + audiopalm.json + audio tokenizer (merged for LoRA) + the acoustic stage in
        ``acoustic/`` if there is one; LoRA runs also write the peft adapter in ``output_dir/adapter``."""
        from audiopalm.modeling.adapter import write_adapter
        from audiopalm.modeling.extend import write_checkpoint_files

        model = self.accelerator.unwrap_model(self.model)
        if self.cfg.lora.enabled:
            write_adapter(
                model,
                self.vocab,
                self.out / "adapter",
                state_dict=state_dict,
                base_dir=self.out / BASE_DIR,
                card={**self.card(self._summary, adapter=True), "dev": self._summary.get("dev_loss") or None},
            )
            model, state_dict = model.merge_and_unload(), None
        write_checkpoint_files(
            model, self.vocab, self.audio_tokenizer, folder, state_dict=state_dict, acoustic=self.acoustic
        )

    def save_final(self, summary: dict) -> None:
        self._summary = summary  # the adapter's card (written inside write_final) shows the same dev figures
        super().save_final(summary)

    def card(self, summary: dict, adapter: bool = False) -> dict:
        from audiopalm.data.sources import audio_tokenizer_source, source_of

        m, lo = self.cfg.model, self.cfg.lora
        tok = self.audio_tokenizer
        how = (
            f"LoRA (r={lo.r}, alpha={lo.alpha}, on {', '.join(lo.target_modules)}; new rows via {lo.new_rows})"
            if lo.enabled
            else "full fine-tuning"
        )
        kind = "The peft LoRA adapter of an" if adapter else ("The merged weights of an" if lo.enabled else "An")
        base = source_of(m.name_or_path)
        load = (
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("BASE"), "ADAPTER")'
            "  # BASE: the run's base/ folder (its repo)"
            if adapter
            else "from audiopalm import AudioPaLM\n"
            'model = AudioPaLM.from_pretrained("REPO_OR_FOLDER")\n'
            'text = model.asr("speech.wav", lang="en").text  # or plain AutoModelForCausalLM / AutoTokenizer'
        )
        return {
            "title": "audiopalm speech-text model" + (" (LoRA adapter)" if adapter else ""),
            "summary": f"{kind} AudioPaLM-style model (arXiv 2306.12925): a text LM whose vocabulary was extended "
            f"with {self.vocab.num_codebooks} x {self.vocab.codebook_size} audio tokens ({m.pattern} pattern, "
            f"{len(self.vocab)} tokens), trained by {how} on a task mixture with the audiopalm "
            "`finetune_audiopalm` recipe."
            + (
                " It applies to the run's `base/` folder (the text LM with the grown embedding), not to the text LM "
                "itself."
                if adapter
                else ""
            ),
            "library_name": "peft" if adapter else "transformers",
            "base_model": m.name_or_path if not m.from_scratch else None,
            "base_source": base,
            "tasks": {t: sorted(v) for t, v in self.task_langs.items()},
            "audio_tokenizer": {
                "type": tok.type_name,
                "fingerprint": tok.fingerprint,
                "source": audio_tokenizer_source(tok),
            },
            "tags": ["lora"] if lo.enabled else [],
            "load_code": load,
        }

    def summary_extra(self) -> dict:
        if self.render_skips:
            self.log(f"examples skipped while rendering (this run): {dict(self.render_skips)}")
        return {
            "lora": self.cfg.lora.enabled,
            "vocab_size": len(self.vocab),
            "skips": {
                "rows_left_out": dict(self.filter_skips),
                "render_skips_this_run": dict(self.render_skips),
                "render_skips_per_source": dict(self.mixture.skipped),
            },
        }


def main(argv: list[str] | None = None) -> int:
    return FinetuneAudioPaLMRecipe.main(argv)


if __name__ == "__main__":
    sys.exit(main())
