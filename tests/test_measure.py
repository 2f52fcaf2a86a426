"""Tests for ftcourse.measure: published values, hand-computed cases, invariances, and input validation."""

import math

import numpy as np
import pytest
import torch

from ftcourse.measure import (cka, hscore, knn_accuracy, leep, linear_probe_accuracy, logme, nce,
                              negative_transfer_gap)


def blobs(n=150, d=8, classes=3, spread=0.3, seed=0):
    """Features whose first `classes` columns are a noisy one-hot code of the label: linearly separable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = spread * rng.normal(size=(n, d))
    features[:, :classes] += 3 * np.eye(classes)[labels]
    return features, labels


def direct_logme(features, labels):
    """LogME straight from the formulas, with no SVD: A = αI + βFᵀF, m = βA⁻¹Fᵀy, log|A| from slogdet."""
    n, d = features.shape
    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)

        def posterior(alpha, beta):
            a = alpha * np.eye(d) + beta * features.T @ features
            return a, beta * np.linalg.solve(a, features.T @ y)

        alpha, beta = 1.0, 1.0
        for _ in range(200):
            a, m = posterior(alpha, beta)
            gamma = d - alpha * np.trace(np.linalg.inv(a))  # = Σ βσ²/(α + βσ²)
            alpha = gamma / (m @ m + 1e-5)
            beta = (n - gamma) / (np.sum((features @ m - y) ** 2) + 1e-5)
        a, m = posterior(alpha, beta)
        evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * np.sum((features @ m - y) ** 2) - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)
        scores.append(evidence / n)
    return np.mean(scores)


# --- LogME ---------------------------------------------------------------------------------------------------------

def test_logme_prefers_separable_features_to_random_ones():
    features, labels = blobs()
    random = np.random.default_rng(1).normal(size=features.shape)
    assert logme(features, labels) > logme(random, labels) + 0.5


@pytest.mark.parametrize("n, d", [(120, 10), (30, 64)], ids=["n>d", "n<d"])
def test_logme_matches_direct_evaluation_of_the_evidence(n, d):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, d)) + np.eye(3)[labels] @ rng.normal(size=(3, d))
    assert logme(features, labels) == pytest.approx(direct_logme(features, labels), abs=1e-6)


def test_logme_handles_rank_deficient_features():
    features, labels = blobs(n=60, d=4)
    duplicated = np.hstack([features, features[:, :2]])  # 6 columns, rank 4: two singular values are 0
    assert logme(duplicated, labels) == pytest.approx(direct_logme(duplicated, labels), abs=1e-6)


# --- LEEP ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_leep_is_never_positive(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(7), size=200)
    assert leep(probs, rng.integers(0, 3, 200)) <= 0


def test_leep_is_zero_when_confident_source_predictions_determine_the_label():
    z = np.random.default_rng(3).integers(0, 6, 100)
    assert leep(np.eye(6)[z], z % 3) == pytest.approx(0, abs=1e-12)


def test_leep_hand_computed():
    probs = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]]
    labels = [0, 0, 1, 1]
    # P(y, z) = [[1.5, 0.5], [0.5, 1.5]] / 4, P(z) = [0.5, 0.5], so P(y | z) = [[0.75, 0.25], [0.25, 0.75]].
    # Per example Σ_z P(yᵢ | z) θ_z = 0.75, 0.5, 0.75, 0.5, so LEEP = (2 log 0.75 + 2 log 0.5) / 4.
    assert leep(probs, labels) == pytest.approx((math.log(0.75) + math.log(0.5)) / 2, abs=1e-12)


# --- NCE -----------------------------------------------------------------------------------------------------------

def test_nce_is_zero_when_the_label_is_a_function_of_the_source_prediction():
    z = np.random.default_rng(4).integers(0, 6, 100)
    assert nce(z, z % 3) == pytest.approx(0, abs=1e-12)


def test_nce_is_minus_log_k_for_independent_balanced_labels():
    # Every (z, y) pair of 3 source classes x 4 target classes appears exactly 5 times: P(y | z) = 1/4 everywhere.
    z, y = np.meshgrid(np.arange(3), np.arange(4))
    z, y = np.repeat(z.ravel(), 5), np.repeat(y.ravel(), 5)
    assert nce(z, y) == pytest.approx(-math.log(4), abs=1e-12)


def test_nce_hand_computed():
    z = [0, 0, 0, 1, 1, 2]
    y = [0, 0, 1, 1, 1, 0]
    # z = 0 (half the examples) leaves y split 2/3 vs 1/3; z = 1 and z = 2 each determine y.
    # H(Y | Z) = 1/2 · (-(2/3) log(2/3) - (1/3) log(1/3)) = 0.3182570..., so NCE = -0.3182570...
    expected = -0.5 * (-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3))
    assert nce(z, y) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.318257, abs=1e-6)


# --- H-score -------------------------------------------------------------------------------------------------------

def test_hscore_is_invariant_to_adding_a_constant():
    features, labels = blobs()
    assert hscore(features + 5.0, labels) == pytest.approx(hscore(features, labels), rel=1e-9)


def test_hscore_prefers_class_separated_features_to_random_ones():
    features, labels = blobs()
    random = np.random.default_rng(5).normal(size=features.shape)
    assert hscore(features, labels) > hscore(random, labels) + 1.0


def test_hscore_hand_computed_one_feature():
    # f = 0, 2, 4, 6 has mean 3 and variance (9 + 1 + 1 + 9)/4 = 5; the class means 1, 1, 5, 5 have variance 4.
    assert hscore([[0.0], [2.0], [4.0], [6.0]], [0, 0, 1, 1]) == pytest.approx(4 / 5, abs=1e-12)


# --- CKA -----------------------------------------------------------------------------------------------------------

def kornblith_example():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def test_cka_matches_the_published_demo_values():
    X, Y = kornblith_example()
    assert cka(X, Y) == pytest.approx(0.55761, abs=1e-5)
    assert cka(X, Y, debiased=True) == pytest.approx(0.51346, abs=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(debiased):
    X, _ = kornblith_example()
    assert cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(debiased):
    X, Y = kornblith_example()
    q, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(10, 10)))
    assert cka(X, Y @ q, debiased=debiased) == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)
    assert cka(X, 3.7 * Y, debiased=debiased) == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)


def test_cka_is_not_invariant_to_anisotropic_scaling():
    X, Y = kornblith_example()
    stretched = Y * np.arange(1, 11)  # column j scaled by j
    assert abs(cka(X, stretched) - cka(X, Y)) > 1e-2


def test_cka_accepts_different_widths_and_is_symmetric():
    X, Y = kornblith_example()
    narrow = Y[:, :3]
    assert 0 < cka(X, narrow) < 1
    assert cka(X, narrow) == pytest.approx(cka(narrow, X), abs=1e-12)


# --- Negative transfer gap -----------------------------------------------------------------------------------------

def test_negative_transfer_gap_is_positive_when_transfer_hurts():
    gap = negative_transfer_gap(0.30, 0.25)
    assert isinstance(gap, float)
    assert gap == pytest.approx(0.05)
    assert negative_transfer_gap(0.20, 0.25) == pytest.approx(-0.05)


def test_negative_transfer_gap_is_elementwise_on_arrays():
    gap = negative_transfer_gap(np.array([0.1, 0.4]), torch.tensor([0.2, 0.3], dtype=torch.float64))
    assert isinstance(gap, np.ndarray)
    np.testing.assert_allclose(gap, [-0.1, 0.1])


# --- Linear probe and k-NN -----------------------------------------------------------------------------------------

def test_linear_probe_is_near_perfect_on_separable_blobs():
    train, train_labels = blobs(n=300, seed=7)
    test, test_labels = blobs(n=300, seed=8)
    assert linear_probe_accuracy(train, train_labels + 10, test, test_labels + 10) >= 0.98  # any integer labels


def test_linear_probe_is_near_chance_on_random_labels():
    rng = np.random.default_rng(9)
    accuracy = linear_probe_accuracy(rng.normal(size=(400, 10)), rng.integers(0, 4, 400),
                                     rng.normal(size=(2000, 10)), rng.integers(0, 4, 2000))
    assert abs(accuracy - 0.25) < 0.05


def test_linear_probe_is_deterministic():
    train, train_labels = blobs(n=90, spread=2.0, seed=10)
    test, test_labels = blobs(n=90, spread=2.0, seed=11)
    first = linear_probe_accuracy(train, train_labels, test, test_labels)
    assert 0.4 < first < 1.0  # a hard case, so the check below compares more than two perfect scores
    assert linear_probe_accuracy(train, train_labels, test, test_labels) == first


def test_linear_probe_is_invariant_to_rescaling_a_feature():
    train, train_labels = blobs(n=90, spread=2.0, seed=10)
    test, test_labels = blobs(n=90, spread=2.0, seed=11)
    scale = np.logspace(-4, 4, train.shape[1])  # standardisation undoes any per-feature unit
    assert (linear_probe_accuracy(train * scale, train_labels, test * scale, test_labels)
            == linear_probe_accuracy(train, train_labels, test, test_labels))


def test_knn_majority_vote_beats_the_single_nearest_neighbour():
    train = [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [10.0, 0.0]]
    labels = [1, 0, 0, 1]
    # From the origin: class 1 at distance 1, then class 0 at 2 and 3; with k = 3 class 0 wins 2 votes to 1.
    assert knn_accuracy(train, labels, [[0.0, 0.0]], [0], k=3, metric="euclidean") == 1.0
    assert knn_accuracy(train, labels, [[0.0, 0.0]], [1], k=1, metric="euclidean") == 1.0


@pytest.mark.parametrize("nearest_class", [0, 1])
@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_knn_tie_goes_to_the_nearest_neighbour(order, nearest_class):
    # One vote each for two classes; the winner must be the nearer one, whatever its label or row position.
    train = np.array([[1.0, 0.0], [2.0, 0.0]])[order]
    labels = np.array([nearest_class, 1 - nearest_class])[order]
    assert knn_accuracy(train, labels, [[0.0, 0.0]], [nearest_class], k=2, metric="euclidean") == 1.0


def test_knn_cosine_ignores_length_and_euclidean_does_not():
    train, labels = [[1.0, 0.0], [18.0, 9.0]], [0, 1]
    # [20, 0] points the same way as [1, 0] (cosine) but lies closer to [18, 9] (euclidean: 9.2 against 19).
    assert knn_accuracy(train, labels, [[20.0, 0.0]], [0], k=1, metric="cosine") == 1.0
    assert knn_accuracy(train, labels, [[20.0, 0.0]], [0], k=1, metric="euclidean") == 0.0


def test_knn_accuracy_counts_each_test_example():
    train, labels = [[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [2.0, 0.1]], [0, 0, 1, 1]
    test = [[0.1, 3.0], [3.0, 0.0], [0.2, 1.0], [1.0, 0.1]]
    assert knn_accuracy(train, labels, test, [0, 1, 1, 1], k=1) == 0.75


# --- Torch inputs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("score", [logme, hscore, leep, lambda f, y: knn_accuracy(f, y, f, y, k=3)],
                         ids=["logme", "hscore", "leep", "knn"])
def test_scores_accept_torch_tensors(score):
    rng = np.random.default_rng(12)
    probs, labels = rng.dirichlet(np.ones(5), size=60), rng.integers(0, 3, 60)
    as_torch = score(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert isinstance(as_torch, float)
    assert as_torch == pytest.approx(score(probs.astype(np.float32), labels), abs=1e-9)


def test_cka_and_nce_accept_torch_tensors():
    X, Y = kornblith_example()
    assert cka(torch.tensor(X), torch.tensor(Y)) == pytest.approx(0.55761, abs=1e-5)
    assert nce(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])) == pytest.approx(-0.5 * math.log(2))


# --- Input validation ----------------------------------------------------------------------------------------------

SCORES = {  # every function that takes (features, labels); Dirichlet rows are valid features and valid probabilities
    "logme": logme,
    "hscore": hscore,
    "leep": leep,
    "knn": lambda f, y: knn_accuracy(f, y, f, y),
    "probe": lambda f, y: linear_probe_accuracy(f, y, f, y),
}


@pytest.fixture
def data():
    rng = np.random.default_rng(13)
    return rng.dirichlet(np.ones(4), size=100), np.arange(100) % 3


def test_logme_mismatch_message_says_what_to_do(data):
    features, labels = data
    with pytest.raises(ValueError, match="labels has 90 entries but features has 100 rows; pass one label per row"):
        logme(features, labels[:90])


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_mismatched_lengths_are_rejected(score, data):
    features, labels = data
    with pytest.raises(ValueError, match=r"labels has 90 entries but \w+ has 100 rows"):
        score(features, labels[:90])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_nan_and_inf_are_rejected(score, bad, data):
    features, labels = data
    features[3, 1] = bad
    with pytest.raises(ValueError, match="contains 1 NaN or infinite values"):
        score(features, labels)


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_a_single_class_is_rejected(score, data):
    features, labels = data
    with pytest.raises(ValueError, match="contains only 1 class"):
        score(features, np.zeros_like(labels))


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_wrong_dimensionality_is_rejected(score, data):
    features, labels = data
    with pytest.raises(ValueError, match=r"must be 2-D but has shape \(100,\).*reshape\(-1, 1\)"):
        score(features[:, 0], labels)
    with pytest.raises(ValueError, match=r"must be 1-D but has shape \(100, 3\).*argmax"):
        score(features, np.eye(3)[labels])


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_empty_inputs_are_rejected(score, data):
    features, labels = data
    with pytest.raises(ValueError, match=r"is empty \(shape \(0, 4\)\)"):
        score(features[:0], labels[:0])


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_non_integer_labels_are_rejected(score, data):
    features, labels = data
    with pytest.raises(ValueError, match="must hold integer class ids but contains 0.5"):
        score(features, labels + 0.5)


def test_nce_validates_its_inputs():
    with pytest.raises(ValueError, match="labels has 3 entries but source_pred has 4 entries"):
        nce([0, 1, 1, 0], [0, 1, 1])
    with pytest.raises(ValueError, match="source_pred must be 1-D"):
        nce([[0, 1], [1, 0]], [0, 1])


def test_leep_rejects_rows_that_are_not_probabilities():
    with pytest.raises(ValueError, match="softmax"):
        leep([[2.0, -1.0], [0.5, 0.5]], [0, 1])


def test_cka_validates_its_inputs():
    X, Y = kornblith_example()
    with pytest.raises(ValueError, match="Y has 90 rows but X has 100 rows; pass the same examples"):
        cka(X, Y[:90])
    with pytest.raises(ValueError, match="X is the same for every example"):
        cka(np.ones((100, 3)), Y)
    with pytest.raises(ValueError, match="debiased CKA needs at least 4 examples"):
        cka(X[:3], Y[:3], debiased=True)


def test_negative_transfer_gap_rejects_unpaired_arrays():
    with pytest.raises(ValueError, match="err_transfer has shape \\(3,\\) but err_scratch has shape \\(2,\\)"):
        negative_transfer_gap([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="err_scratch contains 1 NaN"):
        negative_transfer_gap(0.1, float("nan"))


def test_knn_and_probe_validate_their_options():
    features, labels = blobs(n=30)
    with pytest.raises(ValueError, match="k must be between 1 and the number of training examples \\(30\\)"):
        knn_accuracy(features, labels, features, labels, k=31)
    with pytest.raises(ValueError, match="metric must be 'cosine' or 'euclidean'"):
        knn_accuracy(features, labels, features, labels, metric="manhattan")
    with pytest.raises(ValueError, match="test_features has 5 columns but train_features has 8"):
        linear_probe_accuracy(features, labels, features[:, :5], labels)
