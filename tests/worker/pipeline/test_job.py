"""The job's measuring decisions that depend on the child's limits."""

from __future__ import annotations

import resource

import pytest

from worker.pipeline import job


@pytest.mark.parametrize(
    ("limit", "size", "fits"),
    [
        (12 * 1024**3, 650 * 1024**2, True),  # the 650 MB LLM under the default 12 GiB cap
        (12 * 1024**3, 1536 * 1024**2, True),
        (12 * 1024**3, 2 * 1024**3, False),  # three copies would crowd the address space
        (resource.RLIM_INFINITY, 400 * 1024**2, True),  # CUDA children: 4 GiB budget
        (resource.RLIM_INFINITY, 900 * 1024**2, False),
    ],
)
def test_the_noise_control_loads_when_a_second_copy_fits(
    monkeypatch: pytest.MonkeyPatch, limit: int, size: int, fits: bool
) -> None:
    monkeypatch.setattr(job.resource, "getrlimit", lambda _which: (limit, limit))

    assert job.control_fits(size) is fits
