"""The capstone's secret stays secret: every stream of it is drawn from a hash of the whole secret, and the class
names say nothing of the definition."""

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


def test_every_text_that_states_the_pass_mark_states_the_graders_own():
    """The pass mark lives once, in ``capstone.PASS_MARK``; the notebooks' prose and stub and the README state it,
    and must say what the grader applies."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    mark = f"{capstone.PASS_MARK:.0%}"
    found = []
    for path in [root / "README.md", root / "solutions" / "10_capstone.ipynb", root / "exercises" / "10_capstone.ipynb"]:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":  # its cells' text, not the JSON's escapes
            text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
        for stated in re.findall(r"(?:pass mark|You pass at)\W{0,12}(?:is\s+|\(|\*\*)?(\d+%)", text):
            found.append((path.name, stated))
    assert len(found) >= 5, found  # the README once, each notebook's prose and stub (its error message too)
    assert all(stated == mark for _, stated in found), found
