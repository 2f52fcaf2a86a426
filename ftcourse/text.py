"""Fine-tuning a language model with Hugging Face: a tiny BERT pretrained on the text lab, and the course's questions.

Transfer on text, as practitioners do it (Wolf et al., "Transformers: State-of-the-Art Natural Language
Processing", EMNLP 2020 System Demonstrations):

1. **Pretrain** a BERT-style encoder (Devlin et al., NAACL 2019) with masked language modelling on unlabelled text:
   15% of the tokens are chosen; of those, 80% become ``[MASK]``, 10% a random token, 10% stay; the loss is the
   cross-entropy of the original token at the chosen positions only,

       L_MLM(theta) = - sum_{i in chosen} log p_theta(x_i | x with the chosen positions corrupted).

   :data:`RECIPE` does this on :func:`ftcourse.textlab.corpus` with ``transformers``' ``Trainer`` and
   ``DataCollatorForLanguageModeling``; the result is shipped (``ftcourse/checkpoints/text/``, safetensors, with a
   sha256 per file in ``text.json``) and loaded by :func:`pretrained`. ``ftcourse pretrain --source text`` makes it
   again.
2. **Fine-tune** it for a labelled target: ``AutoModelForSequenceClassification.from_pretrained`` keeps the encoder
   and adds a new, randomly initialised head (a pooler on ``[CLS]`` and a linear classifier; the MLM head is
   dropped), trained with ``Trainer``: AdamW, a linear warm-up then a linear decay of the rate
   (:func:`finetune`). The methods of :data:`METHODS`: ``scratch`` (the same network, random weights), ``probe`` (only
   the new head trains), ``finetune`` (everything trains) and ``lora`` (Hu et al., ICLR 2022: the encoder frozen, a
   rank-r update ``W + (alpha/r) B A`` learned on each attention query and value projection, through ``peft``, with
   the new head).

Every method's rate is chosen on the target's validation split (:func:`tuned`) by the course's one rule
(:mod:`ftcourse.protocol`), as everywhere in the course.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from . import protocol, textlab
from .files import save_json

METHODS = ("scratch", "probe", "finetune", "lora")
LR_GRID = (3e-4, 1e-3, 3e-3)  # AdamW rates; the ladder extends the grid while the best rate sits at an edge
# Where each method's tuning starts. The probe and LoRA train few weights (a head; rank-4 adapters and the head) and
# want rates about ten times larger than the whole encoder: measured in the cpu profile, they chose 1e-2 or 3e-2 in
# most tunings. Starting them there spends the ladder's two extra runs only where a smaller rate is better; every
# method still ends at a rate whose neighbours on the ladder were tried (or at the ladder's end).
START_GRIDS = {"scratch": LR_GRID, "finetune": LR_GRID, "probe": (3e-3, 1e-2, 3e-2), "lora": (3e-3, 1e-2, 3e-2)}
LR_LADDER = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WARMUP = 0.1  # the share of the steps over which the rate rises linearly from 0 (Trainer's warmup_steps < 1)
LORA_RANK, LORA_ALPHA = 4, 8

RECIPE = {
    "corpus": {"n": 20_000, "seed": 0},
    "model": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128,
              "max_position_embeddings": textlab.MAX_LENGTH, "type_vocab_size": 1,
              # No dropout: with BERT's 0.1 this small model learned agreement only to 64% within the budget
              # (a masked verb given the subject's number); without it, to 100%.
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "train": {"max_steps": 3000, "per_device_train_batch_size": 64, "learning_rate": 2e-3, "warmup_steps": 0.06,
              "weight_decay": 0.01, "mlm_probability": 0.15, "seed": 0},
}
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
NAME = "text"  # the shipped folder checkpoints/text/ and its record checkpoints/text.json
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


# ------------------------------------------------------------------------------------------------------------------
# Pretraining and the shipped checkpoint.

def quiet_transformers() -> None:
    """Keep ``transformers``' log to errors only: the lesson prints its own, readable lines."""
    from transformers.utils import logging as hf_logging

    import warnings

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def silence(trainer) -> None:
    """Remove the callback that prints ``Trainer``'s metrics dictionaries (the lesson prints tables instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def encode(tokenizer, texts, labels=None) -> list[dict]:
    """Token ids, attention masks (and labels) of ``texts``, padded to the tokenizer's ``model_max_length``: a list of
    examples in the form ``Trainer`` takes."""
    batch = tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
    examples = [{"input_ids": ids, "attention_mask": mask}
                for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    if labels is not None:
        for example, label in zip(examples, labels):
            example["labels"] = torch.tensor(int(label))
    return examples


def training_arguments(folder, **values):
    """``TrainingArguments`` for short runs on a laptop: no saving, no reports to external trackers, no progress bar
    or logging, the CPU unless CUDA is there, and whatever ``values`` set."""
    from transformers import TrainingArguments

    defaults = {"output_dir": str(folder), "report_to": "none", "save_strategy": "no", "logging_strategy": "no",
                "disable_tqdm": True, "use_cpu": not torch.cuda.is_available(), "dataloader_pin_memory": False,
                "optim": "adamw_torch", "log_level": "error"}
    return TrainingArguments(**{**defaults, **values})


ARGUMENTS_SHOWN = {  # the settings lesson 09 talks about, and what each means
    "max_steps": "optimiser steps in all",
    "learning_rate": "AdamW's peak rate",
    "warmup_steps": "steps of linear warm-up to the peak",
    "lr_scheduler_type": "the rate after the warm-up",
    "optim": "the optimiser",
    "per_device_train_batch_size": "examples per step",
    "save_strategy": "checkpoints written during training",
}


def arguments_table(args, names=tuple(ARGUMENTS_SHOWN)) -> pd.DataFrame:
    """A few settings of a ``TrainingArguments`` as a table a person reads: one row per setting, its value (an
    enum shown by its value, ``linear``, not ``<SchedulerType.LINEAR: 'linear'>``) and what it means."""
    rows = []
    for name in names:
        value = getattr(args, name)
        rows.append({"setting": name, "value": str(getattr(value, "value", value)),
                     "meaning": ARGUMENTS_SHOWN.get(name, "")})
    return pd.DataFrame(rows).set_index("setting")


def pretrain(recipe: dict = RECIPE):
    """Run ``recipe``: a word-level tokenizer trained on the corpus, then a BERT trained with MLM on it for
    ``max_steps`` steps. Returns ``(model, tokenizer, info)``; ``info`` holds the MLM accuracy on held-out sentences
    (of the 15% chosen tokens) and the seconds it took."""
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer

    quiet_transformers()
    start = time.perf_counter()
    texts = textlab.corpus(**recipe["corpus"])
    tokenizer = textlab.train_tokenizer(texts)
    train = dict(recipe["train"])
    probability, seed = train.pop("mlm_probability"), train["seed"]
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **recipe["model"])
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)  # Trainer seeds torch
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(model=model, args=training_arguments(folder, **train), data_collator=collator,
                          train_dataset=encode(tokenizer, texts))
        silence(trainer)
        trainer.train()
    info = {"mlm_accuracy": round(mlm_accuracy(model, tokenizer), 4),
            "seconds": round(time.perf_counter() - start, 1), "device": str(model.device),
            "torch": torch.__version__}
    return model.cpu().eval(), tokenizer, info


def mlm_accuracy(model, tokenizer, n: int = 2000, seed: int = 1) -> float:
    """How often the model restores a chosen token of held-out corpus sentences (15% chosen, 80/10/10 corrupted)."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    torch.manual_seed(seed)  # the collator draws its masks from torch's generator
    batch = collator(encode(tokenizer, textlab.corpus(n, seed=seed + 1000)))
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"].to(model.device),
                       attention_mask=batch["attention_mask"].to(model.device)).logits.cpu()
    chosen = batch["labels"] != -100
    return float((logits.argmax(-1)[chosen] == batch["labels"][chosen]).float().mean())


def masked_word_accuracy(model, tokenizer, role: str, n: int = 1000, seed: int = 2) -> float:
    """How often the model's best word for a masked word carries the factor the grammar ties to it, when only that
    word is masked in a held-out sentence: for the ``"verb"``, the subject's number (agreement; chance 1/2); for the
    ``"noun"``, the topic (from the place and the adjectives; chance 1/4); for the second ``"adjective"``, topic and
    polarity (from the other adjective; chance 1/8). A masked "not" is not asked about: the sentence's shape alone
    says whether a word is missing after the verb."""
    import random

    if role not in ("noun", "verb", "adjective"):
        raise ValueError(f"role must be 'noun', 'verb' or 'adjective', got {role!r}.")
    rng = random.Random(f"masked words {seed}")
    drawn = [textlab.sentence(rng) for _ in range(n)]
    words = [s.text.split() for s in drawn]
    where = [{"noun": 1, "verb": 2}.get(role, len(w) - 5) for w in words]  # the second adjective: 5th from the end
    masked = [" ".join([*w[:i], tokenizer.mask_token, *w[i + 1:]]) for w, i in zip(words, where)]
    batch = tokenizer(masked, padding="max_length", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"].to(model.device),
                       attention_mask=batch["attention_mask"].to(model.device)).logits.cpu()
    guesses = tokenizer.convert_ids_to_tokens(logits[torch.arange(n), torch.tensor(where) + 1].argmax(-1))  # +1: [CLS]
    return sum(_carries(role, guess, s) for guess, s in zip(guesses, drawn)) / n


def _carries(role: str, word: str, s: textlab.Sentence) -> bool:
    """Does ``word``, put in the place of ``role``, carry the factor of sentence ``s`` that the grammar ties to it?"""
    nouns, _, good, bad = list(textlab.TOPICS.values())[s.topic]
    if role == "verb":
        return word in {pair[s.plural] for pair in textlab.VERBS}
    if role == "noun":
        return word.removesuffix("s") in nouns
    return word in (good if s.positive else bad)


def save_checkpoint(model, tokenizer, recipe: dict, info: dict, folder) -> dict:
    """Write the model (safetensors) and tokenizer with ``save_pretrained`` into ``folder``, and a record beside it,
    ``folder.json``, with the recipe, ``info`` and the sha256 of each file. Returns the sha256s by file name."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    digests = {name: sha256_of(folder / name) for name in FILES}
    save_json(folder.with_suffix(".json"), {"folder": folder.name, "sha256": digests, "recipe": recipe, **info},
              indent=2)
    return digests


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verified(folder=None) -> Path:
    """The checkpoint folder (default: the shipped one), after checking every file against the sha256 recorded in
    ``folder.json``. A folder from elsewhere is refused with a message that names the file and the fix, never half
    read: a changed, missing or unrecorded file raises ``ValueError`` or ``FileNotFoundError``."""
    folder = CHECKPOINT_DIR / NAME if folder is None else Path(folder)
    fix = ("Make it again with `ftcourse pretrain --source text` (or reinstall ftcourse for the shipped one).")
    record_path = folder.with_suffix(".json")
    if not folder.is_dir():
        raise FileNotFoundError(f"no text checkpoint folder at {folder}. {fix}")
    if not record_path.is_file():
        raise FileNotFoundError(f"{folder} has no record {record_path.name} beside it, so its files cannot be "
                                f"checked. {fix}")
    try:
        digests = json.loads(record_path.read_text())["sha256"]
        assert isinstance(digests, dict) and set(digests) == set(FILES)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(f"{record_path} is not a text checkpoint record (it must list the sha256 of "
                         f"{', '.join(FILES)}). {fix}") from None
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the text checkpoint. {fix}")
        if sha256_of(path) != digests[name]:
            raise ValueError(f"{path} is not the file that was recorded (its sha256 differs from {record_path.name}"
                             f"'s). {fix}")
    return folder


def pretrained(folder=None):
    """The pretrained MLM model and its tokenizer, from the shipped checkpoint or ``folder``, verified first."""
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    quiet_transformers()
    folder = verified(folder)
    model = BertForMaskedLM.from_pretrained(folder, use_safetensors=True)
    return model.eval(), PreTrainedTokenizerFast.from_pretrained(folder)


def record(folder=None) -> dict:
    """The record of the checkpoint (default: the shipped one): recipe, MLM accuracy, seconds, device."""
    folder = CHECKPOINT_DIR / NAME if folder is None else Path(folder)
    return json.loads(folder.with_suffix(".json").read_text())


def quick_version(recipe: dict) -> dict:
    """A miniature of ``recipe`` for tests: the same code path in seconds."""
    return {**recipe, "corpus": {**recipe["corpus"], "n": 500}, "train": {**recipe["train"], "max_steps": 20}}


# ------------------------------------------------------------------------------------------------------------------
# Fine-tuning.

def classifier(method: str, num_classes: int, *, source=None, seed: int = 0):
    """The network ``method`` trains for a target of ``num_classes`` classes, from ``source`` (a checkpoint folder or
    hub name; default: the shipped, verified checkpoint).

    ``AutoModelForSequenceClassification.from_pretrained`` builds a classifier from the MLM checkpoint: the encoder's
    weights are loaded, the MLM head is left out and the pooler and classifier start random (seeded here). Its
    ``ignore_mismatched_sizes=True`` is for a checkpoint that already *has* a classifier of another size (a
    2-class model reused for 4 classes): without it, loading fails; with it, the mismatched head is re-initialised.
    The MLM checkpoint has no classifier, so it is not needed here.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)}.")
    quiet_transformers()
    source = verified() if source is None else source
    torch.manual_seed(seed)  # the new head's initial weights (and scratch's whole network) come from the seed
    if method == "scratch":
        config = AutoConfig.from_pretrained(source, num_labels=num_classes)
        return AutoModelForSequenceClassification.from_config(config)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_classes)
    if method == "probe":
        head = tuple(head_names(model, full=True))
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(head)
    if method == "lora":
        model = lora(model)
    return model


def head_names(model, full: bool = False) -> list[str]:
    """The modules of the new head, those not loaded from the MLM checkpoint: the classifier (and DistilBERT's
    ``pre_classifier``) and, where the model has one, BERT's pooler (``bert.pooler`` with ``full=True``, else
    ``pooler``, the suffix ``peft`` matches)."""
    prefix = model.base_model_prefix
    names = [name for name, _ in model.named_children() if name not in (prefix, "dropout")]
    if getattr(getattr(model, prefix), "pooler", None) is not None:
        names.append(f"{prefix}.pooler" if full else "pooler")
    return names


def lora(model, rank: int = LORA_RANK, alpha: float = LORA_ALPHA):
    """LoRA through ``peft`` on the attention's query and value projections (as Hu et al. did), the new head trained
    whole (``modules_to_save``); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    targets = ["query", "value"] if model.config.model_type == "bert" else ["q_lin", "v_lin"]
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                        modules_to_save=head_names(model))
    return get_peft_model(model, config)


def finetune(task: textlab.TextTask, method: str, *, lr: float, steps: int = 150, batch_size: int = 32,
             seed: int = 0, source=None, tokenizer=None, warmup: float = WARMUP) -> dict:
    """Train ``method`` on ``task.train`` for ``steps`` optimiser steps with ``Trainer`` (AdamW at peak rate ``lr``,
    linear warm-up over the first ``warmup`` share of the steps, then linear decay), then evaluate on ``task.val``
    and ``task.test``. Returns ``val_accuracy``, ``val_loss``, ``accuracy`` (test),
    ``seconds``, ``diverged`` (:func:`ftcourse.protocol.diverged`) and the trained ``model``."""
    trial = TextTrial(task, method, lr=lr, steps=steps, batch_size=batch_size, seed=seed, source=source,
                      tokenizer=tokenizer, warmup=warmup)
    trial.train(until=None)
    val = trial.validate()
    return {"val_accuracy": val["val"], "val_loss": val["val_loss"], "accuracy": trial.test()["accuracy"],
            "seconds": round(trial.seconds, 2),
            "diverged": protocol.diverged(val["val"], val["val_loss"], chance=1 / task.num_classes),
            "model": trial.model.eval()}


def encoded(task: textlab.TextTask, tokenizer=None, source=None) -> dict:
    """The task's three splits as ``Trainer`` examples (:func:`encode`), with ``tokenizer`` or ``source``'s own."""
    from transformers import AutoTokenizer

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(verified() if source is None else source)
    return {part: encode(tokenizer, split.texts, split.labels)
            for part, split in (("train", task.train), ("val", task.val), ("test", task.test))}


class TextTrial:
    """One ``Trainer`` run of :func:`finetune`, as :func:`ftcourse.protocol.tune` drives it.

    A run can pause at a step and go on later, as the protocol's early stop asks: ``Trainer`` saves its own
    checkpoint there (weights, AdamW's moments, the schedule's position, the random states) and
    ``train(resume_from_checkpoint=...)`` goes on from it, with the same schedule as a run that never stopped.
    """

    def __init__(self, task: textlab.TextTask, method: str, *, lr: float, steps: int, batch_size: int, seed: int,
                 source=None, tokenizer=None, warmup: float = WARMUP, data: dict | None = None):
        self.model = classifier(method, task.num_classes, source=source, seed=seed)
        self.data = data if data is not None else encoded(task, tokenizer, source)
        self.settings = dict(max_steps=steps, per_device_train_batch_size=batch_size, per_device_eval_batch_size=256,
                             learning_rate=lr, warmup_steps=warmup, lr_scheduler_type="linear", seed=seed)
        self.trainer, self.seconds = None, 0.0
        self._folder = None  # a TemporaryDirectory: the Trainer's output folder, where a paused run's checkpoint waits
        self._paused_at = None

    def train(self, until: int | None) -> None:
        start = time.perf_counter()
        trainer = self._trainer()
        resume = None if self._paused_at is None else str(Path(self._folder.name) / f"checkpoint-{self._paused_at}")
        pause = _stop_after(until) if until is not None else None
        if pause is not None:
            trainer.add_callback(pause)
        # Trainer.train starts with a full gc.collect() (accelerate's free_memory), which walks every object the
        # process holds: transformers alone makes that a tenth of a second or more, for every run and every
        # resumption. Freezing the objects that exist now (gc.freeze) leaves it only this run's to look at;
        # unfreeze hands them back to the collector afterwards, so nothing is kept longer than one run.
        gc.freeze()
        try:
            trainer.train(resume_from_checkpoint=resume)
        finally:
            gc.unfreeze()
            if pause is not None:
                trainer.remove_callback(pause)
        self._paused_at = until
        if until is None:
            self._folder.cleanup()
        self.seconds += time.perf_counter() - start

    def _trainer(self):
        """The run's ``Trainer`` (made once: a run read back from the cache is only evaluated with it)."""
        from transformers import Trainer

        if self.trainer is None:
            self._folder = tempfile.TemporaryDirectory(prefix="ftcourse-text-")  # only a pause writes there
            self.trainer = Trainer(model=self.model, args=training_arguments(self._folder.name, **self.settings),
                                   train_dataset=self.data["train"], eval_dataset=self.data["val"],
                                   compute_metrics=_accuracy)
            silence(self.trainer)
        return self.trainer

    def validate(self) -> dict:
        val = self._trainer().evaluate()
        return {"val": float(val["eval_accuracy"]), "val_loss": float(val["eval_loss"])}

    def finish(self) -> dict:
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"trainable": trainable, "seconds": round(self.seconds, 2), "history": None}

    def test(self) -> dict:
        test = self._trainer().evaluate(self.data["test"], metric_key_prefix="test")
        return {"accuracy": float(test["test_accuracy"])}


def _stop_after(step: int):
    """A ``TrainerCallback`` that stops training after optimiser step ``step`` and has ``Trainer`` save its checkpoint
    there (:class:`TextTrial` goes on from it)."""
    from transformers import TrainerCallback

    class PauseAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_save = True
                control.should_training_stop = True
            return control

    return PauseAt()


class TextRecipe:
    """How :func:`ftcourse.protocol.tune` starts one run of :func:`tuned`, and the run's name in the cache: the
    shipped checkpoint's sha256, the target, its size and seed, the method and every training setting."""

    can_pause = True
    test_names = ("accuracy",)

    def __init__(self, target: str, shots: int, method: str, *, seed: int, steps: int, batch_size: int,
                 test_per_class: int):
        self.task = textlab.target(target, shots, test_per_class=test_per_class, seed=seed)
        self.method, self.seed, self.steps, self.batch_size = method, seed, steps, batch_size
        self.chance = 1 / self.task.num_classes
        self._data = None
        self.key = {"kind": "text", "checkpoint": record()["sha256"], "target": target, "shots": shots,
                    "seed": seed, "method": method, "steps": steps, "batch_size": batch_size,
                    "test_per_class": test_per_class, "warmup": WARMUP, "lora": [LORA_RANK, LORA_ALPHA],
                    "probe": 2 if method == "probe" else None}  # 2: the probe trains the pooler too

    def start(self, lr: float) -> TextTrial:
        if self._data is None:  # tokenised once for every rate
            self._data = encoded(self.task)
        return TextTrial(self.task, self.method, lr=lr, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                         data=self._data)


def _accuracy(prediction) -> dict:
    logits, labels = prediction.predictions, prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def tuned(target: str, shots: int, method: str, *, seed: int = 0, steps: int = 150, batch_size: int = 32,
          test_per_class: int = 100, grid=None, ladder=LR_LADDER, cache=None, keep_model: bool = False) -> dict:
    """``method`` on the text-lab ``target`` with ``shots`` labels per class at its best rate, chosen on validation
    from ``grid`` (default: the method's :data:`START_GRIDS`; extended along ``ladder`` while the best rate sits at an
    edge) by the course's one rule
    (:func:`ftcourse.protocol.tune`); the test accuracy of that run. Every run is cached in ``cache`` (a folder).
    Returns the rate, the validation and test accuracy, whether the chosen run diverged, ``tuning_runs``, the
    ``seconds`` all of them took to train when they ran, and the chosen ``model`` (trained now, or kept with
    ``keep_model=True``)."""
    recipe = TextRecipe(target, shots, method, seed=seed, steps=steps, batch_size=batch_size,
                        test_per_class=test_per_class)
    result = protocol.tune(recipe, grid=START_GRIDS.get(method, LR_GRID) if grid is None else grid, ladder=ladder, steps=steps, cache=cache, keep_model=keep_model)
    return {"target": target, "shots": shots, "method": method, "seed": seed, "lr": result.lr,
            "val_accuracy": result.val, "accuracy": result.test.get("accuracy", math.nan),
            "diverged": result.diverged, "tuning_runs": result.runs, "seconds": result.seconds,
            "model": result.model}


def comparison(targets, shots, methods=METHODS, *, seeds=(0,), cache=None, keep_models=(), **kwargs) -> pd.DataFrame:
    """:func:`tuned` for every target x labels per class x method, one row per seed: every seed a whole replicate,
    with its own training sentences and its own choice of rate. Each row says how many ``tuning_runs`` it cost. The
    cache keeps the weights of the first seed's chosen runs of the methods in ``keep_models``."""
    rows = []
    for t in targets:
        for n in shots:
            for m in methods:
                def one_seed(seed, t=t, n=n, m=m):
                    result = tuned(t, n, m, seed=seed, cache=cache,
                                   keep_model=protocol.keeps_model(m, seed, keep_models, seeds),
                                   **kwargs)
                    return {k: v for k, v in result.items() if k != "model"}

                rows += protocol.replicates(one_seed, seeds)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------------
# Which layers moved.

def layer_movement(before, after) -> pd.Series:
    """How far fine-tuning moved each part of the encoder: ``||theta_after - theta_before|| / ||theta_before||`` over
    the parameters of the embeddings and of each transformer layer (a LoRA model is merged first)."""
    if hasattr(after, "merge_and_unload"):
        after = after.merge_and_unload()
    old, new = before.base_model.state_dict(), after.base_model.state_dict()
    moved, size = {}, {}
    for name, weight in old.items():
        if name not in new or not weight.is_floating_point():
            continue
        parts = name.split(".")
        part = "embeddings" if parts[0] == "embeddings" else (
            f"layer {parts[2]}" if parts[:2] == ["encoder", "layer"] else None)
        if part is None:
            continue
        moved[part] = moved.get(part, 0.0) + float((new[name].float() - weight.float()).pow(2).sum())
        size[part] = size.get(part, 0.0) + float(weight.float().pow(2).sum())
    return pd.Series({part: math.sqrt(moved[part] / size[part]) for part in moved}, name="relative change")


# ------------------------------------------------------------------------------------------------------------------
# The online path: a real model and a real data set from the Hugging Face hub, where there is a network.

ONLINE_MODEL = "distilbert-base-uncased"
ONLINE_MAX_LENGTH = 64  # tokens: SST-2's sentences are short; a T4 fine-tunes a few hundred steps in a few minutes


def online_enabled() -> bool:
    """True where the lesson should try the hub: in Colab, or with ``FTCOURSE_ONLINE=1``."""
    import sys

    return os.environ.get("FTCOURSE_ONLINE") == "1" or "google.colab" in sys.modules


def hub_or_lab(shots: int, *, test_per_class: int = 200, seed: int = 0, model: str = ONLINE_MODEL,
               load_dataset=None, lab_target: str = "sentiment"):
    """The task, source and tokenizer for :func:`finetune`: SST-2 (Socher et al., EMNLP 2013: movie-review sentences,
    positive or negative) and ``model`` from the hub, or, when either cannot be had, the text lab's ``lab_target``
    and the shipped checkpoint, with a printed message that says which and why.

    SST-2's test labels are not public, so its ``validation`` split serves as test, and validation is drawn from the
    training sentences not used for training. ``load_dataset`` (default: ``datasets.load_dataset``, imported only
    here) can be replaced, e.g. by a test's local fake. Returns ``(task, source, tokenizer, which)``, ``which`` being
    ``"hub"`` or ``"lab"``."""
    import random

    from transformers import AutoConfig, AutoTokenizer

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")  # seconds: an unreachable hub fails fast, not after minutes
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        if load_dataset is None:
            from datasets import load_dataset
        sst2 = load_dataset("glue", "sst2")
        tokenizer = AutoTokenizer.from_pretrained(model)
        longest = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", ONLINE_MAX_LENGTH)
        tokenizer.model_max_length = min(ONLINE_MAX_LENGTH, longest)
        rng = random.Random(f"sst2 {seed}")
        train = list(zip(sst2["train"]["sentence"], sst2["train"]["label"]))
        rng.shuffle(train)
        per_class = {0: [], 1: []}
        for sentence, label in train:
            per_class[int(label)].append(sentence)
        parts = [per_class[c][:shots] for c in (0, 1)], [per_class[c][shots:2 * shots + 10]
                                                                 for c in (0, 1)]
        splits = [textlab.TextSplit([t for c in (0, 1) for t in part[c]],
                                    [c for c in (0, 1) for _ in part[c]]) for part in parts]
        test = list(zip(sst2["validation"]["sentence"], sst2["validation"]["label"]))[:2 * test_per_class]
        splits.append(textlab.TextSplit([t for t, _ in test], [int(y) for _, y in test]))
        task = textlab.TextTask("sst2", ("negative", "positive"), "SST-2 movie-review sentiment", *splits)
        print(f"online: {model} and SST-2 from the Hugging Face hub ({len(task.train)} training sentences)")
        return task, model, tokenizer, "hub"
    except Exception as error:  # no datasets package, no network, a hub error: the offline path, said aloud
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        print(f"offline: the hub could not be used ({reason}); running the text lab's {lab_target!r} target with "
              f"the shipped checkpoint instead")
        task = textlab.target(lab_target, shots, test_per_class=test_per_class, seed=seed)
        source = verified()
        from transformers import PreTrainedTokenizerFast

        return task, source, PreTrainedTokenizerFast.from_pretrained(source), "lab"
