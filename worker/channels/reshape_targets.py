"""The constant target shape of a Reshape, resolved against its input, and edits to it; shared by
the reshape rules (reshape.py) and the packed-attention rules (mha.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.channels.state import ValueUse, Walker

Slot = tuple[int, int, int]  # (node index, input index, entry) of a 1-D constant


def edit_slot(w: Walker, index: int, slot: Slot | None, value: int | None, ids: np.ndarray) -> None:
    """Entry `value` of the target shape becomes the kept count of `ids` (-1 and 0 need no
    edit)."""
    if slot is None or value is None or value <= 0:
        return
    reader = None if slot[0] == index else index
    w.values.append(ValueUse(slot[0], slot[1], slot[2], ids, reader))


def target_shape(
    w: Walker, index: int, node: Any
) -> tuple[list[int | None], list[Slot | None]] | None:
    """A reshape's target entries (None: known only at run time) and, for constant ones, where
    they are stored: the shape constant, or a constant piece of the Concat that builds it."""
    name = node.input[1]
    spec = w.const(name)
    if spec is not None:
        values = [int(v) for v in spec.reshape(-1)]
        return list(values), [(index, 1, j) for j in range(len(values))]
    maker = w.made_by.get(name)
    if maker is None or w.graph.node[maker].op_type != "Concat":
        return None
    targets: list[int | None] = []
    where: list[Slot | None] = []
    for k, piece in enumerate(w.graph.node[maker].input):
        value, shape = w.const(piece), w.shape(piece)
        if value is not None:
            targets += [int(v) for v in value.reshape(-1)]
            where += [(maker, k, j) for j in range(value.size)]
        elif shape is not None and len(shape) == 1 and isinstance(shape[0], int):
            targets += [None] * shape[0]
            where += [None] * shape[0]
        else:
            return None
    return targets, where


def resolve_shape(
    target: list[int | None], shape: list[Any], out_shape: list[Any] | None, c: int, zero: bool
) -> list[Any] | None:
    """The target with 0-copies replaced by the input dims, if the axes before the channels
    stay as they are. Entries known only at run time (None) are accepted there when inference
    says they keep the input's dims."""
    if len(target) <= c or target.count(-1) > 1 or None in target[c:]:
        return None
    resolved: list[Any] = []
    for j, value in enumerate(target):
        if zero and value == 0:
            if j >= len(shape):
                return None
            resolved.append(shape[j])
        else:
            resolved.append(value)
    for i in range(c):
        if resolved[i] is None:
            same = out_shape is not None and len(out_shape) == len(target)
            if not same or out_shape[i] is None or out_shape[i] != shape[i]:  # type: ignore[index]
                return None
        elif resolved[i] != -1 and resolved[i] != shape[i]:
            return None
    return resolved
