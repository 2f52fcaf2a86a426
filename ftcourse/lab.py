"""The transfer lab: procedural 32x32 images whose every factor of variation is a knob.

Real datasets and ImageNet weights hide what makes transfer work. Here every image is rendered from latent factors,

    shape, colour (hue, saturation, value), background (brightness, texture), position, scale, rotation, noise,

deterministically from a seed and vectorised in torch (on the GPU when there is one), so the course can say exactly
what a source task taught and how a target task relates to it:

- ``source()``: 8 shapes, any colour, plain background. A network pretrained on it learns shape, and learns to
  *ignore* colour, because colour is random and carries no label information.
- ``target("related")``: 5 *new* shapes (frame, crescent, L, X, two dots) under the same conditions: new classes
  built from what the source had to learn (edges, corners, curves, holes).
- ``target("unrelated")``: the background's texture (plain, stripes, checks, dots, grid), a factor the source never
  saw (its backgrounds are plain): neither used nor suppressed.
- ``target("conflict")``: the hue of the shape (5 colours). The source learned to ignore exactly this factor.
- ``target("shifted")``: the source's own 8 shape labels under a domain shift (textured backgrounds, inverted
  contrast, more noise): the same task in new conditions.
- ``target("hues")``: 8 bins of the shape's hue, shapes random: a second *source*, for a network that learned colour
  (the ``"lab-colours"`` checkpoint), where the main source network learned to ignore it.
- ``target("mixed", relatedness=r)``: a continuous knob. Each class is a (new shape, colour) pair; a fraction ``r``
  of the images shows the class by its shape (colour random), the rest by its colour (shape random). ``r = 1`` is
  ``related``, ``r = 0`` is ``conflict``.

Every task is a :class:`ftcourse.data.Task` with a training set, a validation set to choose on and a test set to
report on, each drawn from its own random stream; ``task.show()`` draws examples.
"""

from __future__ import annotations

import math

import torch

from .data import ImageData, Task

SIZE = 32
SOURCE_SHAPES = ("circle", "square", "triangle", "ring", "plus", "star", "half-disc", "bar")
NEW_SHAPES = ("frame", "crescent", "L", "X", "two-dots")
SHAPES = SOURCE_SHAPES + NEW_SHAPES
COLOURS = ("red", "yellow", "green", "blue", "magenta")  # hues 0, 0.2, 0.4, 0.6, 0.8 of the colour wheel
TEXTURES = ("plain", "stripes", "checks", "dots", "grid")
HUES = tuple(f"hue {k}/8" for k in range(8))  # the colour source's classes: hue bins centred on (k + 0.5) / 8


# ------------------------------------------------------------------------------------------------------------------
# Shapes as signed distance functions: negative inside, positive outside, in units of the shape's half-size.

def _box(u, v, half_w, half_h):
    dx, dy = u.abs() - half_w, v.abs() - half_h
    outside = torch.sqrt(dx.clamp(min=0) ** 2 + dy.clamp(min=0) ** 2)
    return outside + torch.maximum(dx, dy).clamp(max=0)


def _triangle(u, v, r=0.95):
    """An equilateral triangle pointing up (Inigo Quilez's exact distance)."""
    k = math.sqrt(3.0)
    x, y = u.abs() - r, -v + r / k
    flip = x + k * y > 0
    x, y = torch.where(flip, (x - k * y) / 2, x), torch.where(flip, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * r, 0)
    return -torch.sqrt(x * x + y * y) * torch.sign(y)


def shape_distance(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance of points (u, v) to ``shape`` centred at 0 with half-size about 1 (v points down)."""
    def radius():
        return torch.sqrt(u * u + v * v)

    if shape == "circle":
        return radius() - 0.9
    if shape == "square":
        return _box(u, v, 0.8, 0.8)
    if shape == "triangle":
        return _triangle(u, v + 0.15)
    if shape == "ring":
        return (radius() - 0.72).abs() - 0.2
    if shape == "plus":
        return torch.minimum(_box(u, v, 0.95, 0.28), _box(u, v, 0.28, 0.95))
    if shape == "star":
        angle = torch.atan2(v, u)
        return radius() - (0.62 + 0.32 * torch.cos(5 * angle + math.pi / 2))
    if shape == "half-disc":
        return torch.maximum(torch.sqrt(u * u + (v - 0.4) ** 2) - 0.95, v - 0.4)
    if shape == "bar":
        return _box(u, v, 0.95, 0.3)
    if shape == "frame":
        return torch.maximum(_box(u, v, 0.85, 0.85), -_box(u, v, 0.5, 0.5))
    if shape == "crescent":
        return torch.maximum(radius() - 0.9, -(torch.sqrt((u - 0.45) ** 2 + v * v) - 0.7))
    if shape == "L":
        return torch.minimum(_box(u + 0.55, v, 0.3, 0.9), _box(u, v - 0.6, 0.85, 0.3))
    if shape == "X":
        a, b = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        return torch.minimum(_box(a, b, 0.95, 0.25), _box(a, b, 0.25, 0.95))
    if shape == "two-dots":
        return torch.minimum(torch.sqrt((u - 0.5) ** 2 + v * v) - 0.4, torch.sqrt((u + 0.5) ** 2 + v * v) - 0.4)
    raise ValueError(f"Unknown shape {shape!r}; the lab knows {list(SHAPES)}.")


def _texture(kind: int, x: torch.Tensor, y: torch.Tensor, period: torch.Tensor, phase: torch.Tensor):
    """A pattern in [0, 1] for texture ``kind`` (an index into TEXTURES), of shape (N, 32, 32).

    ``x`` and ``y`` are the pixel centres (32,), ``period`` is (N,) and ``phase`` (N, 2). Every texture is built
    from a function of the column and a function of the row, so most of the work is on (N, 32) vectors and only
    the last step fills the full (N, 32, 32) maps.
    """
    xs = (x[None] + phase[:, :1]) / period[:, None]  # (N, 32): position along a row, in periods
    ys = (y[None] + phase[:, 1:]) / period[:, None]
    columns, rows = (lambda t: t[:, None, :]), (lambda t: t[:, :, None])
    if kind == 0:
        return torch.zeros(len(period), SIZE, SIZE, device=x.device)
    if kind == 1:
        return rows(torch.sin(2 * math.pi * ys) > 0).float().expand(-1, SIZE, SIZE)
    if kind == 2:
        return (columns(torch.sin(2 * math.pi * xs) > 0) ^ rows(torch.sin(2 * math.pi * ys) > 0)).float()
    fx, fy = (xs - xs.round()).abs(), (ys - ys.round()).abs()
    if kind == 3:
        return (columns(fx * fx) + rows(fy * fy) < 0.09).float()
    if kind == 4:
        return (torch.minimum(columns(fx), rows(fy)) < 0.12).float()
    raise ValueError(f"Unknown texture index {kind}; textures are {list(TEXTURES)}.")


def _hsv_to_rgb(h, s, v):
    """Colours from hue, saturation and value, each of shape (N,); returns (N, 3) in [0, 1]."""
    k = (torch.stack([5 + h * 6, 3 + h * 6, 1 + h * 6], dim=1)) % 6
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


# ------------------------------------------------------------------------------------------------------------------
# Rendering.

NOISE_PATTERNS = 1024  # pixel-noise images that the lab's images draw their noise from
_noise_banks: dict[str, torch.Tensor] = {}


def noise_bank(device=None) -> torch.Tensor:
    """``NOISE_PATTERNS`` fixed images of pixel noise, uniform with mean 0 and standard deviation 1.

    Each lab image adds one of them (factor ``noise_pattern``), scaled by its ``noise`` factor. Drawing 3,072 fresh
    random numbers per image from torch's sequential CPU generator took a third of the rendering time; choosing one
    of 1,024 patterns costs one random integer. The bank is made once per device from a fixed CPU seed, so every
    device draws the same images (up to floating-point rounding in the drawing).
    """
    device = torch.device(device or "cpu")
    if str(device) not in _noise_banks:
        uniform = torch.rand(NOISE_PATTERNS, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(20_141_108))
        _noise_banks[str(device)] = ((uniform - 0.5) * math.sqrt(12)).to(device)
    return _noise_banks[str(device)]


def render(factors: dict[str, torch.Tensor], device=None) -> torch.Tensor:
    """Draw one image per row of ``factors`` (see :func:`sample_factors`); returns uint8 ``(N, 3, 32, 32)``.

    Call it on a few hundred images at a time: the intermediate maps then stay in the CPU's cache.

    How it is fast: the images are put in order of their shape, so each shape's signed distance is computed on a
    contiguous slice (no gather and scatter); pixel coordinates and textures are separable, computed on (N, 32)
    rows and columns and broadcast once; and the 0..255 scaling is folded into the colours before the blend.
    """
    device = torch.device(device or "cpu")
    order = torch.argsort(factors["shape"], stable=True)  # images grouped by shape
    f = {k: t[order].to(device) for k, t in factors.items()}
    order = order.to(device)
    m = len(order)
    coords = torch.arange(SIZE, device=device, dtype=torch.float32) + 0.5
    # Pixel coordinates in each shape's own frame: move to its centre, undo its rotation and scale:
    #   u = (cos * dx + sin * dy) / scale,   v = (-sin * dx + cos * dy) / scale,
    # where dx depends only on the column and dy only on the row.
    cos, sin = torch.cos(f["angle"]) / f["scale"], torch.sin(f["angle"]) / f["scale"]
    dx, dy = coords[None] - f["x"][:, None], coords[None] - f["y"][:, None]  # (m, 32) each
    u = (cos[:, None] * dx)[:, None, :] + (sin[:, None] * dy)[:, :, None]
    v = (cos[:, None] * dy)[:, :, None] - (sin[:, None] * dx)[:, None, :]
    distance = torch.empty(m, SIZE, SIZE, device=device)
    start = 0
    for name, count in zip(SHAPES, torch.bincount(f["shape"], minlength=len(SHAPES)).tolist()):
        if count:
            distance[start:start + count] = shape_distance(name, u[start:start + count], v[start:start + count])
            start += count
    # A soft edge about one pixel wide (anti-aliasing): the distance in pixels through a sigmoid.
    mask = torch.sigmoid(distance.mul_((-2.0 * f["scale"])[:, None, None]))[:, None]

    # Background: a brightness, plus a texture's pattern for tasks that have one. Everything in 0..255 units,
    # plus 0.5 so that the final conversion to uint8 (which truncates) rounds.
    background = (f["bg_level"] * 255 + 0.5)[:, None, None, None]
    textured = (f["texture"] > 0).nonzero().flatten()
    if len(textured):
        pattern = torch.zeros(m, SIZE, SIZE, device=device)
        for kind in range(1, len(TEXTURES)):
            members = textured[f["texture"][textured] == kind]
            pattern[members] = _texture(kind, coords, coords, f["texture_period"][members],
                                        f["texture_phase"][members])
        background = background + (f["texture_contrast"] * 255)[:, None, None, None] * pattern[:, None]
    colour = (_hsv_to_rgb(f["hue"], f["saturation"], f["value"]) * 255 + 0.5)[:, :, None, None]
    image = torch.lerp(background, colour, mask)  # the shape over the background, blended at the soft edge
    image.addcmul_(noise_bank(device)[f["noise_pattern"]], (f["noise"] * 255)[:, None, None, None])
    image = image.clamp_(0, 255).to(torch.uint8)
    out = torch.empty_like(image)
    out[order] = image  # back to the order of the factors
    return out


# ------------------------------------------------------------------------------------------------------------------
# Factors: what each image shows. Everything not set by a task is a random nuisance.

def sample_factors(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random nuisance factors for ``n`` images: a source shape of any colour on a plain dark background."""
    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    return {
        "shape": torch.randint(0, len(SOURCE_SHAPES), (n,), generator=generator),
        "x": uniform(11.5, 20.5), "y": uniform(11.5, 20.5),  # the centre moves by up to 4.5 pixels
        "scale": uniform(7.5, 10.5),  # half-size in pixels
        "angle": uniform(-0.44, 0.44),  # +-25 degrees
        "hue": uniform(0, 1), "saturation": uniform(0.55, 1), "value": uniform(0.65, 1),
        "bg_level": uniform(0.05, 0.35),
        "texture": torch.zeros(n, dtype=torch.long),
        "texture_contrast": uniform(0.15, 0.3),
        "texture_period": uniform(4, 7), "texture_phase": uniform(0, 8, 2),
        "noise": torch.full((n,), 0.03),  # standard deviation of the pixel noise
        "noise_pattern": torch.randint(0, NOISE_PATTERNS, (n,), generator=generator),  # which one (see noise_bank)
    }


BLOCK = 512  # images drawn from one random stream; see make_images


def _generator(seed: int, stream: str) -> torch.Generator:
    """An independent random stream per (seed, purpose), e.g. the training images of one task."""
    key = sum((i + 1) * ord(ch) for i, ch in enumerate(stream)) * 1_000_003
    return torch.Generator().manual_seed((seed * 7_919 + key) % 2**62)


def _factors_for(task: str, labels: torch.Tensor, g: torch.Generator, relatedness: float) -> dict:
    f = sample_factors(len(labels), g)
    n = len(labels)
    if task == "source":
        f["shape"] = labels.clone()
    elif task == "related":
        f["shape"] = labels + len(SOURCE_SHAPES)
    elif task == "unrelated":
        f["texture"] = labels.clone()
    elif task == "conflict":
        f["hue"] = (labels * 0.2 + (torch.rand(n, generator=g) - 0.5) * 0.08) % 1.0
        f["saturation"] = 0.75 + 0.25 * torch.rand(n, generator=g)
    elif task == "shifted":
        f["shape"] = labels.clone()
        _shift_conditions(f, g)
    elif task == "hues":
        f["hue"] = (labels + 0.5 + (torch.rand(n, generator=g) - 0.5) * 0.5) / len(HUES)
        f["saturation"] = 0.75 + 0.25 * torch.rand(n, generator=g)
    elif task == "mixed":
        by_shape = torch.rand(n, generator=g) < relatedness
        f["shape"] = torch.where(by_shape, labels + len(SOURCE_SHAPES), f["shape"])
        hue = (labels * 0.2 + (torch.rand(n, generator=g) - 0.5) * 0.08) % 1.0
        f["hue"] = torch.where(by_shape, f["hue"], hue)
        f["saturation"] = torch.where(by_shape, f["saturation"], 0.75 + 0.25 * torch.rand(n, generator=g))
    else:
        raise ValueError(f"Unknown task {task!r}; the lab has {list(TASKS)}.")
    return f


def _shift_conditions(f: dict, g: torch.Generator) -> None:
    """The lab's domain shift, in place: textured light backgrounds, dark shapes (inverted contrast), more noise."""
    n = len(f["shape"])
    f["texture"] = torch.randint(1, len(TEXTURES), (n,), generator=g)
    f["bg_level"] = 0.55 + 0.3 * torch.rand(n, generator=g)  # light backgrounds...
    f["value"] = 0.05 + 0.35 * torch.rand(n, generator=g)  # ...and dark shapes: inverted contrast
    f["noise"] = torch.full((n,), 0.08)


CONDITIONS = ("usual", "shifted")  # see make_images

TASKS = {
    "source": (SOURCE_SHAPES, "8 shapes in any colour on plain backgrounds: what the lab checkpoint was pretrained on"),
    "related": (NEW_SHAPES, "5 new shapes, same conditions as the source: related"),
    "unrelated": (TEXTURES, "the background's texture, which the source never saw: unrelated"),
    "conflict": (COLOURS, "the shape's colour, which the source learned to ignore: conflicting"),
    "shifted": (SOURCE_SHAPES, "the source's 8 shapes on textured light backgrounds, dark and noisier: shifted"),
    "hues": (HUES, "8 bins of the shape's hue, any source shape: a colour source, for the 'lab-colours' checkpoint"),
    "mixed": (tuple(f"{s}/{c}" for s, c in zip(NEW_SHAPES, COLOURS)),
              "class k is shown by shape k (a fraction r of the images) or by colour k (the rest)"),
}


def make_images(task: str, n_per_class: int, *, seed: int = 0, split: str = "train", relatedness: float = 1.0,
                conditions: str = "usual", device=None) -> ImageData:
    """``n_per_class`` images per class of ``task`` for ``split`` ("train", "val" or "test"), deterministic in ``seed``.

    Each (split, seed) pair has its own random stream, so the splits are independent draws: no image of one split
    is an image of another. ``conditions="shifted"`` draws the same classes under the lab's domain shift (the
    conditions of the ``shifted`` task: textured light backgrounds, dark shapes, more noise), for testing a model
    out of distribution.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; the lab has {list(TASKS)}.")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    if conditions not in CONDITIONS:
        raise ValueError(f"conditions must be one of {list(CONDITIONS)}, got {conditions!r}.")
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int (images per class), got {n_per_class!r}.")
    if not 0.0 <= relatedness <= 1.0:
        raise ValueError(f"relatedness must lie in [0, 1] (0 = conflicting, 1 = related), got {relatedness}.")
    classes = TASKS[task][0]
    total = n_per_class * len(classes)
    stream = (f"{task}/{split}" + (f"/{relatedness:.4f}" if task == "mixed" else "")
              + ("/shifted" if conditions == "shifted" else ""))
    # Labels cycle 0, 1, ..., C-1, 0, 1, ... and image i is drawn from the random stream of block i // BLOCK, so
    # the first k*C images are the same whatever the total: a 5-per-class set is part of the 20-per-class set.
    parts = []
    for block in range(math.ceil(total / BLOCK)):
        g = _generator(seed, f"{stream}/{block}")
        labels = torch.arange(block * BLOCK, (block + 1) * BLOCK) % len(classes)
        factors = _factors_for(task, labels, g, relatedness)
        if conditions == "shifted":
            _shift_conditions(factors, g)
        keep = min(BLOCK, total - block * BLOCK)
        parts.append(render({k: t[:keep] for k, t in factors.items()}, device))
    images = torch.cat(parts)
    labels = torch.arange(total, device=images.device) % len(classes)
    return ImageData(images, labels, list(classes))


FIXED_SPLIT_SEED = 10_000  # the seed of the validation and test images every training seed shares
GENEROUS_VAL_PER_CLASS = 50  # the default validation set: ten times the fewest training labels of the lessons


def source(shots: int = 600, *, val_per_class: int = GENEROUS_VAL_PER_CLASS, test_per_class: int = 100,
           seed: int = 0, device=None) -> Task:
    """The pretraining task: 8 shapes, colour random (so it carries no information), plain backgrounds."""
    return target("source", shots, val_per_class=val_per_class, test_per_class=test_per_class, seed=seed,
                  device=device)


def target(name: str, shots: int = 20, *, val_per_class: int = GENEROUS_VAL_PER_CLASS, test_per_class: int = 100,
           seed: int = 0, relatedness: float = 1.0, val_seed: int = FIXED_SPLIT_SEED, scarce_val: bool = False,
           device=None) -> Task:
    """A target task of the lab (see the module docstring) with ``shots`` training labels per class.

    The training images depend on ``seed``; the test set does not (it is the same for every seed, so results of
    different seeds are compared on the same images). Training sets of one seed are nested: the 5-per-class set is
    part of the 20-per-class set. The test set is used once, for the final number.

    The validation set stands for the labelled images one holds out to choose a rate or a method. By default it is
    generous (``val_per_class=50``, ten times the fewest training labels) and the same for every seed. A few-shot
    user has no such set: their validation labels are as scarce as their training labels, and drawn with them.
    ``val_per_class=shots, val_seed=seed`` says exactly that (Perez, Kiela & Cho, "True Few-Shot Learning
    with Language Models", NeurIPS 2021, show how much a generous validation set flatters few-shot results).

    ``scarce_val=True`` keeps the generous set as ``val`` and carries that scarce set too (``task.also_val["scarce"]``):
    a tuning measures both at every check, and ``task.choosing_on("scarce")`` chooses on the scarce one. The two
    are then the same training runs, trained once (lesson 04 carries it, lesson 04b chooses on it).
    """
    train = make_images(name, shots, seed=seed, split="train", relatedness=relatedness, device=device)
    val = make_images(name, val_per_class, seed=val_seed, split="val", relatedness=relatedness, device=device)
    test = make_images(name, test_per_class, seed=FIXED_SPLIT_SEED, split="test", relatedness=relatedness,
                       device=device)
    generous = val_per_class == GENEROUS_VAL_PER_CLASS and val_seed == FIXED_SPLIT_SEED
    also_val = {}
    if scarce_val:
        if not generous:
            raise ValueError("scarce_val=True carries a scarce validation set next to the generous one; leave "
                             "val_per_class and val_seed at their defaults (or ask for the scarce set alone with "
                             "val_per_class=shots, val_seed=seed).")
        also_val["scarce"] = make_images(name, shots, seed=seed, split="val", relatedness=relatedness, device=device)
    description = TASKS[name][1]  # a mixed task's name says its r
    return Task(name if name != "mixed" else f"mixed r={relatedness:g}", train, val, test, description, also_val,
                "generous" if generous else "val")
