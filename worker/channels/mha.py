"""Heads of a packed `torch.nn.MultiheadAttention` (see structure_reshape).

Its exports project q, k and v with one in_proj (3E outputs), reshape them to (..., 3, E), pick
q, k and v with Gather and fold the heads into the batch axis: `view(L, B * heads, width)` with
a run-time `Mul(B, heads)` in the target, then unfold them (`view(B, heads, L, width)`). This
rule follows exactly that chain from the (..., 3, E) reshape: each head's q, k and v channels
become one unit on the heads axis of the unfolded tensors (the attention MatMuls then join q,
k and v heads as for BERT-style attention), and the `heads` factor of the Mul and the `heads`
and `E` entries of the targets are edited. Any step that differs leaves the chain to the
generic rules, which refuse it: nothing is guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.channels.reshape_targets import edit_slot, resolve_shape, target_shape
from worker.channels.state import Dim, Layout, ValueUse, Walker, node_attr

SHAPE_OPS = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Cast", "Identity"})


def packed_rule(w: Walker, index: int, node: Any) -> bool:
    """Follow a packed q/k/v reshape through to the unfolded heads; False if it is not one."""
    lx, shape = w.layouts[node.input[0]], w.shape(node.input[0])
    found = target_shape(w, index, node)
    if shape is None or found is None or lx.axis != len(shape) - 1 or len(lx.ids) % 3:
        return False
    target, where = found
    c, width = lx.axis, len(lx.ids) // 3
    copy_zero = not int(node_attr(node, "allowzero", 0))
    resolved = resolve_shape(target, shape, w.shape(node.output[0]), c, copy_zero)
    if resolved is None or resolved[c:] != [3, width] or where[c + 1] is None:
        return False
    parts = _parts(w, node.output[0], c, c + 1, len(shape) + 1)
    if parts is None:
        return False
    packed = lx.ids.reshape(3, width)
    plans = [_fold(w, name, axis) for name, axis in parts]
    if any(p is None for p in plans):
        return False
    claims: set[int] = set()
    outputs: list[tuple[str, int]] = []
    for plan in plans:
        assert plan is not None
        end = _unfold(w, plan)
        if end is None:
            return False
        outputs.append(end[:2])
        claims |= plan["claims"] | end[2]
    heads = plans[0]["heads"]  # type: ignore[index]
    if any(p["heads"] != heads for p in plans):  # type: ignore[index]
        return False
    # Everything checked: record the unit joins, the edits, and the heads layouts.
    per_head = packed.reshape(3, heads, -1)
    for part in per_head:
        for row in part:
            w.channels.union_arrays(np.repeat(row[:1], len(row)), row)
    edit_slot(w, index, where[c + 1], width, packed[0])
    for k, plan in enumerate(plans):
        assert plan is not None
        head_ids = per_head[k][:, 0]
        mul, position, path = plan["mul"]
        w.values.append(ValueUse(mul, position, 0, head_ids, plan["node"], path))
        slot, reader = plan["unfold_slot"], plan["unfold"]
        w.values.append(ValueUse(slot[0], slot[1], slot[2], head_ids, reader))
        name, axis = outputs[k]
        w.layouts[name] = Layout(axis, head_ids)
    w.claimed |= claims
    return True


def _readers(w: Walker, name: str) -> list[int]:
    return [i for i, n in enumerate(w.graph.node) if name in n.input]


def _sole_reader(w: Walker, name: str) -> Any | None:
    found = _readers(w, name)
    if len(found) != 1 or w.reads.get(name, 0) != 1:
        return None
    return found[0]


def _parts(w: Walker, name: str, p: int, e: int, rank: int) -> list[tuple[str, int]] | None:
    """From (..., 3, E): through Unsqueeze/Transpose/Squeeze to three Gathers of q, k and v;
    their outputs and the E axis in them."""
    while True:
        found = _readers(w, name)
        if len(found) == 3 and w.reads.get(name, 0) == 3:
            break
        reader = _sole_reader(w, name)
        if reader is None:
            return None
        node = w.graph.node[reader]
        if node.op_type == "Identity":
            pass
        elif node.op_type == "Transpose":
            perm = node_attr(node, "perm")
            if perm is None:
                return None
            p, e = list(perm).index(p), list(perm).index(e)
        elif node.op_type in ("Unsqueeze", "Squeeze"):
            axes = w.ints(node, 1, "axes")
            if axes is None:
                return None
            if node.op_type == "Unsqueeze":
                out_rank = rank + len(axes)
                kept = [j for j in range(out_rank) if j not in {a % out_rank for a in axes}]
                p, e, rank = kept[p], kept[e], out_rank
            else:
                dropped = {a % rank for a in axes}
                shape = w.shape(node.input[0])
                if p in dropped or e in dropped or shape is None:
                    return None
                if any(shape[a] != 1 for a in dropped):
                    return None
                p -= sum(a < p for a in dropped)
                e -= sum(a < e for a in dropped)
                rank -= len(dropped)
        else:
            return None
        name = node.output[0]
    outputs: dict[int, tuple[str, int]] = {}
    for reader in found:
        node = w.graph.node[reader]
        index = w.const(node.input[1]) if node.op_type == "Gather" else None
        if index is None or index.ndim != 0 or int(node_attr(node, "axis", 0)) % rank != p:
            return None
        outputs[int(index) % 3] = (node.output[0], e if e < p else e - 1)
    return [outputs[k] for k in range(3)] if len(outputs) == 3 else None


def dim_source(w: Walker, name: str) -> Dim:
    """The dim a 1-element shape value reads (`Shape(t)[i]`, squeezed, cast...), else None."""
    for _ in range(8):
        maker = w.made_by.get(name)
        if maker is None:
            return None
        node = w.graph.node[maker]
        if node.op_type == "Shape":
            shape = w.shape(node.input[0])
            if shape is None:
                return None
            rank = len(shape)
            start, end = int(node_attr(node, "start", 0)), int(node_attr(node, "end", rank))
            start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
            return shape[start] if end - start == 1 else None
        if node.op_type not in SHAPE_OPS:
            return None
        name = node.input[0]
    return None


def _pieces(w: Walker, name: str) -> list[tuple[int, str, int | None]] | None:
    """Entries of a Concat-built (or constant) target: (piece input index, piece, value)."""
    maker = w.made_by.get(name)
    if maker is None or w.graph.node[maker].op_type != "Concat":
        return None
    out: list[tuple[int, str, int | None]] = []
    for k, piece in enumerate(w.graph.node[maker].input):
        value, shape = w.const(piece), w.shape(piece)
        if value is not None:
            out += [(k, piece, int(v)) for v in value.reshape(-1)]
        elif shape == [1]:
            out.append((k, piece, None))
        else:
            return None
    return out


def _entry_is(w: Walker, entry: tuple[int, str, int | None], dim: Dim) -> bool:
    """Whether a target entry is known to equal the input dim `dim`."""
    value = entry[2]
    if value is not None:
        return isinstance(dim, int) and value == dim
    return dim is not None and dim_source(w, entry[1]) == dim


def _fold(w: Walker, name: str, e: int) -> dict[str, Any] | None:
    """`Reshape(q, (..., B * heads, width))`, the heads from a constant factor of a Mul."""
    shape = w.shape(name)
    reader = _sole_reader(w, name)
    if shape is None or reader is None or e != len(shape) - 1 or e < 1:
        return None
    node = w.graph.node[reader]
    pieces = _pieces(w, node.input[1]) if node.op_type == "Reshape" else None
    if pieces is None or len(pieces) != len(shape) or node.input[0] != name:
        return None
    width, count = pieces[e][2], shape[e]
    if not isinstance(width, int) or not isinstance(count, int) or width < 2 or count % width:
        return None
    if not all(_entry_is(w, pieces[i], shape[i]) for i in range(e - 1)):
        return None
    heads = count // width
    concat = w.made_by[node.input[1]]
    mul = _heads_factor(w, pieces[e - 1], shape[e - 1], heads, concat)
    if heads < 2 or mul is None:
        return None
    return {
        "node": reader,
        "heads": heads,
        "width": width,
        "outer": shape[e - 1],
        "mul": mul,
        "axis": e - 1,
        "claims": set(),
    }


def _heads_factor(
    w: Walker, entry: tuple[int, str, int | None], outer: Dim, heads: int, concat: int
) -> tuple[int, int, tuple[int, ...]] | None:
    """(Mul node, input, nodes from it to the target) of the constant `heads` in an entry
    `Mul(B, heads)` of a Concat-built target, B the outer dim."""
    if entry[2] is not None or outer is None:
        return None
    name, path = entry[1], [concat]
    for _ in range(3):
        maker = w.made_by.get(name)
        if maker is None:
            return None
        node = w.graph.node[maker]
        if node.op_type == "Mul" and len(node.input) == 2 and len(node.output) == 1:
            for k in (0, 1):
                value = w.const(node.input[k])
                factor = value is not None and value.size == 1 and int(value.reshape(-1)[0])
                if factor == heads and dim_source(w, node.input[1 - k]) == outer:
                    return maker, k, tuple(reversed(path))
            return None
        if node.op_type not in ("Reshape", "Unsqueeze", "Squeeze", "Identity"):
            return None
        if len(node.output) != 1:
            return None
        path.append(maker)
        name = node.input[0]
    return None


def _unfold(w: Walker, plan: dict[str, Any]) -> tuple[str, int, set[int]] | None:
    """Through Transposes to `Reshape(x, (B, heads, ..., width))`: its output, the heads axis,
    and the nodes that a run-time transpose of the last two axes (for k) adds to the chain."""
    fold = w.graph.node[plan["node"]]
    name, f = fold.output[0], plan["axis"]
    shape = w.shape(name)
    if shape is None:
        return None
    while True:
        reader = _sole_reader(w, name)
        if reader is None:
            return None
        node = w.graph.node[reader]
        if node.op_type not in ("Transpose", "Identity"):
            break
        perm = node_attr(node, "perm") if node.op_type == "Transpose" else range(len(shape))
        if perm is None:
            return None
        f, name = list(perm).index(f), node.output[0]
    shape = w.shape(name)
    target = _pieces(w, node.input[1]) if node.op_type == "Reshape" else None
    if shape is None or target is None or len(target) != len(shape) + 1 or f + 1 >= len(target):
        return None
    if target[f + 1][2] != plan["heads"] or not _entry_is(w, target[f], plan["outer"]):
        return None
    before = all(_entry_is(w, target[i], shape[i]) for i in range(f))
    after = all(_entry_is(w, target[i + 1], shape[i]) for i in range(f + 1, len(shape)))
    if not before or not after:
        return None
    concat = w.made_by[node.input[1]]
    slot = None
    position = 0
    for k, piece in enumerate(w.graph.node[concat].input):
        size = w.const(piece).size if w.const(piece) is not None else 1  # type: ignore[union-attr]
        if position <= f + 1 < position + size:
            slot = (concat, k, f + 1 - position)
        position += size
    if slot is None or w.const(w.graph.node[concat].input[slot[1]]) is None:
        return None
    plan["unfold"], plan["unfold_slot"] = reader, slot
    out = node.output[0]
    swapped = _runtime_swap(w, out, f + 1)
    if swapped is not None:
        return swapped[0], f + 1, swapped[1]
    return out, f + 1, set()


def _runtime_swap(w: Walker, name: str, heads_axis: int) -> tuple[str, set[int]] | None:
    """`x.transpose(-1, -2)` of a rank-4 tensor written with its own shape: Shape(x) sliced into
    `Reshape(x, (-1, d2, d3))`, Transpose (0, 2, 1), `Reshape(., (d0, d1, d3, d2))`. Its
    output and nodes; the heads axis (< 2) stays where it is."""
    shape = w.shape(name)
    found = _readers(w, name)
    if shape is None or len(shape) != 4 or heads_axis >= 2 or len(found) != 2:
        return None
    nodes = [w.graph.node[i] for i in found]
    kinds = sorted(n.op_type for n in nodes)
    if kinds != ["Reshape", "Shape"] or w.reads.get(name) != 2:
        return None
    shape_node = next(n for n in nodes if n.op_type == "Shape")
    first = next(n for n in nodes if n.op_type == "Reshape")
    if node_attr(shape_node, "start", 0) != 0 or node_attr(shape_node, "end") is not None:
        return None
    if first.input[0] != name:
        return None
    claims = {found[0], found[1]}
    dims = shape_node.output[0]
    symbols = ["d0", "d1", "d2", "d3"]

    def entries(target: str) -> list[Any] | None:
        maker = w.made_by.get(target)
        if maker is None or w.graph.node[maker].op_type != "Concat":
            return None
        claims.add(maker)
        out: list[Any] = []
        for piece in w.graph.node[maker].input:
            value = w.const(piece)
            if value is not None:
                out += [int(v) for v in value.reshape(-1)]
                continue
            slicer = w.made_by.get(piece)
            node = w.graph.node[slicer] if slicer is not None else None
            if node is None or node.op_type != "Slice" or node.input[0] != dims:
                return None
            starts, ends = w.const(node.input[1]), w.const(node.input[2])
            extra = [w.const(n) for n in node.input[3:] if n]
            if starts is None or ends is None or len(extra) != len(node.input[3:]):
                return None
            if any(v is None for v in extra):
                return None
            if len(extra) >= 1 and [int(v) for v in extra[0].reshape(-1)] != [0]:  # type: ignore[union-attr]
                return None
            if len(extra) == 2 and [int(v) for v in extra[1].reshape(-1)] != [1]:  # type: ignore[union-attr]
                return None
            claims.add(slicer)  # type: ignore[arg-type]
            out += symbols[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]))]
        return out

    if entries(first.input[1]) != [-1, "d2", "d3"]:
        return None
    transpose = _sole_reader(w, first.output[0])
    if transpose is None:
        return None
    node = w.graph.node[transpose]
    if node.op_type != "Transpose" or list(node_attr(node, "perm") or []) != [0, 2, 1]:
        return None
    last = _sole_reader(w, node.output[0])
    if last is None:
        return None
    second = w.graph.node[last]
    if second.op_type != "Reshape" or second.input[0] != node.output[0]:
        return None
    if entries(second.input[1]) != ["d0", "d1", "d3", "d2"]:
        return None
    claims |= {transpose, last}
    internal = [o for i in claims - {last} for o in w.graph.node[i].output]
    for out in internal:
        if not set(_readers(w, out)) <= claims or w.reads.get(out, 0) != len(_readers(w, out)):
            return None
    return second.output[0], claims
