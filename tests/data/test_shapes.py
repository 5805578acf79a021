"""The ``shapes`` scene generator: determinism, held-out pairs, captions and their parser, rendering."""
import collections
import json

import numpy as np
import pytest

from aigc.data.shapes import (COLOURS, HELDOUT_PAIRS, PALETTE, RELATIONS, SHAPES, ObjectSpec, Relation, Scene,
                              SceneMix, SceneObject, SceneSpec, ShapesDataset, load_shapes, make_scene, parse_caption,
                              render)
from aigc.data.shapes import _separated, _unambiguous
from aigc.errors import ConfigError, DataError


def _scenes(split, n, seed=0):
    return [make_scene(i, split, seed) for i in range(n)]


# --- determinism -----------------------------------------------------------------------------------


def test_scenes_and_images_are_a_pure_function_of_seed_split_index():
    a, b = ShapesDataset("train", 100, seed=3), ShapesDataset("train", 100, seed=3)
    for i in (0, 7, 99):
        (ia, ca, sa), (ib, cb, sb) = a[i], b[i]
        assert sa == sb and ca == cb and np.array_equal(ia, ib)
    assert _scenes("train", 20, seed=0) != _scenes("train", 20, seed=1)
    assert _scenes("train", 20) != _scenes("test_seen", 20)
    # a slice of the split as arrays equals lazy indexing
    arr = load_shapes("test_seen", 5, seed=2, start=10)
    lazy = ShapesDataset("test_seen", 20, seed=2)
    assert len(arr) == 5 and arr.images.shape == (5, 3, 32, 32) and arr.images.dtype == np.uint8
    for k in range(5):
        img, cap, scene = lazy[10 + k]
        assert np.array_equal(arr.images[k], img) and arr.captions[k] == cap and arr.scenes[k] == scene


def test_a_scene_mix_shapes_the_train_split_only():
    # the default mix is the stream every earlier run trained on (first scenes pinned)
    assert [make_scene(i).caption for i in range(3)] == [
        "a small orange circle", "a small purple circle, a large red ring and a small orange ring",
        "a large purple diamond left of a small green circle, and a large yellow diamond"]
    assert _scenes("train", 30) == [make_scene(i, "train", 0, SceneMix()) for i in range(30)]
    pairs_only = SceneMix(objects=(0, 1, 0), relation=(1, 0))
    scenes = [make_scene(i, "train", 0, pairs_only) for i in range(200)]
    assert all(len(s.objects) == 2 and len(s.relations) == 1 for s in scenes)
    assert {s.relations[0].relation for s in scenes} == set(RELATIONS)
    dense = SceneMix(objects=(0.1, 0.6, 0.3), relation=(1.0, 0.8))
    counts = collections.Counter(bool(make_scene(i, "train", 0, dense).relations) for i in range(2000))
    assert 0.80 < counts[True] / 2000 < 0.88  # 0.6 + 0.3 * 0.8 = 0.84 state a relation (default: 0.455)
    for split in ("test_seen", "test_heldout"):  # the test prompts never move
        assert _scenes(split, 30) == [make_scene(i, split, 0, pairs_only) for i in range(30)]
    arr = load_shapes("train", 20, mix=pairs_only)
    assert all(len(s.objects) == 2 for s in arr.scenes)
    assert all(len(s.objects) == 2 for s in (ShapesDataset("train", 10, mix=pairs_only)[i][2] for i in range(10)))
    for objects, relation in (((0.5, 0.6, 0.3), (0.7, 0.5)), ((0.5, 0.5), (0.7, 0.5)),
                              ((0.25, 0.4, 0.35), (1.5, 0.5)), ((0.25, 0.4, 0.35), (0.7,))):
        with pytest.raises(ConfigError, match="mix"):
            SceneMix(objects, relation)


def test_dataset_bad_arguments():
    with pytest.raises(ConfigError, match="split"):
        ShapesDataset("validation")
    with pytest.raises(ConfigError, match="length"):
        ShapesDataset("train", 0)
    with pytest.raises(ConfigError, match="image_size"):
        ShapesDataset("train", 10, image_size=4)
    with pytest.raises(IndexError):
        ShapesDataset("train", 10)[10]
    with pytest.raises(ConfigError, match="n > 0"):
        load_shapes("train", 0)
    with pytest.raises(ConfigError, match="split"):
        load_shapes("val", 3)
    assert len(ShapesDataset("test_heldout")) == 1000


# --- held-out colour-shape pairs ------------------------------------------------------------------


def test_heldout_pairs_are_one_per_colour_and_never_in_training():
    assert len(HELDOUT_PAIRS) == 7 and sorted(c for c, _ in HELDOUT_PAIRS) == sorted(COLOURS)
    assert {s for _, s in HELDOUT_PAIRS} <= set(SHAPES)
    for split in ("train", "test_seen"):
        pairs = {(o.colour, o.shape) for s in _scenes(split, 800) for o in s.objects}
        assert not pairs & HELDOUT_PAIRS
        assert len(pairs) == len(COLOURS) * len(SHAPES) - len(HELDOUT_PAIRS)  # every other pair occurs
    held = _scenes("test_heldout", 300)
    assert all(len(s.spec.heldout_objects()) == 1 for s in held)
    assert {(s.objects[i].colour, s.objects[i].shape) for s in held for i in s.spec.heldout_objects()} \
        == HELDOUT_PAIRS


# --- scene layout ----------------------------------------------------------------------------------


def test_scene_layouts_are_valid_and_varied():
    scenes = _scenes("train", 600)
    counts = collections.Counter(len(s.objects) for s in scenes)
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 100
    assert {s.relations[0].relation for s in scenes if s.relations} == set(RELATIONS)
    said = [o.say_size for s in scenes for o in s.objects]
    assert 0.6 < np.mean(said) < 0.9
    for s in scenes:
        assert len({o.colour for o in s.objects}) == len(s.objects)
        for i, a in enumerate(s.objects):
            assert 0 <= a.x - a.extent / 2 and a.x + a.extent / 2 <= 1
            assert 0 <= a.y - a.extent / 2 and a.y + a.extent / 2 <= 1
            assert (a.extent < 0.25) == (a.size == "small")
            assert all(_separated(a, b) for b in s.objects[i + 1:])
        for r in s.relations:
            assert _unambiguous(s.objects[r.subject], s.objects[r.other], r.relation)


def test_render_draws_the_palette_on_white():
    scene = Scene((SceneObject("square", "red", "large", 0.4, 0.3, 0.3),
                   SceneObject("circle", "blue", "small", 0.2, 0.7, 0.7)))
    img = render(scene)
    assert img.shape == (3, 32, 32) and img.dtype == np.uint8
    assert tuple(img[:, 9, 9]) == PALETTE["red"] and tuple(img[:, 22, 22]) == PALETTE["blue"]
    assert tuple(img[:, 0, 31]) == (255, 255, 255) and tuple(img[:, 31, 0]) == (255, 255, 255)
    # anti-aliased: the circle's rim has blends between blue and white
    rim = img[:, 19:26, 19:26].reshape(3, -1).T
    assert any(tuple(p) not in (PALETTE["blue"], (255, 255, 255)) for p in rim)
    big = render(scene, 64)
    assert big.shape == (3, 64, 64) and tuple(big[:, 19, 19]) == PALETTE["red"]


# --- captions and the parser -----------------------------------------------------------------------


def test_captions_follow_the_grammar():
    red, blue, green = ObjectSpec("circle", "red", "small"), ObjectSpec("square", "blue", "large"), \
        ObjectSpec("triangle", "green")
    orange = ObjectSpec("cross", "orange")
    assert SceneSpec((red,)).caption() == "a small red circle"
    assert SceneSpec((orange,)).caption() == "an orange cross"
    assert SceneSpec((blue, red), (Relation(0, "above", 1),)).caption() == \
        "a large blue square above a small red circle"
    assert SceneSpec((green, orange)).caption() == "a green triangle and an orange cross"
    assert SceneSpec((red, blue, green)).caption() == "a small red circle, a large blue square and a green triangle"
    assert SceneSpec((red, blue, green), (Relation(0, "left of", 1),)).caption() == \
        "a small red circle left of a large blue square, and a green triangle"
    with pytest.raises(ConfigError, match="neighbours"):
        SceneSpec((red, blue, green), (Relation(0, "above", 2),)).caption()
    with pytest.raises(ConfigError, match="shape"):
        ObjectSpec("hexagon", "red")
    with pytest.raises(ConfigError, match="two different"):
        SceneSpec((red,), (Relation(0, "above", 0),))


def test_every_caption_parses_back_to_its_spec():
    for split in ("train", "test_heldout"):
        for s in _scenes(split, 300):
            assert parse_caption(s.caption) == s.spec


def test_scenes_and_specs_round_trip_through_json():
    for s in _scenes("train", 30):
        assert Scene.from_dict(json.loads(json.dumps(s.to_dict()))) == s
        assert SceneSpec.from_dict(json.loads(json.dumps(s.spec.to_dict()))) == s.spec


def test_parser_accepts_synonyms_and_free_punctuation():
    spec = parse_caption("A big red circle to the left of a little blue square.")
    assert spec == SceneSpec((ObjectSpec("circle", "red", "large"), ObjectSpec("square", "blue", "small")),
                             (Relation(0, "left of", 1),))
    assert parse_caption("a green ring on top of an orange diamond").relations == (Relation(0, "above", 1),)
    assert parse_caption("a red circle and a blue square under a cyan cross").relations == (Relation(1, "below", 2),)
    assert len(parse_caption("a red circle, a blue square, a green triangle").objects) == 3


@pytest.mark.parametrize("bad, where", [
    ("", "empty"), ("a red hexagon", "a shape"), ("a magenta circle", "a colour"),
    ("a red circle left of", "a colour"), ("a red circle near a blue square", "relation"),
    ("a red circle left of a blue square left of a green ring", "relation"), ("red", "a shape"),
])
def test_parser_rejects_prompts_outside_the_grammar(bad, where):
    with pytest.raises(DataError, match=where):
        parse_caption(bad)
