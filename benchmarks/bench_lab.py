"""How fast the transfer lab renders images, per task (target: 20,000 images/s on a 2-core CPU).

    python benchmarks/bench_lab.py            # on the CPU
    python benchmarks/bench_lab.py --device cuda
"""

import argparse
import statistics
import time

import torch

from ftcourse import lab
from ftcourse.env import device_name


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-class", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3, help="timings per task; the median and the worst print")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {args.device} ({device_name(device)}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.repeats} timings per task")
    print(f"{'task':<10}{'images':>8}{'median img/s':>14}{'worst img/s':>13}")
    lab.make_images("source", 64, device=args.device)  # warm-up (and the noise bank)
    for task in lab.TASKS:
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            data = lab.make_images(task, args.per_class, relatedness=0.5, device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates.append(len(data) / (time.perf_counter() - start))
        print(f"{task:<10}{len(data):>8}{statistics.median(rates):>14,.0f}{min(rates):>13,.0f}")


if __name__ == "__main__":
    main()
