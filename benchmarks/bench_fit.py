"""Throughput of ftcourse's training loop against the naive tutorial loop, side by side, in one run.

Both loops train the same model on the same images for the same number of images, with the same augmentation
(random crop with 4 pixels of padding, horizontal flip) and SGD:

- naive: what introductory tutorials show -- a torch ``DataLoader`` whose dataset turns each uint8 array into a PIL
  image and runs torchvision's per-sample transforms on the CPU (2 worker processes), fp32, ``.to(device)`` per batch
  and ``loss.item()`` every step;
- fit:   ``ftcourse.train.fit`` -- data resident on the device as uint8, batched augmentation on the device, mixed
  precision where the GPU has it, channels_last, fused optimiser, no per-step host sync.

``fit`` runs in every memory layout and precision this device offers, each a row next to the naive loop: contiguous
(NCHW) or channels_last (NHWC) weights and images, fp32 or bf16 autocast (and fp16 on a GPU). The row marked
"default" is what ``fit`` does here unless told otherwise (:func:`ftcourse.env.channels_last_for`,
:func:`ftcourse.env.precision_for`). On a CPU without native bf16 (avx512_bf16 or AMX), bf16 is emulated.

On a GPU it also prints model FLOPs utilisation (MFU): training FLOPs per image (3 x the forward FLOPs counted by
torch's FlopCounterMode) x images/s, divided by the GPU's bf16 matmul throughput measured here.

    python benchmarks/bench_fit.py              # CPU: the course's lab ResNet, batch 128
    python benchmarks/bench_fit.py --gpu-model  # the ResNet-10 (width 64), batch 512 used for the GPU target

The images are the lab's source task (8 shapes), rendered once before either loop starts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ftcourse.env import channels_last_for, cpu_has_native_bf16, precision_for, setup
from ftcourse import lab
from ftcourse.models import resnet
from ftcourse.pretrain import RECIPE
from ftcourse.train import fit


class NaiveDataset(torch.utils.data.Dataset):
    """Like torchvision's CIFAR10: uint8 HWC arrays, a PIL image per item, per-sample transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def naive_loop(model, images, labels, *, epochs, batch_size, lr, device, workers, warmup_steps=5) -> float:
    loader = torch.utils.data.DataLoader(NaiveDataset(images, labels), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    seen, step, start = 0, 0, None
    for _ in range(epochs):
        for x, y in loader:
            if step == warmup_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            running_loss = loss.item()  # noqa: F841 -- the per-step sync every tutorial has
            seen += len(y)
            step += 1
    if start is None:
        raise SystemExit(f"The naive loop ran only {step} steps, all of them warm-up; give it more --images or "
                         f"--epochs (at least {warmup_steps + 1} batches of {batch_size}).")
    return seen / (time.perf_counter() - start)


def fit_loop(model, images, labels, *, epochs, batch_size, lr, compile, channels_last, precision) -> float:
    data = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long())
    options = dict(lr=lr, batch_size=batch_size, augment=True, schedule="constant", progress=False, compile=compile,
                   channels_last=channels_last, precision=precision)
    # A short warm-up run (cuDNN autotuning, torch.compile, oneDNN primitives), then the timed run.
    fit(model, (data[0][: 8 * batch_size], data[1][: 8 * batch_size]), epochs=1, **options)
    history = fit(model, data, epochs=epochs, **options)
    return history.images_per_second


def training_flops_per_image(model, device) -> float:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32, device=device))
    return 3.0 * counter.get_total_flops()  # backward costs about twice the forward


def bf16_peak_flops(device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return reps * 2 * 8192**3 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-model", action="store_true", help="ResNet-10 width 64, batch 512 (default on CUDA)")
    parser.add_argument("--images", type=int, default=None, help="training images (default: 4096 CPU, 50000 GPU)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the naive loop")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in fit")
    parser.add_argument("--fp32-only", action="store_true",
                        help="leave out the other precisions (gpu_check.sh's CPU smoke: emulated bf16 is slow)")
    args = parser.parse_args()

    env = setup(seed=0, verbose=True)
    device = env.device
    big = args.gpu_model or device.type == "cuda"
    config = ({"width": 64, "blocks": (1, 1, 1, 1), "stem_stride": 1} if big
              else {k: v for k, v in RECIPE["model"].items() if k != "num_classes"})
    batch_size = 512 if big else 128
    n = args.images or (50_000 if device.type == "cuda" else 8192)
    epochs = args.epochs or (3 if device.type == "cuda" else 2)
    source = lab.make_images("source", n // len(lab.SOURCE_SHAPES))
    images = source.images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC uint8, as a tutorial's dataset holds
    labels = source.labels.numpy()
    model_name = "ResNet-10 (width 64)" if big else "the course's lab ResNet (width 16, stride-2 stem)"

    torch.manual_seed(0)
    naive = naive_loop(resnet(10, **config).to(device), images, labels, epochs=epochs, batch_size=batch_size,
                       lr=0.05, device=device, workers=args.workers)
    precisions = ["fp32"] if args.fp32_only else ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    default = (channels_last_for(device), precision_for(device))
    rows = [("naive", None, "fp32", naive)]
    for channels_last in (False, True):
        for precision in precisions:
            torch.manual_seed(0)
            model = resnet(10, **config).to(device)
            speed = fit_loop(model, images, labels, epochs=epochs, batch_size=batch_size, lr=0.05,
                             compile=args.compile, channels_last=channels_last, precision=precision)
            rows.append(("fit", channels_last, precision, speed))

    flops = training_flops_per_image(resnet(10, **config).to(device), device)
    bf16_note = ("" if device.type != "cpu" else
                 "; this CPU has native bf16" if cpu_has_native_bf16() else "; bf16 is emulated on this CPU")
    print(f"\nmodel: {model_name}, {flops / 3 / 1e6:.1f} MFLOPs forward per 32x32 image; batch {batch_size}, "
          f"{len(labels)} images x {epochs} epochs; {torch.get_num_threads()} threads{bf16_note}")
    print(f"{'loop':<6}{'layout':<15}{'precision':<11}{'images/s':>10}{'TFLOP/s':>9}{'vs naive':>10}")
    for loop, channels_last, precision, speed in rows:
        layout = "-" if channels_last is None else "channels_last" if channels_last else "contiguous"
        mark = "  <- default" if (channels_last, precision) == default else ""
        print(f"{loop:<6}{layout:<15}{precision:<11}{speed:>10,.0f}{speed * flops / 1e12:>9.2f}"
              f"{speed / naive:>9.2f}x{mark}")
    fast = next(speed for _, channels_last, precision, speed in rows if (channels_last, precision) == default)
    print(f"fit (default) / naive: {fast / naive:.2f}x")
    if device.type == "cuda":
        peak = bf16_peak_flops(device)
        print(f"measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s; MFU of fit: {fast * flops / peak:.1%}, "
              f"of naive: {naive * flops / peak:.1%}")


if __name__ == "__main__":
    main()
