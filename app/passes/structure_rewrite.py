"""Apply a channel removal found by `structure.analyze` to the ONNX model.

`rewrite(analysis, removed, "prune")` slices every recorded constant, shape entry and `group`
attribute so that the removed units disappear. `rewrite(..., "mask")` keeps every shape and only
zeroes the removed channels' slices of the consumer weights: the function the pruned model must
compute. A constant read by several nodes that need different edits is split into one copy per
edit, so no reader sees another's slice.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from app.passes.structure import Analysis

Edit = tuple[str, int, Any]  # ("take" | "zero", axis, indices) or ("set", position, value)
Slot = tuple[int, int]  # (node index, input index)


def rewrite(analysis: Analysis, removed: set[int], mode: Literal["prune", "mask"]) -> Any:
    """A new model with `removed` (root channel ids) pruned away, or zeroed at the consumers."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    edits: dict[Slot, list[Edit]] = {}
    for use in analysis.slices:
        keep = analysis.keep_mask(use.ids, removed)
        if keep.all():
            continue
        if mode == "prune":
            edit: Edit = ("take", use.axis, np.flatnonzero(keep))
        elif use.role == "consumer":
            edit = ("zero", use.axis, np.flatnonzero(~keep))
        else:
            continue
        edits.setdefault((use.node, use.input), []).append(edit)
    if mode == "prune":
        for value in analysis.values:
            keep = analysis.keep_mask(value.ids, removed)
            if not keep.all():
                edits.setdefault((value.node, value.input), []).append(
                    ("set", value.position, int(keep.sum()))
                )
        for attr in analysis.attrs:
            keep = analysis.keep_mask(attr.ids, removed)
            if not keep.all():
                _set_attribute(model.graph.node[attr.node], attr.name, attr.position, keep.sum())
        del model.graph.value_info[:]  # stale shapes; inference fills them again
    _apply(model, analysis.constants, edits)
    return model


def parameter_count(model: Any) -> int:
    """Elements over the graph's initializers, as the job report counts them."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def _set_attribute(node: Any, name: str, position: int | None, value: Any) -> None:
    for attr in node.attribute:
        if attr.name == name:
            if position is None:
                attr.i = int(value)
            else:
                attr.ints[position] = int(value)


def _transform(array: np.ndarray, edits: list[Edit]) -> np.ndarray:
    out = np.array(array, copy=True)
    for kind, axis, arg in edits:
        if kind == "take":
            out = np.take(out, arg, axis=axis)
        elif kind == "zero":
            index = [slice(None)] * out.ndim
            index[axis] = arg
            out[tuple(index)] = 0
        else:
            out.reshape(-1)[axis] = arg
    return out


def _key(edits: list[Edit]) -> tuple[Any, ...]:
    return tuple(
        (kind, axis, arg.tobytes() if isinstance(arg, np.ndarray) else arg)
        for kind, axis, arg in edits
    )


def _apply(model: Any, constants: dict[str, np.ndarray], edits: dict[Slot, list[Edit]]) -> None:
    from onnx import numpy_helper

    graph = model.graph
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for output in graph.output:
        readers[output.name] = readers.get(output.name, 0) + 1
    variants: dict[str, dict[tuple[Any, ...], tuple[list[Edit], list[Slot]]]] = {}
    for slot, slot_edits in edits.items():
        name = graph.node[slot[0]].input[slot[1]]
        entry = variants.setdefault(name, {}).setdefault(_key(slot_edits), (slot_edits, []))
        entry[1].append(slot)
    initializers = {t.name: i for i, t in enumerate(graph.initializer)}
    taken = set(initializers) | {o for n in graph.node for o in n.output}
    dropped: set[str] = set()
    for name, by_edit in variants.items():
        edited = sum(len(slots) for _, slots in by_edit.values())
        shared = readers.get(name, 0) > edited or _read_inside(graph, name)
        if len(by_edit) == 1 and not shared and name in initializers:
            ((slot_edits, _),) = by_edit.values()
            array = _transform(constants[name], slot_edits)
            graph.initializer[initializers[name]].CopyFrom(numpy_helper.from_array(array, name))
            continue
        for number, (slot_edits, slots) in enumerate(by_edit.values()):
            new_name = _fresh(f"{name}_pruned{number}", taken)
            array = _transform(constants[name], slot_edits)
            graph.initializer.append(numpy_helper.from_array(array, new_name))
            for node_index, input_index in slots:
                graph.node[node_index].input[input_index] = new_name
        if not shared:
            dropped.add(name)
    _drop(graph, dropped)


def _read_inside(graph: Any, name: str) -> bool:
    """Whether a sub-graph reads `name` from the outer scope (those reads are not counted)."""
    from onnx import AttributeProto

    for node in graph.node:
        for attr in node.attribute:
            inner = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for sub in inner:
                if any(name in n.input for n in sub.node) or _read_inside(sub, name):
                    return True
    return False


def _fresh(name: str, taken: set[str]) -> str:
    candidate, number = name, 0
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    taken.add(candidate)
    return candidate


def _drop(graph: Any, names: set[str]) -> None:
    """Remove constants nobody reads any more (replaced by per-reader copies)."""
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in names:
            del graph.initializer[i]
    for i in reversed(range(len(graph.node))):
        node = graph.node[i]
        if node.op_type == "Constant" and node.output[0] in names:
            del graph.node[i]
