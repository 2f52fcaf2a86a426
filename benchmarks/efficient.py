"""Lesson 07's comparison at any size: every efficient fine-tuning method on related, shifted and conflict.

    python benchmarks/efficient.py                 # 5 and 20 labels per class, 3 seeds: about 13 minutes on 2 cores
    python benchmarks/efficient.py --shots 5       # one size
    python benchmarks/efficient.py --cache DIR     # reuse (and fill) a cache of runs, e.g. the lesson's

The lesson runs 20 labels per class in the cpu profile and both sizes in the gpu profile; this script measures the
sizes the cpu profile leaves out. Same protocol as the lesson (experiments.efficient_comparison): every method at its
rate chosen on the first seed's validation split, 100 steps of 32, test accuracy mean ± std over seeds.
"""

import argparse
import tempfile
import time
import warnings

from ftcourse import experiments, models
from ftcourse.stats import mean_and_std

TARGETS = ["related", "shifted", "conflict"]
METHODS = ["finetune", "probe", "last stage", "bitfit", "batchnorm", "lora",
           "surgical:stem", "surgical:layer1", "surgical:layer2", "surgical:layer3"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", default=None, help="a folder of cached runs (default: a temporary one)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # diverged runs are expected while rates are tuned
    cache = args.cache or tempfile.mkdtemp(prefix="ftcourse-efficient-")
    start = time.perf_counter()
    results = experiments.efficient_comparison(TARGETS, METHODS, shots=args.shots, seeds=args.seeds,
                                               pretrained=models.pretrained("lab"), lr_grid=(0.03, 0.1, 0.3),
                                               cache=cache)
    seconds = time.perf_counter() - start
    summary = mean_and_std(results, by=["shots", "target", "method"], metrics=["accuracy"])
    for n in args.shots:
        part = summary[summary["shots"] == n]
        cell = part["accuracy_mean"].map("{:.3f}".format) + " ± " + part["accuracy_std"].map("{:.3f}".format)
        table = part.assign(accuracy=cell).pivot(index="method", columns="target", values="accuracy")
        print(f"\n{n} labels per class, test accuracy (mean ± std over {len(args.seeds)} seeds):")
        print(table.loc[METHODS, TARGETS].to_string())
    again = results[results["tuning_runs"].gt(1) & results["seed"].ne(args.seeds[0])]
    print(f"\n{int(results['tuning_runs'].sum())} training runs (cached ones included), {seconds:.0f} s; seeds that "
          f"diverged at the first seed's rate and chose their own: {len(again)}")
    if len(again):
        print(again[["shots", "target", "method", "seed", "lr", "accuracy"]].to_string(index=False))


if __name__ == "__main__":
    main()
