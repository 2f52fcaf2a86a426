"""Error analysis figures (ftcourse.plots): the confusion matrix and the highest losses."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ftcourse import plots  # noqa: E402


def test_the_confusion_counts_put_true_classes_in_rows_and_predictions_in_columns():
    counts = plots.confusion_counts(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    fig = plots.confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2]), ["a", "b", "c"])
    written = sorted(t.get_text() for t in fig.axes[0].texts)
    assert written == sorted(["1", "1", "0", "0", "1", "0", "1", "0", "2"])  # the counts, cell by cell
    plt.close(fig)


def test_the_highest_losses_come_first_with_what_was_predicted():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    scores = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 3.0], [1.0, 0.0]])  # image 2: wrong and confident
    fig = plots.most_wrong(images, labels, scores, ["cat", "dog"], n=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("cat→dog (0.95") and titles[1].startswith("dog→cat (0.73")
    plt.close(fig)
