"""ONNX files with external data, inside the sandbox: extract an uploaded archive, check every
external reference, load and save keeping external data, and package a result as an archive.

A model over 2 GB cannot be one protobuf, so it arrives as a zip/tar of one `.onnx` and its data
files (checked first by `app/ml_models/archives.py` at the API, re-checked here before a byte is
written). Extraction goes only into the folder given (the job's or inspection's scratch), with
exclusive, no-follow creates. Every `location` in the model, wherever a tensor can sit
(initializers, sparse initializers, Constant and other tensor attributes, subgraphs, functions,
training graphs) must name a regular, single-link file inside the extracted folder, reached
without a symlink, and its bytes must exist: onnx and ONNX Runtime would otherwise open any path
the model names. A bare `.onnx` may reference nothing outside itself.

Results are saved with external data once their tensors pass the threshold (env
`MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES`, default 1.8 GB, below the 2 GiB protobuf limit; 0
forces it, which is how the tests run the large-model path on a tiny model).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, version_converter

from app.core.errors import JobFailure, Unprocessable
from app.ml_models import archives

THRESHOLD_ENV = "MODELPRESS_EXTERNAL_DATA_THRESHOLD_BYTES"
DEFAULT_THRESHOLD = 1_800_000_000
DATA_SUFFIX = ".data"
MODEL_MEMBER = "model.onnx"  # the `.onnx` inside a result archive (locations are relative)
EXTRACTED_DIR = "model"  # beside the staged archive: input/model/<the archive's model folder>
HELD_BYTES = 64 * 1024  # initializers past this sit out an opset conversion (`convert_opset`)
_KEYS = frozenset({"location", "offset", "length", "checksum"})
_NUMBER = re.compile(r"\d{1,19}")


def threshold() -> int:
    """Tensor bytes above which a saved model keeps its weights in an external data file."""
    raw = os.environ.get(THRESHOLD_ENV, "")
    return int(raw) if raw.strip().isdigit() else DEFAULT_THRESHOLD


# ---------------------------------------------------------------- archives in


def is_archive(path: Path) -> bool:
    with path.open("rb") as fh:
        return archives.sniff(fh.read(archives.BLOCK)) is not None


def _create(path: Path) -> int:
    """A new file, never an existing one or through a link (O_EXCL | O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o600)


def _write_member(dest: Path, rel: str, chunks: Iterator[bytes]) -> None:
    target = dest.joinpath(*rel.split("/"))
    for parent in reversed(target.parents):
        if parent == dest or dest not in parent.parents:
            continue
        if not parent.exists():
            parent.mkdir(mode=0o700)
        elif parent.is_symlink() or not parent.is_dir():
            raise JobFailure("archive_traversal", f"Archive member {rel!r} escapes its folder.")
    fd = _create(target)
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)


def _tar_chunks(fh: Any, member: archives.Member) -> Iterator[bytes]:
    fh.seek(member.offset)
    left = member.size
    while left:
        chunk = fh.read(min(archives.CHUNK, left))
        if not chunk:
            raise Unprocessable(f"{member.name!r} is truncated.", code="archive_malformed")
        left -= len(chunk)
        yield chunk


def extract_archive(path: Path, dest: Path) -> tuple[Path, archives.Listing]:
    """Unpack an ONNX archive into the empty folder `dest`, streamed, re-checking the structure
    first; returns the `.onnx` path and the listing. The model's folder becomes `dest` itself.

    Raises:
        JobFailure: the archive's `archive_*` code (the same refusal the API would give).
    """
    dest.mkdir(mode=0o700)
    try:
        with path.open("rb") as fh:
            kind = archives.sniff(fh.read(archives.BLOCK))
        if kind == "zip":
            zf, listing = archives.open_zip(path)
            with zf:
                for member in listing.files:
                    _write_member(
                        dest, listing.relative(member), archives.stream_zip_member(zf, member)
                    )
        else:
            listing = archives.list_tar(path)
            with path.open("rb") as fh:
                for member in listing.files:
                    _write_member(dest, listing.relative(member), _tar_chunks(fh, member))
    except Unprocessable as exc:
        raise JobFailure(exc.code, str(exc)) from exc
    except FileExistsError as exc:
        raise JobFailure("archive_duplicate", f"An archive member repeats: {exc}") from exc
    return dest.joinpath(*listing.relative(listing.model).split("/")), listing


def stage(path: Path) -> tuple[Path, bool]:
    """The `.onnx` to open for an uploaded ONNX file: itself, or, for an archive, the model
    extracted beside it (then every file of the archive must be referenced by the model).
    Returns (path, bundled)."""
    try:
        archive = is_archive(path)
        model = None if archive else onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a missing file, protobuf's DecodeError...: a hostile upload
        raise JobFailure("model_rejected", f"Not a loadable ONNX model: {exc}") from exc
    if model is not None:
        refuse_external(model)
        return path, False
    model_path, listing = extract_archive(path, path.parent / EXTRACTED_DIR)
    model = load_model(model_path, bundled=True, load_data=False)
    used = check_external_refs(model, model_path.parent)
    extra = sorted(listing.relative(m) for m in listing.files if m != listing.model)
    unused = [name for name in extra if name not in used]
    if unused:
        raise JobFailure(
            "archive_unexpected_member",
            f"Archive member(s) {unused[:5]} are not external data of the model.",
        )
    return model_path, True


# ---------------------------------------------------------------- references


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: NodeProto) -> Iterator[TensorProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.TENSOR or attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])]:
            yield sparse.values
            yield sparse.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model, wherever ONNX lets one sit."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def has_external_data(model: ModelProto) -> bool:
    return any(_is_external(t) for t in all_tensors(model))


def refuse_external(model: ModelProto) -> None:
    """A bare `.onnx` may not reference any file (it would be read from wherever it points).

    Raises:
        JobFailure: `external_data_not_supported`.
    """
    if has_external_data(model):
        raise JobFailure(
            "external_data_not_supported",
            "The model keeps tensors in external data files: upload a zip or tar holding the "
            "`.onnx` and those files, or one self-contained file.",
        )


def _entries(tensor: TensorProto) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _KEYS or entry.key in found:
            raise JobFailure(
                "external_data_path",
                f"Tensor {tensor.name[:100]!r} has an unexpected external data key {entry.key!r}.",
            )
        found[entry.key] = entry.value
    for key in ("offset", "length"):
        if key in found and not _NUMBER.fullmatch(found[key]):
            raise JobFailure("external_data_path", f"Tensor {tensor.name[:100]!r}: bad {key}.")
    return found


def _resolve(location: str, base: str, tensor: str) -> str:
    """The real path of `location` under `base`, refused unless it is a plain relative path to a
    regular single-link file reached without any symlink."""
    bad = (
        not location
        or "\x00" in location
        or "\\" in location
        or ":" in location
        or location.startswith("/")
        or any(p in ("", ".", "..") for p in location.split("/"))
    )
    joined = os.path.join(base, *location.split("/")) if not bad else ""
    if bad or os.path.realpath(joined) != joined:
        raise JobFailure(
            "external_data_path",
            f"Tensor {tensor[:100]!r} points outside the model's folder ({location[:200]!r}).",
        )
    try:
        info = os.lstat(joined)
    except OSError as exc:
        raise JobFailure(
            "external_data_path", f"Tensor {tensor[:100]!r}: {location[:200]!r} is missing."
        ) from exc
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise JobFailure(
            "external_data_path", f"{location[:200]!r} is not a regular single-link file."
        )
    return joined


def check_external_refs(model: ModelProto, base_dir: Path) -> set[str]:
    """Every external reference of `model` checked against the folder `base_dir`; returns the
    locations used (relative, as written).

    Raises:
        JobFailure: `external_data_path` for a location outside the folder, a link, a missing
            file, unknown keys or a range past the file's end.
    """
    base = os.path.realpath(base_dir)
    used: set[str] = set()
    for tensor in all_tensors(model):
        if not _is_external(tensor):
            continue
        entries = _entries(tensor)
        location = entries.get("location", "")
        real = _resolve(location, base, tensor.name)
        offset = int(entries.get("offset", "0"))
        size = os.stat(real).st_size
        length = int(entries.get("length", str(max(size - offset, 0))))
        if offset + length > size:
            raise JobFailure(
                "external_data_path",
                f"Tensor {tensor.name[:100]!r} reads past the end of {location[:200]!r}.",
            )
        used.add(location)
    return used


# ---------------------------------------------------------------- load / save


def load_model(path: Path, *, bundled: bool = True, load_data: bool = True) -> ModelProto:
    """Load an ONNX file with its references checked first: inside its own folder when the model
    came from an archive or a pass (`bundled`), none at all for a bare upload. `load_data` reads
    the external tensors into the proto (needed to change weights; not to read the graph)."""
    model = onnx.load(str(path), load_external_data=False)
    if not bundled:
        refuse_external(model)
        return model
    if has_external_data(model):
        check_external_refs(model, path.parent)
        if load_data:
            onnx.load_external_data_for_model(model, str(path.parent))
    return model


def tensor_bytes(model: ModelProto) -> int:
    """Bytes of tensor data the model holds in the proto (what the 2 GiB limit is about)."""
    total = 0
    for tensor in all_tensors(model):
        total += len(tensor.raw_data) + 4 * (len(tensor.float_data) + len(tensor.int32_data))
        total += 8 * (len(tensor.int64_data) + len(tensor.double_data) + len(tensor.uint64_data))
    return total


def needs_external(model: ModelProto) -> bool:
    return tensor_bytes(model) > threshold()


def save_model(model: ModelProto, path: Path, *, external: bool | None = None) -> None:
    """Save `model` as `path`, its tensors in one `<name>.data` file beside it when `external`
    (default: when they pass the threshold), so that no save fails at the protobuf limit. The
    in-memory `model` is left as it was (its tensors inline)."""
    if external is None:
        external = needs_external(model)
    if not external:
        onnx.save_model(model, str(path), save_as_external_data=False)
        return
    data = path.parent / (path.name + DATA_SUFFIX)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=0 if threshold() == 0 else 1024,
    )
    # onnx.save_model moved the tensors out of `model`; read them back so that a caller can go
    # on using the model it saved (several passes count or compare weights after saving).
    onnx.load_external_data_for_model(model, str(path.parent))


def convert_opset(model: ModelProto, opset: int) -> ModelProto:
    """`model` at `opset` by onnx's version converter, whatever its size. The converter
    serializes the whole model, which fails past the 2 GiB protobuf limit, so the bytes of
    initializers over HELD_BYTES sit out the conversion (adapters read shapes and small
    constants, not weights) and are moved into the result, whose initializers keep their names.
    `model` gives its large initializers' bytes up: use the result.

    Raises:
        Exception: whatever the converter raises for an op or form it has no adapter for.
    """
    held: dict[str, bytes] = {}
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > HELD_BYTES:
            held[tensor.name] = tensor.raw_data
            tensor.ClearField("raw_data")
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception:
        _restore(model, held)
        raise
    _restore(converted, held)
    return converted


def _restore(model: ModelProto, held: dict[str, bytes]) -> None:
    for tensor in model.graph.initializer:
        if tensor.name in held:
            tensor.raw_data = held.pop(tensor.name)


def is_large(path: Path) -> bool:
    """Whether a model file and its external data pass the threshold (for tools that save their
    own output: ask them for external data then)."""
    return model_bytes(path) > threshold()


def model_bytes(path: Path) -> int:
    """The `.onnx` file and every external data file it references, in bytes."""
    model = onnx.load(str(path), load_external_data=False)
    files = {path, *(path.parent / loc for loc in _locations(model))}
    return sum(f.stat().st_size for f in files if f.is_file())


def _locations(model: ModelProto) -> set[str]:
    return {
        e.value
        for t in all_tensors(model)
        if _is_external(t)
        for e in t.external_data
        if e.key == "location"
    }


def data_files(path: Path) -> list[Path]:
    """The external data files `path` references (checked to be inside its folder)."""
    model = onnx.load(str(path), load_external_data=False)
    return [path.parent / loc for loc in sorted(check_external_refs(model, path.parent))]


# ---------------------------------------------------------------- results out


def normalize(path: Path, work: Path) -> Path:
    """The final model as it should be delivered: one file when its tensors are under the
    threshold; over it, `work/model.onnx` plus one `model.onnx.data` (a tool may have written
    either way, under any name). Returns the `.onnx` to measure and package."""
    model = onnx.load(str(path), load_external_data=False)
    external, large = has_external_data(model), is_large(path)
    if not external and not large:
        return path
    work.mkdir(parents=True, exist_ok=True)
    out = work / MODEL_MEMBER
    locations = sorted(check_external_refs(model, path.parent)) if external else []
    if large and len(locations) == 1:
        return _renamed(model, path.parent / locations[0], out)
    save_model(load_model(path), out, external=large)
    return out


def _renamed(model: ModelProto, data: Path, out: Path) -> Path:
    """`model` (its proto only) as `out`, its one data file copied beside it as `<out>.data`
    (streamed, never parsed; copied, not moved: the file may be the original's, still measured)."""
    target = out.parent / (out.name + DATA_SUFFIX)
    for tensor in all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = target.name
    shutil.copyfile(data, target)
    onnx.save_model(model, str(out), save_as_external_data=False)
    return out


def write_archive(path: Path, dest: Path) -> list[str]:
    """A stored zip of the `.onnx` and its data files, streamed from the files (zipfile copies
    in chunks; ZIP64 as sizes need). Returns the member names."""
    files = [path, *data_files(path)]
    names = [MODEL_MEMBER, *(f.relative_to(path.parent).as_posix() for f in files[1:])]
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for file, name in zip(files, names, strict=True):
            zf.write(file, name)
    return names
