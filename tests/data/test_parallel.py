"""Parallel corpora: verse alignment, the split, user TSV / two-file inputs, errors."""

import random
from pathlib import Path

import pytest

from aigc.data import ParallelCorpus, load_parallel_corpus, registry
from aigc.data.parallel import Verse, align_verses, split_ids
from aigc.errors import ConfigError, DataError

SWORD = Path("/usr/share/sword/mods.d")
needs_bible = pytest.mark.skipif(
    not (SWORD / "engKJV2006eb.conf").is_file() or not (SWORD / "spaRV1909eb.conf").is_file(),
    reason="needs `apt-get install sword-text-kjv sword-text-sparv`",
)
GEN_1_1 = (
    "In the beginning God created the heaven and the earth.",
    "EN el principio crió Dios los cielos y la tierra.",
)


def verses(texts: dict[str, str], lemmas: dict[str, str] | None = None) -> dict[str, Verse]:
    lemmas = lemmas or {}
    return {k: Verse(t, frozenset(lemmas.get(k, "").split())) for k, t in texts.items()}


# --- alignment rules on tiny synthetic texts ------------------------------------------


def test_missing_verse_drops_that_verse_only():
    a = verses({f"Gen.{c}.{v}": f"en {c}:{v}" for c in (1, 2) for v in range(1, 6)})
    b = verses({k: t.replace("en", "es") for k, t in ((k, v.text) for k, v in a.items()) if k != "Gen.1.3"})
    b["Gen.3.1"] = Verse("es 3:1")  # and one the other side lacks
    triples, dropped = align_verses(a, b)
    assert [k for k, _, _ in triples] == [k for k in a if k != "Gen.1.3"]
    assert all(x.replace("en", "es") == y for _, x, y in triples)  # by key, never by position
    assert dropped == {"verse on one side only": 2}


def test_verse_that_absorbed_a_missing_one_is_dropped():
    a = verses({"Acts.19.39": "a", "Acts.19.40": "b", "Acts.19.41": "c"},
               {"Acts.19.39": "G1 G2", "Acts.19.40": "G3 G4", "Acts.19.41": "G5 G6"})
    b = verses({"Acts.19.39": "x", "Acts.19.40": "y z"}, {"Acts.19.39": "G1 G2", "Acts.19.40": "G3 G4 G5 G6"})
    triples, dropped = align_verses(a, b)
    assert [k for k, _, _ in triples] == ["Acts.19.39"]
    assert dropped == {"verse on one side only": 1, "absorbed a missing verse": 1}


def test_shifted_chapter_is_dropped_and_a_lone_mismatch_alone():
    keys = [f"Num.{c}.{v}" for c in (12, 13) for v in range(1, 9)]
    tags = {k: f"H{i}0 H{i}1 H{i}2" for i, k in enumerate(keys)}
    a = verses({k: k for k in keys}, tags)
    shifted = dict(tags)
    for v in range(1, 9):  # chapter 13 of b is one verse behind
        shifted[f"Num.13.{v}"] = tags[keys[8 + v - 2]]
    shifted["Num.12.4"] = "H999"  # a lone pair whose words differ
    triples, dropped = align_verses(a, verses({k: k for k in keys}, shifted))
    assert [k for k, _, _ in triples] == [f"Num.12.{v}" for v in (1, 2, 3, 5, 6, 7, 8)]
    assert dropped == {"chapter with another verse division": 8, "Strong's numbers differ": 1}


def test_implausible_length_ratio_is_dropped():
    rng = random.Random(0)
    texts = {f"Ps.{c}.{v}": "w" * rng.randint(40, 200) for c in range(1, 31) for v in range(1, 11)}
    other = {k: "x" * round(len(t) * rng.uniform(0.85, 1.15)) for k, t in texts.items()}
    other["Ps.7.7"] = other["Ps.7.7"] + " and a long subscription added after the verse" * 3
    triples, dropped = align_verses(verses(texts), verses(other))
    assert "Ps.7.7" not in {k for k, _, _ in triples}
    assert dropped == {"implausible length ratio": 1}


# --- the split --------------------------------------------------------------------------


def test_split_ids_is_deterministic_exact_and_disjoint():
    ids = [f"id{i}" for i in range(500)]
    s = split_ids(ids, 30, 20)
    assert s == split_ids(list(ids), 30, 20)
    assert (len(s["train"]), len(s["dev"]), len(s["test"])) == (450, 30, 20)
    assert sorted(s["train"] + s["dev"] + s["test"]) == list(range(500))
    assert split_ids(ids, 60, 20)["test"] == s["test"]  # the test set ignores dev_size


def test_copies_of_a_held_out_pair_never_train():
    ids = [f"id{i % 100}" for i in range(300)]  # every id three times
    s = split_ids(ids, 5, 5)
    held = {ids[i] for i in s["dev"] + s["test"]}
    assert len(held) == 10 and not held & {ids[i] for i in s["train"]}
    assert len(s["dropped"]) == 20


# --- the embedded corpus ----------------------------------------------------------------


@needs_bible
def test_bible_pairs_verses_by_key_in_both_directions():
    en_es = load_parallel_corpus("bible-en-es", "en", "es")
    es_en = load_parallel_corpus("bible-en-es", src="es", tgt="en")
    assert isinstance(en_es, ParallelCorpus) and (en_es.src_lang, es_en.src_lang) == ("en", "es")
    assert en_es.train[0] == GEN_1_1 and en_es.ids["train"][0] == "Gen.1.1"
    assert es_en.train[0] == GEN_1_1[::-1]
    splits = ("train", "dev", "test")
    for split in splits:
        assert es_en.ids[split] == en_es.ids[split]
        assert getattr(es_en, split) == [(y, x) for x, y in getattr(en_es, split)]
    by_key = {k: p for s in splits for k, p in zip(en_es.ids[s], getattr(en_es, s))}
    assert by_key["John.3.16"][1].startswith("Porque de tal manera amó Dios al mundo")
    assert "Jonah.1.17" not in by_key and "Jonah.2.1" not in by_key  # RV1909 shifts Jonah 2
    assert "en->es" in repr(en_es) and "beginning" not in repr(en_es)


@needs_bible
def test_bible_split_is_exact_disjoint_and_stable():
    corpus = load_parallel_corpus("bible-en-es", dev_size=1000, test_size=1000)
    train, dev, test = (set(corpus.ids[s]) for s in ("train", "dev", "test"))
    assert (len(dev), len(test)) == (1000, 1000) and len(corpus.dev) == len(corpus.test) == 1000
    assert not train & dev and not train & test and not dev & test
    assert 30_500 < len(train | dev | test) < 31_102
    assert load_parallel_corpus("bible-en-es").ids == corpus.ids
    smaller = load_parallel_corpus("bible-en-es", dev_size=10, test_size=1000)
    assert smaller.ids["test"] == corpus.ids["test"] and set(smaller.ids["dev"]) <= dev
    assert set(corpus.dropped) == {
        "verse on one side only", "absorbed a missing verse", "chapter with another verse division",
        "Strong's numbers differ", "implausible length ratio",
    }
    assert sum(corpus.dropped.values()) < 600


@needs_bible
def test_bible_errors():
    with pytest.raises(DataError, match="en-es and es-en"):
        load_parallel_corpus("bible-en-es", "en", "fr")
    with pytest.raises(DataError, match="en-es and es-en"):
        load_parallel_corpus("bible-en-es", "en", "en")
    with pytest.raises(ConfigError, match="nothing to train"):
        load_parallel_corpus("bible-en-es", dev_size=20_000, test_size=20_000)


def test_bible_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "SWORD_ROOT", tmp_path)
    with pytest.raises(DataError, match="apt-get install sword-text-kjv"):
        load_parallel_corpus("bible-en-es")


# --- the user's files ------------------------------------------------------------------


def write_pairs(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"sentence {i}\tfrase {i}\n" for i in range(n)), encoding="utf-8")
    return path


def test_tsv_is_split_with_capped_sizes(tmp_path):
    path = write_pairs(tmp_path, 200)
    corpus = load_parallel_corpus(str(path), src="de", tgt="fr")
    assert corpus.name == "pairs" and (corpus.src_lang, corpus.tgt_lang) == ("de", "fr")
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (180, 10, 10)  # 5 % each
    assert not {*corpus.train} & {*corpus.dev} and not {*corpus.dev} & {*corpus.test}
    everything = sorted(corpus.train + corpus.dev + corpus.test)
    assert everything == sorted((f"sentence {i}", f"frase {i}") for i in range(200))
    assert corpus == load_parallel_corpus(str(path), src="de", tgt="fr")
    assert corpus.ids["dev"][0].startswith("pairs.tsv:")
    assert len(load_parallel_corpus(str(write_pairs(tmp_path, 20))).dev) == 1


def test_tsv_duplicates_stay_in_one_split_and_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "anki.tsv"
    lines = [f"Hello {i}.\t¡Hola {i}!\tCC-BY 2.0 (France)" for i in range(100)]
    path.write_text("\n".join(lines + [" hello  0. \t¡HOLA 0!"] + [""]), encoding="utf-8")
    corpus = load_parallel_corpus(str(path))
    assert ("Hello 0.", "¡Hola 0!") in corpus.train + corpus.dev + corpus.test
    held = {x.lower().split()[1] for x, _ in corpus.dev + corpus.test}
    assert not held & {x.lower().split()[1] for x, _ in corpus.train}
    assert len(corpus.train) + len(corpus.dev) + len(corpus.test) + sum(corpus.dropped.values()) == 101


def test_tiny_data_trains_on_everything(tmp_path):
    corpus = load_parallel_corpus(str(write_pairs(tmp_path, 5)))
    assert len(corpus.train) == 5 and len(corpus.dev) == 1 and corpus.dev == corpus.test
    assert corpus.dev[0] in corpus.train


def test_two_aligned_files_in_either_direction(tmp_path):
    en, es = tmp_path / "talk.en", tmp_path / "talk.es"
    en.write_text("".join(f"good morning {i}\n" for i in range(40)), encoding="utf-8")
    es.write_text("".join(f"buenos días {i}\n" for i in range(40)), encoding="utf-8")
    forward = load_parallel_corpus(f"{en},{es}", "en", "es")
    backward = load_parallel_corpus(f"{en},{es}", "es", "en")
    assert forward.name == "talk"
    assert ("good morning 0", "buenos días 0") in forward.train + forward.dev + forward.test
    assert (len(forward.dev), len(forward.test)) == (2, 2)
    for split in ("train", "dev", "test"):
        assert getattr(backward, split) == [(y, x) for x, y in getattr(forward, split)]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\tb\nno tab here\n", "line 2 of .* has no tab"),
        ("a\tb\nc\t\n", "line 2 of .* has an empty target"),
        ("a\tb\n\t d\n", "line 2 of .* has an empty source"),
        ("\n\n", "holds no sentence pairs"),
    ],
)
def test_tsv_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_parallel_corpus(str(path))


def test_two_file_errors(tmp_path):
    en, es = tmp_path / "a.en", tmp_path / "a.es"
    en.write_text("one\ntwo\nthree\n", encoding="utf-8")
    es.write_text("uno\ndos\n", encoding="utf-8")
    with pytest.raises(DataError, match="has 3 lines but .* has 2"):
        load_parallel_corpus(f"{en},{es}")
    es.write_text("uno\n\ntres\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 of .*a.es is empty"):
        load_parallel_corpus(f"{en},{es}")
    with pytest.raises(DataError, match="does not exist"):
        load_parallel_corpus(f"{en},{tmp_path / 'missing.es'}")


def test_unknown_source_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="neither a known parallel data set"):
        load_parallel_corpus(str(tmp_path / "nope.tsv"))
    with pytest.raises(DataError, match="is a folder"):
        load_parallel_corpus(str(tmp_path))
    with pytest.raises(ConfigError, match="dev_size"):
        load_parallel_corpus("bible-en-es", dev_size=-1)
    with pytest.raises(ConfigError, match="src"):
        load_parallel_corpus("bible-en-es", src="")
