"""Torch-free structural check of an uploaded ONNX archive: a zip or a plain tar holding one
`.onnx` and its external-data files (the only way a model over 2 GB can arrive).

Every archive is hostile. The check reads directories and headers only, so its memory is bounded
by the member cap and its time by the file size: the zip end record is parsed by hand before
`zipfile` builds its directory (a forged entry count would otherwise cost memory), tar headers are
parsed by hand (`tarfile` reads a pax header of any declared size into memory), and zip data is
streamed in chunks to verify CRCs and inflate. Names are confined (no absolute paths, `..`,
backslashes, drive letters, control characters), links and devices are refused, members may not
repeat or overlap (in name or in bytes), sizes and compression ratios are capped. Which files the
model really references needs the protobuf, so the sandboxed worker checks that after extraction
(`worker/onnx_io.py`) with this same listing.
"""

from __future__ import annotations

import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from app.core.errors import Unprocessable

MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 32 * 1024**3  # all members together, as declared
MAX_MODEL_BYTES = 2 * 1024**3  # the `.onnx` member: one protobuf, which cannot be larger
MAX_RATIO = 100  # unpacked / packed bytes, per deflated member (zip bombs)
MAX_TOTAL_RATIO = 10  # all members unpacked / the archive's size
RATIO_FREE_BYTES = 64 * 1024  # a member this small may compress any amount
MAX_ZIP_DIRECTORY_BYTES = 16 * 1024 * 1024
MAX_PAX_BYTES = 64 * 1024
MAX_TRAILER_BYTES = 64 * 1024  # tar's end-of-archive zero blocks and record padding
MAX_NAME_BYTES = 1024
CHUNK = 1024 * 1024
BLOCK = 512

_NAME_PART = re.compile(r"[A-Za-z0-9._+@=,~ -]+")
_PAX_IGNORED = frozenset({"mtime", "atime", "ctime", "uid", "gid", "uname", "gname"})


# What reading a hostile zip can raise from the standard library: zipfile's own errors, zlib's
# and struct's on bad data, EOFError on truncation, RuntimeError for an encrypted member, and
# NotImplementedError for a compression method or zip feature zipfile does not implement (that
# one is zipfile's refusal, not a stub here). Each is a 422 `archive_malformed`, never a 500.
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


@dataclass(frozen=True)
class Member:
    """A regular file of the archive: its path, declared size and (tar) where its bytes begin."""

    name: str
    size: int
    offset: int = -1


@dataclass(frozen=True)
class Listing:
    """A checked archive: the `.onnx` member, the folder it sits in, and every file member."""

    kind: Literal["zip", "tar"]
    model: Member
    root: str
    files: tuple[Member, ...]

    def relative(self, member: Member) -> str:
        """`member`'s path relative to the model's folder (where external locations point)."""
        return member.name[len(self.root) + 1 :] if self.root else member.name


def _refuse(code: str, detail: str) -> Unprocessable:
    return Unprocessable(detail, code=code)


def sniff(head: bytes) -> Literal["zip", "tar"] | None:
    """The archive kind of a file from its first 512 bytes (`ustar` magic: POSIX and GNU tar)."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def is_onnx_name(name: str) -> bool:
    return name.casefold().endswith(".onnx")


def check_name(name: str) -> str:
    """A member path held to a conservative form; a directory entry keeps its trailing `/`.

    Raises:
        Unprocessable: `archive_traversal` (absolute, `..`, backslash, drive, NUL) or
            `archive_unexpected_member` (any other name outside the allowed characters).
    """
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or ":" in name
        or ".." in name.split("/")
    ):
        raise _refuse("archive_traversal", f"The archive has an unsafe member path {name!r}.")
    parts = name.removesuffix("/").split("/")
    if (
        len(name.encode()) > MAX_NAME_BYTES
        or unicodedata.normalize("NFC", name) != name
        or any(p in ("", ".") or p.startswith(" ") or not _NAME_PART.fullmatch(p) for p in parts)
    ):
        raise _refuse(
            "archive_unexpected_member",
            f"Archive member {name[:200]!r}: names may hold letters, digits and ._+@=,~- only.",
        )
    return name


def _layout(
    kind: Literal["zip", "tar"], files: list[Member], dirs: list[str], archive_bytes: int
) -> Listing:
    """Exactly one `.onnx`; every other file in its folder or below; no name twice, no file where
    another member needs a folder (case-insensitively: the archive may be unpacked anywhere)."""
    if len(files) + len(dirs) > MAX_MEMBERS:
        raise _refuse("archive_limits", f"The archive has over {MAX_MEMBERS} members.")
    seen: set[str] = set()
    folders: set[str] = set()
    for member in files:
        key = member.name.casefold()
        if key in seen:
            raise _refuse("archive_duplicate", f"Archive member {member.name!r} appears twice.")
        seen.add(key)
        parts = key.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = seen & folders
    if clash:
        raise _refuse("archive_duplicate", f"Archive member {min(clash)!r} is a file and a folder.")
    stray = [d for d in dirs if d.casefold().removesuffix("/") not in folders]
    if stray:
        raise _refuse("archive_unexpected_member", f"The archive has an empty folder {stray[0]!r}.")
    models = [m for m in files if is_onnx_name(m.name)]
    if len(models) != 1:
        raise _refuse(
            "archive_unexpected_member",
            f"An ONNX archive holds exactly one .onnx file; this one holds {len(models)}.",
        )
    model = models[0]
    root = model.name.rpartition("/")[0]
    outside = [m.name for m in files if root and not m.name.startswith(root + "/")]
    if outside:
        raise _refuse(
            "archive_unexpected_member",
            f"Archive member {outside[0]!r} is outside the folder of {model.name!r}; external "
            "data can only be in the model's folder or below it.",
        )
    _check_sizes(model, files, archive_bytes)
    return Listing(kind, model, root, tuple(files))


def _check_sizes(model: Member, files: list[Member], archive_bytes: int) -> None:
    """Declared sizes against the caps: the `.onnx`, the total, and the total against the
    archive's own size (weights barely compress; a bomb does), which bounds the CRC pass."""
    if model.size > MAX_MODEL_BYTES or model.size == 0:
        raise _refuse("archive_limits", f"{model.name!r} is empty or over 2 GiB.")
    total = sum(m.size for m in files)
    if total > min(MAX_UNPACKED_BYTES, MAX_TOTAL_RATIO * archive_bytes + RATIO_FREE_BYTES):
        raise _refuse(
            "archive_limits",
            f"The archive unpacks to {total} bytes, over {MAX_UNPACKED_BYTES} or "
            f"{MAX_TOTAL_RATIO}x its size.",
        )


# ---------------------------------------------------------------- zip


def _zip_end(fh: BinaryIO, size: int) -> tuple[int, int, int]:
    """(entries, directory offset, directory size) from the end record, which must end the file
    exactly (no trailing bytes), read before `zipfile` is trusted with the directory."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    for pos in range(len(tail) - 22, -1, -1):
        if tail[pos : pos + 4] == b"PK\x05\x06":
            comment = struct.unpack_from("<H", tail, pos + 20)[0]
            if pos + 22 + comment == len(tail):
                break
    else:
        raise _refuse("archive_malformed", "The zip archive has no end record at its end.")
    disk, cd_disk, on_disk, entries, cd_size, cd_offset = struct.unpack_from("<4H2I", tail, pos + 4)
    end_at = size - tail_len + pos
    fh.seek(max(end_at - 20, 0))
    zip64 = end_at >= 20 and fh.read(4) == b"PK\x06\x07"  # torch writes one even when small
    if zip64 or 0xFFFF in (entries, on_disk) or 0xFFFFFFFF in (cd_size, cd_offset):
        return _zip64_end(fh, end_at)
    if disk or cd_disk or on_disk != entries:
        raise _refuse("archive_malformed", "Multi-disk zip archives are not supported.")
    if cd_offset + cd_size != end_at:
        raise _refuse("archive_malformed", "The zip directory is not where its end record says.")
    return entries, cd_offset, cd_size


def _zip64_end(fh: BinaryIO, end_at: int) -> tuple[int, int, int]:
    if end_at < 20 + 56:
        raise _refuse("archive_malformed", "The zip64 end record is missing.")
    fh.seek(end_at - 20)
    locator = fh.read(20)
    if locator[:4] != b"PK\x06\x07":
        raise _refuse("archive_malformed", "The zip64 end locator is missing.")
    record_at = struct.unpack_from("<Q", locator, 8)[0]
    if record_at != end_at - 20 - 56:
        raise _refuse("archive_malformed", "The zip64 end record is not where it should be.")
    fh.seek(record_at)
    record = fh.read(56)
    if record[:4] != b"PK\x06\x06":
        raise _refuse("archive_malformed", "The zip64 end record is malformed.")
    disk, cd_disk, on_disk, entries, cd_size, cd_offset = struct.unpack_from("<2I4Q", record, 16)
    if disk or cd_disk or on_disk != entries or cd_offset + cd_size != record_at:
        raise _refuse("archive_malformed", "The zip64 directory is inconsistent.")
    return entries, cd_offset, cd_size


def _zip_member(info: zipfile.ZipInfo) -> Member | None:
    """A file member after its per-entry checks; None for a folder entry."""
    check_name(info.filename)
    if info.flag_bits & 0x1:
        raise _refuse("archive_malformed", f"Archive member {info.filename!r} is encrypted.")
    if (info.external_attr >> 28) not in (0x0, 0x4, 0x8):  # unix type bits: none, dir, file
        raise _refuse("archive_link", f"Archive member {info.filename!r} is no regular file.")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise _refuse("archive_malformed", f"Stored member {info.filename!r} lies about size.")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > max(MAX_RATIO * info.compress_size, RATIO_FREE_BYTES):
            raise _refuse(
                "archive_limits",
                f"Archive member {info.filename!r} expands over {MAX_RATIO}x (a zip bomb?).",
            )
    else:
        raise _refuse(
            "archive_malformed", f"Archive member {info.filename!r}: not stored/deflated."
        )
    if info.is_dir():
        if info.file_size:
            raise _refuse("archive_malformed", f"Folder entry {info.filename!r} has data.")
        return None
    return Member(info.filename, info.file_size)


def _check_regions(fh: BinaryIO, infos: list[zipfile.ZipInfo], cd_offset: int) -> None:
    """Members' bytes tile the file from offset 0 to the directory: each local header names its
    member, and no two members share bytes (overlapping entries make zip bombs)."""
    at = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != at:
            raise _refuse("archive_duplicate", "Zip members overlap or leave hidden bytes.")
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise _refuse("archive_malformed", f"Archive member {info.filename!r} has no header.")
        name_len, extra_len = struct.unpack_from("<2H", header, 26)
        if fh.read(name_len) != info.orig_filename.encode(
            "utf-8" if info.flag_bits & 0x800 else "cp437"
        ):
            raise _refuse("archive_malformed", f"Archive member {info.filename!r}: names differ.")
        at = info.header_offset + 30 + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x8:
            at += _descriptor_len(fh, at)
    if at != cd_offset:
        raise _refuse("archive_duplicate", "Zip members overlap or leave hidden bytes.")


def _descriptor_len(fh: BinaryIO, at: int) -> int:
    """Length of the data descriptor at `at` (signed or not, zip32 or zip64)."""
    fh.seek(at)
    head = fh.read(4)
    signed = 4 if head == b"PK\x07\x08" else 0
    fh.seek(at + signed + 12)
    nxt = fh.read(4)
    return signed + (12 if nxt in (b"PK\x03\x04", b"PK\x01\x02") else 20)


def open_zip(path: Path) -> tuple[zipfile.ZipFile, Listing]:
    """Check a zip archive's structure and open it (the caller closes it).

    Raises:
        Unprocessable: every structural refusal, with its `archive_*` code.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        entries, cd_offset, cd_size = _zip_end(fh, size)
        if entries > MAX_MEMBERS or cd_size > MAX_ZIP_DIRECTORY_BYTES:
            raise _refuse("archive_limits", f"The archive has over {MAX_MEMBERS} members.")
        try:
            zf = zipfile.ZipFile(path)
        except ZIP_ERRORS as exc:
            raise _refuse("archive_malformed", f"A malformed zip archive: {exc}") from exc
        try:
            infos = zf.infolist()
            if len(infos) != entries:
                raise _refuse("archive_malformed", "The zip directory disagrees with its count.")
            members = [_zip_member(i) for i in infos]
            files = [m for m in members if m is not None]
            listing = _layout("zip", files, [i.filename for i in infos if i.is_dir()], size)
            _check_regions(fh, infos, cd_offset)
        except BaseException:
            zf.close()
            raise
    return zf, listing


def stream_zip_member(zf: zipfile.ZipFile, member: Member) -> Iterator[bytes]:
    """A member's bytes in chunks; its CRC and inflation are verified as they stream.

    Raises:
        Unprocessable: `archive_malformed` on a bad CRC, bad deflate data or a wrong size.
    """
    seen = 0
    try:
        with zf.open(member.name) as fh:
            while chunk := fh.read(CHUNK):
                seen += len(chunk)
                if seen > member.size:
                    break
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise _refuse(
            "archive_malformed", f"Archive member {member.name!r} is corrupt: {exc}"
        ) from exc
    if seen != member.size:
        raise _refuse("archive_malformed", f"Archive member {member.name!r} has the wrong size.")


# ---------------------------------------------------------------- tar


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        if field[0] != 0x80:
            raise _refuse("archive_malformed", f"A tar header has a negative {what}.")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]{1,12}", text):
        raise _refuse("archive_malformed", f"A tar header has a bad {what}.")
    return int(text, 8)


def _tar_name(block: bytes) -> str:
    name = block[0:100].split(b"\x00", 1)[0]
    if block[257:265] == b"ustar\x0000":  # POSIX: a prefix field; GNU uses those bytes otherwise
        prefix = block[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("archive_unexpected_member", "A tar member name is not UTF-8.") from exc


def _tar_header(block: bytes) -> tuple[bytes, int]:
    """(type flag, data size) of a verified ustar header block."""
    if block[257:262] != b"ustar":
        raise _refuse("archive_malformed", "A tar header is not ustar (v7 tar is not supported).")
    stored = _octal(block[148:156], "checksum")
    blanked = block[:148] + b" " * 8 + block[156:]
    if stored not in (sum(blanked), sum(struct.unpack("512b", blanked))):
        raise _refuse("archive_malformed", "A tar header checksum is wrong.")
    return block[156:157], _octal(block[124:136], "size")


def _pax(data: bytes) -> dict[str, str]:
    """A pax extended header's records; only path and size matter, a few keys are ignored, any
    other (links, sparse files, unknown extensions) is refused."""
    found: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        match = re.match(rb"(\d{1,6}) ", data[pos:])
        length = int(match.group(1)) if match else 0
        record = data[pos : pos + length]
        if not match or length <= len(match.group(0)) or not record.endswith(b"\n"):
            raise _refuse("archive_malformed", "A pax header is malformed.")
        key, sep, value = record[len(match.group(0)) : -1].partition(b"=")
        name = key.decode("utf-8", "replace")
        if not sep or (name not in ("path", "size") and name not in _PAX_IGNORED):
            raise _refuse("archive_link", f"A pax header uses {name!r}, which is not supported.")
        found[name] = value.decode("utf-8", "replace")
        pos += length
    if "size" in found and not found["size"].isdigit():
        raise _refuse("archive_malformed", "A pax header has a bad size.")
    return found


def _tar_entries(fh: BinaryIO, size: int) -> tuple[list[Member], list[str]]:
    """Walk the headers: regular files and folders only; a pax header applies to the next."""
    files: list[Member] = []
    dirs: list[str] = []
    pax: dict[str, str] = {}
    pos = count = 0
    while pos + BLOCK <= size:
        fh.seek(pos)
        block = fh.read(BLOCK)
        if block == bytes(BLOCK):
            _check_trailer(fh, pos, size)
            return files, dirs
        count += 1
        if count > 2 * MAX_MEMBERS:
            raise _refuse("archive_limits", f"The archive has over {MAX_MEMBERS} members.")
        flag, length = _tar_header(block)
        data_at = pos + BLOCK
        if flag == b"x":
            if pax or length > MAX_PAX_BYTES:
                raise _refuse("archive_limits", "A pax header is too large or repeated.")
            fh.seek(data_at)
            pax = _pax(fh.read(length))
            pos = data_at + -(-length // BLOCK) * BLOCK
            continue
        name = (pax.get("path") or _tar_name(block)).removeprefix("./")
        length = int(pax.get("size", length))
        pax = {}
        pos = data_at + -(-length // BLOCK) * BLOCK
        if pos > size:
            raise _refuse("archive_malformed", "The tar archive is truncated.")
        if flag in (b"0", b"\x00"):
            files.append(Member(check_name(name), length, data_at))
        elif flag == b"5" and name in ("", "."):
            continue  # `tar -C folder .` names the folder itself `./`
        elif flag == b"5":
            dirs.append(check_name(name if name.endswith("/") else name + "/"))
        else:
            raise _refuse(
                "archive_link",
                f"Tar member {name[:200]!r} is a link, device or special entry (type {flag!r}).",
            )
    raise _refuse("archive_malformed", "The tar archive has no end-of-archive blocks.")


def _check_trailer(fh: BinaryIO, pos: int, size: int) -> None:
    """After the first zero block, only zero padding (bounded) may follow: no hidden members."""
    if size - pos > MAX_TRAILER_BYTES:
        raise _refuse("archive_malformed", "The tar archive has bytes after its end.")
    fh.seek(pos)
    if fh.read(size - pos).strip(b"\x00"):
        raise _refuse("archive_malformed", "The tar archive has bytes after its end.")


def list_tar(path: Path) -> Listing:
    """Check a plain (uncompressed) tar archive's structure by its headers alone.

    Raises:
        Unprocessable: every structural refusal, with its `archive_*` code.
    """
    size = path.stat().st_size
    if size % BLOCK:
        raise _refuse("archive_malformed", "The tar archive is not a whole number of blocks.")
    with path.open("rb") as fh:
        files, dirs = _tar_entries(fh, size)
    return _layout("tar", files, dirs, size)


# ---------------------------------------------------------------- both


def check_onnx_archive(path: Path, verify_data: bool = True) -> Listing:
    """The listing of an uploaded ONNX archive after every check that needs no protobuf;
    `verify_data` also streams each zip member through its CRC (a tar has no data checksum).

    Raises:
        Unprocessable: `archive_traversal`, `archive_link`, `archive_duplicate`,
            `archive_unexpected_member`, `archive_limits` or `archive_malformed`.
    """
    with path.open("rb") as fh:
        kind = sniff(fh.read(BLOCK))
    if kind == "tar":
        return list_tar(path)
    if kind != "zip":
        raise _refuse("archive_malformed", "Not a zip or tar archive.")
    zf, listing = open_zip(path)
    with zf:
        if verify_data:
            for member in listing.files:
                for _chunk in stream_zip_member(zf, member):
                    pass
    return listing


def zip_has_onnx_member(path: Path) -> bool:
    """Whether a zip's directory names a `.onnx` file (an ONNX archive, not a torch program),
    read from the bounded end record first."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            entries, _offset, cd_size = _zip_end(fh, size)
    except Unprocessable:
        return False  # not a well-formed zip: the torch program checks refuse it as before
    if entries > MAX_MEMBERS or cd_size > MAX_ZIP_DIRECTORY_BYTES:
        raise _refuse("archive_limits", f"The archive has over {MAX_MEMBERS} members.")
    try:
        with zipfile.ZipFile(path) as zf:
            return any(is_onnx_name(n) for n in zf.namelist())
    except ZIP_ERRORS as exc:
        raise _refuse("archive_malformed", f"A malformed zip archive: {exc}") from exc
