"""Does a self-supervised source transfer better than the supervised one? lab-simclr against lab, tuned with tuned.

The issue "stronger transferability, the seed's trend": ``lab-simclr`` (:mod:`ftcourse.selfsup`) learned from the
lab's source images without their labels; ``lab`` learned from the same images with them. Both are fine-tuned and
linearly probed on the ``related`` target (5 new shapes) and the ``conflict`` target (the shape's colour, which the
supervised source learned to ignore), through the course's one procedure (``experiments.run(..., lr="tuned")``: each
run's rate chosen on validation from the same grid, 100 steps of 32, the test accuracy of the chosen run reported).
Every seed is a whole replicate (its own training images, its own rate). For each target, labels per class, method
and seed set the script prints the mean test accuracy of each source and the paired difference lab-simclr minus lab
over the seeds with its 90% interval (``stats.paired_difference``), and the rates each seed chose (a rate at the top
of ``experiments.LR_LADDER``, 1, means the best rate may lie beyond what the ladder tries); ``--scratch`` adds a tuned
scratch run as a reference (it does not depend on the source).

    OMP_NUM_THREADS=1 python benchmarks/selfsup.py --cache /tmp/selfsup/cache            # 20 labels per class
    OMP_NUM_THREADS=1 python benchmarks/selfsup.py --shots 20 5 --cache /tmp/selfsup/cache

Runs are cached in ``--cache`` (by what they compute), so a second call with more shots trains only what is new.
"""

import argparse
import tempfile
import time

import pandas as pd
import torch

from ftcourse import experiments, lab, models, stats

SOURCES = ("lab", "lab-simclr")
TARGETS = ("related", "conflict")
METHODS = ("finetune", "probe")
SEED_SETS = ((0, 1, 2), (3, 4, 5))


def runs(shots, cache, scratch):
    sources = {name: models.pretrained(name) for name in SOURCES}
    rows = []
    for n in shots:
        for target in TARGETS:
            for seed in [seed for seeds in SEED_SETS for seed in seeds]:
                task = lab.target(target, n, test_per_class=100, seed=seed)
                jobs = [(method, name) for method in METHODS for name in SOURCES]
                jobs += [("scratch", "-")] if scratch else []
                for method, name in jobs:
                    started = time.perf_counter()
                    result = experiments.run(task, method, pretrained=sources.get(name, sources["lab"]), seed=seed,
                                             lr="tuned", steps=100, batch_size=32, cache=cache)
                    rows.append({"target": target, "shots": n, "seed": seed, "method": method, "source": name,
                                 "lr": result["lr"], "val": result["val_accuracy"], "test": result["accuracy"],
                                 "runs": result["tuning_runs"]})
                    print(f"{target} {n}/class seed {seed} {method:8} {name:10} lr {result['lr']:<6g} val "
                          f"{result['val_accuracy']:.3f} test {result['accuracy']:.3f} "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def table(results):
    lines = []
    for (target, n, method), group in results[results.method != "scratch"].groupby(
            ["target", "shots", "method"], sort=False):
        for seeds in SEED_SETS:
            chosen = group[group.seed.isin(seeds)]
            ordered = {name: chosen[chosen.source == name].sort_values("seed") for name in SOURCES}
            accuracy = {name: rows["test"].to_numpy() for name, rows in ordered.items()}
            difference = stats.paired_difference(accuracy["lab-simclr"], accuracy["lab"])
            scratch = results[(results.method == "scratch") & (results.target == target) & (results.shots == n)
                              & results.seed.isin(seeds)]["test"]
            lines.append({"target": target, "labels/class": n, "method": method,
                          "seeds": ",".join(map(str, seeds)), "lab": round(accuracy["lab"].mean(), 3),
                          "lab-simclr": round(accuracy["lab-simclr"].mean(), 3),
                          "simclr - lab": stats.describe_difference(difference),
                          "scratch": round(scratch.mean(), 3) if len(scratch) else float("nan"),
                          **{f"rates {name}": ",".join(f"{lr:g}" for lr in rows["lr"])
                             for name, rows in ordered.items()}})
    return pd.DataFrame(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[20], help="labels per class (default: 20)")
    parser.add_argument("--cache", default=None, help="folder for the run cache (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--scratch", action="store_true", help="also a tuned scratch run per seed, for reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        results = runs(args.shots, args.cache or temporary, args.scratch)
    pd.set_option("display.width", 200)
    print()
    print(table(results).to_string(index=False))
    print(f"\n{len(results)} tuned runs, {results['runs'].sum()} training runs, "
          f"{time.perf_counter() - started:.0f} s on {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
