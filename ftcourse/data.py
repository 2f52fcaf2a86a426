"""Image datasets as tensors, and augmentation as batched tensor operations.

Small image datasets fit in memory many times over: 50,000 images of 32x32x3 bytes are 150 MB. So instead of a
``DataLoader`` that decodes and transforms one image at a time on the CPU, the course keeps a whole dataset as one
``uint8`` tensor on the training device (:class:`ImageData`) and augments a whole batch with a few tensor
operations (:func:`augment`). This is most of the speed-up of fast training code such as Keller Jordan's
cifar10-airbench.

A :class:`Task` is what the course trains on: a training set, a validation set to choose on, a held-out test set to
report on, the class names, and one line that says what the labels mean.
"""

from __future__ import annotations

import hashlib
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
    def targets(self) -> torch.Tensor:
        """What training aims at, one per image: here the labels. (:class:`ftcourse.train.Examples` holds masks or
        boxes there; the training loop reads ``targets`` from both.)"""
        return self.labels

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

    def fingerprint(self) -> str:
        """A sha256 of the images (values, dtype, shape), the labels and the class names: equal data, equal prints."""
        digest = hashlib.sha256(repr(self.classes).encode())
        for tensor in (self.images, self.labels):
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def show(self, n: int = 32, ncols: int = 8, title: str | None = None):
        """A grid of the first ``n`` images with their class names. Returns the matplotlib figure."""
        from .plots import show_images

        return show_images(self.images[:n], [self.classes[int(i)] for i in self.labels[:n]], ncols=ncols,
                           title=title)


@dataclass
class Task:
    """A supervised task: ``train``, ``val`` and ``test`` :class:`ImageData` sharing one set of classes.

    The three splits have three jobs (the course's fair-comparison protocol):

    - ``train`` is what a model learns from;
    - ``val`` (validation) is what you *choose* on: a learning rate, a number of steps, a method, a source;
    - ``test`` gives the final number, once, for what was chosen. A choice made on ``test`` makes ``test`` part of
      the training, and its number is then too optimistic.

    A task may carry other validation sets, by name, in ``also_val``: a tuning measures them at every check next to
    ``val`` and never chooses on them. ``task.choosing_on(name)`` is the same task choosing on one of them instead
    (``val_name`` says what ``val`` is called). Training does not look at validation, so both are the same training
    runs, and the course's cache trains them once (lesson 04b asks what a scarce validation set changes this way).
    """

    name: str
    train: ImageData
    val: ImageData = None  # required: the default is only there so that a missing split gets a clear error
    test: ImageData = None
    description: str = ""
    also_val: dict = field(default_factory=dict)  # name -> ImageData: measured, never chosen on
    val_name: str = "val"

    def __post_init__(self):
        for split in ("train", "val", "test"):
            if not isinstance(getattr(self, split), ImageData):
                raise TypeError(f"Task {self.name!r}: {split} must be an ImageData, got "
                                f"{type(getattr(self, split)).__name__}. A Task is Task(name, train, val, test); "
                                f"to carve a validation split out of the training data use Task.split_val.")
        if not (self.train.classes == self.val.classes == self.test.classes):
            raise ValueError(f"Task {self.name!r}: train, val and test must share one list of classes, got "
                             f"{self.train.classes}, {self.val.classes} and {self.test.classes}.")
        for name, other in self.also_val.items():
            if not isinstance(other, ImageData) or other.classes != self.train.classes:
                raise ValueError(f"Task {self.name!r}: also_val[{name!r}] must be an ImageData with the task's "
                                 f"classes {self.train.classes}.")
        if self.val_name in self.also_val:
            raise ValueError(f"Task {self.name!r}: val is called {self.val_name!r}, and so is a set of also_val; "
                             f"give them different names.")

    @classmethod
    def split_val(cls, name: str, train: ImageData, test: ImageData, description: str = "", *,
                  val_fraction: float = 0.2, seed: int = 0) -> Task:
        """A Task from data that came with only train and test: ``val_fraction`` of each class of ``train``
        (a seeded draw) becomes ``val``."""
        train_idx, val_idx = _stratified(train.labels, len(train.classes), val_fraction, seed, "val_fraction")
        return cls(name, train.subset(train_idx), train.subset(val_idx), test, description)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def __repr__(self) -> str:
        return (f"Task({self.name!r}: {self.num_classes} classes, {len(self.train)} train / {len(self.val)} val / "
                f"{len(self.test)} test; {self.description})")

    def to(self, device) -> Task:
        return Task(self.name, self.train.to(device), self.val.to(device), self.test.to(device), self.description,
                    {name: other.to(device) for name, other in self.also_val.items()}, self.val_name)

    def choosing_on(self, name: str) -> Task:
        """The same task choosing on its validation set ``name`` (one of ``also_val``); ``val`` joins ``also_val``.

        >>> from ftcourse import lab
        >>> task = lab.target("related", 5, scarce_val=True)
        >>> task.val_name, len(task.val), task.choosing_on("scarce").val_name, len(task.choosing_on("scarce").val)
        ('generous', 250, 'scarce', 25)
        """
        if name not in self.also_val:
            raise ValueError(f"Task {self.name!r} has no validation set {name!r}: it chooses on {self.val_name!r} "
                             f"and also measures {sorted(self.also_val) or 'nothing else'}.")
        others = {other: data for other, data in self.also_val.items() if other != name}
        return Task(self.name, self.train, self.also_val[name], self.test, self.description,
                    {**others, self.val_name: self.val}, name)

    def per_class(self, n: int, seed: int = 0) -> Task:
        """The same task with only ``n`` training images per class (a seeded draw), and the whole val and test sets.

        Real datasets come with all their labels; this makes the few-shot targets the course compares methods on.
        """
        return Task(self.name, self.train.per_class(n, seed=seed), self.val, self.test, self.description,
                    dict(self.also_val), self.val_name)

    def fingerprint(self) -> str:
        """A sha256 of the name and of every image, label and class name of the three splits.

        Cached runs (see :mod:`ftcourse.protocol`) are named by it, so that results of one task are
        never served for another.
        """
        parts = [self.name] + [split.fingerprint() for split in (self.train, self.val, self.test)]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()

    def training_fingerprint(self) -> str:
        """A sha256 of the name, the training set and the test set: everything a training run and its test number
        depend on. Validation is not in it: the cache of runs records a run's validation per validation set
        (:mod:`ftcourse.protocol`), so choosing on another set reuses the same runs."""
        parts = [self.name] + [split.fingerprint() for split in (self.train, self.test)]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()

    def show(self, n: int = 32, ncols: int = 8):
        return self.train.show(n, ncols, title=f"{self.name}: {self.description}")


def check_images(images, labels=None, *, name: str = "data", num_classes: int | None = None) -> None:
    """Raise an error that says what is wrong with ``(images, labels)`` and how to fix it.

    Images are ``(N, C, H, W)``, either ``uint8`` in [0, 255] or float in [0, 1] and finite; labels (when given) are
    ``int64`` class indices, one per image (see :func:`check_labels`).
    """
    if not isinstance(images, torch.Tensor) or (labels is not None and not isinstance(labels, torch.Tensor)):
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
    if images.is_floating_point():
        # One pass over the pixels, only for float images (the course's own data are uint8).
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name}: the images contain NaN or infinite pixel values. Find where they come from "
                             f"(a division by zero in preprocessing?) and repair or drop those images.")
        low, high = (float(v) for v in torch.aminmax(images))
        if high > 1.0 + 1e-3 or low < -1e-3:
            hint = (" They look like 0..255 values: divide by 255 (images / 255) or convert them to uint8."
                    if high > 1.5 else "")
            raise ValueError(f"{name}: float images must lie in [0, 1] (the models normalise them themselves), "
                             f"but these range from {low:.3g} to {high:.3g}.{hint}")
    if labels is None:
        return
    check_labels(labels, name=name, num_classes=num_classes)
    if len(labels) != len(images):
        raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels; pass exactly one label per image.")


def check_labels(labels, *, name: str = "data", num_classes: int | None = None) -> None:
    """Raise an error unless ``labels`` is a 1-D ``int64`` tensor of class indices 0 .. ``num_classes`` - 1."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: labels must be a torch tensor, got {type(labels).__name__}. "
                        f"Convert with torch.as_tensor(labels).")
    if labels.ndim != 1:
        raise ValueError(f"{name}: labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}. "
                         f"One-hot labels can be turned into indices with labels.argmax(1).")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}. "
                         f"Use labels.long().")
    if labels.dtype != torch.long:
        raise ValueError(f"{name}: labels must be int64 (torch.long), the type cross-entropy takes, got "
                         f"{labels.dtype}. Use labels.long().")
    if len(labels) == 0:
        return
    low, high = (int(v) for v in torch.aminmax(labels))
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


# ------------------------------------------------------------------------------------------------------------------
# Real data: the bundled handwritten digits (offline), torchvision's datasets and a folder of your own images.

def _to_uint8_rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (N, C, H, W) in [0, 1] -> uint8 RGB (N, 3, size, size), resized with antialiasing."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] != (size, size):
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                                 align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _stratified(labels, num_classes: int, fraction: float, seed: int, what: str):
    """Indices ``(kept, held_out)``: ``fraction`` of every class (at least one image when the class has two or
    more) is held out, after a seeded shuffle."""
    if not 0 < fraction < 1:
        raise ValueError(f"{what} must lie strictly between 0 and 1, got {fraction}.")
    g = torch.Generator().manual_seed(seed)
    kept, held_out = [], []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g).to(members.device)]
        n_held = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        held_out.append(members[:n_held])
        kept.append(members[n_held:])
    return torch.cat(kept), torch.cat(held_out)


def _split(images, labels, classes, *, test_fraction: float, val_fraction: float, seed: int, name: str,
           description: str) -> Task:
    """A stratified three-way split: ``test_fraction`` of every class goes to the test set, then ``val_fraction`` of
    what is left to the validation set; the rest is for training."""
    data = ImageData(images, labels, list(classes))
    rest, test_idx = _stratified(labels, len(classes), test_fraction, seed, "test_fraction")
    return Task.split_val(name, data.subset(rest), data.subset(test_idx), description, val_fraction=val_fraction,
                          seed=seed + 1)


def digits(part: str = "target", *, size: int = 32, test_fraction: float = 0.3, val_fraction: float = 0.2,
           seed: int = 0, device=None) -> Task:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans; no download), as 32x32 RGB.

    Split by class as in Yosinski et al. 2014: ``part="source"`` holds the digits 0-4, ``part="target"`` the
    digits 5-9 (relabelled 0-4 with names "5".."9"), so a network pretrained on one half can be transferred to the
    other. ``part="all"`` keeps all ten. ``test_fraction`` of each class is the test set, then ``val_fraction`` of
    the rest the validation set.
    """
    from sklearn.datasets import load_digits

    parts = {"source": range(0, 5), "target": range(5, 10), "all": range(0, 10)}
    if part not in parts:
        raise ValueError(f"part must be one of {list(parts)}, got {part!r}.")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # pixel values are 0..16
    labels = torch.tensor(bunch.target, dtype=torch.long)
    keep = torch.isin(labels, torch.tensor(list(parts[part])))
    images, labels = images[keep], labels[keep] - parts[part].start
    task = _split(_to_uint8_rgb(images, size), labels, [str(d) for d in parts[part]], test_fraction=test_fraction,
                  val_fraction=val_fraction, seed=seed, name=f"digits-{part}", description=f"handwritten digits {parts[part].start}-"
                                                                 f"{parts[part].stop - 1} (scikit-learn)")
    return task.to(device) if device is not None else task


def from_dataset(dataset, *, size: int = 32, limit: int | None = None, classes=None) -> ImageData:
    """Any dataset of ``(PIL image or tensor, int label)`` pairs (torchvision's, for instance) as an ImageData.

    Every image is decoded once, converted to RGB and resized to ``size`` x ``size``; from then on training reads
    a tensor instead of decoding files.
    """
    from torchvision.transforms.functional import pil_to_tensor

    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("The dataset is empty: there is nothing to convert. Check its folder or split.")
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        image, label = dataset[i]
        if not isinstance(image, torch.Tensor):
            image = pil_to_tensor(image.convert("RGB"))
        image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        images[i] = _to_uint8_rgb(image[None], size)[0]
        labels[i] = int(label)
    names = classes or getattr(dataset, "classes", None) or [str(c) for c in range(int(labels.max()) + 1)]
    return ImageData(images, labels, [str(c) for c in names])


# name -> (how its train and test splits are asked for)
TORCHVISION_SPLITS = {
    "CIFAR10": ({"train": True}, {"train": False}),
    "CIFAR100": ({"train": True}, {"train": False}),
    "FashionMNIST": ({"train": True}, {"train": False}),
    "MNIST": ({"train": True}, {"train": False}),
    "SVHN": ({"split": "train"}, {"split": "test"}),
    "STL10": ({"split": "train"}, {"split": "test"}),
    "Flowers102": ({"split": "train"}, {"split": "test"}),
    "OxfordIIITPet": ({"split": "trainval"}, {"split": "test"}),
    "DTD": ({"split": "train"}, {"split": "test"}),
    "EuroSAT": None,  # one split only: divided here
}


def torchvision_dataset(name: str, root="data", *, download: bool = True, size: int = 32,
                        train_limit: int | None = None, test_limit: int | None = None, val_fraction: float = 0.1,
                        seed: int = 0) -> Task:
    """A torchvision dataset (``"CIFAR10"``, ``"Flowers102"``, ``"OxfordIIITPet"``...) as a :class:`Task`.

    Downloads into ``root`` the first time when ``download=True`` (this needs the network: Colab has it); offline,
    put the dataset's files in ``root`` yourself or use :func:`digits` or :func:`image_folder`. A download that
    stalls (no data for ``ftcourse.downloads.TIMEOUT`` seconds) stops with a message instead of hanging, and files
    that are damaged (an interrupted download) are named, so that you know what to delete. ``val_fraction`` of
    each class of the training split (a draw seeded by ``seed``) becomes the validation set.
    """
    import tarfile
    import urllib.error
    import zipfile
    from pathlib import Path

    import torchvision

    from .downloads import is_timeout, time_limit

    if name not in TORCHVISION_SPLITS:
        raise ValueError(f"Unknown dataset {name!r}; supported: {sorted(TORCHVISION_SPLITS)}. For your own images "
                         f"use ftcourse.data.image_folder(path).")
    cls = getattr(torchvision.datasets, name)
    splits = TORCHVISION_SPLITS[name]
    files = Path(root) / {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python", "STL10": "stl10_binary",
                          "SVHN": "*_32x32.mat", "Flowers102": "flowers-102", "OxfordIIITPet": "oxford-iiit-pet",
                          "DTD": "dtd", "EuroSAT": "eurosat"}.get(name, name)  # where torchvision keeps them
    offline = (f"copy its files into {str(root)!r} by hand. Offline alternatives: ftcourse.data.digits() (bundled) "
               f"or ftcourse.data.image_folder(path)")
    with time_limit(f"torchvision's {name} into {str(root)!r}", fix=offline):
        try:
            parts = [cls(root, download=download, **split) for split in (splits or [{}])]
        except (RuntimeError, OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile) as error:
            if is_timeout(error):
                raise  # time_limit says that the download stalled
            if isinstance(error, (urllib.error.URLError, ConnectionError)):  # the network, not the files
                how = f"The download failed: are you online? In Colab you are; offline, {offline}"
            elif download:  # downloaded (or found) but unreadable: "Dataset not found or corrupted", a broken archive
                how = f"Its files are damaged (an interrupted download?): delete {files} and run this again"
            else:
                how = (f"Its files are not in {str(root)!r}, or they are damaged: pass download=True (needs the "
                       f"network), or delete {files} if it is there and {offline}")
            raise RuntimeError(f"Could not load torchvision's {name} from {str(root)!r}: {error}. {how}.") from error
    if splits is None:
        data = from_dataset(parts[0], size=size)
        return _split(data.images, data.labels, data.classes, test_fraction=0.2, val_fraction=val_fraction,
                      seed=seed, name=name, description=f"torchvision's {name}")
    train, test = parts
    classes = getattr(train, "classes", None)
    return Task.split_val(name, from_dataset(train, size=size, limit=train_limit, classes=classes),
                          from_dataset(test, size=size, limit=test_limit, classes=classes), f"torchvision's {name}",
                          val_fraction=val_fraction, seed=seed)


def image_folder(path, *, size: int = 32, test_fraction: float = 0.2, val_fraction: float = 0.2,
                 seed: int = 0) -> Task:
    """Your own images: one sub-folder per class (``path/cats/*.jpg``, ``path/dogs/*.jpg``), as a :class:`Task`.

    Images are resized to ``size`` x ``size`` and split per class: ``test_fraction`` of each class is the test
    set, then ``val_fraction`` of the rest the validation set.
    """
    from pathlib import Path

    import torchvision

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder. image_folder expects one sub-folder per class, e.g. "
                                f"{path}/cats/1.jpg and {path}/dogs/1.jpg.")
    try:
        dataset = torchvision.datasets.ImageFolder(str(path))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"No images found under {path}: {error}. Put each class's images (.jpg, .png...) "
                                f"in a sub-folder named after the class.") from error
    if len(dataset.classes) < 2:
        raise ValueError(f"{path} has only the class folder(s) {dataset.classes}; a classifier needs two or more.")
    data = from_dataset(dataset, size=size)
    return _split(data.images, data.labels, data.classes, test_fraction=test_fraction, val_fraction=val_fraction,
                  seed=seed,
                  name=path.name, description=f"images from {path}")
