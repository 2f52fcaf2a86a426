"""Transferability scores and representation similarity.

Before fine-tuning a pre-trained model on a new task we would like to know, cheaply, whether it will transfer. The
scores here need no fine-tuning at all: they look at the model's *features* on the target data (LogME, H-score, a
linear probe, k-NN) or at its *source-task predictions* there (LEEP, NCE). `cka` compares two representations of the
same examples (two layers, or one layer before and after fine-tuning), and `negative_transfer_gap` says, after the
fact, whether transfer hurt.

Every function takes NumPy arrays or torch tensors with one row per example, computes in float64 (the probe in float32)
and returns a Python float.

Four helpers at the end work on models instead: `features` (the arrays the scores take), `weight_distance` (how far
fine-tuning moved each stage from the pretrained weights), `stage_changes` (that distance next to CKA, stage by
stage) and `source_accuracy` (how much of the source task a fine-tuned body still supports: forgetting).
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from .train import as_data, evaluate, model_device, predict


def _check(x, name, *, ndim=2, labels=False, min_classes=2, rows_of=None, cols_of=None):
    """Return `x` as a float64 tensor (int64 if `labels`), or raise a ValueError that says what to do.

    rows_of / cols_of: a pair (tensor, its name) whose number of rows / columns `x` must match.
    """
    x = x.detach() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if x.device.type == "mps":  # Apple GPUs have no float64
        x = x.cpu()
    if ndim is not None and x.ndim != ndim:
        hint = ("pass one integer class per example; for one-hot labels use labels.argmax(1)" if labels else
                "pass an (n_examples, n_features) array; for a single feature use x.reshape(-1, 1)")
        raise ValueError(f"{name} must be {ndim}-D but has shape {tuple(x.shape)}; {hint}.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one example.")
    if rows_of is not None and len(x) != len(rows_of[0]):
        other, other_name = rows_of
        units = {1: ("entry", "entries"), 2: ("row", "rows")}
        hint = (f"pass one label per {units[other.ndim][0]} of {other_name}" if labels
                else "pass the same examples, in the same order, to both")
        raise ValueError(f"{name} has {len(x)} {units[x.ndim][1]} but {other_name} has {len(other)} "
                         f"{units[other.ndim][1]}; {hint}.")
    if cols_of is not None and x.shape[1] != cols_of[0].shape[1]:
        raise ValueError(f"{name} has {x.shape[1]} columns but {cols_of[1]} has {cols_of[0].shape[1]}; "
                         "compute both with the same model and layer.")
    for other in (rows_of, cols_of):  # labels (or test features) follow their features onto the same device
        if other is not None:
            x = x.to(other[0].device)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN or infinite values; "
                         "drop or repair those rows first (a diverged model often produces them).")
    if not labels:
        return x.to(torch.float64)
    if x.is_floating_point() and not torch.equal(x, x.round()):
        raise ValueError(f"{name} must hold integer class ids but contains {x[x != x.round()][0].item()}; "
                         "encode the classes with np.unique(labels, return_inverse=True)[1].")
    n_classes = len(torch.unique(x))
    if n_classes < min_classes:
        raise ValueError(f"{name} contains only {n_classes} class; a score needs at least {min_classes} classes "
                         "to tell apart, so pass examples of more than one class.")
    return x.long()


def logme(features, labels):
    """LogME: how well a Bayesian linear model on `features` explains the labels (You et al. 2021).

    For each class c, regress the one-hot column y_c on the features F (n x d) with a Gaussian prior w ~ N(0, 1/α I)
    and Gaussian noise of precision β. Instead of fitting one w, LogME integrates w out and asks how probable the
    labels are, p(y | F, α, β), maximised over α and β (the "evidence", MacKay 1992). With A = αI + βFᵀF and the
    posterior mean m = βA⁻¹Fᵀy:

        log p(y | F) = n/2 log β + d/2 log α - n/2 log 2π - β/2 ‖Fm - y‖² - α/2 mᵀm - 1/2 log|A|

    α and β come from the fixed-point iterations γ = Σᵢ βσᵢ²/(α + βσᵢ²), α = γ/mᵀm, β = (n - γ)/‖Fm - y‖², where σᵢ
    are the singular values of F: one SVD makes every iteration cost O(min(n, d)). The score is the evidence per
    example, averaged over classes. Larger (less negative) is better; it can be compared between models on the same
    target data, not between datasets. Papers: You et al., "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021; the fixed-point form is from You et al., "Ranking and Tuning Pre-trained Models",
    JMLR 2022.

    >>> y = np.arange(60) % 3
    >>> logme(np.eye(3)[y] + 0.1 * np.random.default_rng(0).normal(size=(60, 3)), y) > 0
    True
    """
    f = _check(features, "features")
    y = _check(labels, "labels", ndim=1, labels=True, rows_of=(f, "features"))
    n, d = f.shape
    targets = F.one_hot(torch.unique(y, return_inverse=True)[1]).to(f)  # (n, C): one regression per class
    # Thin SVD F = U diag(s) Vᵀ with k = min(n, d) columns; everything below needs only s and x = Uᵀy.
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = s[:, None] ** 2                                            # (k, 1)
    x2 = (u.T @ targets) ** 2                                          # (k, C)
    outside = (targets.square().sum(0) - x2.sum(0)).clamp(min=0)       # ‖y‖² outside the span of F's columns

    def statistics(alpha, beta):  # γ, mᵀm and ‖Fm - y‖² in the SVD basis, where A is diagonal
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        m2 = (sigma * x2 / (sigma + t) ** 2).sum(0)
        res2 = (x2 * (t / (sigma + t)) ** 2).sum(0) + outside
        return gamma, m2, res2

    alpha = torch.ones(targets.shape[1], dtype=f.dtype, device=f.device)  # one (α, β) pair per class
    beta = torch.ones_like(alpha)
    for _ in range(1000):  # usually converges in 10 to 200 steps
        gamma, m2, res2 = statistics(alpha, beta)
        # The 1e-5 (as in the authors' code) keeps α, β finite when the features fit y exactly (often when n < d).
        new_alpha, new_beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
        done = ((new_alpha / new_beta - alpha / beta).abs() <= 1e-10 * alpha / beta).all()
        alpha, beta = new_alpha, new_beta
        if done:
            break
    _, m2, res2 = statistics(alpha, beta)
    # log|A| = Σᵢ log(α + βσᵢ²) over all d directions; the d - k directions outside the SVD have σᵢ = 0.
    log_det_a = torch.log(alpha + beta * sigma).sum(0) + (d - len(s)) * torch.log(alpha)
    evidence = (n / 2 * torch.log(beta) + d / 2 * torch.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det_a / 2)
    return float((evidence / n).mean())


def leep(source_probs, labels):
    """LEEP: how well the source model's soft predictions, relabelled, predict the target labels (Nguyen et al. 2020).

    θ(x) are the source model's class probabilities (n x Z). From the target data we estimate the joint
    P(y, z) = 1/n Σ_{i: yᵢ=y} θ(xᵢ)_z, then P(y | z) = P(y, z) / P(z): a "dictionary" from source classes to target
    classes. LEEP is the average log-likelihood of the resulting classifier:

        LEEP = 1/n Σᵢ log Σ_z P(yᵢ | z) θ(xᵢ)_z

    It is always ≤ 0; larger (closer to 0) predicts better transfer, and 0 means the source prediction determines
    the target label. Paper: Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020.

    >>> round(leep([[1, 0], [0.5, 0.5], [0, 1], [0.5, 0.5]], [0, 0, 1, 1]), 4)  # = log(0.75 · 0.5) / 2
    -0.4904
    """
    theta = _check(source_probs, "source_probs")
    y = _check(labels, "labels", ndim=1, labels=True, rows_of=(theta, "source_probs"))
    if (theta < 0).any() or ((theta.sum(1) - 1).abs() > 1e-4).any():
        raise ValueError("source_probs must hold probabilities (non-negative rows that sum to 1); "
                         "if you have logits, pass logits.softmax(dim=1).")
    codes = torch.unique(y, return_inverse=True)[1]
    joint = torch.zeros(int(codes.max()) + 1, theta.shape[1], dtype=theta.dtype, device=theta.device)
    joint = joint.index_add(0, codes, theta) / len(y)                  # P(y, z)
    conditional = joint / joint.sum(0).clamp(min=1e-300)               # P(y | z); 0 for a z nobody predicts
    return float((theta * conditional[codes]).sum(1).log().mean())


def nce(source_pred, labels):
    """NCE, negative conditional entropy: how much the source model's hard predictions tell about the target label.

    With z the source model's predicted class (an integer per example) and y the target label, both counted in
    the empirical joint P(y, z):

        NCE = -H(Y | Z) = Σ_{y,z} P(y, z) log P(y | z)

    It lies between -log K (z says nothing about K balanced classes) and 0 (y is a function of z); larger predicts
    better transfer. Paper: Tran et al., "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019.

    >>> round(nce([0, 0, 1, 1], [0, 1, 1, 1]), 5)  # z = 0 leaves y a coin flip: -P(z=0) log 2
    -0.34657
    """
    z = _check(source_pred, "source_pred", ndim=1, labels=True, min_classes=1)
    y = _check(labels, "labels", ndim=1, labels=True, rows_of=(z, "source_pred"))
    zc = torch.unique(z, return_inverse=True)[1]
    yc = torch.unique(y, return_inverse=True)[1]
    n_z = int(zc.max()) + 1
    joint = torch.bincount(yc * n_z + zc, minlength=(int(yc.max()) + 1) * n_z).reshape(-1, n_z).double() / len(y)
    conditional = joint / joint.sum(0)                                 # P(y | z); every column has an example
    seen = joint > 0                                                   # 0 log 0 = 0
    return float((joint[seen] * conditional[seen].log()).sum())


def hscore(features, labels):
    """H-score: how much of the features' variance lies between the classes rather than within them (Bao et al. 2019).

        H(f) = tr(cov(f)⁻¹ cov(E[f | y]))

    cov(E[f | y]) is the covariance of the class means (each example replaced by the mean of its class), and cov(f)⁻¹
    is a pseudo-inverse. For one feature it is the between-class variance over the total variance, between 0 and 1; in
    general it lies between 0 and min(d, K - 1). Larger predicts better transfer. Paper: Bao et al., "An
    Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019.

    >>> round(hscore([[0.0], [2.0], [4.0], [6.0]], [0, 0, 1, 1]), 6)  # class means 1 and 5: variance 4 out of 5
    0.8
    """
    f = _check(features, "features")
    y = _check(labels, "labels", ndim=1, labels=True, rows_of=(f, "features"))
    codes = torch.unique(y, return_inverse=True)[1]
    f = f - f.mean(0)
    counts = torch.bincount(codes).to(f)
    means = torch.zeros(len(counts), f.shape[1], dtype=f.dtype, device=f.device).index_add(0, codes, f)
    means = means / counts[:, None]                                    # E[f | y], centred because f is
    cov_f = f.T @ f / len(f)
    cov_means = (means * counts[:, None]).T @ means / len(f)           # each class mean weighted by its examples
    return float(torch.trace(torch.linalg.pinv(cov_f, hermitian=True) @ cov_means))


def cka(X, Y, debiased=False):
    """Linear CKA: how similar two representations of the same n examples are, from 0 to 1 (Kornblith et al. 2019).

    With X (n x p) and Y (n x q) centred column by column:

        CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)

    the normalised HSIC between the two linear kernels XXᵀ and YYᵀ. 1 means the same representation up to a rotation
    and an overall scale; it is *not* invariant to stretching some directions more than others. The widths p and q
    may differ. `debiased=True` uses the unbiased HSIC estimator of Song et al. ("Feature Selection via Dependence
    Maximization", JMLR 2012), as in the authors' demo notebook: it shrinks CKA's upward bias when n is small
    compared with the widths, and can come out slightly below 0. Paper: Kornblith et al., "Similarity of Neural
    Network Representations Revisited", ICML 2019.

    >>> X = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(cka(X, 3 * X @ np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))[0]), 6)
    1.0
    """
    x = _check(X, "X")
    y = _check(Y, "Y", rows_of=(x, "X"))
    n = len(x)
    for name, a in (("X", x), ("Y", y)):
        if (a == a[0]).all():
            raise ValueError(f"{name} is the same for every example, so CKA is undefined; pass a representation "
                             "that varies across examples.")
    if debiased and n < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples but X has {n}; pass more rows or debiased=False.")
    x, y = x - x.mean(0), y - y.mean(0)
    xy, xx, yy = (y.T @ x).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    if debiased:
        # Song et al.'s unbiased HSIC, rewritten with the squared row norms (the 1/(n(n-3)) factor cancels in CKA).
        rx, ry = x.square().sum(1), y.square().sum(1)

        def unbiased(dot, ra, rb):
            return dot - n / (n - 2) * (ra @ rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = unbiased(xy, rx, ry), unbiased(xx, rx, rx), unbiased(yy, ry, ry)
    return float(xy / (xx.sqrt() * yy.sqrt()))


def negative_transfer_gap(err_transfer, err_scratch):
    """NTG: how much worse the transferred model is than one trained from scratch (Wang et al. 2019).

        NTG = err(transfer) - err(scratch)

    Positive means negative transfer: pretraining hurt. Works on single errors (returns a float) or on arrays of
    paired errors, elementwise (returns an ndarray). Paper: Wang et al., "Characterizing and Avoiding Negative
    Transfer", CVPR 2019.

    >>> round(negative_transfer_gap(0.30, 0.25), 6)  # transfer made 5 points more errors
    0.05
    """
    a = _check(err_transfer, "err_transfer", ndim=None)
    b = _check(err_scratch, "err_scratch", ndim=None)
    if a.ndim and b.ndim and a.shape != b.shape:
        raise ValueError(f"err_transfer has shape {tuple(a.shape)} but err_scratch has shape {tuple(b.shape)}; "
                         "pass paired errors (same runs, same order) or a single scratch error.")
    gap = a - b.to(a.device)
    return float(gap) if gap.ndim == 0 else gap.cpu().numpy()


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, *, l2=1e-3, epochs=100):
    """Linear probe: test accuracy of a logistic regression trained on frozen features.

    The classic way to ask what a representation makes *linearly* available (Alain & Bengio 2016; Kornblith et al.,
    "Do Better ImageNet Models Transfer Better?", CVPR 2019, who also fit it with L-BFGS). Features are standardised
    with the training mean and standard deviation, then W, b minimise

        mean cross-entropy(softmax(xW + b), y) + l2/2 ‖W‖²

    with full-batch L-BFGS for at most `epochs` iterations, from zeros, on the device the features are on, so the
    result is deterministic. Larger is better; compare with chance (1 / number of classes).
    """
    xtr = _check(train_features, "train_features")
    ytr = _check(train_labels, "train_labels", ndim=1, labels=True, rows_of=(xtr, "train_features"))
    xte = _check(test_features, "test_features", cols_of=(xtr, "train_features"))
    yte = _check(test_labels, "test_labels", ndim=1, labels=True, min_classes=1, rows_of=(xte, "test_features"))
    classes, codes = torch.unique(ytr, return_inverse=True)
    mean, std = xtr.mean(0), xtr.std(0)
    std = torch.where(std > 0, std, 1.0)  # a constant column stays 0 instead of becoming NaN
    # float32 is plenty for fitting a classifier, and fast on every device.
    xtr, xte = ((xtr - mean) / std).float(), ((xte - mean) / std).float()
    w = torch.zeros(xtr.shape[1], len(classes), device=xtr.device, requires_grad=True)
    b = torch.zeros(len(classes), device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, codes) + l2 / 2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # also works when called inside torch.no_grad()
        opt.step(closure)
    with torch.no_grad():
        predicted = classes[(xte @ w + b).argmax(1)]
    return float((predicted == yte).double().mean())


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=5, metric="cosine"):
    """k-NN accuracy: label each test example by a majority vote of its k nearest training examples.

    A probe with no training at all: it asks whether examples of the same class are *close* in feature space, a
    common check for self-supervised features (Wu et al. 2018; Caron et al., DINO, 2021). metric is "cosine"
    (distance 1 - cos, the usual choice for deep features) or "euclidean". A tie in the vote goes to the class of the
    nearest neighbour among the tied classes. Larger is better; compare with chance.

    >>> train = [[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [2.0, 0.1]]
    >>> knn_accuracy(train, [0, 0, 1, 1], [[0.1, 3.0], [3.0, 0.0]], [0, 1], k=3)
    1.0
    """
    xtr = _check(train_features, "train_features")
    ytr = _check(train_labels, "train_labels", ndim=1, labels=True, rows_of=(xtr, "train_features"))
    xte = _check(test_features, "test_features", cols_of=(xtr, "train_features"))
    yte = _check(test_labels, "test_labels", ndim=1, labels=True, min_classes=1, rows_of=(xte, "test_features"))
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    if not 1 <= k <= len(xtr):
        raise ValueError(f"k must be between 1 and the number of training examples ({len(xtr)}), got k={k}.")
    if metric == "cosine":
        xtr, xte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
    classes, codes = torch.unique(ytr, return_inverse=True)
    correct = 0
    for start in range(0, len(xte), 1024):  # blocks of test rows keep the distance matrix small
        block = xte[start:start + 1024]
        dist = 1 - block @ xtr.T if metric == "cosine" else torch.cdist(block, xtr)
        neighbours = codes[dist.sort(dim=1, stable=True).indices[:, :k]]  # (b, k), nearest first
        votes = F.one_hot(neighbours, len(classes)).sum(1)                # (b, C)
        # Each neighbour whose class has the most votes is a candidate; the first (nearest) one wins.
        is_top = votes.gather(1, neighbours) == votes.max(1, keepdim=True).values
        winner = neighbours.gather(1, is_top.long().argmax(1, keepdim=True)).squeeze(1)
        correct += int((classes[winner] == yte[start:start + 1024]).sum())
    return correct / len(xte)


# ------------------------------------------------------------------------------------------------------------------
# Model-level helpers: features to score, and what fine-tuning did to a pretrained model.

@torch.no_grad()
def features(model, data, stage=None, *, batch_size=1024, precision="fp32"):
    """The average-pooled activations after `stage` for every image of `data`, in order: an (n, channels) tensor.

    This is what the scores above take as "features": `model.features(images, upto=stage)` run over the whole
    dataset in batches, without gradients and in evaluation mode (BatchNorm uses its running statistics, so an
    image's features do not depend on the rest of its batch). `stage` defaults to the last stage before the head.
    `data` is an ImageData, a pair (images, labels), a tensor of images or a DataLoader; as with
    `ftcourse.train.predict`, a Task means its test split, so pass `task.train` for the training images. Labels
    are not used, so they may go beyond the model's head (features of a source model on a target task).

    The result is float32 on the model's device. `precision="fp32"` by default, because these numbers are measured
    rather than trained on; "auto" uses the training loop's mixed precision, faster on a GPU. The model's train/eval
    modes are restored afterwards.

    >>> features(model, task.train, "layer2").shape    # doctest: +SKIP
    torch.Size([200, 32])
    """
    stage = stage or model.stage_names[-2]
    if stage == "head":
        raise ValueError("features stop before the head; for class scores use ftcourse.train.predict(model, data).")
    model.stage(stage)  # raises a ValueError that lists the stages when there is no such stage
    return predict(model, data, batch_size=batch_size, precision=precision,
                   forward=lambda images: model.features(images, upto=stage))


def weight_distance(model, reference, *, relative=False):
    """How far each stage's weights are from a reference model's: {stage: ‖w − w_ref‖, ..., "total": ...}.

    For the parameters θ of one stage (every weight and bias in it, flattened into one vector),

        distance = ‖θ − θ_ref‖₂,        relative distance = ‖θ − θ_ref‖₂ / ‖θ_ref‖₂,

    and "total" is the same over all the stages compared together (so total² = Σ stage² for absolute distances).
    With the pretrained model as the reference this shows where and how far fine-tuning moved the weights from
    θ_pre: larger learning rates move them further, the idea behind L2-SP (Li et al. 2018, which penalises
    ‖θ − θ_pre‖²) and behind Neyshabur et al. 2020 ("What is being transferred in transfer learning?"), who find
    fine-tuned models stay close to their pretrained start. Only parameters count, not BatchNorm's running
    statistics.

    Stages whose parameters differ in name or shape are skipped and do not appear in the result -- typically the
    head after `ftcourse.models.replace_head` gave it another number of classes. (A new head of the *same* size is
    compared, though it has nothing to do with the old one.)

    >>> weight_distance(finetuned, pretrained)          # doctest: +SKIP
    {'stem': 0.21, 'layer1': 0.93, 'layer2': 1.4, 'total': 1.7}
    """
    distances, squared, squared_ref = {}, 0.0, 0.0
    for name in model.stage_names:
        if name not in reference.stage_names:
            continue
        mine = dict(model.stage(name).named_parameters())
        theirs = dict(reference.stage(name).named_parameters())
        if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
            continue
        diff = sum(float((mine[k].detach().double() - theirs[k].detach().double().to(mine[k].device)).square().sum())
                   for k in mine)
        ref = sum(float(theirs[k].detach().double().square().sum()) for k in theirs)
        distances[name] = _root_ratio(diff, ref) if relative else math.sqrt(diff)
        squared, squared_ref = squared + diff, squared_ref + ref
    if not distances:
        raise ValueError(f"No stage of the two models has parameters of the same shapes (stages "
                         f"{list(model.stage_names)} vs {list(reference.stage_names)}); compare a fine-tuned model "
                         f"with the model it started from.")
    distances["total"] = _root_ratio(squared, squared_ref) if relative else math.sqrt(squared)
    return distances


@torch.no_grad()
def stage_changes(model, reference, images, *, stages=None):
    """Three views of how much each stage changed from ``reference`` to ``model`` (say, pretrained to fine-tuned):

    - ``"weights"``: the relative weight distance ‖θ − θ_ref‖ / ‖θ_ref‖ of the stage's own parameters
      (:func:`weight_distance`): local, and relative to the stage's size;
    - ``"output CKA"``: linear :func:`cka` of the two networks' average-pooled outputs of the stage on ``images``, each
      network run from the image on. It compares *the whole path up to the stage*: what a stage computes depends
      on every stage below it, so changes add up with depth (lesson 05's view);
    - ``"own CKA"``: the stage alone. Both copies of the stage get the same input, the reference network's output
      of the stage below, and their pooled outputs are compared: the change of that stage's function by itself.

    Weight distance and own CKA are local; output CKA is cumulative. A stage can move its weights far relative to
    their size and still compute almost the same features: the BatchNorm after each convolution re-normalises its
    output (fine-tuning re-estimates its statistics), which undoes a change of scale, and CKA ignores rotations
    and an overall scale of the features. So "the stem's weights moved most" and
    "the stem's output changed least" can both be true. Both models are run in evaluation mode (restored
    afterwards). Returns ``{stage: {"weights": ..., "output CKA": ..., "own CKA": ...}}`` for the stages before
    the head (or ``stages``).
    """
    stages = list(stages or model.stage_names[:-1])
    modes = [(m, m.training) for net in (model, reference) for m in net.modules()]
    model.eval(), reference.eval()
    try:
        distances = weight_distance(model, reference, relative=True)
        images = images.to(model_device(model))
        x, y = reference.normalise(images), model.normalise(images)  # the two networks' paths, one pass each
        changes = {}
        for name in reference.stage_names[:-1]:
            theirs = reference.stage(name)(x)
            mine = model.stage(name)(y)
            if name in stages:
                changes[name] = {"weights": distances[name],
                                 "output CKA": cka(_pooled(theirs), _pooled(mine)),
                                 "own CKA": cka(_pooled(theirs), _pooled(model.stage(name)(x)))}
            x, y = theirs, mine
    finally:
        for module, mode in modes:
            module.training = mode
    return changes


def _pooled(maps):
    return torch.flatten(F.adaptive_avg_pool2d(maps, 1), 1).double()


def _root_ratio(squared, squared_ref):
    """sqrt(squared / squared_ref): a relative distance; infinite when the reference weights are all zero."""
    return math.sqrt(squared / squared_ref) if squared_ref > 0 else (0.0 if squared == 0 else math.inf)


def source_accuracy(finetuned, pretrained, source, *, batch_size=1024):
    """Forgetting: the accuracy on the source task of the fine-tuned body under the pretrained model's own head.

    Fine-tuning replaces the head (the source classes mean nothing for the target) and then changes the body. How
    much of what pretraining learned is left? Put the pretrained head back on a copy of the fine-tuned body and
    test it on the source task. With the body unchanged this is the pretrained model's own accuracy; the more
    fine-tuning moved the body (a larger learning rate, more epochs), the more it drops towards chance. Neural
    networks are known for this "catastrophic forgetting" (McCloskey & Cohen 1989; French 1999); lesson 03 watches
    it grow with the learning rate, next to `weight_distance`.

    Note that the old head expects the old features exactly: a body that only rotated its features would score
    badly here although a new linear probe could still read the source task from it. So this measures forgetting
    as seen by the original classifier, an upper bound on what was lost.

    `source` is the source Task (its test split is used) or its data; `finetuned` and `pretrained` are left
    unchanged. Returns the accuracy in [0, 1].
    """
    if finetuned.stage_names != pretrained.stage_names:
        raise ValueError(f"The two models have different stages ({list(finetuned.stage_names)} vs "
                         f"{list(pretrained.stage_names)}); pass a model fine-tuned from `pretrained`.")
    if finetuned.head.in_features != pretrained.head.in_features:
        raise ValueError(f"The fine-tuned body makes {finetuned.head.in_features} features but the pretrained head "
                         f"takes {pretrained.head.in_features}; pass a model fine-tuned from `pretrained`.")
    body = copy.deepcopy(finetuned)
    body.head = copy.deepcopy(pretrained.head).to(model_device(body))
    return evaluate(body, source, batch_size=batch_size)["accuracy"]


@torch.no_grad()
def transferability(model, data, *, k=5):
    """Every score above for one pretrained `model` on a labelled target set `data`, before any fine-tuning.

    The question lesson 05 asks: of several pretrained models, which will fine-tune best on my target? Each score
    answers from one forward pass over the target's *training* images (never its test set):

    - on the features before the head (`features`): LogME, H-score, and a k-NN accuracy, 2-fold (each half of
      every class is labelled by its k nearest neighbours in the other half, and the two accuracies averaged);
    - on the source-task predictions, softmax(head(features)): LEEP, and NCE with the most likely source class.

    `data` is an ImageData or an (images, labels) pair: pass `task.train`. Returns a dict of floats; for every
    score, larger means "expected to transfer better".
    """
    if hasattr(data, "train") and hasattr(data, "test"):
        raise ValueError("transferability scores a model on the target's training data only: pass task.train, "
                         "not the whole task (its test set must stay unseen until the end).")
    data = as_data(data, "data", None, model_device(model))
    feats, labels = features(model, data), data.labels
    source_probs = torch.softmax(model.head(feats).double(), dim=1)  # the head is one Linear layer: no modes
    fold = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    for c in labels.unique():
        fold[(labels == c).nonzero().flatten()[1::2]] = True  # every second example of each class
    knn = (knn_accuracy(feats[fold], labels[fold], feats[~fold], labels[~fold], k=k)
           + knn_accuracy(feats[~fold], labels[~fold], feats[fold], labels[fold], k=k)) / 2
    return {"logme": logme(feats, labels), "hscore": hscore(feats, labels), "knn": knn,
            "leep": leep(source_probs, labels), "nce": nce(source_probs.argmax(1), labels)}
