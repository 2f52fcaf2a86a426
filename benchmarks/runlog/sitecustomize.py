"""Records every training run of a Python process, for benchmarks/course_runs.py (not part of the library).

With ``FTCOURSE_RUN_LOG=path`` set and this folder on ``PYTHONPATH``, every call of ``ftcourse.train.fit`` and of
``transformers.Trainer.train`` appends one JSON line to ``path``: a key (a sha256 of the starting weights, the
training data and every setting that decides the run), the optimiser steps the call ran, and whether it continued a
paused run. Two lines with the same key that are not continuations are one run trained twice. It patches the
functions before any other module imports them, so it works on any version of ftcourse, old or new.
"""

import hashlib
import json
import os
from pathlib import Path

PATH = os.environ.get("FTCOURSE_RUN_LOG")


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()[:24]


def _tensor_bytes(tensor) -> bytes:
    tensor = tensor.detach().to("cpu").contiguous()
    return f"{tensor.dtype}{tuple(tensor.shape)}".encode() + tensor.reshape(-1).view(-1).numpy().tobytes()


def _where() -> list[str]:
    """The calls that led to this run, outermost first: the notebook's line and the library functions, so that a run
    made twice can be traced to the two places that asked for it."""
    import linecache
    import sys

    chain, frame = [], sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if "ipykernel" in code.co_filename or code.co_filename.startswith("<ipython"):
            line = linecache.getline(code.co_filename, frame.f_lineno).strip()
            chain.append(f"cell: {line[:90]}")
        elif "ftcourse" in code.co_filename:
            chain.append(f"{Path(code.co_filename).stem}.{code.co_name}")
        frame = frame.f_back
    return chain[::-1]


def _log(entry: dict) -> None:
    with open(PATH, "a") as f:
        f.write(json.dumps(entry) + "\n")


if PATH:
    import ftcourse.models
    import ftcourse.train as train

    real_fit = train.fit

    def fit(model, train_data, val=None, **kwargs):
        start = ftcourse.models.fingerprint(model)
        trainable = " ".join(n for n, p in model.named_parameters() if p.requires_grad)
        data = train_data.train if isinstance(train_data, ftcourse.data.Task) else train_data
        if isinstance(data, (tuple, list)):
            images, targets = data
        else:  # ImageData (labels), Examples (targets), or a DataLoader (neither)
            images = getattr(data, "images", None)
            targets = getattr(data, "labels", getattr(data, "targets", None))
        data_key = _digest(_tensor_bytes(images), _tensor_bytes(targets)) if images is not None else "loader"
        settings = {k: train.describe(v) if callable(v) or hasattr(v, "penalty") else v
                    for k, v in sorted(kwargs.items())
                    if k not in ("progress", "live_plot", "sync_every", "checkpoint", "resume", "stop_at",
                                 "checkpoint_every", "params")}
        if kwargs.get("params") is not None:
            settings["params"] = [[sum(p.numel() for p in g["params"]), g.get("lr")] for g in kwargs["params"]]
        checkpoint = kwargs.get("checkpoint")
        resumed = bool(kwargs.get("resume")) and checkpoint is not None and os.path.exists(checkpoint)
        before = 0
        if resumed:
            import torch

            before = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
        history = real_fit(model, train_data, val, **kwargs)
        _log({"kind": "fit", "key": _digest(start, trainable, data_key, settings), "resumed": resumed,
              "steps": history.steps_done - before, "lr": kwargs.get("lr"), "where": _where()})
        return history

    train.fit = fit

    if os.environ.get("FTCOURSE_RUN_LOG_TRAINER"):
        import transformers

        real_train = transformers.Trainer.train

        def trainer_train(self, *args, **kwargs):
            state = self.model.state_dict()
            start = _digest(*(_tensor_bytes(state[k]) for k in sorted(state)),  # and which of them train
                            " ".join(n for n, p in self.model.named_parameters() if p.requires_grad))
            data = _digest(*(_tensor_bytes(example["input_ids"]) for example in self.train_dataset))
            a = self.args
            settings = (a.learning_rate, a.max_steps, a.per_device_train_batch_size, a.seed, a.warmup_steps,
                        str(a.lr_scheduler_type), a.weight_decay)
            result = real_train(self, *args, **kwargs)
            _log({"kind": "trainer", "key": _digest(start, data, settings), "resumed": False,
                  "steps": int(self.state.global_step), "lr": a.learning_rate, "where": _where()})
            return result

        transformers.Trainer.train = trainer_train
