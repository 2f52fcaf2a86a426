"""The CUDA paths of the training engine: mixed precision, the gradient scaler, channels_last, fused optimisers,
torch.compile, divergence between syncs, resuming, and the lab rendered on the GPU.

Marked ``cuda``: skipped where there is no GPU (CI has none). ``benchmarks/gpu_check.sh`` runs them on a GPU.
"""

import pytest
import torch

from ftcourse import lab, models
from ftcourse.train import Stepper, evaluate, fit

pytestmark = pytest.mark.cuda

BF16 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def small_model(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=16, blocks=(1, 1), stem_stride=2).cuda()


@pytest.fixture
def learnable_cuda(learnable):
    return tuple(t.cuda() for t in learnable)


@pytest.fixture
def deterministic():
    """Deterministic cuDNN kernels, so that two runs of the same steps give the same weights."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("precision", ["fp32", "fp16", pytest.param("bf16", marks=pytest.mark.skipif(
    not BF16, reason="bf16 needs compute capability 8.0+"))])
def test_loss_falls_and_the_model_learns_at_every_precision(learnable_cuda, precision):
    model = small_model()
    history = fit(model, learnable_cuda, learnable_cuda, steps=40, lr=0.05, batch_size=32, precision=precision,
                  sync_every=10)
    assert history.config["precision"] == precision and not history.diverged
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_acc[-1] > 0.9


def test_auto_precision_is_bf16_on_recent_gpus_and_fp16_on_older_ones():
    history = fit(small_model(), (torch.zeros(8, 3, 16, 16, dtype=torch.uint8, device="cuda"),
                                  torch.zeros(8, dtype=torch.long, device="cuda")), steps=1)
    assert history.config["precision"] == ("bf16" if BF16 else "fp16")


@pytest.mark.parametrize("precision, scaled", [("fp16", True), ("fp32", False), pytest.param(
    "bf16", False, marks=pytest.mark.skipif(not BF16, reason="bf16 needs compute capability 8.0+"))])
def test_the_gradient_scaler_is_used_only_for_fp16(learnable_cuda, precision, scaled):
    stepper = Stepper(small_model(), lr=0.05, precision=precision)
    assert stepper.scaler.is_enabled() is scaled
    images, labels = learnable_cuda
    loss, _ = stepper.step(images[:32], labels[:32])
    assert torch.isfinite(loss)
    if scaled:
        assert stepper.scaler.get_scale() > 1  # the loss was scaled up before backward


def test_gpu_steps_use_channels_last_and_a_fused_optimiser(learnable_cuda):
    model = small_model()
    stepper = Stepper(model, lr=0.05)
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert stepper.optimizer.defaults["fused"] is True
    fit(model, learnable_cuda, steps=4, batch_size=32)
    assert model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_divergence_between_syncs_names_the_first_bad_step(learnable_cuda):
    calls = [0]

    def explode_at_step_5(model):
        calls[0] += 1
        return torch.tensor(float("inf") if calls[0] == 6 else 0.0, device="cuda")

    with pytest.warns(UserWarning, match="step 5"):
        history = fit(small_model(), learnable_cuda, steps=20, batch_size=32, schedule="constant",
                      penalty=explode_at_step_5, sync_every=8)
    assert history.diverged["step"] == 5 and len(history.step_loss) == 6


def no_penalty(model):
    return torch.zeros((), device="cuda")


RUN = dict(steps=24, lr=0.05, batch_size=32, augment=True, seed=1, sync_every=4, checkpoint_every=8)


def test_resume_on_cuda_reaches_the_uninterrupted_weights(learnable_cuda, tmp_path, deterministic,
                                                          ctrl_c_at):
    reference = small_model()
    fit(reference, learnable_cuda, penalty=no_penalty, **RUN)
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="interrupted"):
        fit(small_model(), learnable_cuda, checkpoint=path, penalty=ctrl_c_at(13), **RUN)
    resumed = small_model(seed=7)
    fit(resumed, learnable_cuda, checkpoint=path, resume=True, penalty=no_penalty, **RUN)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), "resumed weights differ from the uninterrupted run"


def test_a_cuda_checkpoint_resumes_on_the_cpu(learnable, tmp_path, ctrl_c_at):
    """Colab's disconnect, the other way round: the run continues where no GPU is left."""
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="interrupted"):
        fit(small_model(), tuple(t.cuda() for t in learnable), checkpoint=path, penalty=ctrl_c_at(10),
            precision="fp16", **RUN)
    def cpu_penalty(model):
        return torch.zeros(())

    cpu_penalty.__qualname__ = "no_penalty"  # the same setting as the run that wrote the checkpoint
    with pytest.warns(UserWarning, match="written on cuda in fp16, on cpu in fp32"):
        history = fit(small_model().cpu(), learnable, checkpoint=path, resume=True, penalty=cpu_penalty,
                      precision="fp32", **RUN)
    assert history.steps_done == RUN["steps"] and not history.diverged


def test_compiled_model_trains(learnable_cuda):
    model = small_model()
    history = fit(model, learnable_cuda, steps=30, lr=0.05, batch_size=32, compile=True, sync_every=10)
    assert history.train_loss[-1] < history.train_loss[0]
    assert evaluate(model, learnable_cuda)["accuracy"] > 0.8


def test_the_lab_on_cuda_equals_the_cpu_up_to_rounding():
    for task in ("source", "conflict"):
        cpu = lab.make_images(task, 10, seed=0, device="cpu")
        gpu = lab.make_images(task, 10, seed=0, device="cuda")
        assert torch.equal(cpu.labels, gpu.labels.cpu())
        difference = (cpu.images.int() - gpu.images.cpu().int()).abs()
        assert difference.max() <= 2 and (difference > 0).float().mean() < 0.01
