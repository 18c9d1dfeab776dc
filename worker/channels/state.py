"""Channel dependency analysis on ONNX graphs: which weight slices must be removed together.

Every output channel of a *producer* (a Conv, ConvTranspose, Gemm or MatMul over a constant
weight) gets a channel id. The walk follows each id, in topological order, through the ops that
keep channels apart (activations, batch-norm, pooling, biases and per-channel constants,
transposes, concatenation offsets, flatten/reshape into a linear layer, depthwise convolutions)
down to the *consumers* whose weights read it (a Conv's input channels, a Gemm's or MatMul's
input rows). Ops that join activations entry by entry (a residual `Add`, the `Mul` of a gate,
the equal halves of a GLU `Split`) join their channel ids: those channels must go together.
A reshape that splits the channel axis into (heads, width) joins each head's channels, and the
attention MatMuls join the q, k and v heads, so that a unit is a whole attention head. The
joined ids form *units* (union-find components); a *group* is the set of producers whose
channels share units, and pruning removes whole units of a group.

Anything the walk does not understand *pins* the ids it touches, with the reason: an unknown
op, a reshape that moves the channel axis, a normalization or softmax over it, a grouped
convolution, a graph output, a Shape that reads the channel count, a tensor added to fixed
channels. A group with a pinned unit is never pruned: the analysis may refuse, but what it
allows stays a valid graph that computes what the original computes with the removed channels
zeroed at their consumers (`structure_rewrite.rewrite(..., "mask")`); the passes check that on
real inputs.

Modules: structure (this: state, union-find, groups), structure_graph (constants, shapes),
structure_ops (producers, consumers and the rule table), structure_moves (ops that move
channels), structure_reshape (reshapes, attention), structure_mha (packed MultiheadAttention
heads folded into the batch axis), structure_rewrite (apply a removal),
structure_select (which units), structure_activity (measured activations). Heavy imports
(onnx, onnxruntime) happen inside functions: the API imports these modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from onnx import helper

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
    """Entry `position` of a 1-D constant (a reshape's target) = count of kept `ids`. With a
    `reader`, the constant is a piece of the Concat `node` that builds the target of reshape
    `reader`: that reader then gets its own copy of the Concat. With a `path` too, the constant
    is an input of node `node` (a `Mul(B, heads)`) whose output reaches `reader` through the
    nodes `path`, each reading the previous one: the reader gets its own copy of that chain."""

    node: int
    input: int
    position: int
    ids: np.ndarray
    reader: int | None = None
    path: tuple[int, ...] = ()


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
    width: int = 1  # output channels of a producer per unit (an attention head's width)

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
    made_by: dict[str, int] = field(default_factory=dict)  # tensor -> index of its node
    reads: dict[str, int] = field(default_factory=dict)  # tensor -> readers (graph outputs too)
    claimed: set[int] = field(default_factory=set)  # nodes a rule has followed ahead of the walk

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

    def ints(self, node: Any, position: int, attr: str) -> list[int] | None:
        """An int list given as constant input `position` or, in old opsets, attribute `attr`."""
        if len(node.input) > position and node.input[position]:
            value = self.const(node.input[position])
            return None if value is None else [int(v) for v in value.reshape(-1)]
        found = node_attr(node, attr)
        return None if found is None else [int(v) for v in found]

    def set_all(self, node: Any, layout: Layout) -> None:
        for name in node.output:
            if name:
                self.layouts[name] = layout

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


def node_attr(node: Any, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def dims_product(dims: list[Any]) -> int:
    return int(math.prod(int(d) for d in dims))
