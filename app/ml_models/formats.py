"""Torch-free format detection and structural checks of uploaded model files.

The format is decided from the bytes, never from the file name or Content-Type. Archives are
checked before any loader sees them (`torch_archive`: structure first, then every member a loader
may unpickle walked by `pickle_scan`, which reads and never executes, against the allowlist of
globals for that archive kind; ONNX archives: `archives`). Every check is bounded in time and
memory whatever the file says (caps in `torch_archive`, `pickle_scan`, `archives` and
`MAX_ONNX_FIELDS` here), so a refusal answers within seconds while the route's threadpool keeps
serving other requests.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import Unprocessable, UnsafePickle, UnsupportedModelFormat
from app.core.formats import ONNX, PT2, TORCHSCRIPT
from app.ml_models import archives, pickle_scan, torch_archive

MAX_MEMBERS = torch_archive.MAX_MEMBERS
MAX_PICKLE_BYTES = pickle_scan.MAX_PICKLE_BYTES
MAX_ONNX_FIELDS = 100_000  # top-level ModelProto fields walked before the file is refused

EXPORT_HINT = (
    "Export the model instead: `torch.export.save(torch.export.export(model, example_inputs), "
    "'model.pt2')`, `torch.jit.save(torch.jit.script(model), 'model.pt')` or "
    "`torch.onnx.export(model, example_inputs, 'model.onnx')`."
)
_POLICIES = {TORCHSCRIPT: pickle_scan.TORCHSCRIPT_POLICY, PT2: pickle_scan.PT2_POLICY}
_LIST_ALL = pickle_scan.Policy(frozenset())  # allows nothing: lists every import

ARCHIVE = "archive"  # Detected.detail of an ONNX model uploaded as a zip/tar with external data


@dataclass(frozen=True)
class Detected:
    format: str
    detail: str = ""


def _kind(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: str, budget: pickle_scan.Budget
) -> str:
    names = {i.filename.split("/", 1)[-1] for i in infos}
    if "archive_format" in names or "models/model.json" in names:
        return PT2
    if "data.pkl" in names and any(n.startswith("code/") for n in names):
        return TORCHSCRIPT
    if "data.pkl" in names:
        with zf.open(f"{root}/data.pkl") as fh:
            bad, stopped = pickle_scan.collect(fh, pickle_scan.PT2_POLICY, budget)
        if bad:
            raise UnsafePickle(
                f"This is a pickled Python object (torch.save of a module), which would run "
                f"code when loaded; it imports {', '.join(bad)}. {EXPORT_HINT}",
                globals=bad,
            )
        if stopped is not None:
            raise pickle_scan.refusal(stopped, "The archive's data.pkl")
        raise Unprocessable(
            f"This is a torch.save state_dict: weights without a graph. {EXPORT_HINT}",
            code="state_dict_without_graph",
        )
    raise UnsupportedModelFormat("A zip archive that is no TorchScript or .pt2 program.")


def _classify_zip(path: Path) -> Detected:
    budget = pickle_scan.Budget()
    with path.open("rb") as fh:
        zf, infos = torch_archive.open_torch_zip(fh, path.stat().st_size)
        with zf:
            root = infos[0].filename.split("/", 1)[0]
            kind = _kind(zf, infos, root, budget)
            for info in torch_archive.pickle_members(zf, infos, kind, root):
                torch_archive.scan_member(path, zf, info, _POLICIES[kind], budget, EXPORT_HINT)
            torch_archive.verify_crcs(zf, infos)
    return Detected(kind)


def _classify_zip_safely(path: Path) -> Detected:
    """`_classify_zip`, with the zip layer's own errors (bad CRC, bad deflate data, truncation)
    answered as 422 problems instead of escaping as 500s."""
    try:
        return _classify_zip(path)
    except archives.ZIP_ERRORS as exc:
        raise Unprocessable(f"A corrupt zip archive: {exc}", code="archive_malformed") from exc


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
        pos = fields = 0
        while pos < size:
            fields += 1
            if fields > MAX_ONNX_FIELDS:
                return False
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
    """The globals a raw pickle names (read, never run, bounded), for the refusal's detail."""
    with path.open("rb") as fh:
        found, _stopped = pickle_scan.collect(fh, _LIST_ALL, pickle_scan.Budget())
    return found  # malformed or over a cap: refused all the same


def detect_format(path: Path) -> Detected:
    """The model format of an uploaded file, after the checks that need no torch.

    Raises:
        UnsafePickle: a pickled Python object, or an archive whose pickles import non-allowed code.
        Unprocessable: an archive over the limits, or a state_dict without a graph; an ONNX
            archive (zip or tar of one `.onnx` and its external data) that fails
            `archives.check_onnx_archive`.
        UnsupportedModelFormat: anything else.
    """
    with path.open("rb") as fh:
        head = fh.read(archives.BLOCK)
    kind = archives.sniff(head)
    if kind == "tar" or (kind == "zip" and archives.zip_has_onnx_member(path)):
        archives.check_onnx_archive(path)
        return Detected(ONNX, detail=ARCHIVE)
    if kind == "zip":
        return _classify_zip_safely(path)
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
