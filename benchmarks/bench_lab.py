"""How fast the transfer lab renders images, per task (target: 20,000 images/s on a 2-core CPU).

    python benchmarks/bench_lab.py            # on the CPU
    python benchmarks/bench_lab.py --device cuda
"""

import argparse
import time

import torch

from ftcourse import lab


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-class", type=int, default=2500)
    args = parser.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} threads")
    print(f"{'task':<10}{'images':>8}{'seconds':>9}{'images/s':>10}")
    lab.make_images("source", 64, device=args.device)  # warm-up
    for task in lab.TASKS:
        start = time.perf_counter()
        data = lab.make_images(task, args.per_class, relatedness=0.5, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"{task:<10}{len(data):>8}{seconds:>9.2f}{len(data) / seconds:>10,.0f}")


if __name__ == "__main__":
    main()
