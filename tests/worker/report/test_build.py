"""The verdict logic and the report's derived numbers, against hand-computed cases; the report
is validated against its published schema when it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.artifacts.schemas import Report
from app.jobs.schemas import Constraints
from worker.report.build import comparison, verdict, write_report


def _facts(size: int, p50: dict[str, float]) -> dict:
    return {"size_bytes": size, "latency_ms": {b: {"p50": v} for b, v in p50.items()}}


@pytest.fixture
def faster() -> tuple[dict, dict]:
    return _facts(1000, {"1": 10.0, "32": 100.0}), _facts(250, {"1": 5.0, "32": 40.0})


def test_comparison_is_the_ratio_of_measured_p50s(faster: tuple[dict, dict]) -> None:
    comp = comparison(*faster)

    assert comp == {"size_ratio": 0.25, "speedup": {"1": 2.0, "32": 2.5}}


def test_no_constraints_still_runs_the_guard(faster: tuple[dict, dict]) -> None:
    judged = verdict(None, comparison(*faster), faster[1], None, _fidelity(0.999, 1.0))

    assert judged["met"] is True
    assert judged["reasons"] == [
        "met: `output` is not collapsed (cosine_mean 0.999, top1_agreement 1.000; floor 0.9)",
        "met: not slower than the original beyond the noise at any batch size",
    ]


def test_every_constraint_met(faster: tuple[dict, dict]) -> None:
    constraints = Constraints(
        max_accuracy_drop=0.01,
        min_speedup=2.0,
        max_size_bytes=300,
        max_latency_ms=50,
        fail_if_slower=True,
    )
    accuracy = {"drop": 0.005}

    judged = verdict(constraints, comparison(*faster), faster[1], accuracy)

    assert judged["met"] is True
    assert len(judged["reasons"]) == 5
    assert all(r.startswith("met: ") for r in judged["reasons"])


def test_min_speedup_is_judged_at_the_worst_batch_size(faster: tuple[dict, dict]) -> None:
    judged = verdict(Constraints(min_speedup=2.2), comparison(*faster), faster[1], None)

    assert judged["met"] is False
    assert judged["reasons"][0] == "missed: speedup 2.000x >= 2.2x at every batch size"


def test_accuracy_budget_without_evaluation_is_not_met(faster: tuple[dict, dict]) -> None:
    judged = verdict(Constraints(max_accuracy_drop=0.01), comparison(*faster), faster[1], None)

    assert judged["met"] is False
    assert "not measured" in judged["reasons"][0]


def test_accuracy_drop_over_budget_is_missed(faster: tuple[dict, dict]) -> None:
    judged = verdict(
        Constraints(max_accuracy_drop=0.01), comparison(*faster), faster[1], {"drop": 0.02}
    )

    assert judged["met"] is False


def test_slower_models_are_noted_and_fail_if_slower(faster: tuple[dict, dict]) -> None:
    base, _ = faster
    slower = _facts(900, {"1": 12.0, "32": 90.0})

    judged = verdict(Constraints(fail_if_slower=True), comparison(base, slower), slower, None)

    assert judged["met"] is False
    assert any("slower than the original at batch size(s) 1" in n for n in judged["notes"])


def _fidelity(cosine: float | None, top1: float | None, **extra: Any) -> dict[str, Any]:
    output = {
        "cosine_mean": cosine,
        "top1_agreement": top1,
        "max_abs_error": 0.01,
        "nan_or_inf": False,
        "shape_match": True,
        **extra,
    }
    return {"outputs": {"output": output}}


@pytest.mark.parametrize(
    ("cosine", "top1", "extra"),
    [
        (-0.66, None, {}),  # the int8 LLM on an AVX2 CPU without reduce_range
        (0.97, 0.62, {}),  # faithful-looking logits, wrong answers
        (0.99, None, {"top1_agreement_last": 0.5}),  # a decoder's next token
        (None, None, {"nan_or_inf": True}),
    ],
    ids=["cosine", "top1", "next-token", "nan"],
)
def test_a_collapsed_output_is_not_recommended_first(
    faster: tuple[dict, dict], cosine: float | None, top1: float | None, extra: dict[str, Any]
) -> None:
    judged = verdict(None, comparison(*faster), faster[1], None, _fidelity(cosine, top1, **extra))

    assert judged["met"] is False
    assert judged["notes"][0].startswith("Not recommended: `output` is not collapsed")
    assert any(r.startswith("missed: `output` is not collapsed") for r in judged["reasons"])


def test_a_fidelity_constraint_replaces_the_guard_floor(faster: tuple[dict, dict]) -> None:
    fidelity = _fidelity(0.85, 0.8)

    loose = verdict(Constraints(min_cosine=0.8), comparison(*faster), faster[1], None, fidelity)
    strict = verdict(Constraints(min_cosine=0.9), comparison(*faster), faster[1], None, fidelity)

    assert loose["met"] is True
    assert "met: `output` cosine_mean 0.8500 >= 0.8" in loose["reasons"]
    assert strict["met"] is False


def test_max_abs_error_is_judged_on_every_output(faster: tuple[dict, dict]) -> None:
    fidelity = _fidelity(0.999, 1.0)

    within = verdict(
        Constraints(max_abs_error=0.02), comparison(*faster), faster[1], None, fidelity
    )
    beyond = verdict(
        Constraints(max_abs_error=0.001), comparison(*faster), faster[1], None, fidelity
    )

    assert within["met"] is True
    assert beyond["met"] is False


def test_slower_within_the_noise_is_not_a_miss() -> None:
    base, opt = _facts(1000, {"1": 10.0}), _facts(900, {"1": 10.3})
    comp = {**comparison(base, opt), "noise": {"1": 0.95}}

    judged = verdict(None, comp, opt, None)

    assert judged["met"] is True
    assert any("within the noise" in n for n in judged["notes"])


def test_fail_if_slower_false_accepts_a_slower_model(faster: tuple[dict, dict]) -> None:
    base, _ = faster
    slower = _facts(900, {"1": 12.0, "32": 90.0})

    judged = verdict(Constraints(fail_if_slower=False), comparison(base, slower), slower, None)

    assert judged["met"] is True
    assert any("slower than the original" in n for n in judged["notes"])


def test_slower_by_default_is_not_recommended_first(faster: tuple[dict, dict]) -> None:
    base, _ = faster
    slower = _facts(900, {"1": 12.0, "32": 90.0})

    judged = verdict(None, comparison(base, slower), slower, None)

    assert judged["met"] is False
    assert judged["notes"][0].startswith("Not recommended: not slower than the original")


def test_speedups_inside_the_noise_band_are_flagged(faster: tuple[dict, dict]) -> None:
    base = _facts(1000, {"1": 10.0})
    opt = _facts(900, {"1": 9.8})
    comp = {**comparison(base, opt), "noise": {"1": 1.05}}

    judged = verdict(None, comp, opt, None)

    assert any("within the noise" in n for n in judged["notes"])


def test_written_report_is_the_json_and_comes_back_typed(
    full_report: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "report.json"

    written = write_report(path, full_report)

    assert json.loads(path.read_text()) == full_report
    assert isinstance(written, Report)
    assert written.optimized.latency_ms["32"].p99 == pytest.approx(5.6 * 20 * 1.3)


@pytest.mark.parametrize("key", ["baseline", "verdict", "environment"])
def test_report_missing_a_required_key_raises_and_writes_nothing(
    full_report: dict[str, Any], tmp_path: Path, key: str
) -> None:
    del full_report[key]
    path = tmp_path / "report.json"

    with pytest.raises(ValidationError, match=key):
        write_report(path, full_report)

    assert not path.exists()


def test_report_with_a_value_of_the_wrong_type_raises(
    full_report: dict[str, Any], tmp_path: Path
) -> None:
    full_report["optimized"]["size_bytes"] = "big"

    with pytest.raises(ValidationError, match="size_bytes"):
        write_report(tmp_path / "report.json", full_report)


def test_report_is_validated_as_a_reader_loads_it(
    full_report: dict[str, Any], tmp_path: Path
) -> None:
    # Keyed by int before the JSON round trip; a reader sees (and the schema expects) strings.
    full_report["comparison"]["speedup"] = {1: 1.78, 32: 1.7}

    written = write_report(tmp_path / "report.json", full_report)

    assert written.comparison.speedup == {"1": 1.78, "32": 1.7}
