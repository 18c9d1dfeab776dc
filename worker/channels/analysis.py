"""`analyze`: the channel groups of an ONNX model (ops.py walks the state of state.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.channels.graph import constants, opset, shapes
from worker.channels.ops import walk
from worker.channels.state import Analysis, Group, Walker


def analyze(model: Any, ignore_nodes: list[str] | None = None) -> Analysis:
    """Find the channel groups of an ONNX model (not modified; the analysis keeps a reference)."""
    walker = Walker(
        graph=model.graph,
        constants=constants(model),
        shapes=shapes(model),
        opset=opset(model),
        ignore=set(ignore_nodes or []),
    )
    for index, node in enumerate(model.graph.node):
        walker.made_by.update(dict.fromkeys(node.output, index))
        for name in node.input:
            walker.reads[name] = walker.reads.get(name, 0) + 1
    for output in model.graph.output:
        walker.reads[output.name] = walker.reads.get(output.name, 0) + 1
    walk(walker)
    for output in model.graph.output:
        walker.pin_layout(output.name, f"reaches the graph output `{output.name}`")
    groups = _groups(walker)
    return Analysis(
        model,
        walker.channels,
        groups,
        walker.slices,
        walker.values,
        walker.attrs,
        walker.readers,
        walker.constants,
    )


def _groups(walker: Walker) -> list[Group]:
    channels = walker.channels
    parent = list(range(len(walker.producers)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_owner: dict[int, int] = {}
    for channel, owner in enumerate(channels.owner):
        if owner < 0:
            continue
        root = channels.find(channel)
        other = first_owner.setdefault(root, owner)
        a, b = find(owner), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for index in range(len(walker.producers)):
        members.setdefault(find(index), []).append(index)
    groups = []
    for indices in members.values():
        names = list(dict.fromkeys(walker.producers[i].node for i in indices))
        ids = np.concatenate([walker.producers[i].ids for i in indices])
        units = np.unique(channels.roots(ids))
        reasons = [r for r in (channels.pins.get(int(u)) for u in units) if r is not None]
        first = walker.producers[indices[0]].ids
        distinct = len(np.unique(channels.roots(first)))
        width = len(first) // distinct if len(first) % distinct == 0 else 1
        groups.append(Group(names, units, reasons[0] if reasons else None, width))
    return groups
