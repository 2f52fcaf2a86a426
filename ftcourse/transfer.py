"""How to fine-tune: freezing, layer-wise learning rates, L2-SP, LP-FT and re-initialisation.

Fine-tuning starts from pretrained weights theta_pre and minimises the target loss L_fin(theta). This module holds
the knobs that decide *how far* and *which parts* of theta may move away from theta_pre:

- :func:`freeze` / :func:`unfreeze` choose which stages train at all (lesson 02: feature extraction, partial and
  full fine-tuning), and :func:`summary` shows what that leaves trainable;
- :func:`param_groups` gives each stage its own learning rate, and :class:`GradualUnfreezing` lets stages join the
  training one at a time (Howard & Ruder 2018, ULMFiT; lesson 03);
- :class:`L2SP` pulls the weights back towards theta_pre (Li et al. 2018; lesson 03);
- :func:`lp_ft` trains the head on frozen features before fine-tuning everything (Kumar et al. 2022);
- :func:`reinit` throws away the pretrained weights of chosen stages, a remedy for negative transfer (lesson 04).

Every function works on a :class:`~ftcourse.models.StagedNet` and talks in its stage names
``stem, layer1, ..., head``; the regularisers and schedules plug into :func:`ftcourse.train.fit`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import ftcourse

from .files import save_state
from .models import StagedNet, fingerprint, read_torch_file, stage_parameter_counts
from .train import History, describe, fit, stage_rate_groups


def _check_model(model, caller: str) -> StagedNet:
    if not isinstance(model, StagedNet):
        raise TypeError(f"{caller} works on stages, so it needs a StagedNet (ftcourse.models.resnet(), "
                        f"models.pretrained(...) or models.from_torchvision(...)); got {type(model).__name__}.")
    return model


def _stage_list(model: StagedNet, stages, first, default: tuple[str, ...], caller: str) -> list[str]:
    """The stage names meant by ``stages`` (a name or a list of names) or ``first=k``, validated before any change."""
    names = list(model.stage_names)
    if stages is not None and first is not None:
        raise ValueError(f"{caller}: give stages (names) or first (a count), not both.")
    if first is not None:
        if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= len(names):
            raise ValueError(f"{caller}: first must be an int from 0 to {len(names)} (this model has the stages "
                             f"{names}); got {first!r}.")
        return names[:first]
    if stages is None:
        return list(default)
    if isinstance(stages, str):
        stages = [stages]
    elif isinstance(stages, int):
        hint = f" To {caller} the first {stages} stages, write first={stages}." if caller != "reinit" else ""
        raise TypeError(f"{caller}: stages are names from {names}, not a number; got {stages!r}.{hint}")
    stages = list(stages)
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise ValueError(f"{caller}: this model has no stage {', '.join(map(repr, unknown))}; its stages are {names}.")
    return stages


def freeze(model: StagedNet, stages=None, *, first: int | None = None) -> StagedNet:
    """Stop the given stages from training (``requires_grad=False``); returns the model.

    ``freeze(model)`` freezes everything except the head (a linear probe, "feature extraction");
    ``freeze(model, "stem")`` or ``freeze(model, ["stem", "layer1"])`` freezes stages by name;
    ``freeze(model, first=2)`` freezes the first two stages counted from the stem (Yosinski et al. 2014's "AnB").

    The trap: ``requires_grad=False`` stops the *weights* of a BatchNorm layer, but in training mode BatchNorm still
    normalises with each batch's statistics and overwrites its running averages -- so a "frozen" stage would drift.
    :meth:`StagedNet.train` keeps BatchNorm layers whose parameters are all frozen in evaluation mode; ``freeze``
    re-applies the model's mode so that this holds from now on, not only after the next ``model.train()``.

    >>> from ftcourse import models
    >>> model = freeze(models.resnet(10, width=8, blocks=(1, 1)), first=2)
    >>> [name for name, c in models.stage_parameter_counts(model).items() if c["trainable"] == 0]
    ['stem', 'layer1']
    """
    model = _check_model(model, "freeze")
    for name in _stage_list(model, stages, first, model.stage_names[:-1], "freeze"):
        model.stage(name).requires_grad_(False)
    return model.train(model.training)


def unfreeze(model: StagedNet, stages=None, *, first: int | None = None) -> StagedNet:
    """Let the given stages train again; ``unfreeze(model)`` unfreezes everything. Same arguments as :func:`freeze`."""
    model = _check_model(model, "unfreeze")
    for name in _stage_list(model, stages, first, model.stage_names, "unfreeze"):
        model.stage(name).requires_grad_(True)
    return model.train(model.training)  # unfrozen BatchNorm layers go back to training mode


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that an optimiser step can change (those with ``requires_grad``)."""
    return [p for p in model.parameters() if p.requires_grad]


def summary(model: StagedNet) -> str:
    """A table of trainable, frozen and total parameters per stage, with totals: what freezing leaves to train."""
    counts = stage_parameter_counts(_check_model(model, "summary"))
    rows = [(name, c["trainable"], c["frozen"]) for name, c in counts.items()]
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    lines = [f"{'stage':<8}{'trainable':>12}{'frozen':>12}{'total':>12}"]
    lines += [f"{name:<8}{trainable:>12,}{frozen:>12,}{trainable + frozen:>12,}" for name, trainable, frozen in rows]
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)


def param_groups(model: StagedNet, lr: float, decay: float = 2.6) -> list[dict]:
    """Discriminative (layer-wise) learning rates: the head learns at ``lr``, each stage below ``decay`` times slower.

    For stages counted down from the head, d = 0 (head), 1, 2, ... (stem), the rate is::

        lr_d = lr / decay**d

    Lower stages hold general features that the target task needs least changed, so they get the smallest steps.
    ``decay=2.6`` is the factor Howard & Ruder found best ("Universal language model fine-tuning for text
    classification", ACL 2018). Every parameter is in exactly one group, frozen ones included, so stages unfrozen
    later (:class:`GradualUnfreezing`) train at their rate. The head's group comes first, so ``History.step_lr``
    records the head's rate. Use: ``fit(model, data, lr=lr, params=param_groups(model, lr))``, or, the same groups
    built by ``fit`` from whatever rate it is given (so the rate can be tuned), ``fit(model, data, lr=lr,
    layer_decay=2.6)``.

    >>> from ftcourse import models
    >>> [(g["stage"], round(g["lr"], 5)) for g in param_groups(models.resnet(10, blocks=(1, 1)), 0.01)]
    [('head', 0.01), ('layer2', 0.00385), ('layer1', 0.00148), ('stem', 0.00057)]
    """
    return stage_rate_groups(_check_model(model, "param_groups"), lr, decay)


class GradualUnfreezing:
    """Unfreeze one stage every ``every`` steps, from the top: pass it as ``fit(..., before_step=...)``.

    At step 0 only the head trains; at step s the top ``1 + s // every`` stages train, until all do. The new head
    first learns from fixed features, so its large, random early gradients cannot wreck the pretrained stages below
    (Howard & Ruder 2018, ULMFiT's "gradual unfreezing", which unfreezes one layer per epoch). Build it from the
    model or from its stage names; to have every stage training for the last stretch of a 300-step run of a
    six-stage model, unfreeze one every 50 steps::

        fit(model, data, steps=300, before_step=GradualUnfreezing(model, every=50))
    """

    def __init__(self, model_or_stage_names, every: int = 1):
        if isinstance(model_or_stage_names, nn.Module):
            model_or_stage_names = _check_model(model_or_stage_names, "GradualUnfreezing").stage_names
        self.stage_names = tuple(model_or_stage_names)
        if not self.stage_names or self.stage_names[-1] != "head":
            raise ValueError(f"GradualUnfreezing needs a StagedNet or its stage names ending in 'head'; got "
                             f"{self.stage_names}.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1 (steps between unfreezing two stages); got {every!r}.")
        self.every = every

    def trainable_stages(self, step: int) -> tuple[str, ...]:
        """The stages that train at ``step`` (counted from 0)."""
        n = min(len(self.stage_names), 1 + step // self.every)
        return self.stage_names[-n:]

    def __call__(self, model: StagedNet, step: int) -> None:
        model = _check_model(model, "GradualUnfreezing")
        if model.stage_names != self.stage_names:
            raise ValueError(f"GradualUnfreezing was built for the stages {list(self.stage_names)}, but this model "
                             f"has {list(model.stage_names)}. Build it from this model: GradualUnfreezing(model).")
        trainable = self.trainable_stages(step)
        freeze(model, [name for name in self.stage_names if name not in trainable])
        unfreeze(model, list(trainable))

    def __repr__(self) -> str:
        return f"GradualUnfreezing({list(self.stage_names)}, every={self.every})"


class L2SP:
    """The L2-SP regulariser: weight decay towards the pretrained weights w0 instead of towards zero.

    Plain weight decay pulls every weight to 0, which erases what pretraining gave. L2-SP (Li, Grandvalet & Davoine,
    "Explicit inductive bias for transfer learning with convolutional networks", ICML 2018) pulls the feature
    extractor back to where it started, and only the new head, which has no starting point, towards zero::

        Omega(w) = alpha/2 * ||w_S - w0_S||^2  +  beta/2 * ||w_head||^2

    where S are all parameters except the head's (weights, biases, BatchNorm scales) and w_head are all the head's
    parameters. w0 is copied when the object is built, so build it from the pretrained model just before
    fine-tuning (before or after :func:`~ftcourse.models.replace_head`: the head is not copied), and turn fit's own
    weight decay off, as the paper does, so the two don't pull in different directions::

        fit(model, data, weight_decay=0, penalty=L2SP(model, alpha=0.01, beta=0.01))
    """

    def __init__(self, model: StagedNet, alpha: float = 0.01, beta: float = 0.01):
        model = _check_model(model, "L2SP")
        if alpha < 0 or beta < 0:
            raise ValueError(f"L2SP needs alpha >= 0 and beta >= 0; got alpha={alpha}, beta={beta}.")
        self.alpha, self.beta = alpha, beta
        self.w0 = {name: p.detach().clone() for name, p in model.named_parameters()
                      if not name.startswith("head.")}

    def _features(self, model: StagedNet):
        """Pairs (w, w0) of the model's current feature parameters and their starting values."""
        params = dict(model.named_parameters())
        missing = [name for name in self.w0 if name not in params]
        if missing:
            raise ValueError(f"This model has no parameters {missing[:3]}...: L2SP was built from another "
                             f"architecture. Build it from the model you fine-tune: L2SP(model).")
        return [(params[name], w0.to(params[name].device)) for name, w0 in self.w0.items()]

    def distance(self, model: StagedNet) -> float:
        """||w_S - w0_S||: how far the feature extractor has moved from the pretrained weights."""
        with torch.no_grad():
            return sum(((w - w0) ** 2).sum() for w, w0 in self._features(model)).sqrt().item()

    def penalty(self, model: StagedNet) -> torch.Tensor:
        """Omega(w), a scalar tensor with gradients, to be added to the loss."""
        features = sum(((w - w0) ** 2).sum() for w, w0 in self._features(model))
        head = sum((p ** 2).sum() for p in model.head.parameters())
        return self.alpha / 2 * features + self.beta / 2 * head

    __call__ = penalty  # so that an L2SP object can be passed as fit(..., penalty=L2SP(model))

    def __repr__(self) -> str:
        return f"L2SP(alpha={self.alpha}, beta={self.beta}, {len(self.w0)} pretrained tensors)"


@dataclass
class LPFTHistory:
    """The two phases of :func:`lp_ft`: the linear probe, then the fine-tuning of everything."""

    probe: History
    finetune: History


def lp_ft(model: StagedNet, train, val=None, *, probe_steps: int, finetune_steps: int, probe_lr: float,
          finetune_lr: float, **fit_kwargs) -> LPFTHistory:
    """LP-FT: first a linear probe (train only the head on frozen features), then fine-tune everything from there.

    Fine-tuning with a new, random head sends large, meaningless gradients into the pretrained features while the
    head is still wrong, and distorts them; that costs accuracy most on data unlike the training set (Kumar et al.,
    "Fine-tuning can distort pretrained features and underperform out-of-distribution", ICLR 2022). Fine-tuning that
    starts from a probed head changes the features less. Trains ``model`` in place (every stage trainable at the
    end) for ``probe_steps + finetune_steps`` optimiser steps in all; ``fit_kwargs`` (batch_size, augment, seed,
    ...) go to both calls of :func:`~ftcourse.train.fit`.
    """
    model = _check_model(model, "lp_ft")
    if {"checkpoint", "steps", "epochs", "lr"} & fit_kwargs.keys():
        raise ValueError("lp_ft runs fit twice: give probe_steps/finetune_steps and probe_lr/finetune_lr instead "
                         "of steps (or epochs) and lr, and no checkpoint (one file cannot hold two runs).")
    probe = fit_head_first(model, train, val, steps=probe_steps, lr=probe_lr, **fit_kwargs)
    finetune = fit(model, train, val, steps=finetune_steps, lr=finetune_lr, **fit_kwargs)
    return LPFTHistory(probe, finetune)


def fit_head_first(model: StagedNet, train, val=None, *, steps: int, lr: float, cache=None,
                   **fit_kwargs) -> History:
    """The first phase of LP-FT and of fastai's ``fine_tune``: train only the head, on frozen features, for ``steps``
    steps at ``lr``; then unfreeze every stage, so that the fine-tuning that follows starts from a trained head.
    ``fit_kwargs`` go to :func:`~ftcourse.train.fit`; returns its history.

    With ``cache`` (a folder), the phase is trained once per computation: what it changed (the head's weights) and
    its history are saved under a sha256 of everything that decides them -- the starting weights, the training data,
    ``steps``, ``lr`` and every argument of ``fit`` -- and read back the next time the same phase is asked for, by
    any recipe or lesson (a file that cannot be read is trained again)."""
    model = _check_model(model, "fit_head_first")
    unfreeze(freeze(model), "head")
    path = _head_first_path(cache, model, train, val, steps, lr, fit_kwargs) if cache is not None else None
    saved = _read_head_first(path, model) if path is not None and path.exists() else None
    if saved is not None:
        changed, history = saved
        model.load_state_dict(changed, strict=False)
        unfreeze(model)
        return history
    before = {name: t.detach().clone() for name, t in model.state_dict().items()} if path is not None else None
    history = fit(model, train, val, steps=steps, lr=lr, **fit_kwargs)
    unfreeze(model)
    if path is not None:
        changed = {name: tensor.detach().to("cpu").clone() for name, tensor in model.state_dict().items()
                   if not torch.equal(tensor, before[name])}
        save_state(path, {"changed": changed, "history": history.to_dict()})
    return history


def _head_first_path(cache, model, train, val, steps, lr, fit_kwargs) -> Path | None:
    """Where :func:`fit_head_first` keeps a phase: named by the computation, or None for data it cannot name."""
    named = [getattr(data, "fingerprint", None) for data in (train, val) if data is not None]
    if any(fingerprint is None for fingerprint in named):
        return None
    trainable = " ".join(name for name, p in model.named_parameters() if p.requires_grad)
    plain = (bool, int, float, str, type(None))
    settings = {name: value if isinstance(value, plain) else describe(value)
                for name, value in sorted(fit_kwargs.items()) if name != "progress"}
    text = json.dumps({"start": fingerprint(model), "trainable": trainable, "data": [f() for f in named],
                       "steps": steps, "lr": float(lr), "fit": settings, "ftcourse": ftcourse.__version__},
                      sort_keys=True, default=str)
    return Path(cache) / "head_first" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt"


def _read_head_first(path: Path, model) -> tuple[dict, History] | None:
    """A saved phase, ``(changed tensors, history)``, whose tensors fit ``model`` (names, shapes, dtypes); None for a
    damaged or foreign file, which is then trained again and written anew (nothing of it touches the model)."""
    try:
        saved = read_torch_file(path, "head-first phase")
        changed, state = saved["changed"], model.state_dict()
        fits = isinstance(changed, dict) and all(
            name in state and isinstance(t, torch.Tensor) and t.shape == state[name].shape
            and t.dtype == state[name].dtype for name, t in changed.items())
        return (changed, History.from_dict(saved["history"])) if fits else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def reinit(model: StagedNet, stages, seed: int = 0) -> StagedNet:
    """Give the named stages fresh random weights, as a new network would have them; returns the model.

    Re-using only the lower stages is a remedy for negative transfer: when the source's top features are too
    specialised to help the target task, start those stages afresh (lesson 04). Convolutions are initialised as in
    :func:`~ftcourse.models.resnet` (He et al. 2015: normal, fan_out); BatchNorm to the identity (weight 1, bias 0)
    with its running statistics reset; linear layers with PyTorch's default. The same ``seed`` gives the same
    weights, and the global random state is left as it was.
    """
    model = _check_model(model, "reinit")
    if stages is None:
        raise ValueError(f"reinit needs the stages to re-initialise, e.g. reinit(model, ['layer2', 'head']); this "
                         f"model's stages are {list(model.stage_names)}.")
    names = _stage_list(model, stages, None, (), "reinit")
    cuda = list({p.device for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for name in names:
            for module in model.stage(name).modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Linear)):
                    module.reset_parameters()  # BatchNorm: weight 1, bias 0 and running statistics reset
    return model
