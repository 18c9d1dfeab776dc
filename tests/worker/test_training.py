"""The distillation engine's inference chunking (worker/training.py): large samples (detector
pages) go through a runtime a few at a time, so that the teacher, the held-out evaluation and
the write-back check stay within the sandbox's memory (256 pages of 640 x 640 in one ONNX Runtime
call take ~12 GB, past its 12 GiB cap)."""

from __future__ import annotations

import numpy as np
import torch

from worker.training import INFERENCE_BYTES, INFERENCE_SAMPLES, inference_chunk


def test_small_samples_go_256_at_a_time() -> None:
    arrays = [np.zeros((1000, 1, 8, 8), np.float32), np.zeros((1000, 4), np.int64)]

    assert inference_chunk(arrays) == INFERENCE_SAMPLES


def test_large_samples_are_bounded_by_bytes() -> None:
    pages = np.zeros((8, 3, 640, 640), np.float32)  # 4.9 MB each

    chunk = inference_chunk([pages])

    assert 1 <= chunk < INFERENCE_SAMPLES
    assert chunk * pages[0].nbytes <= INFERENCE_BYTES


def test_a_sample_larger_than_the_budget_still_runs_alone() -> None:
    assert inference_chunk([torch.zeros(2, 3, 2048, 2048)]) == 1
