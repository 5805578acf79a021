"""The label font: a CJK font when one is installed (Chinese labels draw real glyphs), a clean
fallback when none is."""
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from aigc import plotting


def _render(text: str, font) -> np.ndarray:
    canvas = Image.new("L", (120, 32), 255)
    ImageDraw.Draw(canvas).text((4, 16), text, fill=0, font=font, anchor="lm")
    return np.array(canvas)


needs_cjk_font = pytest.mark.skipif(plotting.cjk_font() is None,
                                    reason="no CJK font installed (Debian fonts-wqy-zenhei or fonts-noto-cjk)")


@needs_cjk_font
def test_lookup_returns_a_font_with_cjk_glyphs():
    from fontTools.ttLib import TTFont

    path, index = plotting.cjk_font()
    cmap = TTFont(path, fontNumber=index, lazy=True).getBestCmap()
    assert all(ord(ch) in cmap for ch in "红心葡萄")
    assert all(ord(ch) in cmap for ch in "red heart")  # one font draws mixed labels


@needs_cjk_font
def test_chinese_label_renders_its_glyphs():
    font = plotting.label_font(16, "红心")
    heart, grapes = _render("红心", font), _render("葡萄", font)
    assert (heart < 128).sum() > 40 and (grapes < 128).sum() > 40
    # missing glyphs would draw the same empty box for every character
    assert not np.array_equal(heart, grapes)


@needs_cjk_font
def test_matplotlib_draws_chinese_without_missing_glyphs(tmp_path):
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.set_title("红心 red heart")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "title.png")
    plt.close(fig)
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_falls_back_with_a_warning_when_no_cjk_font(monkeypatch):
    monkeypatch.delenv("AIGC_CJK_FONT", raising=False)
    monkeypatch.setattr(plotting, "CJK_FONTS", ())
    plotting.cjk_font.cache_clear()
    plotting._warn_missing.cache_clear()
    try:
        assert plotting.cjk_font() is None
        with pytest.warns(UserWarning, match="fonts-wqy-zenhei"):
            font = plotting.label_font(16, "红心")
        assert (_render("red heart", font) < 128).sum() > 20  # Latin labels still draw
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plotting.label_font(16, "red heart")  # a Latin-only label needs no warning
    finally:
        plotting.cjk_font.cache_clear()
        plotting._warn_missing.cache_clear()


def test_needs_cjk():
    assert plotting.needs_cjk("红心") and plotting.needs_cjk("a 葡萄")
    assert not plotting.needs_cjk("flag of Brazil — café")
