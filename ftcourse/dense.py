"""Beyond classification: the lab's dense tasks, an FCN and a CenterNet head on the course's backbone, their metrics.

The lab renders every image from known factors, so it knows every pixel of every shape: segmentation masks and
bounding boxes cost nothing. :func:`dense_target` draws *scenes* of one to four shapes (one per quadrant of the
32x32 image, half-size 4.5-6 pixels) with

- a **mask**: the class of every pixel, 0 for the background and 1 + the class of the shape that covers it;
- **boxes**: per object ``(class, x0, y0, x1, y1)`` in pixels, the tightest box around its mask (``x1`` and ``y1``
  exclusive), padded to 4 rows per image with class -1.

``"related"`` scenes show the lab's 5 new shapes (a shape's class is its shape); ``"conflict"`` scenes show the
source's shapes, and a shape's class is its colour (5 hues): the factor the source learned to ignore.

Two heads put the lab's pretrained :class:`~ftcourse.models.StagedNet` to work on them (its stages are kept, its
classifier dropped):

- :class:`SegmentationNet`, a small FCN (Long, Shelhamer & Darrell, "Fully convolutional networks for semantic
  segmentation", CVPR 2015): each stage's map through a 1x1 "lateral" convolution, the coarse maps upsampled and
  added to the finer ones, a 3x3 convolution and a 1x1 classifier, bilinear upsampling to the input's size.
  Trained with per-pixel cross-entropy; measured by mean IoU (:func:`mean_iou`).
- :class:`DetectionNet`, CenterNet (Zhou, Wang & Krähenbühl, "Objects as points", arXiv 2019): on the same merged
  map (stride 2), a heatmap per class whose peaks are the objects' centres, plus each object's size and the
  sub-cell offset of its centre. Trained with the paper's focal loss on the heatmap and L1 on size and offset
  (:func:`detection_loss`); decoded by keeping the 3x3 local maxima (:func:`decode`); measured by average
  precision at IoU 0.5 (:func:`average_precision`, PASCAL VOC's all-point interpolation).

Both train with :func:`ftcourse.train.fit` and its ``loss=`` argument. Dense tasks are not augmented here: a flip
would have to flip masks and boxes too, and the comparison does not need it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .lab import COLOURS, NEW_SHAPES, SIZE, SOURCE_SHAPES, render, sample_factors, shape_distance
from .models import StagedNet

QUADRANTS = 4  # at most one shape per quadrant of the image: up to 4 objects
SCALE = (4.5, 6.0)  # half-size of a shape in pixels (the source's shapes are 7.5-10.5: these are smaller)
TARGETS = {
    "related": (NEW_SHAPES, "the lab's 5 new shapes, 1-4 per image; a pixel's class is its shape's"),
    "conflict": (COLOURS, "the source's shapes in 5 colours, 1-4 per image; a pixel's class is its shape's colour"),
}
BLOCK = 128  # images drawn from one random stream, so that a small training set is part of a larger one
STRIDE = 2  # of the merged feature map (the lab network's stem halves the resolution)


# ------------------------------------------------------------------------------------------------------------------
# The data: scenes with masks and boxes.

@dataclass
class DenseData:
    """Images ``(N, 3, 32, 32)`` uint8 with their masks ``(N, 32, 32)`` int64 and boxes ``(N, 4, 5)`` float32.

    ``masks[i, y, x]`` is 0 (background) or 1 + the class of the shape at that pixel; ``boxes[i, k]`` is
    ``(class, x0, y0, x1, y1)`` of object k, or class -1 for an empty slot. ``classes`` are the objects' classes.
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> DenseData:
        return DenseData(self.images.to(device), self.masks.to(device), self.boxes.to(device), list(self.classes))

    def subset(self, n: int) -> DenseData:
        """The first ``n`` images (a smaller training set, nested in this one)."""
        return DenseData(self.images[:n], self.masks[:n], self.boxes[:n], list(self.classes))

    def for_training(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, masks)`` for ``"segmentation"``, ``(images, boxes)`` for ``"detection"``: what fit takes."""
        check_kind(kind)
        return (self.images, self.masks) if kind == "segmentation" else (self.images, self.boxes)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(repr(self.classes).encode())
        for tensor in (self.images, self.masks, self.boxes):
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def show(self, n: int = 8, title: str | None = None):
        """The first ``n`` images, with their masks and boxes drawn over them. Returns the figure."""
        return show_scenes(self.images[:n], self.masks[:n], self.boxes[:n], self.classes, title=title)


@dataclass
class DenseTask:
    """A dense lab task: ``train``, ``val`` (to choose on) and ``test`` (to report on) :class:`DenseData`."""

    name: str
    train: DenseData
    val: DenseData
    test: DenseData
    description: str = ""

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    def fingerprint(self) -> str:
        parts = [self.name] + [split.fingerprint() for split in (self.train, self.val, self.test)]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()

    def __repr__(self) -> str:
        return (f"DenseTask({self.name!r}: {len(self.classes)} classes + background, {len(self.train)} train / "
                f"{len(self.val)} val / {len(self.test)} test images; {self.description})")


def check_kind(kind: str) -> None:
    if kind not in ("segmentation", "detection"):
        raise ValueError(f"kind must be 'segmentation' or 'detection', got {kind!r}.")


def _stream(seed: int, name: str) -> torch.Generator:
    key = int.from_bytes(hashlib.sha256(f"dense/{name}/{seed}".encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(key % 2**62)


def shape_distances(factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Signed distance (in units of the shape's half-size) of every pixel to each image's shape, ``(N, 32, 32)``.

    The pixel coordinates of :func:`ftcourse.lab.render`, so the shape covers a pixel (its soft edge is above one
    half there) exactly where the distance is negative.
    """
    coords = torch.arange(SIZE, dtype=torch.float32) + 0.5
    cos, sin = torch.cos(factors["angle"]) / factors["scale"], torch.sin(factors["angle"]) / factors["scale"]
    dx, dy = coords[None] - factors["x"][:, None], coords[None] - factors["y"][:, None]
    u = (cos[:, None] * dx)[:, None, :] + (sin[:, None] * dy)[:, :, None]
    v = (cos[:, None] * dy)[:, :, None] - (sin[:, None] * dx)[:, None, :]
    distance = torch.empty(len(u), SIZE, SIZE)
    for index, name in enumerate(SOURCE_SHAPES + NEW_SHAPES):
        members = (factors["shape"] == index).nonzero().flatten()
        if len(members):
            distance[members] = shape_distance(name, u[members], v[members])
    return distance


def _scene_block(name: str, n: int, g: torch.Generator):
    """``n`` scenes from one random stream: images, masks, boxes.

    Each scene is layered as the renderer draws one shape: the background, then each shape's colour blended in by
    its soft edge, ``image = lerp(image, colour, sigmoid(-2 * scale * distance))``. The background and a shape's
    colour come from :func:`ftcourse.lab.render` itself (a shape drawn far outside the image; a shape covering all
    of it), with the image's pixel noise, which the blend keeps.
    """
    present = torch.rand(n, QUADRANTS, generator=g) < 0.5
    nobody = ~present.any(1)
    present[nobody, torch.randint(0, QUADRANTS, (n,), generator=g)[nobody]] = True
    labels = torch.randint(0, len(TARGETS[name][0]), (n, QUADRANTS), generator=g)
    shared = sample_factors(n, g)  # background and noise: one per image, shared by its shapes
    image = render(dict(shared, x=torch.full((n,), -1e3))).float()  # the background alone
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    boxes = torch.full((n, QUADRANTS, 5), -1.0)
    index = torch.arange(SIZE)
    for q in range(QUADRANTS):
        f = sample_factors(n, g)
        for key in ("bg_level", "texture", "noise", "noise_pattern"):
            f[key] = shared[key]
        f["x"] = (q % 2) * 16 + 8 + (torch.rand(n, generator=g) - 0.5) * 3  # the quadrant's centre, +-1.5 pixels
        f["y"] = (q // 2) * 16 + 8 + (torch.rand(n, generator=g) - 0.5) * 3
        f["scale"] = SCALE[0] + (SCALE[1] - SCALE[0]) * torch.rand(n, generator=g)
        if name == "related":
            f["shape"] = labels[:, q] + len(SOURCE_SHAPES)
        else:  # as the lab's conflict target: one hue per class, saturated
            f["hue"] = (labels[:, q] * 0.2 + (torch.rand(n, generator=g) - 0.5) * 0.08) % 1.0
            f["saturation"] = 0.75 + 0.25 * torch.rand(n, generator=g)
        colour = render(dict(f, shape=torch.zeros(n, dtype=torch.long), x=torch.full((n,), 16.0),
                             y=torch.full((n,), 16.0), scale=torch.full((n,), 1e3))).float()  # a disc over it all
        distance = shape_distances(f)
        alpha = torch.sigmoid(-2.0 * f["scale"][:, None, None] * distance) * present[:, q, None, None]
        image = torch.lerp(image, colour, alpha[:, None])
        inside = (distance < 0) & present[:, q, None, None]
        mask = torch.where(inside, labels[:, q, None, None] + 1, mask)
        has = inside.any((1, 2))
        rows, cols = inside.any(2), inside.any(1)  # (n, 32): the rows and the columns the shape covers
        boxes[has, q, 0] = labels[has, q].float()
        boxes[has, q, 1] = torch.where(cols, index, SIZE).amin(1)[has].float()
        boxes[has, q, 2] = torch.where(rows, index, SIZE).amin(1)[has].float()
        boxes[has, q, 3] = torch.where(cols, index, -1).amax(1)[has].float() + 1
        boxes[has, q, 4] = torch.where(rows, index, -1).amax(1)[has].float() + 1
    return image.round().clamp(0, 255).to(torch.uint8), mask, boxes


def make_scenes(name: str, n: int, *, seed: int = 0, split: str = "train", device=None) -> DenseData:
    """``n`` scenes of dense target ``name`` for ``split``, deterministic in ``(seed, split)``.

    Scene i comes from the random stream of block ``i // BLOCK``, so the first k scenes are the same whatever ``n``:
    a training set of 16 images is part of the set of 128.
    """
    if name not in TARGETS:
        raise ValueError(f"Unknown dense target {name!r}; the lab has {list(TARGETS)}.")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (a number of images), got {n!r}.")
    parts = [_scene_block(name, BLOCK, _stream(seed, f"{name}/{split}/{start // BLOCK}"))
             for start in range(0, n, BLOCK)]  # whole blocks, so that the random draws do not depend on n
    images, masks, boxes = (torch.cat(p)[:n] for p in zip(*parts))
    return DenseData(images, masks, boxes, list(TARGETS[name][0])).to(device or "cpu")


def dense_target(name: str, shots: int = 64, *, n_val: int = 128, n_test: int = 256, seed: int = 0,
                 device=None) -> DenseTask:
    """A dense lab task with ``shots`` labelled training images (scenes); val and test do not depend on ``seed``.

    >>> task = dense_target("related", 8, n_val=4, n_test=4)
    >>> task.train.images.shape, task.train.masks.shape, task.train.boxes.shape
    (torch.Size([8, 3, 32, 32]), torch.Size([8, 32, 32]), torch.Size([8, 4, 5]))
    """
    return DenseTask(name, make_scenes(name, shots, seed=seed, split="train", device=device),
                     make_scenes(name, n_val, seed=10_000, split="val", device=device),
                     make_scenes(name, n_test, seed=10_000, split="test", device=device), TARGETS[name][1])


# ------------------------------------------------------------------------------------------------------------------
# The heads: an FCN for segmentation, CenterNet for detection, on the stages of a StagedNet.

class SkipMergeNet(nn.Module):
    """The backbone's stages and a top-down merge of their maps (Long et al. 2015's skip connections):

        m4 = lateral4(layer4),   m_k = upsample(m_{k+1}) + lateral_k(layer_k)   for k = 3, 2, 1,

    each lateral a 1x1 convolution to ``width`` channels, then a 3x3 convolution, BatchNorm and ReLU on ``m1``, whose
    resolution is the stem's (stride 2 on the lab network), and a 1x1 convolution to ``out_channels``. The backbone's
    classifier is dropped: a dense task predicts from the maps, not from their average.
    """

    def __init__(self, backbone: StagedNet, out_channels: int, width: int = 32):
        super().__init__()
        if not isinstance(backbone, StagedNet):
            raise TypeError(f"The backbone must be a StagedNet (ftcourse.models.resnet or pretrained), got "
                            f"{type(backbone).__name__}.")
        backbone.head = nn.Identity()  # the classifier of the source's classes: nothing for a dense task
        self.backbone = backbone
        self.stages = backbone.stage_names[:-1]  # stem, layer1, ..., layerN
        channels = [m.num_features for m in (self._last_batchnorm(backbone.stage(s)) for s in self.stages[1:])]
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.merge = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, out_channels, 1)

    @staticmethod
    def _last_batchnorm(stage: nn.Module) -> nn.BatchNorm2d:
        return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1]

    def merged(self, images: torch.Tensor) -> torch.Tensor:
        x, maps = self.backbone.normalise(images), []
        for name in self.stages:
            x = self.backbone.stage(name)(x)
            if name != "stem":
                maps.append(x)
        merged = self.laterals[-1](maps[-1])
        for lateral, finer in zip(reversed(self.laterals[:-1]), reversed(maps[:-1])):
            merged = F.interpolate(merged, size=finer.shape[-2:], mode="nearest") + lateral(finer)
        return self.out(self.merge(merged))


class SegmentationNet(SkipMergeNet):
    """Class scores for every pixel, ``(N, num_classes + 1, H, W)`` (class 0 is the background): the FCN's map,
    upsampled bilinearly to the input's size. Train with :func:`segmentation_loss`."""

    def __init__(self, backbone: StagedNet, num_classes: int, width: int = 32):
        super().__init__(backbone, num_classes + 1, width)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.merged(images), size=images.shape[-2:], mode="bilinear", align_corners=False)


class DetectionNet(SkipMergeNet):
    """CenterNet's outputs on the merged map, ``(N, num_classes + 4, H/2, W/2)``: a heatmap logit per class
    (channels ``0..C-1``), the box's width and height in cells (``C, C+1``) and the centre's offset within its cell
    (``C+2, C+3``). The heatmap's bias starts at -2.19, a prior of 0.1 (Zhou et al. 2019), so the focal loss does
    not begin with every cell claiming an object. Train with :func:`detection_loss`, read with :func:`decode`."""

    def __init__(self, backbone: StagedNet, num_classes: int, width: int = 32):
        super().__init__(backbone, num_classes + 4, width)
        self.num_classes = num_classes
        with torch.no_grad():
            self.out.bias[:num_classes] = -2.19

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.merged(images)


# ------------------------------------------------------------------------------------------------------------------
# Losses.

def segmentation_loss(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over every pixel: each pixel is a classification (Long et al. 2015)."""
    return F.cross_entropy(scores.float(), masks)


def heatmap_targets(boxes: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """CenterNet's target heatmaps ``(N, C, size, size)`` from boxes ``(N, K, 5)`` (in pixels; class -1 = none).

    Each object puts a Gaussian on its class's map, centred on the cell of its centre, exp(-d^2 / 2 sigma^2) with
    sigma a sixth of the object's mean side in cells (the paper sets sigma from the box's size through a radius
    rule; this is the simple version); where two overlap the larger value wins.
    """
    n, k, _ = boxes.shape
    cells = torch.arange(size, device=boxes.device, dtype=torch.float32)
    valid = boxes[..., 0] >= 0
    centre = ((boxes[..., 1:3] + boxes[..., 3:5]) / 2 / STRIDE).floor()  # (N, K, 2): the centre's cell
    sides = (boxes[..., 3:5] - boxes[..., 1:3]) / STRIDE
    sigma = (sides.mean(-1) / 6).clamp(min=0.5)  # (N, K)
    gx = torch.exp(-(cells[None, None] - centre[..., :1]) ** 2 / (2 * sigma[..., None] ** 2))  # (N, K, size)
    gy = torch.exp(-(cells[None, None] - centre[..., 1:]) ** 2 / (2 * sigma[..., None] ** 2))
    blobs = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (N, K, size, size)
    heat = torch.zeros(n, num_classes, size, size, device=boxes.device)
    which = F.one_hot(boxes[..., 0].clamp(min=0).long(), num_classes).float() * valid[..., None]  # (N, K, C)
    return torch.amax(which[..., None, None] * blobs[:, :, None], dim=1)


def detection_loss(outputs: torch.Tensor, boxes: torch.Tensor, size_weight: float = 0.1) -> torch.Tensor:
    """CenterNet's loss (Zhou et al. 2019, eq. 1-3): focal loss on the heatmap + 0.1 L1 on size + L1 on offset.

    The heatmap's focal loss, with p the predicted and y the target value of a cell (y = 1 at an object's centre):

        L_k = -1/N_obj * sum  { (1 - p)^2 log p               where y = 1,
                                (1 - y)^4 p^2 log(1 - p)      elsewhere },

    so cells near a centre (y close to 1) are hardly punished for firing, and easy negatives count little. Size and
    offset are regressed with L1 at the objects' centre cells only.
    """
    outputs = outputs.float()
    num_classes = outputs.shape[1] - 4
    target = heatmap_targets(boxes, num_classes, outputs.shape[-1])
    logits = outputs[:, :num_classes]
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    centres = target == 1
    n_objects = centres.sum().clamp(min=1)
    positive = ((1 - p) ** 2 * torch.log(p))[centres].sum()
    negative = ((1 - target) ** 4 * p ** 2 * torch.log(1 - p))[~centres].sum()
    focal = -(positive + negative) / n_objects
    valid = boxes[..., 0] >= 0
    centre = (boxes[..., 1:3] + boxes[..., 3:5]) / 2 / STRIDE  # (N, K, 2) in cells
    cell = centre.floor().long().clamp(0, outputs.shape[-1] - 1)
    image = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(valid)
    at = outputs[image[valid], :, cell[..., 1][valid], cell[..., 0][valid]]  # (objects, C + 4)
    sides = ((boxes[..., 3:5] - boxes[..., 1:3]) / STRIDE)[valid]
    offset = (centre - centre.floor())[valid]
    regression = (size_weight * F.l1_loss(at[:, num_classes:num_classes + 2], sides, reduction="sum")
                  + F.l1_loss(at[:, num_classes + 2:], offset, reduction="sum")) / n_objects
    return focal + regression


@torch.no_grad()
def decode(outputs: torch.Tensor, top: int = 10) -> list[torch.Tensor]:
    """Detections per image from :class:`DetectionNet`'s outputs: a ``(M, 6)`` tensor per image of
    ``(class, score, x0, y0, x1, y1)`` in pixels, best first.

    CenterNet needs no non-maximum suppression: a cell is a detection when its heatmap value is the maximum of its
    3x3 neighbourhood (one max-pool), and the ``top`` highest such peaks per image are kept.
    """
    outputs = outputs.float()
    num_classes = outputs.shape[1] - 4
    heat = torch.sigmoid(outputs[:, :num_classes])
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    n, _, h, w = heat.shape
    scores, flat = peaks.reshape(n, -1).topk(min(top, num_classes * h * w), dim=1)
    classes, cell = flat // (h * w), flat % (h * w)
    y, x = cell // w, cell % w
    result = []
    for i in range(n):
        at = outputs[i, num_classes:, y[i], x[i]]  # (4, top): width, height, offset x, offset y
        cx, cy = (x[i] + at[2]) * STRIDE, (y[i] + at[3]) * STRIDE
        half_w, half_h = at[0].clamp(min=0) * STRIDE / 2, at[1].clamp(min=0) * STRIDE / 2
        result.append(torch.stack([classes[i].float(), scores[i], cx - half_w, cy - half_h, cx + half_w,
                                   cy + half_h], dim=1))
    return result


# ------------------------------------------------------------------------------------------------------------------
# Metrics.

def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean intersection over union of predicted and true class maps, over the classes present in either.

    For each class c, over all pixels of all images: ``IoU_c = |pred = c and target = c| / |pred = c or target = c|``.
    The mean is over the classes whose union is not empty (a class absent from both tells nothing), the background
    included, as PASCAL VOC and Cityscapes count it. ``num_classes`` counts every class of the maps (background
    too). Returns NaN when both maps are empty of every class (which cannot happen for non-empty maps).

    >>> mean_iou(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]), 2)  # (1/2 + 2/3) / 2
    0.5833333333333333
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}; pass class maps (argmax of the scores), not scores.")
    return float(iou_per_class(pred, target, num_classes).nanmean())


def iou_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IoU of each class ``(num_classes,)`` over all pixels; NaN for a class in neither map."""
    if pred.dtype.is_floating_point or target.dtype.is_floating_point:
        raise ValueError("pred and target must be integer class maps; take scores.argmax(1) first.")
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} holds classes outside 0..{num_classes - 1}; is num_classes={num_classes} "
                             f"right (background included)?")
    pairs = torch.bincount(target.reshape(-1).long() * num_classes + pred.reshape(-1).long(),
                           minlength=num_classes ** 2).reshape(num_classes, num_classes).double()
    intersection = pairs.diag()
    union = pairs.sum(0) + pairs.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, math.nan))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (M, 4) with every box of ``b`` (K, 4), boxes as ``(x0, y0, x1, y1)``: (M, K)."""
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (high - low).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return intersection / (area_a[:, None] + area_b[None] - intersection).clamp(min=1e-9)


def average_precision(detections, ground_truth, num_classes: int, iou: float = 0.5) -> float:
    """Mean over classes of the average precision at IoU ``iou`` (PASCAL VOC, Everingham et al., IJCV 2010).

    ``detections``: one ``(M, 6)`` tensor per image, rows ``(class, score, x0, y0, x1, y1)``. ``ground_truth``:
    one ``(K, 5)`` tensor per image, rows ``(class, x0, y0, x1, y1)`` (class -1 rows are ignored), or the padded
    ``(N, K, 5)`` tensor of :class:`DenseData`. For each class, its detections over all images are taken in order
    of score; each is a true positive if it overlaps a not yet matched true box of its class in its image with
    IoU >= ``iou`` (the best such box), else a false positive -- a second detection of an object already found is a
    false positive. Precision and recall after each detection trace a curve; AP is the area under its envelope,
    p_interp(r) = max over r' >= r of p(r'), summed over every recall step (VOC 2010's all-point interpolation,
    not VOC 2007's 11 points). Classes with no true box are left out of the mean; NaN if no class has one.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"detections and ground_truth must have one entry per image, got {len(detections)} and "
                         f"{len(ground_truth)}.")
    precisions = []
    for c in range(num_classes):
        truths = [g[g[:, 0] == c, 1:5] for g in ground_truth]
        n_true = sum(len(t) for t in truths)
        if n_true == 0:
            continue
        found = [torch.zeros(len(t), dtype=torch.bool) for t in truths]
        scored = [(float(d[1]), i, d[2:6]) for i, dets in enumerate(detections) for d in dets if int(d[0]) == c]
        scored.sort(key=lambda item: -item[0])
        hits = [_match_one(box, truths[i], found[i], iou) for _, i, box in scored]
        precisions.append(_area_under_envelope(hits, n_true))
    return float(sum(precisions) / len(precisions)) if precisions else math.nan


def match_detections(boxes: torch.Tensor, scores: torch.Tensor, truths: torch.Tensor, iou: float = 0.5) -> list[bool]:
    """Which detections of one class in one image are true positives, in order of score (highest first).

    ``boxes`` (M, 4) and ``scores`` (M,) are the detections, ``truths`` (K, 4) the true boxes, all as
    ``(x0, y0, x1, y1)``. The matching of PASCAL VOC (Everingham et al., IJCV 2010) is greedy: take the detections
    from the highest score down; each matches the true box it overlaps most among those not matched yet, and is a
    true positive if that IoU is at least ``iou``, else a false positive. A true box is matched once, so a second
    detection of an object already found is a false positive: a detector is not paid twice for one object.
    :func:`average_precision` does the same over all images at once (their detections sorted together).
    """
    found = torch.zeros(len(truths), dtype=torch.bool)
    return [_match_one(boxes[i], truths, found, iou) for i in torch.argsort(scores, descending=True, stable=True)]


def _match_one(box: torch.Tensor, truths: torch.Tensor, found: torch.Tensor, iou: float) -> bool:
    """Match ``box`` to the most overlapping true box not ``found`` yet; mark it found if the IoU is >= ``iou``."""
    if len(truths) == 0:
        return False
    overlaps = box_iou(box[None].float(), truths.float())[0].masked_fill(found, -1.0)
    best = int(overlaps.argmax())
    if overlaps[best] >= iou:
        found[best] = True
        return True
    return False


def _area_under_envelope(hits: list[bool], n_true: int) -> float:
    if not hits:
        return 0.0
    tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    precision = tp / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    recall = tp / n_true
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])  # max of p over r' >= r
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * envelope).sum())


# ------------------------------------------------------------------------------------------------------------------
# Pictures.

MASK_COLOURS = ("#000000", "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00")  # background, class 1..5
HUE_COLOURS = ("#000000", "#e41a1c", "#ffd700", "#2ca02c", "#1f4fe0", "#e020e0")  # for classes that are colours


def show_scenes(images, masks, boxes, classes, *, title: str | None = None, rows=("image", "mask")):
    """Images with their boxes drawn on, and below each its mask (background black, one colour per class)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.3), squeeze=False)
    palette = HUE_COLOURS if list(classes) == list(COLOURS) else MASK_COLOURS  # colour classes in their colour
    cmap = ListedColormap(palette[:len(classes) + 1])
    for i in range(n):
        axes[0, i].imshow(images[i].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        for box in boxes[i]:
            if box[0] >= 0:
                c, x0, y0, x1, y1 = box.tolist()
                axes[0, i].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, linewidth=1.2,
                                               edgecolor=palette[int(c) + 1]))
        axes[1, i].imshow(masks[i].cpu().numpy(), cmap=cmap, vmin=0, vmax=len(classes), interpolation="nearest")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel(rows[0])
    axes[1, 0].set_ylabel(rows[1])
    legend = [Patch(color=palette[k + 1], label=name) for k, name in enumerate(classes)]
    fig.legend(handles=legend, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
