"""SemanticTokenizer: MFCC units and SSL-layer units (tiny random HuBERT / wav2vec 2.0 built from configs)."""

import json
from typing import TypedDict

import numpy as np
import pytest
import torch

from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer
from audiopalm.tokenizers.semantic import SemanticConfig, SemanticTokenizer, add_deltas

SR = 16000


def _tone_wavs(n=6, seconds=0.5, seed=0):
    """Noisy tones of different pitch: features that k-means can tell apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return [
        (0.3 * np.sin(2 * np.pi * (150 + 120 * i) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        for i in range(n)
    ]


def _pad(wavs):
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = torch.as_tensor(w)
    return batch, lengths


@pytest.fixture(scope="module")
def mfcc_tok():
    return SemanticTokenizer(num_units=8).fit(_tone_wavs(), progress=False)


def test_mfcc_units_shapes_range_and_rate(mfcc_tok):
    assert mfcc_tok.num_codebooks == 1 and mfcc_tok.codebook_size == 8 and mfcc_tok.frame_rate == 50.0
    assert mfcc_tok.dim == 39 and not mfcc_tok.can_decode
    wav = torch.as_tensor(_tone_wavs(1, seconds=1.0)[0])[None]
    codes, frames = mfcc_tok.encode(wav)
    assert codes.shape == (1, 1, 51) and frames.tolist() == [51]  # 1 + T // hop with centred frames
    assert 0 <= int(codes.min()) and int(codes.max()) < 8
    # different tones get different units; one steady tone mostly one unit
    a = mfcc_tok.encode(torch.as_tensor(_tone_wavs()[0])[None])[0][0, 0, 3:-3]
    b = mfcc_tok.encode(torch.as_tensor(_tone_wavs()[5])[None])[0][0, 0, 3:-3]
    assert torch.mode(a).values != torch.mode(b).values


def test_mfcc_batch_equals_per_item(mfcc_tok):
    wavs = [w[:n] for w, n in zip(_tone_wavs(3), (8000, 5000, 3333), strict=True)]
    batch, lengths = _pad(wavs)
    codes, frames = mfcc_tok.encode(batch, lengths)
    for i, w in enumerate(wavs):
        one, f = mfcc_tok.encode(torch.as_tensor(w)[None])
        assert int(f[0]) == int(frames[i])
        assert torch.equal(one[0], codes[i, :, : int(f[0])])
        assert (codes[i, :, int(f[0]) :] == 0).all()


def test_code_vectors_are_the_centroids(mfcc_tok):
    wav, lengths = _pad(_tone_wavs(2))
    codes, frames = mfcc_tok.encode(wav, lengths)
    feats, _ = mfcc_tok.features(wav, lengths)
    vectors = mfcc_tok.code_vectors()
    assert vectors.shape == (1, mfcc_tok.codebook_size, mfcc_tok.dim)
    # every frame's unit is its nearest centroid (in the standardised feature space)
    z = (feats[0, : frames[0]] - mfcc_tok.mean) / mfcc_tok.std
    assert torch.equal(torch.cdist(z, vectors[0]).argmin(-1), codes[0, 0, : frames[0]])


def test_decode_refuses_clearly(mfcc_tok):
    with pytest.raises(NotImplementedError, match="no decoder"):
        mfcc_tok.decode(torch.zeros(1, 1, 5, dtype=torch.long))


def test_unfitted_encode_refuses():
    with pytest.raises(RuntimeError, match="not fitted"):
        SemanticTokenizer(num_units=4).encode(torch.zeros(1, 1600))


def test_mfcc_round_trip(mfcc_tok, tmp_path):
    mfcc_tok.save_pretrained(tmp_path / "sem")
    assert json.loads((tmp_path / "sem" / CONFIG_NAME).read_text())["type"] == "semantic"
    back = load_audio_tokenizer(tmp_path / "sem")
    assert back.fingerprint == mfcc_tok.fingerprint
    wav = torch.as_tensor(_tone_wavs(2)[1])[None]
    assert torch.equal(back.encode(wav)[0], mfcc_tok.encode(wav)[0])
    other = SemanticTokenizer(num_units=8).fit(_tone_wavs(seed=1), progress=False, seed=3)
    assert other.fingerprint != mfcc_tok.fingerprint


def test_fit_on_a_manifest(tmp_path):
    import soundfile as sf

    from audiopalm.data.manifest import Record, write_manifest

    rows = []
    for i, w in enumerate(_tone_wavs(4)):
        sf.write(tmp_path / f"{i}.wav", w, SR)
        rows.append(
            Record(id=str(i), lang="en", text="x", audio=str(tmp_path / f"{i}.wav"), split="train" if i < 3 else "dev")
        )
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    tok = SemanticTokenizer(num_units=4).fit(manifest, split="train", progress=False)
    same = SemanticTokenizer(num_units=4).fit([str(tmp_path / f"{i}.wav") for i in range(3)], progress=False)
    assert tok.fingerprint == same.fingerprint  # the manifest's train rows, read from their files
    with pytest.raises(ValueError, match="split 'test'"):
        SemanticTokenizer(num_units=4).fit(manifest, split="test", progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="features="):
        SemanticConfig(features="wavelets")
    with pytest.raises(ValueError, match="ssl_model"):
        SemanticConfig(features="ssl")
    with pytest.raises(ValueError, match="n_mfcc=50"):
        SemanticConfig(n_mfcc=50)


def test_deltas_of_a_ramp_are_its_slope():
    x = torch.arange(10.0)[:, None] * 3.0  # [F, 1], slope 3
    d = add_deltas(x)
    assert torch.allclose(d[2:-2], torch.full((6, 1), 3.0))


class SmallSSL(TypedDict):
    """The sizes of a tiny HuBERT or wav2vec 2.0 (their configs share these fields)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    conv_dim: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int


@pytest.fixture(scope="module", params=["hubert-group-norm", "wav2vec2-layer-norm", "w2v-bert-fbank"])
def ssl_dir(request, tmp_path_factory):
    from transformers import (
        HubertConfig,
        HubertModel,
        PreTrainedModel,
        SeamlessM4TFeatureExtractor,
        Wav2Vec2BertConfig,
        Wav2Vec2BertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    model: PreTrainedModel
    small = SmallSSL(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 64),
        conv_kernel=(10, 64),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param) / "ssl"
    if request.param.startswith("w2v-bert"):  # log-mel fbank input, 2 frames of 10 ms stacked: 50 Hz
        model = Wav2Vec2BertModel(
            Wav2Vec2BertConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                feature_projection_input_dim=160,
                conv_depthwise_kernel_size=3,
                add_adapter=False,
            )
        )
        model.eval().save_pretrained(path)
        SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SR, stride=2).save_pretrained(path)
        return path
    if request.param.startswith("hubert"):
        model = HubertModel(HubertConfig(feat_extract_norm="group", **small))
    else:
        model = Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **small))
    model.eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, do_normalize=True, return_attention_mask=True
    ).save_pretrained(path)
    return path


def test_ssl_units(ssl_dir, tmp_path):
    tok = SemanticTokenizer(features="ssl", ssl_model=str(ssl_dir), layer=1, num_units=4)
    tok.fit(_tone_wavs(), progress=False)
    assert tok.dim == 16 and tok.frame_rate == 50.0  # 16 kHz / (5 * 64) = 50 frames per second
    wavs = [w[:n] for w, n in zip(_tone_wavs(3), (8000, 4800, 6400), strict=True)]
    batch, lengths = _pad(wavs)
    codes, frames = tok.encode(batch, lengths)
    # conv front end: 400-sample receptive field, no padding; w2v-bert: 25 ms fbank frames, stacked in pairs
    assert codes.shape[:2] == (3, 1) and frames.tolist() == [24, 14, 19]
    assert 0 <= int(codes.min()) and int(codes.max()) < 4
    for i, w in enumerate(wavs):  # batch == per item, for group norm (equal-length groups) and layer norm (mask)
        one, f = tok.encode(torch.as_tensor(w)[None])
        assert int(f[0]) == int(frames[i]) and torch.equal(one[0], codes[i, :, : int(f[0])]), i
    tok.save_pretrained(tmp_path / "sem")
    assert (tmp_path / "sem" / "ssl" / "model.safetensors").is_file()
    back = load_audio_tokenizer(tmp_path / "sem")
    assert isinstance(back, SemanticTokenizer), back
    assert back.fingerprint == tok.fingerprint and back.config.ssl_model == str(ssl_dir)
    assert torch.equal(back.encode(batch, lengths)[0], codes)


def test_ssl_layer_out_of_range(ssl_dir):
    with pytest.raises(ValueError, match="layer=7"):
        SemanticTokenizer(features="ssl", ssl_model=str(ssl_dir), layer=7)
