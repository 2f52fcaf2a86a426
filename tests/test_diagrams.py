"""The pictures of the ideas (ftcourse.diagrams): each draws, says what it draws, and appears in its lesson."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from ftcourse import diagrams  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WHERE = {"copy_and_new_head": "01", "frozen_stages": "02", "recipe_timeline": "03b", "ntg_map": "04", "lora": "07",
         "dense_heads": "08"}


@pytest.mark.parametrize("name", sorted(WHERE))
def test_each_diagram_draws_labelled_shapes_and_its_lesson_shows_it(name):
    fig = getattr(diagrams, name)()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
    patches = sum(len(ax.patches) for ax in fig.axes)
    assert patches >= 3 and sum(bool(t.strip()) for t in texts) >= 4, (patches, texts)
    fig.canvas.draw()  # renders without error
    plt.close(fig)
    lesson = next((ROOT / "notebooks").glob(f"{WHERE[name]}_*.ipynb"))
    cells = json.loads(lesson.read_text())["cells"]
    assert any(f"diagrams.{name}()" in "".join(c["source"]) for c in cells if c["cell_type"] == "code"), lesson.name


def test_the_lora_diagram_counts_the_parameters_it_names():
    fig = diagrams.lora(d=8, r=2)
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "= 32" in text and "= 64" in text  # r (d_in + d_out) = 2 * 16, d_in * d_out = 64
    plt.close(fig)
