"""What the CPU a worker runs on can do, and the int8 settings that follow from it.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights (u8s8). Without VNNI
(AVX2, or AVX-512 without VNNI) they use `vpmaddubsw`, which adds two such products into an int16
and saturates: the quantized model is silently wrong (docs/field-notes.md, "Real third-party
models": a real decoder-only LLM agreed with fp32 on 0 of 32 next tokens). Weights quantized to 7
bits (`reduce_range`) keep every sum in range (255 * 64 * 2 < 32767), so on such CPUs it is on.
With VNNI (`vpdpbusd` adds into int32) nothing saturates and `reduce_range` only costs fidelity,
so there it is off.

`MODELPRESS_CPU_FLAGS` (comma-separated) replaces the detected flags: the test suite uses it to run
the path of the CPU kind it is not on.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPORTED_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
    "f16c",
)  # fmt: skip
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
FLAGS_ENV = "MODELPRESS_CPU_FLAGS"


@dataclass(frozen=True)
class CpuInfo:
    model: str | None
    flags: tuple[str, ...]  # the REPORTED_FLAGS present, in that order
    x86: bool


@cache
def _proc_cpuinfo() -> tuple[str | None, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None, frozenset()
    model: str | None = None
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_info(*, injected: bool = True) -> CpuInfo:
    """The CPU model and its relevant ISA flags (`MODELPRESS_CPU_FLAGS` overrides the flags,
    unless `injected` is false: then the machine's own)."""
    model, present = _proc_cpuinfo()
    forced = os.environ.get(FLAGS_ENV) if injected else None
    if forced is not None:
        present = frozenset(f.strip() for f in forced.split(",") if f.strip())
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    return CpuInfo(model, tuple(f for f in REPORTED_FLAGS if f in present), x86)


@dataclass(frozen=True)
class Int8Choice:
    reduce_range: bool
    kernels: str  # which int8 kernels ONNX Runtime runs here
    reason: str


def int8_choice(info: CpuInfo | None = None) -> Int8Choice:
    """`reduce_range` for this CPU, with why (recorded on every quantize step)."""
    info = info or cpu_info()
    if not info.x86:
        return Int8Choice(False, "non-x86", "not an x86 CPU: no u8s8 saturation to avoid")
    vnni = sorted(VNNI_FLAGS & set(info.flags))
    if vnni:
        return Int8Choice(
            False, "vnni", f"this CPU has {', '.join(vnni)}: int8 sums do not saturate"
        )
    return Int8Choice(
        True,
        "avx2" if "avx2" in info.flags else "sse",
        "this CPU has no VNNI: ONNX Runtime's u8s8 kernels would saturate int16 sums, so weights "
        "are quantized to 7 bits (reduce_range)",
    )
