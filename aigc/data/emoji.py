"""The embedded ``emoji`` set: Noto Color Emoji bitmaps with English and Chinese captions.

Images come from Debian's ``fonts-noto-color-emoji``: its CBDT table holds one
PNG per glyph (136x128 RGBA), read with fontTools. Each glyph gets the code-point
sequence it draws from the font itself — single code points from the ``cmap``,
multi-code-point emoji (flags, keycaps, ZWJ sequences, skin tones) from the
GSUB ligatures, whose components map back through the cmap. That sequence is
looked up in the ``emoji`` package's table (CLDR data) ignoring U+FE0F, which
the font leaves out; a glyph that several emoji share (Noto draws 🇺🇲 with the
🇺🇸 glyph) is named for the fully-qualified, oldest, shortest-named one. Glyphs
that match no emoji are left out: bare digits and regional-indicator letters,
the reversed-order ligatures kept for right-to-left text, and the subdivision
flags that have no CLDR name.

Skin-tone variants (sequences with U+1F3FB..U+1F3FF) are left out by default:
they repeat the default-tone picture in four more colours, which would make
near-duplicates straddle the train/test split; ``skin_tones=True`` keeps them.

Images are alpha-composited on white, padded with white to a square (keeping
the aspect) and shrunk with Lanczos resampling to ``image_size`` (32 by
default): uint8 RGB (N, 3, S, S). The decoded array is cached under
``$AIGC_CACHE/emoji`` (see :mod:`aigc.data.cache`), keyed by the font file's
size and mtime, the emoji package's version and the load options.

Captions (primary first): the CLDR short name (``:red_heart:`` -> "red heart";
flags read "flag of Spain"), the Unicode character name for single code points
when it differs ("heavy black heart"), the package's aliases of three or more
characters ("heart"), and the Chinese name ("红心"). Ids are the code points of
the fully-qualified sequence in hex joined by ``-`` (``"2764-FE0F"``); a stable
hash of the id sends about 10 % of emoji to the test split.
"""
from __future__ import annotations

import functools
import importlib
import io
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .cache import cache_key, cache_root, file_stamp, read_npz, write_npz
from .captioned import CaptionedImages, check_split
from .images import hash_unit
from .registry import EMOJI_FONT, require_package

DEFAULT_EMOJI_SIZE = 32
EMOJI_TEST_FRACTION = 0.1
PIP_HINT = "pip install fonttools emoji"
CACHE_VERSION = 1
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # Fitzpatrick modifiers, light .. dark
VS16 = "\ufe0f"  # emoji presentation selector, absent from the font's sequences
_REGIONAL = range(0x1F1E6, 0x1F200)
_BLACK_FLAG = 0x1F3F4  # + tag letters + cancel tag = subdivision flag


@dataclass(frozen=True)
class FontEmoji:
    """One emoji glyph of the font."""

    id: str     # "1F600", "1F468-200D-1F469-200D-1F467": fully-qualified code points
    text: str   # the emoji itself
    glyph: str  # glyph name in the font


# ---- optional packages ----------------------------------------------------------------------------


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"the emoji data set needs the Python packages fonttools and emoji "
                        f"({module} is missing); install them with `{PIP_HINT}`") from None


@functools.cache
def _emoji_package() -> ModuleType:
    em = _require("emoji")
    em.config.load_language("zh")  # adds 'zh' names to EMOJI_DATA
    return em


# ---- ids and captions -----------------------------------------------------------------------------


def emoji_id(text: str) -> str:
    """``"❤️"`` -> ``"2764-FE0F"``."""
    return "-".join(f"{ord(c):04X}" for c in text)


def emoji_text(id_: str) -> str:
    """``"2764-FE0F"`` -> ``"❤️"``."""
    return "".join(chr(int(h, 16)) for h in id_.split("-"))


def has_skin_tone(text: str) -> bool:
    """Whether a sequence carries a skin-tone modifier (the five lone swatches do not count)."""
    return len(text) > 1 and any(ord(c) in SKIN_TONES for c in text)


def is_flag(text: str) -> bool:
    cps = [ord(c) for c in text.replace(VS16, "")]
    return (len(cps) == 2 and all(c in _REGIONAL for c in cps)) or (len(cps) > 2 and cps[0] == _BLACK_FLAG
                                                                    and cps[-1] == 0xE007F)


def _clean(name: str) -> str:
    """``":red_heart:"`` -> ``"red heart"``."""
    return " ".join(name.strip(":").replace("_", " ").split())


def emoji_captions(text: str) -> list[str]:
    """English name, Unicode name (single code points), aliases and Chinese name of an emoji."""
    data = _emoji_package().EMOJI_DATA.get(text)
    if data is None:
        raise DataError(f"{text!r} ({emoji_id(text)}) is not an emoji the emoji package knows")
    name = _clean(data["en"])
    caps = [f"flag of {name}", name] if is_flag(text) else [name]
    core = text.replace(VS16, "")
    if len(core) == 1 and unicodedata.name(core, ""):
        caps.append(unicodedata.name(core).lower())
    caps += [a for a in map(_clean, data.get("alias", [])) if len(a) >= 3]
    if data.get("zh"):
        caps.append(_clean(data["zh"]))
    seen: set[str] = set()
    return [c for c in caps if not (c.casefold() in seen or seen.add(c.casefold()))]


# ---- the font ------------------------------------------------------------------------------------


def _open_font(font: Path):
    require_package("fonts-noto-color-emoji", font, dataset="emoji")
    ttlib = _require("fontTools.ttLib")
    try:
        tt = ttlib.TTFont(str(font), lazy=True)
        if "CBDT" not in tt or "CBLC" not in tt:
            raise DataError(f"{font} has no CBDT colour bitmaps; the emoji set needs Noto Color Emoji "
                            "(`sudo apt-get install fonts-noto-color-emoji`)")
        return tt
    except (OSError, ttlib.TTLibError) as e:
        raise DataError(f"cannot read the font {font}: {e}; reinstall it with "
                        "`sudo apt-get install --reinstall fonts-noto-color-emoji`") from None


def _glyph_sequences(tt) -> dict[str, list[tuple[int, ...]]]:
    """Every code-point sequence that the font draws with each glyph (cmap + GSUB ligatures)."""
    cmap = tt.getBestCmap()
    cp_of = {g: cp for cp, g in cmap.items()}
    seqs: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for cp, g in sorted(cmap.items()):
        seqs[g].append((cp,))
    if "GSUB" in tt:
        for lookup in tt["GSUB"].table.LookupList.Lookup:
            if lookup.LookupType != 4:  # ligature substitution
                continue
            for sub in lookup.SubTable:
                for first, ligatures in sub.ligatures.items():
                    for lig in ligatures:
                        parts = [first, *lig.Component]
                        if all(p in cp_of for p in parts):
                            seqs[lig.LigGlyph].append(tuple(cp_of[p] for p in parts))
    return seqs


def _strike(tt) -> dict:
    """The glyph -> bitmap table of the font's largest strike."""
    strikes = tt["CBLC"].strikes
    best = max(range(len(strikes)), key=lambda i: strikes[i].bitmapSizeTable.ppemY)
    return tt["CBDT"].strikeData[best]


def _name_glyph(candidates: list[tuple[int, ...]], by_core: dict[str, list[str]], data: dict) -> str | None:
    found = {e for seq in candidates for e in by_core.get("".join(map(chr, seq)), ())}
    if not found:
        return None
    rank = {2: 0, 1: 1}  # fully-qualified, then component (skin-tone and hair swatches)
    return min(found, key=lambda e: (rank.get(data[e]["status"], 2), data[e]["E"], len(data[e]["en"]), e))


def font_emoji(font: str | Path = EMOJI_FONT, skin_tones: bool = False) -> list[FontEmoji]:
    """The named emoji glyphs of a CBDT font, in code-point order (reads no PNG; remembered per
    font version, as parsing the GSUB takes about half a second)."""
    font = Path(font)
    require_package("fonts-noto-color-emoji", font, dataset="emoji")
    stamp = file_stamp(font)
    return list(_font_emoji(font, stamp["size"], stamp["mtime_ns"], skin_tones))


@functools.lru_cache(maxsize=4)
def _font_emoji(font: Path, size: int, mtime_ns: int, skin_tones: bool) -> tuple[FontEmoji, ...]:
    tt = _open_font(font)
    data = _emoji_package().EMOJI_DATA
    by_core: dict[str, list[str]] = defaultdict(list)
    for e in data:
        by_core[e.replace(VS16, "")].append(e)
    seqs = _glyph_sequences(tt)
    out: dict[str, FontEmoji] = {}
    for glyph, bitmap in _strike(tt).items():
        text = _name_glyph(seqs.get(glyph, []), by_core, data)
        if text is None or not hasattr(bitmap, "imageData") or (has_skin_tone(text) and not skin_tones):
            continue
        out.setdefault(text, FontEmoji(emoji_id(text), text, glyph))
    return tuple(sorted(out.values(), key=lambda e: [ord(c) for c in e.text]))


def render_bitmap(png: bytes, size: int) -> np.ndarray:
    """One PNG bitmap -> (3, size, size) uint8: over white, padded square, Lanczos-resized."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgba = im.convert("RGBA")
    w, h = rgba.size
    side = max(w, h)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - w) // 2, (side - h) // 2))  # composite + pad in one
    rgb = canvas.convert("RGB")
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode(font: Path, chosen: list[FontEmoji], size: int) -> np.ndarray:
    strike = _strike(_open_font(font))
    out = np.empty((len(chosen), 3, size, size), dtype=np.uint8)  # (N, 3, S, S)
    for i, e in enumerate(chosen):
        out[i] = render_bitmap(strike[e.glyph].imageData, size)
    return out


# ---- entry point ----------------------------------------------------------------------------------


def is_test_emoji(id_: str) -> bool:
    """Whether an emoji (by id) is held out: a stable hash of its code points, ~10 % of them."""
    return hash_unit(f"emoji:{id_}") < EMOJI_TEST_FRACTION


def _select(all_emoji: list[FontEmoji], select: Iterable[str]) -> list[FontEmoji]:
    by_key: dict[str, FontEmoji] = {}
    for e in all_emoji:
        by_key.update({e.id: e, e.text: e, e.text.replace(VS16, ""): e})
    wanted = []
    for s in select:
        e = by_key.get(s) or by_key.get(s.upper()) or by_key.get(s.replace(VS16, ""))
        if e is None:
            raise DataError(f"{s!r} is not one of the font's emoji (give the emoji or its id such as 1F600; "
                            "skin-tone variants need skin_tones=True)")
        wanted.append(e.id)
    keep = set(wanted)
    return [e for e in all_emoji if e.id in keep]


def load_emoji(split: str = "train", image_size: int = DEFAULT_EMOJI_SIZE, *, skin_tones: bool = False,
               limit: int | None = None, select: Iterable[str] | None = None, cache: bool = True,
               cache_dir: str | Path | None = None, font: str | Path = EMOJI_FONT) -> CaptionedImages:
    """The Noto Color Emoji set as :class:`CaptionedImages` (see the module docstring).

    ``split`` is ``train``, ``test`` or ``all``. ``select`` (emoji or ids) and
    ``limit`` (the first n in code-point order) take a part of that split — an
    emoji's split never depends on them. ``meta`` holds ``{"emoji": text}``.
    """
    check_split(split)
    if not isinstance(image_size, int) or image_size <= 0:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    font = Path(font)
    require_package("fonts-noto-color-emoji", font, dataset="emoji")
    _require("fontTools.ttLib")
    em = _emoji_package()
    if isinstance(select, str):
        select = [select]
    selected = sorted(set(select)) if select is not None else None
    key = {"v": CACHE_VERSION, "font": file_stamp(font), "emoji": em.__version__, "size": image_size,
           "skin_tones": skin_tones, "split": split, "limit": limit, "select": selected}
    path = Path(cache_dir) if cache_dir is not None else cache_root() / "emoji"
    path = path / f"{cache_key(key)}.npz"
    hit = read_npz(path) if cache else None
    if (hit is not None and set(hit) == {"images", "ids"} and hit["images"].dtype == np.uint8
            and hit["images"].shape == (hit["ids"].shape[0], 3, image_size, image_size)):
        ids, images = [str(i) for i in hit["ids"]], hit["images"]
    else:
        chosen = font_emoji(font, skin_tones)
        if selected is not None:
            chosen = _select(chosen, selected)
        chosen = [e for e in chosen if split == "all" or is_test_emoji(e.id) == (split == "test")][:limit]
        ids, images = [e.id for e in chosen], _decode(font, chosen, image_size)
        if cache:
            write_npz(path, {"images": images, "ids": np.array(ids, dtype=np.str_)})
    texts = [emoji_text(i) for i in ids]
    return CaptionedImages(torch.from_numpy(np.ascontiguousarray(images)), [emoji_captions(t) for t in texts],
                           ids, "emoji", [{"emoji": t} for t in texts])
