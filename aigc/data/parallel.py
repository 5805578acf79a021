"""Parallel (translation) corpora: the embedded ``bible-en-es`` or the user's pairs.

``bible-en-es`` pairs the King James Version (SWORD module engKJV2006eb, Debian
``sword-text-kjv``) with the Reina-Valera 1909 (spaRV1909eb, ``sword-text-sparv``)
verse by verse. Both declare KJV versification, so verses are paired by key
("Gen.1.1"), never by position. RV1909 still keeps the Spanish verse division in
places, so :func:`align_verses` drops, in this order:

1. verses that only one side has: RV1909 moved them to the next chapter
   (Jonah 1:17 is its Jonah 2:1) or merged them into the verse before;
2. the verse before such a gap if it absorbed the missing verse, i.e. holds at
   least half of the missing verse's original-language words (see 3);
3. chapters whose verse division differs. Both modules tag words with Strong's
   numbers (the Hebrew or Greek word translated), and true pairs share most of
   them: the Dice overlap is 0.90 at the median, but 0.12 for a verse against
   its neighbour. A pair under 0.3 does not translate the same text; two or more
   in one chapter mean the chapter is shifted (e.g. Num 13, Job 39-40, Jonah 2),
   so all of it goes; a lone one (often just tagged differently) goes alone;
4. pairs of implausible lengths -- Gale & Church's length statistic
   (l_b - c l_a) / sqrt(l_a) more than 5 robust standard deviations from its
   median -- verses split at another place, and RV1909's epistle subscriptions
   ("La primera á los Corintios fué enviada de Filipos...").

With the Debian packages this keeps 30,770 of the KJV's 31,102 verses: rule 1
drops 18 verses, rule 2 drops 6 pairs, rule 3 drops 11 chapters (269 pairs) and
14 lone pairs, rule 4 drops 25 pairs -- 314 of 31,084 key-aligned pairs (1 %).
Reading the two modules takes 2-5 s and aligning 0.25 s, once per process (the
result is cached).

Splits never change between runs or machines: a pair's place is decided by a
blake2b hash of its id -- the verse key for the Bible, the normalised pair text
for user data (so duplicates land in the same split). The test set is the
``test_size`` lowest hashes of "test:" + id, and the dev set the ``dev_size``
lowest of "dev:" + id among the rest, so the test set does not depend on
``dev_size`` and both directions get the same split. User data keeps at most
5 % of its distinct pairs for each of dev and test (at least one each from 20
pairs on); extra copies of a dev or test pair are dropped, never trained on.
With fewer than 20 pairs nothing can be held out: every pair trains, and dev and
test are the same single training pair (a smoke test, not a measurement).
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from aigc.data import registry
from aigc.data.sword import iter_raw_verses, osis_to_text
from aigc.data.text import read_utf8
from aigc.errors import ConfigError, DataError

Pair = tuple[str, str]  # (source, target)
Triple = tuple[str, str, str]  # (verse key, text in one Bible, text in the other)

BIBLE = "bible-en-es"
_BIBLE_MODULES = {"en": "engKJV2006eb", "es": "spaRV1909eb"}
_MIN_DICE = 0.3  # Strong's overlap below which two verses do not translate the same text
_SHIFTED_CHAPTER = 2  # this many such pairs make the whole chapter suspect
_ABSORBED = 0.5  # share of a missing verse's words found in the verse before it
_LENGTH_Z = 5.0  # robust standard deviations of the length statistic
_MIN_LENGTH_STATS = 200  # pairs needed to estimate the length statistic's spread
_MIN_HELD_OUT = 20  # user data needs this many distinct pairs to hold any out
_HELD_OUT_CAP = 0.05  # at most this share of user data in each of dev and test


@dataclass
class ParallelCorpus:
    """Sentence pairs in one translation direction, split into train/dev/test."""

    name: str
    src_lang: str
    tgt_lang: str
    train: list[Pair] = field(repr=False)
    dev: list[Pair] = field(repr=False)
    test: list[Pair] = field(repr=False)
    # Per split, where each pair came from: verse keys ("Gen.1.1") or "file:line".
    ids: dict[str, list[str]] = field(default_factory=dict, repr=False)
    # Pairs left out, by reason (alignment checks, duplicates of held-out pairs).
    dropped: dict[str, int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (
            f"ParallelCorpus(name={self.name!r}, {self.src_lang}->{self.tgt_lang}, "
            f"train={len(self.train):,}, dev={len(self.dev):,}, test={len(self.test):,} pairs)"
        )


# --- the embedded corpus: two Bibles aligned by verse key --------------------------


@dataclass(frozen=True)
class Verse:
    """One verse: its plain text and the original-language words it translates."""

    text: str
    lemmas: frozenset[str] = frozenset()  # Strong's numbers ("H7225", "G2316") of its words


_LEMMA_ATTR = re.compile(r'\blemma="([^"]*)"')
_STRONGS = re.compile(r"\b([GH])0*(\d+)\b")


def read_verses(module: str, root: Path) -> dict[str, Verse]:
    """Every non-empty verse of a SWORD module, with its Strong's numbers."""
    verses = {}
    for key, markup in iter_raw_verses(module, root):
        text = osis_to_text(markup)
        if text:
            attrs = _LEMMA_ATTR.findall(markup)
            lemmas = frozenset(g + n for attr in attrs for g, n in _STRONGS.findall(attr))
            verses[key] = Verse(text, lemmas)
    return verses


def _chapter(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _dice(x: Verse, y: Verse) -> float | None:
    """Overlap of two verses' Strong's numbers, or None if one side has no tags."""
    if not x.lemmas or not y.lemmas:
        return None
    return 2 * len(x.lemmas & y.lemmas) / (len(x.lemmas) + len(y.lemmas))


def _verse_before(key: str, a: Mapping[str, Verse], b: Mapping[str, Verse]) -> str | None:
    """The nearest earlier verse of the same chapter that both sides have."""
    chapter, _, verse = key.rpartition(".")
    if not verse.isdigit():
        return None
    for v in range(int(verse) - 1, 0, -1):
        if (prev := f"{chapter}.{v}") in a and prev in b:
            return prev
    return None


def _absorbed(missing: Verse, prev_here: Verse, prev_there: Verse) -> bool:
    """Whether the other side's previous verse holds the missing verse's words."""
    new_words = missing.lemmas - prev_here.lemmas
    if not new_words or not prev_there.lemmas:
        return False
    return len(new_words & prev_there.lemmas) >= _ABSORBED * len(new_words)


def _length_outliers(triples: list[Triple]) -> set[str]:
    """Keys whose Gale-Church length statistic is more than _LENGTH_Z robust sds off."""
    if len(triples) < _MIN_LENGTH_STATS:
        return set()
    c = sum(len(y) for _, _, y in triples) / sum(len(x) for _, x, _ in triples)
    delta = [(len(y) - c * len(x)) / math.sqrt(len(x)) for _, x, y in triples]
    mid = statistics.median(delta)
    sigma = 1.4826 * statistics.median(abs(d - mid) for d in delta)  # MAD -> sd
    return {k for (k, _, _), d in zip(triples, delta) if abs(d - mid) > _LENGTH_Z * sigma}


def align_verses(a: Mapping[str, Verse], b: Mapping[str, Verse]) -> tuple[list[Triple], dict[str, int]]:
    """Pair two texts of one versification by verse key; drop what does not align.

    Returns (key, text in a, text in b) in a's order and the pairs dropped by
    reason (see the module docstring for the rules).
    """
    dropped: Counter[str] = Counter()
    one_sided = [k for k in a if k not in b] + [k for k in b if k not in a]
    dropped["verse on one side only"] = len(one_sided)
    gone: set[str] = set()
    for key in one_sided:
        here, there = (a, b) if key in a else (b, a)
        prev = _verse_before(key, a, b)
        if prev is not None and prev not in gone and _absorbed(here[key], here[prev], there[prev]):
            gone.add(prev)
            dropped["absorbed a missing verse"] += 1
    shared = [k for k in a if k in b and k not in gone]
    mismatched = {k for k in shared if (d := _dice(a[k], b[k])) is not None and d < _MIN_DICE}
    per_chapter = Counter(_chapter(k) for k in mismatched)
    shifted = {c for c, n in per_chapter.items() if n >= _SHIFTED_CHAPTER}
    dropped["chapter with another verse division"] = sum(_chapter(k) in shifted for k in shared)
    dropped["Strong's numbers differ"] = sum(_chapter(k) not in shifted for k in mismatched)
    kept = [k for k in shared if k not in mismatched and _chapter(k) not in shifted]
    triples = [(k, a[k].text, b[k].text) for k in kept]
    outliers = _length_outliers(triples)
    dropped["implausible length ratio"] = len(outliers)
    return [t for t in triples if t[0] not in outliers], {r: n for r, n in dropped.items() if n}


@lru_cache(maxsize=2)
def _bible_pairs(root: Path) -> tuple[tuple[Triple, ...], tuple[tuple[str, int], ...]]:
    """(key, English, Spanish) for every kept verse, and the drop counts (cached)."""
    for module in _BIBLE_MODULES.values():
        if not registry.sword_module_files(module):
            pkg = registry.SWORD_PACKAGES[module]
            raise registry.missing_package(pkg, root / "mods.d" / f"{module}.conf", BIBLE)
    en, es = (read_verses(m, root) for m in _BIBLE_MODULES.values())
    triples, dropped = align_verses(en, es)
    return tuple(triples), tuple(dropped.items())


# --- the user's files ----------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a .tsv file or two aligned text files as `a.en,a.es`.")
    lines = read_utf8(path).split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_tsv(path: Path) -> tuple[list[Pair], list[str]]:
    """Pairs from ``source<TAB>target`` lines (blank lines skipped, later columns ignored)."""
    pairs, ids = [], []
    for no, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"line {no} of {path} has no tab; each line must be `source<TAB>target`.")
        src, tgt = cols[0].strip(), cols[1].strip()
        if not src or not tgt:
            side = "source" if not src else "target"
            raise DataError(f"line {no} of {path} has an empty {side}; fill it in or delete the line.")
        pairs.append((src, tgt))
        ids.append(f"{path.name}:{no}")
    return pairs, ids


def read_aligned_files(src_path: Path, tgt_path: Path) -> tuple[list[Pair], list[str]]:
    """Pairs from line i of one file and line i of the other (lines blank in both skipped)."""
    src_lines, tgt_lines = _lines(src_path), _lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
            "aligned files need one sentence per line in both, in the same order."
        )
    pairs, ids = [], []
    for no, (src, tgt) in enumerate(zip(src_lines, tgt_lines), start=1):
        src, tgt = src.strip(), tgt.strip()
        if not src and not tgt:
            continue
        if not src or not tgt:
            empty, full = (src_path, tgt_path) if not src else (tgt_path, src_path)
            raise DataError(
                f"line {no} of {empty} is empty but line {no} of {full} is not; fill it in or delete both."
            )
        pairs.append((src, tgt))
        ids.append(f"{src_path.name}:{no}")
    return pairs, ids


def _user_pairs(source: str, src: str, tgt: str) -> tuple[str, list[Pair], list[str]]:
    path = Path(source).expanduser()
    if path.exists():
        pairs, ids = read_tsv(path)
        return path.stem or path.name, pairs, ids
    if "," in source:
        first, second = (Path(p.strip()).expanduser() for p in source.split(",", 1))
        for p in (first, second):
            if not p.is_file():
                raise DataError(f"{p} does not exist; give two aligned text files as `a.{src},a.{tgt}`.")
        if first.suffix[1:] == tgt and second.suffix[1:] == src and src != tgt:
            first, second = second, first  # named by language: `a.en,a.es` serves both directions
        pairs, ids = read_aligned_files(first, second)
        return first.stem or first.name, pairs, ids
    raise DataError(
        f"{source!r} is neither a known parallel data set ({BIBLE}) nor an existing file; "
        "give a .tsv file (source<TAB>target per line) or two aligned files as `a.en,a.es`."
    )


# --- the split --------------------------------------------------------------------


def _hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def pair_id(x: str, y: str) -> str:
    """A direction-independent id of a pair's normalised text."""
    return "\t".join(sorted((_normalise(x), _normalise(y))))


def split_ids(ids: list[str], n_dev: int, n_test: int) -> dict[str, list[int]]:
    """Indices per split: test = the n_test distinct ids with the lowest "test:" hash,
    dev = the next n_dev by "dev:" hash; one copy each, other copies go to "dropped"."""
    distinct = list(dict.fromkeys(ids))
    by_test = sorted(distinct, key=lambda i: _hash("test:" + i))
    test_ids = set(by_test[:n_test])
    by_dev = sorted(by_test[n_test:], key=lambda i: _hash("dev:" + i))
    held = {i: "test" for i in test_ids} | {i: "dev" for i in by_dev[:n_dev]}
    out: dict[str, list[int]] = {"train": [], "dev": [], "test": [], "dropped": []}
    seen: set[str] = set()
    for index, i in enumerate(ids):
        split = held.get(i, "train")
        if split != "train" and i in seen:
            split = "dropped"
        seen.add(i)
        out[split].append(index)
    for split in ("dev", "test"):  # in hash order, so the first pairs are a stable sample
        order = {i: r for r, i in enumerate(by_test if split == "test" else by_dev)}
        out[split].sort(key=lambda index: order[ids[index]])
    return out


def _held_out_sizes(n_distinct: int, dev_size: int, test_size: int) -> tuple[int, int]:
    cap = max(1, int(n_distinct * _HELD_OUT_CAP))
    return min(dev_size, cap), min(test_size, cap)


# --- the loader ---------------------------------------------------------------------


def _check_options(src: str, tgt: str, dev_size: int, test_size: int) -> None:
    for label, value in (("src", src), ("tgt", tgt)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{label} must be a language code such as 'en', got {value!r}.")
    for label, value in (("dev_size", dev_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{label} must be a whole number of pairs (0 or more), got {value!r}.")


def _load_bible(src: str, tgt: str, dev_size: int, test_size: int) -> ParallelCorpus:
    if src == tgt or {src, tgt} != set(_BIBLE_MODULES):
        raise DataError(
            f"{BIBLE} has the language pairs en-es and es-en, not {src}-{tgt}; "
            "use --src en --tgt es or the reverse."
        )
    triples, dropped = _bible_pairs(registry.SWORD_ROOT)
    if dev_size + test_size >= len(triples):
        raise ConfigError(
            f"dev_size + test_size ({dev_size + test_size:,}) leaves nothing to train on; "
            f"{BIBLE} has {len(triples):,} pairs."
        )
    keys = [k for k, _, _ in triples]
    pairs = [(en, es) if src == "en" else (es, en) for _, en, es in triples]
    splits = split_ids(keys, dev_size, test_size)
    return ParallelCorpus(
        BIBLE, src, tgt,
        *([pairs[i] for i in splits[s]] for s in ("train", "dev", "test")),
        ids={s: [keys[i] for i in splits[s]] for s in ("train", "dev", "test")},
        dropped=dict(dropped),
    )


def load_parallel_corpus(
    source: str, src: str = "en", tgt: str = "es", dev_size: int = 1000, test_size: int = 1000
) -> ParallelCorpus:
    """Load ``bible-en-es`` (either direction), a ``.tsv`` of ``source<TAB>target``
    lines, or two aligned files ``"a.en,a.es"``, split deterministically.

    For user data ``src``/``tgt`` only label the columns (the TSV's first column
    is the source), except that two files named by language are matched to
    them by suffix. See the module docstring for how the split is made.
    """
    _check_options(src, tgt, dev_size, test_size)
    if source == BIBLE:
        return _load_bible(src.lower(), tgt.lower(), dev_size, test_size)
    name, pairs, lines = _user_pairs(source, src, tgt)
    if not pairs:
        raise DataError(f"{source} holds no sentence pairs; add `source<TAB>target` lines.")
    ids = [pair_id(x, y) for x, y in pairs]
    n_distinct = len(set(ids))
    if n_distinct < _MIN_HELD_OUT:  # too small to hold anything out
        first = min(range(len(ids)), key=lambda i: _hash("test:" + ids[i]))
        dev = [first] if dev_size else []
        test = [first] if test_size else []
        splits = {"train": list(range(len(pairs))), "dev": dev, "test": test, "dropped": []}
    else:
        splits = split_ids(ids, *_held_out_sizes(n_distinct, dev_size, test_size))
    dropped = {"copy of a dev or test pair": len(splits["dropped"])} if splits["dropped"] else {}
    return ParallelCorpus(
        name, src, tgt,
        *([pairs[i] for i in splits[s]] for s in ("train", "dev", "test")),
        ids={s: [lines[i] for i in splits[s]] for s in ("train", "dev", "test")},
        dropped=dropped,
    )
