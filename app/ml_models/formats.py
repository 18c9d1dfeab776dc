"""Torch-free format detection and structural checks of uploaded model files.

The format is decided from the bytes, never from the file name or Content-Type. Archives are
checked before any loader sees them: member count and sizes, compression, paths, and every pickle
member walked opcode by opcode (`pickletools.genops` reads, it never executes) against the
allowlist of globals for that archive kind.
"""

from __future__ import annotations

import fnmatch
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import Unprocessable, UnsafePickle, UnsupportedModelFormat
from app.core.formats import ONNX, PT2, TORCHSCRIPT

MAX_MEMBERS = 20_000
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_CODE_RATIO = 50  # deflated TorchScript source may expand this much, no more

EXPORT_HINT = (
    "Export the model instead: `torch.export.save(torch.export.export(model, example_inputs), "
    "'model.pt2')`, `torch.jit.save(torch.jit.script(model), 'model.pt')` or "
    "`torch.onnx.export(model, example_inputs, 'model.onnx')`."
)

_TENSOR_GLOBALS = (
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.*Storage",
    "torch.storage.UntypedStorage",
    "torch.Size",
    "torch.device",
    "torch.float*",
    "torch.int*",
    "torch.bool",
    "builtins.tuple",
)
# TorchScript pickles name compiled classes as `__torch__.*`: the JIT resolves them to its own
# compiled TorchScript types, never to importable Python.
_ALLOWED_GLOBALS = {
    TORCHSCRIPT: (*_TENSOR_GLOBALS, "__torch__.*", "torch.jit._pickle.*"),
    PT2: _TENSOR_GLOBALS,
}


@dataclass(frozen=True)
class Detected:
    format: str
    detail: str = ""


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
    | {"STRING"}
)
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"})


def _pickle_globals(data: bytes) -> set[str]:
    """Every global a pickle would import, found without executing it.

    STACK_GLOBAL takes its module and name from the stack; the walk tracks what each op pushed
    (strings, memo gets) and anything it cannot resolve to two strings counts as not allowed.
    """
    found: set[str] = set()
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(str(arg).replace(" ", "."))
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(str(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(arg))] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(str(arg))))
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.add(f"{module}.{attr}" if module and attr else "<unresolvable STACK_GLOBAL>")
            pushed.append(None)
        elif name not in _NO_PUSH_OPS:
            pushed.append(None)
    return found


def _disallowed(globals_: set[str], kind: str) -> list[str]:
    allowed = _ALLOWED_GLOBALS[kind]
    return sorted(g for g in globals_ if not any(fnmatch.fnmatchcase(g, p) for p in allowed))


def _is_pickle_member(name: str) -> bool:
    leaf = name.rsplit("/", 1)[-1]
    return leaf.endswith((".pkl", ".debug_pkl", ".pt")) or "/data/constants/" in name


def _check_members(zf: zipfile.ZipFile, file_size: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise Unprocessable(f"The archive has over {MAX_MEMBERS} members.", code="archive_limits")
    roots = set()
    for info in infos:
        name = info.filename
        if name.startswith("/") or "\\" in name or ".." in name.split("/") or "\x00" in name:
            raise Unprocessable("The archive has an unsafe member path.", code="archive_traversal")
        roots.add(name.split("/", 1)[0])
        if info.compress_type != zipfile.ZIP_STORED:
            # torch writes tensors stored; only TorchScript source may be deflated, and bounded.
            if "/code/" not in name or info.file_size > MAX_CODE_RATIO * max(info.compress_size, 1):
                raise Unprocessable(
                    f"Archive member {name!r} is compressed; tensor data must be stored.",
                    code="archive_limits",
                )
        elif info.file_size > file_size:
            raise Unprocessable(
                f"Archive member {name!r} declares more bytes than the file has.",
                code="archive_limits",
            )
    if len(roots) != 1:
        raise UnsupportedModelFormat("A zip archive that is no TorchScript or .pt2 program.")
    return infos


def _check_exact_bounds(path: Path, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """The archive must be the whole file: no bytes before its first member or after its end
    record (zipfile tolerates both, which lets one file pass as two formats)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(size - 22 - len(zf.comment), 0))
        tail = fh.read(4)
    if tail != b"PK\x05\x06" or min((i.header_offset for i in infos), default=0) != 0:
        raise UnsupportedModelFormat("The zip archive has extra bytes around it.")


def _scan_pickles(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], kind: str) -> None:
    for info in infos:
        if not _is_pickle_member(info.filename) or info.file_size == 0:
            continue
        if info.file_size > MAX_PICKLE_BYTES:
            raise Unprocessable(
                f"Pickle member {info.filename!r} is too large.", code="archive_limits"
            )
        data = zf.read(info)
        if data.startswith(b"PK\x03\x04"):
            _scan_nested(data, info.filename, kind)
            continue
        if not data.startswith(b"\x80"):
            continue  # JSON configs under data/constants are not pickles
        named = info.filename.endswith((".pkl", ".debug_pkl", ".pt"))
        _check_pickle(data, info.filename, kind, strict=named)


def _scan_nested(data: bytes, name: str, kind: str) -> None:
    """A torch.save archive inside the program (e.g. .pt2 sample inputs): every pickle in it is
    held to the same allowlist; deeper nesting is refused."""
    import io

    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise Unprocessable(
            f"Archive member {name!r} is malformed.", code="archive_limits"
        ) from exc
    with inner:
        for info in inner.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_PICKLE_BYTES:
                raise Unprocessable(
                    f"Archive member {name!r} is over the limits.", code="archive_limits"
                )
            body = inner.read(info)
            if body.startswith(b"PK\x03\x04"):
                raise Unprocessable(
                    f"Archive member {name!r} nests archives.", code="archive_limits"
                )
            if info.filename.endswith(".pkl"):
                _check_pickle(body, f"{name}/{info.filename.split('/', 1)[-1]}", kind)


def _check_pickle(data: bytes, name: str, kind: str, strict: bool = True) -> None:
    """Hold one pickle to the allowlist. Not strict: bytes that do not parse as a pickle are raw
    tensor data (a loader could not unpickle them either)."""
    try:
        bad = _disallowed(_pickle_globals(data), kind)
    except Exception as exc:
        if not strict:
            return
        raise Unprocessable(f"Pickle member {name!r} is malformed.", code="archive_limits") from exc
    if bad:
        raise UnsafePickle(
            f"The archive's {name.split('/', 1)[-1]} imports {', '.join(bad)}, which "
            f"is not allowed. {EXPORT_HINT}",
            globals=bad,
        )


def _classify_zip(path: Path) -> Detected:
    file_size = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedModelFormat("A truncated or malformed zip archive.") from exc
    with zf:
        infos = _check_members(zf, file_size)
        _check_exact_bounds(path, zf, infos)
        names = {i.filename.split("/", 1)[-1] for i in infos}
        if "archive_format" in names or "models/model.json" in names:
            kind = PT2
        elif "data.pkl" in names and any(n.startswith("code/") for n in names):
            kind = TORCHSCRIPT
        elif "data.pkl" in names:
            globals_ = _pickle_globals(
                zf.read(next(i for i in infos if i.filename.endswith("/data.pkl")))
            )
            bad = _disallowed(globals_, PT2)
            if bad:
                raise UnsafePickle(
                    f"This is a pickled Python object (torch.save of a module), which would run "
                    f"code when loaded; it imports {', '.join(bad)}. {EXPORT_HINT}",
                    globals=bad,
                )
            raise Unprocessable(
                f"This is a torch.save state_dict: weights without a graph. {EXPORT_HINT}",
                code="state_dict_without_graph",
            )
        else:
            raise UnsupportedModelFormat("A zip archive that is no TorchScript or .pt2 program.")
        _scan_pickles(zf, infos, kind)
    return Detected(kind)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


# ModelProto's fields (onnx.proto): number -> protobuf wire type.
_MODELPROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _looks_like_onnx(path: Path) -> bool:
    """Walk ModelProto's top-level fields: known numbers and wire types, exact end, a graph."""
    seen: set[int] = set()
    size = path.stat().st_size
    with path.open("rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(20)
            try:
                key, after = _read_varint(head, 0)
            except ValueError:
                return False
            number, wire = key >> 3, key & 7
            if _MODELPROTO_FIELDS.get(number) != wire:
                return False
            if wire == 0:
                try:
                    _, after = _read_varint(head, after)
                except ValueError:
                    return False
                pos += after
            else:
                try:
                    length, after = _read_varint(head, after)
                except ValueError:
                    return False
                pos += after + length
            seen.add(number)
        return pos == size and {1, 7} <= seen


def _raw_pickle_globals(path: Path) -> list[str]:
    """The globals a raw pickle names (read, never run), for the refusal's detail."""
    if path.stat().st_size > MAX_PICKLE_BYTES:
        return []
    try:
        return sorted(_pickle_globals(path.read_bytes()))
    except Exception:
        return []  # malformed: refused all the same


def detect_format(path: Path) -> Detected:
    """The model format of an uploaded file, after the checks that need no torch.

    Raises:
        UnsafePickle: a pickled Python object, or an archive whose pickles import non-allowed code.
        Unprocessable: an archive over the limits, or a state_dict without a graph.
        UnsupportedModelFormat: anything else.
    """
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04"):
        return _classify_zip(path)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        raise UnsafePickle(
            f"This is a pickled Python object, which would run code when loaded. {EXPORT_HINT}",
            globals=_raw_pickle_globals(path),
        )
    if _looks_like_onnx(path):
        return Detected(ONNX)
    raise UnsupportedModelFormat(
        "Not an ONNX model, a TorchScript archive or a torch.export .pt2 program."
    )
