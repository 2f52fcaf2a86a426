"""Frames between the grader and its worker: plain data and dense tensors round-trip; whatever else a student's
process could send is refused as a BadFrame, quickly and within bounded memory."""

import io
import json
import pickle
import struct
import time

import pytest
import torch
from safetensors.torch import save

from ftcourse.grading import frames


def body(message) -> bytes:
    return frames.encode(message)[frames.HEADER.size:]


def raw(message_text: str, tensors=None) -> bytes:
    """A frame body in the right format around any message text, as a hostile writer would make it."""
    return save(tensors or {}, metadata={"message": message_text})


def test_plain_data_and_tensors_round_trip():
    message = {"kind": "answers", "value": (1, 2.5, None, True, "x"), "nan": float("nan"), "inf": float("-inf"),
               "by_setting": {(0.5, 20): 0.1, 3: "three"}, "weights": {"w": torch.randn(3, 4)[:, :2]},
               "flags": torch.tensor([True, False]), "$not_a_tag": 1, "empty": torch.zeros(0, 3)}
    back = frames.decode(body(message))
    assert back["value"] == (1, 2.5, None, True, "x") and isinstance(back["value"], tuple)
    assert back["by_setting"] == {(0.5, 20): 0.1, 3: "three"} and back["$not_a_tag"] == 1
    assert back["nan"] != back["nan"] and back["inf"] == float("-inf")
    assert torch.equal(back["weights"]["w"], message["weights"]["w"]) and back["weights"]["w"].is_contiguous()
    assert back["flags"].dtype == torch.bool and back["empty"].shape == (0, 3)


def test_what_is_not_plain_data_is_not_sent():
    for value in (torch.nn.Linear(2, 2), object(), torch.eye(3).to_sparse(), {"deep": [[[[]]]] * 1}):
        if isinstance(value, dict):
            value = nested = []
            for _ in range(frames.MAX_DEPTH + 2):
                nested.append([])
                nested = nested[0]
        with pytest.raises(TypeError):
            frames.encode(value)


ATTACKS = {
    "deep for the parser": "[" * 100_000 + "]" * 100_000,
    "deep for the bound": "[" * (frames.MAX_DEPTH + 5) + "]" * (frames.MAX_DEPTH + 5),
    "too many values": json.dumps([0] * (frames.MAX_ITEMS + 1)),
    "an int of 5,000 digits": "1" * 5000,
    "a list as a key": json.dumps({"$dict": [[[1, 2], "v"]]}),
    "a tensor that is not there": json.dumps({"$tensor": "t9"}),
    "an unknown tag": json.dumps({"$eval": "print(1)"}),
    "not JSON": "{'kind': 'answers'}",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_message_past_a_bound_is_a_bad_frame_within_a_second(attack):
    """Within a second: the grader checks for Ctrl-C at least once a second while it waits for a sandbox, and a
    frame is decoded between two checks, so a decode that could take longer would also make Ctrl-C wait."""
    body = raw(ATTACKS[attack])
    start = time.monotonic()
    with pytest.raises(frames.BadFrame):
        frames.decode(body)
    assert time.monotonic() - start < 1


def test_the_pickled_hash_bomb_and_every_pickle_are_refused_at_once():
    """A tuple graph 64 levels deep as a dict key: hashing it never ends. A frame is never unpickled, so it is
    refused before anything is built."""
    node = ()
    for _ in range(64):
        node = (node, node)
    inner = pickle.dumps(node, protocol=2)  # the tuple's opcodes, shared levels memoised: a few hundred bytes
    bomb = b"\x80\x02}" + inner[2:-1] + b"K\x01s."  # {node: 1}, written by hand: building it here would hash it
    for data in (bomb, _torch_saved({"kind": "ready", "errors": []})):
        start = time.monotonic()
        with pytest.raises(frames.BadFrame):
            frames.decode(data)
        assert time.monotonic() - start < 1


def _torch_saved(message) -> bytes:
    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


def test_a_tensor_header_that_lies_about_its_size_is_refused_without_allocating_it():
    good = raw(json.dumps({"$tensor": "t0"}), {"t0": torch.zeros(4)})
    size = int.from_bytes(good[:8], "little")
    header = json.loads(good[8:8 + size])
    header["t0"]["shape"] = [2**40]  # four terabytes of float32 claimed, 16 bytes sent
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with pytest.raises(frames.BadFrame):
        frames.decode(len(text).to_bytes(8, "little") + text + good[8 + size:])


def test_a_header_longer_than_the_frame_or_a_message_is_refused():
    with pytest.raises(frames.BadFrame, match="too short"):
        frames.decode(b"abc")
    with pytest.raises(frames.BadFrame, match="header"):
        frames.decode(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(frames.BadFrame, match="no message"):
        frames.decode(save({}, metadata={"other": "x"}))


def test_a_tuple_key_read_from_json_is_a_tree_and_cheap_to_hash():
    """The DAG that makes a pickled key expensive cannot be written in JSON: each level is spelled out, so 31
    levels of pairs would take 2**31 entries, far past the frame's bounds, and a key that fits hashes at once."""
    key = 1
    for _ in range(frames.MAX_DEPTH - 2):
        key = {"$tuple": [key]}
    message = frames.decode(raw(json.dumps({"$dict": [[key, "ok"]]})))
    assert list(message.values()) == ["ok"]
