"""How much faster does `ftcourse grade --jobs 2` grade a class than one submission at a time? Side by side.

Builds a class of 20 students from the course's own notebooks -- worked solutions of assignments 01, 02, 03, 05 and
07, untouched exercise notebooks of 02, and two capstones (the worked solution, which trains its recipe) -- and grades
the folder twice on this machine, with the same course secret: ``--jobs 1``, then ``--jobs 2``. Prints each wall
time, the ratio, and whether both tables agree row for row.

    python benchmarks/grading_jobs.py            # about 3 minutes on 2 cores
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from ftcourse.grading import course_secret, grade

ROOT = Path(__file__).resolve().parent.parent
CLASS = [("solutions", "01_pretraining_vs_finetuning", 4), ("solutions", "02_freezing", 4),
         ("solutions", "03_learning_rates", 3), ("exercises", "02_freezing", 3),
         ("solutions", "05_measuring_transferability", 2), ("solutions", "07_efficient_finetuning", 2),
         ("solutions", "10_capstone", 2)]


def make_class(folder: Path) -> int:
    folder.mkdir(parents=True)
    n = 0
    for where, name, copies in CLASS:
        for _ in range(copies):
            shutil.copy(ROOT / where / f"{name}.ipynb", folder / f"student{n:02d}.ipynb")
            n += 1
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_class(tmp / "class")
        secret = tmp / "course.secret"
        course_secret.create(secret)
        tables, seconds = {}, {}
        for jobs in args.jobs:
            start = time.perf_counter()
            rows = grade.grade(tmp / "class", tmp / f"grades-{jobs}.csv", secret_file=secret, jobs=jobs,
                               verbose=False)
            seconds[jobs] = time.perf_counter() - start
            tables[jobs] = [(r["student"], r["assignment"], str(r["points"]), str(r["possible"])) for r in rows]
            print(f"--jobs {jobs}: {n} students, {seconds[jobs]:.0f} s", flush=True)
    first = args.jobs[0]
    for jobs in args.jobs[1:]:
        print(f"--jobs {jobs} / --jobs {first}: {seconds[jobs] / seconds[first]:.2f}x the wall time; "
              f"the same table: {tables[jobs] == tables[first]}")
    print(f"{os.cpu_count()} cores; points: " + ", ".join(f"{s} {a} {p}/{q}" for s, a, p, q in tables[first]))


if __name__ == "__main__":
    main()
