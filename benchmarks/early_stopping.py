"""Does stopping clearly worse rates early change what the protocol chooses? Real tunings, side by side.

``ftcourse.protocol.tune`` trains every rate of the grid to 30% of the budget and stops there the rates smaller than
the leader's that are more than 0.05 below it, and any that diverged (``DECIDE_AT``, ``MARGIN``,
``protocol.clearly_worse``). This script runs real tunings of the course's kinds -- images (scratch,
fine-tuning, efficient methods) and dense segmentation, at the cpu profile's sizes -- once with early stopping and
once with every rate trained to the end, and prints, for each tuning, the two chosen rates, their test accuracy
(or mIoU) and the optimiser steps each spent. Both share one run cache: the full tuning reuses the runs the early
one finished, so each run is trained once (a run paused and finished reaches exactly an unpaused run's weights).

    python benchmarks/early_stopping.py            # 22 tunings, about 3 minutes on 2 cores
    python benchmarks/early_stopping.py --decide-at 0.5
"""

import argparse
import tempfile
import time

import pandas as pd
import torch

from ftcourse import dense, experiments, lab, models, protocol
from ftcourse.env import PROFILES

SIZES = PROFILES["cpu"]
EFFICIENT_GRID = (0.03, 0.1, 0.3)  # lesson 07's grid
DENSE = dict(steps=80, batch_size=16, lr_grid=EFFICIENT_GRID)  # lesson 08's sizes


def image_tunings():
    for target, relatedness in (("related", 1.0), ("conflict", 1.0), ("mixed", 0.5)):
        for method in ("scratch", "finetune"):
            for shots in (5, 20):
                yield (f"{target} r={relatedness:g}, {method}, {shots}/class", target, shots, method, relatedness,
                       None, experiments.LR_GRID)
    for target in ("related", "conflict"):
        for method in ("bitfit", "lora", "surgical:stem"):
            yield f"{target}, {method}, 20/class", target, 20, "finetune", 1.0, method, EFFICIENT_GRID


def run_image(spec, decide_at, cache, pretrained):
    _, target, shots, method, relatedness, efficient_method, grid = spec
    task = lab.target(target, shots, test_per_class=SIZES.test_per_class, seed=0, relatedness=relatedness)
    prepare = None if efficient_method is None else experiments.efficient.prepare(efficient_method)
    result = experiments.run(task, method, pretrained=pretrained, seed=0, steps=SIZES.steps,
                             batch_size=SIZES.batch_size, lr="tuned", lr_grid=grid, prepare=prepare, cache=cache,
                             decide_at=decide_at)
    return result["lr"], result["accuracy"], result["steps_spent"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decide-at", type=float, default=protocol.DECIDE_AT)
    args = parser.parse_args()
    pretrained = models.pretrained("lab")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        jobs = [(spec[0], "image", lambda d, s=spec: run_image(s, d, cache, pretrained)) for spec in image_tunings()]
        jobs += [(f"segmentation {t}, {m}, 16 images", "dense",
                  lambda d, t=t, m=m: run_dense_steps(t, m, d, cache, pretrained))
                 for t in ("related", "conflict") for m in ("scratch", "finetune")]
        for name, kind, job in jobs:
            early_lr, early_test, early_steps = job(args.decide_at)
            full_lr, full_test, full_steps = job(None)
            rows.append({"tuning": name, "kind": kind, "rate (early stop)": early_lr, "rate (full grid)": full_lr,
                         "same rate": early_lr == full_lr, "test (early)": round(early_test, 3),
                         "test (full)": round(full_test, 3), "test difference": round(early_test - full_test, 3),
                         "steps (early)": early_steps, "steps (full)": full_steps})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False))
    same = int(table["same rate"].sum())
    print(f"\n{len(table)} tunings (decide at {args.decide_at:.0%} of the budget, margin {protocol.MARGIN}): the same "
          f"rate in {same}; largest |test difference| {table['test difference'].abs().max():.3f}; steps "
          f"{table['steps (early)'].sum():,} against {table['steps (full)'].sum():,} "
          f"({1 - table['steps (early)'].sum() / table['steps (full)'].sum():.0%} fewer); "
          f"{time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads")


def run_dense_steps(target, method, decide_at, cache, pretrained):
    task = dense.dense_target(target, 16, n_val=64, n_test=256, seed=0)
    recipe = experiments.DenseRecipe(task, "segmentation", method, pretrained=pretrained, seed=0,
                                     steps=DENSE["steps"], batch_size=DENSE["batch_size"], device=None)
    tuned = protocol.tune(recipe, grid=DENSE["lr_grid"], ladder=experiments.LR_LADDER, steps=DENSE["steps"],
                          decide_at=decide_at, cache=cache)
    return tuned.lr, tuned.test.get("score", float("nan")), tuned.steps


if __name__ == "__main__":
    main()
