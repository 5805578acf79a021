"""Read SWORD zText Bible modules (as shipped by Debian's ``sword-text-*``).

A zText module stores each testament (``ot``, ``nt``) in three files:

* ``.bzs`` block index: per block three little-endian uint32 -- offset and
  compressed size in ``.bzz``, uncompressed size;
* ``.bzv`` verse index: per entry uint32 block number, uint32 offset in the
  uncompressed block, and the text length (uint16; uint32 for ``zText4``);
* ``.bzz`` the compressed blocks (zlib for ``CompressType=ZIP``).

Entries follow the module's versification: 0 and 1 are module and testament
headings, then per book a book heading, per chapter a chapter heading and the
verses. Verse text is OSIS XML, which :func:`osis_to_text` turns into plain text.
"""

from __future__ import annotations

import bz2
import html
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aigc.data.registry import SWORD_ROOT, install_hint_for_module
from aigc.data.versification import VERSIFICATIONS, Book, index_size
from aigc.errors import DataError

_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "ZIP": zlib.decompress,
    "BZIP2": bz2.decompress,
    "XZ": lzma.decompress,
}


@dataclass(frozen=True)
class ModuleInfo:
    """The fields of a module's ``mods.d/*.conf`` that the reader needs."""

    name: str
    data_dir: Path
    driver: str  # zText or zText4
    compress: str  # ZIP, BZIP2 or XZ
    versification: str
    encoding: str


def read_conf(module: str, root: Path = SWORD_ROOT) -> ModuleInfo:
    """Find ``[module]`` among ``root/mods.d/*.conf`` and parse its fields."""
    mods = root / "mods.d"
    confs = sorted(mods.glob("*.conf")) if mods.is_dir() else []
    for conf in confs:
        fields = _parse_conf(conf.read_text(encoding="utf-8", errors="replace"))
        if fields.get("", "").lower() == module.lower():
            return _module_info(fields, root)
    raise DataError(
        f"SWORD module {module!r} is not installed under {root}; "
        f"{install_hint_for_module(module)}."
    )


def _parse_conf(text: str) -> dict[str, str]:
    """Key=value lines; the section name is stored under ''. First value wins."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and "" not in fields:
            fields[""] = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields


def _module_info(fields: dict[str, str], root: Path) -> ModuleInfo:
    name = fields[""]
    driver = fields.get("ModDrv", "")
    if driver.lower() not in ("ztext", "ztext4"):
        raise DataError(f"SWORD module {name!r} uses driver {driver!r}; only zText modules can be read.")
    if fields.get("CipherKey"):
        raise DataError(f"SWORD module {name!r} is encrypted; use an unlocked module instead.")
    compress = fields.get("CompressType", "ZIP").upper()
    if compress not in _DECOMPRESS:
        raise DataError(f"SWORD module {name!r} uses {compress} compression; supported: ZIP, BZIP2, XZ.")
    v11n = fields.get("Versification", "KJV")
    if v11n not in VERSIFICATIONS:
        raise DataError(
            f"SWORD module {name!r} uses versification {v11n!r}; supported: {', '.join(VERSIFICATIONS)}."
        )
    return ModuleInfo(
        name=name,
        data_dir=root / fields.get("DataPath", ""),
        driver=driver,
        compress=compress,
        versification=v11n,
        encoding="utf-8" if fields.get("Encoding", "").upper() in ("UTF-8", "UTF8") else "latin-1",
    )


def _verse_keys(books: list[Book]) -> list[str | None]:
    """Index entry -> "Book.chapter.verse", or None for heading entries."""
    keys: list[str | None] = [None, None]  # module and testament headings
    for osis, counts in books:
        keys.append(None)  # book heading
        for chapter, n_verses in enumerate(counts, start=1):
            keys.append(None)  # chapter heading
            keys.extend(f"{osis}.{chapter}.{verse}" for verse in range(1, n_verses + 1))
    return keys


def iter_raw_verses(module: str, root: Path = SWORD_ROOT) -> Iterator[tuple[str, str]]:
    """Yield (key, OSIS markup) for every verse entry, in canonical order."""
    info = read_conf(module, root)
    decompress = _DECOMPRESS[info.compress]
    # zText stores a uint16 text length, zText4 a uint32.
    entry = struct.Struct("<III" if info.driver.lower() == "ztext4" else "<IIH")
    for testament, books in zip(("ot", "nt"), VERSIFICATIONS[info.versification]):
        files = [info.data_dir / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")]
        if not all(f.is_file() for f in files):
            continue  # a module may hold only one testament
        bzs, bzv, bzz = (f.read_bytes() for f in files)
        n_entries = len(bzv) // entry.size
        if n_entries != index_size(books):
            raise DataError(
                f"SWORD module {info.name!r} has {n_entries} {testament} index entries but "
                f"versification {info.versification} expects {index_size(books)}; the module is damaged."
            )
        blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs) - 11, 12)]
        cache: dict[int, bytes] = {}
        for key, (block, start, size) in zip(_verse_keys(books), entry.iter_unpack(bzv)):
            if key is None or size == 0 or block >= len(blocks):
                continue
            if block not in cache:
                offset, csize, _ = blocks[block]
                cache[block] = decompress(bzz[offset : offset + csize])
            yield key, cache[block][start : start + size].decode(info.encoding, errors="replace")


# Elements whose content is not verse text: notes (footnotes, cross references),
# editors' headings and speaker labels. OSIS does not nest these in themselves.
# Canonical titles (psalm superscriptions) are scripture and are kept.
_DROP = re.compile(
    r'<(note|speaker)\b[^>]*?(?<!/)>.*?</\1>|<title\b(?![^>]*canonical="true")[^>]*?(?<!/)>.*?</title>',
    re.DOTALL,
)
# Milestone divisions that are not Bible text (e.g. WEB's glossary after Rev.22.21):
# drop from the start marker to its end marker, or to the end of the entry.
_NON_TEXT_DIV = re.compile(
    r'<div\b(?=[^>]*\btype="(?:front|back|introduction|glossary|colophon|preface|index)")'
    r'(?=[^>]*\bsID="([^"]*)")[^>]*/>'
)
# Elements that separate words (lines, paragraphs, breaks); other tags are inline.
_BREAK = re.compile(r"</?(?:l|lg|lb|p|div|chapter|item|list|milestone|verse|title)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_GAP = "\x00"  # marks where dropped content was, to keep words apart
# Added words (<transChange>) are glued to their neighbours in some modules
# (RV1909: "allí<tc>también</tc>bdelio"); they get spaces unless they are an
# enclitic pronoun completing the word before ("sáca<tc>lo</tc>").
_ADDED_START, _ADDED_END = "\x01", "\x02"
_CLITIC = r"(?:[mts]e|nos|os|les?|l[oa]s?)(?:l[oa]s?)?"
_KEEP_CLITIC = re.compile(rf"(?<=\w){_ADDED_START}(?={_CLITIC}{_ADDED_END})")
_ADDED_BETWEEN_WORDS = re.compile(rf"(?<=\w)[{_ADDED_START}{_ADDED_END}]+(?=\w)")
_ADDED = re.compile(f"[{_ADDED_START}{_ADDED_END}]")
# Dropped notes between words ("God<note/>created") must leave a space,
# but not before punctuation ("God<note/>, and") or after an opening quote.
_GAP_BETWEEN_WORDS = re.compile(rf"(?<=[^\s(\[“‘«¿¡]){_GAP}+(?=[^\s.,;:!?)\]”’»])")


def _drop_non_text_divs(markup: str) -> str:
    while (start := _NON_TEXT_DIV.search(markup)) is not None:
        end = re.search(rf'<div\b[^>]*\beID="{re.escape(start.group(1))}"[^>]*/>', markup[start.end() :])
        tail = markup[start.end() + end.end() :] if end else ""
        markup = markup[: start.start()] + _GAP + tail
    return markup


def osis_to_text(markup: str) -> str:
    """Plain text of one verse: words kept, notes and headings dropped."""
    text = _drop_non_text_divs(markup) if "<div" in markup else markup
    if "<note" in text or "<title" in text or "<speaker" in text:
        text = _DROP.sub(_GAP, text)
    text = _BREAK.sub(" ", text)
    if "<transChange" in text:
        text = re.sub(r"<transChange\b[^>]*>", _ADDED_START, text.replace("</transChange>", _ADDED_END))
        text = _TAG.sub("", text)
        text = _KEEP_CLITIC.sub("", text)
        text = _ADDED.sub("", _ADDED_BETWEEN_WORDS.sub(" ", text))
    else:
        text = _TAG.sub("", text)
    if _GAP in text:
        text = _GAP_BETWEEN_WORDS.sub(" ", text).replace(_GAP, "")
    if "&" in text:
        text = html.unescape(text)
    return " ".join(text.replace("\u00b6", " ").split())  # drop KJV's paragraph signs


def iter_verses(module: str, root: Path = SWORD_ROOT) -> Iterator[tuple[str, str]]:
    """Yield (key like "Gen.1.1", clean text) for each non-empty verse of a module.

    Keys depend only on the versification, so modules that share one (e.g. KJV
    and spaRV1909) can be aligned verse by verse.
    """
    for key, markup in iter_raw_verses(module, root):
        text = osis_to_text(markup)
        if text:
            yield key, text
