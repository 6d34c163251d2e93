"""The built-in mel_rvq codec and its k-means: tiny fits on synthetic speech-like signals."""

import math

import numpy as np
import pytest
import torch

from audiopalm.tokenizers.base import load_audio_tokenizer
from audiopalm.tokenizers.kmeans import kmeans, nearest
from audiopalm.tokenizers.mel_rvq import MelRVQConfig, MelRVQTokenizer, mel_filterbank

SR = 16000
# small but real: 40 mels, 10 ms hop, 2 frames stacked -> 50 Hz code frames of 80 dims
TINY = dict(n_mels=40, n_fft=400, win_length=400, hop_length=160, stack=2, griffin_lim_iters=16, nnls_iters=10)


def voice(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A vowel-like signal [T]: a gliding harmonic tone with formant-ish weights, plus noise bursts."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formant = rng.uniform(300, 2500)
    wav = sum(np.exp(-(((h * f0.mean() - formant) / 600) ** 2)) * np.sin(h * phase) for h in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    noise = rng.normal(0, 0.05, t.size) * (np.sin(2 * np.pi * 3 * t) > 0.7)
    wav = envelope * wav + noise
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [voice(rng.uniform(0.6, 1.4), rng) for _ in range(12)]


@pytest.fixture(scope="module")
def tok(corpus) -> MelRVQTokenizer:
    return MelRVQTokenizer.fit(
        corpus, num_codebooks=8, codebook_size=16, seed=0, kmeans_iters=10, progress=False, **TINY
    )


def pad_batch(waves):
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths


# ----------------------------------------------------------------------------- k-means


def test_nearest_matches_brute_force():
    x, c = torch.randn(300, 7), torch.randn(11, 7)
    idx, dist = nearest(x, c, chunk=64)
    full = torch.cdist(x, c) ** 2  # [300, 11]
    assert torch.equal(idx, full.argmin(1))
    torch.testing.assert_close(dist, full.min(1).values, rtol=1e-4, atol=1e-4)


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]])  # sorted by (x, y)
    x = (centres[:, None] + 0.1 * torch.randn(4, 50, 2, generator=gen)).reshape(-1, 2)
    a = kmeans(x, 4, iters=10, seed=3)
    b = kmeans(x, 4, iters=10, seed=3)
    assert torch.equal(a.centroids, b.centroids)
    found = torch.tensor(sorted(a.centroids.tolist(), key=lambda p: (round(p[0]), round(p[1]))))
    torch.testing.assert_close(found, centres, atol=0.1, rtol=0)
    assert a.inertia < 0.05


def test_kmeans_reseeds_dead_codes():
    # 3 tight clusters, 6 codes: k-means++ may seed two codes in one spot; none may stay empty
    x = torch.cat([torch.full((20, 2), v) + 0.01 * torch.randn(20, 2) for v in (0.0, 5.0, 9.0)])
    res = kmeans(x, 6, iters=15, seed=0)
    counts = torch.bincount(res.assignments, minlength=6)
    assert (counts > 0).sum() >= 3, counts
    assert res.inertia < 1e-3


def test_kmeans_rejects_too_few_points():
    with pytest.raises(ValueError, match="k=8 with 5 points"):
        kmeans(torch.randn(5, 3), 8)


# ----------------------------------------------------------------------------- features


def test_mel_filterbank_covers_spectrum():
    fb = mel_filterbank(SR, 512, 80, 0.0, SR / 2, "slaney")  # [257, 80]
    assert fb.shape == (257, 80) and (fb >= 0).all()
    assert (fb.sum(0) > 0).all(), "an empty mel filter"
    centres = fb.argmax(0)
    assert (centres[1:] >= centres[:-1]).all(), "filters are not in frequency order"
    htk = mel_filterbank(SR, 512, 40, 0.0, SR / 2, "htk")
    assert htk.shape == (257, 40) and math.isclose(float(htk.max()), 1.0, abs_tol=0.05)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="hop_length"):
        MelRVQConfig(hop_length=400, win_length=512)
    with pytest.raises(ValueError, match="mel_scale"):
        MelRVQConfig(mel_scale="bark")
    with pytest.raises(ValueError, match="codebook_size"):
        MelRVQConfig(codebook_size=1)


def test_unfitted_tokenizer_refuses_to_encode():
    with pytest.raises(RuntimeError, match="not been fitted"):
        MelRVQTokenizer(**TINY).encode(torch.zeros(1, 1600))


# ----------------------------------------------------------------------------- encode


def test_encode_shapes_range_and_lengths(tok, corpus):
    batch, lengths = pad_batch(corpus[:3])
    codes, frame_lengths = tok.encode(batch, lengths)
    per_frame = tok.samples_per_frame  # 160 * 2
    expected = [math.ceil(n / per_frame) for n in lengths.tolist()]
    assert codes.dtype == torch.long and frame_lengths.dtype == torch.long
    assert codes.shape == (3, 8, max(expected))
    assert frame_lengths.tolist() == expected
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert tok.frame_rate == 50.0 and tok.tokens_per_second(2) == 100.0


def test_batch_equals_per_item(tok, corpus):
    waves = corpus[3:7]
    batch, lengths = pad_batch(waves)
    codes, frame_lengths = tok.encode(batch, lengths)
    for i, w in enumerate(waves):
        alone, n = tok.encode(torch.from_numpy(w)[None])
        assert int(n[0]) == int(frame_lengths[i])
        assert torch.equal(codes[i, :, : int(n[0])], alone[0]), f"item {i} differs in a batch"


def test_encode_fewer_codebooks_is_a_prefix(tok, corpus):
    wav = torch.from_numpy(corpus[0])[None]
    full, _ = tok.encode(wav)
    first3, _ = tok.encode(wav, num_codebooks=3)
    assert torch.equal(first3, full[:, :3])
    with pytest.raises(ValueError, match="num_codebooks must be in 1..8"):
        tok.encode(wav, num_codebooks=9)


def test_code_vectors_are_what_dequantize_sums(tok):
    vectors = tok.code_vectors()
    assert vectors.shape == (tok.num_codebooks, tok.codebook_size, tok.config.dim)
    codes = torch.tensor([[[3], [7]]])  # one frame: code 3 of codebook 0, code 7 of codebook 1
    assert torch.allclose(tok.dequantize(codes)[0, 0], vectors[0, 3] + vectors[1, 7])
    with pytest.raises(RuntimeError, match="not been fitted"):
        MelRVQTokenizer(num_codebooks=2, codebook_size=8).code_vectors()


def test_error_falls_as_codebooks_are_added(tok, corpus):
    batch, lengths = pad_batch(corpus)
    x, n = tok.features(batch, lengths)  # [B, F, D]
    valid = torch.arange(x.shape[1])[None] < n[:, None]  # [B, F]
    errors = []
    for k in (1, 2, 4, 8):
        xq = tok.dequantize(tok.quantize(x, k))
        l1 = (tok.features_to_log_mel(xq) - tok.features_to_log_mel(x)).abs()  # [B, M, n_mels]
        errors.append(float(l1.reshape(x.shape[0], x.shape[1], -1)[valid].mean()))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors


# ----------------------------------------------------------------------------- fit, save, load


def test_fit_is_deterministic_for_a_seed(tok, corpus):
    again = MelRVQTokenizer.fit(
        corpus, num_codebooks=8, codebook_size=16, seed=0, kmeans_iters=10, progress=False, **TINY
    )
    assert again.fingerprint == tok.fingerprint
    assert torch.equal(again.codebooks, tok.codebooks)
    other = MelRVQTokenizer.fit(
        corpus, num_codebooks=8, codebook_size=16, seed=1, kmeans_iters=10, progress=False, **TINY
    )
    assert other.fingerprint != tok.fingerprint


def test_fit_needs_enough_frames(corpus):
    with pytest.raises(ValueError, match="fewer than codebook_size=4096"):
        MelRVQTokenizer.fit(corpus[:1], codebook_size=4096, progress=False, **TINY)


def test_save_load_round_trip(tok, corpus, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "audio_tokenizer.safetensors").is_file()
    loaded = load_audio_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, MelRVQTokenizer)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.get_config() == tok.get_config()
    batch, lengths = pad_batch(corpus[:3])
    assert torch.equal(loaded.encode(batch, lengths)[0], tok.encode(batch, lengths)[0])


def test_fingerprint_changes_with_a_codebook(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    changed = MelRVQTokenizer.from_pretrained(tmp_path / "tok")
    assert changed.fingerprint == tok.fingerprint
    changed.codebooks[5, 3, 0] += 1e-3
    assert changed.fingerprint != tok.fingerprint


# ----------------------------------------------------------------------------- decode


def test_decode_length_finite_and_prefix_codebooks(tok, corpus):
    batch, lengths = pad_batch(corpus[:2])
    codes, frame_lengths = tok.encode(batch, lengths)
    for k in (1, 3, 8):
        wav = tok.decode(codes[:, :k])
        assert wav.shape == (2, codes.shape[2] * tok.samples_per_frame)
        assert torch.isfinite(wav).all() and float(wav.abs().max()) > 1e-3
    trimmed = tok.decode(codes, frame_lengths)
    short = int(frame_lengths.min()) * tok.samples_per_frame
    i = int(frame_lengths.argmin())
    assert short < trimmed.shape[1] and float(trimmed[i, short:].abs().sum()) == 0.0
    torch.testing.assert_close(trimmed[1 - i], tok.decode(codes)[1 - i])
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        tok.decode(codes + 16)


def test_decode_then_encode_keeps_the_frame_count(tok, corpus):
    codes, n = tok.encode(torch.from_numpy(corpus[0])[None])
    again, m = tok.encode(tok.decode(codes))
    assert again.shape == codes.shape and torch.equal(n, m)


def test_griffin_lim_recovers_a_consistent_spectrogram(tok, corpus):
    """Magnitude of a real signal -> Griffin-Lim -> its magnitude is close (spectral convergence)."""
    c = tok.config
    wav = torch.from_numpy(corpus[1])[None]
    wav = wav[:, : (wav.shape[1] // c.hop_length) * c.hop_length]

    def stft(w):
        return torch.stft(
            w, c.n_fft, c.hop_length, c.win_length, tok.window, center=True, pad_mode="constant", return_complex=True
        ).abs()

    mag = stft(wav)[:, :, :-1]  # [1, n_freq, M]: the frames griffin_lim is given
    out = tok.griffin_lim(mag)
    assert out.shape == wav.shape and torch.isfinite(out).all()
    convergence = float((stft(out)[:, :, :-1] - mag).norm() / mag.norm())
    full = torch.cat([mag, mag[:, :, -1:]], 2)  # [1, n_freq, M + 1]
    random_phase = torch.istft(
        torch.polar(full, torch.rand(full.shape) * 2 * math.pi),
        c.n_fft,
        c.hop_length,
        c.win_length,
        tok.window,
        center=True,
        length=wav.shape[1],
    )
    baseline = float((stft(random_phase)[:, :, :-1] - mag).norm() / mag.norm())
    assert convergence < 0.5 * baseline and convergence < 0.3, (convergence, baseline)


def test_mel_to_magnitude_inverts_the_filterbank(tok, corpus):
    """The non-negative least-squares magnitude reproduces the mel spectrogram it came from."""
    logmel, _ = tok.log_mel(torch.from_numpy(corpus[2])[None])  # [1, M, n_mels]
    mag = tok.log_mel_to_magnitude(logmel)  # [1, n_freq, M]
    assert (mag >= 0).all()
    mel_again = mag.transpose(1, 2) @ tok.mel_fb  # [1, M, n_mels]
    mel = logmel.exp()
    rel = float((mel_again - mel).norm() / mel.norm())
    assert rel < 0.1, rel


# ----------------------------------------------------------------------------- the fast decoder's parts


@pytest.mark.parametrize("n_fft,win_length,hop", [(400, 400, 160), (512, 400, 160), (256, 256, 64)])
def test_framed_stft_matches_torch_stft_and_istft(n_fft, win_length, hop):
    """The hand-framed STFT pair equals torch.stft / torch.istft (centred, zero-padded, one length)."""
    from audiopalm.tokenizers.mel_rvq import _FramedSTFT

    length = 37 * hop
    window = torch.hann_window(win_length)
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win_length, window=window, center=True)
    stft = _FramedSTFT(window, n_fft, hop, length)
    wav = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    want = torch.stft(wav, pad_mode="constant", return_complex=True, **kw)  # [2, n_freq, N]
    got = stft.forward(wav)  # [2, N, n_freq]
    torch.testing.assert_close(got.transpose(1, 2), want, atol=1e-4, rtol=1e-4)
    spec = torch.polar(torch.rand(want.shape), torch.rand(want.shape) * 2 * math.pi)  # inconsistent on purpose
    torch.testing.assert_close(stft.inverse(spec.transpose(1, 2)), torch.istft(spec, length=length, **kw))
    torch.testing.assert_close(stft.inverse(got), wav, atol=1e-5, rtol=1e-5)


def test_phase_gradient_init_follows_a_sinusoid_between_bins(tok):
    """For a steady tone between two bins, the starting phase advances per frame at the tone's frequency,
    not at the nearest bin's centre frequency (the 'advance' a zero-slope magnitude would give)."""
    from audiopalm.tokenizers.mel_rvq import phase_gradient_init

    c = tok.config
    freq = 1000.0 + 0.3 * SR / c.n_fft  # 0.3 bins above a bin centre
    wav = torch.sin(2 * math.pi * freq * torch.arange(SR // 2) / SR)[None]
    spec = torch.stft(
        wav, c.n_fft, c.hop_length, c.win_length, tok.window, center=True, pad_mode="constant", return_complex=True
    ).transpose(1, 2)  # [1, N, n_freq]
    phase = phase_gradient_init(spec.abs(), torch.zeros(spec.shape[2]), c.hop_length, c.n_fft, c.win_length)
    true_step = 2 * math.pi * freq * c.hop_length / SR
    mid = spec.shape[1] // 2  # away from the edges
    for k in (round(freq * c.n_fft / SR), round(freq * c.n_fft / SR) + 1):  # the two bins around the tone
        step = float(phase[0, mid + 1, k] - phase[0, mid, k])
        centre_step = 2 * math.pi * k * c.hop_length / c.n_fft
        err = abs(math.remainder(step - true_step, 2 * math.pi))
        assert err < 0.5 * abs(math.remainder(centre_step - true_step, 2 * math.pi)), (k, step, true_step)


def test_phase_gradient_start_needs_fewer_iterations_than_random(tok, corpus):
    c = tok.config

    def stft(w):
        return torch.stft(
            w, c.n_fft, c.hop_length, c.win_length, tok.window, center=True, pad_mode="constant", return_complex=True
        ).abs()

    for wav in corpus[:3]:
        wav = torch.from_numpy(wav)[None]
        wav = wav[:, : (wav.shape[1] // c.hop_length) * c.hop_length]
        mag = stft(wav)[:, :, :-1]  # [1, n_freq, M]
        err = {
            init: float((stft(tok.griffin_lim(mag, iters=4, init=init))[:, :, :-1] - mag).norm() / mag.norm())
            for init in ("phase_gradient", "random")
        }
        assert err["phase_gradient"] < 0.85 * err["random"], err
    with pytest.raises(ValueError, match="init must be"):
        tok.griffin_lim(mag, init="zero")


def test_griffin_lim_of_a_batch_equals_each_item_alone(tok, corpus):
    batch, _ = pad_batch(corpus[:2])
    logmel, _ = tok.log_mel(batch)  # [2, M, n_mels]: equal lengths (padding is silence)
    mag = tok.log_mel_to_magnitude(logmel)  # [2, n_freq, M]
    both = tok.griffin_lim(mag)
    for i in range(2):
        torch.testing.assert_close(both[i], tok.griffin_lim(mag[i : i + 1])[0], atol=1e-5, rtol=1e-5)


def test_more_nnls_iterations_never_fit_the_mel_worse(tok, corpus):
    """Lee & Seung's multiplicative updates do not increase the least-squares residual."""
    logmel, _ = tok.log_mel(torch.from_numpy(corpus[3])[None])
    mel = logmel.exp()
    res = [
        float((tok.log_mel_to_magnitude(logmel, nnls_iters=k).transpose(1, 2) @ tok.mel_fb - mel).norm())
        for k in (1, 5, 20)
    ]
    assert res[0] >= res[1] >= res[2], res


def test_decoder_settings_per_call(tok, corpus):
    """decode(..., griffin_lim_iters=, nnls_iters=) overrides the config for that call only."""
    codes, _ = tok.encode(torch.from_numpy(corpus[0])[None])
    default = tok.decode(codes)
    fewer = tok.decode(codes, griffin_lim_iters=2, nnls_iters=0)
    assert fewer.shape == default.shape and not torch.allclose(fewer, default)
    assert torch.equal(tok.decode(codes), default)  # the config is unchanged
    c = tok.config
    old = (c.griffin_lim_iters, c.nnls_iters)
    try:
        c.griffin_lim_iters, c.nnls_iters = 2, 0
        assert torch.equal(tok.decode(codes), fewer)
    finally:
        c.griffin_lim_iters, c.nnls_iters = old
    with pytest.raises(ValueError, match="griffin_lim_iters = 0"):
        tok.decode(codes, griffin_lim_iters=0)
    with pytest.raises(ValueError, match="nnls_iters = -1"):
        tok.decode(codes, nnls_iters=-1)
