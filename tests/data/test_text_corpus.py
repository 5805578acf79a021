"""Text corpora: embedded data sets, the user's files, the train/val split, errors."""

import re
from pathlib import Path

import pytest

from aigc.data import DatasetInfo, TextCorpus, list_datasets, load_text_corpus
from aigc.data import registry
from aigc.data.text import split_documents
from aigc.errors import ConfigError, DataError

CJK = re.compile(r"[\u4e00-\u9fff]")


def needs(path: str, package: str):
    return pytest.mark.skipif(not Path(path).exists(), reason=f"needs `apt-get install {package}`")


def paragraphs_file(tmp_path: Path, n: int = 100) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(f"Paragraph number {i}.\nIt has two lines." for i in range(n)), encoding="utf-8")
    return path


# --- the split -------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint():
    docs = [(f"doc{i}", f"text {i}") for i in range(1000)]
    train, val = split_documents(docs, 0.1)
    assert (train, val) == split_documents(list(docs), 0.1)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(t for _, t in docs)
    assert 50 < len(val) < 150  # about 10%


def test_split_keeps_both_sides_non_empty():
    docs = [("a", "first"), ("b", "second")]
    for fraction in (1e-9, 0.999999):
        train, val = split_documents(docs, fraction)
        assert len(train) == 1 and len(val) == 1


def test_user_file_splits_by_paragraph(tmp_path):
    corpus = load_text_corpus(str(paragraphs_file(tmp_path)), val_fraction=0.2)
    assert isinstance(corpus, TextCorpus) and corpus.name == "notes"
    train, val = corpus.train.split("\n\n"), corpus.val.split("\n\n")
    assert val and not set(train) & set(val)
    assert len(train) + len(val) == 100
    assert corpus == load_text_corpus(str(paragraphs_file(tmp_path)), val_fraction=0.2)
    assert "chars" in repr(corpus) and "Paragraph" not in repr(corpus)


def test_user_file_with_few_paragraphs_splits_by_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(f"line {i}" for i in range(40)) + "\n", encoding="utf-8")
    corpus = load_text_corpus(str(path), val_fraction=0.25)
    train, val = corpus.train.split("\n"), corpus.val.split("\n")
    assert val and sorted(train + val) == sorted(f"line {i}" for i in range(40))


def test_short_user_file_holds_out_last_characters(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be, or not to be, that is the question.", encoding="utf-8")
    corpus = load_text_corpus(str(path), val_fraction=0.1)
    assert corpus.train + corpus.val == path.read_text()
    assert len(corpus.val) == 4


def test_user_folder_reads_txt_files_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    for i in range(30):
        (tmp_path / ("sub" if i % 2 else ".") / f"f{i:02d}.txt").write_text(f"file {i}\n", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not text", encoding="utf-8")
    corpus = load_text_corpus(str(tmp_path), val_fraction=0.2)
    docs = corpus.train.split("\n\n") + corpus.val.split("\n\n")
    assert sorted(docs) == sorted(f"file {i}" for i in range(30))
    assert corpus.val and "not text" not in corpus.train + corpus.val


def test_folder_of_two_files_has_validation(tmp_path):
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "b.txt").write_text("beta", encoding="utf-8")
    corpus = load_text_corpus(str(tmp_path), val_fraction=0.01)
    assert {corpus.train, corpus.val} == {"alpha", "beta"}


# --- errors ----------------------------------------------------------------------


def test_unknown_name_lists_known_data_sets():
    with pytest.raises(DataError, match="fortunes, bible-en, fortunes-zh, python-code"):
        load_text_corpus("no-such-corpus")


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="neither a known text data set"):
        load_text_corpus(str(tmp_path / "missing.txt"))


def test_empty_inputs_are_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        load_text_corpus(str(empty))
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        load_text_corpus(str(folder))


def test_non_utf8_file_is_an_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_text_corpus(str(path))


def test_bad_val_fraction_is_an_error(tmp_path):
    with pytest.raises(ConfigError):
        load_text_corpus(str(paragraphs_file(tmp_path)), val_fraction=1.5)


@pytest.mark.parametrize(
    "name, attribute, package",
    [("fortunes", "FORTUNES_DIR", "fortunes"), ("fortunes-zh", "FORTUNES_DIR", "fortunes-zh"),
     ("bible-en", "SWORD_ROOT", "sword-text-web")],
)
def test_uninstalled_data_set_says_what_to_install(monkeypatch, tmp_path, name, attribute, package):
    monkeypatch.setattr(registry, attribute, tmp_path / "absent")
    with pytest.raises(DataError, match=f"apt-get install {package}`"):
        load_text_corpus(name)


# --- embedded corpora ------------------------------------------------------------


@needs("/usr/share/games/fortunes/fortunes", "fortunes")
def test_fortunes_leave_out_chinese_files():
    corpus = load_text_corpus("fortunes")
    text = corpus.train + corpus.val
    assert len(text) > 1_000_000 and corpus.val
    assert not CJK.search(text)
    assert "\n%\n" not in text


@needs("/usr/share/games/fortunes/tang300", "fortunes-zh")
def test_fortunes_zh_is_chinese_without_colour_codes():
    corpus = load_text_corpus("fortunes-zh")
    text = corpus.train + corpus.val
    assert "\x1b" not in text and "[;m" not in text
    assert len(CJK.findall(text)) > 100_000
    assert "李白" in text


@needs("/usr/share/sword/mods.d/engWEB2015eb.conf", "sword-text-web")
def test_bible_en_is_one_verse_per_line():
    corpus = load_text_corpus("bible-en")
    lines = corpus.train.split("\n") + corpus.val.split("\n")
    assert len(lines) > 31_000
    assert "In the beginning, God created the heavens and the earth." in lines


def test_python_code_is_the_standard_library():
    corpus = load_text_corpus("python-code")
    assert "def " in corpus.train and "def " in corpus.val
    assert "import " in corpus.train


def test_registry_covers_design_table():
    rows = {d.name: d for d in list_datasets()}
    assert set(rows) >= {"digits", "fashion-mnist", "emoji", "fortunes", "bible-en", "bible-en-es",
                         "python-code", "fortunes-zh", "speech", "fid-inception"}
    for row in rows.values():
        assert isinstance(row, DatasetInfo) and row.install_hint and row.description
        assert row.size_bytes is None or (row.installed and row.size_bytes > 0)
    assert rows["python-code"].installed
