"""Efficient fine-tuning: train a small part of a pretrained network, store only that part per target.

Full fine-tuning changes every weight, so each target costs a whole copy of the network. The methods here change a
chosen few, and what a target needs on disk is only what changed (its *delta*):

- ``"finetune"``: every parameter (the baseline).
- ``"probe"``: the new head only (features frozen).
- ``"last stage"``: the last feature stage and the head.
- ``"bitfit"``: the biases only, and the new head. BitFit (Ben Zaken, Ravfogel & Goldberg, ACL 2022) trains the bias
  terms of a Transformer. In the course's ResNet the convolutions have no bias (BatchNorm follows each one), so the
  biases are BatchNorm's shifts beta.
- ``"batchnorm"``: BatchNorm's scale gamma and shift beta, and the head. Mudrakarta, Sandler, Zhmoginov & Howard
  (ICLR 2019, "K for the price of 1") fine-tune such per-channel scales and biases as a small "model patch" per task;
  Frankle, Schwab & Morcos (ICLR 2021, "Training BatchNorm and only BatchNorm") show how much these few parameters
  can do even on top of random, untrained features.
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

from .models import StagedNet, copy_model, count_parameters, replace_head
from .train import fit

METHODS = ("finetune", "probe", "last stage", "bitfit", "batchnorm", "lora")  # and "surgical:STAGE"
LORA_RANK = 2  # an adapter under 3% of the lab network (rank 4: 6%)
LORA_ALPHA = 2  # alpha / r = 1


def _batchnorms(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def select(model: StagedNet, method: str) -> StagedNet:
    """Set ``requires_grad`` for ``method`` (not "lora": see :func:`lora`), in place; returns the model."""
    model.requires_grad_(False)
    if method == "finetune":
        model.requires_grad_(True)
    elif method == "probe":
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
                        cache=folder)
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
    from peft import get_peft_model

    return get_peft_model(model, _lora_config(rank, alpha, conv_names(model), modules_to_save=["head"]))


def merge(peft_model) -> StagedNet:
    """Fold each adapter into its convolution (W + (alpha / r) B A) and return the plain network (``merge_and_unload``)."""
    return peft_model.merge_and_unload()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a target must store: the trainable tensors, by name (a LoRA adapter and head, a bias vector...)."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def delta_bytes(model: nn.Module) -> int:
    """The size on disk of :func:`trainable_state`, written with ``torch.save``."""
    return _saved_bytes(trainable_state(model))


def optimizer_state_bytes(model: nn.Module, optimizer: str = "sgd") -> int:
    """Bytes of optimiser state for the trainable parameters: SGD with momentum keeps one buffer per parameter,
    Adam(W) two (the first and second moments)."""
    buffers = {"sgd": 1, "adamw": 2}[optimizer]
    return buffers * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def method_model(pretrained: StagedNet, num_classes: int, method: str) -> StagedNet:
    """A copy of ``pretrained`` with a new head of ``num_classes`` outputs, set up for ``method`` (see
    :func:`prepare`); ``pretrained`` itself is not changed."""
    model = replace_head(copy_model(pretrained), num_classes)
    prepare(method)(model)
    return model


def footprint(pretrained: StagedNet, num_classes: int, method: str) -> dict:
    """What ``method`` costs per target before any training: its trainable parameters (and their share of the
    network), the optimiser's state for them (SGD's momentum: one number per parameter) and the size on disk of the
    delta a target must store."""
    model = method_model(pretrained, num_classes, method)
    trainable = count_trainable(model)
    return {"method": method, "trainable": trainable, "share": trainable / count_parameters(pretrained),
            "optimizer_bytes": optimizer_state_bytes(model), "delta_bytes": delta_bytes(model)}


def saved_for_backward_bytes(model: nn.Module, images: torch.Tensor) -> int:
    """Bytes of the activations autograd keeps from one training forward pass for the backward pass.

    Training memory is the weights, their gradients and optimiser state, and these saved activations, which grow
    with the batch. Autograd saves what each operation needs to compute the gradients asked for: a frozen part of
    the network *below* every trainable parameter saves nothing, while one trainable parameter near the input makes
    every layer above it save its inputs. The count goes through ``torch.autograd.graph.saved_tensors_hooks`` and
    counts each storage once; the weights themselves are left out. It measures the same thing on any device (at
    float32: mixed precision halves it).
    """
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(images)
    finally:
        model.train(was_training)
    return sum(saved.values())


def step_cost(pretrained: StagedNet, data, method: str, *, steps: int = 30, batch_size: int = 32) -> dict:
    """What one optimiser step of ``method`` costs on ``data``'s device, trained on a copy: ``seconds_per_step``
    (``fit``'s median over its log intervals) and, on a CUDA GPU, ``peak_memory_bytes`` (CUDA's max allocated during
    the run; ``None`` elsewhere, where no allocator reports it honestly: see :func:`saved_for_backward_bytes`)."""
    model = method_model(pretrained, len(data.classes), method).to(data.device)
    cuda = data.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(data.device)
    history = fit(model, data, steps=steps, lr=0.01, batch_size=batch_size, augment=True, progress=False,
                  sync_every=max(1, steps // 3))
    peak = torch.cuda.max_memory_allocated(data.device) if cuda else None
    return {"seconds_per_step": history.seconds_per_step, "peak_memory_bytes": peak}


def _lora_config(rank: int, alpha: float, targets: list[str], **extra):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none", **extra)


class SharedBackbone:
    """One frozen backbone serving many targets: per target a LoRA adapter and a head, swapped at run time.

    Each target was fine-tuned with ``method="lora"`` on its own copy of the backbone. What it changed is its delta:
    the adapters' A and B, and its head. The backbone is stored once; ``peft`` holds every target's adapters side by
    side in the same convolutions (``add_adapter``) and ``use(name)`` switches them (``set_adapter``) and puts the
    target's head on. Nothing is merged, so switching costs no copy of any weight.
    """

    def __init__(self, backbone: StagedNet, rank: int = LORA_RANK, alpha: float = LORA_ALPHA):
        self.network = copy_model(backbone).requires_grad_(False).eval()
        self.config = _lora_config(rank, alpha, conv_names(self.network))  # the same layers for every target
        self.backbone_bytes = _saved_bytes(self.network.state_dict())
        self.peft_model = None
        self.heads: dict[str, nn.Linear] = {}
        self.deltas: dict[str, dict[str, torch.Tensor]] = {}

    def add(self, name: str, trained: StagedNet) -> None:
        """Take ``trained``'s adapters and head (a network fine-tuned with :func:`prepare` ``("lora")``)."""
        delta = trained_delta(trained)
        adapters = {key.replace(".default.", f".{name}."): value for key, value in delta.items() if "lora_" in key}
        if not adapters:
            raise ValueError(f"{name!r}: the network has no LoRA adapters; fine-tune it with method 'lora' first.")
        if self.peft_model is None:
            from peft import get_peft_model

            self.peft_model = get_peft_model(self.network, self.config, adapter_name=name)
        else:
            self.peft_model.add_adapter(name, self.config)
        result = self.network.load_state_dict(adapters, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{name!r}: adapters that fit no layer of the backbone: {result.unexpected_keys[:3]}")
        head = nn.Linear(delta["head.weight"].shape[1], delta["head.weight"].shape[0])
        head.load_state_dict({"weight": delta["head.weight"], "bias": delta["head.bias"]})
        self.heads[name] = head.requires_grad_(False).to(next(self.network.parameters()).device)
        self.deltas[name] = delta

    def use(self, name: str) -> SharedBackbone:
        """Switch to ``name``'s adapters and head."""
        if name not in self.heads:
            raise ValueError(f"No target {name!r}; the targets are {list(self.heads)}.")
        self.peft_model.set_adapter(name)
        self.network.requires_grad_(False)  # set_adapter marks the active adapter trainable; here nothing trains
        self.network.head = self.heads[name]
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.eval()(images)

    def bytes(self) -> dict:
        """The backbone once, and each target's delta, as saved with ``torch.save``."""
        return {"backbone": self.backbone_bytes, **{name: _saved_bytes(d) for name, d in self.deltas.items()}}


def trained_delta(model: nn.Module) -> dict[str, torch.Tensor]:
    """:func:`trainable_state` with the head under its plain names (``peft`` keeps a trained head as
    ``head.modules_to_save.default.weight``)."""
    return {key.replace("head.modules_to_save.default.", "head."): value
            for key, value in trainable_state(model).items()}


def _saved_bytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())
