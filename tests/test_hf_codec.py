"""HFCodecTokenizer on tiny random-weight EnCodec / Mimi / DAC models built from configs (never downloaded)."""

import json
import time

import pytest
import torch

from audiopalm.tokenizers.base import CONFIG_NAME, load_audio_tokenizer
from audiopalm.tokenizers.hf_codec import HFCodecTokenizer

SR = 8000


def _tiny_model(kind: str):
    """A codec with every dimension shrunk: ~10k parameters, builds in milliseconds."""
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel, MimiConfig, MimiModel

    conv: dict = dict(
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[4, 4],
        kernel_size=3,
        last_kernel_size=3,
        residual_kernel_size=3,
        codebook_size=64,
        codebook_dim=16,
    )
    model: torch.nn.Module
    if kind == "encodec":  # frame rate 500 Hz, 6 bits per code -> 3 kbps per codebook
        model = EncodecModel(
            EncodecConfig(
                sampling_rate=SR,
                target_bandwidths=[3.0, 6.0, 12.0],
                normalize=False,
                chunk_length_s=None,
                num_lstm_layers=1,
                **conv,
            )
        )
    elif kind == "mimi":
        model = MimiModel(
            MimiConfig(
                sampling_rate=SR,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=8,
                intermediate_size=32,
                num_quantizers=4,
                num_semantic_quantizers=1,
                vector_quantization_hidden_dimension=16,
                upsample_groups=16,
                sliding_window=16,
                max_position_embeddings=256,
                **conv,
            )
        )
    else:
        model = DacModel(
            DacConfig(
                sampling_rate=SR,
                encoder_hidden_size=4,
                downsampling_ratios=[2, 4],  # (DacConfig derives upsampling_ratios and hidden_size from these)
                decoder_hidden_size=8,
                n_codebooks=3,
                codebook_size=64,
                codebook_dim=4,
            )
        )
    # random codebooks (EnCodec initialises them to zeros, which would make every code 0)
    with torch.no_grad():
        for name, buf in list(model.named_buffers()) + list(model.named_parameters()):
            if name.endswith("embed") or name.endswith("embed_sum") or "codebook.weight" in name:
                buf.copy_(torch.randn_like(buf))
            if name.endswith("cluster_usage"):
                buf.fill_(1.0)
    return model.eval()


@pytest.fixture(scope="module", params=["encodec", "mimi", "dac"])
def codec_dir(request, tmp_path_factory):
    import transformers  # noqa: F401  (import time is not build time)

    _tiny_model(request.param)  # warm up lazy imports
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = _tiny_model(request.param)
    assert time.perf_counter() - t0 < 2.0, "tiny codec should build in well under 2 s"
    path = tmp_path_factory.mktemp(request.param) / "hf"
    model.save_pretrained(path)
    return request.param, path


def _wavs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.3 * torch.randn(n, generator=g) for n in lengths]


def _pad(wavs):
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, lengths


def test_load_by_path_shapes_range_frame_rate(codec_dir):
    kind, path = codec_dir
    tok = load_audio_tokenizer(path)  # a bare HF folder goes through from_codec
    assert isinstance(tok, HFCodecTokenizer) and tok.model_type == kind
    assert tok.sample_rate == SR
    expected_k = {"encodec": 4, "mimi": 4, "dac": 3}[kind]  # encodec: largest bandwidth 12 kbps = 4 x 3 kbps
    assert tok.num_codebooks == expected_k and tok.codebook_size == 64
    wav = _wavs([SR // 2])[0][None]  # half a second
    codes, frames = tok.encode(wav)
    assert codes.shape == (1, expected_k, int(frames[0])), (codes.shape, frames)
    assert codes.dtype == torch.long and 0 <= int(codes.min()) and int(codes.max()) < 64
    assert len(torch.unique(codes)) > 1, "random codebooks should give varied codes"
    # frames per second of audio equals the advertised frame rate (within one frame of edge padding)
    assert abs(int(frames[0]) - tok.frame_rate / 2) <= 1, (int(frames[0]), tok.frame_rate)
    out = tok.decode(codes)
    assert out.shape == (1, int(frames[0]) * tok.hop_length) and torch.isfinite(out).all()
    out2 = tok.decode(codes[:, :1])  # the first codebook alone also decodes
    assert out2.shape == out.shape


def test_code_vectors_sum_to_the_quantizers_latent(codec_dir):
    """A frame's latent (what the codec's quantizer decodes its K codes into) is the sum of the codes' vectors."""
    kind, path = codec_dir
    tok = HFCodecTokenizer.from_codec(path)
    vectors = tok.code_vectors()
    k, c = tok.num_codebooks, tok.codebook_size
    assert vectors.shape[:2] == (k, c)
    codes = torch.randint(0, c, (1, k, 5), generator=torch.Generator().manual_seed(0))  # [1, K, F]
    q = tok.model.quantizer
    with torch.no_grad():
        if kind == "encodec":
            latent = q.decode(codes.transpose(0, 1))  # [K, B, F] -> [B, D, F]
        elif kind == "dac":
            latent = q.from_codes(codes)[0]
        else:
            latent = q.decode(codes)
    want = torch.stack([vectors[i][codes[0, i]] for i in range(k)]).sum(0)  # [F, D]
    assert torch.allclose(latent[0].T, want, atol=1e-4), (latent[0].T - want).abs().max()


def test_batch_equals_per_item(codec_dir):
    _, path = codec_dir
    tok = HFCodecTokenizer.from_codec(path)
    wavs = _wavs([1000, 1603, 777, 1603])
    batch, lengths = _pad(wavs)
    batch[0, 1000:] = 0.7  # garbage in the padding must not matter
    codes, frames = tok.encode(batch, lengths)
    for i, w in enumerate(wavs):
        one, f1 = tok.encode(w[None])
        assert int(f1[0]) == int(frames[i]), (i, f1, frames)
        assert torch.equal(one[0], codes[i, :, : int(frames[i])]), f"item {i} differs between batch and single"
        assert (codes[i, :, int(frames[i]) :] == 0).all()


def test_save_from_pretrained_round_trip(codec_dir, tmp_path):
    kind, path = codec_dir
    kwargs = {"bandwidth": 6.0} if kind == "encodec" else {"num_codebooks": 2}
    tok = HFCodecTokenizer.from_codec(path, **kwargs)
    assert tok.num_codebooks == 2
    tok.save_pretrained(tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / CONFIG_NAME).read_text())
    assert meta["type"] == "hf_codec" and meta["fingerprint"] == tok.fingerprint
    assert (tmp_path / "tok" / "codec" / "model.safetensors").is_file()
    assert not list((tmp_path / "tok").rglob("*.bin")), "safetensors only"
    back = load_audio_tokenizer(tmp_path / "tok")
    assert back.num_codebooks == 2 and back.fingerprint == tok.fingerprint
    wav = _wavs([1234])[0][None]
    assert torch.equal(back.encode(wav)[0], tok.encode(wav)[0])


def test_pinned_hub_codec_is_referenced_not_copied(codec_dir, tmp_path, monkeypatch):
    """A codec from the hub at a known revision is saved as a reference (id + revision, no ``codec/`` copy) and
    fetched again at load time (here: the "hub" is the local folder, offline); ``copy_weights=True`` copies it.
    A local codec is copied and recorded by its folder name, never its absolute path."""
    kind, path = codec_dir
    kwargs = {"bandwidth": 6.0} if kind == "encodec" else {"num_codebooks": 2}
    fetched = []
    real = HFCodecTokenizer.from_codec  # the original, bound to the class before the patch

    def from_codec(cls, name_or_path, **kw):
        if str(name_or_path) == "org/tiny-codec":  # the fake hub: this id at this revision is the local folder
            assert kw.get("revision") == "abc123", kw
            fetched.append(kw["revision"])
            tok = real(path, **{k: v for k, v in kw.items() if k != "revision"})
            tok.source, tok.revision = "org/tiny-codec", "abc123"
            return tok
        return real(name_or_path, **kw)

    monkeypatch.setattr(HFCodecTokenizer, "from_codec", classmethod(from_codec))
    tok = HFCodecTokenizer.from_codec("org/tiny-codec", revision="abc123", **kwargs)
    tok.save_pretrained(tmp_path / "ref")
    meta = json.loads((tmp_path / "ref" / CONFIG_NAME).read_text())
    assert not (tmp_path / "ref" / "codec").exists() and meta["weights_copied"] is False
    assert meta["config"]["source"] == "org/tiny-codec" and meta["config"]["revision"] == "abc123"
    back = load_audio_tokenizer(tmp_path / "ref")
    assert fetched == ["abc123", "abc123"] and back.fingerprint == tok.fingerprint
    tok.copy_weights = True
    tok.save_pretrained(tmp_path / "copied")
    assert (tmp_path / "copied" / "codec" / "model.safetensors").is_file()
    local = HFCodecTokenizer.from_codec(path, **kwargs)
    local.save_pretrained(tmp_path / "local")
    saved = json.loads((tmp_path / "local" / CONFIG_NAME).read_text())["config"]["source"]
    assert saved == f"local:{path.name}" and (tmp_path / "local" / "codec").is_dir()


def test_fingerprint_sees_weights_and_options(codec_dir):
    kind, path = codec_dir
    a = HFCodecTokenizer.from_codec(path)
    b = HFCodecTokenizer.from_codec(path, **({"bandwidth": 3.0} if kind == "encodec" else {"num_codebooks": 1}))
    assert a.fingerprint != b.fingerprint
    c = HFCodecTokenizer.from_codec(path)
    with torch.no_grad():
        next(c.model.parameters()).add_(1e-3)
    assert a.fingerprint != c.fingerprint


def test_bad_options_are_clear(codec_dir):
    kind, path = codec_dir
    if kind == "encodec":
        with pytest.raises(ValueError, match="bandwidth=5.0"):
            HFCodecTokenizer.from_codec(path, bandwidth=5.0)
    else:
        with pytest.raises(ValueError, match="num_codebooks=9"):
            HFCodecTokenizer.from_codec(path, num_codebooks=9)
    tok = HFCodecTokenizer.from_codec(path)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode(torch.full((1, 1, 4), 64))


def test_not_a_codec_folder(tmp_path):
    with pytest.raises(ValueError, match="nor a transformers codec folder"):
        load_audio_tokenizer(tmp_path)
