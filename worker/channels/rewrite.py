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
import onnx
from onnx import AttributeProto, numpy_helper

from worker.channels.state import Analysis
from worker.ort import weight_tensors

Edit = tuple[str, int, Any]  # ("take" | "zero", axis, indices) or ("set", position, value)
Slot = tuple[int, int]  # (node index, input index)


def rewrite(analysis: Analysis, removed: set[int], mode: Literal["prune", "mask"]) -> Any:
    """A new model with `removed` (root channel ids) pruned away, or zeroed at the consumers."""
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
    clones: dict[str, dict[str, list[tuple[int, Edit]]]] = {}
    chains: dict[tuple[str, int, tuple[str, ...]], dict[str, list[Edit]]] = {}
    if mode == "prune":
        nodes = model.graph.node
        for value in analysis.values:
            keep = analysis.keep_mask(value.ids, removed)
            if keep.all():
                continue
            edit = ("set", value.position, int(keep.sum()))
            if value.path and value.reader is not None:
                key = (
                    nodes[value.node].output[0],
                    value.input,
                    tuple(nodes[i].output[0] for i in value.path),
                )
                per_chain = chains.setdefault(key, {})
                per_chain.setdefault(nodes[value.reader].output[0], []).append(edit)
            elif value.reader is None:
                edits.setdefault((value.node, value.input), []).append(edit)
            else:  # by output names: node indices move when constants are dropped
                per_reader = clones.setdefault(nodes[value.node].output[0], {})
                per_reader.setdefault(nodes[value.reader].output[0], []).append((value.input, edit))
        for attr in analysis.attrs:
            keep = analysis.keep_mask(attr.ids, removed)
            if not keep.all():
                _set_attribute(nodes[attr.node], attr.name, attr.position, keep.sum())
        del model.graph.value_info[:]  # stale shapes; inference fills them again
    _apply(model, analysis.constants, edits)
    if clones:
        _clone_concats(model, analysis.constants, clones)
    if chains:
        _clone_chains(model, analysis.constants, chains)
    return model


def parameter_count(model: Any) -> int:
    """Elements of the graph's weights, initializers and `Constant` tensors alike
    (`worker.ort.weight_tensors`)."""
    return sum(int(np.prod(t.dims)) for t in weight_tensors(model))


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
    dropped: set[str] = set()  # replaced names: removed where nothing reads them any more
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
        dropped.add(name)
    _drop(graph, dropped)


def _clone_concats(
    model: Any, constants: dict[str, np.ndarray], clones: dict[str, dict[str, list[Any]]]
) -> None:
    """Give each reshape that edits a Concat-built target its own copy of that Concat (one
    Concat often shapes every layer's tensors, which keep different channel counts)."""
    graph = model.graph
    made_by = {n.output[0]: i for i, n in enumerate(graph.node) if n.output}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    after: dict[int, list[Any]] = {}
    for vector, per_reader in clones.items():
        variants: dict[tuple[Any, ...], list[str]] = {}
        for reader, input_edits in per_reader.items():
            key = tuple(sorted((k, _key([e])) for k, e in input_edits))
            variants.setdefault(key, []).append(reader)
        for readers in variants.values():
            source = graph.node[made_by[vector]]
            clone = _concat_copy(graph, source, per_reader[readers[0]], constants, taken)
            for reader in readers:
                node = graph.node[made_by[reader]]
                for j, name in enumerate(node.input):
                    if name == vector:
                        node.input[j] = clone.output[0]
            after.setdefault(made_by[vector], []).append(clone)
    nodes = []
    for index, node in enumerate(graph.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        nodes.extend([copy, *after.get(index, [])])
    del graph.node[:]
    graph.node.extend(nodes)
    _drop(graph, set(clones))


def _clone_chains(
    model: Any,
    constants: dict[str, np.ndarray],
    chains: dict[tuple[str, int, tuple[str, ...]], dict[str, list[Edit]]],
) -> None:
    """Give each reader of an edited chain (a `Mul(B, heads)` through the nodes that make a
    reshape target of it) its own copy of the chain, with the Mul's constant edited."""
    graph = model.graph
    made_by = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    taken = {t.name for t in graph.initializer} | set(made_by)
    after: dict[int, list[Any]] = {}
    for (start, k, path), per_reader in chains.items():
        variants: dict[tuple[Any, ...], list[str]] = {}
        for reader, reader_edits in per_reader.items():
            variants.setdefault(_key(reader_edits), []).append(reader)
        for readers in variants.values():
            source = graph.node[made_by[start]]
            name = _fresh(f"{source.input[k]}_pruned", taken)
            array = _transform(constants[source.input[k]], per_reader[readers[0]])
            graph.initializer.append(numpy_helper.from_array(array, name))
            previous, renamed, copy = start, "", onnx.NodeProto()
            copy.CopyFrom(source)
            copy.input[k] = name
            for link in (start, *path):
                if link != start:
                    copy = onnx.NodeProto()
                    copy.CopyFrom(graph.node[made_by[link]])
                    for j, value in enumerate(copy.input):
                        if value == previous:
                            copy.input[j] = renamed
                copy.name = _fresh(f"{copy.name}_pruned", taken)
                renamed = _fresh(f"{link}_pruned", taken)
                copy.output[0] = renamed
                after.setdefault(made_by[link], []).append(copy)
                previous = link
            for reader in readers:
                node = graph.node[made_by[reader]]
                for j, value in enumerate(node.input):
                    if value == previous:
                        node.input[j] = renamed
    nodes = []
    for index, node in enumerate(graph.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        nodes.extend([copy, *after.get(index, [])])
    del graph.node[:]
    graph.node.extend(nodes)
    _drop(graph, {start for start, _, _ in chains} | {o for _, _, p in chains for o in p})


def _concat_copy(
    graph: Any,
    source: Any,
    input_edits: list[tuple[int, Edit]],
    constants: dict[str, np.ndarray],
    taken: set[str],
) -> Any:
    """A copy of Concat `source` whose constant pieces carry `input_edits` (new initializers)."""
    clone = onnx.NodeProto()
    clone.CopyFrom(source)
    clone.name = _fresh(f"{source.name}_pruned", taken)
    clone.output[0] = _fresh(f"{source.output[0]}_pruned", taken)
    for k in sorted({k for k, _ in input_edits}):
        name = _fresh(f"{source.input[k]}_pruned", taken)
        array = _transform(constants[source.input[k]], [e for j, e in input_edits if j == k])
        graph.initializer.append(numpy_helper.from_array(array, name))
        clone.input[k] = name
    return clone


def _read_inside(graph: Any, name: str) -> bool:
    """Whether a sub-graph reads `name` from the outer scope (those reads are not counted)."""
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
    """Remove what made `names` if nothing reads them any more: initializers, and nodes none of
    whose outputs is read (then, in turn, what made their inputs)."""
    pending = set(names)
    outputs = {o.name for o in graph.output}
    while pending:
        name = pending.pop()
        if name in outputs or any(name in node.input for node in graph.node):
            continue
        if _read_inside(graph, name):
            continue
        for i in reversed(range(len(graph.initializer))):
            if graph.initializer[i].name == name:
                del graph.initializer[i]
        for i in reversed(range(len(graph.node))):
            node = graph.node[i]
            if name not in node.output:
                continue
            others = [o for o in node.output if o and o != name]
            if not any(o in outputs or any(o in n.input for n in graph.node) for o in others):
                pending.update(n for n in node.input if n)
                del graph.node[i]
