"""Where the course runs: device, profile, seeds.

Every notebook starts with ``env = setup()``. It decides three things and prints them on one line:

- the **device**: CUDA if there is a GPU, then Apple's MPS, then the CPU;
- the **profile**, i.e. how big the experiments are: ``quick`` (seconds; the test suite and CI), ``cpu`` (a few
  minutes per notebook on a laptop; the sizes at which every lesson's claims were checked) or ``gpu`` (full size,
  more seeds and label sizes). It comes from ``setup(profile=...)``, else the ``FTCOURSE_PROFILE`` environment
  variable, else ``cpu`` on every device: on a GPU the verified sizes simply run faster. ``gpu`` is an explicit
  choice, and :func:`setup` says what it costs and that its claims are not verified at that size;
- the **seeds** of Python, NumPy and torch, so that a run can be repeated, and the seeds the lesson's experiments
  replicate over (``env.sizes.seeds``). ``FTCOURSE_SEEDS=3,4,5`` replaces the latter without editing a lesson: a
  claim the course makes should hold for seeds it was not written on, and this is how to check.

The returned :class:`Env` carries the sizes of the chosen profile (``env.sizes.shots``, ``env.sizes.seeds`` ...),
so notebooks never hard-code how big an experiment is.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import progress

PROFILE_VARIABLE = "FTCOURSE_PROFILE"
SEEDS_VARIABLE = "FTCOURSE_SEEDS"
VERIFIED_PROFILES = ("quick", "cpu")  # the profiles whose lessons have run top to bottom with their claims checked


@dataclass(frozen=True)
class Sizes:
    """How big the experiments of one profile are."""

    test_per_class: int  # held-out images per class of each lab target task
    shots: tuple[int, ...]  # labels per class tried in "accuracy vs target size" experiments
    seeds: tuple[int, ...]  # seeds, for means and error bars
    steps: int  # optimiser steps of one fine-tuning (or scratch) run on a target task
    batch_size: int  # of those runs


PROFILES: dict[str, Sizes] = {
    "quick": Sizes(test_per_class=20, shots=(5, 20), seeds=(0,), steps=20, batch_size=32),
    "cpu": Sizes(test_per_class=100, shots=(5, 20, 80), seeds=(0, 1, 2), steps=100, batch_size=32),
    "gpu": Sizes(test_per_class=300, shots=(5, 10, 20, 40, 80, 160), seeds=(0, 1, 2, 3, 4), steps=200,
                 batch_size=32),
}


@dataclass
class Env:
    """What :func:`setup` chose. ``env.device`` goes to ``.to(...)``, ``env.sizes`` sizes the experiments."""

    device: torch.device
    profile: str
    seed: int
    precision: str
    colab: bool
    sizes: Sizes = field(repr=False)
    cache_dir: Path = field(default=Path(".ftcourse-cache"), repr=False)  # cached experiment results
    runs_dir: Path = field(default=Path("runs"), repr=False)  # checkpoints of long runs

    @property
    def run_cache(self) -> Path:
        """The one cache of training runs, shared by every lesson and the tour (:mod:`ftcourse.protocol`): a run
        that two lessons ask for is trained once, whichever asks first."""
        return self.cache_dir / "runs"

    def describe(self) -> str:
        where = "Colab" if self.colab else "local"
        name = device_name(self.device)
        seeds = "" if self.sizes.seeds == PROFILES[self.profile].seeds else f", seeds={list(self.sizes.seeds)}"
        return (f"ftcourse: device={self.device.type} ({name}), precision={self.precision}, "
                f"profile={self.profile}{seeds}, seed={self.seed}, {where}, torch {torch.__version__}")


def pick_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU"
    return f"{os.cpu_count()} CPU cores"


def pick_profile(profile: str | None = None, device: torch.device | None = None) -> str:
    """The profile asked for, else ``$FTCOURSE_PROFILE``, else ``cpu``, whatever the device.

    The default is the largest profile whose claims have been checked (:data:`VERIFIED_PROFILES`): a claim is
    asserted only at the sizes where it was measured. ``device`` is accepted for callers that pass it and changes
    nothing.
    """
    profile = profile or os.environ.get(PROFILE_VARIABLE) or None
    if profile is None:
        return "cpu"
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Use one of {sorted(PROFILES)} "
                         f"(as setup(profile=...) or the {PROFILE_VARIABLE} environment variable).")
    return profile


def pick_seeds(sizes: Sizes) -> tuple[int, ...]:
    """The seeds the experiments replicate over: ``$FTCOURSE_SEEDS`` (for example ``3,4,5``), else the profile's.

    >>> pick_seeds(PROFILES["cpu"])
    (0, 1, 2)
    """
    text = os.environ.get(SEEDS_VARIABLE, "").strip()
    if not text:
        return sizes.seeds
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{SEEDS_VARIABLE}={text!r} is not a list of seeds. Write whole numbers separated by commas, "
                         f"for example {SEEDS_VARIABLE}=3,4,5, or unset it to use the profile's seeds.") from None
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError(f"{SEEDS_VARIABLE}={text!r}: the seeds must be different and not negative, for example "
                         f"{SEEDS_VARIABLE}=3,4,5.")
    return seeds


def full_size_warning(sizes: Sizes) -> str:
    """What choosing the ``gpu`` profile means, said before anything runs: its cost against the verified ``cpu``
    sizes (seeds x label sizes x steps, the factor by which a lesson's training grows), and that its claims are
    not verified."""
    def work(s: Sizes) -> int:
        return len(s.seeds) * len(s.shots) * s.steps

    factor = work(sizes) / work(PROFILES["cpu"])
    return (f"profile=gpu: full size ({len(sizes.seeds)} seeds, labels per class {list(sizes.shots)}, {sizes.steps} "
            f"steps per run): about {factor:.0f}x the training of the cpu profile in each lesson. The lessons' claims "
            f"were checked at the cpu profile's sizes, not at these: a claim may fail here, and a failed claim says "
            f"so and the lesson goes on.")


QUICK_NOTE = ("profile=quick: a smoke test (a few steps, one seed) that checks that every cell runs. Its numbers "
              "prove nothing and can contradict the text (a spread of 0.000 over one seed, masks that are all one "
              "class), and the lessons check no claim here: run the cpu profile to learn from the results.")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_machine_warning(load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when the CPU is oversubscribed, else None: the 1-minute load average (processes running or waiting
    to run) above the cores this process may use. Training on the CPU runs one thread per core; when other jobs
    want the same cores, threads wait for each other at every step, and the course measured runs 10-30x slower."""
    if load is None:
        if not hasattr(os, "getloadavg"):
            return None
        load = os.getloadavg()[0]
    cores = cores or usable_cores()
    if load <= cores + 0.5:
        return None
    return (f"this machine is busy: {load:.1f} processes want the CPU on average (the last minute) and it has "
            f"{cores} core{'s' if cores > 1 else ''}. Training will wait for the CPU at every step (runs were "
            f"measured 10-30x slower this way). Close other jobs (another notebook's kernel, a build), or give each "
            f"of them fewer threads (OMP_NUM_THREADS=1 before starting them).")


def active_profile() -> str:
    """The profile in force now: the one :func:`setup` chose last, else what :func:`pick_profile` would pick."""
    return _active["profile"] or pick_profile()


def precision_for(device: torch.device) -> str:
    """The arithmetic the training loop uses on ``device``.

    - ``bf16``: GPUs with native bfloat16 (NVIDIA compute capability 8.0+: A100, H100, RTX 30xx...). bfloat16 has
      float32's exponent range, so no loss scaling is needed.
    - ``fp16``: older GPUs (a Colab T4 is 7.5). float16 overflows and underflows easily, so gradients are scaled.
    - ``fp32``: the CPU and MPS. On a CPU without native bf16 (:func:`cpu_has_native_bf16`) bf16 is emulated and
      slower. On one with it (avx512_bf16 or AMX), bf16 autocast measured 1.35x channels_last fp32 for the lab
      ResNet, but the course has not checked every lesson's claims in bf16 on such a CPU, so fp32 stays the
      default there too: ``fit(..., precision="bf16")`` opts in.
    """
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 else "fp16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; read from Linux's /proc/cpuinfo).

    Without those instructions, bf16 autocast on the CPU is emulated and slower than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell here, so no
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def channels_last_for(device: torch.device) -> bool:
    """Whether the training engine keeps weights and images in the channels_last (NHWC) layout on ``device``.

    A convolution reads, for every output pixel, all channels of a small neighbourhood. Stored channels-last, those
    channels lie next to each other in memory, which is what the fast convolution kernels of cuDNN (tensor cores)
    and of oneDNN (the CPU) are written for; stored contiguous (NCHW), torch converts or takes a slower path. Measured
    with ``benchmarks/bench_fit.py`` (figures in benchmarks/README.md), so decided per device type:

    - ``cuda``: yes;
    - ``cpu``: yes: the course's lab ResNet trains about 1.2x faster in fp32 on the project's 2-core AVX2 CPU (1,633
      -> 1,964 images/s at batch 128, 886 -> 1,054 at batch 32), and 1.27x on a 2-core AVX512 CPU;
    - ``mps`` and others: no (not measured).
    """
    return torch.device(device).type in ("cuda", "cpu")


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def in_notebook() -> bool:
    """True in a Jupyter kernel or in Colab, where a live plot or a widget can be shown; False elsewhere.

    IPython tells by the class of its shell: ``ZMQInteractiveShell`` in a Jupyter kernel, ``Shell``
    (``google.colab._shell.Shell``) in Colab, ``TerminalInteractiveShell`` in a terminal. A script has no shell,
    and without IPython installed there is no notebook either.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def storage_dirs() -> tuple[Path, Path]:
    """Where results and checkpoints go: ``$FTCOURSE_CACHE`` and ``$FTCOURSE_RUNS``, else beside the notebook.

    In Colab, when Google Drive is mounted (``from google.colab import drive; drive.mount("/content/drive")``),
    both go to ``MyDrive/ftcourse`` so that they survive a disconnect: re-running the notebook then resumes.
    """
    drive = Path("/content/drive/MyDrive")
    base = drive / "ftcourse" if in_colab() and drive.is_dir() else None
    cache = os.environ.get("FTCOURSE_CACHE") or (base / "cache" if base else ".ftcourse-cache")
    runs = os.environ.get("FTCOURSE_RUNS") or (base / "runs" if base else "runs")
    return Path(cache), Path(runs)


def setup(seed: int = 0, profile: str | None = None, *, verbose: bool = True) -> Env:
    """Pick device and profile, seed everything, print one line that says so, and return an :class:`Env`.

    >>> env = setup(seed=0, profile="quick", verbose=False)
    >>> env.profile, env.sizes.seeds
    ('quick', (0,))
    """
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    device = pick_device()
    profile = pick_profile(profile, device)
    seed_everything(seed)
    if device.type == "cpu":
        # One thread per physical core; more only adds contention on the small laptops this profile is for.
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # pick the fastest convolution kernels for our fixed input shapes
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cache_dir, runs_dir = storage_dirs()
    sizes = dataclasses.replace(PROFILES[profile], seeds=pick_seeds(PROFILES[profile]))
    env = Env(device=device, profile=profile, seed=seed, precision=precision_for(device), colab=in_colab(),
              sizes=sizes, cache_dir=cache_dir, runs_dir=runs_dir)
    _active["profile"] = profile
    if verbose:
        print(env.describe())
        if profile not in VERIFIED_PROFILES:
            print(full_size_warning(sizes))
        if profile == "quick":
            print(QUICK_NOTE)
        live = os.environ.get(progress.PROGRESS_VARIABLE, "1").strip() != "0"  # off in the site's build
        busy = busy_machine_warning() if device.type == "cpu" and live else None
        if busy:
            print(f"warning: {busy}")
    return env


_active: dict[str, str | None] = {"profile": None}
