"""The acoustic stage as a saved, loadable object: units + voice -> waveform (AudioLM stages 2-3 / SoundStorm's role).

::

    stage = AcousticStage.from_pretrained("runs/acoustic/final")
    wav = stage.synthesize(units, voice_wav=prompt)        # units [B, F] long, prompt [B, T] or [T] -> wav [B, T']
    wav = stage.synthesize(units)                          # the default voice stored in the folder
    wav = stage.synthesize(units, words=[[("there", 0), ("are", 3), ("guitars", 5)]])  # use_letters: each word's
                                                           # first unit; the stage reads the letters of each unit's word

The folder (written atomically by :meth:`AcousticStage.save_pretrained`)::

    acoustic.json          {"config": AcousticConfig, "unit_tokenizer": {fingerprint, type, frame_rate, codebook_size},
                            "codec_fingerprint", "max_prompt_frames", "default_voice": {speakers, utterances},
                            "decoder": {griffin_lim_iters, nnls_iters}}
    acoustic.safetensors   the network and the default voice embedding
    codec/                 the mel_rvq codec whose features the network predicts (and whose Griffin-Lim decodes them)

The unit tokenizer itself is not stored (the LM emits units; only their meaning must match), its
fingerprint is: :meth:`AcousticStage.check_units` refuses units from another tokenizer.

``decoder``: the Griffin-Lim settings :meth:`AcousticStage.synthesize` uses when a call names none (the
stage's attributes ``griffin_lim_iters`` / ``nnls_iters``; default: ``MelRVQConfig``'s defaults, also for a
folder saved without ``decoder``). They are the stage's, not the codec's config's: a codec's config is hashed
into its fingerprint, which token stores and this folder record, so a saved codec keeps the decoder settings
it was fitted with (the demo's: the former, slow defaults) and changing them would orphan its stores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from audiopalm.acoustic.letters import WordSpans, letter_windows, unit_letters
from audiopalm.acoustic.model import AcousticConfig, AcousticModel, frames_per_unit
from audiopalm.tokenizers.mel_rvq import MelRVQConfig, check_iters

CONFIG_NAME = "acoustic.json"
WEIGHTS_NAME = "acoustic.safetensors"
CODEC_DIR = "codec"
DEFAULT_PROMPT_FRAMES = 75
"""Voice-prompt frames the encoder reads (3 s at 25 Hz): AudioLM / VALL-E prompt with about 3 s of the voice."""


class AcousticStage(nn.Module):
    """An :class:`AcousticModel` bound to its codec (a fitted ``mel_rvq``) and to its unit tokenizer's fingerprint."""

    default_voice: torch.Tensor  # a buffer (register_buffer below), declared for type checkers

    def __init__(
        self,
        config: AcousticConfig,
        codec,
        *,
        unit_tokenizer: dict,
        max_prompt_frames: int = DEFAULT_PROMPT_FRAMES,
        default_voice_info: dict | None = None,
        griffin_lim_iters: int | None = None,
        nnls_iters: int | None = None,
    ):
        super().__init__()
        if getattr(codec, "type_name", None) != "mel_rvq":
            raise ValueError(
                f"the acoustic stage predicts mel_rvq features; got a {getattr(codec, 'type_name', codec)!r} codec"
            )
        if config.feature_dim != codec.config.dim:
            raise ValueError(
                f"AcousticConfig.feature_dim = {config.feature_dim} but the codec's frames have "
                f"{codec.config.dim} values (stack * n_mels)"
            )
        r = frames_per_unit(float(unit_tokenizer["frame_rate"]), codec.frame_rate)
        if r != config.frames_per_unit:
            raise ValueError(
                f"AcousticConfig.frames_per_unit = {config.frames_per_unit} but units at "
                f"{unit_tokenizer['frame_rate']:g} Hz and codec frames at {codec.frame_rate:g} Hz make {r}"
            )
        if max_prompt_frames < 1:
            raise ValueError(f"max_prompt_frames = {max_prompt_frames}: must be >= 1")
        self.config = config
        self.model = AcousticModel(config)
        self.codec = codec
        self.unit_tokenizer = dict(unit_tokenizer)
        self.max_prompt_frames = int(max_prompt_frames)
        self.default_voice_info = dict(default_voice_info or {})
        self.register_buffer("default_voice", torch.zeros(config.voice_dim))  # [V]
        defaults = MelRVQConfig()
        self.griffin_lim_iters = check_iters(
            defaults.griffin_lim_iters if griffin_lim_iters is None else griffin_lim_iters, "griffin_lim_iters", 1
        )
        """Griffin-Lim iterations of :meth:`synthesize` when the call gives none (saved in ``acoustic.json``)."""
        self.nnls_iters = check_iters(defaults.nnls_iters if nnls_iters is None else nnls_iters, "nnls_iters", 0)
        """mel -> magnitude refinement iterations of :meth:`synthesize` when the call gives none."""

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def build(cls, config: AcousticConfig, codec, unit_tokenizer, **kwargs) -> AcousticStage:
        """A fresh stage for ``unit_tokenizer`` (any :class:`AudioTokenizer`; its first codebook is the unit
        stream) and ``codec`` (a fitted mel_rvq); ``num_units`` and ``feature_dim`` are filled in from them."""
        config = dataclasses.replace(
            config,
            num_units=unit_tokenizer.codebook_size,
            feature_dim=codec.config.dim,
            frames_per_unit=frames_per_unit(unit_tokenizer.frame_rate, codec.frame_rate),
            letters=unit_letters(unit_tokenizer) if config.use_letters else (),
        )
        stage = cls(config, codec, unit_tokenizer=describe_units(unit_tokenizer), **kwargs)
        if config.unit_init == "codebook":
            vectors = unit_tokenizer.code_vectors()  # [codebooks, units, D]: the first codebook is the unit stream
            if vectors is None:
                raise ValueError(
                    f"model.unit_init=codebook: the unit tokenizer ({type(unit_tokenizer).__name__}) has no code "
                    "vectors; use model.unit_init=random"
                )
            stage.model.init_unit_rows(vectors[0])
        return stage

    # ---- the work ---------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    def prompt_features(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Voice prompt ``wav`` [B, T] (or [T]) at :attr:`sample_rate` -> (features [B, P, D], lengths [B]), at most
        ``max_prompt_frames`` frames (the prompt's start)."""
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.dim() == 1:
            wav = wav[None]
        feats, n = self.codec.features(wav, lengths)  # [B, F, D], [B]
        p = self.max_prompt_frames
        return feats[:, :p], n.clamp_max(p)

    def voice_embedding(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Voice prompt waveform(s) [B, T] (or [T]) -> voice embedding [B, V]."""
        feats, n = self.prompt_features(wav, lengths)
        voice = self.model.encode_voice(feats, n)  # [B, V]
        if voice is None:
            raise ValueError(
                "this acoustic stage was trained without a voice (use_voice: false): it has no voice embedding"
            )
        return voice

    def check_units(
        self, units: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate units [B, F] (ids in ``[0, num_units)`` where valid) and their lengths [B] (None: all F)."""
        units = torch.as_tensor(units).long()
        if units.dim() == 3 and units.shape[1] == 1:  # [B, 1, F]: what AudioTokenizer.encode returns
            units = units[:, 0]
        if units.dim() != 2 or units.shape[1] == 0:
            raise ValueError(f"units must be [B, F] with F > 0, got shape {tuple(units.shape)}")
        if lengths is None:
            lengths = torch.full((units.shape[0],), units.shape[1], dtype=torch.long)
        lengths = torch.as_tensor(lengths).long().reshape(-1)
        if lengths.shape[0] != units.shape[0] or int(lengths.min()) < 1 or int(lengths.max()) > units.shape[1]:
            raise ValueError(
                f"unit lengths {lengths.tolist()} must be [B={units.shape[0]}] values in 1..F={units.shape[1]}"
            )
        valid = torch.arange(units.shape[1])[None] < lengths[:, None]  # [B, F]
        bad = valid & ((units < 0) | (units >= self.config.num_units))
        if bool(bad.any()):
            raise ValueError(
                f"unit ids must be in [0, {self.config.num_units}) (the unit tokenizer "
                f"{self.unit_tokenizer.get('fingerprint')}); got {units[bad][:5].tolist()}"
            )
        return units, lengths

    def _voice(self, batch: int, voice_wav, voice, voice_lengths) -> torch.Tensor | None:
        """The voice embedding [B, V] to use: from ``voice_wav``, else ``voice``, else the default voice."""
        if not self.config.use_voice:
            return None
        if voice_wav is not None and voice is not None:
            raise ValueError("give voice_wav (a prompt waveform) or voice (an embedding), not both")
        if voice_wav is not None:
            voice = self.voice_embedding(voice_wav, voice_lengths)
        elif voice is None:
            voice = self.default_voice[None]
        voice = torch.as_tensor(voice, dtype=torch.float32)
        if voice.dim() == 1:
            voice = voice[None]
        if voice.shape[0] == 1 and batch > 1:
            voice = voice.expand(batch, -1)
        if voice.shape != (batch, self.config.voice_dim):
            raise ValueError(
                f"voice must be [B={batch}, {self.config.voice_dim}] (or [1, V]), got {tuple(voice.shape)}"
            )
        return voice

    def letters(self, words: list[WordSpans | None] | None, units: torch.Tensor) -> torch.Tensor | None:
        """The letter input [B, U, W] for units [B, U] from each item's (word, first unit) spans (None: no words,
        all padding); None for a stage that reads no letters (which then refuses words)."""
        c = self.config
        if not c.use_letters:
            if words is not None and any(words):
                raise ValueError("words: this acoustic stage was trained without letters (model.use_letters: false)")
            return None
        if words is None:
            words = [None] * units.shape[0]
        if len(words) != units.shape[0]:
            raise ValueError(f"words: {len(words)} lists for {units.shape[0]} unit rows")
        n = units.shape[1]
        return torch.stack([letter_windows(w, n, c.letters, c.letter_width) for w in words]).to(units.device)

    @torch.no_grad()
    def predict_features(
        self,
        units: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        voice_wav=None,
        voice=None,
        voice_lengths=None,
        words: list[WordSpans | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Units [B, U] -> (normalised codec features [B, F, D], frame lengths [B]), F = U * ``frames_per_unit``;
        voice and words as in :meth:`synthesize`."""
        units, lengths = self.check_units(units, lengths)
        v = self._voice(units.shape[0], voice_wav, voice, voice_lengths)
        self.model.eval()
        spelled = self.letters(words, units)
        return self.model(units, lengths, v, letters=spelled), lengths * self.config.frames_per_unit  # [B, F, D]

    @torch.no_grad()
    def features_to_wav(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        *,
        griffin_lim_iters: int | None = None,
        nnls_iters: int | None = None,
    ) -> torch.Tensor:
        """Normalised features [B, F, D] + lengths [B] -> waveform [B, F * samples_per_frame], zero past each length.

        ``griffin_lim_iters`` / ``nnls_iters``: the decoder settings for this call (None: the stage's attributes
        of those names); they set the speed (docs/acoustic_stage.md). Each item is decoded alone on its own
        frames: Griffin-Lim's phases depend on the signal length, so this makes a batch give exactly the items'
        one-by-one outputs."""
        spf = self.codec.samples_per_frame
        out = feats.new_zeros(feats.shape[0], feats.shape[1] * spf)
        gl = self.griffin_lim_iters if griffin_lim_iters is None else griffin_lim_iters
        nnls = self.nnls_iters if nnls_iters is None else nnls_iters
        for i, n in enumerate(lengths.tolist()):
            logmel = self.codec.features_to_log_mel(feats[i : i + 1, :n])  # [1, n * stack, n_mels]
            out[i, : n * spf] = self.codec.log_mel_to_wav(logmel, griffin_lim_iters=gl, nnls_iters=nnls)[0]
        return out  # [B, F * spf]

    @torch.no_grad()
    def synthesize(
        self,
        units: torch.Tensor,
        *,
        voice_wav=None,
        voice=None,
        lengths: torch.Tensor | None = None,
        voice_lengths: torch.Tensor | None = None,
        griffin_lim_iters: int | None = None,
        nnls_iters: int | None = None,
        words: list[WordSpans | None] | None = None,
    ) -> torch.Tensor:
        """Units [B, U] (frame-aligned) -> waveform [B, U * frames_per_unit * samples_per_frame] at :attr:`sample_rate`.

        The voice: ``voice_wav`` (a prompt of the wanted voice, [B, T] or one [T] for all, with optional
        ``voice_lengths``), or ``voice`` (embeddings [B, V] from :meth:`voice_embedding`), or neither
        (the default voice stored in the folder). ``lengths`` [B]: valid unit frames (None: all);
        samples past them are zero. ``griffin_lim_iters`` / ``nnls_iters``: the decoder's speed/quality
        settings (see :meth:`features_to_wav`). ``words`` (a stage with ``use_letters``): per item, the (word,
        unit at which it starts) of what the units say, or None (:mod:`audiopalm.acoustic.letters`). Deterministic;
        a batch gives the items' one-by-one outputs.
        """
        feats, lengths = self.predict_features(
            units, lengths, voice_wav=voice_wav, voice=voice, voice_lengths=voice_lengths, words=words
        )
        return self.features_to_wav(feats, lengths, griffin_lim_iters=griffin_lim_iters, nnls_iters=nnls_iters)

    # ---- persistence ------------------------------------------------------------------------
    def meta(self) -> dict:
        """What ``acoustic.json`` holds."""
        return {
            "config": dataclasses.asdict(self.config),
            "unit_tokenizer": self.unit_tokenizer,
            "codec_fingerprint": self.codec.fingerprint,
            "max_prompt_frames": self.max_prompt_frames,
            "default_voice": self.default_voice_info,
            "decoder": {"griffin_lim_iters": self.griffin_lim_iters, "nnls_iters": self.nnls_iters},
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the folder described in the module docstring, atomically (a temporary sibling, then renamed)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.meta(), indent=2) + "\n", encoding="utf-8")
            state = {
                k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("codec.")
            }
            save_file(state, str(tmp / WEIGHTS_NAME))
            self.codec.save_pretrained(tmp / CODEC_DIR)
            if directory.exists():
                old = directory.parent / f".old-{directory.name}-{uuid.uuid4().hex[:8]}"
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> AcousticStage:
        """Load a folder written by :meth:`save_pretrained` (the codec from its ``codec/`` sub-folder)."""
        from safetensors.torch import load_file

        from audiopalm.tokenizers.base import load_audio_tokenizer

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{directory / CONFIG_NAME}: missing; not an acoustic stage folder "
                "(train one with `audiopalm train train_acoustic`)"
            )
        meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        codec = load_audio_tokenizer(directory / CODEC_DIR)
        if codec.fingerprint != meta["codec_fingerprint"]:
            raise ValueError(
                f"{directory / CODEC_DIR}: codec fingerprint {codec.fingerprint} differs from "
                f"{meta['codec_fingerprint']} recorded in {CONFIG_NAME}; the folder was altered"
            )
        decoder = meta.get("decoder") or {}  # absent in folders saved before it existed: the defaults
        stage = cls(
            AcousticConfig(**{"unit_init": "random", **meta["config"]}),  # saved before unit_init existed: random
            codec,
            unit_tokenizer=meta["unit_tokenizer"],
            max_prompt_frames=meta["max_prompt_frames"],
            default_voice_info=meta.get("default_voice"),
            griffin_lim_iters=decoder.get("griffin_lim_iters"),
            nnls_iters=decoder.get("nnls_iters"),
        )
        missing, unexpected = stage.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        missing = [k for k in missing if not k.startswith("codec.")]
        if missing or unexpected:
            raise ValueError(f"{directory / WEIGHTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return stage.eval()


def describe_units(tokenizer) -> dict:
    """What the stage records of its unit tokenizer: enough to refuse units from another one."""
    return {
        "type": tokenizer.type_name,
        "fingerprint": tokenizer.fingerprint,
        "frame_rate": float(tokenizer.frame_rate),
        "codebook_size": int(tokenizer.codebook_size),
        "num_codebooks": int(tokenizer.num_codebooks),
    }
