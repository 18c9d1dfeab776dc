"""`recipe: auto` chooses the best that qualifies by the objective, else the closest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.core.errors import JobFailure
from app.jobs.schemas import Constraints
from worker.pipeline import auto
from worker.pipeline.auto import _choose


def _job(objective: str = "latency", **constraints: Any) -> Any:
    spec = SimpleNamespace(
        objective=objective, constraints=Constraints(**constraints) if constraints else None
    )
    return SimpleNamespace(spec=spec, source="/scratch/input/model.onnx", fmt="onnx")


def _record(
    name: str,
    size: int,
    speedup: float,
    met: bool | None,
    drop: float | None = None,
    guarded: bool = True,
) -> dict:
    return {
        "name": name,
        "error": None,
        "size_bytes": size,
        "speedup": {"1": speedup},
        "latency_ms_p50": {"1": 10 / speedup},
        "accuracy_drop": drop,
        "met": met,
        "guarded": guarded,  # neither slower beyond the noise nor collapsed
        "cosine_mean": 0.999,
        "reasons": [] if met else [f"missed: {name}"],
    }


def test_the_fastest_qualifying_candidate_wins_on_latency() -> None:
    tried = [
        _record("a", 100, 1.5, True),
        _record("b", 50, 2.5, True),
        _record("c", 10, 3.0, False),
    ]

    best, why = _choose(tried, _job(min_speedup=1.2))

    assert best["name"] == "b"
    assert "best of 2" in why


def test_the_smallest_qualifying_candidate_wins_on_size() -> None:
    tried = [_record("a", 100, 1.5, True), _record("b", 50, 2.5, True)]

    best, _ = _choose(tried, _job("size", min_speedup=1.2))

    assert best["name"] == "b"


def test_without_constraints_every_candidate_qualifies() -> None:
    tried = [_record("a", 100, 1.1, None), _record("b", 100, 1.4, None)]

    best, _ = _choose(tried, _job())

    assert best["name"] == "b"


def test_when_none_qualifies_the_closest_is_returned_with_the_reason() -> None:
    tried = [
        _record("far", 100, 1.0, False, drop=0.20),
        _record("close", 100, 1.0, False, drop=0.02),
    ]

    best, why = _choose(tried, _job(max_accuracy_drop=0.01))

    assert best["name"] == "close"
    assert "No candidate met the constraints" in why and "close" in why


def test_failed_candidates_are_never_chosen() -> None:
    tried = [{"name": "broken", "error": "boom", "met": False}, _record("ok", 100, 0.9, False)]

    best, _ = _choose(tried, _job(min_speedup=2.0))

    assert best["name"] == "ok"


def test_all_candidates_failing_fails_the_job() -> None:
    tried = [{"name": "broken", "error": "boom", "met": False}]

    with pytest.raises(JobFailure) as failure:
        _choose(tried, _job())

    assert failure.value.code == "no_candidate"


def test_a_slower_or_broken_candidate_is_not_the_closest() -> None:
    tried = [
        _record("broken-but-small", 10, 3.0, False, drop=0.0, guarded=False),
        _record("safe", 100, 1.1, False, drop=0.05),
    ]

    best, why = _choose(tried, _job(max_accuracy_drop=0.01))

    assert best["name"] == "safe"
    assert "without being slower or broken" in why


def test_when_every_candidate_is_slower_or_broken_the_original_is_kept() -> None:
    tried = [
        _record("slower", 100, 0.8, False, guarded=False),
        _record("collapsed", 50, 2.0, False, guarded=False),
    ]

    best, why = _choose(tried, _job())

    assert best["name"] == "original"
    assert best["steps"] == [] and best["records"] == []
    assert (best["path"], best["format"]) == ("/scratch/input/model.onnx", "onnx")
    assert "the original model is returned unchanged" in why


def _graph_job(tmp_path: Path, rows: int) -> Any:
    weight = numpy_helper.from_array(np.zeros((rows, 8), dtype=np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
        [weight],
    )
    path = tmp_path / f"mm{rows}.onnx"
    onnx.save(helper.make_model(graph), str(path))
    spec = SimpleNamespace(calibration_dataset_id=None, constraints=None, evaluation=None)
    return SimpleNamespace(spec=spec, source=path, fmt="onnx")


def test_weight_only_int4_is_a_candidate_for_large_matmul_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auto, "WEIGHT_ONLY_MIN_ELEMENTS", 1024)

    large = dict(auto.candidate_specs(_graph_job(tmp_path, 256)))
    small = dict(auto.candidate_specs(_graph_job(tmp_path, 64)))

    assert large["int4-weight-only"] == [{"op": "quantize", "mode": "weight_only"}]
    assert "int4-weight-only" not in small


def test_a_min_cosine_adds_the_mixed_precision_candidates(tmp_path: Path) -> None:
    job = _graph_job(tmp_path, 64)
    job.spec.constraints = Constraints(min_cosine=0.995)
    job.spec.calibration_dataset_id = "cal"

    names = dict(auto.candidate_specs(job))

    mixed = {"op": "quantize", "keep_float": "auto", "sensitivity_dataset_id": "cal"}
    assert names["int8-dynamic-mixed"] == [mixed]  # judged on the real (calibration) data
    assert names["fusions+int8-dynamic-mixed"][0] == {"op": "optimize", "transformer_fusions": True}
    # After the fusions, the fused Attention nodes (Q/K/V) are quantized too, as directly.
    assert "Attention" in names["fusions+int8-dynamic"][1]["op_types"]
    assert "Attention" in names["fusions+int8-dynamic-mixed"][1]["op_types"]
    assert "op_types" not in names["int8-dynamic-mixed"][0]
    assert names["int8-static-mixed"][0]["keep_float"] == "auto"
    assert "int8-dynamic-mixed" not in dict(auto.candidate_specs(_graph_job(tmp_path, 32)))


def test_the_mixed_candidates_judge_their_nodes_on_the_evaluation_dataset(tmp_path: Path) -> None:
    job = _graph_job(tmp_path, 64)
    job.spec.constraints = Constraints(min_cosine=0.995)
    job.spec.evaluation = SimpleNamespace(dataset_id="eval")

    names = dict(auto.candidate_specs(job))

    assert names["int8-dynamic-mixed"][0]["sensitivity_dataset_id"] == "eval"
    assert names["fusions+int8-dynamic-mixed"][1]["sensitivity_dataset_id"] == "eval"
    job.spec.calibration_dataset_id = "cal"  # given, it is preferred: the evaluation stays held out
    static = dict(auto.candidate_specs(job))["int8-static-mixed"][0]
    assert (static["calibration_dataset_id"], static["sensitivity_dataset_id"]) == ("cal", "cal")


def test_a_judged_max_accuracy_drop_adds_the_mixed_candidates_too(tmp_path: Path) -> None:
    job = _graph_job(tmp_path, 64)
    job.spec.constraints = Constraints(max_accuracy_drop=0.01)

    unjudged = dict(auto.candidate_specs(job))  # no evaluation: no labels to judge it on
    job.spec.evaluation = SimpleNamespace(dataset_id="eval")
    judged = dict(auto.candidate_specs(job))

    assert "int8-dynamic-mixed" not in unjudged
    assert judged["int8-dynamic-mixed"][0]["keep_float"] == "auto"
    assert judged["fusions+int8-dynamic-mixed"][1]["sensitivity_dataset_id"] == "eval"


@pytest.mark.parametrize(("worst", "met"), [(0.97, False), (0.985, True), (None, False)])
def test_with_min_cosine_a_candidate_must_also_clear_the_sample_floor(
    worst: float | None, met: bool
) -> None:
    record = _record("mixed", 100, 2.0, True) | {"cosine_min": worst}

    judged = auto.judge_worst_sample(_job(min_cosine=0.995), record)

    assert judged["met"] is met
    assert judged["reasons"][-1].startswith("met" if met else "missed")
    assert "0.9800" in judged["reasons"][-1]  # the floor for 0.995


def test_the_sample_floor_decides_between_candidates_of_equal_mean() -> None:
    job = _job(min_cosine=0.995)
    fast = auto.judge_worst_sample(job, _record("fast", 100, 2.0, True) | {"cosine_min": 0.95})
    safe = auto.judge_worst_sample(job, _record("safe", 100, 1.5, True) | {"cosine_min": 0.99})

    best, _ = _choose([fast, safe], job)

    assert best["name"] == "safe"
    assert auto.judge_worst_sample(_job(), fast) == fast  # without min_cosine: no floor
