"""How the grader and its sandboxed worker talk: frames, read with bounds, so that a frame can only ever be data.

A frame is 8 bytes of length, then a `safetensors <https://huggingface.co/docs/safetensors>`_ file: the message's
tensors as its tensors, and the rest of the message as JSON in its metadata (``{"message": ...}``), each tensor
written where it appears as ``{"$tensor": name}``. Tuples travel as ``{"$tuple": [...]}`` and dicts whose keys are
not strings as ``{"$dict": [[key, value], ...]}``.

Why not ``pickle`` (or ``torch.save``, which is pickle)? What the grader reads was written by a student's process,
so reading it must cost no more than the frame's size says, and must never run code. A pickle can do neither:
``weights_only=True`` stops code, but not a 64-level graph of shared tuples used as a dict key (hashing it never
ends, in a C call that Ctrl-C cannot interrupt), nor a small compressed record that inflates a thousandfold. Here:

- **safetensors** holds dense tensors only, each exactly the bytes its shape and dtype say (the library checks it
  against the buffer), nothing compressed: the tensors take at most the frame's size;
- **JSON** has no references and no compression: every value is spelled out, so the message's size bounds the data;
  its keys are strings, whose hash costs their length; it is limited to :data:`MAX_JSON_BYTES`;
- :func:`decode` then refuses more than :data:`MAX_DEPTH` levels of nesting and :data:`MAX_ITEMS` values in all,
  and allows only scalars (str, int, float, bool, None) and tuples of them as keys in a ``$dict`` (read from JSON,
  a tuple is a tree, never a graph: hashing it costs its size).

Whatever is wrong with a frame, :func:`decode` raises :class:`BadFrame` with the reason; it never raises anything
else. The worker (:mod:`ftcourse.grading.worker`) and the grader (:mod:`ftcourse.grading.grade`) both use this
module, so that both sides speak the same format.
"""

from __future__ import annotations

import json
import math
import struct

HEADER = struct.Struct(">Q")  # the length of the frame's body, in bytes
MAX_FRAME_BYTES = 64 * 2**20  # a whole frame's body: the capstone's weights are about 1 MB
MAX_JSON_BYTES = 4 * 2**20  # the message without its tensors: answers are tables and numbers, not megabytes
MAX_DEPTH = 32  # levels of nested lists, tuples and dicts
MAX_ITEMS = 200_000  # values in the whole message, tensors counted once each


class BadFrame(ValueError):
    """A frame that is not a message of this format, or breaks one of its bounds."""


def encode(message) -> bytes:
    """``message`` (plain data: None, bools, numbers, strings, tensors, and lists, tuples and dicts of them) as one
    frame. Raises TypeError for anything else (a module, a generator, a sparse tensor)."""
    import torch
    from safetensors.torch import save

    tensors = {}

    def plain(value, depth):
        if depth > MAX_DEPTH:
            raise TypeError(f"the message is nested more than {MAX_DEPTH} levels deep")
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                raise TypeError(f"a {value.layout} tensor cannot be sent: send a dense one (.to_dense())")
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {"$tensor": name}
        if isinstance(value, tuple):
            return {"$tuple": [plain(v, depth + 1) for v in value]}
        if isinstance(value, list):
            return [plain(v, depth + 1) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: plain(v, depth + 1) for k, v in value.items()}
            return {"$dict": [[plain(k, depth + 1), plain(v, depth + 1)] for k, v in value.items()]}
        raise TypeError(f"a {type(value).__name__} cannot be sent: only plain data and tensors can")

    text = json.dumps(plain(message, 0), allow_nan=False, separators=(",", ":"))
    if len(text.encode()) > MAX_JSON_BYTES:
        raise ValueError(f"the message without its tensors is over {MAX_JSON_BYTES // 2**20} MB of JSON")
    body = save(tensors, metadata={"message": text})
    return HEADER.pack(len(body)) + body


def decode(body: bytes):
    """The message in a frame's ``body`` (the bytes after its header); :class:`BadFrame` if it is not one."""
    from safetensors.torch import load

    text = _metadata_message(body)
    if len(text.encode()) > MAX_JSON_BYTES:
        raise BadFrame(f"its message (without tensors) is over {MAX_JSON_BYTES // 2**20} MB")
    try:
        tensors = load(bytes(body))
    except Exception as error:  # safetensors' own checks: offsets, sizes, dtypes
        raise BadFrame(f"its tensors cannot be read ({type(error).__name__})") from None
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as error:  # not JSON, too deep for the parser, an int of 5,000 digits
        raise BadFrame(f"its message is not readable JSON ({type(error).__name__})") from None
    count = [0]
    return _rebuild(tree, tensors, 0, count)


def _metadata_message(body: bytes) -> str:
    """The ``message`` entry of a safetensors file's metadata, read from its header with JSON alone."""
    if len(body) < 8:
        raise BadFrame("it is too short to be a frame")
    size = int.from_bytes(body[:8], "little")
    if size > len(body) - 8 or size > MAX_JSON_BYTES + 2**20:
        raise BadFrame("its header is longer than the frame, or than a message may be")
    try:
        header = json.loads(bytes(body[8:8 + size]))
    except (ValueError, RecursionError) as error:
        raise BadFrame(f"its header is not readable JSON ({type(error).__name__})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    text = metadata.get("message") if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise BadFrame("it holds no message")
    return text


def _rebuild(value, tensors: dict, depth: int, count: list):
    """The message from its JSON tree: tensors put back, tuples and ``$dict`` made again, every bound checked."""
    count[0] += 1
    if count[0] > MAX_ITEMS:
        raise BadFrame(f"it holds more than {MAX_ITEMS:,} values")
    if depth > MAX_DEPTH:
        raise BadFrame(f"it is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_rebuild(v, tensors, depth + 1, count) for v in value]
    if not isinstance(value, dict):  # pragma: no cover -- JSON has no other kinds
        raise BadFrame(f"it holds a {type(value).__name__}")
    if len(value) == 1 and next(iter(value)).startswith("$"):
        kind, inner = next(iter(value.items()))
        if kind == "$tensor" and isinstance(inner, str) and inner in tensors:
            return tensors[inner]
        if kind == "$float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if kind == "$tuple" and isinstance(inner, list):
            return tuple(_rebuild(v, tensors, depth + 1, count) for v in inner)
        if kind == "$dict" and isinstance(inner, list):
            pairs = {}
            for pair in inner:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise BadFrame("a $dict entry is not a [key, value] pair")
                key = _rebuild(pair[0], tensors, depth + 1, count)
                if not _plain_key(key):
                    raise BadFrame(f"a dict key is a {type(key).__name__}; keys must be strings, numbers or tuples "
                                   f"of them")
                pairs[key] = _rebuild(pair[1], tensors, depth + 1, count)
            return pairs
        raise BadFrame(f"it holds an unknown or broken entry {kind[:20]!r}")
    return {k: _rebuild(v, tensors, depth + 1, count) for k, v in value.items()}


def _plain_key(key) -> bool:
    """Whether ``key`` is a scalar or a tuple of plain keys: hashable, at a cost its size bounds."""
    if key is None or isinstance(key, (bool, int, float, str)):
        return True
    return isinstance(key, tuple) and all(_plain_key(k) for k in key)
