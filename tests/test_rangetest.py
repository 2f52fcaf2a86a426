"""Tests for ftcourse.rangetest: the LR range test (lr_find) and the reading of its curve."""

import math

import matplotlib.pyplot as plt
import pytest
import torch

from ftcourse import models
from ftcourse.data import ImageData, Task
from ftcourse.rangetest import LRFinderResult, lr_find, read_curve, read_losses
from ftcourse.train import evaluate, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=8, blocks=(1, 1))


@pytest.fixture(scope="module")
def full_test(learnable):
    """One complete range test on the learnable problem (100 steps, up to lr 10 or the blow-up)."""
    return lr_find(small_model(), learnable, batch_size=32)


def test_the_model_is_exactly_as_before_afterwards(learnable):
    model = small_model()
    for p in model.stem.parameters():  # a frozen stage, whose flags must survive too
        p.requires_grad_(False)
    model.eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = lr_find(model, learnable, steps=20, end_lr=1.0, batch_size=32)
    after = model.state_dict()
    assert len(result.lrs) > 1
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)  # weights and BatchNorm statistics
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.layer1.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())


def test_the_rate_grows_exponentially_from_start_to_end(learnable):
    result = lr_find(small_model(), learnable, start_lr=1e-5, end_lr=1e-2, steps=20, batch_size=32)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 20  # 1e-2 is too small to blow up
    assert not result.diverged
    assert result.lrs[0] == pytest.approx(1e-5) and result.lrs[-1] == pytest.approx(1e-2)
    expected = [1e-5 * 1000 ** (i / 19) for i in range(20)]
    assert result.lrs == pytest.approx(expected, rel=1e-9)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([1000 ** (1 / 19)] * 19)


def test_smoothed_loss_is_the_bias_corrected_moving_average_of_the_raw_losses(learnable):
    result = lr_find(small_model(), learnable, end_lr=1e-2, steps=12, batch_size=32, smoothing=0.9)
    average, expected = 0.0, []
    for i, loss in enumerate(result.losses):
        average = 0.9 * average + 0.1 * loss
        expected.append(average / (1 - 0.9 ** (i + 1)))
    assert result.smoothed == pytest.approx(expected, rel=1e-12)
    assert result.smoothed[0] == pytest.approx(result.losses[0])  # bias correction: no pull towards 0


def test_the_test_stops_early_when_the_loss_blows_up(learnable):
    result = lr_find(small_model(), learnable, end_lr=1e6, steps=100, batch_size=32)
    assert result.diverged and len(result.lrs) < 100
    last, best = result.smoothed[-1], min(result.smoothed[:-1])
    assert not math.isfinite(last) or last > 4.0 * best


def test_the_suggestion_lies_inside_the_range_and_trains_the_model(full_test, learnable):
    assert full_test.lrs[0] < full_test.suggestion < full_test.lr_at_min <= full_test.lrs[-1]
    assert full_test.min_over_10 == pytest.approx(full_test.lr_at_min / 10)
    model = small_model()
    before = evaluate(model, learnable)["loss"]
    history = fit(model, learnable, epochs=2, lr=full_test.suggestion, batch_size=32, schedule="constant")
    assert not history.diverged
    assert evaluate(model, learnable)["loss"] < 0.7 * before


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10.0 ** (i - 5) for i in range(11)]
    # Central slopes before the minimum (index 6): -0.10, -0.48, -0.45, -0.10, -0.15 per factor 100 of rate. After
    # the minimum there is a steeper fall (index 9), which must not count.
    smoothed = [1.0, 0.98, 0.9, 0.5, 0.45, 0.4, 0.3, 3.0, 4.0, 0.31, 0.32]
    suggestion, lr_at_min = read_curve(lrs, smoothed)
    assert suggestion == lrs[2] and lr_at_min == lrs[6]


def test_the_first_tenth_of_the_steps_is_not_read():
    """The moving average's first values rest on a few mini-batches: a steep step among them is noise (fastai's
    lr_find leaves out the first tenth too)."""
    lrs = [10.0 ** (i / 4 - 5) for i in range(20)]
    smoothed = [2.0, 1.2, 1.25, 1.22, 1.2, 1.18, 1.1, 0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.6, 2, 3]
    assert read_curve(lrs, smoothed)[0] == lrs[1]  # read from step 1: the noisy first step wins
    assert read_curve(lrs, smoothed, skip=2)[0] == lrs[7]


def test_a_record_read_again_gives_lr_finds_suggestion(full_test):
    assert read_losses(full_test.lrs, full_test.losses, steps=100) == (full_test.suggestion, full_test.lr_at_min)


def test_a_loss_that_never_falls_gives_a_warning():
    with pytest.warns(UserWarning, match="did not fall"):
        suggestion, lr_at_min = read_curve([1e-3, 1e-2, 1e-1], [0.5, 0.6, 0.9])
    assert suggestion == lr_at_min == 1e-3


def test_parameter_groups_keep_their_ratio_along_the_ramp(learnable):
    def stem_changes(body_lr):
        model = small_model()
        seen = []
        model.stem.register_forward_pre_hook(lambda module, args: seen.append(module[0].weight.detach().clone()))
        groups = [{"params": model.head.parameters(), "lr": 1.0},
                  {"params": [p for n, p in model.named_parameters() if not n.startswith("head")], "lr": body_lr}]
        result = lr_find(model, learnable, params=groups, end_lr=1.0, steps=15, batch_size=32)
        return result, (seen[-1] - seen[0]).abs().max().item()

    result, frozen_ish = stem_changes(body_lr=1e-9)  # the body's rate stays a billionth of the head's
    _, moving = stem_changes(body_lr=1.0)
    assert result.lrs[0] == pytest.approx(1e-5)  # the recorded rates are the first group's
    assert frozen_ish < 1e-8 < 1e-3 < moving


def test_a_task_is_tested_on_its_training_split(learnable):
    images, labels = learnable
    # The val and test splits have a label the 2-class head cannot produce: lr_find must not touch them.
    wrong = ImageData(images[:4], torch.full((4,), 7), ["dark", "bright"])
    task = Task("bright", ImageData(images, labels, ["dark", "bright"]), wrong, wrong)
    result = lr_find(small_model(), task, end_lr=1e-2, steps=10, batch_size=32)
    assert len(result.lrs) == 10
    with pytest.raises(ValueError, match="head has only 2 classes"):
        lr_find(small_model(), task.test, steps=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"start_lr": 1.0, "end_lr": 1.0}, "start_lr must be smaller than end_lr"),
    ({"start_lr": 10.0, "end_lr": 1e-3}, "start_lr must be smaller than end_lr"),
    ({"steps": 9}, "steps must be at least 10"),
    ({"start_lr": 0.0}, "must be positive"),
    ({"start_lr": -1e-3, "end_lr": 1.0}, "must be positive"),
    ({"end_lr": -1.0}, "must be positive"),
    ({"smoothing": 1.0}, r"smoothing must lie in \[0, 1\)"),
    ({"diverge_factor": 1.0}, "diverge_factor must be greater than 1"),
    ({"optimizer": "adam"}, "Unknown optimizer"),
], ids=["equal rates", "reversed rates", "few steps", "zero rate", "negative start", "negative end", "smoothing",
        "diverge factor", "optimizer"])
def test_bad_arguments_raise_a_message_that_says_what_to_do(learnable, kwargs, message):
    model = small_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        lr_find(model, learnable, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plot_has_a_log_rate_axis_labelled_axes_and_the_suggestion(full_test):
    fig = full_test.plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "learning rate" in ax.get_xlabel() and "loss" in ax.get_ylabel()
    assert any("steepest" in text.get_text() for text in ax.get_legend().get_texts())
    plt.close(fig)
    fig, ax = plt.subplots()
    assert full_test.plot(ax=ax) is fig
    plt.close(fig)


def test_repr_names_the_steps_and_the_suggested_rate(full_test):
    text = repr(full_test)
    assert text.startswith("LRFinderResult(") and f"{len(full_test.lrs)} steps" in text
    assert f"suggestion {full_test.suggestion:.2g}" in text
    assert isinstance(full_test, LRFinderResult)
