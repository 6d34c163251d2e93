"""The acoustic stage: semantic units + a voice prompt -> mel_rvq codec features (AudioLM stages 2-3).

Launch (see audiopalm/recipes/configs/train_acoustic.yaml)::

    audiopalm train train_acoustic --config train_acoustic \\
        data.manifests=[corpus/train.jsonl] data.unit_tokenizer=runs/units data.codec=runs/demo/tokenizer

or, on several processes, ``accelerate launch --config_file "$(audiopalm train --list-accelerate cpu)" -m
audiopalm.recipes.train_acoustic --config ...``.

Features (the loop, checkpoints, resume, logs and the atomic final save are :class:`Recipe`'s):

- Pairs: each distinct ``audio`` file of ``data.train_splits`` -> (its units, its codec features), cached
  under ``data.cache_dir`` (default ``output_dir/cache``, kept by ``--overwrite``); the voice prompt of a
  target is *another* utterance of its ``speaker``, drawn per step (:mod:`audiopalm.acoustic.data`).
- Model: :class:`audiopalm.acoustic.AcousticModel` (dilated conv stack with voice FiLM), L1 on the
  normalised stacked log-mel, every unit frame predicting the codec frame it is aligned with. The loss of a
  step is the L1 summed over all its micro-batches and processes divided by their frames x features.
- The data order and prompts are a pure function of (seed, step): resuming needs only the step.
- Dev: ``dev_loss/l1`` (normalised units, the training loss) and ``dev_loss/mel_l1`` (natural-log mel units)
  on ``data.dev_split``, prompts from another utterance of the same speaker.
- Final: ``output_dir/final``, an :class:`~audiopalm.acoustic.AcousticStage` folder (``acoustic.json``,
  safetensors, the codec in ``codec/``, a default voice) that ``AcousticStage.from_pretrained`` loads alone,
  written atomically with the completion marker like every recipe's final.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from audiopalm import training
from audiopalm.acoustic import train as acoustic
from audiopalm.acoustic.data import Batch, PairSampler, Utterances, has_audio, load_utterances
from audiopalm.acoustic.letters import unit_letters
from audiopalm.acoustic.model import frames_per_unit
from audiopalm.acoustic.stage import AcousticStage
from audiopalm.config import ConfigError, TrainAcousticConfig
from audiopalm.training.recipe import LossSum, Recipe

UNCROPPED = 10**9
"""``max_frames`` of the dev sampler: dev utterances are scored whole."""


def load_tokenizers(cfg: TrainAcousticConfig):
    """(unit tokenizer, codec) named by ``cfg.data``; one-line errors when missing or of the wrong kind."""
    from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer

    d = cfg.data
    for field, path in (("data.unit_tokenizer", d.unit_tokenizer), ("data.codec", d.codec)):
        if not path or not (Path(path) / CONFIG_NAME).is_file():
            raise ConfigError(f"{field}: {path!r} is not a saved audiopalm tokenizer folder (no {CONFIG_NAME})")
    units, codec = load_audio_tokenizer(d.unit_tokenizer), load_audio_tokenizer(d.codec)
    if codec.type_name != "mel_rvq":
        raise ConfigError(f"data.codec: {d.codec} is a {codec.type_name!r} tokenizer; the stage needs a mel_rvq codec")
    return units, codec


def build_data(
    cfg: TrainAcousticConfig, unit_tokenizer, codec, *, progress: bool = True
) -> tuple[Utterances, Utterances | None]:
    """(train utterances, dev utterances or None), cached under ``data.cache_dir``."""
    d = cfg.data
    if bool(d.manifests) == bool(d.stores):
        raise ConfigError(
            "data.manifests / data.stores: give one of them (manifests: data.manifests=[path/to/train.jsonl]; "
            f"or token stores of the unit tokenizer: data.stores=[...]); got {d.manifests} and {d.stores}"
        )
    sources = d.stores or d.manifests
    cache = d.cache_dir or str(Path(cfg.train.output_dir) / "cache")

    letters = None
    if cfg.model.use_letters:  # the alphabet the stage will have (AcousticStage.build): the units' CTC characters
        letters = unit_letters(unit_tokenizer)

    def load(splits: list[str], limit: int | None) -> Utterances | None:
        # a manifest or store may hold only some splits (train.jsonl, dev.jsonl): those without rows here are skipped
        parts = [
            load_utterances(
                m,
                splits,
                unit_tokenizer,
                codec,
                cache_dir=cache,
                limit=limit,
                progress=progress,
                letters=letters,
                letter_width=cfg.model.letter_width,
            )
            for m in sources
            if has_audio(m, splits)
        ]
        return (parts[0] if len(parts) == 1 else acoustic.concat(parts)) if parts else None

    train = load(d.train_splits, d.max_utterances or None)
    if train is None:
        raise ValueError(f"no rows with audio in splits {d.train_splits} in {sources}")
    dev = load([d.dev_split], d.max_dev_utterances) if d.dev_split and d.max_dev_utterances else None
    return train, dev


def build_stage(cfg: TrainAcousticConfig, unit_tokenizer, codec) -> AcousticStage:
    """A fresh stage, initialised from ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    return AcousticStage.build(cfg.model, codec, unit_tokenizer, max_prompt_frames=cfg.data.max_prompt_frames)


class TrainAcousticRecipe(Recipe):
    """The acoustic stage (units + voice prompt -> codec features); its loss and default voice are in :mod:`audiopalm.acoustic.train`."""

    name, config_class = "train_acoustic", TrainAcousticConfig

    def build_data(self) -> None:
        acc, d = self.accelerator, self.cfg.data
        self.unit_tokenizer, self.codec = load_tokenizers(self.cfg)
        with acc.main_process_first():  # the main process fills the feature cache; the others read it
            self.train_utts, dev_utts = build_data(
                self.cfg, self.unit_tokenizer, self.codec, progress=acc.is_main_process
            )
        seed = self.cfg.train.seed
        r = frames_per_unit(self.unit_tokenizer.frame_rate, self.codec.frame_rate)
        self.pairs = PairSampler(
            self.train_utts,
            max_frames=d.max_frames,
            max_prompt_frames=d.max_prompt_frames,
            seed=seed,
            frames_per_unit=r,
            letter_dropout=d.letter_dropout,
        )
        self.sampler = training.StepSampler(len(self.pairs.targets), self.global_batch, seed=seed)
        self.dev_pairs = None
        if dev_utts is not None:
            self.dev_pairs = PairSampler(
                dev_utts, max_frames=UNCROPPED, max_prompt_frames=d.max_prompt_frames, seed=seed, frames_per_unit=r
            )
            self.dev_sets = [("l1", list(self.dev_pairs.targets))]
        self.log(
            f"{len(self.train_utts)} train utterances ({len(self.pairs.targets)} with a prompt), "
            f"{len(self.pairs.by_speaker)} speakers; dev {len(self.dev_pairs.targets) if self.dev_pairs else 0}; "
            f"{self.cfg.train.max_steps} steps = {self.sampler.epoch_of(self.cfg.train.max_steps):.1f} epochs"
        )

    def build_model(self) -> torch.nn.Module:
        self.stage = build_stage(self.cfg, self.unit_tokenizer, self.codec)
        return self.stage.model

    def micro_batches(self) -> tuple[list[dict], int]:
        tr = self.cfg.train
        gidx = [self.pairs.targets[i] for i in self.sampler.global_indices(self.step)]
        batch = self.pairs.batch(gidx, self.step)  # the whole global batch: prompts and crops fixed by the step
        micros = [
            {
                "pairs": batch.select(
                    training.StepSampler.micro_batch(
                        list(range(len(gidx))),
                        m,
                        self.rank,
                        micro_batch_size=tr.micro_batch_size,
                        world_size=self.world,
                    ),
                )
            }
            for m in range(tr.grad_accum_steps)
        ]
        return micros, int(batch.lengths.sum()) * batch.feats.shape[-1]

    def forward_loss(self, batch: dict) -> LossSum:
        b: Batch = batch["pairs"].to(self.accelerator.device)
        with self.accelerator.autocast():
            err = acoustic.l1_errors(self.model, b)  # [B, F, D]
        frames = int(b.lengths.sum())
        if not self.model.training:  # dev: the same error in natural-log mel units (see evaluate)
            self._dev_mel[0] += float((err * self.stage.codec.feature_std.to(err)).sum())
            self._dev_mel[1] += frames * err.shape[-1]
        return LossSum(err.sum(), frames * err.shape[-1], frames)

    def collate_dev(self, items: list) -> dict:
        assert self.dev_pairs is not None, "collate_dev without a dev split"
        return {"pairs": self.dev_pairs.batch(items, step=0)}  # prompts fixed by the seed: the same at every eval

    def evaluate(self) -> dict[str, float]:
        """:meth:`Recipe.evaluate` (``l1``, ``all``) plus ``mel_l1``: the dev L1 in natural-log mel units."""
        self._dev_mel = [0.0, 0]  # (sum of |error| x feature std, terms) over this process's dev batches
        out = super().evaluate()
        if "l1" in out:
            acc = self.accelerator
            out["mel_l1"] = training.global_sum(acc, self._dev_mel[0]) / training.global_sum(acc, self._dev_mel[1])
        return out

    def epoch(self) -> float:
        return self.sampler.epoch_of(self.step)

    def resume_checks(self) -> dict:
        return {"num_targets": len(self.pairs.targets)}

    def write_final(self, folder: Path, state_dict: dict | None) -> None:
        """The :class:`AcousticStage` folder, rebuilt on the CPU from the gathered weights (so a sharded or wrapped
        model saves the same), with the default voice of the training data."""
        from audiopalm.acoustic import AcousticStage

        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        stage = AcousticStage.build(
            self.stage.config, self.codec, self.unit_tokenizer, max_prompt_frames=self.cfg.data.max_prompt_frames
        )
        stage.model.load_state_dict({k: v.detach().cpu().float() for k, v in state_dict.items()})
        acoustic.set_default_voice(stage, self.train_utts)
        stage.save_pretrained(folder)

    def card(self, summary: dict) -> dict:
        from audiopalm.data.sources import audio_tokenizer_source
        from audiopalm.modeling.card import LIBRARY

        def tok(t) -> dict:
            return {"type": t.type_name, "fingerprint": t.fingerprint, "source": audio_tokenizer_source(t)}

        units, codec = tok(self.unit_tokenizer), tok(self.codec)
        return {
            "title": "audiopalm acoustic stage",
            "summary": "Semantic units + a voice prompt -> acoustic codes (parallel, SoundStorm-like) -> sound, "
            "trained by the audiopalm `train_acoustic` recipe. Units from the "
            f"`{units['type']}` tokenizer (fingerprint `{units['fingerprint']}`); codes of the `{codec['type']}` "
            f"codec (fingerprint `{codec['fingerprint']}`), both saved in this folder.",
            "library_name": LIBRARY,
            "audio_tokenizer": units,
            "tags": ["text-to-speech", "acoustic-model"],
            "load_code": "from audiopalm.acoustic import AcousticStage\n"
            'stage = AcousticStage.from_pretrained("FOLDER")  # huggingface_hub.snapshot_download(REPO) first\n'
            "wav = stage.synthesize(units)  # see docs/acoustic_stage.md",
        }

    def summary_extra(self) -> dict:
        return {"train_utterances": len(self.train_utts), "train_targets": len(self.pairs.targets)}


def main(argv: list[str] | None = None) -> int:
    return TrainAcousticRecipe.main(argv)


if __name__ == "__main__":
    sys.exit(main())
