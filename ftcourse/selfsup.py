"""Self-supervised pretraining: learning features from the lab's source images without their labels.

The course's ``lab`` checkpoint learned from labels: "this is a star". Contrastive learning asks a question that
needs none: *which two of these images are two views of the same picture?* Take a batch of N images, make two
random views of each (a crop of one part, a flip, other colours), and train the network so that the two views of an
image land close together in feature space and far from the views of the other 2N - 2 images. What survives every
view of an image -- here, its shape -- is what the features must keep; what the views change -- position, size,
colour -- is what they learn to ignore.

This module follows SimCLR (Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of
visual representations", ICML 2020), in four parts:

1. :func:`two_views`: random views of a batch (:func:`random_resized_crop`, :func:`horizontal_flip`,
   :func:`colour_distortion`), batched tensor ops on the batch's device like :func:`ftcourse.data.augment`.
2. The encoder f: the course ResNet (:func:`ftcourse.models.resnet`, the ``lab`` architecture), whose
   average-pooled features h = f(x) are what we keep.
3. :func:`projection_head` g: a small MLP, z = g(h), on which the loss is computed, thrown away after pretraining.
4. :func:`nt_xent`: the contrastive loss on the z's.

:func:`pretrain_contrastive` runs a recipe (``ftcourse.pretrain.RECIPES["lab-simclr"]``) and returns a
:class:`~ftcourse.models.StagedNet` with the stages of ``lab``, so that every tool of the lessons works on it.

**Its head.** A network pretrained without labels has no classes to score. Its ``head`` is the identity on the
features (a square Linear layer with weight I and bias 0): ``model(images)`` equals ``model.features(images)``, the
representation h itself, and its ``num_classes`` is the feature width (128). It was set after training and never
saw a label; fine-tuning and probing replace it as with every source (:func:`ftcourse.models.replace_head`).
Measures that read a source head as class probabilities (LEEP, NCE) or as the source classifier (forgetting,
:func:`ftcourse.measure.source_accuracy`) mean nothing for this checkpoint.

What the paper found, and this recipe keeps: the composition of augmentations matters most, and random crop with
colour distortion was the one pair that stood out (their Figure 5); a nonlinear projection head gives better
features h than a linear one or none, and h is better than z for downstream tasks (their section 4.2); contrastive
learning gains from more training and larger batches than supervised learning. Where the lab's recipe departs
from the paper, and why: plain SGD with momentum and a cosine schedule at batches of 256 images (the paper uses LARS
to train at batches up to 8192); 30 epochs (about 9 minutes on one CPU thread; the paper trains for 100 epochs and
more); crops of at least 25% of the image (a crop of 8%, the low end of the paper's range, is 9 by 9 pixels here and
may hold a sliver of the lab's one shape or none of it);
colour strength 1 (the paper's ImageNet value; at its CIFAR-10 value, 0.5, the lab's random hues stay a shortcut:
the measurements are next to the recipe in :mod:`ftcourse.pretrain`); no Gaussian blur (as the paper on CIFAR-10).
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import lab, measure
from .env import active_profile, channels_last_for, in_notebook
from .lr import Cosine
from .models import StagedNet, resnet
from .train import steps_per_epoch


# ------------------------------------------------------------------------------------------------------------------
# 1. Two random views of every image.

def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device, generator=generator)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator | None = None, *,
                        scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """A random rectangle of every image, stretched back to the full size (bilinear): float images in [0, 1].

    The rectangle covers a fraction of the image's area drawn from ``scale`` and has an aspect ratio drawn
    (log-uniformly) from ``ratio``; it lies wholly inside the image. *What it makes the features ignore*: where the
    object is and how big it is -- and, because two crops of one image may show different parts of it, it asks the
    features of a part to predict those of the whole or of a neighbouring part. All crops are one
    ``affine_grid`` + ``grid_sample`` over the batch.
    """
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, device = len(x), x.device
    area = _uniform(n, scale[0], scale[1], generator, device)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device))
    width, height = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
    # In affine_grid's coordinates the image spans [-1, 1]; the crop's centre is chosen so that it stays inside.
    centre_x = (1 - width) * _uniform(n, -1, 1, generator, device)
    centre_y = (1 - height) * _uniform(n, -1, 1, generator, device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, centre_x, height, centre_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def horizontal_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Half of the images mirrored left to right. *What it makes the features ignore*: which way an object faces."""
    mirrored = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(mirrored.view(-1, 1, 1, 1), images.flip(3), images)


def grey(images: torch.Tensor) -> torch.Tensor:
    """The luma of float RGB images (ITU-R BT.601 weights), shape (N, 1, H, W)."""
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Turn every pixel's colour about the grey axis of the RGB cube by ``angle`` (radians, one per image).

    A rotation about the axis k = (1, 1, 1)/sqrt(3) (Rodrigues' formula) keeps each pixel's mean of R, G and B and
    its distance from grey, and moves only its hue: close to the hue shift of HSV, as one 3x3 matrix per image.
    """
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    eye = torch.eye(3, device=images.device)
    ones = torch.ones(3, 3, device=images.device) / 3  # k k^T
    cross = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=images.device) / math.sqrt(3)  # [k]x
    rotation = cos * eye + (1 - cos) * ones + sin * cross  # (N, 3, 3)
    return torch.einsum("ncd,ndhw->nchw", rotation, images)


def colour_distortion(images: torch.Tensor, generator: torch.Generator | None = None, *, strength: float = 1.0,
                      p_jitter: float = 0.8, p_grey: float = 0.2) -> torch.Tensor:
    """SimCLR's colour distortion on float images in [0, 1]: colour jitter (with probability ``p_jitter``), then
    conversion to grey (with probability ``p_grey``).

    The jitter changes brightness, contrast and saturation by factors drawn from [max(0, 1 - 0.8 s), 1 + 0.8 s] and
    turns the hue by up to 0.2 s of a full turn, s = ``strength`` (the paper's parametrisation; it used s = 1 for
    ImageNet and s = 0.5 for CIFAR-10), in this fixed order. *What it makes the features ignore*: colour. Without
    it two crops of one image share their colour histogram, and a network can tell which views belong together by
    colour alone, a shortcut that learns nothing about shape; the paper found crop + colour distortion the
    strongest pair of augmentations.
    """
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, device = len(x), x.device
    spread = 0.8 * strength

    def factor():  # never below 0, as in torchvision's ColorJitter: a strength above 1.25 would invert images
        return _uniform(n, max(0.0, 1 - spread), 1 + spread, generator, device).view(-1, 1, 1, 1)

    jittered = (x * factor()).clamp(0, 1)  # brightness
    mean = grey(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = (mean + factor() * (jittered - mean)).clamp(0, 1)  # contrast: away from or towards the mean grey
    luma = grey(jittered)
    jittered = (luma + factor() * (jittered - luma)).clamp(0, 1)  # saturation: away from or towards grey
    turn = _uniform(n, -0.2 * strength, 0.2 * strength, generator, device)
    jittered = rotate_hue(jittered, 2 * math.pi * turn).clamp(0, 1)  # hue
    x = torch.where((torch.rand(n, device=device, generator=generator) < p_jitter).view(-1, 1, 1, 1), jittered, x)
    to_grey = (torch.rand(n, device=device, generator=generator) < p_grey).view(-1, 1, 1, 1)
    return torch.where(to_grey, grey(x).expand(-1, 3, -1, -1), x)


def view(images: torch.Tensor, generator: torch.Generator | None = None, *, crop_scale=(0.25, 1.0),
         colour_strength: float = 1.0) -> torch.Tensor:
    """One random view of every image: crop and resize, flip, colour distortion. Float images in [0, 1]. The
    defaults are the ``lab-simclr`` recipe's (see the module's docstring for why they differ from the paper's)."""
    x = random_resized_crop(images, generator, scale=crop_scale)
    x = horizontal_flip(x, generator)
    return colour_distortion(x, generator, strength=colour_strength)


def two_views(images: torch.Tensor, generator: torch.Generator | None = None, **settings):
    """Two independent random views of every image of a batch (``images``: (N, 3, H, W), uint8 or float in
    [0, 1]); ``settings`` go to :func:`view`. The same generator state gives the same views."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"two_views needs a batch of RGB images (N, 3, H, W); got shape {tuple(images.shape)}.")
    return view(images, generator, **settings), view(images, generator, **settings)


# ------------------------------------------------------------------------------------------------------------------
# 3. The projection head, and 4. the loss.

def projection_head(features: int, out: int = 128) -> nn.Sequential:
    """g(h) = W2 relu(W1 h): an MLP with one hidden layer as wide as the features, to ``out`` dimensions.

    The loss is computed on z = g(h), not on h. The paper's explanation: the loss makes z invariant to the
    augmentations, so g can throw away what the views change (colour, orientation) while h keeps more of it; h gave
    the better downstream features. g is used in pretraining only and not saved.
    """
    return nn.Sequential(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, out))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The normalised temperature-scaled cross-entropy (NT-Xent) of SimCLR, for N pairs of views.

    ``z1[k]`` and ``z2[k]`` are the projections of two views of image k, shape (N, d) each. Together they are 2N
    vectors z_1..z_2N; with sim(u, v) = u.v / (‖u‖ ‖v‖) (cosine similarity) and temperature tau, the loss of the
    positive pair (i, j) is

        l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum over k != i of exp(sim(z_i, z_k) / tau) ),

    a cross-entropy that asks z_i to pick out its partner z_j among the other 2N - 1 vectors: the 2N - 2 views of
    the other images are the negatives. The loss is the mean of l over all 2N ordered positive pairs, (i, j) and
    (j, i). A smaller tau sharpens the softmax, so that the nearest negatives weigh more.

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(nt_xent(z, z, temperature=0.5)), 4)  # log(1 + 2 exp(-2)): partner at sim 1, negatives at 0
    0.2395
    """
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise TypeError(f"nt_xent takes two tensors of projections, got {type(z1).__name__} and {type(z2).__name__}.")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two (N, d) tensors of the same shape, the projections of the two views of "
                         f"N images; got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    n = len(z1)
    if n < 2:
        raise ValueError(f"nt_xent needs at least 2 images per batch: the negatives of each view are the views of "
                         f"the other images, and with {n} there are none. Use a larger batch_size.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number (SimCLR uses values such as 0.1 or 0.5), got "
                         f"{temperature!r}.")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = (z @ z.T) / temperature
    itself = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(itself, float("-inf"))  # k != i: a view is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


# ------------------------------------------------------------------------------------------------------------------
# Pretraining.

RECIPE_KEYS = {"model": ("num_classes", "width", "blocks", "stem_stride"), "data": ("n_per_class", "test_per_class",
               "seed"), "fit": ("epochs", "lr", "batch_size", "weight_decay", "momentum", "warmup", "seed"),
               "contrastive": ("temperature", "projection_dim", "crop_scale", "colour_strength"), "init_seed": ()}


def feature_width(model: StagedNet) -> int:
    """The length of the feature vector h that the head reads."""
    return model.head.in_features


def pretrain_contrastive(recipe: dict, device=None, progress: bool | None = None):
    """Pretrain the course ResNet on the source images with NT-Xent, without labels; returns ``(model, info)``.

    ``recipe`` has the shape of ``ftcourse.pretrain.RECIPES["lab-simclr"]``:

    - ``model``: the arguments of :func:`~ftcourse.models.resnet`; ``num_classes`` must be the feature width, for
      the identity head;
    - ``data``: which lab images (``n_per_class`` of the source task; their labels are never read in training);
    - ``fit``: ``epochs`` of SGD with Nesterov ``momentum`` and ``weight_decay``, at ``lr`` with a linear warm-up
      over the first ``warmup`` fraction of the steps and then a cosine; ``batch_size`` images (twice as many
      views) per step; ``seed`` for the batch order and the views;
    - ``contrastive``: ``temperature``, ``projection_dim``, ``crop_scale`` and ``colour_strength``;
    - ``init_seed``: the initial weights. The same recipe on the same device gives the same model.

    ``info`` records ``source_probe_accuracy``: the test accuracy of a linear probe
    (:func:`ftcourse.measure.linear_probe_accuracy`) trained on the features of the labelled source training images
    after pretraining, the one place labels are used (to check, not to train, the features; chance is 1/8); the
    mean loss of each epoch (``loss_per_epoch``), the time taken and the device.
    """
    _check_recipe(recipe)
    start = time.perf_counter()
    device = torch.device(device or "cpu")
    data, fit, contrastive = recipe["data"], recipe["fit"], recipe["contrastive"]
    task = lab.target(data.get("task", "source"), data["n_per_class"], test_per_class=data["test_per_class"],
                      seed=data["seed"], device=device)
    images = task.train.images  # the labels, task.train.labels, are not read until the probe at the end
    torch.manual_seed(recipe["init_seed"])
    model = resnet(**recipe["model"]).to(device)
    width = feature_width(model)
    if recipe["model"]["num_classes"] != width:
        raise ValueError(f"The self-supervised checkpoint's head is the identity on its {width} features, so the "
                         f"recipe's model num_classes must be {width}, not {recipe['model']['num_classes']}.")
    projection = projection_head(width, contrastive["projection_dim"]).to(device)
    channels_last = channels_last_for(device)  # the memory layout fast convolutions want, as fit() uses it
    if channels_last:
        model.to(memory_format=torch.channels_last)
    body = [p for name, p in model.named_parameters() if not name.startswith("head.")]  # the head is not trained
    optimizer = torch.optim.SGD(body + list(projection.parameters()), lr=fit["lr"], momentum=fit["momentum"],
                                nesterov=True, weight_decay=fit["weight_decay"])
    schedule = Cosine(warmup=fit["warmup"])
    batch_size = fit["batch_size"]
    per_epoch = steps_per_epoch(images, batch_size)
    total = fit["epochs"] * per_epoch
    generator = torch.Generator(device=device).manual_seed(fit["seed"])
    losses = torch.zeros(total, device=device)
    bar = _progress_bar(total) if _show_progress(progress) else None
    model.train()
    projection.train()
    for step in range(total):
        if step % per_epoch == 0:  # a fresh order of the images every epoch; the last partial batch is dropped
            order = torch.randperm(len(images), device=device, generator=generator)
        batch = images[order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]]
        first, second = two_views(batch, generator, crop_scale=tuple(contrastive["crop_scale"]),
                                  colour_strength=contrastive["colour_strength"])
        views = torch.cat([first, second])  # both views in one batch: one pass, and BatchNorm sees them together
        if channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        z = projection(model.features(views))
        loss = nt_xent(z[:len(batch)], z[len(batch):], contrastive["temperature"])
        for group in optimizer.param_groups:
            group["lr"] = fit["lr"] * schedule(step, total)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        if bar is not None and (step + 1) % per_epoch == 0:  # one wait for the device per epoch, for the bar
            bar.update(per_epoch)
            bar.set_postfix(loss=f"{losses[step + 1 - per_epoch:step + 1].mean().item():.3f}")
    if bar is not None:
        bar.close()
    losses = losses.cpu()
    if not torch.isfinite(losses).all():
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        raise RuntimeError(f"Contrastive pretraining diverged: the loss became {float(losses[bad])} at step {bad} of "
                           f"{total}. Lower the recipe's fit lr (it is {fit['lr']}); the checkpoint was not written.")
    model.eval()
    with torch.no_grad():  # the head: the identity on the features, set without looking at any label
        model.head.weight.copy_(torch.eye(width, device=device))
        model.head.bias.zero_()
    probe = source_probe_accuracy(model, task)
    info = {"source_probe_accuracy": round(probe, 4),
            "loss_per_epoch": [round(float(epoch.mean()), 4) for epoch in losses.view(fit["epochs"], per_epoch)],
            "seconds": round(time.perf_counter() - start, 1), "device": str(device), "torch": torch.__version__}
    return model.cpu().eval(), info


def source_probe_accuracy(model: StagedNet, task) -> float:
    """How well a linear classifier on ``model``'s features tells ``task``'s classes apart: trained on
    ``task.train``'s features and labels, tested on ``task.test`` (:func:`ftcourse.measure.linear_probe_accuracy`).

    The usual check of self-supervised features (the paper's "linear evaluation protocol"); compare with chance,
    1 / ``task.num_classes``.
    """
    train = measure.features(model, task.train)
    test = measure.features(model, task.test)
    return measure.linear_probe_accuracy(train, task.train.labels, test, task.test.labels)


def _check_recipe(recipe) -> None:
    if not isinstance(recipe, dict):
        raise TypeError(f"recipe must be a dict like ftcourse.pretrain.RECIPES['lab-simclr'], got "
                        f"{type(recipe).__name__}.")
    for part, keys in RECIPE_KEYS.items():
        if part not in recipe:
            raise ValueError(f"The recipe has no {part!r}; a contrastive recipe needs {list(RECIPE_KEYS)} (see "
                             f"ftcourse.pretrain.RECIPES['lab-simclr']).")
        missing = [key for key in keys if key not in recipe[part]]
        if missing:
            raise ValueError(f"The recipe's {part!r} lacks {missing}; see ftcourse.pretrain.RECIPES['lab-simclr'].")
    if recipe["fit"]["batch_size"] < 2:
        raise ValueError(f"A contrastive batch needs at least 2 images (each view's negatives are the other images' "
                         f"views); the recipe's fit batch_size is {recipe['fit']['batch_size']}.")


def _show_progress(progress: bool | None) -> bool:
    if progress is None:  # as ftcourse.train.fit decides: interactive sessions outside the quick profile
        return (in_notebook() or sys.stderr.isatty()) and active_profile() != "quick"
    return progress


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", leave=False, desc="contrastive pretraining")
