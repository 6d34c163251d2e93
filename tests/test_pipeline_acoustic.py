"""A checkpoint whose audio tokens are semantic units (no decoder) speaks through the acoustic stage it holds."""

from typing import Any

import numpy as np
import pytest
import torch
import transformers
from builders import tiny_text_tokenizer, tone

from audiopalm.acoustic import AcousticConfig, AcousticStage
from audiopalm.acoustic.model import ConvBlock
from audiopalm.data.vocab import UnifiedVocab
from audiopalm.inference.pipeline import AudioPaLM, PipelineError
from audiopalm.modeling.extend import extend_model, save_checkpoint
from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer
from audiopalm.tokenizers.semantic import SemanticTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread

SR = 16000
# 50 Hz on both sides: MFCC units hop 320 samples; the codec 160-sample hop x 2 stacked frames
CODEC = dict(n_mels=40, n_fft=400, win_length=400, hop_length=160, stack=2, griffin_lim_iters=4, nnls_iters=2)
TINY_STAGE = AcousticConfig(hidden_size=32, num_blocks=2, dilations=(1, 2), voice_dim=8, voice_hidden=8)


@pytest.fixture(scope="module")
def parts():
    """(units tokenizer, acoustic stage, model, vocab) built from tones; nothing trained beyond the fits."""
    torch.manual_seed(0)
    waves = [tone(1.2, f) for f in (220, 330, 440, 660, 880)]
    units = SemanticTokenizer(features="mfcc", num_units=8, sample_rate=SR).fit(waves, iters=3, progress=False)
    codec = MelRVQTokenizer.fit(waves, num_codebooks=1, codebook_size=8, kmeans_iters=3, progress=False, **CODEC)
    assert units.frame_rate == codec.frame_rate == 50
    stage = AcousticStage.build(TINY_STAGE, codec, units, max_prompt_frames=20).eval()
    for block in stage.model.blocks:  # FiLM starts as the identity; a trained stage hears the voice
        assert isinstance(block, ConvBlock) and block.film is not None, block
        torch.nn.init.normal_(block.film.weight, std=0.5)
    vocab = UnifiedVocab.build(tiny_text_tokenizer("llama"), audio_tokenizer=units, tasks=["TTS", "S2ST"])
    cfg = transformers.LlamaConfig(
        vocab_size=len(vocab.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    model = extend_model(transformers.LlamaForCausalLM(cfg), vocab).eval()
    return units, stage, model, vocab


def test_units_alone_cannot_speak(parts, tmp_path):
    units, _, model, vocab = parts
    pipe = AudioPaLM.from_pretrained(save_checkpoint(model, vocab, units, tmp_path / "ckpt"), device="cpu")
    assert pipe.acoustic is None and not pipe.can_speak
    with pytest.raises(PipelineError, match="no acoustic stage"):
        pipe.tts("the dog.", "en", max_new_tokens=8)


def test_checkpoint_holding_both_models_speaks(parts, tmp_path):
    units, stage, model, vocab = parts
    folder = AudioPaLM(model, vocab, units, acoustic=stage).save_pretrained(tmp_path / "ckpt")
    assert (folder / "acoustic" / "acoustic.json").is_file()
    pipe = AudioPaLM.from_pretrained(folder, device="cpu")  # no extra argument: the stage comes with it
    assert pipe.acoustic is not None and pipe.can_speak
    out = pipe.tts("the dog.", "en", max_new_tokens=11, speech_sampling=None)  # audio_start + 10 units
    assert out.codes.shape == (1, 10)
    assert out.sample_rate == SR and out.audio.dtype == np.float32
    assert out.audio.size == 10 * 320  # one codec frame (320 samples) per unit
    # the stage alone gives the same waveform for the same units and voice
    alone = stage.synthesize(out.codes)[0].numpy()
    np.testing.assert_allclose(out.audio, alone, rtol=0, atol=1e-6)
    # another voice (a prompt waveform) changes the sound, not the units
    other = pipe.tts("the dog.", "en", max_new_tokens=11, speech_sampling=None, voice=tone(1.0, 150))
    assert torch.equal(other.codes, out.codes) and not np.allclose(other.audio, out.audio)


def test_s2st_can_keep_the_source_voice(parts, tmp_path):
    units, stage, model, vocab = parts
    pipe = AudioPaLM(model, vocab, units, acoustic=stage, device="cpu")
    src = tone(0.8, 200)
    kw: dict[str, Any] = {"chained": False, "max_new_tokens": 9, "speech_sampling": None}
    kept = pipe.s2st(src, "en", "fr", voice="source", **kw)
    given = pipe.s2st(src, "en", "fr", voice=src, **kw)  # the same prompt given explicitly
    np.testing.assert_allclose(kept.audio, given.audio, rtol=0, atol=1e-6)
    default = pipe.s2st(src, "en", "fr", **kw)
    assert torch.equal(default.codes, kept.codes) and not np.allclose(default.audio, kept.audio)
    with pytest.raises(PipelineError, match="no input speech"):
        pipe.tts("the dog.", "en", voice="source", max_new_tokens=4)


def test_a_stage_for_other_units_is_refused(parts):
    units, stage, model, vocab = parts
    other = SemanticTokenizer(features="mfcc", num_units=8, sample_rate=SR).fit(
        [tone(1.0, f) for f in (300, 500, 700)], iters=2, seed=1, progress=False
    )
    with pytest.raises(PipelineError, match="trained on units of audio tokenizer"):
        AudioPaLM(model, UnifiedVocab.build(tiny_text_tokenizer("llama"), audio_tokenizer=other), other, acoustic=stage)
