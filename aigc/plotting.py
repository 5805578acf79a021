"""Fonts for text drawn into pictures: one lookup used by every labelled grid and every figure.

Labels can hold Chinese (emoji names such as "红心", prompts), which DejaVu Sans, matplotlib's and
Pillow's usual font, lacks: its glyphs come out as empty boxes. This module finds a font with CJK
glyphs among the ones Debian installs (``fonts-noto-cjk`` or ``fonts-wqy-zenhei``; setup installs
the latter), or the file named by ``$AIGC_CJK_FONT``, and otherwise falls back to DejaVu Sans (or
Pillow's built-in font) with one warning, the first time a label needs the missing glyphs.

    font = label_font(16, "红心")               # a PIL font for ImageDraw.text
    plt = pyplot()                              # matplotlib.pyplot on Agg, CJK glyphs as fallback

Nothing here imports the rest of aigc, so any layer may use it.
"""
from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

# (path, preferred face name) in order of preference; a .ttc holds several faces.
CJK_FONTS: tuple[tuple[str, str], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),  # fonts-noto-cjk
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "WenQuanYi Zen Hei"),          # fonts-wqy-zenhei
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "WenQuanYi Micro Hei"),      # fonts-wqy-microhei
)
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
INSTALL_HINT = "install the Debian package fonts-wqy-zenhei (or fonts-noto-cjk), or set AIGC_CJK_FONT"


@lru_cache(maxsize=None)
def cjk_font() -> tuple[str, int] | None:
    """The (file, face index) of a font with CJK glyphs, or None when none is installed."""
    override = os.environ.get("AIGC_CJK_FONT")
    candidates = ([(override, "")] if override else []) + list(CJK_FONTS)
    for path, face in candidates:
        if Path(path).is_file():
            return path, _face_index(path, face)
    return None


def _face_index(path: str, name: str) -> int:
    """The index of the face called ``name`` in a font collection (0 when absent or not a collection)."""
    from PIL import ImageFont

    for index in range(16):
        try:
            if ImageFont.truetype(path, 10, index=index).getname()[0] == name:
                return index
        except OSError:  # past the last face
            break
    return 0


def needs_cjk(text: str) -> bool:
    """Whether ``text`` holds characters from the CJK blocks (which DejaVu Sans lacks)."""
    return any(0x2E80 <= ord(ch) <= 0x9FFF or 0xF900 <= ord(ch) <= 0xFAFF or 0xFF00 <= ord(ch) <= 0xFFEF
               or 0x20000 <= ord(ch) <= 0x3FFFF for ch in text)


@lru_cache(maxsize=None)
def _warn_missing() -> None:
    warnings.warn(f"no font with CJK glyphs found, so Chinese labels show as boxes: {INSTALL_HINT}",
                  stacklevel=3)


def label_font(size: int, text: str = ""):
    """A PIL font of ``size`` pixels for labels: the CJK font when installed (it has Latin glyphs too),
    else DejaVu Sans, else Pillow's built-in font. Warns once if ``text`` needs glyphs it lacks."""
    from PIL import ImageFont

    found = cjk_font()
    if found is not None:
        return ImageFont.truetype(found[0], size, index=found[1])
    if needs_cjk(text):
        _warn_missing()
    try:
        return ImageFont.truetype(LATIN_FONT, size)
    except OSError:
        return ImageFont.load_default(size)


@lru_cache(maxsize=None)
def _register_matplotlib_cjk() -> str | None:
    """Add the CJK font to matplotlib as the last fallback family; returns its family name."""
    import matplotlib
    from matplotlib import font_manager

    found = cjk_font()
    if found is None:
        return None
    font_manager.fontManager.addfont(found[0])
    # WenQuanYi's only weight is "Medium": say nothing each time matplotlib picks it for normal text
    logging.getLogger("matplotlib.font_manager").addFilter(
        lambda record: "Failed to find font weight" not in record.getMessage())
    name = font_manager.FontProperties(fname=found[0]).get_name()
    families = list(matplotlib.rcParams["font.family"])
    if name not in families:  # matplotlib takes each glyph from the first family in the list that has it
        matplotlib.rcParams["font.family"] = families + [name]
    return name


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, with the CJK font as fallback for glyphs DejaVu lacks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _register_matplotlib_cjk()
    return plt
