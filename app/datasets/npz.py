"""Structural checks of an uploaded `.npz` without loading its arrays (and never unpickling).

An .npz is a zip of `.npy` files, possibly deflated (`savez_compressed`): member count, names,
total uncompressed size and ratio are capped, then each array's header (shape, dtype) is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import InvalidDataset

MAX_ARRAYS = 64
MAX_RATIO = 200
ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: no object, string or structured arrays


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype[Any]]:
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unknown .npy version {version}")
    return shape, dtype


def inspect_npz(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """The arrays of an .npz as `{name, shape, dtype}`.

    Raises:
        InvalidDataset: not an npz, over a limit, an unsafe name or a non-numeric array.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidDataset("Not an .npz archive (numpy.savez).") from exc
    arrays: list[dict[str, Any]] = []
    with zf:
        infos = zf.infolist()
        if not infos or len(infos) > MAX_ARRAYS:
            raise InvalidDataset(f"An .npz holds 1 to {MAX_ARRAYS} arrays.")
        total = 0
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or "/" in name or "\\" in name or name.startswith("."):
                raise InvalidDataset(f"Unexpected member {name[:80]!r} in the .npz.")
            total += info.file_size
            if total > max_bytes or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 1024:
                raise InvalidDataset("The .npz is too large once uncompressed.")
            try:
                shape, dtype = _header(zf, info)
            except Exception as exc:
                raise InvalidDataset(f"Array {name!r} has a malformed header.") from exc
            if dtype.kind not in ALLOWED_KINDS or dtype.hasobject:
                raise InvalidDataset(
                    f"Array {name[:-4]!r} has dtype {dtype}; only numbers allowed."
                )
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if expected > info.file_size:
                raise InvalidDataset(f"Array {name[:-4]!r} declares more data than it holds.")
            arrays.append({"name": name[:-4], "shape": list(shape), "dtype": str(dtype)})
    return arrays


def num_samples(arrays: list[dict[str, Any]]) -> int:
    """The shared first-axis length of every array.

    Raises:
        InvalidDataset: an array is a scalar, or the lengths differ.
    """
    if any(not a["shape"] for a in arrays):
        raise InvalidDataset("Every array needs a first (sample) axis.")
    lengths = {a["name"]: int(a["shape"][0]) for a in arrays}
    if len(set(lengths.values())) != 1:
        raise InvalidDataset(f"Arrays disagree on the number of samples: {lengths}.")
    return next(iter(lengths.values()))
