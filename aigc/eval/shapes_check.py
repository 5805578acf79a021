"""Prompt adherence on ``shapes``: find the objects in an image and score what a prompt asked for.

In the spirit of GenEval (Ghosh et al., 2023), but programmatic: instead of an
object detector, the scene grammar of :mod:`aigc.data.shapes` is read back by

1. **colour unmixing** — every object is drawn over white, so a pixel p is
   ``alpha * c + (1 - alpha) * white`` for a palette colour c (anti-aliased
   edges included). For each colour we project ``white - p`` on
   ``white - c`` to get alpha and measure the distance to that blend line;
   a pixel takes the colour of the nearest line, and keeps it only if its
   alpha is >= 0.5 and the distance small (so noise, grey and black are
   nobody's);
2. **connected components** (8-neighbour) per colour, dropping fragments of
   fewer than 0.5 % of the canvas;
3. **analysis by synthesis** for the shape — for each shape hypothesis the
   area and centroid of the component's alpha fix the size and place of that
   shape; it is rendered with the generator's own rasteriser, sharp and
   slightly blurred (samples of a model are soft), and compared with the
   observed alpha (soft IoU); the best fit wins, and none if its IoU is below
   ``MIN_FIT`` (a bar, an ellipse or a blob is no shape of ours);
4. size from the bounding extent (threshold ``SIZE_THRESHOLD`` of the canvas),
   relations from the centroids (at least ``RELATION_CHECK_MARGIN`` of the
   canvas along the stated axis).

A prompt's objects are matched to detected objects of their colour (the
assignment that satisfies most checks). Per prompt we score each object's
colour (present), shape and size (only where the prompt states one), each
relation, and ``overall`` = all of them hold. Extra objects do not fail a
prompt; ``count`` (exactly as many objects as asked for) is reported beside.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..data.shapes import (AREA_FRACTION, BACKGROUND, PALETTE, SHAPES, SIZE_THRESHOLD, Scene, SceneSpec,
                           coverage, parse_caption, relation_holds)
from ..errors import DataError

COLOUR_NAMES = tuple(PALETTE)
_ABSORB = np.asarray(BACKGROUND, np.float32) - np.asarray([PALETTE[c] for c in COLOUR_NAMES], np.float32)  # (K, 3)
MIN_ALPHA = 0.5                 # a pixel is an object's if at least half covered by its colour ...
MAX_RESIDUAL = 80.0             # ... and within this RGB distance of the white-colour blend line
SOFT_ALPHA = 0.15               # alpha below this (noise) does not count in area and shape fits
MIN_AREA = 0.005                # components smaller than this fraction of the canvas are ignored
BLURS = (0.0, 0.5, 0.75, 1.0)   # template blurs (Gaussian sigma, pixels): soft samples fit too
MIN_FIT = 0.7                   # least soft IoU between an object and its best shape template
RELATION_CHECK_MARGIN = 0.1     # a relation holds if the centroids differ by this (canvas fraction)
SCORES = ("overall", "colour", "shape", "size", "relation", "count", "heldout_pair")  # ShapesScore accuracies


@dataclass(frozen=True)
class DetectedObject:
    """An object found in an image; positions and sizes are fractions of the canvas (y down)."""

    colour: str
    shape: str | None            # best-fitting shape, None if nothing fits (fit < MIN_FIT)
    fit: float                   # soft IoU of that shape's template
    size: str                    # 'small' | 'large'
    extent: float                # side of the bounding box
    x: float                     # centroid
    y: float
    area: float


# ---- segmentation ---------------------------------------------------------------------------------


def _as_hwc(image) -> np.ndarray:
    """uint8 (3, H, W) or (H, W, 3) -> float32 (H, W, 3)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise DataError(f"the checker reads uint8 images (0..255), got {a.dtype}; convert model output "
                        "with aigc.data.images.from_model_range")
    if a.ndim == 3 and a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(f"the checker reads RGB images (3, H, W) or (H, W, 3), got shape {a.shape}")
    return a.astype(np.float32)


def _unmix(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel alpha for every palette colour (H, W, K) and the pixel's colour index (H, W), -1 = none."""
    d = np.asarray(BACKGROUND, np.float32) - img                                     # (H, W, 3)
    alpha = d @ _ABSORB.T / (_ABSORB * _ABSORB).sum(1)                               # (H, W, K)
    resid = np.linalg.norm(d[..., None, :] - np.clip(alpha, 0, 1.2)[..., None] * _ABSORB, axis=-1)  # (H, W, K)
    resid = np.where(alpha > 0.1, resid, np.inf)
    label = resid.argmin(-1)                       # the nearest blend line first, then: is it covered?
    a = np.take_along_axis(alpha, label[..., None], -1)[..., 0]
    label = np.where((a >= MIN_ALPHA) & (resid.min(-1) <= MAX_RESIDUAL), label, -1)
    return alpha, label


def _components(label: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative labels: ids (H, W), 0 = none, 1.. = components."""
    h, w = label.shape
    big = h * w
    ids = np.where(label >= 0, np.arange(h * w).reshape(h, w), big)
    lab = np.pad(label, 1, constant_values=-1)
    shifts = [(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if (dy, dx) != (1, 1)]
    same = [lab[dy:dy + h, dx:dx + w] == label for dy, dx in shifts]                 # neighbour has my label
    while True:  # every pixel takes the smallest pixel index among its neighbours, then jumps to its id
        p = np.pad(ids, 1, constant_values=big)
        new = ids
        for (dy, dx), s in zip(shifts, same):
            new = np.minimum(new, np.where(s, p[dy:dy + h, dx:dx + w], big))
        flat = np.append(new.reshape(-1), big)
        new = flat[flat[new]]                                   # pointer jumping: halves the rounds
        if np.array_equal(new, ids):
            break
        ids = new
    _, inverse = np.unique(ids, return_inverse=True)
    out = inverse.reshape(h, w) + 1
    out[ids == big] = 0
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    p = np.pad(mask, 1)
    return np.logical_or.reduce([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])


@functools.lru_cache(maxsize=256)
def _band(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a Gaussian blur along one axis (kernel radius 3, zero outside)."""
    k = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.where(np.abs(d) <= 3, (k / k.sum())[np.clip(d + 3, 0, 6)], 0.0).astype(np.float32)


def _blur(t: np.ndarray, sigma: float) -> np.ndarray:
    return _band(t.shape[0], sigma) @ t @ _band(t.shape[1], sigma)


def _fit_shape(a: np.ndarray, area: float, cx: float, cy: float) -> tuple[str | None, float]:
    """Best shape template for the alpha map ``a`` (H, W) of one object with this area and centroid:
    each shape is rendered sharp and blurred (``BLURS``), sized by the area, placed by the centroid."""
    ys, xs = np.nonzero(a)
    x0, y0 = max(0, xs.min() - 2), max(0, ys.min() - 2)
    x1, y1 = min(a.shape[1], xs.max() + 3), min(a.shape[0], ys.max() + 3)
    win = a[y0:y1, x0:x1]
    p = 3                                                       # template margin, so blur sees its edges
    temps, mass = [], []
    for shape in SHAPES:
        e = math.sqrt(area / AREA_FRACTION[shape])
        sy = cy - (e / 6 if shape == "triangle" else 0.0)       # box centre from the centroid
        sharp = coverage(shape, cx, sy, e, x0 - p, y0 - p, x1 - x0 + 2 * p, y1 - y0 + 2 * p, supersample=4)
        temps += [_blur(sharp, sigma) if sigma else sharp for sigma in BLURS]
        mass += [AREA_FRACTION[shape] * e * e] * len(BLURS)
    t = np.stack(temps)[:, p:-p, p:-p]                          # (shapes * blurs, h, w)
    outside = np.maximum(0.0, np.asarray(mass) - t.sum((1, 2)))  # template mass beyond the window
    fits = np.minimum(t, win).sum((1, 2)) / (np.maximum(t, win).sum((1, 2)) + outside)
    k = int(fits.argmax())
    best, best_fit = SHAPES[k // len(BLURS)], float(fits[k])
    return (best if best_fit >= MIN_FIT else None), best_fit


def detect_objects(image) -> list[DetectedObject]:
    """All palette-coloured objects in a uint8 image (3, H, W) or (H, W, 3), largest first."""
    img = _as_hwc(image)
    h, w, _ = img.shape
    side = min(h, w)
    alpha, label = _unmix(img)
    comp = _components(label)
    sizes = np.bincount(comp.reshape(-1))
    keep = sizes >= max(3.0, MIN_AREA * h * w)
    keep[0] = False
    free = ~keep[comp]                          # background, unknown colours and dropped specks
    found = []
    for k in np.nonzero(keep)[0]:
        core = comp == k
        c = int(label[core][0])
        support = _dilate(core) & (core | free)  # + soft edges and stray pixels, but no other object's
        a = np.where(support, np.clip(alpha[..., c], 0.0, 1.0), 0.0)
        a = np.where(a >= SOFT_ALPHA, a, 0.0)                                        # (H, W)
        area = float(a.sum())
        cx = float((a.sum(0) * (np.arange(w) + 0.5)).sum() / area)
        cy = float((a.sum(1) * (np.arange(h) + 0.5)).sum() / area)
        extent = max(float(a.max(0).sum()), float(a.max(1).sum())) / side
        shape, fit = _fit_shape(a, area, cx, cy)
        found.append(DetectedObject(COLOUR_NAMES[c], shape, round(fit, 4),
                                    "large" if extent >= SIZE_THRESHOLD else "small", extent,
                                    cx / w, cy / h, area / (h * w)))
    return sorted(found, key=lambda o: -o.area)


# ---- scoring one prompt ---------------------------------------------------------------------------


@dataclass
class PromptCheck:
    """Per-object and per-relation verdicts for one image and its prompt."""

    prompt: SceneSpec
    colour: list[bool]               # per requested object: an object of its colour was found
    shape: list[bool]                # ... and it has the requested shape
    size: list[bool | None]          # ... and the requested size (None: the prompt gives no size)
    relation: list[bool]             # per requested relation
    count: bool                      # exactly as many objects as requested
    matched: list[DetectedObject | None]
    detected: list[DetectedObject] = field(repr=False, default_factory=list)

    @property
    def correct(self) -> bool:
        return all(self.colour) and all(self.shape) and all(s is not False for s in self.size) \
            and all(self.relation)


def _as_spec(prompt: SceneSpec | Scene | str) -> SceneSpec:
    if isinstance(prompt, SceneSpec):
        return prompt
    if isinstance(prompt, Scene):
        return prompt.spec
    if isinstance(prompt, str):
        return parse_caption(prompt)
    raise DataError(f"a prompt is a caption, a SceneSpec or a Scene, got {type(prompt).__name__}")


def _verdicts(spec: SceneSpec, match: tuple[DetectedObject | None, ...]):
    colour = [m is not None for m in match]
    shape = [m is not None and m.shape == o.shape for o, m in zip(spec.objects, match)]
    size = [None if o.size is None else (m is not None and m.size == o.size) for o, m in zip(spec.objects, match)]
    rel = []
    for r in spec.relations:
        a, b = match[r.subject], match[r.other]
        rel.append(a is not None and b is not None
                   and relation_holds((a.x, a.y), (b.x, b.y), r.relation, RELATION_CHECK_MARGIN))
    return colour, shape, size, rel


def check_image(image, prompt: SceneSpec | Scene | str, max_candidates: int = 3) -> PromptCheck:
    """Score one uint8 image against a prompt (a caption, a :class:`SceneSpec` or a :class:`Scene`)."""
    spec = _as_spec(prompt)
    detected = detect_objects(image)
    options = [[d for d in detected if d.colour == o.colour][:max_candidates] + [None] for o in spec.objects]
    best, best_score = None, -1
    for match in itertools.product(*options):   # the assignment that satisfies most checks
        used = [id(m) for m in match if m is not None]
        if len(used) != len(set(used)):
            continue
        c, s, z, r = _verdicts(spec, match)
        score = sum(c) + sum(s) + sum(bool(v) for v in z) + sum(r)
        if score > best_score:
            best, best_score = match, score
    c, s, z, r = _verdicts(spec, best)
    return PromptCheck(spec, c, s, z, r, len(detected) == len(spec.objects), list(best), detected)


# ---- a batch ----------------------------------------------------------------------------------------


@dataclass
class ShapesScore:
    """Accuracies over a batch (None where nothing was asked); ``split`` labels it (seen / held-out)."""

    split: str
    prompts: int
    overall: float | None
    colour: float | None
    shape: float | None
    size: float | None
    relation: float | None
    count: float | None
    heldout_pair: float | None       # objects with a held-out colour-shape pair drawn right (colour + shape)
    objects: int
    sized_objects: int
    relations: int
    overall_by_objects: dict[str, float] = field(default_factory=dict)  # "1"/"2"/"3" objects asked: overall

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _mean(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(checks: list[PromptCheck], split: str = "") -> ShapesScore:
    """Aggregate per-prompt checks into accuracies."""
    colour = [v for c in checks for v in c.colour]
    shape = [v for c in checks for v in c.shape]
    size = [v for c in checks for v in c.size if v is not None]
    rel = [v for c in checks for v in c.relation]
    novel = [c.shape[i] for c in checks for i in c.prompt.heldout_objects()]
    by_objects: dict[str, list[bool]] = {}
    for c in checks:
        by_objects.setdefault(str(len(c.prompt.objects)), []).append(c.correct)
    return ShapesScore(split, len(checks), _mean([c.correct for c in checks]), _mean(colour), _mean(shape),
                       _mean(size), _mean(rel), _mean([c.count for c in checks]), _mean(novel),
                       len(colour), len(size), len(rel),
                       {k: _mean(v) for k, v in sorted(by_objects.items())})


def score_batch(images, prompts: list, split: str = "") -> ShapesScore:
    """Prompt adherence of uint8 images (N, 3, H, W) (or a list of (3, H, W) / (H, W, 3)) to their
    prompts; ``split`` ('seen', 'heldout', ...) only labels the result."""
    if len(images) != len(prompts):
        raise DataError(f"{len(images)} images but {len(prompts)} prompts; give one prompt per image")
    return summarise([check_image(im, p) for im, p in zip(images, prompts)], split)
