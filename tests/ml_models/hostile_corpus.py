"""The hostile upload corpus, generated on demand (nothing binary is committed).

One file per attack class on the torch-free pre-scan: pickles that would run a command in every
protocol and through every opcode that imports or calls (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE,
BUILD, NEWOBJ_EX, EXT1/2/4), allowlist lookalikes, pickles in every member a loader unpickles
(nested zips included), pickle bombs (opcodes, memo, depth, lengths), zip layouts (duplicates,
overlaps, 50,000 directory entries, CRC, zlib, zip64 lies, links) and polyglots. Every payload's
command is `touch <canaries>/canary-<class>`: a canary that exists proves a payload ran.

`build(root, canaries)` writes the files and returns `{class: Case}`; used by
tests/ml_models/test_hostile_corpus.py and scripts/benchlib/hostile.py (which loads this file by
path). Standard library only: torch is not needed to build any of it.
"""

from __future__ import annotations

import copyreg
import io
import json
import os
import pickle
import struct
import subprocess
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENIGN_TS = b"\x80\x02c__torch__\nM\n)\x81}b."  # a TorchScript class instance, empty state
OP_BOMB_OPS = 1_200_000  # over pickle_scan.MAX_OPS
BUDGET_OPS = 990_000  # under MAX_OPS per member; three members exhaust MAX_ARCHIVE_OPS


@dataclass(frozen=True)
class Case:
    """One hostile file and the refusal it must get (status, problem code)."""

    path: Path
    status: int
    code: str
    fields: tuple[tuple[str, str], ...] = (("input_shapes", "[[1, 4]]"),)


class Reducer:
    """Pickles as `func(*args)`: what an attacker's `__reduce__` makes the loader call."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


# ---------------------------------------------------------------- pickle bytes


def _u(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _stack_global(module: str, name: str) -> bytes:
    return _u(module) + _u(name) + b"\x93"


def payloads(canary: Path) -> dict[str, bytes]:
    """Pickles that would create `canary` (or import a command runner) if unpickled."""
    cmd = f"touch {canary}"
    touch_py = f"open({str(canary)!r}, 'w').close()"
    out = {
        f"reduce-proto{p}": pickle.dumps(Reducer(os.system, (cmd,)), protocol=p) for p in range(6)
    }
    out["global-builtins-exec"] = pickle.dumps(
        Reducer(exec, (touch_py,)), protocol=2, fix_imports=False
    )
    out["stack-global-popen"] = pickle.dumps(
        Reducer(subprocess.Popen, (["touch", str(canary)],)), protocol=4
    )
    out["inst"] = b"(S'" + cmd.encode() + b"'\nios\nsystem\n."
    out["obj"] = b"(cos\nsystem\n" + _u(cmd) + b"o."
    out["build-setstate"] = (
        b"\x80\x02ccollections\nOrderedDict\n)R}"
        + _u("__setstate__")
        + b"cos\nsystem\nsb"
        + _u(cmd)
        + b"b."
    )
    out["newobj-ex"] = (
        b"\x80\x04"
        + _stack_global("subprocess", "Popen")
        + b"]"
        + _u("touch")
        + b"a"
        + _u(str(canary))
        + b"a\x85}\x92."
    )
    out["memoized-stack-global"] = (
        b"\x80\x04"
        + b"\x8c\x05posix\x94\x8c\x06system\x94"
        + b"00h\x00h\x01\x93"
        + _u(cmd)
        + b"\x85R."
    )
    for op, code in (("ext1", 0x7F), ("ext2", 0x1234), ("ext4", 0x7FFF0000)):
        copyreg.add_extension(os.system.__module__, "system", code)
        try:
            out[op] = pickle.dumps(Reducer(os.system, (cmd,)), protocol=2)
        finally:
            copyreg.remove_extension(os.system.__module__, "system", code)
        assert {"ext1": b"\x82", "ext2": b"\x83", "ext4": b"\x84"}[op] in out[op]
    out["lookalike-torch-prefix"] = b"\x80\x02c__torch__x.os\nsystem\n" + _u(cmd) + b"\x85R."
    out["lookalike-torch-builtins"] = (
        b"\x80\x02c__torch__.__builtins__\nexec\n" + _u(touch_py) + b"\x85R."
    )
    out["lookalike-utils-builtins"] = b"\x80\x02ctorch._utils\n__builtins__\n."
    out["lookalike-dtype-prefix"] = b"\x80\x02ctorch\nfloat32.__class__\n."
    out["payload-after-first-pickle"] = b"\x80\x02)." + pickle.dumps(
        Reducer(os.system, (cmd,)), protocol=2
    )
    return out


def bombs() -> dict[str, bytes]:
    """Pickles that cost a naive scanner time or memory; none imports anything."""
    memo = b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i) for i in range(600_000)) + b"."
    return {
        "bomb-opcodes": b"\x80\x02" + b"N0" * (OP_BOMB_OPS // 2) + b"N.",
        "bomb-memo": memo,
        "bomb-depth": b"\x80\x02" + b"]" * 200_000 + b".",
        "bomb-marks": b"\x80\x02" + b"(" * 200_000 + b".",
        "bomb-long-line": b"c" + b"a" * 8_000_000,
        "bomb-declared-length": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x" * 64,
        "bomb-long-int": b"L" + b"9" * 1_000_000 + b"L\n.",
        "malformed-truncated": b"\x80\x02cos\nsys",
        "malformed-unknown-opcode": b"\x80\x02\xff.",
    }


def budget_member() -> bytes:
    """A valid, allowed pickle of `BUDGET_OPS` opcodes: as slow as one member may be."""
    return b"\x80\x02" + b"N0" * (BUDGET_OPS // 2) + b"N."


# ---------------------------------------------------------------- zip bytes


def zip_bytes(members: dict[str, bytes], deflate: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                info = zipfile.ZipInfo(name.split("\x00dup")[0])
                if name.endswith(deflate) and deflate:
                    info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
    return buf.getvalue()


def torchscript(**replace: bytes) -> dict[str, bytes]:
    members = {
        "m/data.pkl": BENIGN_TS,
        "m/code/__torch__/m.py": b"class M(Module):\n  pass\n" * 40,
        "m/code/__torch__/m.py.debug_pkl": b"\x80\x02).",
        "m/constants.pkl": b"\x80\x02).",
        "m/data/0": bytes(range(16)),
        "m/version": b"3\n",
    }
    members.update({f"m/{k.removesuffix('_pkl')}.pkl": v for k, v in replace.items()})
    return members


def pt2(nested_pkl: bytes = b"\x80\x02).", **extra: bytes) -> dict[str, bytes]:
    config = {"config": {"w": {"path_name": "weight_0", "use_pickle": False}}}
    members = {
        "p/archive_format": b"pt2",
        "p/models/model.json": b"{}",
        "p/data/weights/model_weights_config.json": json.dumps(config).encode(),
        "p/data/weights/weight_0": b"\x80\x02" + bytes(14),  # raw bytes that look like a pickle
        "p/data/constants/model_constants_config.json": b'{"config": {}}',
        "p/data/sample_inputs/model.pt": zip_bytes(
            {"archive/data.pkl": nested_pkl, "archive/byteorder": b"little"}
        ),
        "p/byteorder": b"little",
    }
    members.update(extra)
    return members


def _forge_directory(data: bytes, entries: int) -> bytes:
    """The zip of one member with a central directory listing that member `entries` times."""
    cd_at = data.index(b"PK\x01\x02")
    end_at = data.rindex(b"PK\x05\x06")
    entry = data[cd_at:end_at]
    directory = entry * entries
    end = b"PK\x05\x06" + struct.pack("<4H2IH", 0, 0, entries, entries, len(directory), cd_at, 0)
    return data[:cd_at] + directory + end


def _overlapping(data: bytes) -> bytes:
    """A second directory entry, under another name, for the first member's bytes."""
    cd_at = data.index(b"PK\x01\x02")
    end_at = data.rindex(b"PK\x05\x06")
    first_len = 46 + sum(struct.unpack_from("<3H", data, cd_at + 28))
    first = bytearray(data[cd_at : cd_at + first_len])
    name_len = struct.unpack_from("<H", first, 28)[0]
    first[46 : 46 + name_len] = b"m/X" + first[49 : 46 + name_len]
    directory = data[cd_at:end_at] + bytes(first)
    count = struct.unpack_from("<H", data, end_at + 10)[0] + 1
    end = b"PK\x05\x06" + struct.pack("<4H2IH", 0, 0, count, count, len(directory), cd_at, 0)
    return data[:cd_at] + directory + end


def _flip(data: bytes, marker: bytes) -> bytes:
    """One byte of a member's data changed, its CRC kept."""
    at = data.index(marker) + len(marker) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _bad_zlib(members: dict[str, bytes]) -> bytes:
    data = zip_bytes(members, deflate=(".py",))
    at = data.index(b"m/code/__torch__/m.py") + len("m/code/__torch__/m.py") + 4
    return data[:at] + b"\xff" * 6 + data[at + 6 :]


def _zip64_lie(data: bytes) -> bytes:
    """End record saying "see zip64", and a zip64 record claiming 2**40 entries."""
    cd_at = data.index(b"PK\x01\x02")
    end_at = data.rindex(b"PK\x05\x06")
    directory = data[cd_at:end_at]
    record = b"PK\x06\x06" + struct.pack(
        "<QHHII4Q", 44, 45, 45, 0, 0, 1 << 40, 1 << 40, len(directory), cd_at
    )
    record_at = end_at
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, record_at, 1)
    end = b"PK\x05\x06" + struct.pack("<4H2IH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:end_at] + record + locator + end


def _symlink(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("m/extra/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, b"/etc/passwd")
    return buf.getvalue()


ONNX_LIKE = b"\x08\x07" + b"\x3a\x00"  # ir_version 7, an empty graph: passes the header walk


def build(root: Path, canaries: Path) -> dict[str, Case]:
    """Write the corpus under `root`; payloads touch `canaries/canary-<class>`."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, int, str]] = {}
    for name, body in payloads(canaries / "canary-x").items():
        body = body.replace(b"canary-x", f"canary-{name}".encode())
        files[f"ts-data-pkl-{name}"] = (zip_bytes(torchscript(data_pkl=body)), 422, "unsafe_pickle")
    cmd = pickle.dumps(Reducer(os.system, (f"touch {canaries / 'canary-member'}",)), protocol=2)
    p0 = pickle.dumps(Reducer(os.system, (f"touch {canaries / 'canary-p0'}",)), protocol=0)
    for name, members in {
        "ts-constants-pkl": torchscript(constants_pkl=cmd),
        "ts-debug-pkl": {**torchscript(), "m/code/__torch__/m.py.debug_pkl": cmd},
        "ts-bytecode-pkl": {**torchscript(), "m/bytecode.pkl": cmd},
        "ts-extra-pkl-anywhere": {**torchscript(), "m/extra/x.pkl": cmd},
        "pt2-nested-zip-data-pkl": pt2(nested_pkl=cmd),
        "pt2-opaque-obj": pt2(**{"p/data/constants/opaque_obj_0": cmd}),
        "pt2-unlisted-constant": pt2(**{"p/data/constants/tensor_0": cmd}),
        "pt2-use-pickle-proto0-weight": {
            **pt2(),
            "p/data/weights/model_weights_config.json": b'{"config": {"w": {"path_name": '
            b'"weight_0", "use_pickle": true}}}',
            "p/data/weights/weight_0": p0,
        },
    }.items():
        files[name] = (zip_bytes(members), 422, "unsafe_pickle")
    files["pt2-nested-nested-zip"] = (
        zip_bytes(pt2(nested_pkl=zip_bytes({"a/data.pkl": cmd}))),
        422,
        "archive_limits",
    )
    for name, body in bombs().items():
        code = (
            "malformed_pickle"
            if name.startswith(("malformed", "bomb-long", "bomb-decl"))
            else "pickle_limits"
        )
        files[f"ts-data-pkl-{name}"] = (zip_bytes(torchscript(data_pkl=body)), 422, code)
    files["ts-budget-bomb"] = (budget_bomb(), 422, "pickle_limits")
    _zip_classes(files, cmd)
    cases = {}
    for name, (data, status, code) in files.items():
        path = root / f"{name}.bin"
        path.write_bytes(data)
        cases[name] = Case(path, status, code)
    return cases


def budget_bomb() -> bytes:
    """Three allowed members of `BUDGET_OPS` opcodes each: the most expensive pickle walk one
    upload can ask for (it stops at MAX_ARCHIVE_OPS)."""
    big = budget_member()
    return zip_bytes(
        {**torchscript(data_pkl=big, constants_pkl=big), "m/code/__torch__/m.py.debug_pkl": big}
    )


def _zip_classes(files: dict[str, tuple[bytes, int, str]], cmd: bytes) -> None:
    ts = zip_bytes(torchscript())
    one = zip_bytes({"m/data.pkl": BENIGN_TS})
    files["zip-duplicate-member"] = (
        zip_bytes({**torchscript(), "m/data.pkl\x00dup": cmd}),
        422,
        "archive_duplicate",
    )
    files["zip-duplicate-other-case"] = (
        zip_bytes({**torchscript(), "m/DATA.pkl": cmd}),
        422,
        "archive_duplicate",
    )
    files["zip-directory-50000-same-name"] = (_forge_directory(one, 50_000), 422, "archive_limits")
    files["zip-directory-5000-same-name"] = (_forge_directory(one, 5_000), 422, "archive_duplicate")
    files["zip-overlapping-members"] = (_overlapping(ts), 422, "archive_duplicate")
    files["zip-crc-error-tensor"] = (_flip(ts, bytes(range(16))), 422, "archive_malformed")
    files["zip-crc-error-pickle"] = (_flip(ts, b"c__torch__\nM"), 422, "archive_malformed")
    files["zip-bad-zlib"] = (_bad_zlib(torchscript()), 422, "archive_malformed")
    files["zip64-lie"] = (_zip64_lie(ts), 422, "archive_limits")
    files["zip-symlink-member"] = (_symlink(torchscript()), 422, "archive_link")
    files["zip-traversal"] = (
        zip_bytes({**torchscript(), "m/../../etc/x": b"x"}),
        422,
        "archive_traversal",
    )
    files["zip-deflated-tensor"] = (
        zip_bytes(torchscript(), deflate=("/0",)),
        422,
        "archive_limits",
    )
    files["zip-trailing-bytes"] = (ts + b"JUNK" * 8, 415, "unsupported_model_format")
    files["polyglot-zip-after-onnx"] = (ONNX_LIKE + ts, 415, "unsupported_model_format")
    files["polyglot-pickle-before-onnx"] = (cmd + ONNX_LIKE, 422, "unsafe_pickle")
    files["onnx-field-bomb"] = (
        b"\x08\x07" * 200_000 + b"\x3a\x00",
        415,
        "unsupported_model_format",
    )
    files["onnx-archive-traversal"] = (
        zip_bytes({"model.onnx": ONNX_LIKE, "../outside.bin": b"x"}),
        422,
        "archive_traversal",
    )
    files["raw-pickle-proto2"] = (cmd, 422, "unsafe_pickle")
