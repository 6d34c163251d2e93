"""Corpus importers (data_prep/librispeech, covost2, cvss, fleurs; `audiopalm prepare`) on tiny built copies.

Every source here is built at test time (tests/fixtures/hf_corpora.py) with the hub datasets' own
column names and feature types, or in the corpora's release folder layout.
"""

import os
from pathlib import Path

import pytest
from fixtures import hf_corpora as fx

from audiopalm.audio import io as audio
from audiopalm.audio.io import AudioError
from audiopalm.data.manifest import ManifestError, read_manifest
from data_prep import covost2, cvss, fleurs, librispeech
from data_prep import hf_common as hc


def _dur(path: str | None) -> tuple[float, int]:
    """Seconds and sample rate of a record's wav (its ``audio`` or ``tgt_audio``, which the importer must have set)."""
    assert path is not None, "the record has no wav"
    wav, sr = audio.load(path)
    return len(wav) / sr, sr


# ----------------------------------------------------------------------------- shared helpers


@pytest.mark.parametrize(
    "code,iso",
    [
        ("en", "en"),
        ("zh-CN", "zh"),
        ("sv-SE", "sv"),
        ("en_us", "en"),
        ("cmn_hans_cn", "zh"),
        ("es_419", "es"),
        ("FR", "fr"),
    ],
)
def test_iso_lang(code, iso):
    assert hc.iso_lang(code) == iso


def test_iso_lang_unknown_names_the_code():
    with pytest.raises(hc.SourceError, match="'fil_ph' -> 'fil'"):
        hc.iso_lang("fil_ph")


def test_parse_pair():
    assert hc.parse_pair("zh-CN_en") == ("zh-CN", "en", "zh", "en")
    for bad in ("fren", "fr_en_de", "en_en"):
        with pytest.raises(hc.SourceError, match=bad):
            hc.parse_pair(bad)


def test_strip_audio_ext():
    assert hc.strip_audio_ext("train/common_voice_fr_1.mp3.wav") == "common_voice_fr_1"
    assert hc.strip_audio_ext("1089-134686-0000") == "1089-134686-0000"


# ----------------------------------------------------------------------------- LibriSpeech


def test_librispeech_saved_copy(tmp_path):
    src = fx.librispeech_saved(tmp_path / "ls", n=4)
    out = tmp_path / "out"
    man = librispeech.prepare(src, out, split="train.clean.100", progress=False)
    assert man == (out / "librispeech.train.clean.100.jsonl").resolve()
    recs = read_manifest(man)
    assert [r.id for r in recs] == [f"ls-1089-134686-{i:04d}" for i in range(4)]
    assert recs[0].text == fx.LIBRI_TEXTS[0].lower()
    assert {r.lang for r in recs} == {"en"} and {r.speaker for r in recs} == {"ls-1089"}
    assert {r.split for r in recs} == {"train.clean.100"}
    for i, r in enumerate(recs):
        dur, sr = _dur(r.audio)
        assert sr == 16000 and abs(dur - fx.seconds_of(i)) < 1e-3, (r.id, dur, sr)
        assert r.audio is not None and os.path.dirname(r.audio) == str((out / "audio" / "librispeech").resolve())


def test_librispeech_max_items_resample_and_keep_case(tmp_path):
    src = fx.librispeech_saved(tmp_path / "ls", n=4)
    man = librispeech.prepare(src, tmp_path / "out", max_items=2, sample_rate=24000, lowercase=False, progress=False)
    recs = read_manifest(man)
    assert len(recs) == 2 and recs[1].text == fx.LIBRI_TEXTS[1]
    dur, sr = _dur(recs[1].audio)
    assert sr == 24000 and abs(dur - fx.seconds_of(1)) < 1e-3


def _mtimes(manifest: Path) -> dict[str, int]:
    """Each record's wav -> its modification time (ns)."""
    mtimes = {}
    for r in read_manifest(manifest):
        assert r.audio is not None, r
        mtimes[r.audio] = os.stat(r.audio).st_mtime_ns
    return mtimes


def test_librispeech_is_idempotent(tmp_path, capsys):
    src = fx.librispeech_saved(tmp_path / "ls", n=3)
    out = tmp_path / "out"
    man = librispeech.prepare(src, out, progress=False)
    first = _mtimes(man)
    assert "3 wavs written, 0 kept" in capsys.readouterr().err
    man2 = librispeech.prepare(src, out, progress=False)
    assert man2 == man
    assert "0 wavs written, 3 kept" in capsys.readouterr().err
    assert _mtimes(man) == first
    assert not list(out.rglob("*.partial.wav"))


def test_librispeech_bad_audio_errors_or_is_skipped(tmp_path, capsys):
    src = fx.librispeech_saved(tmp_path / "ls", n=4, bad=1)
    with pytest.raises(AudioError, match=r"id ls-1089-134686-0001.*unreadable audio.*--skip-bad"):
        librispeech.prepare(src, tmp_path / "out", progress=False)
    man = librispeech.prepare(src, tmp_path / "out", skip_bad=True, progress=False)
    assert [r.id[-4:] for r in read_manifest(man)] == ["0000", "0002", "0003"]
    assert "1 bad rows skipped" in capsys.readouterr().err


def test_librispeech_release_folder(tmp_path):
    src = fx.librispeech_release(tmp_path / "LibriSpeech" / "dev-clean", n=3)
    recs = read_manifest(librispeech.prepare(src, tmp_path / "out", split="dev-clean", progress=False))
    assert [r.id for r in recs] == [f"ls-121-127105-{i:04d}" for i in range(3)]
    assert recs[2].text == fx.LIBRI_TEXTS[2].lower() and recs[0].speaker == "ls-121"
    assert abs(_dur(recs[2].audio)[0] - fx.seconds_of(2)) < 1e-3


def test_librispeech_missing_split_lists_the_ones_there(tmp_path):
    src = fx.librispeech_saved(tmp_path / "ls", n=1)
    with pytest.raises(hc.SourceError, match=r"no split 'test.other'; it has: train.clean.100"):
        librispeech.prepare(src, tmp_path / "out", split="test.other", progress=False)


# ----------------------------------------------------------------------------- CoVoST 2


def test_covost2_saved_copy(tmp_path):
    src = fx.covost_saved(tmp_path / "cv", pair="fr_en", n=5)
    man = covost2.prepare(src, tmp_path / "out", pair="fr_en", split="validation", progress=False)
    assert man.name == "covost2.fr_en.validation.jsonl"
    recs = read_manifest(man)
    assert len(recs) == 5
    r = recs[0]
    assert (r.id, r.lang, r.tgt_lang, r.split) == ("cv2-fr_en-common_voice_fr_19000005", "fr", "en", "validation")
    assert (r.text, r.tgt_text) == (fx.FR[0], fx.EN[0])
    assert r.speaker == "cv-05" + "ab" * 7 and r.tgt_audio is None
    assert abs(_dur(r.audio)[0] - fx.seconds_of(5)) < 1e-3


def test_covost2_language_codes_with_region(tmp_path):
    src = fx.covost_saved(tmp_path / "cv", pair="zh-CN_en", n=2, splits=("train",))
    recs = read_manifest(covost2.prepare(src, tmp_path / "out", pair="zh-CN_en", progress=False))
    assert {(r.lang, r.tgt_lang) for r in recs} == {("zh", "en")}


def test_covost2_bad_row(tmp_path):
    src = fx.covost_saved(tmp_path / "cv", n=3, bad=2, splits=("train",))
    with pytest.raises(AudioError, match="common_voice_fr_19000002"):
        covost2.prepare(src, tmp_path / "out", progress=False)
    recs = read_manifest(covost2.prepare(src, tmp_path / "out", skip_bad=True, max_items=5, progress=False))
    assert len(recs) == 2


def test_covost2_release_tsv_and_mp3_clips(tmp_path, capsys):
    src = fx.covost_release(tmp_path / "covost", n=4)
    train = read_manifest(covost2.prepare(src, tmp_path / "out", split="train", progress=False))
    assert [r.text for r in train] == fx.FR[:3]  # train + train_covost
    err = capsys.readouterr().err
    assert "1 skipped: split 'dev'" in err
    dev = read_manifest(covost2.prepare(src, tmp_path / "out", split="validation", progress=False))
    assert [r.tgt_text for r in dev] == [fx.EN[3]]
    dur, sr = _dur(dev[0].audio)
    assert sr == 48000 and dur >= fx.seconds_of(3) + 0.2 - 1e-3  # MP3 decoded (encoder padding may add a little)


# ----------------------------------------------------------------------------- CVSS


def test_cvss_release_joined_with_covost(tmp_path, capsys):
    tgt = fx.cvss_release(tmp_path / "cvss_c_fr_en_v1.0", split_rows={"train": [0, 1, 2, 3], "dev": [5, 6]})
    srcs = fx.covost_saved(tmp_path / "cv", n=5)  # train 0..4, validation 5..9
    man = cvss.prepare(tgt, tmp_path / "out", covost=srcs, pair="fr_en", split="train", progress=False)
    assert man.name == "cvss_c.fr_en.train.jsonl"
    recs = read_manifest(man)
    assert [r.id for r in recs] == [f"cvss_c-fr_en-common_voice_fr_1900000{i}" for i in range(4)]
    assert "1 skipped: no CVSS target" in capsys.readouterr().err  # clip 4 has none
    r = recs[1]
    assert (r.lang, r.text, r.tgt_lang) == ("fr", fx.FR[1], "en")
    assert r.tgt_text == fx.EN[1].rstrip(".").upper()
    src_dur, src_sr = _dur(r.audio)
    tgt_dur, tgt_sr = _dur(r.tgt_audio)
    assert (src_sr, tgt_sr) == (16000, 24000)
    assert abs(src_dur - fx.seconds_of(1)) < 1e-3 and abs(tgt_dur - 2 * fx.seconds_of(1)) < 1e-3
    assert r.tgt_audio is not None and r.audio is not None, r
    assert "/audio/cvss_c/" in r.tgt_audio and "/audio/commonvoice/" in r.audio

    dev = read_manifest(
        cvss.prepare(
            tgt,
            tmp_path / "out",
            covost=srcs,
            pair="fr_en",
            split="validation",
            tgt_text_from="covost",
            variant="t",
            progress=False,
        )
    )
    assert [r.tgt_text for r in dev] == [fx.EN[0], fx.EN[1]]  # clips 5, 6: CoVoST's own translation
    assert all(r.tgt_audio is not None and "/audio/cvss_t/" in r.tgt_audio for r in dev)


def test_cvss_saved_target_copy_and_max_items(tmp_path):
    tgt = fx.cvss_saved(tmp_path / "cvss", ids=(0, 1, 2))
    srcs = fx.covost_saved(tmp_path / "cv", n=5, splits=("train",))
    recs = read_manifest(cvss.prepare(tgt, tmp_path / "out", covost=srcs, pair="fr_en", max_items=2, progress=False))
    assert len(recs) == 2 and recs[0].tgt_text == fx.EN[0].upper()
    assert _dur(recs[0].tgt_audio)[1] == 24000


def test_cvss_shares_source_wavs_with_covost2(tmp_path, capsys):
    srcs = fx.covost_saved(tmp_path / "cv", n=3, splits=("train",))
    covost2.prepare(srcs, tmp_path / "out", progress=False)
    capsys.readouterr()
    cvss.prepare(
        fx.cvss_release(tmp_path / "cvss", split_rows={"train": [0, 1, 2]}),
        tmp_path / "out",
        covost=srcs,
        pair="fr_en",
        progress=False,
    )
    assert "3 wavs written, 3 kept" in capsys.readouterr().err  # targets new, sources reused


def test_cvss_only_into_english(tmp_path):
    with pytest.raises(hc.SourceError, match="only has X->en"):
        cvss.prepare(tmp_path, tmp_path / "out", covost=tmp_path, pair="en_de")


# ----------------------------------------------------------------------------- FLEURS


def test_fleurs_saved_copy(tmp_path):
    src = fx.fleurs_saved(tmp_path / "fl", config="fr_fr", n=3)
    man = fleurs.prepare(src, tmp_path / "out", config="fr_fr", progress=False)
    assert man.name == "fleurs.fr_fr.train.jsonl"
    recs = read_manifest(man)
    assert [r.id for r in recs] == [f"fleurs-fr_fr-{10004088536354799741 + i}" for i in range(3)]
    assert recs[0].text == recs[2].text == fx.FLEURS_RAW["fr_fr"][0]  # two recordings of one sentence
    assert {r.lang for r in recs} == {"fr"} and recs[0].speaker is None
    assert abs(_dur(recs[2].audio)[0] - fx.seconds_of(2)) < 1e-3
    norm = read_manifest(fleurs.prepare(src, tmp_path / "out2", config="fr_fr", normalized=True, progress=False))
    assert norm[1].text == fx.FLEURS_RAW["fr_fr"][1].lower().rstrip(".")


def test_fleurs_mandarin_and_all_config_use_lang_id(tmp_path):
    src = fx.fleurs_saved(tmp_path / "fl", config="cmn_hans_cn", n=2)
    recs = read_manifest(fleurs.prepare(src, tmp_path / "out", config="cmn_hans_cn", progress=False))
    assert {r.lang for r in recs} == {"zh"} and recs[1].text == fx.FLEURS_RAW["cmn_hans_cn"][1]
    recs = read_manifest(fleurs.prepare(src, tmp_path / "out", config="all", progress=False))
    assert {r.lang for r in recs} == {"zh"}  # from each row's lang_id ClassLabel


def test_fleurs_bad_row_and_release_folder(tmp_path):
    src = fx.fleurs_saved(tmp_path / "fl", config="en_us", n=3, bad=0)
    with pytest.raises(AudioError, match="fleurs-en_us-10004088536354799741"):
        fleurs.prepare(src, tmp_path / "out", progress=False)
    assert len(read_manifest(fleurs.prepare(src, tmp_path / "out", skip_bad=True, progress=False))) == 2
    rel = fx.fleurs_release(tmp_path / "en_us", n=2)
    recs = read_manifest(fleurs.prepare(rel, tmp_path / "out", config="en_us", split="validation", progress=False))
    assert [r.id for r in recs] == ["fleurs-en_us-2000", "fleurs-en_us-2001"]
    assert recs[1].text == fx.FLEURS_RAW["en_us"][1] and recs[1].split == "validation"


# ----------------------------------------------------------------------------- CLI


def test_cli_prepare(tmp_path, capsys):
    from audiopalm.commands.main import main

    src = fx.librispeech_saved(tmp_path / "ls", n=3, bad=0)
    out = tmp_path / "out"
    assert main(["prepare", "librispeech", "--source", str(src), "--out", str(out), "--quiet"]) == 2
    assert "pass --skip-bad" in capsys.readouterr().err
    rc = main(
        ["prepare", "librispeech", "--source", str(src), "--out", str(out), "--skip-bad", "--max-items", "1", "--quiet"]
    )
    cap = capsys.readouterr()
    assert rc == 0 and "1 bad rows skipped" in cap.err
    man = cap.out.strip()
    assert man.endswith("librispeech.train.clean.100.jsonl") and len(read_manifest(man)) == 1

    cv = fx.covost_saved(tmp_path / "cv", n=2, splits=("train",))
    tgt = fx.cvss_release(tmp_path / "cvss", split_rows={"train": [0, 1]})
    assert (
        main(
            [
                "prepare",
                "cvss",
                "--source",
                str(tgt),
                "--covost",
                str(cv),
                "--pair",
                "fr_en",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert len(read_manifest(capsys.readouterr().out.strip())) == 2


# ----------------------------------------------------------------------------- hub-shaped sources


@pytest.mark.parametrize("streaming", [True, False])
def test_librispeech_from_a_downloaded_hub_repo(tmp_path, streaming):
    repo = fx.as_hub_repo(fx.librispeech_saved(tmp_path / "ls", n=3), tmp_path / "repo", config="all")
    man = librispeech.prepare(
        repo, tmp_path / "out", config="all", split="train.clean.100", max_items=2, streaming=streaming, progress=False
    )
    recs = read_manifest(man)
    assert [r.id for r in recs] == ["ls-1089-134686-0000", "ls-1089-134686-0001"]
    assert abs(_dur(recs[1].audio)[0] - fx.seconds_of(1)) < 1e-3


def test_unreachable_hub_is_a_clear_error(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py: never touch the network
    with pytest.raises(hc.SourceError, match="Without the hub, pass a save_to_disk copy"):
        librispeech.prepare("openslr/librispeech_asr", tmp_path / "out", progress=False)


def test_fleurs_pairs_joined_on_sentence_id(tmp_path, capsys):
    fr = fx.fleurs_saved(tmp_path / "fr", config="fr_fr", n=3)  # sentences 1000, 1001, 1000
    en = fx.fleurs_saved(tmp_path / "en", config="en_us", n=1)  # only sentence 1000
    man = fleurs.prepare(fr, tmp_path / "out", config="fr_fr", tgt_source=en, tgt_config="en_us", progress=False)
    assert man.name == "fleurs.fr_fr-en_us.train.jsonl"
    recs = read_manifest(man)
    assert [r.id for r in recs] == [f"fleurs-fr_fr-en_us-{10004088536354799741 + i}" for i in (0, 2)]
    assert "1 skipped: sentence not in en_us" in capsys.readouterr().err
    assert {(r.lang, r.tgt_lang, r.tgt_text) for r in recs} == {("fr", "en", fx.FLEURS_RAW["en_us"][0])}
    assert recs[0].tgt_audio == recs[1].tgt_audio  # one target wav per sentence
    assert abs(_dur(recs[0].tgt_audio)[0] - fx.seconds_of(0)) < 1e-3
    text_only = read_manifest(
        fleurs.prepare(
            fr, tmp_path / "out2", config="fr_fr", tgt_source=en, tgt_config="en_us", tgt_speech=False, progress=False
        )
    )
    assert all(r.tgt_audio is None and r.tgt_text for r in text_only)


def test_cli_fleurs_pairs_with_a_release_folder_target(tmp_path, capsys):
    from audiopalm.commands.main import main

    fr = fx.fleurs_saved(tmp_path / "fr", config="fr_fr", n=2, split="validation")
    en = fx.fleurs_release(tmp_path / "en_us", config="en_us", n=2)  # dev.tsv: sentences 1000, 1001
    assert (
        main(
            [
                "prepare",
                "fleurs",
                "--source",
                str(fr),
                "--config",
                "fr_fr",
                "--tgt-config",
                "en_us",
                "--tgt-source",
                str(en),
                "--split",
                "validation",
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    recs = read_manifest(capsys.readouterr().out.strip())
    assert [r.tgt_text for r in recs] == fx.FLEURS_RAW["en_us"]
    assert [r.text for r in recs] == fx.FLEURS_RAW["fr_fr"]


@pytest.mark.parametrize("bad_id", ["../../../escaped", "a/b", "..", "x\x00y", "x\ny"])
def test_importer_refuses_ids_that_are_not_file_names(tmp_path, bad_id):
    """A dataset row id becomes a wav name: one with a path in it must never write outside --out."""
    src = fx.librispeech_saved(tmp_path / "ls", n=3, ids={1: bad_id})
    out = tmp_path / "deep" / "out"
    with pytest.raises(ManifestError, match="field 'id': bad id"):
        librispeech.prepare(src, out, progress=False)
    written = {p for p in tmp_path.rglob("*.wav")}
    assert all(out.resolve() in p.resolve().parents for p in written), written
    man = librispeech.prepare(src, out, skip_bad=True, progress=False)  # counted and skipped
    assert [r.id[-4:] for r in read_manifest(man)] == ["0000", "0002"]
    assert all(out.resolve() in p.resolve().parents for p in tmp_path.rglob("*.wav"))


def test_importer_rewrites_a_truncated_wav(tmp_path):
    src = fx.librispeech_saved(tmp_path / "ls", n=2)
    man = librispeech.prepare(src, tmp_path / "out", progress=False)
    wav = read_manifest(man)[1].audio
    assert wav is not None
    whole = open(wav, "rb").read()
    open(wav, "wb").write(whole[: len(whole) // 2])
    librispeech.prepare(src, tmp_path / "out", progress=False)
    assert open(wav, "rb").read() == whole
