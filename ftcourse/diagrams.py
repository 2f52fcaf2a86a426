"""Pictures of the course's ideas, drawn by code: each lesson shows the mechanism before it measures it.

Each function draws one diagram with matplotlib and returns the figure, so that it lives in the repository as code,
renders in Jupyter, in Colab and on the site, and changes with the course:

- :func:`copy_and_new_head` -- fine-tuning starts from a copy of the pretrained network with a new head (lesson 01);
- :func:`frozen_stages` -- which stages train in a linear probe, a partial fine-tune and a full one (lesson 02);
- :func:`recipe_timeline` -- the practitioner's recipe over one budget of steps: the head first, then every stage
  at its own rate, and the checkpoint kept (lesson 03b);
- :func:`ntg_map` -- how to read a map of the negative-transfer gap (lesson 04);
- :func:`lora` -- LoRA: a frozen weight plus a trained low-rank product B·A (lesson 07);
- :func:`dense_heads` -- one backbone, three heads: a class, a class per pixel, boxes from centre heatmaps (lesson 08).

They show what a method *is*, never a result: a diagram states no claim.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

FROZEN, TRAINED, NEW, NEUTRAL = "#c7ccd4", "#f4a259", "#5fa8d3", "#eef0f3"
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _box(ax, x, y, w, h, text, colour, *, fontsize=9, hatch=None, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour,
                                edgecolor="#34495e", linewidth=1.0, hatch=hatch))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def _arrow(ax, start, end, text="", *, colour="#34495e", offset=(0, 0.12), fontsize=8.5):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=colour, linewidth=1.2))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=fontsize, color=colour)


def _canvas(width, height, title):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set(xlim=(0, width), ylim=(0, height), aspect="equal")
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    return fig, ax


def _network(ax, y, head_text, head_colour, stage_colour=NEUTRAL, label=""):
    """A row of stage boxes ending in a head; returns the x where the row ends."""
    x = 1.4
    ax.text(0.05, y + 0.3, label, ha="left", va="center", fontsize=9, weight="bold")
    for name in STAGES:
        colour = stage_colour(name) if callable(stage_colour) else stage_colour
        _box(ax, x, y, 0.95, 0.6, name, colour)
        if name != STAGES[-1]:
            _arrow(ax, (x + 0.95, y + 0.3), (x + 1.15, y + 0.3))
        x += 1.15
    _arrow(ax, (x - 0.2, y + 0.3), (x + 0.05, y + 0.3))
    _box(ax, x + 0.05, y, 1.55, 0.6, head_text, head_colour)
    return x + 1.6


def copy_and_new_head():
    """Fine-tuning in one picture: the pretrained stages are copied as they are; the head, whose outputs are the
    source's classes, is thrown away and a new one with the target's classes starts at random. Then every stage
    trains on the target, starting from the copied weights (the starting point theta_pre of lesson 01)."""
    fig, ax = _canvas(9.6, 3.2, "Fine-tuning starts from a copy of the pretrained network, with a new head")
    _network(ax, 2.0, "head: 8 source\nshapes", FROZEN, NEUTRAL, "source")
    _network(ax, 0.4, "new head: the\ntarget's classes", NEW, TRAINED, "target")
    for i in range(len(STAGES)):
        x = 1.4 + 1.15 * i + 0.475
        _arrow(ax, (x, 1.95), (x, 1.05), "copy" if i == 0 else "", offset=(0.28, -0.1))
    ax.text(8.4, 1.52, "dropped:\nits classes are\nnot the target's", ha="center", va="center", fontsize=8, color="#7f8c8d")
    ax.legend(handles=[Rectangle((0, 0), 1, 1, fc=NEUTRAL, ec="#34495e", label="pretrained on the source"),
                       Rectangle((0, 0), 1, 1, fc=TRAINED, ec="#34495e", label="starts from the copy, trains"),
                       Rectangle((0, 0), 1, 1, fc=NEW, ec="#34495e", label="new, random, trains")],
              loc="lower center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    return fig


def frozen_stages():
    """Three ways to reuse a pretrained network, by which stages train: a linear probe trains the new head only; a
    partial fine-tune also trains the last stages; a full fine-tune trains every stage. A frozen stage's weights --
    and its BatchNorm running statistics -- stay as pretrained."""
    fig, ax = _canvas(9.6, 3.6, "Which stages train: frozen (grey) or fine-tuned (orange)")
    for row, (label, trained_from) in enumerate((("linear\nprobe", 5), ("partial:\nlast 2", 3), ("full", 0))):
        y = 2.5 - 1.05 * row
        _network(ax, y, "new head", NEW, lambda name, k=trained_from: TRAINED if STAGES.index(name) >= k else FROZEN,
                 label)
    ax.legend(handles=[Rectangle((0, 0), 1, 1, fc=FROZEN, ec="#34495e", label="frozen: requires_grad=False, BatchNorm "
                                 "in eval mode"),
                       Rectangle((0, 0), 1, 1, fc=TRAINED, ec="#34495e", label="fine-tuned"),
                       Rectangle((0, 0), 1, 1, fc=NEW, ec="#34495e", label="new head")],
              loc="lower center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    return fig


def recipe_timeline(steps: int = 100, head_share: float = 0.25, decay: float = 2.6, check_every: int = 25,
                    best_check: int = 2):
    """The practitioner's recipe over one budget of ``steps`` optimiser steps (lesson 03b), one row per stage: for
    the first ``head_share`` of the budget only the new head trains (its features frozen); then every stage trains,
    each ``decay`` times slower than the stage above it (the bar's shade is its rate: lr / decay^d, d counted down
    from the head); validation checks every ``check_every`` steps of that second phase, and the weights of the best
    one (here the ``best_check``-th, an example) are the ones kept, not the last. Augmentation, the fourth
    ingredient, changes the images of every step and so has no row."""
    fig, ax = plt.subplots(figsize=(9.6, 3.6))
    rows = ("head", *reversed(STAGES))
    head_steps = round(steps * head_share)
    for depth, name in enumerate(rows):
        y = len(rows) - 1 - depth
        if name == "head":
            ax.add_patch(Rectangle((0, y + 0.15), head_steps, 0.7, facecolor=NEW, edgecolor="#34495e"))
        else:
            ax.add_patch(Rectangle((0, y + 0.15), head_steps, 0.7, facecolor=FROZEN, edgecolor="#34495e",
                                   hatch="//"))
        rate = 1 / decay**depth
        ax.add_patch(Rectangle((head_steps, y + 0.15), steps - head_steps, 0.7, facecolor=TRAINED,
                               alpha=0.25 + 0.75 * rate, edgecolor="#34495e"))
        label = "lr" if depth == 0 else f"lr / {decay:g}" + (f"$^{depth}$" if depth > 1 else "")
        ax.text(head_steps + (steps - head_steps) / 2, y + 0.5, label, ha="center", va="center", fontsize=8.5)
    ax.text(head_steps / 2, len(rows) - 0.5, "head alone", ha="center", va="center", fontsize=8.5)
    ax.text(head_steps / 2, (len(rows) - 1) / 2, "frozen", ha="center", va="center", fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    checks = list(range(head_steps + check_every, steps + 1, check_every))
    if checks[-1] != steps:
        checks.append(steps)
    for k, step in enumerate(checks, start=1):
        best = k == best_check
        ax.plot([step, step], [-0.35, len(rows)], color="#27ae60" if best else "#7f8c8d",
                linestyle="-" if best else ":", linewidth=2 if best else 1)
        ax.text(step, -0.55, "kept" if best else "val check", ha="center", va="top", fontsize=8,
                color="#27ae60" if best else "#7f8c8d", weight="bold" if best else "normal")
    ax.set(xlim=(-2, steps + 2), ylim=(-1.1, len(rows) + 0.1), yticks=[len(rows) - 0.5 - i for i in
                                                                             range(len(rows))],
           yticklabels=rows, xlabel="optimiser step")
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.set_title("The recipe over one budget: the head first, then every stage at its own rate, the best check kept",
                 fontsize=10)
    fig.tight_layout()
    return fig


def ntg_map():
    """How to read lesson 04's maps: each cell is one setting (labels per class across, relatedness up), and its
    colour is the negative-transfer gap there, NTG = err(fine-tune) - err(scratch) on the test set, averaged over
    seeds. Red: fine-tuning made more errors than scratch (the source hurt); blue: fewer (it helped); white: even."""
    fig, (ax, key) = plt.subplots(1, 2, figsize=(9.6, 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.set(xlim=(0, 3), ylim=(0, 3), xticks=[0.5, 1.5, 2.5], yticks=[0.5, 1.5, 2.5],
           xticklabels=["few", "", "many"], yticklabels=["conflicting\n(r = 0)", "", "related\n(r = 1)"],
           xlabel="labels per class", ylabel="relatedness r of the target")
    for i in range(3):
        for j in range(3):
            ax.add_patch(Rectangle((i, j), 1, 1, fill=False, edgecolor="#95a5a6", linestyle=":"))
    ax.add_patch(Rectangle((1, 1), 1, 1, facecolor="#f1948a", edgecolor="#34495e", linewidth=1.5))
    ax.text(1.5, 1.5, "one cell:\nNTG", ha="center", va="center", fontsize=9)
    ax.set_title("a map: one cell per setting", fontsize=10)
    key.axis("off")
    key.set(xlim=(0, 1), ylim=(0, 1))
    key.text(0.0, 0.86, r"NTG = err(fine-tune) $-$ err(scratch)", fontsize=11)
    key.text(0.0, 0.72, "on the target's test set, mean over seeds,\nboth at their own tuned rate (or fine-tuning at "
             "the\nconventional rate, in the left-hand map)", fontsize=8.5, va="top")
    for y, colour, text in ((0.38, "#e74c3c", "red, NTG > 0: the source hurt"),
                            (0.24, "#f7f7f7", "white, NTG = 0: no difference in error"),
                            (0.10, "#3498db", "blue, NTG < 0: the source helped")):
        key.add_patch(Rectangle((0.0, y - 0.04), 0.08, 0.08, facecolor=colour, edgecolor="#34495e"))
        key.text(0.11, y, text, va="center", fontsize=9)
    fig.suptitle("Reading a map of the negative-transfer gap (Wang et al. 2019)", fontsize=11)
    fig.tight_layout()
    return fig


def lora(d: int = 8, r: int = 2):
    """LoRA (Hu et al. 2022): a layer's weight W (d_out x d_in) stays frozen, and the layer computes
    W x + (alpha / r) B A x, where A (r x d_in) and B (d_out x r) train; r is much smaller than d, so B A is a
    low-rank change with r (d_in + d_out) parameters instead of d_in d_out. B starts at zero, so the first step
    starts from the pretrained layer exactly; after training, B A can be merged into W (no cost at inference)."""
    fig, ax = _canvas(9.6, 3.4, "LoRA: a frozen weight plus a trained low-rank product")
    unit = 0.28
    _box(ax, 0.4, 0.5, d * unit, d * unit, f"W\n{d}×{d}\nfrozen", FROZEN, fontsize=10)
    ax.text(0.4 + d * unit + 0.35, 0.5 + d * unit / 2, "+", fontsize=20, va="center", ha="center")
    x0 = 0.4 + d * unit + 0.7
    _box(ax, x0, 0.5, r * unit, d * unit, f"B\n{d}×{r}", TRAINED, fontsize=9)
    ax.text(x0 + r * unit + 0.25, 0.5 + d * unit / 2, "·", fontsize=22, va="center", ha="center")
    _box(ax, x0 + r * unit + 0.5, 0.5 + (d - r) * unit, d * unit, r * unit, f"A   {r}×{d}", TRAINED, fontsize=9)
    ax.text(x0 + r * unit + 0.5 + d * unit / 2, 0.5 + (d - r) * unit - 0.35, "trained: B starts at 0, A at random",
            ha="center", fontsize=8.5, color="#b9770e")
    note = (f"output = W x + (α / r) · B A x\n\nparameters trained: r·(d_in + d_out) = {r * (d + d)}\n"
            f"instead of d_in·d_out = {d * d}\n\nafter training: W + (α / r) B A,\none matrix again")
    ax.text(x0 + r * unit + 0.5 + d * unit + 0.4, 0.5 + d * unit / 2, note, va="center", fontsize=9)
    return fig


def dense_heads():
    """Lesson 08: one pretrained backbone, three heads on its feature maps. Classification pools the map to one
    vector and scores the classes; segmentation (an FCN: Long et al. 2015) scores the classes at every pixel and
    upsamples to the image; detection (CenterNet: Zhou et al. 2019) predicts a heatmap per class whose peaks are
    objects' centres, plus each object's width and height there."""
    fig, ax = _canvas(10.4, 3.8, "One backbone, three heads")
    _box(ax, 0.2, 1.45, 1.2, 0.9, "image", NEUTRAL)
    _arrow(ax, (1.4, 1.9), (1.75, 1.9))
    _box(ax, 1.75, 1.3, 2.3, 1.2, "pretrained backbone\nstem … layer4\n(its classifier dropped)", NEUTRAL)
    heads = (("classification head\naverage pool + linear", "one class per image", 2.75),
             ("segmentation head (FCN)\nmerged stage maps, a 1×1\nclassifier, upsampled",
              "a class per pixel (a mask)", 1.55),
             ("detection head (CenterNet)\na heatmap per class, plus\nsize and offset at each cell",
              "boxes: the peaks, with\ntheir width and height", 0.35))
    for text, output, y in heads:
        _arrow(ax, (4.05, 1.9), (4.6, y + 0.4))
        _box(ax, 4.6, y, 2.6, 0.8, text, NEW, fontsize=8)
        _arrow(ax, (7.2, y + 0.4), (7.45, y + 0.4))
        ax.text(7.5, y + 0.4, output, va="center", fontsize=8.5)
    return fig
