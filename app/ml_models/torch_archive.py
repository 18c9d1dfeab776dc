"""Torch-free structural checks of a TorchScript or `.pt2` zip, and the scan of every member a
torch loader may unpickle.

The zip is hostile: its end record is parsed first and the member count and directory size
capped before `zipfile` builds its directory (`archives._zip_end`), every member is checked from
the central directory (paths, no name twice even in another case, since torch's miniz reader
looks names up case-insensitively; no links; sizes; stored tensors, only `code/` deflated and
bounded), and the members' bytes must tile the file with no overlap or hidden bytes
(`archives._check_regions`), all before a member is read. Then the pickles are walked
(`pickle_scan`, bounded), and every member's CRC is verified in streamed chunks.

Which members are pickles (from torch 2.13's loaders, `torch/jit/_serialization.py`, the C++
`import.cpp` reader, `torch/serialization.py` and `torch/export/pt2_archive/_package.py`):
TorchScript: `data.pkl`, `constants.pkl`, `bytecode.pkl`, the `*.debug_pkl` source maps, and
any `*.pkl`/`*.pt`/`*.pth`. `.pt2`: any `*.pkl`/`*.pt`/`*.pth` (the sample inputs, legacy weights
and constants), every member under `data/sample_inputs/`, `data/constants/custom_obj_*` and
`opaque_obj_*`, every member the weights/constants configs mark `use_pickle` (loaded with
`torch.load`), and any other member under `data/weights/` or `data/constants/` that no config
names as raw bytes and whose bytes begin like a pickle or a zip. A member that is a zip is a
nested `torch.save` archive: checked the same way (one level only) and its `.pkl` members
walked. Raw tensor bytes a config names as such are never unpickled, and not walked.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from app.core.errors import Unprocessable, UnsupportedModelFormat
from app.ml_models import archives, pickle_scan

MAX_MEMBERS = 20_000
MAX_CODE_RATIO = 50  # deflated TorchScript source may expand this much, no more
MAX_CODE_BYTES = 256 * 1024 * 1024  # all deflated members together, unpacked
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_PICKLE_SUFFIXES = (".pkl", ".debug_pkl", ".pt", ".pth")
_CONFIGS = (
    ("data/weights/", "_weights_config.json"),
    ("data/constants/", "_constants_config.json"),
)
_ZIP = b"PK\x03\x04"


def _refuse(code: str, detail: str) -> Unprocessable:
    return Unprocessable(detail, code=code)


class _Slice(io.RawIOBase):
    """`length` bytes of a file from `start`: a stored member read as a file of its own."""

    def __init__(self, fh: BinaryIO, start: int, length: int) -> None:
        self._fh, self._start, self._length, self._pos = fh, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = max(0, min(len(buffer), self._length - self._pos))
        self._fh.seek(self._start + self._pos)
        data = self._fh.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _ends_with_end_record(fh: BinaryIO, size: int) -> bool:
    """Whether an end record (and its comment) ends the file: a zip and nothing after it."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    while pos >= 0:
        if pos + 22 <= len(tail) and pos + 22 + struct.unpack_from("<H", tail, pos + 20)[0] == len(
            tail
        ):
            return True
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    return False


def _check_member(info: zipfile.ZipInfo, file_size: int) -> int:
    """One central-directory entry; returns the unpacked bytes of a deflated member (else 0)."""
    name = info.filename
    if name.startswith("/") or "\\" in name or ".." in name.split("/") or "\x00" in name:
        raise _refuse("archive_traversal", "The archive has an unsafe member path.")
    if info.flag_bits & 0x1:
        raise _refuse("archive_malformed", f"Archive member {name!r} is encrypted.")
    if (info.external_attr >> 28) not in (0x0, 0x4, 0x8):
        raise _refuse("archive_link", f"Archive member {name!r} is no regular file.")
    if info.file_size > file_size and info.compress_type == zipfile.ZIP_STORED:
        raise _refuse(
            "archive_limits", f"Archive member {name!r} declares more bytes than the file has."
        )
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise _refuse("archive_malformed", f"Stored member {name!r} lies about its size.")
        return 0
    # torch writes tensors stored; only TorchScript source may be deflated, and bounded.
    if (
        "/code/" not in name
        or info.compress_type != zipfile.ZIP_DEFLATED
        or info.file_size > MAX_CODE_RATIO * max(info.compress_size, 1)
    ):
        raise _refuse(
            "archive_limits", f"Archive member {name!r} is compressed; tensor data must be stored."
        )
    return info.file_size


def _check_members(infos: list[zipfile.ZipInfo], file_size: int) -> None:
    seen: set[str] = set()
    roots: set[str] = set()
    deflated = 0
    for info in infos:
        deflated += _check_member(info, file_size)
        key = info.filename.casefold()
        if key in seen:
            raise _refuse("archive_duplicate", f"Archive member {info.filename!r} appears twice.")
        seen.add(key)
        roots.add(info.filename.split("/", 1)[0])
    if deflated > MAX_CODE_BYTES:
        raise _refuse(
            "archive_limits", f"The archive's source unpacks to over {MAX_CODE_BYTES} bytes."
        )
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise UnsupportedModelFormat("A zip archive that is no TorchScript or .pt2 program.")


def open_torch_zip(fh: BinaryIO, size: int) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Check a torch zip's structure before reading any member (the caller closes the zip).

    Raises:
        UnsupportedModelFormat: no end record at the end (not a zip, or bytes after it), or no
            single root folder.
        Unprocessable: `archive_limits`, `archive_malformed`, `archive_duplicate`,
            `archive_traversal`, `archive_link`.
    """
    if not _ends_with_end_record(fh, size):
        raise UnsupportedModelFormat("A truncated or malformed zip archive, or bytes after it.")
    entries, cd_offset, cd_size = archives._zip_end(fh, size)
    if entries > MAX_MEMBERS or cd_size > archives.MAX_ZIP_DIRECTORY_BYTES:
        raise _refuse("archive_limits", f"The archive has over {MAX_MEMBERS} members.")
    try:
        zf = zipfile.ZipFile(fh)
    except archives.ZIP_ERRORS as exc:
        raise _refuse("archive_malformed", f"A malformed zip archive: {exc}") from exc
    try:
        infos = zf.infolist()
        if len(infos) != entries:
            raise _refuse("archive_malformed", "The zip directory disagrees with its count.")
        _check_members(infos, size)
        archives._check_regions(fh, infos, cd_offset)
    except BaseException:
        zf.close()
        raise
    return zf, infos


def _data_offset(fh: BinaryIO, info: zipfile.ZipInfo) -> int:
    fh.seek(info.header_offset)
    name_len, extra_len = struct.unpack_from("<2H", fh.read(30), 26)
    return info.header_offset + 30 + name_len + extra_len


def _raw_by_config(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: str
) -> tuple[set[str], set[str]]:
    """(members the .pt2 configs mark `use_pickle`, members they name as raw tensor bytes)."""
    pickled: set[str] = set()
    raw: set[str] = set()
    for info in infos:
        rel = info.filename[len(root) + 1 :]
        for folder, suffix in _CONFIGS:
            if not (rel.startswith(folder) and rel.endswith(suffix)):
                continue
            if info.file_size > MAX_CONFIG_BYTES:
                raise _refuse("archive_limits", f"{rel!r} is over {MAX_CONFIG_BYTES} bytes.")
            try:
                entries = json.loads(zf.read(info))["config"]
                for entry in entries.values():
                    target = f"{root}/{folder}{entry['path_name']}"
                    (pickled if entry.get("use_pickle") is not False else raw).add(target)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise _refuse("archive_malformed", f"{rel!r} is not a valid config.") from exc
    return pickled, raw - pickled


def pickle_members(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], kind: str, root: str
) -> list[zipfile.ZipInfo]:
    """Every member a loader of `kind` ("torchscript" or "pt2") may unpickle (module docstring)."""
    if kind != "pt2":
        return [i for i in infos if i.filename.endswith(_PICKLE_SUFFIXES)]
    pickled, raw = _raw_by_config(zf, infos, root)
    chosen = []
    for info in infos:
        rel = info.filename[len(root) + 1 :]
        leaf = rel.rsplit("/", 1)[-1]
        if (
            rel.endswith(_PICKLE_SUFFIXES)
            or info.filename in pickled
            or rel.startswith("data/sample_inputs/")
            or (
                rel.startswith("data/constants/")
                and leaf.startswith(("custom_obj_", "opaque_obj_"))
            )
        ) or (
            rel.startswith(("data/weights/", "data/constants/"))
            and not rel.endswith(".json")
            and info.filename not in raw
            and _head(zf, info)[:1] in (b"\x80", b"P")
        ):
            chosen.append(info)
    return chosen


def _head(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as fh:
        return fh.read(4)


def scan_member(
    path: Path,
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    policy: pickle_scan.Policy,
    budget: pickle_scan.Budget,
    hint: str,
) -> None:
    """Walk one pickle member, or the pickles of a nested torch.save zip.

    Raises:
        UnsafePickle, Unprocessable: `malformed_pickle`, `pickle_limits`, `archive_*`.
    """
    where = f"The archive's {info.filename.split('/', 1)[-1]}"
    if _head(zf, info) == _ZIP:
        _scan_nested(path, info, budget, hint)
        return
    if info.file_size > pickle_scan.MAX_PICKLE_BYTES:
        raise _refuse("pickle_limits", f"{where} is over {pickle_scan.MAX_PICKLE_BYTES} bytes.")
    with zf.open(info) as fh:
        pickle_scan.check(fh, where, policy, budget, hint)


def _scan_nested(path: Path, outer: zipfile.ZipInfo, budget: pickle_scan.Budget, hint: str) -> None:
    """A torch.save archive inside the program (e.g. .pt2 sample inputs), read in place: the
    same structural checks, its `.pkl` members held to the tensor allowlist, deeper nesting
    refused, every CRC verified."""
    if outer.compress_type != zipfile.ZIP_STORED:
        raise _refuse("archive_limits", f"Nested archive {outer.filename!r} is compressed.")
    with path.open("rb") as raw:
        start = _data_offset(raw, outer)
        fh = io.BufferedReader(_Slice(raw, start, outer.compress_size), 64 * 1024)
        try:
            zf, infos = open_torch_zip(fh, outer.compress_size)
        except UnsupportedModelFormat as exc:
            raise _refuse(
                "archive_malformed", f"Nested archive {outer.filename!r}: {exc.detail}"
            ) from exc
        with zf:
            for info in infos:
                if _head(zf, info) == _ZIP or info.filename.endswith((".pt", ".pth")):
                    raise _refuse(
                        "archive_limits", f"Archive member {outer.filename!r} nests archives."
                    )
                if info.filename.endswith(".pkl"):
                    if info.file_size > pickle_scan.MAX_PICKLE_BYTES:
                        raise _refuse("pickle_limits", f"{outer.filename!r} holds a huge pickle.")
                    with zf.open(info) as member:
                        where = f"The archive's {outer.filename.split('/', 1)[-1]}/{info.filename}"
                        pickle_scan.check(member, where, pickle_scan.PT2_POLICY, budget, hint)
            verify_crcs(zf, infos)


def verify_crcs(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Stream every member through its CRC (and inflation), in bounded chunks.

    Raises:
        Unprocessable: `archive_malformed`.
    """
    for info in infos:
        if not info.is_dir():
            for _chunk in archives.stream_zip_member(
                zf, archives.Member(info.filename, info.file_size)
            ):
                pass
