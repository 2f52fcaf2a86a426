"""The ``ftcourse`` command.

- ``ftcourse check``: versions, device, precision, and a 5-second training run that shows the loop works here.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time


def check(args) -> int:
    import numpy
    import torch
    import torchvision

    from . import __version__
    from .env import setup
    from .models import resnet
    from .train import evaluate, fit

    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"numpy {numpy.__version__}, ftcourse {__version__}")
    env = setup(seed=0, profile=args.profile)
    if env.device.type == "cuda":
        props = torch.cuda.get_device_properties(env.device)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
              f"{props.major}.{props.minor}")
    print(f"precision: {env.precision}")

    # A problem any network learns in seconds: is the image bright or dark?
    g = torch.Generator().manual_seed(0)
    brightness = torch.rand(1024, generator=g)
    noise = torch.randint(-60, 60, (1024, 3, 32, 32), generator=g)
    images = (brightness.view(-1, 1, 1, 1) * 255 + noise).clamp(0, 255).to(torch.uint8)
    labels = (brightness > 0.5).long()
    model = resnet(2, width=16).to(env.device)
    start = time.perf_counter()
    history = fit(model, (images, labels), epochs=2, lr=0.05, batch_size=128, progress=False)
    accuracy = evaluate(model, (images, labels))["accuracy"]
    print(f"smoke test: 2 epochs in {time.perf_counter() - start:.1f} s, {history.images_per_second:,.0f} images/s, "
          f"loss {history.train_loss[0]:.3f} -> {history.train_loss[-1]:.3f}, accuracy {accuracy:.2f}")
    ok = history.train_loss[-1] < history.train_loss[0] and history.diverged is None
    print("OK: the training loop works on this machine." if ok else "PROBLEM: the loss did not fall.")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ftcourse", description="Fine-tuning and transferability, hands on.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="versions, device, and a 5-second training smoke test")
    p.add_argument("--profile", choices=["quick", "cpu", "gpu"], default=None)
    p.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
