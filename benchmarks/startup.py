"""How long the command line takes to answer, and a tour read back from its cache. Side by side, in one run.

Each figure is the median wall time of several runs of a fresh process (what a person waits for at the prompt):

- ``ftcourse --help``, ``ftcourse grade --help`` and ``ftcourse --version``: the parser is built without torch;
- ``python -c "import torch"``: what every command that trains pays first, for comparison;
- with ``--tour-dir DIR``: ``ftcourse tour`` in DIR, run once to fill its run cache if needed (minutes), then timed
  from the cache.

    python benchmarks/startup.py                          # about 20 s
    python benchmarks/startup.py --tour-dir /tmp/tourdir  # plus a tour (2-3 min the first time)
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

FTCOURSE = [sys.executable, "-m", "ftcourse.cli"]


def wall(command, repeats: int, cwd=None) -> float:
    """The median wall time of ``repeats`` runs of ``command``, each in a fresh process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tour-dir", default=None, help="also time a tour from its cache, run in this folder")
    args = parser.parse_args()
    rows = [("ftcourse --help", wall([*FTCOURSE, "--help"], args.repeats)),
            ("ftcourse grade --help", wall([*FTCOURSE, "grade", "--help"], args.repeats)),
            ("ftcourse --version", wall([*FTCOURSE, "--version"], args.repeats)),
            ("python -c 'import torch' (for comparison)", wall([sys.executable, "-c", "import torch"], args.repeats))]
    if args.tour_dir:
        folder = Path(args.tour_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tour = [*FTCOURSE, "tour", "--out", str(folder / "tour.png")]
        start = time.perf_counter()
        subprocess.run(tour, cwd=folder, check=True, capture_output=True)
        rows.append(("ftcourse tour, first run in the folder (fills the cache if empty)", time.perf_counter() - start))
        rows.append(("ftcourse tour from its cache", wall(tour, max(1, args.repeats // 2), cwd=folder)))
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f} s")


if __name__ == "__main__":
    main()
