"""audiopalm.audio.io: loading, validation and resampling."""

import numpy as np
import pytest
import soundfile as sf

from audiopalm.audio import io as audio
from audiopalm.audio.io import AudioError


def _sine(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_freq(wav, sr):
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.fft.rfftfreq(len(wav), 1 / sr)[spec.argmax()]


@pytest.mark.parametrize("orig,new", [(22050, 16000), (16000, 24000), (48000, 16000), (44100, 22050)])
def test_resample_keeps_frequency_and_amplitude(orig, new):
    wav = _sine(440.0, orig, seconds=1.0, amp=0.5)
    out = audio.resample(wav, orig, new)
    assert out.dtype == np.float32
    assert abs(len(out) - len(wav) * new / orig) <= 1, (len(out), len(wav), orig, new)
    assert abs(_peak_freq(out, new) - 440.0) <= 1.0, _peak_freq(out, new)
    mid = out[len(out) // 4 : 3 * len(out) // 4]  # away from the filter's edge effects
    assert abs(np.abs(mid).max() - 0.5) < 0.01, np.abs(mid).max()
    rms = np.sqrt((mid**2).mean())
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.005, rms


def test_resample_is_band_limited():
    # a 7 kHz tone cannot exist at 8 kHz sampling (Nyquist 4 kHz): it must be filtered out, not aliased
    wav = _sine(7000.0, 16000, seconds=0.5)
    out = audio.resample(wav, 16000, 8000)
    assert np.sqrt((out[200:-200] ** 2).mean()) < 0.01


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_load_formats_mono_mix_and_resample(tmp_path, fmt):
    left, right = _sine(300, 22050, 0.5, 0.4), _sine(300, 22050, 0.5, 0.2)
    path = tmp_path / f"x.{fmt}"
    sf.write(path, np.stack([left, right], axis=1), 22050)
    wav, sr = audio.load(path)
    assert sr == 22050 and wav.ndim == 1 and wav.dtype == np.float32
    assert abs(np.abs(wav).max() - 0.3) < 0.03  # mean of the two channels
    wav16, sr16 = audio.load(path, 16000)
    assert sr16 == 16000 and abs(len(wav16) - 8000) <= 1


def test_save_load_round_trip(tmp_path):
    wav = _sine(200, 16000, 0.3)
    p = audio.save(tmp_path / "sub" / "a.wav", wav, 16000)
    back, sr = audio.load(p)
    assert sr == 16000 and np.abs(back - wav).max() < 1e-3
    assert abs(audio.duration(p) - 0.3) < 1e-6
    data, sr2 = audio.load_bytes(p.read_bytes(), name="a.wav")
    assert np.array_equal(data, back)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such audio file") as e:
        audio.load(tmp_path / "nope.wav")
    assert "nope.wav" in str(e.value)


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.wav"
    p.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.wav: unreadable"):
        audio.load(p)
    with pytest.raises(AudioError, match="blob: unreadable"):
        audio.load_bytes(b"junk", name="blob")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        audio.load(p)


def test_nan_and_inf(tmp_path):
    wav = _sine(100, 16000, 0.2)
    wav[10], wav[20] = np.nan, np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: 2 NaN/Inf samples"):
        audio.load(p)


def test_too_many_channels(tmp_path):
    p = tmp_path / "six.wav"
    sf.write(p, np.zeros((1600, 6), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="six.wav: 6 channels"):
        audio.load(p)


def test_absurd_lengths(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(16, dtype=np.float32), 16000)  # 1 ms
    with pytest.raises(AudioError, match="short.wav: too short"):
        audio.load(short)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16000 * 3, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="long.wav: too long"):
        audio.load(long, max_seconds=2.0)


def test_validate_shape():
    with pytest.raises(AudioError, match=r"expected a mono waveform \[T\], got shape \(2, 100\)"):
        audio.validate(np.zeros((2, 100)), 16000)


def test_resample_stops_a_tone_just_above_the_new_nyquist():
    """8.5 kHz going 48 kHz -> 16 kHz (Nyquist 8 kHz) must vanish, not alias to 7.5 kHz. scipy's
    resample_poly let it through at about -14 dB; soxr HQ keeps it below -100 dB."""
    wav = _sine(8500.0, 48000, seconds=1.0, amp=0.5)
    out = audio.resample(wav, 48000, 16000)
    mid = out[len(out) // 4 : 3 * len(out) // 4]
    level_db = 20 * np.log10(np.sqrt((mid.astype(np.float64) ** 2).mean()) / (0.5 / np.sqrt(2)) + 1e-30)
    assert level_db < -100, level_db


def test_resample_batches_along_the_last_axis():
    wav = np.stack([_sine(300, 22050, 0.3), _sine(500, 22050, 0.3)])  # [2, T]
    out = audio.resample(wav, 22050, 16000)
    assert out.shape[0] == 2 and out.dtype == np.float32
    np.testing.assert_allclose(out[1], audio.resample(wav[1], 22050, 16000), atol=1e-6)


def _truncated_wav(path, seconds=1.0, keep_seconds=0.03, sr=16000):
    sf.write(path, _sine(300, sr, seconds, 0.3), sr, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + int(keep_seconds * sr) * 2])  # header (44 bytes) still says 1 s
    return path


def test_truncated_wav_is_refused(tmp_path):
    """libsndfile reads a WAV whose data stops early as a shorter clip, silently; we refuse it."""
    path = _truncated_wav(tmp_path / "cut.wav")
    assert sf.info(str(path)).frames == 480  # what libsndfile alone would report: 0.03 s, no complaint
    with pytest.raises(AudioError, match=r"cut.wav: truncated file: its header says 1.00 s .* holds 0.03 s"):
        audio.load(path)
    with pytest.raises(AudioError, match="truncated"):
        audio.load_bytes(path.read_bytes(), name="cell")


def test_streaming_wav_without_sizes_is_kept(tmp_path):
    """A data chunk size of 0xFFFFFFFF means 'unknown' (streaming writers): not a truncation."""
    path = tmp_path / "stream.wav"
    sf.write(path, _sine(300, 16000, 0.5, 0.3), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    i = data.index(b"data")
    data[i + 4 : i + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert len(audio.load(path)[0]) == 8000


def test_float_wav_scale(tmp_path):
    """load() promises [-1, 1]: a small float overshoot is scaled down by its peak, a wrong scale refused."""
    loud = tmp_path / "loud.wav"
    sf.write(loud, _sine(300, 16000, 0.5, 1.5), 16000, subtype="FLOAT")
    wav, _ = audio.load(loud)
    assert abs(np.abs(wav).max() - 1.0) < 1e-6
    wrong = tmp_path / "wrong.wav"
    sf.write(wrong, _sine(300, 16000, 0.5, 15.0), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"wrong.wav: samples reach 15"):
        audio.load(wrong)
    with pytest.raises(AudioError, match="samples reach 15"):
        audio.load_bytes(wrong.read_bytes(), name="cell")
