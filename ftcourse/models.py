"""Models with named stages.

Transfer learning talks about *parts* of a network: "freeze the stem", "a lower learning rate for layer1", "re-use
everything but the head". So every model in the course is a :class:`StagedNet`: an input normalisation, then named
stages ``stem, layer1, ..., layerN`` that turn an image into a feature vector, then ``head``, one linear layer from
features to class scores::

    image --normalise--> stem --> layer1 --> ... --> layerN --avg pool--> features --head--> logits

- :func:`resnet` builds the course's small ResNet for 32x32 images (He et al. 2016, "Deep residual learning").
- :func:`from_torchvision` wraps torchvision's ImageNet ResNets in the same shape, weights passed through.
- :func:`replace_head` swaps the head for a new task's classes: the step that starts every fine-tuning.
- :func:`pretrained` gives the course's shipped checkpoints (:data:`SHIPPED`) and torchvision's ImageNet ResNet-18;
  :func:`load_checkpoint` reads a checkpoint file you made (``ftcourse pretrain``), checked before it is used.

Models take images as ``uint8`` in [0, 255] or floats in [0, 1], shape (N, 3, H, W), and normalise them
themselves, so data never has to remember which statistics a model was trained with.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import pickle
from pathlib import Path

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
        self.checkpoint_file: Path | None = None  # the file its weights came from (pretrained(), load_checkpoint())

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


class Features(nn.Module):
    """A copy of ``net`` without its head: images in, the feature vector its head would read out
    (:meth:`StagedNet.features`). For a framework that wraps a torch module and puts a head of its own on it, such
    as Keras's ``TorchModuleWrapper`` (lesson 01). The copy keeps :class:`StagedNet`'s rule that BatchNorm layers
    whose parameters are frozen stay in evaluation mode."""

    def __init__(self, net: StagedNet):
        super().__init__()
        self.net = copy.deepcopy(net)
        self.net.head = nn.Identity()  # not used by features(); dropped so that no one trains it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


def batchnorm_statistics(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm running mean and variance in ``module``, to tell afterwards whether any moved."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()
            if name.endswith(("running_mean", "running_var"))}


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


def renormalised(model: StagedNet, mean, std) -> StagedNet:
    """A copy of ``model`` that normalises its input with ``mean`` and ``std`` (one value per channel, for pixels in
    [0, 1]) instead of the statistics it was pretrained with: what feeding a network the wrong preprocessing does.

    A pretrained network has only ever seen inputs normalised one way; torchvision's ``weights.transforms()`` and
    Hugging Face's ``AutoImageProcessor`` carry that way with the weights, and the course's networks apply it
    themselves (:meth:`StagedNet.normalise`). ``mean=(0, 0, 0), std=(1, 1, 1)`` feeds the raw pixels in [0, 1].
    """
    values = {"mean": mean, "std": std}
    for name, value in values.items():
        value = torch.as_tensor(value, dtype=torch.float32).flatten()
        if value.numel() != model.in_channels or not torch.isfinite(value).all() or (name == "std" and
                                                                                         (value <= 0).any()):
            raise ValueError(f"{name} must be {model.in_channels} finite numbers, one per channel"
                             f"{' and each > 0' if name == 'std' else ''}; got {values[name]!r}.")
        values[name] = value
    copy_ = copy_model(model)
    copy_.mean.copy_(values["mean"].view(1, -1, 1, 1))
    copy_.std.copy_(values["std"].view(1, -1, 1, 1))
    return copy_


def replace_head(model: StagedNet, num_classes: int) -> StagedNet:
    """Give ``model`` a new, randomly initialised head with ``num_classes`` outputs (in place; returns the model).

    Fine-tuning keeps the feature extractor and starts the classifier afresh: the source task's classes mean nothing
    for the target task.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (a classifier needs two classes), got {num_classes!r}.")
    old = model.head
    model.head = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    if model.config:  # so that the model can still be rebuilt (and saved, and loaded again) with its new head
        model.config = {**model.config, "num_classes": num_classes}
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def fingerprint(model: nn.Module) -> str:
    """A sha256 of the model's weights and buffers (names, shapes, dtypes and values): equal weights, equal prints.

    Cached runs that start from a model (see :mod:`ftcourse.protocol`) are named by it.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stage_parameter_counts(model: StagedNet) -> dict[str, dict[str, int]]:
    """For each stage: how many parameters are trainable and how many frozen."""
    counts = {}
    for name in model.stage_names:
        params = list(model.stage(name).parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        counts[name] = {"trainable": trainable, "frozen": sum(p.numel() for p in params) - trainable}
    return counts



# ------------------------------------------------------------------------------------------------------------------
# Checkpoint files: read safely, checked before use.

RESNET_ARGS = ("num_classes", "width", "blocks", "stem_stride")  # a checkpoint's config: resnet()'s arguments
CHECKPOINT_KEYS = ("format", "config", "state_dict")  # what every checkpoint holds (pretrain's also hold "recipe")


def read_torch_file(path, what: str, *, fix: str = "Delete it, or choose another path.") -> dict:
    """``torch.load(path, weights_only=True)`` onto the CPU, with errors that name the file and say what to do.

    ``weights_only=True`` means the file may hold only tensors and plain values (dicts, lists, numbers, strings),
    never code, so reading a file someone sent you cannot run anything. ``what`` names the kind of file in the
    messages ("The {what} file ... is empty"), e.g. ``"training checkpoint"``; ``fix`` says what to do about a bad
    one. A missing file raises FileNotFoundError; an empty, truncated or foreign file, or one that holds something
    other than a dict, raises ValueError.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"There is no {what} file at {path} (the current folder is {Path.cwd()}): check the "
                                f"path.")
    if path.is_dir():
        raise ValueError(f"{path} is a folder: pass the path of the {what} file itself.")
    if path.stat().st_size == 0:
        raise ValueError(f"The {what} file {path} is empty (was writing it interrupted?). {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as error:  # what torch.load raises for truncated, foreign or code-holding files
        why = ("it holds more than tensors and plain values (weights_only refuses that), or torch.save did not "
               "write it" if isinstance(error, pickle.UnpicklingError) else
               "it is truncated or damaged, or not a file that torch.save wrote")
        details = (str(error).strip().splitlines() or ["no details"])[0][:100]
        raise ValueError(f"The {what} file {path} cannot be read: {why} ({type(error).__name__}: {details}). {fix}"
                         ) from error
    if not isinstance(state, dict):
        raise ValueError(f"The {what} file {path} holds a {type(state).__name__}, not a dict. {fix}")
    return state


def load_checkpoint(path) -> StagedNet:
    """The model in a checkpoint file written by :func:`ftcourse.pretrain.save_checkpoint` (``ftcourse pretrain``).

    The file is read with :func:`read_torch_file` (tensors and plain values only, never code) and checked whole
    before anything is built: its config must be :func:`resnet`'s arguments, and its weights must have exactly the
    names and shapes of that network. A file that fails says which file and what is wrong with it. The returned
    model is in evaluation mode and remembers where it came from in ``model.checkpoint_file``.

    Example::

        model = load_checkpoint("~/.cache/ftcourse/checkpoints/lab.pt")  # made by `ftcourse pretrain`
    """
    path = Path(path).expanduser()
    fix = f"Delete it and make it again (e.g. `ftcourse pretrain --out {path}`), or pass another file."
    return _build(_read_checkpoint(path, fix), path)


def model_from_checkpoint(state, what: str = "the checkpoint") -> StagedNet:
    """The model that a checkpoint's contents describe (``format``, ``config``, ``state_dict``), checked whole first.

    For contents that came from elsewhere, e.g. a student's process: a ValueError says what is wrong with them.
    """
    problem = _checkpoint_problem(state) if isinstance(state, dict) else f"it is a {type(state).__name__}, not a dict"
    if problem:
        raise ValueError(f"{what} cannot be loaded: {problem}.")
    model = resnet(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def _read_checkpoint(path: Path, fix: str) -> dict:
    """The checkpoint at ``path``, read and checked (see :func:`load_checkpoint`); a ValueError naming it if not."""
    state = read_torch_file(path, "ftcourse checkpoint", fix=fix)
    problem = _checkpoint_problem(state)
    if problem:
        raise ValueError(f"{path} is not an ftcourse checkpoint that can be loaded: {problem}. {fix}")
    return state


def _checkpoint_problem(state: dict) -> str:
    """What is wrong with a checkpoint's contents, in words; '' when nothing is."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        return f"it has no {missing} (it holds {_some(map(str, state))})"
    if state["format"] != 1:
        return f"its format is {state['format']!r:.40}; this version of ftcourse reads format 1"
    return _config_problem(state["config"]) or _weights_problem(state["state_dict"], state["config"])


def _config_problem(config) -> str:
    """What is wrong with ``config`` as resnet()'s arguments; ''  when nothing is.

    The bounds are generous: they only stop a damaged file from asking for a gigantic network.
    """
    if not isinstance(config, dict) or set(config) != set(RESNET_ARGS):
        got = _some(map(str, config)) if isinstance(config, dict) else f"a {type(config).__name__}"
        return f"its config should hold exactly resnet()'s arguments {list(RESNET_ARGS)}, not {got}"
    blocks = config["blocks"]
    if not (isinstance(blocks, (list, tuple)) and 1 <= len(blocks) <= 16 and all(_whole(b, 100) for b in blocks)):
        return f"its config's blocks should be a list of 1 to 16 block counts (ints from 1 to 100), not {blocks!r:.60}"
    for name, most in (("num_classes", 1_000_000), ("width", 10_000), ("stem_stride", 32)):
        if not _whole(config[name], most):
            return f"its config's {name} should be an int from 1 to {most:,}, not {config[name]!r:.60}"
    return ""


def _weights_problem(weights, config: dict) -> str:
    """How ``weights`` differ from a ``resnet(**config)``'s state dict (names and shapes); '' when they do not."""
    with torch.device("meta"):  # shapes without memory or time: nothing is computed on the meta device
        expected = resnet(**config).state_dict()
    problem = state_dict_mismatch(weights, expected)
    return f"its weights do not fit resnet(**{config}): {problem}" if problem else ""


def state_dict_mismatch(weights, expected: dict) -> str:
    """How the tensors ``weights`` differ from the state dict ``expected`` (names and shapes), in words; '' if not.

    Checked before ``load_state_dict``, which would otherwise copy every tensor that fits before it raises on the
    first that does not, leaving a model half old, half new.
    """
    if not isinstance(weights, dict):
        return f"the weights are a {type(weights).__name__}, not a dict of tensors"
    missing = [name for name in expected if name not in weights]
    unexpected = [str(name) for name in weights if name not in expected]
    mismatched = [f"{name} is {_shape(weights[name])} instead of {tuple(expected[name].shape)}" for name in expected
                  if name in weights and _shape(weights[name]) != tuple(expected[name].shape)]
    parts = [f"{label} {_some(names)}" for label, names in
             (("missing weights", missing), ("unexpected weights", unexpected), ("wrong shapes:", mismatched))
             if names]
    return "; ".join(parts)


def _build(state: dict, path: Path) -> StagedNet:
    """The model a checked checkpoint describes, with fresh tensors of its own (callers change their models)."""
    model = resnet(**state["config"])
    model.load_state_dict(state["state_dict"])  # copies the values into the model's own tensors
    model.checkpoint_file = path
    return model.eval()


def _whole(value, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def _shape(value):
    return tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}, not a tensor"


def _some(names, limit: int = 5) -> str:
    names = list(names)
    if not names:
        return "nothing"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ------------------------------------------------------------------------------------------------------------------
# Pretrained models.

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"  # the shipped checkpoints: NAME.pt, and NAME.json its record

_SHIPPED = {  # each made by the recipe of the same name in ftcourse.pretrain
    "lab": "the course ResNet pretrained on the lab's source task (shipped with the package; see ftcourse.pretrain)",
    "lab-early": "the same, pretrained for 1 epoch instead of 10 (shipped)",
    "lab-textures": "the course ResNet pretrained on the lab's background textures instead of shapes (shipped)",
    "lab-colours": "the course ResNet pretrained on the lab's hue bins: it learned colour, not shape (shipped)",
    "lab-simclr": "the course ResNet pretrained self-supervised (SimCLR-style, no labels) on the lab source images; "
                  "its head is the identity on the features (shipped; see ftcourse.selfsup)",
}
SHIPPED = tuple(_SHIPPED)  # the names of the shipped checkpoints: the one list of them
PRETRAINED = {  # every name pretrained() knows, and what it is
    **_SHIPPED,
    "resnet18-imagenet": "torchvision's ResNet-18 with ImageNet weights (downloaded once, needs the network)",
}


def pretrained(name: str = "lab") -> StagedNet:
    """A pretrained model by name: ``"lab"`` and its siblings (:data:`SHIPPED`, offline) or ``"resnet18-imagenet"``
    (torchvision, downloaded once); :data:`PRETRAINED` says what each is.

    A shipped checkpoint, ``CHECKPOINT_DIR / f"{name}.pt"``, is used only if its sha256 is the one recorded beside
    it (``NAME.json``) when it was made, and it is then read and checked like any file (:func:`load_checkpoint`).
    That happens once per process; every call returns a fresh model, so changing one never changes the next.
    ``model.checkpoint_file`` is the file the weights came from (None for torchvision's model).
    """
    if name in SHIPPED:
        path = CHECKPOINT_DIR / f"{name}.pt"
        if not path.exists():
            raise FileNotFoundError(f"The course checkpoint {path} is missing. {_remake(name, path)}")
        return _build(_verified_state(path, path.stat().st_mtime_ns), path)
    if name == "resnet18-imagenet":
        return _torchvision_resnet18()
    raise ValueError(f"Unknown pretrained model {name!r}; available: " +
                     "; ".join(f"{k!r}: {v}" for k, v in PRETRAINED.items()))


def pretrained_digests() -> dict[str, str]:
    """The recorded sha256 of each shipped checkpoint, by name: cheap (read from the records, the .pt files are not
    hashed), and different whenever a checkpoint is (``ftcourse.sweep`` puts them in its cache key)."""
    return {name: _recorded_sha256(CHECKPOINT_DIR / f"{name}.pt") for name in SHIPPED}


@functools.lru_cache(maxsize=None)
def _verified_state(path: Path, modified_ns: int) -> dict:
    """The shipped checkpoint at ``path``, hash-checked and read: once per process, and again only when the file's
    modification time, ``modified_ns``, says that it changed."""
    name = path.stem
    expected, actual = _recorded_sha256(path), hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path} is not the checkpoint that was recorded (sha256 {actual[:12]}... instead of "
                         f"{expected[:12]}...): it was changed or damaged. {_remake(name, path)}")
    return _read_checkpoint(path, _remake(name, path))


def _recorded_sha256(path: Path) -> str:
    record = path.with_suffix(".json")
    try:
        return json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"The record {record} of the course checkpoint {path.name} is missing or damaged "
                         f"({type(error).__name__}: {error}). {_remake(path.stem, path)}") from error


def _remake(name: str, path: Path) -> str:
    return (f"Reinstall ftcourse, or make the checkpoint again with `ftcourse pretrain --source {name} --out {path}` "
            f"(2 to 8 minutes on a CPU).")


def _torchvision_resnet18() -> StagedNet:
    import torchvision

    from .downloads import is_timeout, time_limit  # a leaf module too: the standard library only

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    offline = (f"copy {cached.name} (from {weights.url}) into {cached.parent} by hand, or use the course's own "
               f"checkpoint: ftcourse.models.pretrained('lab')")
    with time_limit(f"torchvision's ImageNet ResNet-18 weights from {weights.url}", fix=offline):
        try:
            tv = torchvision.models.resnet18(weights=weights)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError, KeyError) as error:
            if is_timeout(error):
                raise  # time_limit says that the download stalled
            if cached.exists():  # the download is done, so the file is what failed to load
                raise RuntimeError(f"The cached weights {cached} are damaged (an interrupted download?): "
                                   f"{type(error).__name__}: {str(error).rstrip('.')}. Delete that file and run again "
                                   f"to download it afresh.") from error
            raise RuntimeError(f"Could not get torchvision's ImageNet ResNet-18 weights ({error}). They are "
                               f"downloaded once from {weights.url} into torch's hub cache ({cached.parent}). "
                               f"Are you online? Offline, {offline}.") from error
    return from_torchvision(tv).eval()
