"""Text corpora for language modelling: embedded data sets or the user's files.

A corpus is a list of documents (a fortune, a verse, a source file, a
paragraph). Each document goes to validation or training by a stable hash of
its id, so the split never changes between runs, machines or Python versions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aigc.data import registry
from aigc.data.sword import iter_verses
from aigc.errors import ConfigError, DataError

Document = tuple[str, str]  # (stable id, text)

_MIN_UNITS = 20  # a single file needs this many paragraphs (or lines) to split by them
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FORTUNE_SEP = re.compile(r"^%\s*$", re.MULTILINE)


@dataclass
class TextCorpus:
    """Training and validation text of one corpus."""

    name: str
    train: str = field(repr=False)  # training text (documents joined by a separator)
    val: str = field(repr=False)  # held-out validation text

    def __repr__(self) -> str:
        return f"TextCorpus(name={self.name!r}, train={len(self.train):,} chars, val={len(self.val):,} chars)"


def read_utf8(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (bad byte at offset {err.start}); "
            f"convert it, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.txt`."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _strip_ansi(text: str) -> str:
    """Remove colour codes; repeat, as fortunes-zh nests them ("ESC[;ESC[34;1mm")."""
    while "\x1b" in text:
        text, n = _ANSI.subn("", text)
        if n == 0:
            return text.replace("\x1b", "")
    return text


def _fortune_documents(files: list[Path]) -> list[Document]:
    docs = []
    for path in files:
        text = _strip_ansi(path.read_text(encoding="utf-8", errors="replace"))
        entries = (e.strip("\n").rstrip() for e in _FORTUNE_SEP.split(text))
        docs.extend((f"{path.name}:{i}", e) for i, e in enumerate(entries) if e.strip())
    return docs


def _fortunes() -> tuple[list[Document], str]:
    files = registry.fortune_files()
    if not files:  # fortunes-zh alone also creates the folder
        raise registry.missing_package("fortunes", registry.FORTUNES_DIR / "fortunes", "fortunes")
    return _fortune_documents(files), "\n\n"


def _fortunes_zh() -> tuple[list[Document], str]:
    paths = [registry.FORTUNES_DIR / n for n in registry.FORTUNES_ZH_FILES]
    registry.require_package("fortunes-zh", *paths, dataset="fortunes-zh")
    return _fortune_documents(paths), "\n\n"


def _bible_en() -> tuple[list[Document], str]:
    root = registry.SWORD_ROOT
    registry.require_package("sword-text-web", root / "mods.d" / "engWEB2015eb.conf", dataset="bible-en")
    return list(iter_verses("engWEB2015eb", root)), "\n"


def _python_code() -> tuple[list[Document], str]:
    base = registry.stdlib_dir()
    docs = []
    for path in registry.stdlib_sources():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue  # a few files are deliberately in other encodings
        if text.strip():
            docs.append((path.relative_to(base).as_posix(), text.rstrip() + "\n"))
    return docs, "\n\n"


_EMBEDDED: dict[str, Callable[[], tuple[list[Document], str]]] = {
    "fortunes": _fortunes,
    "bible-en": _bible_en,
    "fortunes-zh": _fortunes_zh,
    "python-code": _python_code,
}


def _user_folder(folder: Path) -> tuple[list[Document], str]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"the folder {folder} has no .txt files; put your training text in .txt files there.")
    docs = [(p.relative_to(folder).as_posix(), read_utf8(p).strip()) for p in files]
    return [d for d in docs if d[1]], "\n\n"


def _user_file(path: Path) -> tuple[list[Document], str]:
    text = read_utf8(path)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) >= _MIN_UNITS:
        return [(f"{path.name}:{i}", p) for i, p in enumerate(paragraphs)], "\n\n"
    lines = [line.rstrip() for line in text.split("\n") if line.strip()]
    if len(lines) >= _MIN_UNITS:
        return [(f"{path.name}:{i}", line) for i, line in enumerate(lines)], "\n"
    return [(path.name, text.strip())] if text.strip() else [], "\n"  # split by characters


def _hash_unit(doc_id: str) -> float:
    """A stable number in [0, 1) for a document id."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[str], list[str]]:
    """Documents whose id hashes below ``val_fraction`` go to validation.

    With two or more documents both sides are non-empty: the lowest-hashing
    document moves to validation (or the highest to training) if needed.
    """
    scores = [_hash_unit(doc_id) for doc_id, _ in docs]
    is_val = [s < val_fraction for s in scores]
    if len(docs) >= 2 and not any(is_val):
        is_val[scores.index(min(scores))] = True
    if len(docs) >= 2 and all(is_val):
        is_val[scores.index(max(scores))] = False
    train = [text for (_, text), v in zip(docs, is_val) if not v]
    val = [text for (_, text), v in zip(docs, is_val) if v]
    return train, val


def _split_characters(text: str, val_fraction: float) -> tuple[str, str]:
    """Hold out the last ``val_fraction`` of the characters (at least one)."""
    n_val = max(1, round(len(text) * val_fraction)) if len(text) >= 2 else 0
    return text[: len(text) - n_val], text[len(text) - n_val :]


def _load_documents(source: str) -> tuple[str, list[Document], str]:
    if source in _EMBEDDED:
        docs, sep = _EMBEDDED[source]()
        return source, docs, sep
    path = Path(source).expanduser()
    if not path.exists():
        known = ", ".join(_EMBEDDED)
        raise DataError(
            f"{source!r} is neither a known text data set ({known}) nor an existing file or folder; "
            "check the name or path."
        )
    docs, sep = _user_folder(path) if path.is_dir() else _user_file(path)
    return path.stem or path.name, docs, sep


def load_text_corpus(source: str, val_fraction: float = 0.05) -> TextCorpus:
    """Load an embedded corpus (fortunes, bible-en, fortunes-zh, python-code) or
    the user's ``.txt`` file or folder, split deterministically into train/val."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    name, docs, sep = _load_documents(source)
    if not any(text.strip() for _, text in docs):
        raise DataError(f"the corpus {source!r} is empty; give it some text to learn from.")
    if len(docs) == 1:
        train, val = _split_characters(docs[0][1], val_fraction)
        return TextCorpus(name, train, val)
    train_docs, val_docs = split_documents(docs, val_fraction)
    return TextCorpus(name, sep.join(train_docs), sep.join(val_docs))
