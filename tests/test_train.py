import math

import pytest
import torch

from ftcourse import models
from ftcourse.data import ImageData, Task, augment
from ftcourse.env import precision_for
from ftcourse.train import History, evaluate, fit, predict

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=8, blocks=(1, 1))


def test_loss_falls_and_accuracy_rises_on_a_learnable_problem(learnable):
    images, labels = learnable
    model = small_model()
    before = evaluate(model, (images, labels))
    history = fit(model, (images, labels), (images, labels), epochs=4, lr=0.05, batch_size=32, sync_every=8)
    assert history.log_step == [8, 16, 24, 32]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_acc[-1] > 0.9 > before["accuracy"]
    assert len(history.step_loss) == len(history.step_lr) == 4 * (256 // 32)
    assert history.images_seen == 4 * 256 and history.images_per_second > 0


def test_same_seed_gives_the_same_history_on_cpu(learnable):
    runs = [fit(small_model(), learnable, epochs=2, lr=0.05, batch_size=32, augment=True, seed=3)
            for _ in range(2)]
    assert runs[0].step_loss == runs[1].step_loss
    other = fit(small_model(), learnable, epochs=2, lr=0.05, batch_size=32, augment=True, seed=4)
    assert other.step_loss != runs[0].step_loss


def test_a_task_trains_on_its_train_split_and_validates_on_its_val_split_never_its_test_split(learnable):
    images, labels = learnable
    classes = ["dark", "bright"]
    test = ImageData(images[:4], torch.full((4,), 7), classes)  # a label the head cannot produce: must not be read
    task = Task("bright", ImageData(images[:200], labels[:200], classes), ImageData(images[200:], labels[200:],
                                                                                    classes), test)
    history = fit(small_model(), task, epochs=1, batch_size=50)
    assert len(history.step_loss) == 200 // 50 and len(history.val_acc) == 1


def test_steps_is_the_budget_whatever_the_size_of_an_epoch(learnable):
    history = fit(small_model(), learnable, steps=11, batch_size=32, sync_every=4)  # an epoch is 8 steps
    assert len(history.step_loss) == len(history.step_lr) == 11
    assert history.log_step == [4, 8, 11] and history.images_seen == 11 * 32
    assert history.config["steps"] == 11


def test_a_budget_must_be_given_once(learnable):
    with pytest.raises(ValueError, match="one budget: steps=.*or epochs="):
        fit(small_model(), learnable)
    with pytest.raises(ValueError, match="one budget"):
        fit(small_model(), learnable, steps=5, epochs=1)


def test_a_dataset_smaller_than_a_batch_is_one_step_per_epoch(learnable):
    images, labels = learnable
    history = fit(small_model(), (images[:10], labels[:10]), epochs=3, batch_size=64)
    assert len(history.step_loss) == 3 and history.images_seen == 30


def test_dataloader_input_is_accepted(learnable):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*learnable), batch_size=64, shuffle=True)
    history = fit(small_model(), loader, loader, epochs=1)
    assert len(history.step_loss) == 4 and history.val_acc


def test_schedule_sets_the_learning_rate_of_every_step(learnable):
    history = fit(small_model(), learnable, epochs=2, lr=0.1, batch_size=32, schedule="cosine")
    lrs = history.step_lr
    assert max(lrs) == pytest.approx(0.1, rel=1e-6) and lrs[-1] < 0.01
    assert lrs[0] < lrs[1]  # warm-up


def test_parameter_groups_keep_their_own_rates(learnable):
    model = small_model()
    groups = [{"params": model.head.parameters(), "lr": 0.1},
              {"params": [p for n, p in model.named_parameters() if not n.startswith("head")], "lr": 0.001}]
    weights = model.stem[0].weight.detach().clone()
    history = fit(model, learnable, epochs=1, params=groups, schedule="constant", batch_size=32)
    assert history.step_lr[0] == 0.1  # the first group's rate is the one recorded
    assert not torch.equal(weights, model.stem[0].weight)


def test_frozen_parameters_are_not_updated(learnable):
    model = small_model()
    for p in model.stem.parameters():
        p.requires_grad_(False)
    stem = [p.detach().clone() for p in model.stem.parameters()]
    head = model.head.weight.detach().clone()
    fit(model, learnable, epochs=1, batch_size=32, weight_decay=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(stem, model.stem.parameters()))
    assert not torch.equal(head, model.head.weight)


def test_adamw_and_onecycle_train(learnable):
    history = fit(small_model(), learnable, learnable, epochs=3, lr=3e-3, optimizer="adamw", schedule="onecycle",
                  batch_size=32)
    assert history.val_acc[-1] > 0.85


def test_divergence_stops_the_run_and_is_recorded(learnable):
    with pytest.warns(UserWarning, match="diverged"):
        history = fit(small_model(), learnable, learnable, epochs=5, lr=1e6, schedule="constant", batch_size=32)
    assert history.diverged is not None
    step = history.diverged["step"]
    assert history.diverged["lr"] == pytest.approx(1e6)
    assert step < 5 * 8 and len(history.step_loss) == len(history.step_lr) == step + 1
    assert not math.isfinite(history.step_loss[-1])
    assert all(math.isfinite(x) for x in history.step_loss[:-1])


def test_divergence_found_at_a_sync_point_reports_the_first_bad_step(learnable):
    """With sync_every > 1 (the GPU setting) the check happens later but still names the first bad step."""
    def explode_at_step_5(model, calls=[0]):
        calls[0] += 1
        return torch.tensor(float("inf")) if calls[0] == 6 else torch.tensor(0.0)

    with pytest.warns(UserWarning, match="step 5"):
        history = fit(small_model(), learnable, epochs=2, schedule="constant", batch_size=32,
                      penalty=explode_at_step_5, sync_every=4)
    assert history.diverged["step"] == 5 and len(history.step_loss) == 6


def no_penalty(model):
    return torch.zeros(())


RUN = dict(steps=32, lr=0.05, batch_size=32, augment=True, seed=1, sync_every=4, checkpoint_every=8)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("stop_at", [3, 19], ids=["before the first periodic checkpoint", "mid-run"])
def test_resume_continues_to_the_same_result_as_an_uninterrupted_run(learnable, tmp_path, stop_at, ctrl_c_at):
    reference = small_model()
    fit(reference, learnable, penalty=no_penalty, **RUN)

    model = small_model()
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match=f"interrupted at step {stop_at} .* holds step {stop_at // 8 * 8}"):
        partial = fit(model, learnable, checkpoint=path, penalty=ctrl_c_at(stop_at), **RUN)
    assert partial.interrupted and len(partial.step_loss) == stop_at
    assert evaluate(model, learnable)["accuracy"] >= 0  # the model is still usable after Ctrl-C

    resumed_model = small_model(seed=99)  # a different start: everything must come from the checkpoint
    history = fit(resumed_model, learnable, checkpoint=path, resume=True, penalty=no_penalty, **RUN)
    assert history.steps_done == 32 and history.log_step[-1] == 32
    assert same_weights(reference, resumed_model)


def test_resuming_a_finished_run_returns_its_history_without_training(learnable, tmp_path):
    path = tmp_path / "run.pt"
    first = fit(small_model(), learnable, checkpoint=path, **RUN)
    model = small_model(seed=5)
    again = fit(model, learnable, checkpoint=path, resume=True, **RUN)
    assert again.step_loss == first.step_loss
    assert torch.equal(model.head.weight, torch.load(path, weights_only=True)["model"]["head.weight"])


def test_resume_at_another_precision_warns_and_continues(learnable, tmp_path, ctrl_c_at):
    """Colab may reconnect to another GPU; simulated on the CPU, where bf16 autocast exists too."""
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="interrupted"):
        fit(small_model(), learnable, checkpoint=path, penalty=ctrl_c_at(10), **RUN)
    with pytest.warns(UserWarning, match="written on cpu in fp32, on cpu in bf16.*not bit-identically"):
        history = fit(small_model(), learnable, checkpoint=path, resume=True, penalty=no_penalty,
                      precision="bf16", **RUN)
    assert history.steps_done == 32 and not history.diverged


def test_resume_from_another_device_type_reseeds_the_data_order_and_continues(learnable, tmp_path, ctrl_c_at):
    """A checkpoint written on a GPU holds a CUDA generator state, which a CPU generator cannot take."""
    path = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="interrupted"):
        fit(small_model(), learnable, checkpoint=path, penalty=ctrl_c_at(10), **RUN)
    state = torch.load(path, weights_only=True)
    state["history"]["config"]["device"] = "cuda"
    state["rng"]["data"] = torch.zeros(16, dtype=torch.uint8)  # a Philox state: seed and offset
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    torch.save(state, path)
    with pytest.warns(UserWarning, match="written on cuda in fp32, on cpu in fp32"):
        history = fit(small_model(), learnable, checkpoint=path, resume=True, penalty=no_penalty, **RUN)
    assert history.steps_done == 32


def test_a_checkpoint_of_another_architecture_is_refused_before_anything_is_loaded(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(models.resnet(2, width=8, blocks=(1, 1, 1)), learnable, checkpoint=path, **RUN)
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="another architecture .*missing|another architecture .*unexpected"):
        fit(model, learnable, checkpoint=path, resume=True, **RUN)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"), (b"PK\x03\x04 truncated zip", "truncated|damaged|not"), (b"hello, world", "not"),
], ids=["empty", "truncated", "text"])
def test_an_unreadable_checkpoint_names_the_file_and_the_fix(learnable, tmp_path, content, problem):
    path = tmp_path / "run.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"run.pt.*({problem}).*(?i:delete)"):
        fit(small_model(), learnable, checkpoint=path, resume=True, **RUN)


def test_a_truncated_checkpoint_names_the_file(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(small_model(), learnable, checkpoint=path, **RUN)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="run.pt"):
        fit(small_model(), learnable, checkpoint=path, resume=True, **RUN)


def test_an_unwritable_checkpoint_folder_is_found_before_training(learnable, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = small_model()
    before = model.head.weight.clone()
    with pytest.raises(OSError, match="Could not write the checkpoint .*a-file/run.pt.*folder you can write"):
        fit(model, learnable, checkpoint=blocker / "run.pt", **RUN)
    assert torch.equal(model.head.weight, before)


def test_checkpoint_is_not_overwritten_without_resume(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(small_model(), learnable, epochs=1, batch_size=64, checkpoint=path)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(small_model(), learnable, epochs=1, batch_size=64, checkpoint=path)


def test_resume_with_other_settings_is_refused(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(small_model(), learnable, epochs=1, batch_size=64, checkpoint=path)
    with pytest.raises(ValueError, match="lr: checkpoint 0.05 vs now 0.1"):
        fit(small_model(), learnable, epochs=1, lr=0.1, batch_size=64, checkpoint=path, resume=True)


def test_checkpoint_files_load_with_weights_only(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(small_model(), learnable, epochs=1, batch_size=64, checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "rng" in state and "stream" in state
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_history_serialises_and_plots(learnable, tmp_path):
    history = fit(small_model(), learnable, learnable, epochs=2, batch_size=64)
    history.save(tmp_path / "h.json")
    loaded = History.load(tmp_path / "h.json")
    assert loaded == history
    fig = loaded.plot()
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[1].get_ylabel() == "accuracy"
    assert fig.axes[1].get_xlabel() == "step"


def test_history_with_nan_loss_round_trips(tmp_path):
    history = History(step_loss=[1.0, float("nan")], step_lr=[0.1, 0.1], diverged={"step": 1, "lr": 0.1})
    history.save(tmp_path / "h.json")
    assert math.isnan(History.load(tmp_path / "h.json").step_loss[1])


@pytest.mark.parametrize("images, labels, message", [
    (torch.zeros(4, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "shape \\(N, channels"),
    (torch.zeros(4, 3, 32, 32, dtype=torch.int32), torch.zeros(4, dtype=torch.long), "uint8 in \\[0, 255\\]"),
    (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), "empty"),
    (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), "4 images but 3 labels"),
    (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 7]), "label 7 .* only 2 classes"),
    (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0.0, 1.0, 0.0, 1.0]), "integer class indices"),
    (torch.zeros(4, 1, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "1 channels but the model"),
])
def test_bad_input_raises_a_message_that_says_what_to_do(images, labels, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fit(small_model(), (images, labels), epochs=1)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.uint8])
def test_labels_of_a_narrow_integer_type_are_refused_with_the_fix(learnable, dtype):
    images, labels = learnable
    with pytest.raises(ValueError, match=f"int64.*got {dtype}. Use labels.long"):
        fit(small_model(), (images, labels.to(dtype)), steps=1)


def test_nan_images_are_refused_before_training_not_reported_as_divergence(learnable):
    images = learnable[0].float() / 255
    images[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite pixel values"):
        fit(small_model(), (images, learnable[1]), steps=1)


def test_float_images_in_0_255_are_refused_with_the_fix(learnable):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*0 to 255.*divide by 255"):
        fit(small_model(), (learnable[0].float(), learnable[1]), steps=1)
    fit(small_model(), (learnable[0].float() / 255, learnable[1]), steps=1)  # the same images in [0, 1] train


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 1, "batch_size": 32.0}, r"batch_size must be a whole number >= 1, got 32.0 \(batch_size=32\)"),
    ({"epochs": 1.5}, "epochs must be a whole number >= 1, got 1.5"),
    ({"steps": 0}, "steps must be a whole number >= 1, got 0"),
    ({"steps": True}, "steps must be a whole number"),
    ({"steps": 1, "sync_every": 2.5}, "sync_every must be a whole number"),
    ({"steps": 1, "lr": 0}, "lr must be a positive number"),
])
def test_counts_must_be_whole_numbers(learnable, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(small_model(), learnable, **kwargs)


def test_an_empty_dataloader_is_refused_with_a_message(learnable):
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*(t[:0] for t in learnable)), batch_size=8)
    with pytest.raises(ValueError, match="DataLoader yields no batches"):
        fit(small_model(), empty, steps=1)


def test_dataloader_labels_out_of_range_are_refused_with_the_fix(learnable):
    images, labels = learnable
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels * 4), batch_size=64)
    with pytest.raises(ValueError, match="label 4 but the model's head has only 2 classes.*replace_head"):
        fit(small_model(), loader, steps=2)


def test_a_model_without_trainable_parameters_is_refused(learnable):
    model = small_model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model, learnable, epochs=1)


def test_unknown_optimizer_and_schedule_are_refused(learnable):
    with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
        fit(small_model(), learnable, epochs=1, optimizer="lion")
    with pytest.raises(ValueError, match="Unknown schedule"):
        fit(small_model(), learnable, epochs=1, schedule="linear-ish")


def test_precision_is_fp32_on_cpu_and_by_capability_on_cuda(monkeypatch):
    assert precision_for(torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision_for(torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a Colab T4
    assert precision_for(torch.device("cuda")) == "fp16"


def test_augment_moves_and_mirrors_images_without_changing_their_content():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    image[0, 0, 2:4, 3:6] = 255  # a bright 2x3 rectangle
    batch = image.repeat(64, 1, 1, 1)
    out = augment(batch, g, pad=2)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert (out.flatten(1) == 255).sum(1).eq(6).all()  # the rectangle never leaves an 8x8 frame here
    positions = {tuple(o[0].nonzero().min(0).values.tolist()) for o in out}
    assert len(positions) > 5  # it moved
    flipped = augment(batch, g, pad=0)
    assert torch.equal(flipped[flipped.flatten(1).argmax(1) != batch[0].flatten().argmax()][0], image[0].flip(2))


def test_on_the_cpu_fit_trains_in_the_layout_env_chooses_and_predict_follows_the_weights(learnable):
    from ftcourse.env import channels_last_for

    expected = channels_last_for(torch.device("cpu"))
    model = small_model()
    fit(model, learnable, steps=2, batch_size=32)
    conv = model.layer1[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is expected
    plain = small_model()
    fit(plain, learnable, steps=2, batch_size=32, channels_last=False)
    assert plain.layer1[0].conv1.weight.is_contiguous()
    same_weights_other_layout = small_model()
    same_weights_other_layout.load_state_dict(plain.state_dict())
    same_weights_other_layout.to(memory_format=torch.channels_last)
    assert torch.allclose(predict(plain, learnable), predict(same_weights_other_layout, learnable), atol=1e-4)


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    from pathlib import Path

    from ftcourse import env

    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "flags : fpu sse avx2 avx512f avx512_bf16 amx_tile")
    assert env.cpu_has_native_bf16()
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "flags : fpu sse avx2 avx512f")
    assert not env.cpu_has_native_bf16()


# ----------------------------------------------------------------------------------------------------------------
# keep_best: the weights of the best validation check; layer_decay: rates by stage; augment="crop".

def unlearning(learnable):
    """A model that has learnt the problem, training data whose labels say the opposite, and the true validation
    data: the longer it trains, the worse it validates, so the best check is an early one, not the last."""
    images, labels = learnable
    torch.manual_seed(0)
    learnt = models.resnet(2, width=8, blocks=(1, 1))
    fit(learnt, learnable, epochs=2, lr=0.05, batch_size=32)
    return learnt.state_dict(), (images, 1 - labels), (images[:64], labels[:64])


def fresh(state):
    model = small_model()
    model.load_state_dict(state)
    return model


def test_keep_best_gives_the_model_the_weights_of_its_best_validation_check(learnable):
    start, flipped, val = unlearning(learnable)
    model = fresh(start)
    history = fit(model, flipped, val, steps=32, lr=0.02, batch_size=32, sync_every=4, keep_best=True)
    scores = list(zip(history.val_acc, [-loss for loss in history.val_loss]))
    best = scores.index(max(scores))  # the first of equal best checks
    assert history.best_step == history.log_step[best] < history.log_step[-1]
    assert history.val_acc[-1] < history.val_acc[best]
    assert evaluate(model, val)["accuracy"] == pytest.approx(history.val_acc[best])

    last = fresh(start)
    plain = fit(last, flipped, val, steps=32, lr=0.02, batch_size=32, sync_every=4)
    assert plain.best_step is None and plain.val_acc == history.val_acc  # the same run; only the weights kept differ
    assert evaluate(last, val)["accuracy"] == pytest.approx(history.val_acc[-1])


@pytest.mark.parametrize("stop_at", [6, 13], ids=["between two checks", "after the best check"])
def test_keep_best_survives_a_pause_and_resumes_to_the_uninterrupted_result(learnable, tmp_path, stop_at):
    start, flipped, val = unlearning(learnable)
    settings = dict(steps=32, lr=0.02, batch_size=32, sync_every=4, seed=2, keep_best=True)
    reference = fresh(start)
    whole = fit(reference, flipped, val, **settings)

    path = tmp_path / "run.pt"
    fit(fresh(start), flipped, val, checkpoint=path, stop_at=stop_at, **settings)
    assert "best" in torch.load(path, weights_only=True)
    resumed = fresh(small_model(seed=7).state_dict())  # everything must come from the checkpoint
    history = fit(resumed, flipped, val, checkpoint=path, resume=True, **settings)
    assert history.best_step == whole.best_step < 32
    assert same_weights(reference, resumed)


def test_keep_best_needs_validation_data(learnable):
    with pytest.raises(ValueError, match="keep_best=True .* needs validation data"):
        fit(small_model(), learnable, steps=4, keep_best=True)


def test_a_checkpoint_written_before_keep_best_and_layer_decay_existed_still_resumes(learnable, tmp_path):
    path = tmp_path / "run.pt"
    fit(small_model(), learnable, steps=8, batch_size=32, checkpoint=path, stop_at=4)
    state = torch.load(path, weights_only=True)
    for name in ("keep_best", "layer_decay"):
        del state["history"]["config"][name]
    torch.save(state, path)
    history = fit(small_model(), learnable, steps=8, batch_size=32, checkpoint=path, resume=True)
    assert history.steps_done == 8


def test_layer_decay_builds_the_stage_groups_from_the_rate_fit_is_given(learnable):
    from ftcourse.transfer import param_groups

    by_hand, by_decay = small_model(), small_model()
    fit(by_hand, learnable, steps=8, lr=0.05, batch_size=32, params=param_groups(by_hand, 0.05, decay=3.0))
    history = fit(by_decay, learnable, steps=8, lr=0.05, batch_size=32, layer_decay=3.0)
    assert same_weights(by_hand, by_decay)
    assert history.config["layer_decay"] == 3.0
    assert [rate for _, rate in history.config["param_groups"]] == pytest.approx([0.05 / 3.0**d for d in range(4)])


def test_layer_decay_is_refused_with_params_with_a_bad_factor_or_without_stages(learnable):
    model = small_model()
    with pytest.raises(ValueError, match="either params .* or layer_decay"):
        fit(model, learnable, steps=2, params=[{"params": model.parameters()}], layer_decay=2.6)
    with pytest.raises(ValueError, match="layer decay must be a positive number"):
        fit(model, learnable, steps=2, layer_decay=0)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    with pytest.raises(TypeError, match="named stages"):
        fit(plain, learnable, steps=2, layer_decay=2.6)


def test_augment_crop_moves_images_but_never_mirrors_them(learnable, monkeypatch):
    import ftcourse.train as train_module

    flips = []
    real = train_module.augment_batch

    def spy(x, generator, **kwargs):
        flips.append(kwargs.get("flip", True))
        return real(x, generator, **kwargs)

    monkeypatch.setattr(train_module, "augment_batch", spy)
    crop = fit(small_model(), learnable, steps=4, batch_size=32, augment="crop")
    assert flips == [False] * 4 and crop.config["augment"] == "crop"
    fit(small_model(), learnable, steps=2, batch_size=32, augment=True)
    assert flips[4:] == [True, True]
    with pytest.raises(ValueError, match="augment must be True .* 'crop' .* or False"):
        fit(small_model(), learnable, steps=2, augment="flip")
