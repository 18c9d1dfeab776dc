"""Build benchmark inputs for ONNX models: synthesized from the graph, or loaded from a dataset.

Synthesized inputs follow these rules:

- Shapes. A dynamic first dimension is the batch size. Other dynamic dimensions come from the
  shape given for that input (a full shape whose first entry, the batch dimension, is replaced by
  the batch size); without one they default to 128 for integer inputs (a sequence length) and 32
  for the others. Fixed dimensions are kept as the model declares them. An input whose rank the
  model does not declare needs a given shape.
- Float inputs are standard normal values from a seeded generator.
- Integer inputs get values chosen by name (case-insensitive): a name containing "mask" gets ones,
  "token_type" or "segment" gets zeros, "position" gets 0, 1, 2, ... along the last axis.
  Float inputs named like a mask also get ones.
- Other integer inputs that feed, directly or through Cast/Unsqueeze/Reshape, the indices of a
  Gather over a constant table (an embedding) get uniform ids below the table's row count (the
  vocabulary size); any other integer input gets uniform values in [0, 2).
- Boolean inputs are True.
- Scalar (rank-0) inputs: integer scalars named like "sr" or "sample_rate" are 16000 (a sample
  rate); other scalars are 1.

Dataset inputs come from an .npz archive: an array named like a model input binds to it; a
single-input model also takes the one array that is not "labels", whatever its name.
"""

from __future__ import annotations

import re
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

_DEFAULT_INT_DIM = 128
_DEFAULT_OTHER_DIM = 32
_SAMPLE_RATE = 16000
_SAMPLE_RATE_NAME = re.compile(r"(?:^|[^a-z])(?:sr|sample_?rate|sampling_?rate)(?:$|[^a-z])")
# Ops that carry token ids unchanged in value on their first input.
_PASS_THROUGH_OPS = frozenset({"Cast", "Unsqueeze", "Reshape", "Squeeze", "Flatten", "Identity"})
# Ops between a stored table and the Gather that reads it (quantized embeddings are dequantized).
_TABLE_OPS = frozenset({"DequantizeLinear", "Cast", "Identity"})
_MAX_TABLE_HOPS = 8


def onnx_input_specs(model_path: Path) -> list[dict]:
    """List the graph inputs that are not initializers.

    Returns:
        One ``{"name", "dtype", "shape"}`` dict per input, in graph order. ``dtype`` is a numpy
        dtype name; ``shape`` holds ints for fixed dims and strings for symbolic or unknown
        ones, or is None when the model declares no rank.
    """
    return _specs(_load(model_path).graph)


def synthesize_inputs(
    model_path: Path,
    batch_size: int,
    input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Synthesize one array per model input following the module's rules.

    Raises:
        ValueError: the batch size is not positive, ``input_shapes`` names an unknown input or
            has the wrong rank, or an input has an unsupported type or no declared rank.
    """
    graph = _load(model_path).graph
    return synthesize_from_specs(
        _specs(graph), batch_size, input_shapes, seed, vocab=_embedding_rows(graph)
    )


def synthesize_from_specs(
    specs: list[dict],
    batch_size: int,
    input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
    vocab: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Synthesize inputs from `{name, dtype, shape}` specs (any runtime) by the module's rules;
    `vocab` bounds the ids of inputs known to index an embedding table."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    shapes = input_shapes or {}
    unknown = sorted(set(shapes) - {spec["name"] for spec in specs})
    if unknown:
        raise ValueError(f"input_shapes names inputs the model does not have: {unknown}")
    vocab = vocab or {}
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        name = spec["name"]
        kind = _kind(np.dtype(spec["dtype"]), name)
        default = _DEFAULT_INT_DIM if kind == "int" else _DEFAULT_OTHER_DIM
        shape = _resolve_shape(spec, batch_size, shapes.get(name), default)
        arrays[name] = _values(name, np.dtype(spec["dtype"]), kind, shape, vocab.get(name), rng)
    return arrays


def dataset_inputs(
    npz_path: Path, input_names: list[str], limit: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Load an .npz dataset and bind its arrays to the model's inputs.

    Returns:
        The arrays keyed by input name, and the ``labels`` array or None; both cut to the first
        ``limit`` samples when a limit is given.

    Raises:
        ValueError: the file is not an .npz archive, holds object arrays, lacks an array for an
            input, or its arrays disagree on the number of samples.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    npz_path = Path(npz_path)
    headers = _npz_headers(npz_path)
    names = [n for n in headers if n != "labels"]
    chosen = {name: name for name in input_names if name in headers}
    missing = [name for name in input_names if name not in chosen]
    if missing and len(input_names) == 1 and len(names) == 1:
        chosen, missing = {input_names[0]: names[0]}, []
    if missing:
        raise ValueError(
            f"dataset {npz_path.name} has no array for model input(s) {missing}; it holds "
            f"{sorted(headers)}. Name each array after a model input ('labels' holds labels)."
        )
    wanted = [*chosen.values(), *(["labels"] if "labels" in headers else [])]
    counts = {k: headers[k][0][0] for k in wanted if headers[k][0]}
    if len(set(counts.values())) > 1:
        raise ValueError(f"dataset arrays disagree on the number of samples: {counts}")
    arrays = _read_npz(npz_path, wanted, limit)
    bound = {name: arrays[member] for name, member in chosen.items()}
    return bound, arrays.get("labels")


def _load(model_path: Path) -> onnx.ModelProto:
    # Weights are not needed: initializer dims are stored in the graph proto itself.
    import onnx  # here, not at the top: a memory probe of an ONNX model loads no more than ORT

    return onnx.load(str(model_path), load_external_data=False)


def _specs(graph: onnx.GraphProto) -> list[dict]:
    from onnx import helper

    initializers = {init.name for init in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise ValueError(f"input {value.name!r} is not a tensor; only tensor inputs work")
        tensor_type = value.type.tensor_type
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        except KeyError as exc:
            raise ValueError(f"input {value.name!r} has no known element type") from exc
        shape = [_dim(d) for d in tensor_type.shape.dim] if tensor_type.HasField("shape") else None
        specs.append({"name": value.name, "dtype": np.dtype(dtype).name, "shape": shape})
    return specs


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int | str:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return dim.dim_param or "?"


def _kind(dtype: np.dtype, name: str) -> str:
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "iu":
        return "int"
    if dtype.kind == "f" or "float" in dtype.name:
        return "float"
    raise ValueError(f"input {name!r} has type {dtype.name}, which cannot be synthesized")


def _resolve_shape(spec: dict, batch_size: int, given: list[int] | None, default: int) -> list[int]:
    name, declared = spec["name"], spec["shape"]
    if declared is None:
        if given is None:
            raise ValueError(f"input {name!r} declares no shape: give it in input_shapes")
        declared = ["?"] * len(given)
    if given is not None and len(given) != len(declared):
        raise ValueError(
            f"input_shapes[{name!r}] has {len(given)} dims; the model's input has {len(declared)}"
        )
    dims = []
    for axis, dim in enumerate(declared):
        if isinstance(dim, int):
            dims.append(dim)
        elif axis == 0:
            dims.append(batch_size)
        elif given is not None:
            if int(given[axis]) < 1:
                raise ValueError(f"input_shapes[{name!r}] has a non-positive dim: {given}")
            dims.append(int(given[axis]))
        else:
            dims.append(default)
    return dims


def _values(
    name: str,
    dtype: np.dtype,
    kind: str,
    shape: list[int],
    vocab: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    lowered = name.lower()
    if not shape:
        return np.asarray(_scalar(lowered, kind), dtype=dtype)
    if kind == "bool" or "mask" in lowered:
        return np.ones(shape, dtype=dtype)
    if kind == "float":
        return rng.standard_normal(shape).astype(dtype)
    if "token_type" in lowered or "segment" in lowered:
        return np.zeros(shape, dtype=dtype)
    if "position" in lowered:
        return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
    return rng.integers(0, vocab or 2, size=shape).astype(dtype)


def _scalar(lowered_name: str, kind: str) -> int | bool:
    if kind == "bool":
        return True
    if kind == "int" and _SAMPLE_RATE_NAME.search(lowered_name):
        return _SAMPLE_RATE
    return 1


def _embedding_rows(graph: onnx.GraphProto) -> dict[str, int]:
    """Map each graph input to the row count of the smallest constant table it indexes."""
    tables = {init.name: list(init.dims) for init in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    producers = {}
    for node in graph.node:
        for index, tensor in enumerate(node.input):
            consumers[tensor].append((node, index))
        producers.update(dict.fromkeys(node.output, node))
        if node.op_type == "Constant":
            tables.update(
                (node.output[0], list(a.t.dims)) for a in node.attribute if a.name == "value"
            )
    rows = {}
    for value in graph.input:
        bounds = _index_bounds(value.name, consumers, producers, tables)
        if bounds:
            rows[value.name] = min(bounds)
    return rows


def _index_bounds(
    name: str,
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    producers: dict[str, onnx.NodeProto],
    tables: dict[str, list[int]],
) -> list[int]:
    bounds, frontier, seen = [], [name], set()
    while frontier:
        tensor = frontier.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for node, index in consumers.get(tensor, []):
            if node.op_type in _PASS_THROUGH_OPS and index == 0:
                frontier.extend(node.output)
            elif node.op_type == "Gather" and index == 1:
                dims = _table_dims(node.input[0], producers, tables)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if dims and -len(dims) <= axis < len(dims):
                    bounds.append(dims[axis])
            elif node.op_type == "EmbedLayerNormalization" and index in (0, 1):
                # ORT's fused embedding: ids at inputs 0/1 index the tables at inputs 2/3.
                dims = _table_dims(node.input[index + 2], producers, tables)
                if dims:
                    bounds.append(dims[0])
    return bounds


def _table_dims(
    name: str, producers: dict[str, onnx.NodeProto], tables: dict[str, list[int]]
) -> list[int] | None:
    for _ in range(_MAX_TABLE_HOPS):
        if name in tables:
            return tables[name]
        node = producers.get(name)
        if node is None or node.op_type not in _TABLE_OPS:
            return None
        name = node.input[0]
    return None


def _npz_headers(npz_path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's (shape, dtype), read from the .npy headers alone; object arrays refused
    (they would need pickle, which would run code from the upload)."""
    try:
        archive = zipfile.ZipFile(npz_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{npz_path.name} is not an .npz archive") from exc
    headers = {}
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            with archive.open(info) as fh:
                shape, dtype = _npy_header(fh)
            if dtype.hasobject:
                raise ValueError(
                    f"{npz_path.name}: array {key!r} cannot be loaded: object arrays need pickle"
                )
            headers[key] = (shape, dtype)
    return headers


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return (shape if not fortran else (-1,)), dtype


def _read_npz(npz_path: Path, names: list[str], limit: int | None) -> dict[str, np.ndarray]:
    """The named arrays, each cut to its first `limit` rows by reading only those bytes."""
    arrays = {}
    with zipfile.ZipFile(npz_path) as archive:
        for name in names:
            with archive.open(f"{name}.npy") as fh:
                shape, dtype = _npy_header(fh)
                if shape == (-1,):  # Fortran order: rows are not contiguous, read it whole
                    arrays[name] = np.load(npz_path, allow_pickle=False)[name][:limit]
                    continue
                rows = (
                    shape[0]
                    if shape and limit is None
                    else min(limit or 0, shape[0] if shape else 0)
                )
                count = int(np.prod(shape[1:], dtype=np.int64)) * rows if shape else 1
                data = fh.read(count * dtype.itemsize)
                array = np.frombuffer(data, dtype=dtype, count=count).copy()
                arrays[name] = array.reshape((rows, *shape[1:]) if shape else ())
    return arrays


def onnx_vocab(model_path: Path) -> dict[str, int]:
    """Inputs of an ONNX model that index an embedding table, with the table's row count."""
    return _embedding_rows(_load(model_path).graph)
