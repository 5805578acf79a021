"""``shapes``: captioned compositional scenes for text-to-image, generated on the fly.

A scene holds 1 to 3 objects on a white canvas, each with a shape, a colour
(from a palette of 7 clearly distinct saturated colours, all different within
a scene), a size class (small / large, far apart) and a position, and a
caption in a small English grammar::

    a small red circle
    a large blue square above a green triangle
    a red circle, a yellow cross and a large purple diamond
    a small cyan ring left of an orange square, and a green circle

A relation is stated only when it is unambiguous in the scene (the centroids
differ by at least 0.2 of the canvas along its axis and at most half as much
along the other); a size word may be omitted, and then it is not asked for.

Scenes are a pure function of (seed, split, index): any length can be indexed
lazily and reproducibly. A fixed set of colour-shape pairs (``HELDOUT_PAIRS``,
one per colour, 1/6 of all pairs) never occurs in the ``train`` or
``test_seen`` splits; every ``test_heldout`` scene has exactly one object with
such a pair, to measure compositional generalisation.

Images are uint8 (3, H, W) — a batch is (N, 3, H, W), as in
:mod:`aigc.data.images` — rendered by supersampling (anti-aliased edges). This
module needs only numpy; :mod:`aigc.eval.shapes_check` reads the scenes back.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError, DataError

# ---- vocabulary -----------------------------------------------------------------------------------

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
PALETTE: dict[str, tuple[int, int, int]] = {  # closest pair (orange, yellow) is 90 apart in RGB
    "red": (220, 25, 35),
    "orange": (250, 125, 0),
    "yellow": (240, 215, 0),
    "green": (30, 165, 45),
    "cyan": (0, 190, 220),
    "blue": (30, 60, 220),
    "purple": (150, 40, 200),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")
SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# Held out: colour i with shape (i + 2) mod 6 — each colour once, every colour and shape still seen in training.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (c, SHAPES[(i + 2) % len(SHAPES)]) for i, c in enumerate(COLOURS))
SPLITS: tuple[str, ...] = ("train", "test_seen", "test_heldout")
DEFAULT_LENGTH = {"train": 50_000, "test_seen": 1_000, "test_heldout": 1_000}

# Geometry, as fractions of the canvas side. An object's extent is the side of its bounding square.
EXTENT_RANGE = {"small": (0.18, 0.24), "large": (0.36, 0.44)}
SIZE_THRESHOLD = 0.30                # extent separating small from large (the checker uses it)
BORDER = 0.03                        # free margin at the canvas edge
GAP = 0.06                           # least free space between two objects' bounding squares
RELATION_MARGIN = 0.2                # a stated relation: centroid offset >= this along its axis ...
RELATION_DOMINANCE = 0.5             # ... and <= this times it along the other axis
CROSS_ARM = 1 / 3                    # a cross's arm width, as a fraction of its extent
RING_INNER = 0.5                     # a ring's hole diameter, as a fraction of its extent
P_OBJECTS = (0.25, 0.40, 0.35)       # P(1, 2, 3 objects)
P_RELATION = (0.7, 0.5)              # P(a relation is stated | 2, 3 objects)
P_SIZE_WORD = 0.75                   # P(an object's size word is stated)


@dataclass(frozen=True)
class SceneMix:
    """How often scenes hold 1 / 2 / 3 objects and how often a relation is stated with 2 / 3 of them.
    The test splits always use the default mix, so a training set may lean towards relations (a larger
    share of every batch that a relation word decides) and still be scored on the same prompts."""

    objects: tuple[float, float, float] = P_OBJECTS
    relation: tuple[float, float] = P_RELATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(float(p) for p in self.objects))
        object.__setattr__(self, "relation", tuple(float(p) for p in self.relation))
        if len(self.objects) != 3 or any(not 0 <= p <= 1 for p in self.objects) \
                or abs(sum(self.objects) - 1) > 1e-6:
            raise ConfigError(f"the object-count mix needs 3 probabilities (1, 2, 3 objects) summing to 1, "
                              f"got {list(self.objects)}")
        if len(self.relation) != 2 or any(not 0 <= p <= 1 for p in self.relation):
            raise ConfigError(f"the relation mix needs 2 probabilities in [0, 1] (2 and 3 objects), "
                              f"got {list(self.relation)}")


DEFAULT_MIX = SceneMix()


# ---- specs (what a caption asks for) and scenes (what is drawn) ----------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One requested object; ``size`` None means the caption does not say."""

    shape: str
    colour: str
    size: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"unknown shape {self.shape!r}; choose one of {', '.join(SHAPES)}")
        if self.colour not in PALETTE:
            raise ConfigError(f"unknown colour {self.colour!r}; choose one of {', '.join(COLOURS)}")
        if self.size is not None and self.size not in SIZES:
            raise ConfigError(f"unknown size {self.size!r}; choose 'small', 'large' or None")

    def phrase(self) -> str:
        words = " ".join(w for w in (self.size, self.colour, self.shape) if w)
        return ("an " if words[0] in "aeiou" else "a ") + words


@dataclass(frozen=True)
class Relation:
    """``objects[subject]`` is ``relation`` ``objects[other]``, e.g. (0, 'above', 1)."""

    subject: int
    relation: str
    other: int

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ConfigError(f"unknown relation {self.relation!r}; choose one of {', '.join(RELATIONS)}")


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt asks for: objects in caption order and relations between them.

    :meth:`caption` needs each relation to join neighbours ``(k, rel, k + 1)``
    with every object in at most one relation — the form the grammar writes.
    """

    objects: tuple[ObjectSpec, ...]
    relations: tuple[Relation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "relations", tuple(self.relations))
        if not self.objects:
            raise ConfigError("a scene spec needs at least one object")
        n = len(self.objects)
        for r in self.relations:
            if not (0 <= r.subject < n and 0 <= r.other < n) or r.subject == r.other:
                raise ConfigError(f"relation {r} must join two different objects of the {n}")

    def caption(self) -> str:
        rel = {r.subject: r for r in self.relations}
        if any(r.other != r.subject + 1 for r in self.relations) or \
                len({i for r in self.relations for i in (r.subject, r.other)}) != 2 * len(self.relations):
            raise ConfigError("a caption can state only relations between neighbours (k, rel, k+1), "
                              "each object in at most one")
        clauses, k = [], 0
        while k < len(self.objects):
            if k in rel:
                clauses.append(f"{self.objects[k].phrase()} {rel[k].relation} {self.objects[k + 1].phrase()}")
                k += 2
            else:
                clauses.append(self.objects[k].phrase())
                k += 1
        if len(clauses) == 1:
            return clauses[0]
        sep = ", and " if self.relations else " and "  # the comma keeps "A left of B, and C" unambiguous
        return ", ".join(clauses[:-1]) + sep + clauses[-1]

    def to_dict(self) -> dict:
        """JSON-able form (for metadata); :meth:`from_dict` reads it back."""
        return {"objects": [asdict(o) for o in self.objects], "relations": [asdict(r) for r in self.relations]}

    @classmethod
    def from_dict(cls, d: dict) -> SceneSpec:
        return cls(tuple(ObjectSpec(**o) for o in d["objects"]), tuple(Relation(**r) for r in d.get("relations", ())))

    def heldout_objects(self) -> list[int]:
        """Indices of objects whose colour-shape pair is held out of training."""
        return [i for i, o in enumerate(self.objects) if (o.colour, o.shape) in HELDOUT_PAIRS]


@dataclass(frozen=True)
class SceneObject:
    """A drawn object: ``x``, ``y`` = centre of its bounding square, ``extent`` = its side, all as
    fractions of the canvas (y grows downwards); ``say_size`` = whether the caption names its size."""

    shape: str
    colour: str
    size: str
    extent: float
    x: float
    y: float
    say_size: bool = True

    @property
    def centroid(self) -> tuple[float, float]:
        """Centre of mass (x, y): a triangle's lies a sixth of its extent below the box centre."""
        return self.x, self.y + (self.extent / 6 if self.shape == "triangle" else 0.0)

    def spec(self) -> ObjectSpec:
        return ObjectSpec(self.shape, self.colour, self.size if self.say_size else None)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    relations: tuple[Relation, ...] = field(default=())

    @property
    def spec(self) -> SceneSpec:
        return SceneSpec(tuple(o.spec() for o in self.objects), self.relations)

    @property
    def caption(self) -> str:
        return self.spec.caption()

    def to_dict(self) -> dict:
        """JSON-able form (for metadata); :meth:`from_dict` reads it back."""
        return {"objects": [asdict(o) for o in self.objects], "relations": [asdict(r) for r in self.relations]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(SceneObject(**o) for o in d["objects"]), tuple(Relation(**r) for r in d.get("relations", ())))


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str, margin: float) -> bool:
    """Whether a point ``a`` is ``relation`` ``b`` (image axes, y down) by at least ``margin``."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation] >= margin


def _unambiguous(a: SceneObject, b: SceneObject, relation: str) -> bool:
    (ax, ay), (bx, by) = a.centroid, b.centroid
    along, across = (bx - ax, by - ay) if relation in ("left of", "right of") else (by - ay, bx - ax)
    return (relation_holds(a.centroid, b.centroid, relation, RELATION_MARGIN)
            and abs(across) <= RELATION_DOMINANCE * abs(along))


# ---- rendering ------------------------------------------------------------------------------------


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Points (u, v) in the object's frame ([-1, 1]^2 = its bounding square, v down) inside it."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex up at (0, -1), base along v = 1
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= CROSS_ARM) & (av <= 1.0)) | ((av <= CROSS_ARM) & (au <= 1.0))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= RING_INNER**2)
    raise ConfigError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


AREA_FRACTION = {  # area / extent^2
    "circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5,
    "cross": 2 * CROSS_ARM - CROSS_ARM**2, "ring": math.pi / 4 * (1 - RING_INNER**2),
}


def coverage(shape: str, cx: float, cy: float, extent: float, x0: int, y0: int, w: int, h: int,
             supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel of the window [x0, x0+w) x [y0, y0+h) covered by a shape centred at
    (cx, cy) with bounding side ``extent`` (pixel units; pixel j spans [j, j+1)): (h, w) float32."""
    offs = (np.arange(supersample) + 0.5) / supersample
    half = max(extent / 2.0, 1e-6)
    u = ((x0 + np.arange(w))[:, None] + offs).reshape(-1) - cx                      # (w * s,)
    v = ((y0 + np.arange(h))[:, None] + offs).reshape(-1) - cy                      # (h * s,)
    hit = _inside(shape, u[None, :] / half, v[:, None] / half)                      # (h * s, w * s)
    return hit.reshape(h, supersample, w, supersample).mean(axis=(1, 3), dtype=np.float32)


def render(scene: Scene, image_size: int = 32, supersample: int = 4) -> np.ndarray:
    """Draw a scene: uint8 (3, image_size, image_size), anti-aliased by ``supersample``^2 samples."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
    s = image_size
    img = np.empty((s, s, 3), np.float32)
    img[:] = BACKGROUND
    for o in scene.objects:
        cx, cy, e = o.x * s, o.y * s, o.extent * s
        x0, y0 = max(0, math.floor(cx - e / 2)), max(0, math.floor(cy - e / 2))
        x1, y1 = min(s, math.ceil(cx + e / 2)), min(s, math.ceil(cy + e / 2))
        if x1 <= x0 or y1 <= y0:
            continue
        a = coverage(o.shape, cx, cy, e, x0, y0, x1 - x0, y1 - y0, supersample)[..., None]  # (h, w, 1)
        win = img[y0:y1, x0:x1]
        win += a * (np.asarray(PALETTE[o.colour], np.float32) - win)
    return np.ascontiguousarray(np.rint(img).clip(0, 255).astype(np.uint8).transpose(2, 0, 1))


# ---- scene generation -----------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _pick(u: float, items):
    return items[min(int(u * len(items)), len(items) - 1)]


def _pairs(rng: np.random.Generator, n: int, split: str) -> list[tuple[str, str]]:
    """n colour-shape pairs with distinct colours; one held-out pair in test_heldout, none otherwise."""
    seen = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]
    held = sorted(HELDOUT_PAIRS)
    slot = _pick(rng.random(), range(n)) if split == "test_heldout" else -1
    out: list[tuple[str, str]] = []
    for k in range(n):
        pool = held if k == slot else seen
        pool = [p for p in pool if p[0] not in {c for c, _ in out}]
        out.append(_pick(rng.random(), pool))
    return out


def _separated(a: SceneObject, b: SceneObject) -> bool:
    need = (a.extent + b.extent) / 2 + GAP
    return abs(a.x - b.x) >= need or abs(a.y - b.y) >= need


def _place_pair(rng: np.random.Generator, e0: float, e1: float, relation: str) -> tuple[float, ...] | None:
    """Centres (x0, y0, x1, y1) of two objects with ``0 relation 1`` unambiguous, or None."""
    need = max(RELATION_MARGIN, (e0 + e1) / 2 + GAP) + 1e-3
    first, second = (e0, e1) if relation in ("left of", "above") else (e1, e0)  # along the axis
    lo, hi = BORDER + first / 2, 1 - BORDER - second / 2
    if hi - lo < need:
        return None
    a_first = lo + (hi - lo - need) * rng.random()
    a_second = a_first + need + (hi - a_first - need) * rng.random()
    d = (a_second - a_first) * RELATION_DOMINANCE - 1e-3
    c0 = BORDER + e0 / 2 + (1 - 2 * BORDER - e0) * rng.random()
    c_lo, c_hi = max(c0 - d, BORDER + e1 / 2), min(c0 + d, 1 - BORDER - e1 / 2)
    if c_hi < c_lo:
        return None
    c1 = c_lo + (c_hi - c_lo) * rng.random()
    a0, a1 = (a_first, a_second) if relation in ("left of", "above") else (a_second, a_first)
    return (a0, c0, a1, c1) if relation in ("left of", "right of") else (c0, a0, c1, a1)


def make_scene(index: int, split: str = "train", seed: int = 0, mix: SceneMix = DEFAULT_MIX) -> Scene:
    """The scene ``index`` of ``split``: a pure function of (seed, split, index, mix); test splits
    ignore ``mix``."""
    _check_split(split)
    if split != "train":
        mix = DEFAULT_MIX
    if index < 0:
        raise ConfigError(f"scene index must be >= 0, got {index}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(split.encode()), index])
    u = rng.random()
    n = 1 if u < mix.objects[0] else 2 if u < mix.objects[0] + mix.objects[1] else 3
    pairs = _pairs(rng, n, split)
    relation = _pick(rng.random(), RELATIONS) if n > 1 and rng.random() < mix.relation[n - 2] else None
    sizes = [_pick(rng.random(), SIZES) for _ in range(n)]
    if n == 3 and all(s == "large" for s in sizes):  # three large ones hardly fit: one becomes small
        sizes[_pick(rng.random(), range(3))] = "small"
    say = [bool(rng.random() < P_SIZE_WORD) for _ in range(n)]
    while True:  # sequential rejection sampling; a restart draws new extents
        ext = [round(EXTENT_RANGE[z][0] + (EXTENT_RANGE[z][1] - EXTENT_RANGE[z][0]) * rng.random(), 4)
               for z in sizes]
        objs: list[SceneObject] = []
        if relation is not None:
            xy = _place_pair(rng, ext[0], ext[1], relation)
            if xy is None:
                continue
            objs = [SceneObject(s, c, z, e, round(x, 4), round(y, 4), w)
                    for (c, s), z, e, x, y, w in zip(pairs, sizes, ext, xy[0::2], xy[1::2], say)]
        for k in range(len(objs), n):
            room = 1 - 2 * BORDER - ext[k]
            for _ in range(50):
                o = SceneObject(pairs[k][1], pairs[k][0], sizes[k], ext[k],
                                round(BORDER + ext[k] / 2 + room * rng.random(), 4),
                                round(BORDER + ext[k] / 2 + room * rng.random(), 4), say[k])
                if all(_separated(o, p) for p in objs):
                    objs.append(o)
                    break
            else:
                break
        if len(objs) < n or not all(_separated(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]):
            continue
        if relation is not None and not _unambiguous(objs[0], objs[1], relation):
            continue
        return Scene(tuple(objs), (Relation(0, relation, 1),) if relation else ())


class ShapesDataset:
    """``shapes`` scenes indexed lazily: ``data[i]`` is (image uint8 (3, H, W), caption, scene)."""

    def __init__(self, split: str = "train", length: int | None = None, seed: int = 0,
                 image_size: int = 32, supersample: int = 4, mix: SceneMix = DEFAULT_MIX) -> None:
        _check_split(split)
        length = DEFAULT_LENGTH[split] if length is None else length
        if not isinstance(length, int) or length <= 0:
            raise ConfigError(f"length must be a positive integer, got {length!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
        self.split, self.length, self.seed = split, length, seed
        self.image_size, self.supersample, self.mix = image_size, supersample, mix

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} is outside 0..{self.length - 1}")
        return make_scene(index, self.split, self.seed, self.mix)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, Scene]:
        scene = self.scene(index)
        return render(scene, self.image_size, self.supersample), scene.caption, scene

    def __repr__(self) -> str:
        return f"ShapesDataset({self.split!r}, {self.length} scenes, {self.image_size}x{self.image_size})"


@dataclass
class ShapesArrays:
    images: np.ndarray           # (N, 3, H, W) uint8
    captions: list[str]
    scenes: list[Scene]

    def __len__(self) -> int:
        return self.images.shape[0]


def load_shapes(split: str = "train", n: int | None = None, seed: int = 0, image_size: int = 32,
                start: int = 0, mix: SceneMix = DEFAULT_MIX) -> ShapesArrays:
    """Scenes ``start .. start+n-1`` of a split as arrays (for training or evaluation)."""
    _check_split(split)
    n = DEFAULT_LENGTH[split] if n is None else n
    if not isinstance(n, int) or n <= 0 or not isinstance(start, int) or start < 0:
        raise ConfigError(f"need n > 0 scenes from start >= 0, got n={n!r}, start={start!r}")
    data = ShapesDataset(split, n + start, seed, image_size, mix=mix)
    scenes = [data.scene(i) for i in range(start, len(data))]
    images = np.stack([render(s, image_size) for s in scenes])                     # (N, 3, H, W)
    return ShapesArrays(images, [s.caption for s in scenes], scenes)


# ---- caption parser -------------------------------------------------------------------------------

_COLOUR_WORDS = {"violet": "purple"}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_RELATION_WORDS = {  # phrases (as word tuples) -> relation; the longest match wins
    ("left", "of"): "left of", ("to", "the", "left", "of"): "left of", ("on", "the", "left", "of"): "left of",
    ("right", "of"): "right of", ("to", "the", "right", "of"): "right of",
    ("on", "the", "right", "of"): "right of",
    ("above",): "above", ("over",): "above", ("on", "top", "of"): "above",
    ("below",): "below", ("under",): "below", ("beneath",): "below", ("underneath",): "below",
}
_GRAMMAR = ("prompts look like 'a small red circle', 'a blue square above a green triangle' or "
            "'a red circle, a blue square and a green triangle'")


def parse_caption(text: str) -> SceneSpec:
    """Read a caption of the ``shapes`` grammar back into the :class:`SceneSpec` it asks for.

    Grammar: clauses joined by ',' / 'and' / ', and'; a clause is an object or
    ``object relation object``; an object is ``a|an [small|large] colour shape``.
    A few synonyms are accepted (big, little, to the left of, on top of, under ...).
    """
    words = re.sub(r"[,;]", " , ", text.lower().strip().rstrip(".!")).split()
    if not words:
        raise DataError(f"empty prompt; {_GRAMMAR}")
    objects: list[ObjectSpec] = []
    relations: list[Relation] = []
    pos = 0

    def fail(what: str) -> DataError:
        got = " ".join(words[pos:pos + 3]) or "the end of the prompt"
        return DataError(f"cannot read the prompt {text!r}: expected {what} at {got!r}; {_GRAMMAR} "
                         f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)})")

    def obj() -> ObjectSpec:
        nonlocal pos
        if pos < len(words) and words[pos] in ("a", "an", "one"):
            pos += 1
        size = None
        if pos < len(words) and words[pos] in _SIZE_WORDS:
            size = _SIZE_WORDS[words[pos]]
            pos += 1
        colour = _COLOUR_WORDS.get(words[pos], words[pos]) if pos < len(words) else ""
        if colour not in PALETTE:
            raise fail("a colour")
        pos += 1
        shape = words[pos] if pos < len(words) else ""
        if shape not in SHAPES:
            raise fail("a shape")
        pos += 1
        return ObjectSpec(shape, colour, size)

    def relation() -> str | None:
        nonlocal pos
        for phrase in sorted(_RELATION_WORDS, key=len, reverse=True):
            if tuple(words[pos:pos + len(phrase)]) == phrase:
                pos += len(phrase)
                return _RELATION_WORDS[phrase]
        return None

    while True:
        objects.append(obj())
        rel = relation()
        if rel is not None:
            objects.append(obj())
            relations.append(Relation(len(objects) - 2, rel, len(objects) - 1))
        if pos == len(words):
            break
        if words[pos] == ",":
            pos += 1
        elif words[pos] != "and":
            raise fail("',' or 'and' or a relation (left of, right of, above, below)")
        if pos < len(words) and words[pos] == "and":
            pos += 1
    return SceneSpec(tuple(objects), tuple(relations))
