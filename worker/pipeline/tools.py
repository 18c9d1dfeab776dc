"""The worker's implementation of `PassTools`: loading, example inputs, export validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import JobFailure
from worker.measure.benchmark import compare_outputs
from worker.measure.inputs import dataset_inputs, onnx_input_specs, synthesize_from_specs
from worker.passes.base import AccuracyTarget, PassContext
from worker.runtimes import loaded as runtimes
from worker.runtimes.torch_programs import load_program


class WorkerTools:
    def __init__(
        self,
        specs: list[dict[str, Any]],
        vocab: dict[str, int],
        shapes: dict[str, list[int]] | None,
        threads: int,
        datasets: dict[str, Path] | None = None,
    ) -> None:
        self.specs, self.vocab, self.shapes, self.threads = specs, vocab, shapes, threads
        self.datasets = datasets or {}

    def context(
        self,
        input_path: Path,
        input_format: str,
        work_dir: Path,
        *,
        step_index: int = 0,
        device: str = "cpu",
        original_path: Path | None = None,
        original_format: str | None = None,
        target_cosine: float | None = None,
        target_accuracy: AccuracyTarget | None = None,
        speed_batches: tuple[int, ...] = (),
    ) -> PassContext:
        """The context a pass runs in, lent these tools, inputs, threads and datasets."""
        return PassContext(
            input_path=input_path,
            input_format=input_format,
            work_dir=work_dir,
            step_index=step_index,
            threads=self.threads,
            tools=self,
            inputs=self.specs,
            device=device,
            datasets=self.datasets,
            original_path=original_path,
            original_format=original_format,
            target_cosine=target_cosine,
            target_accuracy=target_accuracy,
            speed_batches=speed_batches,
        )

    def dataset_inputs(
        self, dataset_id: str, limit: int | None = None
    ) -> tuple[dict[str, Any], Any]:
        names = [s["name"] for s in self.specs]
        try:
            return dataset_inputs(self.datasets[dataset_id], names, limit)
        except (KeyError, ValueError) as exc:
            raise JobFailure("invalid_dataset", f"Dataset {dataset_id}: {exc}") from exc

    def load_torch(self, path: Path, fmt: str) -> tuple[Any, Any]:
        return load_program(path, fmt)

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, Any]:
        return synthesize_from_specs(self.specs, batch_size, self.shapes, seed, self.vocab)

    def validation_batches(self) -> list[int]:
        first = self.specs[0]["shape"] if self.specs and self.specs[0]["shape"] else [1]
        return [first[0]] if isinstance(first[0], int) else [1, 3]

    def validate(
        self,
        reference: Path,
        reference_format: str,
        candidate: Path,
        candidate_format: str,
        *,
        rtol: float,
        atol: float,
    ) -> dict[str, Any]:
        """Both models on the same inputs at each batch size; JobFailure past the tolerance."""
        ref = runtimes.load(reference, reference_format, self.specs, self.threads)
        cand = runtimes.load(candidate, candidate_format, self.specs, self.threads)
        errors: dict[str, float | None] = {}
        for batch in self.validation_batches():
            feeds = self.example_inputs(batch, seed=batch)
            expected = ref.run(feeds)
            try:
                got = cand.run(feeds)
            except Exception as exc:
                raise JobFailure(
                    "export_mismatch", f"The converted model fails at batch size {batch}: {exc}"
                ) from exc
            names = [f"output_{i}" for i in range(len(expected))]
            compared = compare_outputs(expected, got, names)
            errors[str(batch)] = max(
                (c["max_abs_error"] for c in compared.values()),
                default=None,
                key=lambda e: float("inf") if e is None else e,
            )
            for exp, out in zip(expected, got, strict=False):
                if exp.shape != out.shape or not np.allclose(out, exp, rtol=rtol, atol=atol):
                    raise JobFailure(
                        "export_mismatch",
                        f"The converted model differs from the original at batch size {batch}: "
                        f"max abs error {errors[str(batch)]}, tolerance rtol={rtol} atol={atol}.",
                    )
        return {
            "batch_sizes": list(map(int, errors)),
            "max_abs_error": errors,
            "rtol": rtol,
            "atol": atol,
        }


def onnx_context(
    path: Path,
    work_dir: Path,
    *,
    threads: int = 2,
    datasets: dict[str, Path] | None = None,
    vocab: dict[str, int] | None = None,
    shapes: dict[str, list[int]] | None = None,
    original_path: Path | None = None,
    original_format: str | None = None,
) -> PassContext:
    """A pass context for one ONNX file outside a job (scripts, tests): its own tools."""
    tools = WorkerTools(onnx_input_specs(path), vocab or {}, shapes, threads, datasets)
    return tools.context(
        path, "onnx", work_dir, original_path=original_path, original_format=original_format
    )
