"""The acoustic stage: overfits one utterance, saves/loads exactly, synthesizes deterministically and batch-invariantly,
pairs each target with another utterance of its speaker, and its recipe runs and resumes bit-for-bit."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from builders import TINY_MEL

from audiopalm.acoustic import AcousticConfig, AcousticStage
from audiopalm.acoustic import train as acoustic
from audiopalm.acoustic.data import PairSampler, encode_utterance, load_utterances
from audiopalm.audio import io as audio_io
from audiopalm.data.manifest import Record, write_manifest
from audiopalm.tokenizers.mel_rvq import MelRVQTokenizer

SR = 16000
TINY = TINY_MEL  # a small codec (builders.py)
TINY_MODEL = AcousticConfig(hidden_size=48, num_blocks=3, dilations=(1, 2, 4), voice_dim=16, voice_hidden=16)


def voice(seconds: float, f0: float, formant: float, rng: np.random.Generator) -> np.ndarray:
    """A harmonic 'voice' with pitch ``f0`` and a formant: speakers differ in f0 and formant, utterances in
    their random syllable rhythm and pitch contour."""
    t = np.arange(int(seconds * SR)) / SR
    contour = f0 * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(contour) / SR
    wav = sum(np.exp(-(((h * f0 - formant) / 500) ** 2)) * np.sin(h * phase) for h in range(1, 16))
    envelope = np.sin(2 * np.pi * rng.uniform(2, 4) * t) ** 2
    return (0.5 * envelope * wav / np.abs(wav).max()).astype(np.float32)


SPEAKERS = {"en-a": (110.0, 700.0), "en-b": (210.0, 1800.0)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A manifest of 2 speakers x 6 train + 2 dev utterances (wav files), with speakers."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("acoustic_corpus")
    rng = np.random.default_rng(0)
    recs = []
    for split, n in (("train", 6), ("dev", 2)):
        for spk, (f0, formant) in SPEAKERS.items():
            for i in range(n):
                path = folder / f"{split}-{spk}-{i}.wav"
                sf.write(path, voice(rng.uniform(0.5, 0.9), f0, formant, rng), SR)
                recs.append(
                    Record(id=f"{split}-{spk}-{i}", lang="en", text="a b c", audio=str(path), speaker=spk, split=split)
                )
    return write_manifest(folder / "all.jsonl", recs)


@pytest.fixture(scope="module")
def tokenizers(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """(unit tokenizer folder, codec folder): the units are a one-codebook mel_rvq at the codec's frame rate."""
    from audiopalm.tokenizers.mel_rvq import manifest_waves

    folder = tmp_path_factory.mktemp("acoustic_toks")
    codec = MelRVQTokenizer.fit(
        manifest_waves(corpus, SR), num_codebooks=2, codebook_size=16, seed=0, kmeans_iters=5, progress=False, **TINY
    )
    units = MelRVQTokenizer.fit(
        manifest_waves(corpus, SR), num_codebooks=1, codebook_size=12, seed=1, kmeans_iters=5, progress=False, **TINY
    )
    return units.save_pretrained(folder / "units"), codec.save_pretrained(folder / "codec")


def load(path):
    from audiopalm.tokenizers.base import load_audio_tokenizer

    return load_audio_tokenizer(path)


@pytest.fixture(scope="module")
def utts(corpus, tokenizers):
    return load_utterances(corpus, ["train"], load(tokenizers[0]), load(tokenizers[1]), progress=False)


@pytest.fixture(scope="module")
def trained(utts, tokenizers) -> AcousticStage:
    """A tiny stage trained briefly on the train utterances, with a default voice."""
    torch.manual_seed(0)
    stage = AcousticStage.build(TINY_MODEL, load(tokenizers[1]), load(tokenizers[0]), max_prompt_frames=20)
    sampler = PairSampler(utts, max_frames=60, max_prompt_frames=20, seed=0)
    opt = torch.optim.AdamW(stage.model.parameters(), lr=3e-3)
    for step in range(30):
        loss, n = acoustic.loss_sums(stage.model, sampler.batch(sampler.targets, step))
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    acoustic.set_default_voice(stage, utts)
    return stage.eval()


# ---------------------------------------------------------------------------------------------------------- the data


def test_prompt_is_another_utterance_of_the_same_speaker(utts):
    sampler = PairSampler(utts, max_frames=10**6, max_prompt_frames=10**6, seed=0)
    gen = torch.Generator().manual_seed(0)
    for i in sampler.targets:
        _, feats, prompt, _ = sampler.pair(i, gen)
        matches = [
            j for j in range(len(utts)) if utts.length(j) == len(prompt) and torch.equal(utts.item(j)[1], prompt)
        ]
        assert matches and all(j != i and utts.speakers[j] == utts.speakers[i] for j in matches), (i, matches)
    # the same (seed, step) gives the same batch; another step another one
    a, b = sampler.batch([0, 1, 2], step=3), sampler.batch([0, 1, 2], step=3)
    assert torch.equal(a.prompt, b.prompt) and torch.equal(a.units, b.units)


def test_units_and_features_are_frame_aligned_and_cached(corpus, tokenizers, tmp_path):
    units_tok, codec = load(tokenizers[0]), load(tokenizers[1])
    first = load_utterances(corpus, ["dev"], units_tok, codec, cache_dir=tmp_path, progress=False)
    assert len(first) == 4 and set(first.speakers) == set(SPEAKERS)
    wav = torch.from_numpy(__import__("soundfile").read(first.paths[0], dtype="float32")[0])[None]
    feats, n = codec.features(wav)
    u, f = first.item(0)
    assert len(u) == len(f) and abs(len(f) - int(n[0])) <= 2
    torch.testing.assert_close(f, feats[0, : len(f)])
    # encoded on one worker per core, each file lands at its own place (manifest order)
    for i, path in enumerate(first.paths):
        u_i, f_i, _ = encode_utterance(audio_io.load(path, codec.sample_rate)[0], units_tok, codec)
        assert torch.equal(first.item(i)[0], u_i) and torch.equal(first.item(i)[1], f_i), path
    # the cached copy is read without the audio
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in first.paths:
        shutil.move(p, moved / Path(p).name)
    try:
        again = load_utterances(corpus, ["dev"], units_tok, codec, cache_dir=tmp_path, progress=False)
    finally:
        for p in first.paths:
            shutil.move(moved / Path(p).name, p)
    assert torch.equal(again.units, first.units) and torch.equal(again.feats, first.feats)
    assert again.speakers == first.speakers


def test_the_codec_rate_must_be_a_whole_multiple_of_the_unit_rate(tokenizers):
    for stack in (3, 1):  # 33.3 Hz units (1.5 codec frames each), 100 Hz units (half a frame each)
        other = MelRVQTokenizer(**{**TINY, "stack": stack}, num_codebooks=1, codebook_size=4)
        with pytest.raises(ValueError, match="multiple of the units'"):
            AcousticStage.build(TINY_MODEL, load(tokenizers[1]), other)
    stage = AcousticStage.build(TINY_MODEL, load(tokenizers[1]), load(tokenizers[0]))
    with pytest.raises(ValueError, match="frames_per_unit = 2 but"):  # a config that disagrees with the two rates
        AcousticStage(
            dataclasses.replace(stage.config, frames_per_unit=2), stage.codec, unit_tokenizer=stage.unit_tokenizer
        )


@pytest.fixture(scope="module")
def half_rate_units(corpus, tmp_path_factory) -> Path:
    """A one-codebook unit tokenizer at 25 Hz, half the codec's 50 Hz: 2 codec frames per unit."""
    from audiopalm.tokenizers.mel_rvq import manifest_waves

    units = MelRVQTokenizer.fit(
        manifest_waves(corpus, SR),
        num_codebooks=1,
        codebook_size=32,
        seed=1,
        kmeans_iters=5,
        progress=False,
        **{**TINY, "stack": 4},
    )
    return units.save_pretrained(tmp_path_factory.mktemp("half_rate") / "units")


def test_units_at_half_the_codec_rate_span_two_frames_and_crop_whole(corpus, tokenizers, half_rate_units):
    units_tok, codec = load(half_rate_units), load(tokenizers[1])
    utts = load_utterances(corpus, ["train"], units_tok, codec, progress=False)
    for i, path in enumerate(utts.paths):
        u, f = utts.item(i)
        assert len(u) == len(f) and len(u) % 2 == 0 and torch.equal(u[0::2], u[1::2]), path
        codes, n = units_tok.encode(torch.from_numpy(audio_io.load(path, SR)[0])[None])
        assert torch.equal(u[0::2], codes[0, 0, : len(u) // 2]) and int(n[0]) - len(u) // 2 in (0, 1), path
    sampler = PairSampler(utts, max_frames=11, max_prompt_frames=8, seed=0, frames_per_unit=2)
    batch = sampler.batch(sampler.targets, step=0)
    assert batch.frames_per_unit == 2 and batch.feats.shape[1] == 2 * batch.units.shape[1] == 10
    for row, i in enumerate(sampler.targets):  # each crop starts on a unit: its units are the crop's every other
        n, (u, f) = int(batch.lengths[row]), utts.item(i)
        at = [a for a in range(len(f) - n + 1) if torch.equal(f[a : a + n], batch.feats[row, :n])]
        assert at and at[0] % 2 == 0 and n % 2 == 0, (i, at, n)
        assert torch.equal(batch.units[row, : n // 2], u[at[0] : at[0] + n : 2])
        assert torch.equal(batch.unit_lengths[row], torch.tensor(n // 2))
    part = batch.select([1, 2])
    assert part.units.shape[1] * 2 == part.feats.shape[1] == int(part.lengths.max())


# --------------------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("rate", ["codec", "half"])
def test_overfits_one_utterance(corpus, utts, tokenizers, half_rate_units, rate):
    """Trained on one utterance (prompt: another utterance of its speaker), the stage reproduces its features with an
    L1 below a tenth of the utterance's own spread: |x - mean frame| averaged, what a model that ignores the units
    and predicts the best constant frame scores. The 2-codebook codec's own quantisation error is printed beside it.
    With units at half the codec's rate the two frames of a unit differ only by their place in it."""
    units_tok = load(tokenizers[0] if rate == "codec" else half_rate_units)
    if rate == "half":
        utts = load_utterances(corpus, ["train"], units_tok, load(tokenizers[1]), progress=False)
    torch.manual_seed(0)
    stage = AcousticStage.build(TINY_MODEL, load(tokenizers[1]), units_tok, max_prompt_frames=20)
    r = stage.config.frames_per_unit
    assert r == (1 if rate == "codec" else 2)
    sampler = PairSampler(utts, max_frames=10**6, max_prompt_frames=20, seed=0, frames_per_unit=r)
    batch = sampler.batch([0], step=0)
    target = batch.feats[0, : int(batch.lengths[0])]  # [F, D]
    constant_l1 = float((target - target.median(0).values).abs().mean())
    opt = torch.optim.AdamW(stage.model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(250):
        loss, n = acoustic.loss_sums(stage.model, batch)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    final = float(loss.detach()) / n
    codec = stage.codec
    codec_l1 = float((codec.dequantize(codec.quantize(target[None]))[0] - target).abs().mean())
    assert final < 0.1 * constant_l1, (final, constant_l1, codec_l1)
    # what the stage says of the units: r frames of features, r * samples_per_frame samples, each
    u = batch.units[:1, : int(batch.unit_lengths[0])]
    feats, lengths = stage.predict_features(u)  # the default voice
    assert feats.shape[1] == int(lengths[0]) == r * u.shape[1] == len(target)
    wav = stage.synthesize(u, griffin_lim_iters=1, nnls_iters=0)
    assert wav.shape == (1, r * u.shape[1] * codec.samples_per_frame)


def test_codebook_unit_init_starts_units_at_their_code_vectors(tokenizers):
    """``unit_init=codebook``: the unit rows are the tokenizer's code vectors up to a rotation and one scale (the PCA
    keeps all 12 units' variance), spread as the random rows were; the padding row keeps its random start."""
    units_tok = load(tokenizers[0])
    torch.manual_seed(0)
    plain = AcousticStage.build(
        dataclasses.replace(TINY_MODEL, unit_init="random"), load(tokenizers[1]), units_tok
    ).model
    torch.manual_seed(0)
    coded = AcousticStage.build(dataclasses.replace(TINY_MODEL, unit_init="codebook"), load(tokenizers[1]), units_tok)
    k = units_tok.codebook_size
    rows, random_rows = coded.model.embed.weight[:k].detach(), plain.embed.weight[:k].detach()
    vectors = units_tok.code_vectors()[0].double()  # [k, D]

    def spread(x):
        return float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())

    d_rows, d_vec = torch.cdist(rows.double(), rows.double()), torch.cdist(vectors, vectors)
    assert torch.allclose(d_rows / d_rows.max(), d_vec / d_vec.max(), atol=1e-4)
    d_random = torch.cdist(random_rows.double(), random_rows.double())
    assert not torch.allclose(d_random / d_random.max(), d_vec / d_vec.max(), atol=1e-2)  # the check can fail
    assert spread(rows) == pytest.approx(spread(random_rows), rel=1e-4)
    assert torch.equal(coded.model.embed.weight[k], plain.embed.weight[k])

    units_tok.code_vectors = lambda: None  # a tokenizer without code vectors is refused by name
    with pytest.raises(ValueError, match="unit_init=codebook"):
        AcousticStage.build(AcousticConfig(unit_init="codebook"), load(tokenizers[1]), units_tok)


def test_default_voice_is_the_speakers_average_each_speaker_counted_alike(trained, utts):
    """The default voice is the mean over speakers of each one's mean voice embedding (its first ``per_speaker``
    utterances, each alone through the voice encoder): a speaker with more utterances does not weigh more."""
    stage = copy.deepcopy(trained)
    first = next(i for i, s in enumerate(utts.speakers) if s == "en-a")
    keep = [first] + [i for i, s in enumerate(utts.speakers) if s == "en-b"]  # en-a: 1 utterance, en-b: 6
    few = utts.subset(keep)

    def embed(i: int) -> torch.Tensor:
        f = few.item(i)[1][: stage.max_prompt_frames]
        return stage.model.encode_voice(f[None], torch.tensor([len(f)]))[0]

    with torch.no_grad():
        by_speaker = {s: torch.stack([embed(i) for i in range(len(few)) if few.speakers[i] == s]) for s in SPEAKERS}
    info = acoustic.set_default_voice(stage, few)
    assert info == {"speakers": 2, "utterances": 7}
    alike = (by_speaker["en-a"].mean(0) + by_speaker["en-b"].mean(0)) / 2
    flat = torch.cat(list(by_speaker.values())).mean(0)
    assert not torch.allclose(alike, flat, atol=1e-3)  # the check can fail
    torch.testing.assert_close(stage.default_voice, alike, atol=1e-5, rtol=1e-5)
    # per_speaker caps each speaker's utterances: the first 2 of en-b
    info = acoustic.set_default_voice(stage, few, per_speaker=2)
    assert info == {"speakers": 2, "utterances": 3}
    torch.testing.assert_close(stage.default_voice, (by_speaker["en-a"][0] + by_speaker["en-b"][:2].mean(0)) / 2)
    assert stage.default_voice_info == info


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    units = torch.randint(0, trained.config.num_units, (2, 30))
    prompt = torch.from_numpy(voice(0.8, 110.0, 700.0, np.random.default_rng(5)))
    folder = trained.save_pretrained(tmp_path / "stage")
    meta = json.loads((folder / "acoustic.json").read_text())
    assert meta["codec_fingerprint"] == trained.codec.fingerprint
    assert meta["unit_tokenizer"]["fingerprint"] == trained.unit_tokenizer["fingerprint"]
    assert meta["default_voice"] == {"speakers": len(SPEAKERS), "utterances": 2 * 6}  # 6 a speaker, under 8
    loaded = AcousticStage.from_pretrained(folder)
    assert torch.equal(loaded.default_voice, trained.default_voice) and loaded.default_voice.abs().sum() > 0
    voice_kwargs: list[dict[str, Any]] = [{"voice_wav": prompt}, {}]  # a prompt's voice, the default voice
    for kw in voice_kwargs:
        assert torch.equal(loaded.synthesize(units, **kw), trained.synthesize(units, **kw)), kw
    assert loaded.config.unit_init == trained.config.unit_init == "codebook"
    # saving again over the folder replaces it whole
    trained.save_pretrained(folder)
    assert AcousticStage.from_pretrained(folder).codec.fingerprint == trained.codec.fingerprint
    # a folder saved before unit_init existed was trained from random rows, and says so
    del meta["config"]["unit_init"]
    (folder / "acoustic.json").write_text(json.dumps(meta))
    assert AcousticStage.from_pretrained(folder).config.unit_init == "random"


def test_decoder_settings_are_the_stages_saved_and_overridable(trained, tmp_path):
    """A stage decodes with MelRVQConfig's default settings, not its codec's config's; they are saved in
    acoustic.json and reloaded; a folder saved before they existed gets the defaults; a call's own settings
    override them for that call."""
    from audiopalm.tokenizers.mel_rvq import MelRVQConfig

    defaults = MelRVQConfig()
    codec_cfg = trained.codec.config
    assert (codec_cfg.griffin_lim_iters, codec_cfg.nnls_iters) != (defaults.griffin_lim_iters, defaults.nnls_iters)
    assert (trained.griffin_lim_iters, trained.nnls_iters) == (defaults.griffin_lim_iters, defaults.nnls_iters)
    units = torch.randint(0, trained.config.num_units, (1, 20))
    folder = trained.save_pretrained(tmp_path / "stage")
    meta = json.loads((folder / "acoustic.json").read_text())
    assert meta["decoder"] == {"griffin_lim_iters": defaults.griffin_lim_iters, "nnls_iters": defaults.nnls_iters}
    meta["decoder"] = {"griffin_lim_iters": 3, "nnls_iters": 1}
    (folder / "acoustic.json").write_text(json.dumps(meta))
    loaded = AcousticStage.from_pretrained(folder)
    assert (loaded.griffin_lim_iters, loaded.nnls_iters) == (3, 1)
    assert torch.equal(loaded.synthesize(units), trained.synthesize(units, griffin_lim_iters=3, nnls_iters=1))
    assert not torch.allclose(loaded.synthesize(units), trained.synthesize(units))
    loaded.griffin_lim_iters = defaults.griffin_lim_iters  # the attribute is what a plain call uses
    assert torch.equal(loaded.synthesize(units, nnls_iters=defaults.nnls_iters), trained.synthesize(units))
    del meta["decoder"]
    (folder / "acoustic.json").write_text(json.dumps(meta))
    old = AcousticStage.from_pretrained(folder)
    assert (old.griffin_lim_iters, old.nnls_iters) == (defaults.griffin_lim_iters, defaults.nnls_iters)
    assert old.codec.config.griffin_lim_iters == codec_cfg.griffin_lim_iters  # the codec's own config is untouched
    with pytest.raises(ValueError, match="griffin_lim_iters = 0"):
        AcousticStage(trained.config, trained.codec, unit_tokenizer=trained.unit_tokenizer, griffin_lim_iters=0)


def test_synthesize_is_deterministic_and_batched_equals_one_by_one(trained):
    rng = np.random.default_rng(1)
    units = torch.randint(0, trained.config.num_units, (3, 40))
    lengths = torch.tensor([40, 25, 31])
    prompts = [voice(s, f0, fm, rng) for s, (f0, fm) in zip((0.7, 0.5, 0.9), list(SPEAKERS.values()) * 2, strict=False)]
    plen = torch.tensor([len(p) for p in prompts])
    pwav = torch.zeros(3, int(plen.max()))
    for i, p in enumerate(prompts):
        pwav[i, : len(p)] = torch.from_numpy(p)
    wav = trained.synthesize(units, voice_wav=pwav, lengths=lengths, voice_lengths=plen)
    spf = trained.codec.samples_per_frame
    assert wav.shape == (3, 40 * spf)
    assert torch.equal(wav, trained.synthesize(units, voice_wav=pwav, lengths=lengths, voice_lengths=plen))
    for i in range(3):
        n = int(lengths[i])
        one = trained.synthesize(units[i : i + 1, :n], voice_wav=torch.from_numpy(prompts[i]))  # [1, n * spf]
        # Griffin-Lim's iterations amplify the last-bit differences of multi-threaded batched reductions (2 threads:
        # up to 3e-4 on a 0.6 peak); a padding or masking error moves samples by the signal's own size
        torch.testing.assert_close(wav[i, : n * spf], one[0], atol=1e-3 * float(one.abs().max()), rtol=0)
        assert (wav[i, n * spf :] == 0).all()
    # the voice changes the output: two speakers' prompts give different sound for the same units
    a = trained.predict_features(units[:1], voice_wav=torch.from_numpy(prompts[0]))[0]
    b = trained.predict_features(units[:1], voice_wav=torch.from_numpy(prompts[1]))[0]
    assert (a - b).abs().mean() > 1e-3


def test_bad_units_and_voices_are_refused(trained):
    with pytest.raises(ValueError, match=r"unit ids must be in \[0, 12\)"):
        trained.synthesize(torch.tensor([[0, 12, 3]]))
    with pytest.raises(ValueError, match="units must be"):
        trained.synthesize(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="not both"):
        trained.synthesize(torch.tensor([[1, 2]]), voice_wav=torch.zeros(1600), voice=trained.default_voice)
    with pytest.raises(ValueError, match="voice must be"):
        trained.synthesize(torch.tensor([[1, 2]]), voice=torch.zeros(3))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="AcousticConfig.kernel_size"):
        AcousticConfig(kernel_size=4)
    with pytest.raises(ValueError, match="AcousticConfig.dropout"):
        AcousticConfig(dropout=1.0)
    unknown: Any = "letters"  # as a YAML or JSON file can give it
    with pytest.raises(ValueError, match="AcousticConfig.unit_init"):
        AcousticConfig(unit_init=unknown)


# -------------------------------------------------------------------------------------------------------- the recipe


def run_in_process(args: list[str]) -> int:
    """``audiopalm train train_acoustic ARGS`` in this process; returns its exit code."""
    from accelerate.state import AcceleratorState, GradientState

    from audiopalm.recipes.train_acoustic import TrainAcousticRecipe

    try:
        return TrainAcousticRecipe.main(args)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def test_recipe_trains_saves_a_loadable_stage_and_resumes_bit_for_bit(corpus, tokenizers, tmp_path, capsys):
    from audiopalm.modeling.extend import check_complete
    from audiopalm.training import read_jsonl

    common = [
        "--config",
        "train_acoustic_tiny",
        f"data.manifests=[{corpus}]",
        f"data.unit_tokenizer={tokenizers[0]}",
        f"data.codec={tokenizers[1]}",
        "train.eval_every=3",
    ]
    out = tmp_path / "run"
    assert run_in_process([*common, f"train.output_dir={out}"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    dev = [r for r in rows if "dev_loss/mel_l1" in r]
    assert [r["step"] for r in dev] == [3, 6]
    assert all(r["dev_loss/all"] == r["dev_loss/l1"] > 0 and r["dev_loss/mel_l1"] > 0 for r in dev), dev
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000003"]
    check_complete(out / "final")  # the completion marker, written last like every recipe's final
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    stage = AcousticStage.from_pretrained(out / "final")
    assert stage.config.hidden_size == 32 and stage.config.num_units == 12
    # hub-ready: a model card, no absolute path; a copy elsewhere (the original renamed away) loads alone
    from audiopalm.modeling.card import find_absolute_paths, read_card_data

    assert read_card_data(out / "final")["library_name"] == "audiopalm" and find_absolute_paths(out / "final") == []
    moved = shutil.copytree(out / "final", tmp_path / "elsewhere" / "final")
    (out / "final").rename(out / "final.away")
    try:
        copied = AcousticStage.from_pretrained(moved).state_dict()
        assert (
            all(torch.equal(copied[k], v) for k, v in stage.state_dict().items())
            and copied.keys() == stage.state_dict().keys()
        )
    finally:
        (out / "final.away").rename(out / "final")
    assert stage.synthesize(torch.tensor([[1, 2, 3, 4]])).shape == (1, 4 * stage.codec.samples_per_frame)
    # the launch flags behave as for the other recipes: a used folder is refused, --print-config only prints
    capsys.readouterr()
    assert run_in_process([*common, f"train.output_dir={out}"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_in_process([*common, f"train.output_dir={out}", "--print-config"]) == 0
    assert "recipe: train_acoustic" in capsys.readouterr().out
    # a second run resumed from step 3 of a copy gives the same losses for steps 4..6
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints", resumed / "checkpoints")
    shutil.copytree(out / "cache", resumed / "cache")
    assert run_in_process([*common, f"train.output_dir={resumed}", "--resume"]) == 0
    again = {r["step"]: r["loss"] for r in read_jsonl(resumed / "metrics.jsonl") if "loss" in r}
    assert [again[s] for s in (4, 5, 6)] == [losses[s] for s in (4, 5, 6)]
    a, b = AcousticStage.from_pretrained(out / "final"), AcousticStage.from_pretrained(resumed / "final")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


@pytest.mark.slow
def test_recipe_two_ddp_processes_match_one(corpus, tokenizers, tmp_path):
    """``accelerate launch`` with the shipped CPU config (2-process DDP over gloo, micro-batch 1 x accumulation 2)
    gives the losses of one process with micro-batch 4: the global batch and its crops/prompts are fixed by the step."""
    import os
    import subprocess
    import sys

    from audiopalm.recipes import ACCELERATE_DIR
    from audiopalm.training import read_jsonl

    common = [
        "--config",
        "train_acoustic_tiny",
        f"data.manifests=[{corpus}]",
        f"data.unit_tokenizer={tokenizers[0]}",
        f"data.codec={tokenizers[1]}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.max_steps=4",
        "train.save_every=0",
        "train.eval_every=0",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_in_process([*common, f"train.output_dir={one}"]) == 0
    cmd = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(ACCELERATE_DIR / "cpu.yaml"),
        "--mixed_precision",
        "no",
        "-m",
        "audiopalm.recipes.train_acoustic",
        *common,
        f"train.output_dir={two}",
        "train.micro_batch_size=1",
        "train.grad_accum_steps=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "global batch 4 = 1 x 2 accum x 2" in log, log[-3000:]

    def losses(out: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r}

    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(abs(a[s] - b[s]) <= 1e-4 * abs(a[s]) for s in a), (a, b)
    assert AcousticStage.from_pretrained(two / "final").config.hidden_size == 32
