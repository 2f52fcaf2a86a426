"""Figures the course draws again and again: image grids, training curves, a live loss plot.

Every function returns its matplotlib figure (and never calls ``plt.show()``), so notebooks can display, save or
inspect it.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import torch


def show_images(images: torch.Tensor, titles=None, *, ncols: int = 8, title: str | None = None, size: float = 1.2):
    """A grid of images ``(N, C, H, W)`` (uint8 or floats in [0, 1]) with an optional title under each."""
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    size = min(size, 10 / ncols)  # at most 10 inches wide: a web page's width
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            picture = images[k].permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture,
                      cmap="gray" if picture.shape[-1] == 1 else None)
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, axes=None):
    """Left: the training loss of every step (and its moving average). Right: accuracy at each log point."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    else:
        fig = axes[0].figure
    loss_ax, acc_ax = axes
    steps = range(len(history.step_loss))
    loss_ax.plot(steps, history.step_loss, alpha=0.35, label="per step")
    if len(history.step_loss) >= 10:
        window = max(2, len(history.step_loss) // 20)
        kernel = torch.ones(window) / window
        smooth = torch.nn.functional.conv1d(torch.tensor(history.step_loss).view(1, 1, -1), kernel.view(1, 1, -1))
        loss_ax.plot(range(window - 1, len(history.step_loss)), smooth.flatten().tolist(),
                     label=f"mean of {window}")
    if history.diverged:
        loss_ax.axvline(history.diverged["step"], color="red", ls="--", label="diverged")
    loss_ax.set(xlabel="step", ylabel="training loss (cross-entropy)", title="Loss")
    loss_ax.legend()
    acc_ax.plot(history.log_step, history.train_acc, marker="o", label="train (since the previous point)")
    if history.val_acc:
        acc_ax.plot(history.log_step, history.val_acc, marker="o", label="validation")
    acc_ax.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend()
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """Redraws one figure in place in a notebook each time it is called with the history so far."""

    def __init__(self):
        from IPython.display import display

        self.fig, self.axes = plt.subplots(1, 2, figsize=(10, 3.5))
        plt.close(self.fig)  # we display it ourselves; keep pyplot from showing a second copy
        self.handle = display(self.fig, display_id=True)

    def __call__(self, history) -> None:
        for ax in self.axes:
            ax.clear()
        plot_history(history, axes=self.axes)
        self.handle.update(self.fig)


# One colour per way of training, in every figure of every lesson that compares them: scratch always grey, the
# linear probe olive, full fine-tuning blue (its variants with another rate in other blues), and so on. The methods
# have one name in every lesson ("scratch", "probe", "finetune", then each lesson's own); lesson 02's "fine-tuned"
# and "frozen" stages take the colours of fine-tuning and of the probe.
METHOD_COLOURS = {
    "scratch": "#7f7f7f",
    "probe": "#bcbd22",  # the new head alone (a dense task's too: lesson 08)
    "finetune": "#1f77b4", "fine-tuned": "#1f77b4",
    "frozen": "#bcbd22",  # lesson 02: copied stages kept frozen, as a linear probe keeps all of them
    "lower rate": "#9ecae1", "higher rate": "#08306b", "tuned rate": "#6baed6",
    "LP-FT": "#2ca02c", "L2-SP": "#ff9896", "re-init top": "#8c564b", "another source": "#e377c2",
    "last stage": "#17becf", "bitfit": "#d62728", "batchnorm": "#ff7f0e", "lora": "#9467bd",
    "surgical:stem": "#98df8a", "surgical:layer1": "#c49c94", "surgical:layer2": "#f7b6d2",
    "surgical:layer3": "#c5b0d5",
    "early stages frozen": "#637939",  # lesson 08: fine-tuning above layer1
}
METHOD_MARKERS = {"finetune": "s", "scratch": "x", "probe": "v", "lora": "D", "bitfit": "o", "batchnorm": "o"}


def method_colour(method: str) -> str:
    """The colour of ``method`` in every figure of the course (black for a method it does not know)."""
    return METHOD_COLOURS.get(method, "#000000")


def accuracy_vs_parameters(summary, *, panels: str = "target", title: str | None = None):
    """Test accuracy against trainable parameters (log scale), one point per method, one panel per ``panels`` value.

    ``summary`` is a table with the columns ``panels``, ``method``, ``trainable``, ``accuracy_mean`` and
    ``accuracy_std`` (over seeds: the error bars). The further up and to the left, the better the method's trade.
    """
    names = list(dict.fromkeys(summary[panels]))
    # at most 10 inches wide (a web page's width), the legend below the panels rather than beside them
    fig, axes = plt.subplots(1, len(names), figsize=(min(10.0, 3.0 * len(names) + 0.8), 3.6), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        part = summary[summary[panels] == name]
        for _, row in part.iterrows():
            ax.errorbar(row["trainable"], row["accuracy_mean"], yerr=row["accuracy_std"], capsize=3,
                        marker=METHOD_MARKERS.get(row["method"], "^"), markersize=7, linestyle="none",
                        color=method_colour(row["method"]), label=row["method"])
        ax.set_xscale("log")
        ax.set(title=str(name), xlabel="trainable parameters (log scale)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (mean ± std over seeds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Error analysis: what a trained model gets wrong.

def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The confusion matrix as counts: entry (i, j) is how many images of true class i were predicted as j."""
    labels, predicted = labels.detach().cpu().long(), predicted.detach().cpu().long()
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).view(num_classes,
                                                                                              num_classes)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes, *, title: str | None = None):
    """The confusion matrix, each row as shares of its true class (a row sums to 1), with the counts written in.

    The diagonal is each class's recall; a bright cell off it is a pair the model mixes up, and the row says which
    way: true class on the left, predicted class along the bottom."""
    counts = confusion_counts(labels, predicted, len(classes))
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(0.6 * len(classes) + 2, 0.55 * len(classes) + 1.4))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted class", ylabel="true class", title=title or "confusion matrix (rows: true class)")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def most_wrong(images: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, classes, *, n: int = 8,
               title: str | None = None):
    """The ``n`` images with the highest loss (the lowest probability given to the true class), each titled
    "true → predicted (probability of the prediction)": fastai's "top losses". Wrong and confident ones come first;
    they show what the model learned to look at -- or a label that is wrong."""
    probabilities = torch.softmax(scores.detach().float().cpu(), dim=1)
    labels = labels.detach().cpu().long()
    true_probability = probabilities[torch.arange(len(labels)), labels]
    order = torch.argsort(true_probability)[:n]
    predicted = probabilities.argmax(dim=1)
    titles = [f"{classes[labels[k]]}→{classes[predicted[k]]} ({probabilities[k, predicted[k]]:.2f})" for k in order]
    return show_images(images.detach().cpu()[order], titles, ncols=n,
                       title=title or "the highest losses: true → predicted (its probability)")
