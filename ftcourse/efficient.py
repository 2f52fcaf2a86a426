"""Efficient fine-tuning: train a small part of a pretrained network, store only that part per target.

Full fine-tuning changes every weight, so each target costs a whole copy of the network. The methods here change a
chosen few, and what a target needs on disk is only what changed (its *delta*):

- ``"full"``: every parameter (the baseline).
- ``"linear probe"``: the new head only (features frozen).
- ``"last stage"``: the last feature stage and the head.
- ``"bitfit"``: the biases only, and the new head. BitFit (Ben Zaken, Ravfogel & Goldberg, ACL 2022) trains the bias
  terms of a Transformer. In the course's ResNet the convolutions have no bias (BatchNorm follows each one), so the
  biases are BatchNorm's shifts beta.
- ``"batchnorm"``: BatchNorm's scale gamma and shift beta, and the head: the vision form of the idea (Frankle,
  Schwab & Morcos, ICLR 2021, "Training BatchNorm and only BatchNorm").
- ``"surgical:STAGE"``: one stage and the head. Lee, Chen, Tajwar, Kumar, Yao, Liang & Finn (ICLR 2023, "Surgical
  fine-tuning improves adaptation to distribution shifts") find that which block to tune depends on the kind of
  shift: the first block for input-level shifts (image corruptions), middle blocks for feature-level shifts (new
  subpopulations), the last layer for output-level shifts (a spurious correlation of labels).
- ``"lora"``: LoRA (Hu et al., ICLR 2022) through Hugging Face ``peft``, the library practitioners use: every
  convolution W keeps its pretrained weights frozen and learns a low-rank correction,

      W' = W + (alpha / r) * B @ A,    A: r x k (random),  B: out x r (zeros at the start),

  so the network starts exactly at the pretrained one. The new head is trained whole (``modules_to_save``): a head
  for new classes has nothing pretrained to correct. After training, ``merge`` folds B @ A into W
  (``merge_and_unload``): the network is an ordinary one again, with the same outputs and no extra cost.

Every method trains the new head: the target's classes are new. BatchNorm layers whose parameters are frozen keep
their running statistics (``StagedNet.train``), so what is not trained does not drift.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from .models import StagedNet

METHODS = ("full", "linear probe", "last stage", "bitfit", "batchnorm", "lora")  # and "surgical:STAGE"
LORA_RANK = 2  # an adapter under 3% of the lab network (rank 4: 6%)
LORA_ALPHA = 2  # alpha / r = 1


def _batchnorms(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def select(model: StagedNet, method: str) -> StagedNet:
    """Set ``requires_grad`` for ``method`` (not "lora": see :func:`lora`), in place; returns the model."""
    model.requires_grad_(False)
    if method == "full":
        model.requires_grad_(True)
    elif method == "linear probe":
        pass
    elif method == "last stage":
        model.stage(model.stage_names[-2]).requires_grad_(True)
    elif method == "bitfit":
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.requires_grad_(True)
    elif method == "batchnorm":
        for bn in _batchnorms(model):
            bn.requires_grad_(True)
    elif method.startswith("surgical:"):
        model.stage(method.split(":", 1)[1]).requires_grad_(True)
    else:
        raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)} or 'surgical:STAGE' with a stage of "
                         f"{list(model.stage_names[:-1])}.")
    model.head.requires_grad_(True)
    return model


def prepare(method: str):
    """A ``prepare`` hook for :func:`ftcourse.experiments.run`: set up ``method`` on the freshly built model, in place.

    For "lora", ``peft`` injects the adapters into the model itself, so the run trains and tests the same object::

        experiments.run(task, "finetune", pretrained=net, prepare=efficient.prepare("bitfit"), lr="tuned",
                        variant="bitfit", cache=folder)
    """
    def hook(model: StagedNet) -> None:
        if method == "lora":
            lora(model)
        else:
            select(model, method)
    return hook


def conv_names(model: nn.Module) -> list[str]:
    """The names of every convolution of ``model``: LoRA's ``target_modules``."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def lora(model: StagedNet, rank: int = LORA_RANK, alpha: float = LORA_ALPHA):
    """``model`` with LoRA adapters on every convolution and a trainable head, through ``peft`` (a PeftModel).

    Only the adapters and the head train; the rest stays as pretrained. ``peft`` changes ``model`` in place (it
    wraps its convolutions), so pass a copy.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=conv_names(model), modules_to_save=["head"],
                        lora_dropout=0.0, bias="none")
    return get_peft_model(model, config)


def merge(peft_model) -> StagedNet:
    """Fold each adapter into its convolution (W + (alpha / r) B A) and return the plain network (``merge_and_unload``)."""
    return peft_model.merge_and_unload()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a target must store: the trainable tensors, by name (a LoRA adapter and head, a bias vector...)."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def delta_bytes(model: nn.Module) -> int:
    """The size on disk of :func:`trainable_state`, written with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save(trainable_state(model), buffer)
    return len(buffer.getvalue())


def optimizer_state_bytes(model: nn.Module, optimizer: str = "sgd") -> int:
    """Bytes of optimiser state for the trainable parameters: SGD with momentum keeps one buffer per parameter,
    Adam(W) two (the first and second moments)."""
    buffers = {"sgd": 1, "adamw": 2}[optimizer]
    return buffers * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
