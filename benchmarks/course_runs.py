"""Every training run of the course, counted, and every lesson timed: from empty caches, in the cpu profile.

Runs the lessons of a checkout (this one, or an older one given with ``--repo``) top to bottom in Jupyter kernels,
as ``ftcourse site`` does (two kernels side by side, one thread each), with every ``fit`` and ``Trainer.train``
recorded by ``benchmarks/runlog/sitecustomize.py``. Prints, per lesson: its wall time, how many training runs it
made and the optimiser steps they took, and how many of those runs the course had already made (the same starting
weights, data and settings: trained twice, in another lesson or in the same one), and for each of those where both
were asked for (the notebook line and the library calls); a repeat marked "timing" is the 12 steps on random images
with which a lesson's cost estimate measures this machine's speed (``experiments.measured_seconds_per_step``). All
lessons share one fresh cache folder, as they do on a learner's machine, so a run that an earlier lesson made and
cached is read back, not trained again. Lessons of one number (04 and 04b)
run one after the other, as a learner runs them: the second reuses the first's runs.

    python benchmarks/course_runs.py                       # this checkout
    python benchmarks/course_runs.py --repo /tmp/before    # another checkout, e.g. `git worktree add /tmp/before REV`
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_lesson(notebook: Path, cache: Path, logs: Path, threads: int) -> dict:
    log = logs / f"{notebook.stem}.jsonl"
    env = {**os.environ, "FTCOURSE_PROFILE": "cpu", "FTCOURSE_CLAIMS": "learner",  # a failed claim is counted, and
           "FTCOURSE_CACHE": str(cache), "FTCOURSE_RUNS": str(cache / "runs_dir"),  # the lesson goes on (its
           "FTCOURSE_RUN_LOG": str(log),  # time is all of it); checkpoints of long runs start empty too
           "FTCOURSE_RUN_LOG_TRAINER": "1" if notebook.stem.startswith("09") else "",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(HERE / "runlog"), str(notebook.parents[1])])}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                           "--ExecutePreprocessor.timeout=3600", "--output-dir", str(logs), str(notebook)],
                          cwd=notebook.parent, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    executed = logs / notebook.name
    lines = [line for cell in (json.loads(executed.read_text())["cells"] if executed.exists() else [])
             for output in cell.get("outputs", []) if output.get("output_type") == "stream"
             for line in "".join(output["text"]).splitlines()]
    return {"lesson": notebook.stem, "seconds": round(seconds, 1), "ok": done.returncode == 0,
            "error": done.stderr[-2000:] if done.returncode else "", "entries": entries,
            "claims": sum(line.startswith(("✓ holds", "✗ FAILS")) for line in lines),
            "failed": [line for line in lines if line.startswith("✗ FAILS")]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose lessons run")
    parser.add_argument("--jobs", type=int, default=2, help="lessons side by side (one thread each)")
    parser.add_argument("--only", nargs="*", help="lesson names (default: every lesson)")
    parser.add_argument("--out", type=Path, help="a JSON file for the results")
    parser.add_argument("--keep", type=Path, help="a folder to keep the executed notebooks in (to read their claims)")
    args = parser.parse_args()
    notebooks = sorted((args.repo / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if any(n.stem.startswith(o) for o in args.only)]
    threads = 1 if args.jobs > 1 else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="ftcourse-course-runs-") as folder:
        cache, logs = Path(folder) / "cache", Path(folder) / "logs"
        logs.mkdir()
        started = time.perf_counter()
        groups = collections.defaultdict(list)  # 04, then 04b: the second reuses the first's runs
        for notebook in notebooks:
            groups[notebook.stem[:2]].append(notebook)
        with ThreadPoolExecutor(args.jobs) as pool:
            done = pool.map(lambda group: [run_lesson(n, cache, logs, threads) for n in group], groups.values())
            results = [result for group in done for result in group]
        wall = time.perf_counter() - started
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for executed in logs.glob("*.ipynb"):
                shutil.copy(executed, args.keep / executed.name)
    seen = {}  # key -> (lesson, entry) of the run's first making
    repeats = []
    print(f"{'lesson':<34}{'seconds':>8}{'runs':>6}{'steps':>8}{'again':>7}{'claims':>8}{'failed':>8}"
          "  (again: runs the course had made)")
    for result in results:  # in the lessons' order: a repeat counts against the later lesson
        fresh = [e for e in result["entries"] if not e["resumed"]]
        again = 0
        for e in fresh:
            if e["key"] in seen:
                again += 1
                repeats.append((seen[e["key"]], (result["lesson"], e)))
            else:
                seen[e["key"]] = (result["lesson"], e)
        result.update(runs=len(fresh), steps=sum(e["steps"] for e in result["entries"]), again=again)
        flag = "" if result["ok"] else "  FAILED: " + result["error"].strip().splitlines()[-1][:100]
        print(f"{result['lesson']:<34}{result['seconds']:>8.0f}{result['runs']:>6}{result['steps']:>8}"
              f"{result['again']:>7}{result['claims']:>8}{len(result['failed']):>8}{flag}")
        for line in result["failed"]:
            print(f"    {line}")
    print(f"{'all':<34}{sum(r['seconds'] for r in results):>8.0f}{sum(r['runs'] for r in results):>6}"
          f"{sum(r['steps'] for r in results):>8}{sum(r['again'] for r in results):>7}")
    for (first_lesson, first), (lesson, again) in repeats:  # where each run made twice was asked for, both times
        timing = "experiments.measured_seconds_per_step" in again.get("where", [])  # a cost estimate's 12 steps
        print(f"again{' (timing)' if timing else ''}: {lesson} (lr {again.get('lr')}, {again['steps']} steps) "
              f"made first by {first_lesson}")
        for label, entry in (("first", first), ("again", again)):
            print(f"    {label}: " + " > ".join(entry.get("where", [])))
    print(f"wall {wall:.0f} s with {args.jobs} kernels of {threads} thread(s); the cache held {cache_bytes / 1e6:.1f} MB")
    if args.out:
        for result in results:
            del result["entries"]
        args.out.write_text(json.dumps({"wall": wall, "cache_bytes": cache_bytes, "lessons": results}, indent=1))


if __name__ == "__main__":
    main()
