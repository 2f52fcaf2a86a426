"""Models with named stages.

Transfer learning talks about *parts* of a network: "freeze the stem", "a lower learning rate for layer1", "re-use
everything but the head". So every model in the course is a :class:`StagedNet`: an input normalisation, then named
stages ``stem, layer1, ..., layerN`` that turn an image into a feature vector, then ``head``, one linear layer from
features to class scores::

    image --normalise--> stem --> layer1 --> ... --> layerN --avg pool--> features --head--> logits

- :func:`resnet` builds the course's small ResNet for 32x32 images (He et al. 2016, "Deep residual learning").
- :func:`from_torchvision` wraps torchvision's ImageNet ResNets in the same shape, weights passed through.
- :func:`replace_head` swaps the head for a new task's classes: the step that starts every fine-tuning.

Models take images as ``uint8`` in [0, 255] or floats in [0, 1], shape (N, 3, H, W), and normalise them
themselves, so data never has to remember which statistics a model was trained with.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAB_MEAN = (0.5, 0.5, 0.5)
LAB_STD = (0.25, 0.25, 0.25)


class StagedNet(nn.Module):
    """A classifier made of named stages: ``stem, layer1..layerN`` (the feature extractor) and ``head``."""

    def __init__(self, stem: nn.Module, layers: list[nn.Module], head: nn.Linear,
                 mean=LAB_MEAN, std=LAB_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.stem = stem
        for i, layer in enumerate(layers, start=1):
            setattr(self, f"layer{i}", layer)
        self.head = head
        self.stage_names: tuple[str, ...] = ("stem", *[f"layer{i}" for i in range(1, len(layers) + 1)], "head")
        self.config: dict = {}  # how the model was built (resnet() fills it in), so it can be rebuilt

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def in_channels(self) -> int:
        return self.mean.shape[1]

    def stage(self, name: str) -> nn.Module:
        if name not in self.stage_names:
            raise ValueError(f"This model has no stage {name!r}; its stages are {list(self.stage_names)}.")
        return getattr(self, name)

    def train(self, mode: bool = True) -> StagedNet:
        """Switch to training mode, except BatchNorm layers whose parameters are all frozen.

        A BatchNorm layer in training mode normalises with the statistics of the current batch and updates its
        running averages -- even when its weights have ``requires_grad=False``. A frozen stage must not drift, so
        BatchNorm layers with frozen parameters stay in evaluation mode and keep their running statistics.
        """
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    if not any(p.requires_grad for p in module.parameters()):
                        module.eval()
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return (x - self.mean) / self.std

    def features(self, images: torch.Tensor, upto: str | None = None) -> torch.Tensor:
        """Average-pooled activations after stage ``upto`` (default: the last stage before the head)."""
        upto = upto or self.stage_names[-2]
        if upto == "head":
            raise ValueError("features() stops before the head; call the model itself for class scores.")
        x = self.normalise(images)
        for name in self.stage_names[:-1]:
            x = getattr(self, name)(x)
            if name == upto:
                return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        raise ValueError(f"This model has no stage {upto!r}; its stages are {list(self.stage_names)}.")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: out = relu(F(x) + x) (He et al. 2016).

    The shortcut lets the block learn a correction F to the identity, which keeps deep networks trainable. When the
    block changes the resolution or the width, the shortcut is a 1x1 convolution so that the shapes match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet(num_classes: int = 10, width: int = 16, blocks: tuple[int, ...] = (1, 1, 1, 1),
           stem_stride: int = 1) -> StagedNet:
    """The course's ResNet for 32x32 images.

    ``width`` is the number of channels of the stem; stage i has ``width * 2**(i-1)`` channels and halves the
    resolution (except layer1). ``blocks`` gives the number of residual blocks per stage, so its length is the number
    of stages. ``stem_stride=2`` halves the resolution in the stem, which makes the network about 3x cheaper (the
    course's lab model uses it: its 32x32 shapes need no more than 16x16 feature maps). ``resnet(width=64)`` is a
    ResNet-10, the size of the fast CIFAR-10 ResNets.

    >>> model = resnet(num_classes=5)
    >>> model.stage_names
    ('stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head')
    >>> model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
    torch.Size([2, 5])
    """
    if num_classes < 1 or width < 1 or not blocks or min(blocks) < 1:
        raise ValueError(f"resnet needs num_classes >= 1, width >= 1 and at least one block per stage; got "
                         f"num_classes={num_classes}, width={width}, blocks={blocks}.")
    stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True))
    layers, channels = [], width
    for i, n_blocks in enumerate(blocks):
        out = width * 2**i
        stage = [BasicBlock(channels, out, stride=1 if i == 0 else 2)]
        stage += [BasicBlock(out, out) for _ in range(n_blocks - 1)]
        layers.append(nn.Sequential(*stage))
        channels = out
    model = StagedNet(stem, layers, nn.Linear(channels, num_classes))
    model.config = {"num_classes": num_classes, "width": width, "blocks": tuple(blocks), "stem_stride": stem_stride}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def from_torchvision(tv_resnet: nn.Module) -> StagedNet:
    """Wrap a torchvision ResNet (``torchvision.models.resnet18(...)`` etc.) as a :class:`StagedNet`.

    The modules are reused, not copied, so pretrained weights pass straight through. The stem is torchvision's
    ``conv1, bn1, relu, maxpool``; ``layer1..layer4`` are its stages; ``head`` is its ``fc``. Inputs are normalised
    with ImageNet's statistics, as those weights expect.
    """
    needed = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")
    missing = [name for name in needed if not hasattr(tv_resnet, name)]
    if missing:
        raise TypeError(f"from_torchvision expects a torchvision ResNet (resnet18, resnet34, resnet50...); "
                        f"this {type(tv_resnet).__name__} has no {missing}.")
    stem = nn.Sequential(tv_resnet.conv1, tv_resnet.bn1, tv_resnet.relu, tv_resnet.maxpool)
    layers = [tv_resnet.layer1, tv_resnet.layer2, tv_resnet.layer3, tv_resnet.layer4]
    return StagedNet(stem, layers, tv_resnet.fc, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def copy_model(model: StagedNet) -> StagedNet:
    """An independent copy (weights, buffers, frozen flags): fine-tune the copy, keep the original."""
    return copy.deepcopy(model)


def replace_head(model: StagedNet, num_classes: int) -> StagedNet:
    """Give ``model`` a new, randomly initialised head with ``num_classes`` outputs (in place; returns the model).

    Fine-tuning keeps the feature extractor and starts the classifier afresh: the source task's classes mean nothing
    for the target task.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (a classifier needs two classes), got {num_classes!r}.")
    old = model.head
    model.head = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def stage_parameter_counts(model: StagedNet) -> dict[str, dict[str, int]]:
    """For each stage: how many parameters are trainable and how many frozen."""
    counts = {}
    for name in model.stage_names:
        params = list(model.stage(name).parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        counts[name] = {"trainable": trainable, "frozen": sum(p.numel() for p in params) - trainable}
    return counts


# ------------------------------------------------------------------------------------------------------------------
# Pretrained models.

PRETRAINED = {
    "lab": "the course ResNet pretrained on the lab's source task (shipped with the package; see ftcourse.pretrain)",
    "lab-early": "the same, pretrained for 1 epoch instead of 10 (shipped)",
    "lab-textures": "the course ResNet pretrained on the lab's background textures instead of shapes (shipped)",
    "lab-colours": "the course ResNet pretrained on the lab's hue bins: it learned colour, not shape (shipped)",
    "resnet18-imagenet": "torchvision's ResNet-18 with ImageNet weights (downloaded once, needs the network)",
}


def pretrained(name: str = "lab") -> StagedNet:
    """A pretrained model by name: ``"lab"`` and its siblings (shipped, offline; see :data:`PRETRAINED`) or
    ``"resnet18-imagenet"`` (torchvision).

    The shipped ones are loaded with ``torch.load(weights_only=True)`` -- a checkpoint can hold only tensors and plain
    values, never code -- after its sha256 is compared with the one recorded when it was made.
    """
    from .pretrain import RECIPES  # the shipped checkpoints: one per recipe

    if name in RECIPES:
        return _load_lab_checkpoint(name)
    if name == "resnet18-imagenet":
        return _torchvision_resnet18()
    raise ValueError(f"Unknown pretrained model {name!r}; available: " +
                     "; ".join(f"{k!r}: {v}" for k, v in PRETRAINED.items()))


def _load_lab_checkpoint(name: str = "lab") -> StagedNet:
    import hashlib
    import json

    from .pretrain import CHECKPOINT_DIR

    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"The course checkpoint {path} is missing. Reinstall ftcourse, or make it again "
                                f"with `ftcourse pretrain --source {name}` (about 2 minutes on a CPU).")
    expected = json.loads(path.with_suffix(".json").read_text())["sha256"]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path} is not the checkpoint that was recorded (sha256 {actual[:12]}... instead of "
                         f"{expected[:12]}...): it was changed or damaged. Reinstall ftcourse, or run "
                         f"`ftcourse pretrain --source {name}` to make it again.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = resnet(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def _torchvision_resnet18() -> StagedNet:
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        tv = torchvision.models.resnet18(weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a broken download is a RuntimeError
        raise RuntimeError(f"Could not get torchvision's ImageNet ResNet-18 weights ({error}). They are downloaded "
                           f"once from {weights.url} into torch's hub cache (TORCH_HOME, by default "
                           f"~/.cache/torch). Offline, copy that file there by hand, or use the course's own "
                           f"checkpoint: ftcourse.models.pretrained('lab').") from error
    return from_torchvision(tv).eval()
