"""The oldest torch and torchvision the course works with, and why: one row per feature that needs a recent release.

A lower bound in ``pyproject.toml`` is a promise: "with any version from here on, the course runs". It is only true
if someone knows which features set it. This table is that knowledge, written once, as data. Each row says the
first release that has a feature, the feature, where the course uses it, and how the release was established.

The bound of a package in ``pyproject.toml`` is the newest release in its rows (``tests/test_versions.py`` checks
that, and that the installed versions meet the bounds). When you use a feature that a recent release brought, add
a row here first; the test then tells you to raise the bound. No old build is installed in CI to prove the rows:
a PyPI Linux torch wheel is about 750 MB and pulls about 2 GB of CUDA libraries, for each version tried.

Rows whose release is far below the bound are kept on purpose: they say the feature was checked, and they show
which bound follows if the newest row goes away.
"""

from __future__ import annotations

import re

# package -> [(first release with the feature, the feature, where the course uses it, source)]
REQUIREMENTS: dict[str, list[tuple[str, str, str, str]]] = {
    "torch": [
        ("2.3", "torch.amp.GradScaler(device_type, ...): the device-generic scaler, 'cpu' included",
         "train.Stepper, so every fit() on every device",
         "the wheels: torch 2.3.1 has torch/amp/grad_scaler.py, 2.2.2's torch.amp exports only autocast "
         "(also pytorch.org/docs/2.3/_modules/torch/cuda/amp/grad_scaler.html)"),
        ("2.3", "torch.optim.SGD(..., fused=True)",
         "train (the optimiser of fit on CUDA; foreach=True elsewhere)",
         "the wheels: SGD.__init__ takes fused in torch 2.3.1, not in 2.2.2 (a TypeError there)"),
        ("2.0", "torch.optim.AdamW(..., fused=...)", "train (optimizer='adamw')",
         "the 2.0 docs of AdamW list fused; 1.13's do not (2.2.2's wheel has it)"),
        ("2.0", "torch.compile", "train.fit(compile=True) (Python 3.11 needs torch 2.1, 3.12 needs 2.4)",
         "PyTorch 2.0 release"),
        ("1.13", "torch.load(..., weights_only=True)", "models.read_torch_file: checkpoints and shipped weights",
         "PyTorch 1.13 release notes (weights_only added to torch.load)"),
        ("1.11", "F.interpolate(..., antialias=True) for bilinear", "data: resizing real images",
         "PyTorch 1.11 docs of interpolate"),
    ],
    "torchvision": [
        ("0.18", "the torchvision built for torch 2.3 (each torchvision release requires one torch release)",
         "everything: pip cannot pair an older torchvision with torch >= 2.3",
         "torchvision 0.18.0's metadata requires torch==2.3.0 (pytorch/vision release table)"),
        ("0.13", "torchvision.models.ResNet18_Weights and resnet18(weights=...), weights.url",
         "models.from_torchvision / the ImageNet ResNet-18", "torchvision 0.13: the multi-weight API"),
    ],
}


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"2.14.1+cu121"`` -> ``(2, 14, 1)``, ``"2.3"`` -> ``(2, 3)``.

    Pre-release and local parts (``rc1``, ``.dev``, ``+cpu``) are dropped: enough to compare against the bounds.
    """
    match = re.match(r"\d+(\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"{version!r} does not start with a release number like 2.3 or 2.3.1.")
    return tuple(int(part) for part in match.group(0).split("."))


def at_least(version: str, minimum: str) -> bool:
    """Whether ``version`` is ``minimum`` or later, compared as releases padded with zeros (2.3 == 2.3.0)."""
    a, b = release(version), release(minimum)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def minimum(package: str) -> str:
    """The oldest release of ``package`` that has every feature in its rows of :data:`REQUIREMENTS`."""
    return max((first for first, *_ in REQUIREMENTS[package]), key=release)
