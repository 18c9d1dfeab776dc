"""The CPU's int8 capabilities and the `reduce_range` choice that follows from them."""

from __future__ import annotations

import pytest

from worker import cpu
from worker.cpu import CpuInfo, cpu_info, int8_choice


@pytest.mark.parametrize(
    ("flags", "reduce_range", "kernels"),
    [
        (("avx2", "fma"), True, "avx2"),
        (("avx2", "avx512f"), True, "avx2"),  # AVX-512 without VNNI saturates too
        (("avx2", "avx512f", "avx512_vnni"), False, "vnni"),
        (("avx2", "avx_vnni"), False, "vnni"),
        (("avx2", "amx_int8", "amx_tile"), False, "vnni"),
        ((), True, "sse"),
    ],
)
def test_reduce_range_follows_vnni(
    flags: tuple[str, ...], reduce_range: bool, kernels: str
) -> None:
    choice = int8_choice(CpuInfo("some cpu", flags, x86=True))

    assert (choice.reduce_range, choice.kernels) == (reduce_range, kernels)
    assert choice.reason


def test_non_x86_cpus_keep_the_full_range() -> None:
    choice = int8_choice(CpuInfo("arm", (), x86=False))

    assert choice.reduce_range is False


def test_the_flags_can_be_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu.FLAGS_ENV, "avx2, fma")

    info = cpu_info()

    assert info.flags == ("avx2", "fma")
    assert int8_choice(info).reduce_range is (info.x86 or False)


def test_detected_flags_are_a_subset_of_the_reported_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu.FLAGS_ENV, raising=False)

    info = cpu_info()

    assert set(info.flags) <= set(cpu.REPORTED_FLAGS)
