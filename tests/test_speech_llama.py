"""Speech-Llama (audiopalm/modeling/speech_llama.py) and log-mel features (audiopalm/audio/features.py).

Every model here is tiny (LLM: 2 layers, width 32; encoder: 2 layers, width 32) and built from configs
with random weights; nothing is downloaded.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from builders import BOS, EOS, N_MELS, PAD, tiny_config, tiny_llm, tiny_tokenizer

from audiopalm.audio.features import LogMel, LogMelConfig
from audiopalm.modeling.speech_llama import SpeechLlama, SpeechLlamaConfig, encode_text, stack_frames

# peft probes the deprecated transformers property `is_gradient_checkpointing`; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def randomize_lora(model):
    """LoRA's B starts at zero (the adapter is a no-op); give it values so it changes the outputs."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)


def batch(lengths=(40, 23, 9)):
    feats = torch.randn(len(lengths), max(lengths), N_MELS)
    return feats, torch.tensor(lengths)


# ---- features ---------------------------------------------------------------------------------


def test_log_mel_shapes_and_batch_equals_per_item():
    lm = LogMel(LogMelConfig(n_mels=N_MELS))
    wavs = [torch.randn(n) * 0.1 for n in (16000, 8000, 3210)]
    wav = torch.zeros(3, 16000)
    for i, w in enumerate(wavs):
        wav[i, : w.numel()] = w
    feats, lengths = lm(wav, torch.tensor([w.numel() for w in wavs]))
    assert feats.shape == (3, 101, N_MELS)
    assert lengths.tolist() == [lm.config.num_frames(w.numel()) for w in wavs] == [101, 51, 21]
    for i, w in enumerate(wavs):
        one, _ = lm(w[None])
        torch.testing.assert_close(feats[i, : lengths[i]], one[0], rtol=0, atol=1e-5)
        assert (feats[i, lengths[i] :] == 0).all()


@pytest.mark.parametrize("style", ["log", "whisper"])
def test_log_mel_puts_a_tone_in_its_band(style):
    cfg = LogMelConfig(n_mels=40, style=style)
    t = np.arange(16000) / 16000
    feats, _ = LogMel(cfg)([0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 4000 * t)])
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(201, 40, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    for i, hz in enumerate((1000, 4000)):
        expected_band = int(fb[round(hz / 40)].argmax())  # FFT bin of the tone: hz / (16000 / 400)
        assert abs(int(feats[i, 50].argmax()) - expected_band) <= 1, (hz, feats[i, 50].argmax(), expected_band)
    if style == "whisper":  # dynamic range limited to 8 log10 units below the peak, then (x + 4) / 4
        assert feats[0].max() - feats[0].min() <= 2.0 + 1e-5


def test_whisper_style_equals_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wavs = [
        (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32),
        (0.2 * rng.standard_normal(9000)).astype(np.float32),
    ]
    feats, lengths = LogMel(LogMelConfig(style="whisper"))(wavs)
    fe = WhisperFeatureExtractor(feature_size=80)
    for i, w in enumerate(wavs):
        ref = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0].T  # [3000, 80]
        n = int(lengths[i])
        assert n == len(w) // 160
        np.testing.assert_allclose(feats[i, :n].numpy(), ref[:n], atol=1e-4)


def test_log_mel_config_validation():
    with pytest.raises(ValueError, match="style"):
        LogMelConfig(style="mfcc")
    with pytest.raises(ValueError, match="f_max"):
        LogMelConfig(f_max=9000.0)


# ---- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("encoder", "lstm"),
        ("projector_stride", 0),
        ("encoder_heads", 5),
        ("lora_dropout", 1.5),
        ("conv_kernel", 4),
        ("lora_r", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_config_json_round_trip():
    cfg = tiny_config(lora_target_modules=["q_proj", "v_proj"], ctc_vocab_size=7)
    assert SpeechLlamaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown SpeechLlamaConfig fields"):
        SpeechLlamaConfig.from_dict(cfg.to_dict() | {"lora_rank": 8})


# ---- encoder + projector ---------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_encode_audio_shapes(encoder, stride):
    model = SpeechLlama(tiny_config(encoder=encoder, projector_stride=stride, encoder_stack=2), tiny_llm()).eval()
    feats, lengths = batch((57, 16, 3))
    emb, emb_lengths = model.encode_audio(feats, lengths)
    expected = [math.ceil(math.ceil(n / 2) / stride) for n in (57, 16, 3)]
    assert emb_lengths.tolist() == expected
    assert emb.shape == (3, max(expected), 32)
    for i, n in enumerate(expected):
        assert (emb[i, n:] == 0).all() and emb[i, :n].abs().sum() > 0
    assert model.seconds_per_embedding == pytest.approx(0.010 * 2 * stride)  # 10 ms mel hop x stack x stride


def test_stack_frames_groups_consecutive_frames():
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    out, lengths = stack_frames(x, torch.tensor([5, 3]), 2)
    assert out.shape == (2, 3, 4) and lengths.tolist() == [3, 2]
    assert out[0, 0].tolist() == [0, 1, 2, 3] and out[0, 2].tolist() == [8, 9, 0, 0]
    assert out[1, 1].tolist() == [14, 15, 0, 0]  # frames past the length are zeros, as for the item alone


# ---- gradients, batching, saving ---------------------------------------------------------------


def test_only_lora_encoder_and_projector_get_gradients():
    model = SpeechLlama(tiny_config(), tiny_llm())
    randomize_lora(model)
    feats, lengths = batch()
    ids = torch.randint(4, 64, (3, 7))
    labels = ids.clone()
    labels[:, :3] = -100
    model(feats, lengths, ids, None, labels).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("encoder.", "projector.")) for n in trainable), trainable
    assert any("q_proj.lora_A" in n for n in trainable) and any("o_proj.lora_B" in n for n in trainable)
    assert not any("mlp" in n and n.startswith("llm.") for n in trainable)  # LoRA on attention only
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    counts = model.parameter_counts()
    assert (
        counts["trainable"]
        == model.trainable_parameters()
        == sum(p.numel() for p in model.parameters() if p.requires_grad)
    )
    assert counts["trainable"] == counts["lora"] + counts["encoder"] + counts["projector"]


def test_lora_r0_and_freeze_flags():
    model = SpeechLlama(tiny_config(lora_r=0, freeze_encoder=True), tiny_llm())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") for n in trainable), trainable


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_batch_equals_per_item(encoder):
    model = SpeechLlama(tiny_config(encoder=encoder), tiny_llm()).eval()
    randomize_lora(model)
    feats, lengths = batch((40, 23, 9))
    ids = torch.randint(4, 64, (3, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [0, 0] + [1] * 4])  # right- and left-padded rows
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model(feats, lengths, ids, mask, labels)
    for i in range(3):
        item_ids = ids[i][mask[i].bool()][None]
        with torch.no_grad():
            one = model(feats[i : i + 1, : lengths[i]], lengths[i : i + 1], item_ids, None, item_ids)
        S = one.logits.shape[1]
        torch.testing.assert_close(out.logits[i, :S], one.logits[0], rtol=1e-4, atol=1e-4)
        assert out.attention_mask[i].sum() == S and (out.attention_mask[i, S:] == 0).all()
        assert (out.labels[i, : one.audio_lengths[0]] == -100).all()  # never a loss on audio positions
        torch.testing.assert_close(out.labels[i, :S], one.labels[0])
    # the batched generation (left-padded, KV cache) gives each item's own greedy continuation
    gen = model.generate(feats, lengths, ids[:, :3], max_new_tokens=5, eos_token_id=None)
    for i in range(3):
        one = model.generate(
            feats[i : i + 1, : lengths[i]], lengths[i : i + 1], ids[i : i + 1, :3], max_new_tokens=5, eos_token_id=None
        )
        assert gen[i].tolist() == one[0].tolist()


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    llm = tiny_llm()
    llm.save_pretrained(tmp_path / "llm")
    model = SpeechLlama.from_config(tiny_config(ctc_vocab_size=9), base_model=str(tmp_path / "llm")).eval()
    randomize_lora(model)
    feats, lengths = batch()
    ids = torch.randint(4, 64, (3, 5))
    with torch.no_grad():
        before = model(feats, lengths, ids).logits
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.relative_to(tmp_path / "ckpt").as_posix() for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    assert {
        "speech_llama.json",
        "speech_modules.safetensors",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    } <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files), files
    loaded = SpeechLlama.from_pretrained(tmp_path / "ckpt").eval()  # the local base LLM was copied into llm/
    saved = json.loads((tmp_path / "ckpt" / "speech_llama.json").read_text())
    assert saved["llm"] == "./llm" and (tmp_path / "ckpt" / "llm" / "model.safetensors").is_file()
    assert dataclasses.replace(loaded.config, llm="") == dataclasses.replace(model.config, llm="")
    with torch.no_grad():
        after = loaded(feats, lengths, ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert loaded.trainable_parameters() == 0 and not loaded.training  # inference unless is_trainable
    again = SpeechLlama.from_pretrained(tmp_path / "ckpt", base_model=tiny_llm(), is_trainable=True)
    assert again.trainable_parameters() == model.trainable_parameters()
    with pytest.raises(FileNotFoundError, match="speech_llama.json"):
        SpeechLlama.from_pretrained(tmp_path / "llm")


# ---- training and generation ------------------------------------------------------------------


def test_training_reduces_loss_then_generate_transcribes_and_stops_at_eos():
    tok = tiny_tokenizer()
    model = SpeechLlama(tiny_config(), tiny_llm())
    feats, lengths = batch((30, 24))
    text = encode_text(tok, ["[ASR English]", "[ASR English]"], ["the cat sat", "dog ran"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(feats, lengths, **text).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses  # same prompt, different targets: the audio must be used
    model.eval()
    prompts = encode_text(tok, ["[ASR English]", "[ASR English]"])
    out = model.generate(feats, lengths, prompts["input_ids"], prompts["attention_mask"], max_new_tokens=10)
    texts = tok.batch_decode(out, skip_special_tokens=True)
    assert texts == ["the cat sat", "dog ran"], (texts, losses)
    assert out.shape[1] < 10  # stopped at eos, not at max_new_tokens
    assert out[1].tolist()[2] == EOS and out[1].tolist()[3:] == [PAD] * (out.shape[1] - 3)


def test_generate_stops_at_a_given_eos():
    model = SpeechLlama(tiny_config(), tiny_llm()).eval()
    feats, lengths = batch((20,))
    prompt = torch.tensor([[BOS, 4, 6]])
    free = model.generate(feats, lengths, prompt, max_new_tokens=6, eos_token_id=None)
    assert free.shape == (1, 6) and free.dtype == torch.long
    stop = free[0, 2].item()
    first = free[0].tolist().index(stop)  # the earliest position of that token
    stopped = model.generate(feats, lengths, prompt, max_new_tokens=6, eos_token_id=stop)
    assert stopped[0].tolist() == free[0, : first + 1].tolist()


def test_encode_text_layout():
    tok = tiny_tokenizer()
    train = encode_text(tok, ["[ASR English]", "[AST English French]"], ["the cat", "le chat sat"])
    assert train["input_ids"][0].tolist() == tok("[ASR English] the cat")["input_ids"] + [EOS, PAD, PAD]
    assert train["labels"][0].tolist() == [-100, -100, -100] + tok("the cat", add_special_tokens=False)["input_ids"] + [
        EOS,
        -100,
        -100,
    ]
    assert train["attention_mask"][1].tolist() == [1] * 8
    gen = encode_text(tok, ["[ASR English]", "[AST English French]"])
    assert gen["attention_mask"][0].tolist() == [0, 1, 1, 1] and "labels" not in gen  # left-padded


def test_ctc_head_trains():
    model = SpeechLlama(tiny_config(ctc_vocab_size=10), tiny_llm())
    assert model.ctc_head is not None  # ctc_vocab_size > 0 builds it
    feats, lengths = batch((30, 20))
    targets, target_lengths = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]), torch.tensor([4, 2])
    opt = torch.optim.AdamW(list(model.encoder.parameters()) + list(model.ctc_head.parameters()), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model.ctc_loss(feats, lengths, targets, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.ctc_loss(feats, lengths, torch.tensor([[10], [1]]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="no CTC head"):
        SpeechLlama(tiny_config(), tiny_llm()).ctc_loss(feats, lengths, targets, target_lengths)


# ---- pretrained HF encoders, plugged in by path ----------------------------------------------


def test_whisper_encoder_by_path(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    wcfg = WhisperConfig(
        num_mel_bins=N_MELS,
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=40,
        max_target_positions=16,
        vocab_size=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
    )
    WhisperModel(wcfg).save_pretrained(tmp_path / "whisper")
    tiny_llm().save_pretrained(tmp_path / "llm")
    model = SpeechLlama.from_config(tiny_config(encoder=f"hf:{tmp_path / 'whisper'}"), str(tmp_path / "llm")).eval()
    randomize_lora(model)
    assert model.input_kind == "log_mel" and model.log_mel is not None and model.log_mel.config.style == "whisper"
    wav = torch.randn(2, 4000) * 0.1
    feats, lengths = model.featurize(wav, torch.tensor([4000, 2500]))  # 25 frames; this Whisper takes up to 2 * 40
    emb, emb_lengths = model.encode_audio(feats, lengths)
    assert emb_lengths.tolist() == [math.ceil(math.ceil(n / 2) / 2) for n in lengths.tolist()]
    assert model.seconds_per_embedding == pytest.approx(0.04)  # Whisper: 20 ms frames, stride 2
    with torch.no_grad():
        out = model(feats, lengths, torch.tensor([[BOS, 4], [BOS, 5]]))
        one = model(feats[1:, : lengths[1]], lengths[1:], torch.tensor([[BOS, 5]]))
    torch.testing.assert_close(out.logits[1, : one.logits.shape[1]], one.logits[0], rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SpeechLlama.from_pretrained(tmp_path / "ckpt", base_model=str(tmp_path / "llm")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats, lengths, torch.tensor([[BOS, 4], [BOS, 5]])).logits, out.logits)
    with pytest.raises(ValueError, match="30 s"):
        model.encode_audio(torch.zeros(1, 81, N_MELS), torch.tensor([81]))


def test_wav2vec2_encoder_by_path(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    wcfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        mask_time_prob=0.0,
        vocab_size=10,
    )
    Wav2Vec2Model(wcfg).save_pretrained(tmp_path / "w2v")
    tiny_llm().save_pretrained(tmp_path / "llm")
    model = SpeechLlama.from_config(
        tiny_config(encoder=f"hf:{tmp_path / 'w2v'}", projector_stride=4), str(tmp_path / "llm")
    ).eval()
    assert model.input_kind == "waveform"
    wav, lengths = model.featurize([np.random.randn(3200), np.random.randn(1600)])
    assert wav.shape == (2, 3200) and abs(float(wav[1, :1600].std()) - 1.0) < 1e-3
    emb, emb_lengths = model.encode_audio(wav, lengths)
    frames = [((n - 10) // 5 + 1 - 8) // 4 + 1 for n in (3200, 1600)]  # the two conv layers
    assert emb_lengths.tolist() == [math.ceil(f / 4) for f in frames] and emb.shape[-1] == 32
    assert model.seconds_per_embedding == pytest.approx(5 * 4 / 16000 * 4)  # conv strides x projector stride
    one, _ = model.encode_audio(wav[1:, :1600], lengths[1:])  # layer-norm feature encoder: masks padding
    torch.testing.assert_close(emb[1, : one.shape[1]], one[0], rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "encoder" / "config.json").is_file()
    loaded = SpeechLlama.from_pretrained(tmp_path / "ckpt", base_model=str(tmp_path / "llm")).eval()
    torch.testing.assert_close(loaded.encode_audio(wav, lengths)[0], emb, rtol=0, atol=0)


# ---- real speech (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_to_transcribe_espeak_speech(tmp_path):
    """End to end on real (synthetic) speech: espeak-ng wavs -> log-mel -> Speech-Llama learns to tell
    'cat' from 'dog' and 'sat' from 'ran' by ear (same prompt for all) and transcribes all four."""
    import shutil
    import subprocess

    from audiopalm.audio.io import load

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    sentences = ["the cat sat", "the dog ran", "the cat ran", "the dog sat"]
    wavs = []
    for i, sentence in enumerate(sentences):
        path = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), sentence], check=True)
        wavs.append(load(path, 16000)[0])
    tok = tiny_tokenizer()
    model = SpeechLlama(tiny_config(n_mels=40, encoder="transformer"), tiny_llm())
    feats, lengths = model.featurize(wavs)
    assert feats.shape[-1] == 40 and int(lengths.min()) > 50  # > 0.5 s of 10 ms frames each
    text = encode_text(tok, ["[ASR English]"] * 4, sentences)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(feats, lengths, **text).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    prompts = encode_text(tok, ["[ASR English]"] * 4)
    out = model.generate(feats, lengths, prompts["input_ids"], prompts["attention_mask"], max_new_tokens=6)
    assert tok.batch_decode(out, skip_special_tokens=True) == sentences, loss.item()


def _units_tokenizer(folder, n_mels=N_MELS):
    """A ctc_units tokenizer with a random tiny encoder, centres and standardisation, saved in ``folder``."""
    from audiopalm.tokenizers.ctc_units import CTCUnitsTokenizer

    torch.manual_seed(0)
    enc = dict(n_mels=n_mels, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, conv_kernel=3)
    tok = CTCUnitsTokenizer(encoder=enc, layer=1, num_units=6)
    with torch.no_grad():
        for p in tok.encoder.parameters():
            p.normal_(std=0.3)
        tok.centroids.normal_()
        tok.mean.normal_()
        tok.std.uniform_(0.5, 2.0)
        tok.fitted.fill_(True)
    tok.save_pretrained(folder)
    return tok.eval()


def test_units_encoder_gives_the_states_the_tokenizer_clusters(tmp_path):
    """``units:<folder>``: the ctc_units tokenizer's encoder at its clustered layer, standardised as its k-means saw
    the states, so the nearest centre of each state is the tokenizer's unit; a save reloads without the folder."""
    from audiopalm.tokenizers.kmeans import nearest

    tok = _units_tokenizer(tmp_path / "units")
    tiny_llm().save_pretrained(tmp_path / "llm")
    config = tiny_config(encoder=f"units:{tmp_path / 'units'}", freeze_encoder=True, projector_stride=1)
    model = SpeechLlama.from_config(config, str(tmp_path / "llm"))
    wav = torch.randn(2, 8000) * 0.1
    lengths = torch.tensor([8000, 5200])
    feats, mel_lengths = model.featurize(wav, lengths)
    with torch.no_grad():
        states, frames = model.encoder(feats, mel_lengths)
        units, unit_frames = tok.units(wav, lengths)
    assert frames.tolist() == unit_frames.tolist() == [13, 9]
    for b, n in enumerate(frames.tolist()):
        ids, _ = nearest(states[b, :n], tok.centroids)
        assert ids.tolist() == units[b, :n].tolist()
    assert model.seconds_per_embedding == pytest.approx(0.04)  # 25 states per second, stride 1
    # frozen: no gradient reaches the encoder, and training mode leaves it as it made the units (eval)
    model.train()
    assert not model.encoder.encoder.training and model.projector.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())
    model.eval()
    randomize_lora(model)
    ids = torch.tensor([[BOS, 4, 5], [BOS, 6, 7]])
    with torch.no_grad():
        before = model(feats, mel_lengths, ids).logits
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "encoder" / "units_encoder.json").is_file()
    import shutil

    shutil.rmtree(tmp_path / "units")  # the saved model holds the encoder; its tokenizer folder is not needed
    loaded = SpeechLlama.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats, mel_lengths, ids).logits, before, rtol=0, atol=0)


def test_units_encoder_refuses_a_mismatch(tmp_path):
    _units_tokenizer(tmp_path / "units", n_mels=N_MELS + 4)
    with pytest.raises(ValueError, match=f"takes {N_MELS + 4} mel bands"):
        SpeechLlama(tiny_config(encoder=f"units:{tmp_path / 'units'}"), tiny_llm())
    with pytest.raises(FileNotFoundError, match="fit-ctc-units"):
        SpeechLlama(tiny_config(encoder=f"units:{tmp_path / 'nothing'}"), tiny_llm())
    with pytest.raises(ValueError, match="units:<ctc_units tokenizer folder>"):
        tiny_config(encoder="units:")
