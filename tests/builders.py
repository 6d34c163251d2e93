"""Shared test builders: tiny models, tokenizers, corpora, checkpoints and recipe runs (nothing is downloaded).

Test modules import these by name (``from builders import make_checkpoint``: tests/ is on sys.path under pytest);
no test module imports another. conftest.py holds the shared fixtures.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import transformers
from transformers import GPT2Tokenizer, LlamaTokenizer, Qwen2Tokenizer

from audiopalm.data.manifest import Record, write_manifest
from audiopalm.data.vocab import UnifiedVocab
from audiopalm.modeling.extend import extend_model, save_checkpoint
from audiopalm.modeling.speech_llama import SpeechLlamaConfig
from audiopalm.tokenizers.base import AudioTokenizer
from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
TINY_CONFIGS = {
    name: CONFIGS / f"{name}_tiny.yaml" for name in ("pretrain_text", "finetune_audiopalm", "finetune_speech_llama")
}
"""The tiny YAML config of each recipe that the tests run."""
SR = 16000
"""Hz of every test waveform."""
TINY_MEL = dict(n_mels=40, n_fft=400, win_length=400, hop_length=160, stack=2, griffin_lim_iters=8, nnls_iters=5)
"""A small mel_rvq codec config: 40 mels, 10 ms hop, 2 frames stacked -> 50 Hz code frames of 80 values."""

# ---- text tokenizers and codecs ------------------------------------------------------------------------


def tiny_text_tokenizer(kind: str):
    """A real HF tokenizer class with a tiny vocabulary: llama (<s>, </s>, no pad, ▁ pieces),
    qwen2 (byte-level, no bos, pad = eos) or gpt2 (byte-level, bos = eos, no pad)."""
    if kind == "llama":
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3}
        for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éèàçñüöä.,'[]":
            vocab.setdefault(c, len(vocab))
        return LlamaTokenizer(vocab=vocab, merges=[])
    from tokenizers import pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    if kind == "qwen2":
        return Qwen2Tokenizer(vocab=vocab, merges=[])
    if kind == "gpt2":
        eot = "<|endoftext|>"
        return GPT2Tokenizer(vocab=vocab, merges=[], unk_token=eot, bos_token=eot, eos_token=eot)
    raise ValueError(kind)


class TinyCodec(AudioTokenizer):
    """A stand-in audio tokenizer: frames of 4 samples, codebook q's code = bucket of the frame mean."""

    type_name = "tiny_test_codec"

    def __init__(self, num_codebooks: int = 2, codebook_size: int = 8):
        super().__init__()
        self._k, self._c = num_codebooks, codebook_size
        self.scale = torch.nn.Parameter(torch.linspace(1.0, 2.0, num_codebooks))  # a weight to save

    sample_rate = property(lambda self: 16)
    frame_rate = property(lambda self: 4.0)
    num_codebooks = property(lambda self: self._k)
    codebook_size = property(lambda self: self._c)

    def encode(self, wav, lengths=None):
        frames = wav.unfold(-1, 4, 4).mean(-1)  # [B, F]
        codes = (
            ((frames.unsqueeze(1) * self.scale[:, None] + 1) * self._c / 2).long().clamp(0, self._c - 1)
        )  # [B, K, F]
        n = torch.full((wav.shape[0],), codes.shape[-1]) if lengths is None else lengths // 4
        return codes, n

    def decode(self, codes):
        return (codes.float().mean(1) / self._c * 2 - 1).repeat_interleave(4, dim=-1)  # [B, T]

    def get_config(self):
        return {"num_codebooks": self._k, "codebook_size": self._c}


# ---- tone "speech": one tone per character, for CTC encoders -------------------------------------------

TONES = {"a": 300.0, "b": 900.0, "é": 1800.0}


def say_tones(text: str, seed: int = 0) -> np.ndarray:
    """One tone of 0.25 s per character of ``TONES`` (a space: 0.1 s of silence), with a little noise, at ``SR``."""
    rng = np.random.default_rng(seed)
    parts = []
    for ch in text:
        n = int(SR * (0.1 if ch == " " else 0.25))
        t = np.arange(n) / SR
        parts.append(np.zeros(n) if ch == " " else 0.3 * np.sin(2 * np.pi * TONES[ch] * t))
    wav = np.concatenate([np.zeros(800), *parts, np.zeros(800)])
    return (wav + 0.005 * rng.standard_normal(len(wav))).astype(np.float32)


# ---- AudioPaLM checkpoints ---------------------------------------------------------------------------

TASKS = ["ASR", "AST", "TTS", "S2ST", "MT", "ASR AST", "ASR AST S2ST"]


def tone(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    """A test waveform [T]: a tone with a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_checkpoint(out_dir, *, tasks=TASKS, max_positions=512, audio_tokenizer=None, pattern="flatten"):
    """A 2-layer random Llama extended with a mel_rvq vocabulary (2 codebooks of 16), saved to out_dir."""
    torch.manual_seed(0)
    if audio_tokenizer is None:
        audio_tokenizer = MelRVQTokenizer.fit(
            [tone(1.5, f) for f in (220, 440, 880)],
            num_codebooks=2,
            codebook_size=16,
            kmeans_iters=3,
            progress=False,
            griffin_lim_iters=4,
            nnls_iters=2,
        )
    vocab = UnifiedVocab.build(
        tiny_text_tokenizer("llama"), audio_tokenizer=audio_tokenizer, pattern=pattern, tasks=tasks
    )
    cfg = transformers.LlamaConfig(
        vocab_size=len(vocab.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_positions,
    )
    model = extend_model(transformers.LlamaForCausalLM(cfg), vocab).eval()
    return save_checkpoint(model, vocab, audio_tokenizer, out_dir)


# ---- Speech-Llama models ------------------------------------------------------------------------------

N_MELS = 16

PAD, BOS, EOS = 0, 1, 2

WORDS = ["[ASR", "[AST", "English]", "English", "French]", "the", "cat", "dog", "sat", "ran", "le", "chat"]


def tiny_llm():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        initializer_range=0.3,
    )  # larger than usual: logits as sharp as a real LLM's
    return LlamaForCausalLM(cfg).eval()


def tiny_config(**kw) -> SpeechLlamaConfig:
    base: dict[str, Any] = dict(
        encoder="conformer",
        n_mels=N_MELS,
        encoder_dim=32,
        encoder_layers=2,
        encoder_heads=4,
        encoder_ffn_dim=64,
        conv_kernel=5,
        encoder_dropout=0.0,
        lora_dropout=0.0,
    )
    base.update(kw)
    return SpeechLlamaConfig(**base)


def tiny_tokenizer():
    """A word-level tokenizer: <pad>=0, <s>=1, </s>=2, <unk>=3, then WORDS; prepends <s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": 3} | {w: 4 + i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


# ---- corpora and recipe runs --------------------------------------------------------------------------

# A toy parallel grammar: (en, fr, es, de) words, so every sentence has aligned translations.
ADJ = [
    ("small", "petit", "pequeño", "kleine"),
    ("big", "grand", "grande", "große"),
    ("old", "vieux", "viejo", "alte"),
    ("red", "rouge", "rojo", "rote"),
]

NOUN = [
    ("dog", "chien", "perro", "Hund"),
    ("cat", "chat", "gato", "Katze"),
    ("bird", "oiseau", "pájaro", "Vogel"),
    ("man", "homme", "hombre", "Mann"),
]

VERB = [
    ("sleeps", "dort", "duerme", "schläft"),
    ("eats", "mange", "come", "isst"),
    ("runs", "court", "corre", "läuft"),
    ("sings", "chante", "canta", "singt"),
]

LANGS = ("en", "fr", "es", "de")


def sentence(adj, noun, verb, k: int) -> str:
    a, n, v = adj[k], noun[k], verb[k]
    return [f"the {a} {n} {v}.", f"le {a} {n} {v}.", f"el {n} {a} {v}.", f"der {a} {n} {v}."][k]


def write_corpus(folder: Path, *, train: int = 48, dev: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """A small 4-language parallel manifest pair (train.jsonl, dev.jsonl) with one tiny shared wav."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "wav" / "tone.wav"
    wav.parent.mkdir(exist_ok=True)
    sf.write(wav, (0.1 * np.sin(np.arange(1600) / 5.0)).astype("float32"), 16000)
    combos = list(itertools.product(ADJ, NOUN, VERB))
    random.Random(seed).shuffle(combos)
    paths = []
    for split, chunk in (("train", combos[:train]), ("dev", combos[train : train + dev])):
        recs = []
        for i, (a, n, v) in enumerate(chunk):
            k = i % 3 + 1  # English paired with fr / es / de in turn
            recs.append(
                Record(
                    id=f"{split}-{i:04d}",
                    lang="en",
                    text=sentence(a, n, v, 0),
                    audio=str(wav),
                    tgt_lang=LANGS[k],
                    tgt_text=sentence(a, n, v, k),
                    speaker="s0",
                    split=split,
                )
            )
        paths.append(write_manifest(folder / f"{split}.jsonl", recs))
    return paths[0], paths[1]


def recipe_env() -> dict:

    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def losses(out: Path) -> dict[int, float]:
    from audiopalm.training import read_jsonl

    return {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r}


def speak(text: str) -> np.ndarray:
    """A stand-in for speech: one 80 ms tone per word, its pitch a function of the word."""
    parts = []
    for word in text.strip(".").split():
        freq = 180 + 37 * (sum(word.encode()) % 40)
        t = np.arange(int(0.08 * SR)) / SR
        parts.append(0.3 * np.sin(2 * np.pi * freq * t))
    return np.concatenate(parts).astype(np.float32)


def build_world(root: Path, *, train: int = 12, dev: int = 3) -> dict[str, Path]:
    """Manifest (en<->fr/es/de rows sharing wavs, plus rows without a translation), text tokenizer, tiny Llama,
    a fitted 2-codebook mel_rvq tokenizer, its token store, and a second tokenizer (another fingerprint)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from audiopalm.data.tasks import tag_lines
    from audiopalm.data.text_tokenizer import train_text_tokenizer
    from audiopalm.data.token_store import build_token_store
    from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    combos = list(itertools.product(ADJ, NOUN, VERB))
    random.Random(0).shuffle(combos)
    records, waves, lines = [], [], []

    def wav_for(key: str, text: str) -> str:
        path = wav_dir / f"{key}.wav"
        if not path.exists():
            w = speak(text)
            sf.write(path, w, SR)
            waves.append(w)
        return str(path)

    for split, chunk in (("train", combos[:train]), ("dev", combos[train : train + dev])):
        for i, (a, n, v) in enumerate(chunk):
            k = i % 3 + 1
            en, xx = sentence(a, n, v, 0), sentence(a, n, v, k)
            en_wav, xx_wav = wav_for(f"{split}{i}_en", en), wav_for(f"{split}{i}_{LANGS[k]}", xx)
            records.append(
                Record(
                    id=f"{split}-{i}-en",
                    lang="en",
                    text=en,
                    audio=en_wav,
                    tgt_lang=LANGS[k],
                    tgt_text=xx,
                    tgt_audio=xx_wav,
                    split=split,
                )
            )
            records.append(
                Record(
                    id=f"{split}-{i}-{LANGS[k]}",
                    lang=LANGS[k],
                    text=xx,
                    audio=xx_wav,
                    tgt_lang="en",
                    tgt_text=en,
                    tgt_audio=en_wav,
                    split=split,
                )
            )
            lines += [en, xx, f"[MT English French] {en}<|sep|>{xx}"]
            if split == "train" and i < 2:  # as in the synthetic corpus: one English wav, two translations
                j = k % 3 + 1
                yy = sentence(a, n, v, j)
                records.append(
                    Record(
                        id=f"{split}-{i}-en-{LANGS[j]}",
                        lang="en",
                        text=en,
                        audio=en_wav,
                        tgt_lang=LANGS[j],
                        tgt_text=yy,
                        tgt_audio=wav_for(f"{split}{i}_{LANGS[j]}", yy),
                        split=split,
                    )
                )
                lines.append(yy)
    for i in range(2):  # monolingual rows: AST/S2ST/MT leave them out (counted), ASR/TTS use them
        text = f"the {ADJ[i][0]} {NOUN[i][0]} {VERB[i][0]} {VERB[i + 1][0]}."
        records.append(Record(id=f"mono-{i}", lang="en", text=text, audio=wav_for(f"mono{i}", text), split="train"))
    manifest = write_manifest(root / "manifest.jsonl", records)

    lm = root / "text_lm"
    tok = train_text_tokenizer(lines + tag_lines(), lm, vocab_size=400)
    config = LlamaConfig(
        vocab_size=math.ceil(len(tok) / 64) * 64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(1234)  # not the recipe's seed, so that model.from_scratch gives other weights
    AutoModelForCausalLM.from_config(config).save_pretrained(lm)
    # the same LM with exactly the tokenizer's rows: extending it grows the (tied) embedding, as for Llama 3.2 / Qwen2
    lm_exact = root / "text_lm_exact"
    tok.save_pretrained(lm_exact)
    config.vocab_size = len(tok)
    torch.manual_seed(1234)
    AutoModelForCausalLM.from_config(config).save_pretrained(lm_exact)

    opts: dict[str, Any] = dict(num_codebooks=2, codebook_size=16, n_mels=20, kmeans_iters=5, progress=False)
    audio_tok = MelRVQTokenizer.fit(waves, seed=0, **opts)
    audio_tok.save_pretrained(root / "mel_rvq")
    MelRVQTokenizer.fit(waves, seed=1, **opts).save_pretrained(root / "mel_rvq_other")
    build_token_store(manifest, audio_tok, root / "store", num_proc=1, progress=False)
    return {
        "lm": lm,
        "lm_exact": lm_exact,
        "tok": root / "mel_rvq",
        "other_tok": root / "mel_rvq_other",
        "store": root / "store",
        "manifest": manifest,
    }


def embedding_rows(model) -> int:
    """Rows of a transformers model's input embedding (its vocabulary as built, which may exceed the tokenizer's)."""
    return weight_of(model.get_input_embeddings()).shape[0]


def weight_of(module: torch.nn.Module | None) -> torch.Tensor:
    """The ``weight`` tensor of a model's embedding or LM head (``get_input_embeddings()``,
    ``get_output_embeddings()``), which ``nn.Module`` attribute access types as ``Tensor | Module``."""
    assert module is not None, "the model has no such module"
    weight = module.weight
    assert isinstance(weight, torch.Tensor), (type(module), type(weight))
    return weight


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def split_manifests(world: dict) -> dict:
    """train.jsonl / dev.jsonl beside the world's one manifest (the recipe trains on every row it is given)."""
    from audiopalm.data.manifest import read_manifest, write_manifest

    rows = read_manifest(world["manifest"])
    root = Path(world["manifest"]).parent
    for split in ("train", "dev"):
        write_manifest(root / f"{split}.jsonl", [r for r in rows if r.split == split])
    return {**world, "train": root / "train.jsonl", "dev": root / "dev.jsonl"}


def run_recipe_in_process(recipe: str, args: list[str]) -> None:
    """Run recipe ``audiopalm.recipes.<recipe>``'s ``main`` here (no interpreter start-up), then reset accelerate's
    singletons."""
    import importlib

    try:
        assert importlib.import_module(f"audiopalm.recipes.{recipe}").main(args) == 0
    finally:
        reset_accelerate()


def pretrain_text_args(corpus: tuple[Path, Path], out: Path) -> list[str]:
    """pretrain_text's command line for a :func:`write_corpus` pair, writing into ``out``."""
    train, dev = corpus
    return [
        "--config",
        str(TINY_CONFIGS["pretrain_text"]),
        f"data.manifests=[{train},{dev}]",
        f"train.output_dir={out}",
    ]


def finetune_audiopalm_args(world: dict, out: Path) -> list[str]:
    """finetune_audiopalm's command line for a :func:`build_world`, writing into ``out``."""
    return [
        "--config",
        str(TINY_CONFIGS["finetune_audiopalm"]),
        f"model.name_or_path={world['lm']}",
        f"model.audio_tokenizer={world['tok']}",
        f"data.stores=[{world['store']}]",
        f"train.output_dir={out}",
    ]


def finetune_speech_llama_args(world: dict, out: Path) -> list[str]:
    """finetune_speech_llama's command line for a :func:`split_manifests` world, writing into ``out``."""
    return [
        "--config",
        str(TINY_CONFIGS["finetune_speech_llama"]),
        f"model.llm={world['lm']}",
        f"data.train_manifests=[{world['train']}]",
        f"data.dev_manifest={world['dev']}",
        f"train.output_dir={out}",
    ]
