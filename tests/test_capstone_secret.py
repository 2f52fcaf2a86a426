"""The capstone's secret stays secret: every stream of it is drawn from a hash of the whole secret, and the class
names say nothing of the definition."""

import pytest
import torch

from ftcourse import capstone


def test_secrets_that_differ_only_in_their_high_bits_give_different_targets():
    low = 12345
    for high in (2**32, 2**40, 2**61):
        assert capstone.definition(low) != capstone.definition(low + high)
        for split in ("train", "test"):
            a, b = capstone.images(low, 2, split), capstone.images(low + high, 2, split)
            assert not torch.equal(a.images, b.images), (high, split)


def test_the_streams_are_independent_hashes_of_the_secret():
    seeds = {stream: capstone.stream_seed(2026, stream) for stream in ("definition", "train", "test")}
    assert len(set(seeds.values())) == 3 and all(0 <= s < 2**64 for s in seeds.values())
    assert capstone.stream_seed(2026, "test") != capstone.stream_seed(2026, "train") + 1


def test_class_names_are_anonymous():
    train, test = capstone.practice()
    assert train.classes == test.classes == [f"class {k}" for k in range(capstone.CLASSES)]
    assert not any("hue" in name or "/" in name for name in train.classes)


def test_every_text_that_states_the_marks_states_the_graders_own():
    """The marks live once, in ``capstone.MARKS``; the README, the notebooks' prose and the stub's TASK line state
    them, and must say what the grader applies."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for path in [root / "README.md", root / "solutions" / "10_capstone.ipynb", root / "exercises" / "10_capstone.ipynb"]:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":  # its cells' text, not the JSON's escapes
            text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
        text = " ".join(text.replace("**", "").split())
        for kind, passing, full in re.findall(r"(shape|colour) target passes at (\d+)%(?: test accuracy)? and gets "
                                              r"full marks at (\d+)%", text, flags=re.I):
            found.append((path.name, kind.lower(), int(passing), int(full)))
        for passing_shape, passing_colour in re.findall(r"pass mark: (\d+)% shape, (\d+)% colour", text):
            found += [(path.name, "shape", int(passing_shape), None), (path.name, "colour", int(passing_colour), None)]
    marks = {kind: (round(100 * passing), round(100 * full)) for kind, (passing, full) in capstone.MARKS.items()}
    for name in ("README.md", "10_capstone.ipynb"):
        assert {kind for n, kind, _, full in found if n == name and full} == set(marks), (name, found)
    assert len([f for f in found if f[3] is None]) >= 4, found  # the TASK line, in both notebooks (the stub's error too)
    assert all(passing == marks[kind][0] and full in (None, marks[kind][1]) for _, kind, passing, full in found), found


def test_the_score_is_half_at_the_pass_mark_and_whole_at_the_full_mark():
    for kind, (passing, full) in capstone.MARKS.items():
        assert capstone.score(passing - 0.001, kind) == 0.0 and capstone.score(float("nan"), kind) == 0.0
        assert capstone.score(passing, kind) == 0.5 and capstone.score((passing + full) / 2, kind) == pytest.approx(0.75)
        assert capstone.score(full, kind) == capstone.score(1.0, kind) == 1.0


def test_secrets_draw_targets_of_both_kinds_and_the_practice_has_one_of_each():
    kinds = [capstone.definition(secret)["kind"] for secret in range(40)]
    assert set(kinds) == set(capstone.KINDS) and min(kinds.count(k) for k in capstone.KINDS) >= 10
    assert {capstone.definition(s)["kind"] for s in capstone.PRACTICE_SECRETS.values()} == set(capstone.KINDS)
    for kind, secret in capstone.PRACTICE_SECRETS.items():
        assert capstone.definition(secret)["kind"] == kind

