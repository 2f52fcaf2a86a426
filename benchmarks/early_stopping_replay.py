"""Which early-stopping rule chooses like the full grid, and what does it save? Real runs, replayed offline.

``benchmarks/early_stopping.py`` compares one rule with the full grid by running both. This script trains, once,
every rate a tuning could try (the grid and two rates of the ladder beyond each edge) to the end of the budget,
validating every tenth of it, and tests each at the end. It then replays ``ftcourse.protocol.tune``'s steps over
those numbers for several rules -- one or two decision points ("rungs"), each stopping the rates smaller than the
leader's, or any rate, that are more than a margin below it -- and prints, per rule: in how many tunings it chose
the full grid's rate, the largest test difference when it did not, and the optimiser steps it spent against the
full grid's. A rule that needs a rate the replay did not train says so.

    python benchmarks/early_stopping_replay.py                 # 88 tunings, seeds 0-2: about 25 minutes on 2 cores
    python benchmarks/early_stopping_replay.py --seeds 0 --out replay.json
"""

import argparse
import json
import os
import time

import torch

from ftcourse import dense, efficient, experiments, lab, models, protocol
from ftcourse.env import PROFILES

SIZES = PROFILES["cpu"]
EFFICIENT_GRID = (0.03, 0.1, 0.3)  # lesson 07's grid
CHECKS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # validate at every tenth of the budget

# Each rule: its rungs, (share of the budget, which rates a rung may stop, margin). "smaller": only rates smaller
# than the leader's (the protocol's rule since session 12); "any": any rate.
RULES = {
    "full grid": (),
    "30% smaller (the protocol now)": ((0.3, "smaller", 0.05),),
    "30% any (session 9)": ((0.3, "any", 0.05),),
    "20% smaller": ((0.2, "smaller", 0.05),),
    "30% smaller, 50% any": ((0.3, "smaller", 0.05), (0.5, "any", 0.05)),
    "30% smaller, 60% any": ((0.3, "smaller", 0.05), (0.6, "any", 0.05)),
    "30% smaller, 70% any": ((0.3, "smaller", 0.05), (0.7, "any", 0.05)),
    "20% smaller, 50% any": ((0.2, "smaller", 0.05), (0.5, "any", 0.05)),
    "20% smaller, 60% any": ((0.2, "smaller", 0.05), (0.6, "any", 0.05)),
    "30% smaller, 60% any 0.1": ((0.3, "smaller", 0.05), (0.6, "any", 0.1)),
    "30% smaller, 50% any 0.1": ((0.3, "smaller", 0.05), (0.5, "any", 0.1)),
}


def tunings(seeds):
    """(name, kind, recipe maker, grid) for every tuning replayed."""
    pretrained = models.pretrained("lab")
    for seed in seeds:
        for target, relatedness in (("related", 1.0), ("conflict", 1.0), ("mixed", 0.5), ("mixed", 0.0)):
            for method in experiments.METHODS:
                for shots in (5, 20):
                    def recipe(target=target, relatedness=relatedness, method=method, shots=shots, seed=seed):
                        task = lab.target(target, shots, test_per_class=SIZES.test_per_class, seed=seed,
                                          relatedness=relatedness)
                        return experiments.ImageRecipe(
                            task, method, pretrained=pretrained, seed=seed, steps=SIZES.steps,
                            batch_size=SIZES.batch_size, augment=True, prepare=None, device=None, also_test=None,
                            fit_kwargs={})
                    yield (f"{target} r={relatedness:g}, {method}, {shots}/class, seed {seed}", "image", recipe,
                           experiments.LR_GRID, SIZES.steps)
        if seed > 1:
            continue
        for target in ("related", "conflict"):
            for method in ("bitfit", "lora", "surgical:stem"):
                def recipe(target=target, method=method, seed=seed):
                    task = lab.target(target, 20, test_per_class=SIZES.test_per_class, seed=seed)
                    return experiments.ImageRecipe(
                        task, "finetune", pretrained=pretrained, seed=seed, steps=SIZES.steps,
                        batch_size=SIZES.batch_size, augment=True, prepare=efficient.prepare(method), device=None,
                        also_test=None, fit_kwargs={})
                yield f"{target}, {method}, 20/class, seed {seed}", "image", recipe, EFFICIENT_GRID, SIZES.steps
        if seed > 0:
            continue
        for target in ("related", "conflict"):
            for method in ("scratch", "finetune"):
                def recipe(target=target, method=method):
                    task = dense.dense_target(target, 16, n_val=64, n_test=256, seed=0)
                    return experiments.DenseRecipe(task, "segmentation", method, pretrained=pretrained, seed=0,
                                                   steps=80, batch_size=16, device=None)
                yield f"segmentation {target}, {method}, 16 images", "dense", recipe, EFFICIENT_GRID, 80


def rates_to_train(grid, ladder=experiments.LR_LADDER, beyond=2):
    below = [r for r in sorted(ladder) if r < min(grid)][-beyond:]
    above = [r for r in sorted(ladder) if r > max(grid)][:beyond]
    return sorted({*below, *grid, *above})


def replay_runs(recipe_maker, grid, steps):
    """Every rate trained to the end, validated at every check, tested at the end: {lr: {"checks": {share: ...},
    "test": float}}."""
    recipe = recipe_maker()
    runs = {}
    for lr in rates_to_train(grid):
        trial = recipe.start(lr)
        checks = {}
        for share in CHECKS:
            until = None if share == 1.0 else max(1, min(steps - 1, round(share * steps)))
            trial.train(until=until)
            measured = trial.validate()
            checks[share] = {"val": float(measured["val"]), "val_loss": float(measured["val_loss"]),
                             "diverged": protocol.diverged(measured["val"], measured["val_loss"],
                                                           flagged=measured.get("diverged", False),
                                                           chance=recipe.chance)}
        test = trial.test()
        runs[lr] = {"checks": checks, "test": float(next(iter(test.values())))}
    return runs


def simulate(runs, grid, rungs, ladder=experiments.LR_LADDER):
    """``protocol.tune``'s steps over replayed runs with ``rungs``: (chosen rate, steps spent), or (None, None) when
    it needs a rate that was not trained."""
    tried, stopped = [], {}

    def row(lr, share):
        return {"lr": lr, **runs[lr]["checks"][share]}

    def try_rates(rates):
        tried.extend(rates)
        for share, scope, margin in rungs:
            alive = [lr for lr in tried if lr not in stopped]
            healthy = [row(lr, share) for lr in alive if not runs[lr]["checks"][share]["diverged"]]
            leader = protocol.choose(healthy) if healthy else None
            for lr in rates:
                if lr in stopped:
                    continue
                check = runs[lr]["checks"][share]
                worse = check["diverged"] or (leader is not None and check["val"] < leader["val"] - margin
                                              and (scope == "any" or lr < leader["lr"]))
                if worse:
                    stopped[lr] = share

    try_rates(list(grid))
    while True:
        trials = [{**row(lr, stopped.get(lr, 1.0)), "stopped_at": stopped.get(lr)} for lr in tried]
        best = protocol.choose(trials)
        if best["stopped_at"] is not None and not best["diverged"]:
            del stopped[best["lr"]]
            continue
        beyond = protocol.next_rate(best["lr"], tried, ladder)
        if beyond is None:
            steps = sum(stopped.get(lr, 1.0) for lr in tried)
            return best["lr"], steps
        if beyond not in runs:
            return None, None
        try_rates([beyond])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--out", help="a JSON-lines file for the replayed runs, one tuning a line, appended as each "
                                      "is trained (a rerun goes on from it; read back with --replay)")
    parser.add_argument("--replay", help="a JSON file of runs from an earlier --out: no training")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.replay:
        with open(args.replay) as f:
            tables = [json.loads(line) for line in f]
        for t in tables:
            t["runs"] = {float(lr): {"test": r["test"], "checks": {float(s): c for s, c in r["checks"].items()}}
                         for lr, r in t["runs"].items()}
    else:
        tables = []
        done = {}
        if args.out and os.path.exists(args.out):  # an interrupted replay goes on where it stopped
            with open(args.out) as f:
                done = {t["tuning"]: t for t in map(json.loads, f)}
        for name, kind, recipe_maker, grid, steps in tunings(args.seeds):
            if name not in done:
                done[name] = {"tuning": name, "kind": kind, "grid": list(grid), "steps": steps,
                              "runs": replay_runs(recipe_maker, grid, steps)}
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(done[name]) + "\n")
            tables.append(json.loads(json.dumps(done[name])))
            print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        for t in tables:
            t["runs"] = {float(lr): {"test": r["test"], "checks": {float(s): c for s, c in r["checks"].items()}}
                         for lr, r in t["runs"].items()}
    print(f"\n{len(tables)} tunings; every rate trained and validated every tenth of the budget "
          f"({time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads)\n")
    full = {t["tuning"]: simulate(t["runs"], t["grid"], ()) for t in tables}
    print(f"{'rule':34} {'same':>6} {'worst test diff':>16} {'steps':>8} {'saved':>6}  tunings that differ")
    for rule, rungs in RULES.items():
        same, worst, spent, total, missing, differ = 0, 0.0, 0.0, 0.0, 0, []
        for t in tables:
            full_lr, full_steps = full[t["tuning"]]
            lr, steps = simulate(t["runs"], t["grid"], rungs)
            if lr is None or full_lr is None:
                missing += 1
                continue
            spent, total = spent + steps * t["steps"], total + full_steps * t["steps"]
            if lr == full_lr:
                same += 1
            else:
                diff = t["runs"][lr]["test"] - t["runs"][full_lr]["test"]
                worst = min(worst, diff)
                differ.append(f"{t['tuning']} ({lr:g} for {full_lr:g}: {diff:+.3f})")
        print(f"{rule:34} {same:>3}/{len(tables) - missing:<3} {worst:>+16.3f} {spent:>8,.0f} "
              f"{1 - spent / total:>6.0%}  {'; '.join(differ)}" + (f" [{missing} not replayable]" if missing else ""))


if __name__ == "__main__":
    main()
