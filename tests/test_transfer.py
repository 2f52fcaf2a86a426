import pytest
import torch
from torch import nn

from ftcourse import models
from ftcourse.train import fit
from ftcourse.transfer import (L2SP, GradualUnfreezing, freeze, lp_ft, param_groups, reinit, summary,
                               trainable_parameters, unfreeze)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(num_classes=2, seed=0):
    """Stages: stem, layer1, layer2, head."""
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=8, blocks=(1, 1))


def trainable_stages(model):
    return [name for name in model.stage_names if all(p.requires_grad for p in model.stage(name).parameters())]


def frozen_stages(model):
    return [name for name in model.stage_names if not any(p.requires_grad for p in model.stage(name).parameters())]


def snapshot(module):
    """Copies of every parameter and buffer (BatchNorm running statistics included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def few(data, n=64):
    images, labels = data
    return images[:n], labels[:n]


def changed(a, b):
    """Every floating-point tensor differs (BatchNorm's integer batch counter aside)."""
    return all(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# --- freeze / unfreeze ---------------------------------------------------------------------------------------------

def test_freeze_by_default_leaves_only_the_head_trainable():
    model = freeze(small_model())
    assert trainable_stages(model) == ["head"]
    assert frozen_stages(model) == ["stem", "layer1", "layer2"]


def test_freeze_first_k_counts_stages_from_the_stem():
    assert frozen_stages(freeze(small_model(), first=0)) == []
    assert frozen_stages(freeze(small_model(), first=2)) == ["stem", "layer1"]
    assert frozen_stages(freeze(small_model(), first=4)) == ["stem", "layer1", "layer2", "head"]


def test_freeze_and_unfreeze_take_a_name_or_a_list_of_names():
    model = freeze(small_model(), "layer1")
    assert frozen_stages(model) == ["layer1"]
    freeze(model, ["stem", "head"])
    assert frozen_stages(model) == ["stem", "layer1", "head"]
    unfreeze(model, ["layer1", "head"])
    assert frozen_stages(model) == ["stem"]


def test_unfreeze_by_default_makes_every_stage_trainable_and_first_k_counts_from_the_stem():
    model = freeze(small_model(), first=4)
    assert frozen_stages(unfreeze(model, first=1)) == ["layer1", "layer2", "head"]
    assert frozen_stages(unfreeze(model)) == []


def test_unknown_stage_names_are_rejected_listing_the_stages_and_nothing_is_frozen():
    model = small_model()
    with pytest.raises(ValueError, match=r"no stage 'layer9'; its stages are \['stem', 'layer1', 'layer2', 'head'\]"):
        freeze(model, ["stem", "layer9"])
    assert frozen_stages(model) == []
    with pytest.raises(ValueError, match="no stage 'fc'"):
        unfreeze(model, "fc")


def test_first_out_of_range_a_number_as_stages_and_both_arguments_are_rejected():
    model = small_model()
    with pytest.raises(ValueError, match="first must be an int from 0 to 4"):
        freeze(model, first=5)
    with pytest.raises(ValueError, match="first must be an int from 0 to 4"):
        unfreeze(model, first=-1)
    with pytest.raises(TypeError, match="write first=2"):
        freeze(model, 2)
    with pytest.raises(ValueError, match="not both"):
        freeze(model, "stem", first=1)


def test_functions_on_stages_reject_a_model_without_stages():
    plain = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for call in (freeze, unfreeze, summary, lambda m: param_groups(m, 0.1), L2SP, GradualUnfreezing,
                 lambda m: reinit(m, "head")):
        with pytest.raises(TypeError, match="needs a StagedNet"):
            call(plain)


def test_frozen_stages_keep_weights_and_batchnorm_statistics_through_fit(learnable):
    model = freeze(small_model(), first=2)
    frozen, trained = snapshot(nn.ModuleList([model.stem, model.layer1])), snapshot(model.layer2)
    fit(model, learnable, epochs=1, lr=0.05, batch_size=32)
    assert same(frozen, snapshot(nn.ModuleList([model.stem, model.layer1])))
    assert changed(trained, snapshot(model.layer2))  # running_mean, running_var and the weights of layer2 moved


def test_requires_grad_false_alone_does_not_keep_batchnorm_statistics_of_a_plain_model(learnable):
    images, labels = learnable
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    plain[:2].requires_grad_(False)  # "frozen" conv and BatchNorm
    bn_mean = plain[1].running_mean.clone()
    opt = torch.optim.SGD(trainable_parameters(plain), lr=0.05)
    plain.train()
    for _ in range(3):
        loss = nn.functional.cross_entropy(plain(images.float() / 255), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(bn_mean, plain[1].running_mean)  # the trap: BatchNorm in train mode still drifts


def test_freeze_fixes_batchnorm_at_once_and_unfreeze_releases_it():
    model = small_model().train()
    bn = model.stem[1]
    freeze(model, "stem")
    before = bn.running_mean.clone()
    model(torch.rand(8, 3, 16, 16))  # no model.train() call in between
    assert not bn.training and torch.equal(before, bn.running_mean)
    unfreeze(model, "stem")
    model(torch.rand(8, 3, 16, 16))
    assert bn.training and not torch.equal(before, bn.running_mean)


# --- counting parameters -------------------------------------------------------------------------------------------

def test_trainable_parameters_are_exactly_those_with_requires_grad():
    model = freeze(small_model(), first=3)
    assert {id(p) for p in trainable_parameters(model)} == {id(p) for p in model.head.parameters()}


def test_summary_has_a_row_per_stage_with_trainable_frozen_and_total_and_a_total_row():
    model = freeze(small_model(), first=2)
    rows = {line.split()[0]: [int(n.replace(",", "")) for n in line.split()[1:]]
            for line in summary(model).splitlines()[1:] if not line.startswith("-")}
    stem = 8 * 3 * 9 + 2 * 8  # conv 3->8, 3x3, and BatchNorm's weight and bias
    head = 16 * 2 + 2
    assert list(rows) == ["stem", "layer1", "layer2", "head", "total"]
    assert rows["stem"] == [0, stem, stem]
    assert rows["head"] == [head, 0, head]
    total = models.count_parameters(model)
    assert rows["total"] == [models.count_parameters(model, trainable_only=True),
                             total - models.count_parameters(model, trainable_only=True), total]


# --- discriminative learning rates ---------------------------------------------------------------------------------

def test_param_groups_give_the_head_lr_and_each_lower_stage_lr_divided_by_decay():
    groups = param_groups(small_model(), 0.1, decay=2.0)
    assert [(g["stage"], g["lr"]) for g in groups] == [("head", 0.1), ("layer2", 0.05), ("layer1", 0.025),
                                                         ("stem", 0.0125)]
    assert param_groups(small_model(), 0.01)[3]["lr"] == pytest.approx(0.01 / 2.6**3)


def test_param_groups_hold_every_parameter_exactly_once_frozen_ones_included():
    model = freeze(small_model())
    ids = [id(p) for g in param_groups(model, 0.1) for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_param_groups_train_a_model_with_fit(learnable):
    model = small_model()
    history = fit(model, learnable, few(learnable), epochs=4, lr=0.05, batch_size=32,
                  params=param_groups(model, 0.05))
    assert history.train_loss[-1] < 0.5 * history.train_loss[0] and history.val_acc[-1] > 0.9
    assert max(history.step_lr) == pytest.approx(0.05, rel=1e-3)  # the first group is the head's, at lr


def test_fit_uses_the_rate_of_each_group(learnable):
    model = small_model()
    stem, head = snapshot(model.stem), snapshot(model.head)
    fit(model, few(learnable), epochs=1, lr=0.05, batch_size=32, params=param_groups(model, 0.05, decay=1e6))
    stem_after = snapshot(model.stem)
    assert max((stem_after[k] - stem[k]).abs().max() for k in stem if k.endswith("weight")) < 1e-7  # lr / 1e18
    assert changed(head, snapshot(model.head))


def test_param_groups_reject_a_decay_or_lr_that_is_not_positive():
    with pytest.raises(ValueError, match="layer decay must be a positive number"):
        param_groups(small_model(), 0.1, decay=0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        param_groups(small_model(), -0.1)


# --- gradual unfreezing --------------------------------------------------------------------------------------------

def test_gradual_unfreezing_trains_the_head_first_then_one_more_stage_every_k_steps():
    model = small_model()
    schedule = GradualUnfreezing(model, every=2)
    seen = []
    for step in range(9):
        schedule(model, step)
        seen.append(trainable_stages(model))
    assert seen[0] == seen[1] == ["head"]
    assert seen[2] == seen[3] == ["layer2", "head"]
    assert seen[4] == ["layer1", "layer2", "head"]
    assert seen[6] == seen[8] == ["stem", "layer1", "layer2", "head"]
    assert GradualUnfreezing(model.stage_names).trainable_stages(1) == ("layer2", "head")


def test_gradual_unfreezing_in_fit_leaves_the_stem_untouched_until_its_turn(learnable):
    model = small_model()
    schedule, stems = GradualUnfreezing(model), []

    def before_step(model, step):
        stems.append(snapshot(model.stem))
        schedule(model, step)

    fit(model, few(learnable), steps=4, lr=0.05, batch_size=32, before_step=before_step)
    assert same(stems[0], stems[1]) and same(stems[0], stems[2]) and same(stems[0], stems[3])  # steps 0-2
    assert changed(stems[3], snapshot(model.stem))  # the stem joined at step 3


def test_gradual_unfreezing_rejects_bad_every_and_a_model_with_other_stages():
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        GradualUnfreezing(small_model(), every=0)
    with pytest.raises(ValueError, match="ending in 'head'"):
        GradualUnfreezing(["stem", "layer1"])
    schedule = GradualUnfreezing(models.resnet(2, width=8, blocks=(1, 1, 1)))
    with pytest.raises(ValueError, match="Build it from this model"):
        schedule(small_model(), 0)


# --- L2-SP ---------------------------------------------------------------------------------------------------------

def test_l2sp_is_only_the_head_term_right_after_construction():
    model = small_model()
    penalty = L2SP(model, alpha=0.1, beta=0.2)(model)
    head = model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum()
    assert penalty.item() == pytest.approx(0.2 / 2 * head.item(), rel=1e-6) and penalty.item() > 0


def test_l2sp_matches_a_hand_computed_value_after_perturbing_weights():
    model = small_model()
    regulariser = L2SP(model, alpha=0.1, beta=0.2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[0, 0] = 2.0
        model.layer1[0].conv1.weight[0, 0, 0, 0] += 0.5
    # alpha/2 * 0.5**2 + beta/2 * 2**2 = 0.0125 + 0.4
    assert regulariser.penalty(model).item() == pytest.approx(0.4125, rel=1e-6)
    assert regulariser.distance(model) == pytest.approx(0.5, rel=1e-6)


def test_l2sp_has_the_gradient_that_pulls_weights_back_to_the_start():
    model = small_model()
    regulariser = L2SP(model, alpha=0.1, beta=0.0)
    with torch.no_grad():
        model.stem[0].weight.add_(1.0)
    regulariser(model).backward()
    assert torch.allclose(model.stem[0].weight.grad, torch.full_like(model.stem[0].weight, 0.1))  # alpha*(w - w0)


def test_fine_tuning_with_l2sp_ends_closer_to_the_pretrained_weights(learnable):
    pretrained = small_model()
    plain, regularised = models.copy_model(pretrained), models.copy_model(pretrained)
    fit(plain, learnable, epochs=3, lr=0.05, batch_size=32, weight_decay=0)
    regulariser = L2SP(regularised, alpha=1.0, beta=0.0)
    fit(regularised, learnable, epochs=3, lr=0.05, batch_size=32, weight_decay=0, penalty=regulariser)
    assert regulariser.distance(regularised) < 0.5 * regulariser.distance(plain)


def test_l2sp_rejects_negative_strengths_and_another_architecture():
    with pytest.raises(ValueError, match="alpha >= 0"):
        L2SP(small_model(), alpha=-1)
    regulariser = L2SP(models.resnet(2, width=8, blocks=(1, 1, 1)))
    with pytest.raises(ValueError, match="built from another architecture"):
        regulariser(small_model())


# --- LP-FT ---------------------------------------------------------------------------------------------------------

def test_lp_ft_probes_on_fixed_features_then_fine_tunes_from_the_probed_head(learnable):
    model = small_model()
    start = models.copy_model(model)
    calls = []  # (phase-relative step, features, head) at the start of each step of both phases

    def record(model, step):
        calls.append((step, snapshot(nn.ModuleList(model.stage(n) for n in model.stage_names[:-1])),
                      snapshot(model.head)))

    settings = dict(batch_size=32, seed=1, before_step=record)
    data = few(learnable)
    result = lp_ft(model, data, data, probe_steps=2, finetune_steps=2, probe_lr=0.05,
                   finetune_lr=0.01, **settings)
    assert [c[0] for c in calls] == [0, 1, 0, 1]
    features_at_start, features_after_probe = calls[0][1], calls[2][1]
    assert same(features_at_start, features_after_probe)  # the probe left the features (and BN statistics) alone
    final_features = snapshot(nn.ModuleList(model.stage(n) for n in model.stage_names[:-1]))
    assert changed(features_after_probe, final_features)  # fine-tuning moved them

    probe_only = freeze(start)  # the same probe on its own, to compare heads with
    fit(probe_only, data, data, steps=2, lr=0.05, **{**settings, "before_step": None})
    head_at_phase_two = calls[2][2]
    assert same(head_at_phase_two, snapshot(probe_only.head))
    assert not same(head_at_phase_two, calls[0][2])
    assert result.probe.steps_done == 2 and result.finetune.steps_done == 2
    assert trainable_stages(model) == list(model.stage_names)


def test_lp_ft_refuses_fit_arguments_it_sets_itself(learnable):
    with pytest.raises(ValueError, match="probe_steps/finetune_steps"):
        lp_ft(small_model(), learnable, probe_steps=1, finetune_steps=1, probe_lr=0.1, finetune_lr=0.01, lr=0.1)


# --- re-initialisation ---------------------------------------------------------------------------------------------

def test_reinit_changes_the_named_stages_and_leaves_the_others(learnable):
    model = small_model()
    fit(model, few(learnable), epochs=1, lr=0.05, batch_size=32)  # so BatchNorm has weights and statistics to lose
    before = {name: snapshot(model.stage(name)) for name in model.stage_names}
    reinit(model, ["layer2", "head"], seed=3)
    assert same(before["stem"], snapshot(model.stem)) and same(before["layer1"], snapshot(model.layer1))
    assert changed(before["layer2"], snapshot(model.layer2)) and changed(before["head"], snapshot(model.head))


def test_reinit_resets_batchnorm_to_the_identity_with_fresh_statistics(learnable):
    model = small_model()
    fit(model, few(learnable), epochs=1, lr=0.05, batch_size=32)
    bn = reinit(model, "layer1").layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert bn.num_batches_tracked.item() == 0


def test_reinit_is_deterministic_for_a_seed_and_leaves_the_global_random_state():
    a, b, c = small_model(seed=0), small_model(seed=1), small_model(seed=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    reinit(a, "layer1", seed=5)
    reinit(b, "layer1", seed=5)
    reinit(c, "layer1", seed=6)
    assert torch.equal(torch.rand(3), expected)
    assert same(snapshot(a.layer1), snapshot(b.layer1))
    assert not same(snapshot(a.layer1), snapshot(c.layer1))
    with pytest.raises(ValueError, match="reinit needs the stages"):
        reinit(a, None)


def test_a_head_first_phase_with_a_cache_is_trained_once_and_read_back_exactly(tmp_path, monkeypatch):
    """Two recipes (or two lessons) that share a "head first" phase: the second reads the head the first trained."""
    from ftcourse import lab, transfer

    task = lab.target("related", 4, test_per_class=4)
    settings = dict(steps=3, lr=0.05, batch_size=8, augment=True, seed=1, progress=False, cache=tmp_path)
    first = small_model(num_classes=task.num_classes)
    transfer.fit_head_first(first, task.train, **settings)
    calls = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: calls.append(k) or real_fit(*a, **k))
    second = small_model(num_classes=task.num_classes)
    history = transfer.fit_head_first(second, task.train, **settings)
    assert calls == [] and history.steps_done == 3
    assert models.fingerprint(second) == models.fingerprint(first)
    assert all(p.requires_grad for p in second.parameters())  # unfrozen afterwards, as when it trains
    other = small_model(num_classes=task.num_classes)
    transfer.fit_head_first(other, task.train, **{**settings, "lr": 0.01})  # another rate: another phase
    assert len(calls) == 1
    assert len(list((tmp_path / "head_first").glob("*.pt"))) == 2
    for saved in (tmp_path / "head_first").glob("*.pt"):
        saved.write_bytes(b"damaged")
    again = small_model(num_classes=task.num_classes)
    transfer.fit_head_first(again, task.train, **settings)  # a damaged file is a phase not yet trained
    assert len(calls) == 2 and models.fingerprint(again) == models.fingerprint(first)
    for saved in (tmp_path / "head_first").glob("*.pt"):  # a foreign file: tensors that do not fit the model
        torch.save({"changed": {"head.weight": torch.zeros(1)}, "history": {}}, saved)
    foreign = small_model(num_classes=task.num_classes)
    transfer.fit_head_first(foreign, task.train, **settings)
    assert len(calls) == 3 and models.fingerprint(foreign) == models.fingerprint(first)
