import copy
import math
from pathlib import Path

import pytest
import scipy.stats
import torch

from ftcourse import capstone, checks, measure, models, transfer
from ftcourse.train import fit

ROOT = Path(__file__).resolve().parents[1]


def right_finetune_start(pretrained, num_classes):
    model = models.copy_model(pretrained)
    return models.replace_head(model, num_classes)


def right_paired(a, b, margin):
    d = [x - y for x, y in zip(a, b)]
    n, mean = len(d), sum(d) / len(d)
    s = (sum((v - mean) ** 2 for v in d) / (n - 1)) ** 0.5
    half = scipy.stats.t.ppf(0.95, n - 1) * s / n ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "beats": mean - half > margin}


def slipped_paired(slip):
    """right_paired with one of the usual slips."""
    def answer(a, b, margin):
        right = right_paired(a, b, margin)
        n = len(a)
        d = [x - y for x, y in zip(a, b)]
        mean = right["mean"]
        s1 = (sum((v - mean) ** 2 for v in d) / (n - 1)) ** 0.5
        if slip == "unpaired":
            def var(xs):
                c = sum(xs) / n
                return sum((x - c) ** 2 for x in xs) / (n - 1)
            half = scipy.stats.t.ppf(0.95, n - 1) * ((var(a) + var(b)) / n) ** 0.5
        elif slip == "normal":
            half = 1.6448536269514722 * s1 / n ** 0.5
        elif slip == "ddof0":
            half = scipy.stats.t.ppf(0.95, n - 1) * (sum((v - mean) ** 2 for v in d) / n) ** 0.5 / n ** 0.5
        elif slip == "95%":
            half = scipy.stats.t.ppf(0.975, n - 1) * s1 / n ** 0.5
        else:  # the verdict from the mean alone
            return {**right, "beats": mean > margin}
        return {"mean": mean, "low": mean - half, "high": mean + half, "beats": mean - half > margin}
    return answer


def right_freeze_first(model, k):
    for name in model.stage_names[:k]:
        model.stage(name).requires_grad_(False)
    return model


def right_train_mode(model, frozen, *, parameters=True, batchnorm=True, then_train=False):
    """Exercise 02.2's answer; the keywords give its usual slips."""
    model.train()
    for name in frozen:
        child = getattr(model, name)
        if parameters:
            child.requires_grad_(False)
        for module in child.modules():
            if batchnorm and isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    return model.train() if then_train else model


def right_suggest_rate(lrs, losses, *, correct=True, smooth=True, pick="steepest"):
    """Exercise 03.3's answer, written as a learner would; the keywords give its usual slips."""
    smoothed, average = [], 0.0
    for i, loss in enumerate(losses):
        average = 0.98 * average + 0.02 * loss
        s = (average / (1 - 0.98 ** (i + 1)) if correct else average) if smooth else loss
        if not math.isfinite(s) or (smoothed and s > 4 * min(smoothed)):
            break
        smoothed.append(s)
    lowest = min(range(len(smoothed)), key=lambda i: smoothed[i])
    if pick == "minimum":
        return lrs[lowest]
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(10, lowest)}
    return lrs[min(slopes, key=slopes.get)]


def right_rates(stage_names, lr, decay):
    return {name: lr / decay**i for i, name in enumerate(reversed(stage_names))}


def best_mean_rate(rows, method, metric):
    means = {}
    for r in rows:
        if r["method"] == method and not r["diverged"]:
            means.setdefault(r["lr"], []).append(r[metric])
    return max(means, key=lambda lr: sum(means[lr]) / len(means[lr]))


def right_best_rate(rows, method):
    return best_mean_rate(rows, method, "val_accuracy")


def right_ntg(rows):
    gaps = {}
    for r in rows:
        gaps.setdefault((r["relatedness"], r["shots"]), []).append(r["err_finetune"] - r["err_scratch"])
    return {k: sum(v) / len(v) for k, v in gaps.items()}


def right_keep_lower(pretrained, num_classes, keep):
    model = models.copy_model(pretrained)
    transfer.reinit(model, list(model.stage_names[keep:-1]))
    return models.replace_head(model, num_classes)


def right_leep(source_probs, labels):
    joint = torch.nn.functional.one_hot(labels).double().T @ source_probs.double() / len(labels)
    conditional = joint / joint.sum(0)
    return float((source_probs.double() @ conditional.T).gather(1, labels[:, None]).log().mean())


def right_tau(x, y):
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    return sum(1 if (x[i] - x[j]) * (y[i] - y[j]) > 0 else -1 for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("check, answer", [
    (checks.check_ntg_by_setting, right_ntg),
    (checks.check_keep_lower_stages, right_keep_lower),
    (checks.check_leep_score, right_leep),
    (checks.check_kendall_tau, right_tau),
    (checks.check_discriminative_rates, right_rates),
    (checks.check_best_rate, right_best_rate),
    (checks.check_finetune_start, right_finetune_start),
    (checks.check_paired_verdict, right_paired),
    (checks.check_freeze_first, right_freeze_first),
    (checks.check_train_mode, right_train_mode),
    (checks.check_suggest_rate, right_suggest_rate),
])
def test_a_right_answer_passes_and_says_so(check, answer, capsys):
    assert check(answer) is None  # nothing for a notebook cell to echo after the PASSED line
    assert "PASSED" in capsys.readouterr().out


def test_changing_the_pretrained_model_in_place_is_caught():
    with pytest.raises(checks.ExerciseFailed, match="instead of a copy.*\nHint: start from models.copy_model"):
        checks.check_finetune_start(lambda m, n: models.replace_head(m, n))


def test_a_frozen_body_is_not_full_fine_tuning():
    def frozen(pretrained, n):
        model = right_finetune_start(pretrained, n)
        model.stem.requires_grad_(False)
        return model
    with pytest.raises(checks.ExerciseFailed, match="parameters are frozen"):
        checks.check_finetune_start(frozen)


@pytest.mark.parametrize("slip, hint", [("unpaired", "pair the seeds"), ("normal", "Student's t with n - 1"),
                                        ("ddof0", "sample standard deviation"), ("95%", "a 90% interval"),
                                        ("mean verdict", "the whole interval lies above it")])
def test_each_usual_slip_in_a_paired_interval_gets_its_own_hint(slip, hint):
    """Exercise 01.2 on many questions: each slip fails (on some question: the verdict slip shows only where the
    mean is above the margin and the low end is not), and the hint names that slip."""
    import random

    failed = []
    for i in range(40):
        inputs = checks.GRADED["01.2"].ask(random.Random(f"slips/{i}"))
        try:
            checks.GRADED["01.2"].judge(checks.plain(slipped_paired(slip)(**inputs)), inputs)
        except checks.ExerciseFailed as error:
            failed.append(error.hint)
    assert failed and all(hint in h for h in failed), failed[:3]


def test_freezing_one_stage_too_many_names_the_stages():
    with pytest.raises(checks.ExerciseFailed, match=r"with k=0 the trainable stages are \['layer1'"):
        checks.check_freeze_first(lambda model, k: right_freeze_first(model, k + 1))


@pytest.mark.parametrize("slip, hint", [
    (dict(batchnorm=False), "freezes parameters, not BatchNorm's running_mean"),
    (dict(then_train=True), "freezes parameters, not BatchNorm's running_mean"),  # eval() before train()
    (dict(parameters=False), "still train"),
])
def test_freezing_a_torchvision_resnet_without_its_batchnorm_statistics_is_named(slip, hint):
    with pytest.raises(checks.ExerciseFailed, match=hint):
        checks.check_train_mode(lambda model, frozen: right_train_mode(model, frozen, **slip))


def test_a_resnet_in_evaluation_mode_or_with_batch_statistics_gets_its_own_hint():
    with pytest.raises(checks.ExerciseFailed, match="start with model.train"):
        checks.check_train_mode(lambda model, frozen: right_train_mode(model, frozen).eval())

    def momentum_zero(model, frozen):
        right_train_mode(model, frozen, batchnorm=False)
        for name in frozen:
            for module in getattr(model, name).modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.momentum = 0.0
        return model
    with pytest.raises(checks.ExerciseFailed, match="momentum 0 only stops the running ones"):
        checks.check_train_mode(momentum_zero)
    with pytest.raises(checks.ExerciseFailed, match="bn1 is a child of its own"):
        checks.check_train_mode(lambda model, frozen: right_train_mode(model, [n for n in frozen if n != "bn1"]))


def test_the_frozen_children_may_be_put_in_evaluation_mode_whole():
    def children_eval(model, frozen):
        model.train()
        for name in frozen:
            getattr(model, name).requires_grad_(False).eval()
        return model
    checks.check_train_mode(children_eval)


@pytest.mark.parametrize("slip, hint", [
    (dict(pick="minimum"), "rate at the lowest smoothed loss"), (dict(smooth=False), "smooth the losses first")])
def test_each_usual_misreading_of_a_range_test_gets_its_own_hint(slip, hint):
    """Exercise 03.3 on many questions: the slip fails, and the hint names it."""
    import random

    failed = []
    for i in range(30):
        inputs = checks.GRADED["03.3"].ask(random.Random(f"slips/{i}"))
        try:
            checks.GRADED["03.3"].judge(right_suggest_rate(inputs["lrs"], inputs["losses"], **slip), inputs)
        except checks.ExerciseFailed as error:
            failed.append(error.hint)
    assert len(failed) >= 25 and all(hint in h for h in failed), failed[:3]


def test_the_reference_reading_of_a_range_test_is_lr_finds():
    """03.3's reference reads a record as lr_find reads its own, so the exercise teaches the library's rule."""
    import random

    from ftcourse.rangetest import read_losses

    inputs = checks.GRADED["03.3"].ask(random.Random("reading"))
    suggestion, at_min = read_losses(inputs["lrs"], inputs["losses"])
    assert right_suggest_rate(inputs["lrs"], inputs["losses"]) == suggestion
    assert inputs["lrs"].index(suggestion) >= 10 and suggestion < at_min


def test_a_crash_in_the_learners_code_is_a_failed_check_with_the_error():
    with pytest.raises(checks.ExerciseFailed, match="raised ZeroDivisionError"):
        checks.check_freeze_first(lambda m, k: 1 / 0)


def test_a_stub_says_not_done_yet_in_a_few_lines_without_the_checks_internals():
    def stub(model, frozen):
        raise NotImplementedError("freeze them")
    with pytest.raises(NotImplementedError, match="freeze them") as raised:
        checks.check_train_mode(stub)
    assert isinstance(raised.value, checks.ExerciseNotDone)
    lines = raised.value._render_traceback_()  # what IPython shows instead of a traceback
    assert lines[0] == "Exercise 02.2 is not done yet: freeze them" and len(lines) <= 3
    assert raised.value.__suppress_context__


def test_a_failed_check_shows_its_message_and_hint_only():
    with pytest.raises(checks.ExerciseFailed) as raised:
        checks.check_freeze_first(lambda m, k: -1)
    lines = raised.value._render_traceback_()
    assert len(lines) == 2 and "not right yet" in lines[0] and lines[1].startswith("Hint:")


def test_grading_asks_other_inputs_than_the_notebook_so_hard_coded_answers_fail():
    import random

    for id, exercise in checks.GRADED.items():
        if id == capstone.EXERCISE:
            continue
        notebook = exercise.ask(random.Random(f"notebook/{id}"))
        graded = [exercise.ask(random.Random(f"{secret}/{id}")) for secret in (1, 2)]
        assert any(repr(g) != repr(notebook) for g in graded), id


@pytest.mark.parametrize("exercise_id, answer", [
    ("01.1", right_finetune_start), ("02.1", right_freeze_first), ("04.2", None), ("05.1", None)])
def test_answers_cross_to_the_grader_as_plain_data_and_are_judged_there(exercise_id, answer):
    """What the student's process sends survives the grader's frames (JSON and safetensors), and is judged."""
    import random

    from ftcourse.grading import frames

    answer = answer or {"04.2": lambda p, n, k: right_keep_lower(p, n, k), "05.1": right_leep}[exercise_id]
    exercise = checks.GRADED[exercise_id]
    inputs = exercise.ask(random.Random(f"99/{exercise_id}"))
    received = frames.decode(frames.encode(checks.plain(exercise.answer(answer, inputs)))[frames.HEADER.size:])
    assert isinstance(exercise.judge(received, inputs), str)


# The chance that the best single answer -- one table, one number, learnt from feedback or guessed -- passes one
# question of each exercise, as measured below on 300 questions (an upper figure: the measurement stays below it).
# With ``rounds`` independent questions all of which must pass, a guess passes with probability GUESS ** rounds.
GUESS = {"01.1": 0.004, "01.2": 0.004, "02.1": 0.12, "02.2": 0.05, "03.1": 0.08, "03.2": 0.2, "03.3": 0.13,
         "04.1": 0.004, "04.2": 0.004, "05.1": 0.004, "05.2": 0.16, "07.1": 0.004, "07.2": 0.09, "08.1": 0.05,
         "08.2": 0.05, "08.3": 0.05, "09.1": 0.004, "09.2": 0.09}


def solution_functions() -> dict:
    """The functions the solution notebooks define (the single source of the assignments), run here: their import
    lines, then every cell that defines a function or a class."""
    import json
    import re

    namespace = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            exec("\n".join(line for line in source.splitlines() if re.match(r"(import|from) \S+", line)), namespace)
            if re.search(r"^(def|class) \w+", source, re.M):
                exec(source, namespace)
    return namespace


@pytest.mark.slow  # about three minutes on 2 cores: 300 questions of each exercise, answered and judged
def test_a_guessed_answer_passes_an_exercise_with_probability_below_one_percent():
    """For each exercise: the solution answers 300 questions; each of its five most frequent answers is then
    judged, as a constant, on all 300; the best passes a share at most GUESS. All ``rounds`` questions must pass,
    so GUESS ** rounds must be below 1%. (An answer that depends on a random seed or on random data is its own:
    the best constant then passes its own question only, 1 in 300.)"""
    import collections
    import random

    assert set(GUESS) == set(checks.GRADED) - {capstone.EXERCISE}
    functions = solution_functions()
    measured = {}
    for id, exercise in checks.GRADED.items():
        if id == capstone.EXERCISE:
            continue
        questions = [exercise.ask(random.Random(f"guess/{id}/{i}")) for i in range(300)]
        answers = [checks.plain(exercise.answer(functions[exercise.function], copy.deepcopy(q))) for q in questions]
        counts = collections.Counter(repr(a) for a in answers)
        by_repr = {repr(a): a for a in answers}
        best = 0.0
        for shown, _ in counts.most_common(5):
            passes = 0
            for question in questions:
                try:
                    exercise.judge(copy.deepcopy(by_repr[shown]), question)
                    passes += 1
                except checks.ExerciseFailed:
                    pass
            best = max(best, passes / len(questions))
        measured[id] = best
    over = {id: (measured[id], GUESS[id]) for id in measured if measured[id] > GUESS[id]}
    assert not over, f"a constant answer passes more often than stated (measured, stated): {over}"
    likely = {id: GUESS[id] ** checks.GRADED[id].rounds for id in GUESS}
    assert max(likely.values()) < 0.01, likely


def test_plain_data_keeps_values_and_never_objects():
    import numpy as np

    value = {(0.5, 5): np.float64(0.25), "t": torch.tensor(3.0), "list": [np.int64(2), (1, "a")], "m": object()}
    assert checks.plain(value) == {(0.5, 5): 0.25, "t": 3.0, "list": [2, (1, "a")], "m": {"unreadable": "object"}}


def test_upside_down_rates_are_named():
    with pytest.raises(checks.ExerciseFailed, match="upside down"):
        checks.check_discriminative_rates(lambda names, lr, decay: {n: lr / decay**i for i, n in enumerate(names)})


def test_a_diverged_best_rate_is_refused():
    with pytest.raises(checks.ExerciseFailed, match="diverged"):
        checks.check_best_rate(lambda rows, method: max(rows, key=lambda r: r["accuracy"])["lr"])


def test_a_rate_chosen_by_test_accuracy_is_refused():
    with pytest.raises(checks.ExerciseFailed, match="chose by test accuracy"):
        checks.check_best_rate(lambda rows, method: best_mean_rate(rows, method, "accuracy"))


def test_the_best_single_run_is_not_the_best_mean():
    def best_single(rows, method):
        return max((r for r in rows if r["method"] == method and not r["diverged"]),
                   key=lambda r: r["val_accuracy"])["lr"]
    with pytest.raises(checks.ExerciseFailed, match="best mean over seeds"):
        checks.check_best_rate(best_single)


def test_ntg_with_the_sign_reversed_is_named():
    def reversed_sign(rows):
        return {k: -v for k, v in right_ntg(rows).items()}
    with pytest.raises(checks.ExerciseFailed, match="signs are the wrong way round"):
        checks.check_ntg_by_setting(reversed_sign)


def test_keeping_the_wrong_stages_or_changing_the_original_is_caught():
    def keeps_all(pretrained, num_classes, keep):
        return models.replace_head(models.copy_model(pretrained), num_classes)
    with pytest.raises(checks.ExerciseFailed, match=r"equal to the pretrained ones are \['stem', 'layer1', 'layer2', "
                                                    r"'layer3'\], expected \['stem'"):
        checks.check_keep_lower_stages(keeps_all)
    with pytest.raises(checks.ExerciseFailed, match="pretrained model itself was changed"):
        checks.check_keep_lower_stages(lambda m, n, k: models.replace_head(transfer.reinit(m, ["layer3"]), n))


def test_a_leep_without_the_log_or_with_the_wrong_conditional_fails():
    with pytest.raises(checks.ExerciseFailed, match="expected"):
        checks.check_leep_score(lambda p, y: float(p.max(1).values.mean().log()))
    with pytest.raises(checks.ExerciseFailed, match="never positive"):
        checks.check_leep_score(lambda p, y: 1.5)


def test_a_correlation_that_is_not_kendalls_fails():
    with pytest.raises(checks.ExerciseFailed, match=r"gave .*, expected"):
        checks.check_kendall_tau(lambda x, y: float(torch.corrcoef(torch.tensor([x, y]))[0, 1]))


def capstone_recipe(source, *, images=None, probe=False):
    """Fine-tune (or probe) a shipped checkpoint on the capstone's training data for ``images`` images (default: the
    budget); ``source="by logme"`` chooses the lab checkpoint LogME ranks first on the training images."""
    def recipe(train, budget):
        name = source
        if source == "by logme":
            with torch.no_grad():
                scores = {n: measure.transferability(models.pretrained(n), train)["logme"]
                          for n in models.SHIPPED if n.startswith("lab")}
            name = max(scores, key=scores.get)
        model = models.replace_head(models.copy_model(models.pretrained(name)), len(train.classes))
        if probe:
            transfer.freeze(model)
        fit(model, train, steps=(images or budget) // 32, lr=0.01, batch_size=32, augment=True, progress=False)
        return model
    return recipe


@pytest.mark.slow  # trains the capstone's recipe
def test_the_capstone_passes_a_recipe_that_chooses_its_source_on_both_practice_targets(capsys, one_thread):
    assert checks.check_capstone(capstone_recipe("by logme")) is None
    out = capsys.readouterr().out
    assert "PASSED" in out and "shape target: test accuracy" in out and "colour target: test accuracy" in out
    assert "100% of the points" in out and "secret target" in out


@pytest.mark.slow  # trains four recipes
def test_the_capstone_fails_one_source_for_every_target_and_a_recipe_over_budget(one_thread):
    with pytest.raises(checks.ExerciseFailed, match="on the shape practice target, test accuracy .* a shape target "
                                                    "needs 0.500"):
        checks.check_capstone(capstone_recipe("lab-colours"))
    with pytest.raises(checks.ExerciseFailed, match="on the colour practice target, test accuracy .* a colour target "
                                                    "needs 0.600"):
        checks.check_capstone(capstone_recipe("lab"))  # the obvious default: right for shapes only
    with pytest.raises(checks.ExerciseFailed, match="the budget is 3,200"):
        checks.check_capstone(capstone_recipe("lab", images=6400))


def test_the_capstone_counts_images_trained_on_but_not_evaluated_on():
    model = checks._tiny_model()
    images = torch.zeros(10, 3, 16, 16)
    with checks._ImageCounter() as counter:
        model(images)
        with torch.no_grad():
            model(images)
    assert counter.images == 10
