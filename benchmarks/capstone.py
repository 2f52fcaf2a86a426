"""Calibrate the capstone's marks: test accuracy of scratch, each source, and recipes that choose the source.

    python benchmarks/capstone.py [THREADS] [SECRETS] [KIND]   # SECRETS (default 8) of each kind (or of KIND only)
                                                               # x seeds 0, 1, 2

Each recipe gets the capstone's training images (5 per class) and its budget (100 steps of 32 images). "chosen by X" scores every shipped lab checkpoint
with X on the 25 training images (free: no gradients) and fine-tunes the best, as the worked solution does. Prints
one line per run and a summary per kind of target that ftcourse/capstone.py's CALIBRATION records, with the share
of the points each run earns (capstone.score).
"""

import statistics
import sys
import time

import torch

from ftcourse import capstone, experiments, measure, models
from ftcourse.train import evaluate, fit

RECIPES = {  # name: (source checkpoint, a score to choose it by, or None for scratch; learning rate; steps)
    "scratch": (None, 0.05, 100),
    "fine-tune lab": ("lab", 0.01, 100),
    "fine-tune lab-colours": ("lab-colours", 0.01, 100),
    "fine-tune lab-simclr": ("lab-simclr", 0.01, 100),
    "chosen by LogME": ("by logme", 0.01, 100),
    "chosen by LEEP": ("by leep", 0.01, 100),
}
LAB_SOURCES = [name for name in models.SHIPPED if name.startswith("lab")]


def secrets_of(kind: str, n: int = 3) -> list[int]:
    """The first ``n`` secrets from 1 up whose target is of ``kind``."""
    return [s for s in range(1, 100) if capstone.definition(s)["kind"] == kind][:n]


def main(n_secrets=8, seeds=(0, 1, 2), kinds=tuple(capstone.KINDS)):
    results = {(kind, name): [] for kind in kinds for name in RECIPES}
    chosen = {}
    start = time.perf_counter()
    for kind in kinds:
        for secret in secrets_of(kind, n_secrets):
            train, test = capstone.target(secret)
            with torch.no_grad():
                scores = {n: measure.transferability(models.pretrained(n), train) for n in LAB_SOURCES}
            for seed in seeds:
                line = []
                for name, (source, lr, steps) in RECIPES.items():
                    if source and source.startswith("by "):
                        by = source[3:]
                        source = max(LAB_SOURCES, key=lambda n: scores[n][by])
                        chosen.setdefault((kind, name), []).append(source)
                    method = "scratch" if source is None else "finetune"
                    model = experiments.make_model(method, capstone.CLASSES, seed=seed,
                                                   pretrained=models.pretrained(source or "lab"))
                    fit(model, train, steps=steps, lr=lr, batch_size=32, augment=True, seed=seed, progress=False)
                    accuracy = evaluate(model, test)["accuracy"]
                    results[kind, name].append(accuracy)
                    line.append(f"{name} {accuracy:.3f}")
                print(f"{kind} secret {secret} seed {seed}: " + ", ".join(line), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s; {capstone.marks_text()}")
    for (kind, name), values in results.items():
        passed = sum(v >= capstone.MARKS[kind][0] for v in values)
        points = statistics.mean(capstone.score(v, kind) for v in values)
        picks = chosen.get((kind, name))
        picked = f"; chose {', '.join(sorted(set(picks)))}" if picks else ""
        print(f"{kind:>6} {name:>22}: mean {statistics.mean(values):.3f}, range {min(values):.3f}-{max(values):.3f}, "
              f"passes {passed}/{len(values)}, mean score {points:.2f}{picked}")


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    main(int(sys.argv[2]) if len(sys.argv) > 2 else 8, kinds=tuple(sys.argv[3:4]) or tuple(capstone.KINDS))
