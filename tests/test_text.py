"""The text lab's BERT: the shipped checkpoint is verified before it is read, pretraining writes a checkpoint that
loads, every method trains through Hugging Face's Trainer, and LoRA trains only its adapters and the head."""

import json
import shutil

import pytest
import torch

from ftcourse import text, textlab


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A checkpoint made by the quick miniature of the recipe (seconds), written as `ftcourse pretrain` writes it."""
    folder = tmp_path_factory.mktemp("text") / "text"
    model, tokenizer, info = text.pretrain(text.quick_version(text.RECIPE))
    text.save_checkpoint(model, tokenizer, text.quick_version(text.RECIPE), info, folder)
    return folder


def test_the_shipped_checkpoint_matches_its_record_and_is_small():
    folder = text.verified()
    assert sum((folder / name).stat().st_size for name in text.FILES) < 10 * 2**20
    assert text.record()["recipe"] == json.loads(json.dumps(text.RECIPE))


def test_the_shipped_checkpoint_fills_in_masked_words_that_the_grammar_determines():
    model, tokenizer = text.pretrained()
    assert text.masked_word_accuracy(model, tokenizer, "verb") > 0.9  # agreement: is / are from the noun


def test_a_saved_checkpoint_loads_with_the_same_weights(small_checkpoint):
    model, tokenizer = text.pretrained(small_checkpoint)
    again, _ = text.pretrained(small_checkpoint)
    batch = tokenizer(["the soup is tasty and fresh in the cafe ."], return_tensors="pt", padding="max_length")
    batch.pop("token_type_ids", None)
    assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_a_changed_file_is_refused_with_the_fix(small_checkpoint, tmp_path):
    copy = tmp_path / "text"
    shutil.copytree(small_checkpoint, copy)
    shutil.copy(small_checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("64", "65", 1))
    with pytest.raises(ValueError, match=r"config\.json is not the file that was recorded .*ftcourse pretrain --source"):
        text.pretrained(copy)


def test_a_folder_without_a_record_or_a_file_is_refused(small_checkpoint, tmp_path):
    copy = tmp_path / "text"
    shutil.copytree(small_checkpoint, copy)
    with pytest.raises(FileNotFoundError, match="has no record text.json beside it"):
        text.pretrained(copy)
    shutil.copy(small_checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    (copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        text.pretrained(copy)
    copy.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a text checkpoint record"):
        text.pretrained(copy)
    with pytest.raises(FileNotFoundError, match="no text checkpoint folder at"):
        text.pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("method", text.METHODS)
def test_every_method_trains_through_trainer_and_reports_val_and_test(method, small_checkpoint):
    task = textlab.target("topic", 4, test_per_class=5)
    tokenizer = text.pretrained(small_checkpoint)[1]
    result = text.finetune(task, method, lr=1e-3, steps=3, batch_size=8, source=small_checkpoint,
                           tokenizer=tokenizer)
    assert 0 <= result["val_accuracy"] <= 1 and 0 <= result["accuracy"] <= 1 and not result["diverged"]


def test_the_comparison_tunes_every_seed_and_reads_every_run_back_from_the_cache(tmp_path):
    kwargs = dict(seeds=(0, 1), cache=tmp_path, steps=2, batch_size=8, test_per_class=4, grid=(1e-3, 3e-3),
                  ladder=())
    rows = text.comparison(["topic"], [2], ["probe", "finetune"], **kwargs)
    assert len(rows) == 4 and sorted(set(rows["seed"])) == [0, 1]
    assert (rows["tuning_runs"] == 2).all()  # every seed tried the whole grid: no seed borrowed another's rate
    assert rows["accuracy"].between(0, 1).all() and "model" not in rows
    again = text.comparison(["topic"], [2], ["probe", "finetune"], **kwargs)
    assert again[["lr", "val_accuracy", "accuracy"]].equals(rows[["lr", "val_accuracy", "accuracy"]])
    assert len(list(tmp_path.glob("*.json"))) == 8  # 2 methods x 2 seeds x 2 rates, each trained once


def test_each_method_starts_its_tuning_from_its_own_grid_unless_one_is_given(monkeypatch):
    started = {}

    def record_the_grid(recipe, *, grid, **kwargs):
        started[recipe.method] = tuple(grid)
        raise RuntimeError("recorded")

    monkeypatch.setattr(text.protocol, "tune", record_the_grid)
    for method in text.METHODS:
        with pytest.raises(RuntimeError, match="recorded"):
            text.tuned("topic", 2, method, steps=2)
    assert started == {m: tuple(text.START_GRIDS[m]) for m in text.METHODS}
    assert started["lora"] != started["finetune"]  # the few-weight methods start ten times higher
    with pytest.raises(RuntimeError, match="recorded"):
        text.tuned("topic", 2, "lora", steps=2, grid=(1e-3,))
    assert started["lora"] == (1e-3,)


def test_the_probe_and_lora_train_only_what_they_say(small_checkpoint):
    probe = text.classifier("probe", 3, source=small_checkpoint)
    trainable = {name for name, p in probe.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    lora = text.classifier("lora", 3, source=small_checkpoint)
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert any("lora_A" in name and "query" in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)


def test_the_new_head_starts_from_the_seed_and_the_encoder_from_the_checkpoint(small_checkpoint):
    a, b = (text.classifier("finetune", 2, source=small_checkpoint, seed=s) for s in (0, 1))
    mlm, _ = text.pretrained(small_checkpoint)
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert torch.equal(a.bert.encoder.layer[0].attention.self.query.weight,
                       mlm.bert.encoder.layer[0].attention.self.query.weight)


def test_layer_movement_is_zero_for_an_unchanged_model_and_names_every_layer(small_checkpoint):
    model = text.classifier("finetune", 2, source=small_checkpoint)
    moved = text.layer_movement(model, model)
    assert list(moved.index) == ["embeddings", *(f"layer {i}" for i in range(4))] and (moved == 0).all()


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="Unknown method 'adapter'; use one of"):
        text.classifier("adapter", 2)


def fake_sst2(name, config):
    """A local stand-in for datasets.load_dataset("glue", "sst2"): the same splits and columns, text-lab sentences."""
    assert (name, config) == ("glue", "sst2")
    rows = textlab.target("sentiment", 30, test_per_class=20)
    return {"train": {"sentence": rows.train.texts, "label": rows.train.labels},
            "validation": {"sentence": rows.test.texts, "label": rows.test.labels}}


def test_the_online_path_runs_the_same_finetuning_on_a_local_fake_of_the_hub(small_checkpoint, capsys):
    task, source, tokenizer, which = text.hub_or_lab(8, test_per_class=10, model=str(small_checkpoint),
                                                     load_dataset=fake_sst2)
    assert which == "hub" and "online:" in capsys.readouterr().out
    assert [task.train.labels.count(c) for c in (0, 1)] == [8, 8] and len(task.test) == 20
    assert len(task.val) == 2 * 18  # the next n + 10 training sentences of each class, not the n trained on
    result = text.finetune(task, "lora", lr=1e-3, steps=2, batch_size=8, source=source, tokenizer=tokenizer)
    assert 0 <= result["accuracy"] <= 1


def test_an_unreachable_hub_falls_back_to_the_text_lab_and_says_so(capsys):
    def unreachable(*args):
        raise ConnectionError("the hub could not be reached")

    task, source, tokenizer, which = text.hub_or_lab(4, test_per_class=5, load_dataset=unreachable)
    out = capsys.readouterr().out
    assert which == "lab" and task.name == "sentiment" and source == text.verified()
    assert "offline: the hub could not be used (ConnectionError: the hub could not be reached)" in out


def test_training_arguments_read_as_a_table_with_plain_values():
    args = text.training_arguments("unused", max_steps=10, learning_rate=1e-3, warmup_steps=1)
    table = text.arguments_table(args)
    assert table.loc["lr_scheduler_type", "value"] == "linear"  # not <SchedulerType.LINEAR: 'linear'>
    assert table.loc["save_strategy", "value"] == "no" and table.loc["max_steps", "value"] == "10"
    assert all("<" not in value for value in table["value"]) and table["meaning"].str.len().min() > 0
