"""Image datasets as tensors, and augmentation as batched tensor operations.

Small image datasets fit in memory many times over: 50,000 images of 32x32x3 bytes are 150 MB. So instead of a
``DataLoader`` that decodes and transforms one image at a time on the CPU, the course keeps a whole dataset as one
``uint8`` tensor on the training device (:class:`ImageData`) and augments a whole batch with a few tensor
operations (:func:`augment`). This is most of the speed-up of fast training code such as Keller Jordan's
cifar10-airbench.

A :class:`Task` is what the course trains on: a training set, a held-out test set, the class names, and one line
that says what the labels mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageData:
    """Images ``(N, C, H, W)`` (``uint8`` in [0, 255] or float in [0, 1]) and integer labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_images(self.images, self.labels)
        if not self.classes:
            self.classes = [str(c) for c in range(int(self.labels.max()) + 1)]

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.images.shape[1:])
        return (f"ImageData({len(self)} images {shape} {str(self.images.dtype).replace('torch.', '')} "
                f"on {self.images.device.type}, {len(self.classes)} classes)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> ImageData:
        """The same data on ``device`` (no copy when it is already there)."""
        return ImageData(self.images.to(device), self.labels.to(device), list(self.classes))

    def subset(self, indices) -> ImageData:
        indices = torch.as_tensor(indices, device=self.labels.device)
        return ImageData(self.images[indices], self.labels[indices], list(self.classes))

    def per_class(self, n: int, seed: int = 0) -> ImageData:
        """The first ``n`` images of each class after a seeded shuffle: a few-shot training set."""
        if n < 1:
            raise ValueError(f"per_class needs n >= 1 image per class, got {n}.")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).to(self.labels.device)
        labels = self.labels[order]
        picked = []
        for c in range(self.num_classes):
            members = order[labels == c]
            if len(members) < n:
                raise ValueError(f"Class {self.classes[c]!r} has only {len(members)} images; asked for {n} per "
                                 f"class. Generate a larger dataset or ask for fewer.")
            picked.append(members[:n])
        return self.subset(torch.cat(picked))

    def show(self, n: int = 32, ncols: int = 8, title: str | None = None):
        """A grid of the first ``n`` images with their class names. Returns the matplotlib figure."""
        from .plots import show_images

        return show_images(self.images[:n], [self.classes[int(i)] for i in self.labels[:n]], ncols=ncols,
                           title=title)


@dataclass
class Task:
    """A supervised task: ``train`` and held-out ``test`` :class:`ImageData` sharing one set of classes."""

    name: str
    train: ImageData
    test: ImageData
    description: str = ""

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def __repr__(self) -> str:
        return (f"Task({self.name!r}: {self.num_classes} classes, {len(self.train)} train / {len(self.test)} test; "
                f"{self.description})")

    def to(self, device) -> Task:
        return Task(self.name, self.train.to(device), self.test.to(device), self.description)

    def show(self, n: int = 32, ncols: int = 8):
        return self.train.show(n, ncols, title=f"{self.name}: {self.description}")


def check_images(images, labels, *, name: str = "data", num_classes: int | None = None) -> None:
    """Raise a ``ValueError`` that says what is wrong with ``(images, labels)`` and how to fix it."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: images and labels must be torch tensors, got {type(images).__name__} and "
                        f"{type(labels).__name__}. Convert with torch.as_tensor(...).")
    if images.ndim != 4:
        raise ValueError(f"{name}: images must have shape (N, channels, height, width), got {tuple(images.shape)}. "
                         f"A single image needs a batch dimension (images[None]); channels-last arrays "
                         f"(N, H, W, C) need .permute(0, 3, 1, 2).")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"{name}: images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}. "
                         f"Convert with images.to(torch.uint8) or images.float() / 255.")
    if len(images) == 0:
        raise ValueError(f"{name} is empty: it has no images. Check the filter or split that produced it.")
    if labels.ndim != 1:
        raise ValueError(f"{name}: labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}. "
                         f"One-hot labels can be turned into indices with labels.argmax(1).")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}. "
                         f"Use labels.long().")
    if len(labels) != len(images):
        raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels; pass exactly one label per image.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"{name}: labels must be class indices 0, 1, 2, ...; found {low}.")
    if num_classes is not None and high >= num_classes:
        raise ValueError(f"{name}: found label {high} but the model's head has only {num_classes} classes "
                         f"(0..{num_classes - 1}). Give the model a head for this task: "
                         f"ftcourse.models.replace_head(model, {high + 1}).")


def augment(images: torch.Tensor, generator: torch.Generator | None = None, *, pad: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Random crops with zero padding and random horizontal flips, for a whole batch at once.

    Each image is padded by ``pad`` pixels and a window of its original size is cut at a random offset in
    [0, 2*pad]^2, i.e. the image moves by up to ``pad`` pixels; half of the images are mirrored. All of it is a
    handful of tensor operations on the batch's device, with random numbers from ``generator``.
    """
    n, c, h, w = images.shape
    device = images.device
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device, generator=generator)
        rows = (dy + torch.arange(h, device=device).view(1, h, 1)).expand(n, h, w)
        cols = (dx + torch.arange(w, device=device).view(1, 1, w)).expand(n, h, w)
        flat = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
        images = padded.flatten(2).gather(2, flat).view(n, c, h, w)
    if flip:
        mirrored = torch.rand(n, device=device, generator=generator) < 0.5
        images = torch.where(mirrored.view(n, 1, 1, 1), images.flip(3), images)
    return images
