"""What an MLflow run holds, built from a job and its report: params within MLflow's limits,
only the metrics the report has, the verdict as a word."""

from __future__ import annotations

import math
from typing import Any

from mlflow.utils import validation
from support import report_document

from app.tracking import record


def test_our_limits_are_the_installed_mlflows() -> None:
    assert record.MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH
    assert record.MAX_PARAM_VALUE_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert record.MAX_TAG_VALUE_LENGTH == validation.MAX_TAG_VAL_LENGTH


def test_the_spec_flattens_to_dotted_params_without_the_callback() -> None:
    spec = {
        "model_id": "m-1",
        "steps": [
            {"op": "prune", "method": "magnitude", "sparsity": 0.5},
            {"op": "quantize", "mode": "dynamic", "per_channel": False, "op_types": None},
        ],
        "benchmark": {"batch_sizes": [1, 32], "input_shapes": {"input_ids": [1, 128]}},
        "callback_url": "https://hooks.example.com/x?token=secret",
    }

    params = record.params(spec)

    assert params == {
        "model_id": "m-1",
        "steps.0.op": "prune",
        "steps.0.method": "magnitude",
        "steps.0.sparsity": "0.5",
        "steps.1.op": "quantize",
        "steps.1.mode": "dynamic",
        "steps.1.per_channel": "false",
        "steps.1.op_types": "null",
        "benchmark.batch_sizes": "[1, 32]",
        "benchmark.input_shapes.input_ids": "[1, 128]",
    }


def test_keys_and_values_fit_mlflows_rules() -> None:
    long_name = "x" * 400
    spec = {
        "benchmark": {
            "input_shapes": {
                "input:0/[weird]": [1],
                long_name + "a": [2],
                long_name + "b": [3],
            }
        },
        "exclude_nodes": "n" * 7000,
    }

    params = record.params(spec)

    assert "benchmark.input_shapes.input:0__weird_" in params
    assert len(params) == 4  # the two long keys stay distinct
    for name, value in params.items():
        assert len(name) <= validation.MAX_ENTITY_KEY_LENGTH
        validation._validate_param_name(name)
        assert len(value) <= validation.MAX_PARAM_VAL_LENGTH
    assert params["exclude_nodes"].endswith("...")


def _report() -> dict[str, Any]:
    report: dict[str, Any] = report_document("job-1", met=True)
    report["baseline"]["latency_ms"] = {"1": {"p50": 2.0}, "32": {"p50": 40.0}}
    report["optimized"]["latency_ms"] = {"1": {"p50": 1.0}, "32": {"p50": None}}
    report["comparison"] = {"size_ratio": 0.25, "speedup": {"1": 2.0}}
    report["fidelity"] = {
        "outputs": {
            "logits": {"cosine_mean": 0.99, "cosine_min": 0.95, "top1_agreement": 1.0},
            "hidden": {"cosine_mean": 0.97, "cosine_min": float("nan"), "top1_agreement": None},
        }
    }
    report.pop("accuracy", None)
    return report


def test_metrics_are_only_the_reports_numbers() -> None:
    report = _report()

    metrics = record.metrics(report)

    assert metrics == {
        "latency_p50_ms_b1": 1.0,
        "baseline_latency_p50_ms_b1": 2.0,
        "baseline_latency_p50_ms_b32": 40.0,
        "speedup_b1": 2.0,
        "size_ratio": 0.25,
        "size_bytes": float(report["optimized"]["size_bytes"]),
        "baseline_size_bytes": float(report["baseline"]["size_bytes"]),
        "cosine_mean": 0.97,  # the worst output
        "cosine_mean.logits": 0.99,
        "cosine_mean.hidden": 0.97,
        "cosine_min": 0.95,  # NaN is not a number MLflow gets
        "cosine_min.logits": 0.95,
        "top1_agreement": 1.0,
        "top1_agreement.logits": 1.0,
    }
    assert all(math.isfinite(v) for v in metrics.values())


def test_accuracy_metrics_come_with_an_evaluation() -> None:
    report = _report()
    report["accuracy"] = {"metric": "accuracy", "baseline": 0.9, "optimized": 0.88, "drop": 0.02}

    metrics = record.metrics(report)

    assert (metrics["accuracy_drop"], metrics["accuracy_baseline"]) == (0.02, 0.9)
    assert metrics["accuracy_optimized"] == 0.88
    assert record.metrics(None) == {}


def test_the_verdict_and_the_job_become_tags() -> None:
    job = {
        "id": "j-1",
        "model_id": "m-1",
        "tenant_id": "t-1",
        "status": "succeeded",
        "spec": {"steps": [{"op": "prune"}, {"op": "quantize"}]},
        "error_code": None,
    }

    tags = record.tags(job, {"met": False, "reasons": ["missed: speedup", "met: size"]})

    assert tags == {
        "modelpress.job_id": "j-1",
        "modelpress.model_id": "m-1",
        "modelpress.tenant_id": "t-1",
        "modelpress.status": "succeeded",
        "modelpress.ops": "prune+quantize",
        "modelpress.verdict": "not_met",
        "modelpress.verdict_reasons": "missed: speedup; met: size",
    }
    assert record.tags(job, {"met": True})["modelpress.verdict"] == "met"
    assert record.tags(job, {"met": None})["modelpress.verdict"] == "none"
    failed = record.tags({**job, "status": "failed", "error_code": "job_error"}, None)
    assert "modelpress.verdict" not in failed and failed["modelpress.error_code"] == "job_error"
    assert record.ops({"recipe": "auto"}) == "auto"
