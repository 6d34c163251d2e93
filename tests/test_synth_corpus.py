"""The generated parallel corpus: grammar (agreement, case, word order), splits, voices, audio, determinism."""

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import pytest
import soundfile as sf

from audiopalm.audio import io as audio
from audiopalm.audio.io import AudioError
from audiopalm.data.manifest import Record, check_manifest, read_manifest
from audiopalm.errors import UserError
from data_prep import grammar as g
from data_prep import synth_corpus as sc


class Sizes(TypedDict):
    """Sentences per split: :func:`synth_corpus.synthesize`'s ``train``/``dev``/``test``."""

    train: int
    dev: int
    test: int


SIZES = Sizes(train=12, dev=4, test=4)
Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
SEED = 3


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    sc.synthesize(out, **SIZES, seed=SEED, jobs=2, progress=False)
    return out


def _records(corpus_dir: Path) -> dict[Split, list[Record]]:
    return {split: read_manifest(corpus_dir / f"{split}.jsonl") for split in SPLITS}


# ----------------------------------------------------------------------------------- grammar


def test_golden_sentences():
    m = g.Meaning("transitive", "present", g.NP("dog", "def", adj="small"), "eat", obj=g.NP("apple", "def", adj="red"))
    assert g.render_all(m) == {
        "en": "the small dog eats the red apple.",
        "fr": "le petit chien mange la pomme rouge.",
        "es": "el perro pequeño come la manzana roja.",
        "de": "der kleine hund isst den roten apfel.",
    }
    m = g.Meaning("transitive", "past", g.NP("girl", "def", plural=True), "see", obj=g.NP("car", "indef"))
    assert g.render_all(m) == {
        "en": "the girls saw a car.",
        "fr": "les filles ont vu une voiture.",
        "es": "las niñas han visto un coche.",
        "de": "die mädchen haben ein auto gesehen.",
    }
    m = g.Meaning(
        "intransitive", "past", g.Pronoun(g.P1SG), "sleep", prep="under", place=g.NP("tree", "def", plural=True)
    )
    assert g.render_all(m) == {
        "en": "i slept under the trees.",
        "fr": "j'ai dormi sous les arbres.",
        "es": "he dormido debajo de los árboles.",
        "de": "ich habe unter den bäumen geschlafen.",
    }
    m = g.Meaning("existential", "present", g.NP("apple", "indef"), prep="in", place=g.NP("garden", "def"))
    assert g.render_all(m) == {
        "en": "there is an apple in the garden.",
        "fr": "il y a une pomme dans le jardin.",
        "es": "hay una manzana en el jardín.",
        "de": "im garten gibt es einen apfel.",
    }
    m = g.Meaning("question", "past", g.Pronoun(g.P3SG, "m"), "eat", obj=g.NP("cake", "dem"))
    assert g.render_all(m) == {
        "en": "did he eat this cake?",
        "fr": "est-ce qu'il a mangé ce gâteau ?",
        "es": "¿ha comido él este pastel?",
        "de": "hat er diesen kuchen gegessen?",
    }
    m = g.Meaning("adjective", "present", g.NP("house", "def", plural=True), adj="big")
    assert g.render_all(m) == {
        "en": "the houses are big.",
        "fr": "les maisons sont grandes.",
        "es": "las casas son grandes.",
        "de": "die häuser sind groß.",
    }
    m = g.Meaning("locative", "present", g.NP("bird", "dem", adj="old"), prep="next_to", place=g.NP("tree", "def"))
    assert g.render_all(m) == {
        "en": "this old bird is next to the tree.",
        "fr": "ce vieil oiseau est à côté de l'arbre.",
        "es": "este pájaro viejo está al lado del árbol.",
        "de": "dieser alte vogel ist neben dem baum.",
    }
    m = g.Meaning("intransitive", "present", g.NP("cat", "indef"), "wait", negated=True)
    assert g.render_all(m) == {
        "en": "a cat does not wait.",
        "fr": "un chat n'attend pas.",
        "es": "un gato no espera.",
        "de": "eine katze wartet nicht.",
    }


def _fr_article(det, gender, plural, next_word):
    if det == "def":
        return "les" if plural else ("l'" if g._fr_vowel_initial(next_word) else {"m": "le", "f": "la"}[gender])
    if det == "dem":
        return "ces" if plural else ("cette" if gender == "f" else ("cet" if g._fr_vowel_initial(next_word) else "ce"))
    if det == "poss":
        return "mes" if plural else ("ma" if gender == "f" and not g._fr_vowel_initial(next_word) else "mon")
    return None


def _meanings(n, seed, pred):
    rng = random.Random(seed)
    out: list[g.Meaning] = []
    while len(out) < n:
        m = g.sample_meaning(rng)
        if pred(m):
            out.append(m)
    return out


def test_french_and_spanish_agreement_on_sampled_sentences():
    """Predicate adjectives agree with the subject; subject articles agree with the noun's gender and number."""
    sample = _meanings(150, 1, lambda m: m.pattern == "adjective" and isinstance(m.subject, g.NP))
    for m in sample:
        s, adj = m.subject, g.ADJECTIVES[m.adj]
        for lang in ("fr", "es"):
            gender = g.NOUNS[s.noun].forms[lang][0]
            idx = (2 if s.plural else 0) + (gender == "f")
            text = g.render(m, lang)
            assert text.endswith(" " + adj.forms[lang][idx] + "."), (lang, text, gender, s)
        fr = g.render(m, "fr")
        gender, sg, pl = g.NOUNS[s.noun].forms["fr"]
        noun = pl if s.plural else sg
        first_after_det = fr.replace("'", "' ").split()[1]
        expected = _fr_article(s.det, gender, s.plural, first_after_det)
        if expected is not None:
            assert fr.startswith(expected), (fr, expected, s)
        assert noun in fr.replace("'", " ").split(), (fr, noun)
        es = g.render(m, "es")
        es_gender = g.NOUNS[s.noun].forms["es"][0]
        if s.det == "def":
            assert (
                es.split()[0]
                == {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}[
                    (es_gender, s.plural)
                ]
            ), (es, s)


def test_french_adjective_forms_follow_noun_gender_in_objects():
    sample = _meanings(150, 2, lambda m: m.obj is not None and m.obj.adj is not None)
    for m in sample:
        o, adj = m.obj, g.ADJECTIVES[m.obj.adj]
        gender, sg, pl = g.NOUNS[o.noun].forms["fr"]
        idx = (2 if o.plural else 0) + (gender == "f")
        words = g.render(m, "fr").replace("'", "' ").rstrip(" .?").split()
        allowed = {adj.forms["fr"][idx]} | ({adj.fr_vowel} if idx == 0 else set())
        assert allowed & set(words), (words, allowed, o)
        noun = pl if o.plural else sg
        i = words.index(noun)
        # position: pre-nominal adjectives right before the noun, the others right after it
        assert (words[i - 1] if adj.fr_pre else words[i + 1]) in allowed, (words, adj.key, adj.fr_pre)


def test_german_case_on_articles_and_adjectives():
    sample = _meanings(
        120,
        3,
        lambda m: (
            m.pattern == "transitive"
            and m.obj.det == "def"
            and not m.obj.plural
            and g.NOUNS[m.obj.noun].forms["de"][0] == "m"
        ),
    )
    for m in sample:
        de = g.render(m, "de").rstrip(".").split()
        noun = g.NOUNS[m.obj.noun].forms["de"][1]
        i = len(de) - 1 - de[::-1].index(noun)
        if m.obj.adj:  # den roten apfel: accusative masculine, weak ending -en
            assert de[i - 2] == "den" and de[i - 1].endswith("en"), de
        else:
            assert de[i - 1] == "den", de
    # nominative masculine subject keeps "der"; dative after a locative preposition
    m = g.Meaning("locative", "present", g.NP("dog", "def"), prep="under", place=g.NP("table", "indef", adj="big"))
    assert g.render(m, "de") == "der hund ist unter einem großen tisch."
    m = g.Meaning("transitive", "present", g.NP("man", "indef", adj="old"), "buy", obj=g.NP("ball", "indef", adj="new"))
    assert g.render(m, "de") == "ein alter mann kauft einen neuen ball."


def test_verbs_conjugate_by_person_and_number():
    texts = {
        slot: g.render_all(g.Meaning("intransitive", "present", g.Pronoun(slot), "sleep"))
        for slot in (g.P1SG, g.P2SG, g.P3SG, g.P1PL, g.P3PL)
    }
    assert [t["fr"] for t in texts.values()] == ["je dors.", "tu dors.", "il dort.", "nous dormons.", "ils dorment."]
    assert [t["es"] for t in texts.values()] == ["duermo.", "duermes.", "él duerme.", "dormimos.", "ellos duermen."]
    assert [t["de"] for t in texts.values()] == [
        "ich schlafe.",
        "du schläfst.",
        "er schläft.",
        "wir schlafen.",
        "sie schlafen.",
    ]
    assert [t["en"] for t in texts.values()] == ["i sleep.", "you sleep.", "he sleeps.", "we sleep.", "they sleep."]


def test_generated_sentences_are_unique_deterministic_and_clean():
    a = g.generate_sentences(400, seed=5)
    assert [s.texts for s in a] == [s.texts for s in g.generate_sentences(400, seed=5)]
    assert [s.texts for s in a[:50]] != [s.texts for s in g.generate_sentences(50, seed=6)]
    assert [s.texts for s in g.generate_sentences(10, seed=5, start=200)] == [s.texts for s in a[200:210]]
    assert len({s.meaning.key() for s in a}) == len(a)
    assert {s.meaning.pattern for s in a} == set(g.PATTERNS)
    for lang in g.LANGS:
        texts = [s.texts[lang] for s in a]
        assert len(set(texts)) == len(texts), lang
        vocab = g.vocabulary(lang)
        for t in texts:
            assert t == t.lower() and t[-1] in ".?" and "  " not in t, t
            assert len(vocab) > 250, (lang, len(vocab))
    pairs = g.generate_pairs(2, seed=5)
    assert len(pairs) == 2 * len(g.PAIRS)
    assert pairs[0] == {
        "id": "s00000-en-fr",
        "src_lang": "en",
        "src_text": a[0].texts["en"],
        "tgt_lang": "fr",
        "tgt_text": a[0].texts["fr"],
    }


# ----------------------------------------------------------------------------------- corpus


def test_outputs_and_manifests(corpus_dir):
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "corpus.json", "README.md"):
        assert (corpus_dir / name).is_file(), name
    meta = json.loads((corpus_dir / "corpus.json").read_text())
    assert meta["seed"] == SEED and meta["sentences"] == SIZES and meta["complete"] is True
    assert meta["held_out_voices"] == [v.id for vs in sc.VOICES.values() for v in vs if v.held_out]
    for split, recs in _records(corpus_dir).items():
        assert len(recs) == 6 * SIZES[split] == meta["records"][split]
        assert {(r.lang, r.tgt_lang) for r in recs} == set(g.PAIRS)
        assert all(r.split == split and r.tgt_audio and r.speaker for r in recs)
        for r in recs:  # the speaker is the voice named in the source wav's file name
            assert r.audio is not None and r.speaker is not None, r
            assert Path(r.audio).stem.endswith(r.speaker) and r.speaker.startswith(r.lang), r
    wavs = sorted((corpus_dir / "wav").rglob("*.wav"))
    assert len(wavs) == 4 * sum(SIZES[s] for s in SPLITS)  # one wav per (sentence, language), no temp files left
    summary = check_manifest(corpus_dir / "test.jsonl", decode=True, progress=False)
    assert not summary["bad_lines"] and not summary["audio_errors"], summary


def test_splits_share_no_sentence(corpus_dir):
    recs = _records(corpus_dir)
    ids = {split: {r.id.split("-")[0] for r in rs} for split, rs in recs.items()}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    for lang in g.LANGS:
        texts = {
            split: {*(r.text for r in rs if r.lang == lang), *(r.tgt_text for r in rs if r.tgt_lang == lang)}
            for split, rs in recs.items()
        }
        assert len(texts["train"]) == SIZES["train"], lang
        assert not texts["train"] & (texts["dev"] | texts["test"]), lang


def test_held_out_voice_only_in_test(corpus_dir):
    held = {v.id for vs in sc.VOICES.values() for v in vs if v.held_out}
    assert len(held) == 4 and all(len([v for v in vs if not v.held_out]) >= 8 for vs in sc.VOICES.values())
    recs = _records(corpus_dir)

    def voices(rs):  # the voices of source and target audio, from the wav names
        return {Path(p).stem.split("-", 1)[1] for r in rs for p in (r.audio, r.tgt_audio)}

    assert not voices(recs["train"]) & held and not voices(recs["dev"]) & held
    test_voices = voices(recs["test"])
    assert held <= test_voices, test_voices  # every language's held-out voice speaks in test...
    assert test_voices - held, test_voices  # ...and so do seen voices


def test_audio_is_16k_with_plausible_durations(corpus_dir):
    recs = read_manifest(corpus_dir / "dev.jsonl")
    for r in recs:
        for path, text in ((r.audio, r.text), (r.tgt_audio, r.tgt_text)):
            assert path is not None and text is not None, r  # every synthetic pair is speech to speech
            assert sf.info(path).samplerate == 16000 and sf.info(path).channels == 1
            wav, sr = audio.load(path)
            seconds = len(wav) / sr
            assert sr == 16000 and 0.4 < seconds < 12, (path, seconds)
            assert 0.02 < seconds / len(text) < 0.2, (path, seconds, text)  # espeak speaks ~10-20 chars/s
            # leading silence trimmed to about PAD_SECONDS
            frame = sr // 100
            loud = np.nonzero(
                np.abs(wav[: len(wav) // frame * frame]).reshape(-1, frame).max(1) > 0.01 * np.abs(wav).max()
            )[0]
            assert loud[0] * 0.01 <= sc.PAD_SECONDS + 0.02, (path, loud[0])


def test_deterministic_same_seed_and_different_seed(corpus_dir, tmp_path):
    again = tmp_path / "again"
    sc.synthesize(again, **SIZES, seed=SEED, jobs=1, progress=False)  # in-process path, same result
    for split in ("train", "dev", "test"):
        assert (again / f"{split}.jsonl").read_text() == (corpus_dir / f"{split}.jsonl").read_text()
    assert (again / "corpus.json").read_text() == (corpus_dir / "corpus.json").read_text()
    wavs = sorted(p.relative_to(corpus_dir) for p in (corpus_dir / "wav").rglob("*.wav"))
    assert wavs == sorted(p.relative_to(again) for p in (again / "wav").rglob("*.wav"))
    for rel in wavs[:: max(1, len(wavs) // 6)]:
        assert (again / rel).read_bytes() == (corpus_dir / rel).read_bytes(), rel
    other = sc.split_sentences(**SIZES, seed=SEED + 1)
    same = sc.split_sentences(**SIZES, seed=SEED)
    assert [s.texts for s in other["train"]] != [s.texts for s in same["train"]]
    # the test split does not move when only the train size changes
    assert [s.texts for s in sc.split_sentences(train=50, dev=4, test=4, seed=SEED)["test"]] == [
        s.texts for s in same["test"]
    ]


def test_rerun_is_idempotent_and_other_seed_is_refused(corpus_dir, capsys):
    from audiopalm.commands.main import main

    def mtimes():
        return {p: p.stat().st_mtime_ns for p in corpus_dir.rglob("*") if p.is_file()}

    before = mtimes()
    args = ["synth", "--out", str(corpus_dir), "--seed", str(SEED), "--jobs", "2", "--quiet"]
    args += [f"--{k}={v}" for k, v in SIZES.items()]
    assert main(args) == 0
    assert mtimes() == before
    assert main(["synth", "--out", str(corpus_dir), "--seed", str(SEED + 1), "--quiet"]) == 2
    assert "different seed" in capsys.readouterr().err
    assert mtimes() == before


def test_voice_for_alternates_held_out_in_test():
    s = g.generate_sentences(6, seed=0)
    for lang, expected in (("en", [True, False] * 3), ("fr", [False, True] * 3)):  # languages alternate too
        picks = [sc.voice_for(0, x, lang, "test", test_index=i) for i, x in enumerate(s)]
        assert [p.held_out for p in picks] == expected, lang
    assert all(not sc.voice_for(0, x, lang, "train").held_out for x in s for lang in g.LANGS)
    assert sc.voice_for(0, s[0], "de", "train") == sc.voice_for(0, s[0], "de", "train")


def test_voice_table_adds_seen_voices_and_keeps_the_held_out_one():
    assert sc.voice_table() == sc.VOICES  # the default is the table itself: default corpora are unchanged
    table = sc.voice_table(30)
    held_variants = {v.variant for vs in sc.VOICES.values() for v in vs if v.held_out}
    for lang, voices in table.items():
        seen = [v for v in voices if not v.held_out]
        assert voices[:10] == sc.VOICES[lang] and len(seen) == 30  # the nine and the held-out voice first, as they were
        assert [v.id for v in voices[10:]] == [f"{lang}-v{i}" for i in range(10, 31)] and len(
            {v.id for v in voices}
        ) == 31
        extra = voices[10:]
        assert len({v.variant for v in extra}) == 21 and not {v.variant for v in extra} & held_variants
        table_accents = {v.espeak_voice for v in sc.VOICES[lang] if not v.held_out}
        assert {v.espeak_voice for v in extra} == table_accents  # the language's seen accents only, each used
        assert all(130 <= v.speed <= 185 and 30 <= v.pitch <= 75 for v in extra)
    assert sc.voice_table(12)["fr"] == table["fr"][:13]  # more voices extend, never reorder
    sc.check_espeak([v for vs in table.values() for v in vs])  # espeak-ng knows every extra variant
    s = g.generate_sentences(200, seed=0)
    drawn = {sc.voice_for(0, x, "en", "train", voices=table).id for x in s}
    assert len(drawn) > 20 and not drawn & {"en-v09"}  # training draws from the new voices, never the held-out one
    assert [sc.voice_for(0, x, "en", "test", test_index=i, voices=table).id for i, x in enumerate(s[:6])][::2] == [
        "en-v09"
    ] * 3
    for bad in (8, 9 + len(sc.EXTRA_VARIANTS) + 1):
        with pytest.raises(UserError, match="--voices"):
            sc.voice_table(bad)


def test_a_corpus_with_more_voices(tmp_path, capsys):
    from audiopalm.commands.main import main

    out = tmp_path / "c"
    args = ["synth", "--out", str(out), "--train", "20", "--dev", "2", "--test", "2", "--langs", "en", "fr"]
    args += ["--seed", "1", "--quiet"]
    assert main([*args, "--voices", "20"]) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert [len(meta["voices"][lang]) for lang in g.LANGS] == [21] * 4 and meta["held_out_voices"] == [
        "en-v09",
        "fr-v09",
    ]
    speakers = {str(r.speaker) for r in read_manifest(out / "train.jsonl")}
    assert any(int(x.rsplit("v", 1)[1]) > 9 for x in speakers), speakers  # new voices speak training audio
    assert main(args) == 2  # the folder's voices differ from the nine asked now: refused
    assert "different voices" in capsys.readouterr().err


def test_trim_silence_and_voice_validation():
    sr = 16000
    wav = np.zeros(sr * 2, dtype=np.float32)
    wav[sr // 2 : sr] = 0.5 * np.sin(np.arange(sr // 2) / 5.0)  # speech from 0.5 s to 1.0 s
    out = sc.trim_silence(wav, sr, pad=0.1)
    assert abs(len(out) / sr - 0.7) < 0.02, len(out) / sr
    with pytest.raises(ValueError, match="pitch"):
        dataclasses.replace(sc.VOICES["en"][0], pitch=120)


def test_script_help_runs():
    script = Path(sc.__file__)
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(script.parents[1])},
    )
    assert proc.returncode == 0 and "--profile" in proc.stdout, proc.stderr


def test_an_empty_split_is_allowed(tmp_path):
    corpus = sc.synthesize(tmp_path / "c", train=2, dev=0, test=1, seed=0, jobs=1, progress=False)
    assert corpus["sentences"]["dev"] == 0
    assert (tmp_path / "c/dev.jsonl").read_text() == ""
    assert "| dev | 0 | 0 | 0.000 |" in (tmp_path / "c/README.md").read_text()


def test_rerun_respeaks_a_truncated_wav(tmp_path):
    """A re-run keeps whole wavs but speaks a truncated one again (it used to be kept, read short)."""
    voice = sc.VOICES["en"][0]
    path = tmp_path / "a.wav"
    seconds = sc.speak("the small dog sleeps.", voice, path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])  # header still promises the whole clip
    with pytest.raises(AudioError, match="truncated"):
        audio.load(path)
    assert sc.speak("the small dog sleeps.", voice, path) == pytest.approx(seconds)
    assert path.read_bytes() == whole


def test_text_only_mt_manifest_of_unseen_sentences(corpus_dir, tmp_path, capsys):
    from audiopalm.commands.main import main

    shutil.copy(corpus_dir / "corpus.json", tmp_path / "corpus.json")  # sizes and seed of the spoken corpus
    assert main(["synth", "--out", str(tmp_path), "--seed", str(SEED), "--text-only", "500", "--quiet"]) == 0
    rows = read_manifest(tmp_path / sc.TEXT_ONLY_NAME)
    assert len(rows) == 500 * len(g.PAIRS) and all(r.audio is None and r.tgt_text for r in rows)
    assert {r.split for r in rows} == {"test"} and len({r.text for r in rows if r.lang == "en"}) == 500
    spoken = {r.text for recs in _records(corpus_dir).values() for r in recs}
    assert not spoken & {r.text for r in rows}  # unseen: no sentence of the spoken corpus
    assert main(["synth", "--out", str(tmp_path), "--seed", str(SEED + 1), "--text-only", "5", "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err


def test_a_language_subset_speaks_the_full_corpus_wavs_of_those_languages(corpus_dir, tmp_path):
    corpus = sc.synthesize(tmp_path / "enfr", **SIZES, seed=SEED, jobs=1, progress=False, langs=["fr", "en"])
    assert corpus["languages"] == ["en", "fr"] and corpus["pairs"] == ["en-fr", "fr-en"]
    assert corpus["held_out_voices"] == ["en-v09", "fr-v09"]
    full, sub = _records(corpus_dir), _records(tmp_path / "enfr")
    for split in ("train", "dev", "test"):
        want = [r for r in full[split] if {r.lang, r.tgt_lang} == {"en", "fr"}]
        assert [r.id for r in sub[split]] == [r.id for r in want]
        for a, b in zip(sub[split], want, strict=True):
            assert (a.text, a.tgt_text, a.speaker) == (b.text, b.tgt_text, b.speaker)
            assert a.audio is not None and b.audio is not None, (a, b)
            assert Path(a.audio).read_bytes() == Path(b.audio).read_bytes()
    assert sorted(p.name for p in (tmp_path / "enfr" / "wav").iterdir()) == ["en", "fr"]
    only = sc.write_text_only(tmp_path / "enfr", 3, **SIZES, seed=SEED)  # the folder's languages
    assert {(r.lang, r.tgt_lang) for r in read_manifest(only)} <= {("en", "fr"), ("fr", "en")}
    with pytest.raises(sc.UserError, match="--langs: expected English"):
        sc.synthesize(tmp_path / "x", **SIZES, seed=SEED, jobs=1, progress=False, langs=["fr", "de"])
