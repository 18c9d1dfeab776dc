"""Channel dependency analysis on ONNX graphs: which weight slices must be removed together.

Every output channel of a *producer* (a Conv, Gemm or MatMul over a weight initializer) gets a
channel id. The walk follows each id, in topological order, through the ops that keep channels
apart (activations, batch-norm, pooling, biases, transposes, concatenations, flatten/reshape into
a linear layer ...) down to the *consumers* whose weights read it (a Conv's input channels, a
Gemm's or MatMul's input rows). Ops that join two activations element-wise (residual `Add`, the
`Mul` of a gate) join their channel ids: those channels must go together. The joined ids form
*units* (a union-find component); a *group* is the set of producers whose channels share units,
and pruning removes whole units from a group.

Anything the walk does not understand *pins* the ids it touches: an unknown op, a reshape that
splits the channel axis, a layer norm over it, a graph output, a concatenation with a fixed
tensor then added ... A group with a pinned unit is never pruned, so the analysis can refuse, but
what it allows stays a valid graph computing the same function as the original with the removed
channels zeroed at their consumers (`structure_rewrite.rewrite(..., "mask")`), which the passes
check on real inputs.

Heavy imports (onnx) happen inside functions: the API imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Dim = int | str | None
Role = Literal["producer", "consumer", "param"]


@dataclass(frozen=True)
class Layout:
    """Which axis of a tensor carries channels, and the channel id of each entry of that axis."""

    axis: int
    ids: np.ndarray


class Channels:
    """Union-find over channel ids; a pinned component carries the reason it must stay."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.owner: list[int] = []  # producer index, or -1 for channels no producer made
        self.pins: dict[int, str] = {}

    def new(self, count: int, owner: int, pin: str | None = None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.owner.extend([owner] * count)
        ids = np.arange(start, start + count, dtype=np.int64)
        if pin is not None:
            for i in ids:
                self.pins[int(i)] = pin
        return ids

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        reason = self.pins.pop(rb, None)
        if reason is not None:
            self.pins.setdefault(ra, reason)

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in {(int(x), int(y)) for x, y in zip(a, b, strict=True)}:
            self.union(x, y)

    def pin(self, ids: np.ndarray, reason: str) -> None:
        for root in {self.find(int(i)) for i in ids}:
            self.pins.setdefault(root, reason)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.find(int(i)) for i in ids], dtype=np.int64)

    def reason(self, root: int) -> str | None:
        return self.pins.get(self.find(root))


@dataclass(frozen=True)
class SliceUse:
    """Entries `ids` along `axis` of the constant that input `input` of node `node` reads."""

    node: int
    input: int
    axis: int
    ids: np.ndarray
    role: Role


@dataclass(frozen=True)
class ValueUse:
    """Entry `position` of a 1-D constant (reshape shape, split sizes) = count of kept `ids`."""

    node: int
    input: int
    position: int
    ids: np.ndarray


@dataclass(frozen=True)
class AttrUse:
    """An integer attribute (or entry of an ints attribute) = count of kept `ids`."""

    node: int
    name: str
    position: int | None
    ids: np.ndarray


@dataclass(frozen=True)
class Reader:
    """An activation a consumer's weight reads: where the activity of channels is measured."""

    tensor: str
    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class Producer:
    node: str
    op_type: str
    ids: np.ndarray


@dataclass
class Group:
    """Producers whose output channels are pruned together, and the units they share."""

    producers: list[str]
    units: np.ndarray  # root channel ids, sorted
    reason: str | None  # why the group is left whole; None when it can be pruned

    @property
    def prunable(self) -> bool:
        return self.reason is None


@dataclass
class Analysis:
    model: Any
    channels: Channels
    groups: list[Group]
    slices: list[SliceUse]
    values: list[ValueUse]
    attrs: list[AttrUse]
    readers: list[Reader]
    constants: dict[str, np.ndarray]

    def keep_mask(self, ids: np.ndarray, removed: set[int]) -> np.ndarray:
        return np.array([self.channels.find(int(i)) not in removed for i in ids], dtype=bool)


@dataclass
class Walker:
    """The walk's state: what is known of each tensor, and every slice recorded so far."""

    graph: Any
    constants: dict[str, np.ndarray]
    shapes: dict[str, list[Dim] | None]
    opset: int
    ignore: set[str]
    channels: Channels = field(default_factory=Channels)
    layouts: dict[str, Layout] = field(default_factory=dict)
    producers: list[Producer] = field(default_factory=list)
    slices: list[SliceUse] = field(default_factory=list)
    values: list[ValueUse] = field(default_factory=list)
    attrs: list[AttrUse] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list)
    tied: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def rank(self, name: str) -> int | None:
        if name in self.constants:
            return int(self.constants[name].ndim)
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def shape(self, name: str) -> list[Dim] | None:
        if name in self.constants:
            return [int(d) for d in self.constants[name].shape]
        return self.shapes.get(name)

    def pin_layout(self, name: str, reason: str) -> None:
        layout = self.layouts.get(name)
        if layout is not None:
            self.channels.pin(layout.ids, reason)

    def refuse(self, node: Any, why: str) -> None:
        """The node's channels cannot be followed: pin every channel reaching it."""
        reason = f"{node.op_type} node `{node.name}`: {why}"
        for name in node.input:
            self.pin_layout(name, reason)

    def weight_ids(self, node: Any, name: str, axis: int, count: int) -> np.ndarray:
        """New output channels of a producer; nodes sharing one weight share its channels."""
        key = (name, axis)
        ids = self.tied.get(key)
        if ids is None or len(ids) != count:
            ids = self.channels.new(count, len(self.producers))
            self.tied[key] = ids
        self.producers.append(Producer(node.name, node.op_type, ids))
        return ids

    def consume(self, index: int, node: Any, axis: int, ids: np.ndarray, tensor: str) -> None:
        """A weight's input axis reads channels `ids` of activation `tensor`."""
        name = node.input[1]
        key = (name, axis)
        tied = self.tied.get(key)
        if tied is not None and len(tied) == len(ids):
            self.channels.union_arrays(tied, ids)
        else:
            self.tied[key] = ids
        self.slices.append(SliceUse(index, 1, axis, ids, "consumer"))
        layout = self.layouts[tensor]
        self.readers.append(Reader(tensor, layout.axis, layout.ids))


def analyze(model: Any, ignore_nodes: list[str] | None = None) -> Analysis:
    """Find the channel groups of an ONNX model (not modified; the analysis keeps a reference)."""
    from app.passes.structure_ops import walk

    walker = Walker(
        graph=model.graph,
        constants=_constants(model),
        shapes=_shapes(model),
        opset=_opset(model),
        ignore=set(ignore_nodes or []),
    )
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
        groups.append(Group(names, units, reasons[0] if reasons else None))
    return groups


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _constants(model: Any) -> dict[str, np.ndarray]:
    """Initializers (not overridable by a graph input) and `Constant` node values."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inputs = {i.name for i in graph.input}
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in inputs}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            value = helper.get_attribute_value(attr)
            if attr.name == "value":
                out[node.output[0]] = numpy_helper.to_array(value)
            elif attr.name in ("value_float", "value_floats"):
                out[node.output[0]] = np.asarray(value, dtype=np.float32)
            elif attr.name in ("value_int", "value_ints"):
                out[node.output[0]] = np.asarray(value, dtype=np.int64)
    return out


def _shapes(model: Any) -> dict[str, list[Dim] | None]:
    """Static dims (int), symbolic ones (str) or unknown (None) of every tensor inference sees."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a model inference rejects is walked with what it declares
        inferred = model
    graph = inferred.graph
    out: dict[str, list[Dim] | None] = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            out[info.name] = None
            continue
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        out[info.name] = dims
    return out
