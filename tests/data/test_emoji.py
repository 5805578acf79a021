"""The embedded emoji set: glyph -> sequence mapping, captions, images, split and cache."""
import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from aigc.data import emoji as E
from aigc.data.captioned import CaptionedImages
from aigc.data.registry import EMOJI_FONT, list_datasets
from aigc.errors import ConfigError, DataError

pytestmark = pytest.mark.skipif(not EMOJI_FONT.is_file(),
                                reason="needs the Debian package fonts-noto-color-emoji")


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


@pytest.fixture(scope="module")
def every_emoji():
    """The whole default set, decoded once (about 2 s of CPU), not cached."""
    return E.load_emoji("all", cache=False)


@pytest.fixture(scope="module")
def glyphs():
    return E.font_emoji()


def test_full_set_count_shapes_white_background_and_captions(every_emoji, glyphs):
    data = every_emoji
    assert isinstance(data, CaptionedImages) and 1500 <= len(data) <= 3000   # 1,899 with Noto 2.042
    assert data.images.shape == (len(data), 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.ids == [g.id for g in glyphs] and len(set(data.ids)) == len(data)
    corners = data.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]              # (N, 3, 4)
    assert (corners == 255).all(dim=1).all(dim=1).float().mean() > 0.97      # flags and tiles may reach a corner
    centre = data.images[:, :, 12:20, 12:20].float().mean(dim=(1, 2, 3))
    assert (centre < 250).float().mean() > 0.9                               # and the emoji itself is drawn
    assert all(caps and all(c.strip() for c in caps) for caps in data.captions)
    assert sum(any(has_cjk(c) for c in caps) for caps in data.captions) > 0.95 * len(data)
    assert data.meta[0]["emoji"] == E.emoji_text(data.ids[0])


def test_grinning_face_image_and_captions(every_emoji):
    i = every_emoji.ids.index("1F600")
    caps = every_emoji.captions[i]
    assert caps[0] == "grinning face" and "grinning" in caps and any(has_cjk(c) for c in caps)
    img = every_emoji.images[i]
    assert (img[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 255).all()
    r, g, b = img[:, 16, 10].tolist()                                        # the yellow face left of centre
    assert r > 200 and g > 150 and b < 100


def test_sequences_get_their_names(glyphs):
    ids = {g.id for g in glyphs}
    # flags, keycaps, ZWJ sequences and VS16 emoji all come from the GSUB ligatures / cmap
    for text in ("🇪🇸", "#️⃣", "👨‍👩‍👧", "🧑‍🚀", "❤️", "🏴󠁧󠁢󠁥󠁮󠁧󠁿"):
        assert E.emoji_id(text) in ids, text
    assert E.emoji_captions("❤️")[:3] == ["red heart", "heavy black heart", "heart"]
    assert E.emoji_captions("🇪🇸")[0] == "flag of Spain" and "西班牙" in E.emoji_captions("🇪🇸")
    assert E.emoji_captions("🧑‍🚀")[0] == "astronaut"
    # Noto draws U+1F1FA U+1F1F2 (U.S. Outlying Islands) with the U.S. glyph: named once, for the U.S.
    assert E.emoji_id("🇺🇸") in ids and E.emoji_id("🇺🇲") not in ids
    # no skin-tone variants by default; the five tone swatches themselves stay
    assert not any(E.has_skin_tone(g.text) for g in glyphs) and "1F3FD" in ids
    toned = E.font_emoji(skin_tones=True)
    assert len(toned) > len(glyphs) + 1500 and E.emoji_id("👍🏽") in {g.id for g in toned}
    assert E.emoji_text(E.emoji_id("👨‍👩‍👧")) == "👨‍👩‍👧"


def test_split_is_deterministic_and_disjoint(glyphs):
    test_ids = {g.id for g in glyphs if E.is_test_emoji(g.id)}
    assert 0.05 < len(test_ids) / len(glyphs) < 0.15
    train = E.load_emoji("train", limit=12, cache=False)
    test = E.load_emoji("test", limit=12, cache=False)
    assert len(train) == len(test) == 12 and not set(train.ids) & set(test.ids)
    assert set(test.ids) <= test_ids and not set(train.ids) & test_ids
    again = E.load_emoji("test", limit=12, cache=False)
    assert again.ids == test.ids and torch.equal(again.images, test.images)
    # an emoji's split does not depend on what else is loaded
    pick = sorted(test_ids)[0]
    assert E.load_emoji("test", select=[pick], cache=False).ids == [pick]
    assert len(E.load_emoji("train", select=[pick], cache=False)) == 0


def test_cache_round_trips_and_is_used_the_second_time(tmp_path, monkeypatch):
    first = E.load_emoji("all", 16, select=["😀", "🇪🇸", "1F680"], cache_dir=tmp_path)
    assert first.images.shape == (3, 3, 16, 16) and first.ids == ["1F1EA-1F1F8", "1F600", "1F680"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")                     # no temp file left behind

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(E, "_decode", no_decoding)
    monkeypatch.setattr(E, "font_emoji", no_decoding)
    second = E.load_emoji("all", 16, select=["1F680", "🇪🇸", "😀"], cache_dir=tmp_path)
    assert second.ids == first.ids and second.captions == first.captions
    assert torch.equal(second.images, first.images)
    with pytest.raises(AssertionError, match="decoded again"):              # another size is another entry
        E.load_emoji("all", 8, select=["😀"], cache_dir=tmp_path)
    monkeypatch.undo()
    (tmp_path / files[0]).write_bytes(b"garbage")                            # a broken entry is rebuilt
    third = E.load_emoji("all", 16, select=["1F680", "🇪🇸", "😀"], cache_dir=tmp_path)
    assert torch.equal(third.images, first.images)


def test_render_pads_to_square_with_white():
    im = Image.new("RGBA", (8, 4), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 8, 4))                                 # a wide opaque red bar
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out = E.render_bitmap(buf.getvalue(), 8)                                 # (3, 8, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    assert (out[:, :2] == 255).all() and (out[:, -2:] == 255).all()          # white bands above and below
    assert out[:, 2:6].transpose(1, 2, 0).reshape(-1, 3).tolist() == [[255, 0, 0]] * 32


def test_bad_arguments_and_missing_pieces(tmp_path, monkeypatch):
    with pytest.raises(ConfigError):
        E.load_emoji("validation")
    with pytest.raises(ConfigError):
        E.load_emoji("all", 0)
    with pytest.raises(ConfigError):
        E.load_emoji("all", limit=0)
    with pytest.raises(DataError, match="not one of the font's emoji"):
        E.load_emoji("all", select=["not an emoji"], cache=False)
    with pytest.raises(DataError, match="sudo apt-get install fonts-noto-color-emoji"):
        E.load_emoji(font=tmp_path / "NotoColorEmoji.ttf")
    (tmp_path / "bad.ttf").write_bytes(b"not a font")
    with pytest.raises(DataError, match="cannot read the font"):
        E.load_emoji(font=tmp_path / "bad.ttf", cache=False)
    for module in ("emoji", "fontTools.ttLib"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)                             # import now fails
            E._emoji_package.cache_clear()
            with pytest.raises(DataError, match="pip install fonttools emoji"):
                E.load_emoji("all", select=["😀"], cache=False)
        E._emoji_package.cache_clear()


def test_listed_as_installed():
    row = next(r for r in list_datasets() if r.name == "emoji")
    assert row.installed and row.kind == "images" and "fonts-noto-color-emoji" in row.install_hint
