"""Tests for interleaved latency measurement, output comparison and memory readings."""

import math
import time

import numpy as np
import pytest

from worker.measure.benchmark import compare_outputs, measure_latency, peak_rss_bytes, rss_bytes

STAT_KEYS = {"mean", "std", "min", "max", "p50", "p90", "p95", "p99", "iterations", "throughput"}


def _sleeper(seconds: float):
    def run(inputs: dict[str, np.ndarray]) -> None:
        time.sleep(seconds)

    return run


def _recorder(label: str, calls: list[str]):
    def run(inputs: dict[str, np.ndarray]) -> None:
        calls.append(label)

    return run


@pytest.fixture
def batch_inputs() -> dict[str, np.ndarray]:
    return {"x": np.zeros((8, 3), dtype=np.float32)}


@pytest.fixture
def two_sleepers(batch_inputs: dict[str, np.ndarray]) -> dict[str, dict]:
    runners = {"fast": _sleeper(0.002), "slow": _sleeper(0.004)}
    return measure_latency(runners, batch_inputs, iterations=10, warmup=1, burst=5)


def test_every_runner_gets_the_requested_iterations(two_sleepers: dict[str, dict]) -> None:
    counts = {label: stats["iterations"] for label, stats in two_sleepers.items()}

    assert counts == {"fast": 10, "slow": 10}
    assert set(two_sleepers["fast"]) == STAT_KEYS


def test_latency_statistics_are_ordered(two_sleepers: dict[str, dict]) -> None:
    keys = ("min", "p50", "p90", "p95", "p99", "max")

    orders = [[stats[k] for k in keys] for stats in two_sleepers.values()]

    assert all(order == sorted(order) for order in orders)


def test_slower_runner_has_the_larger_p50(two_sleepers: dict[str, dict]) -> None:
    fast, slow = two_sleepers["fast"], two_sleepers["slow"]

    assert slow["p50"] > fast["p50"]
    assert fast["p50"] >= 2.0  # milliseconds: the sleep is the floor


def test_throughput_is_batch_size_per_mean_latency(two_sleepers: dict[str, dict]) -> None:
    stats = two_sleepers["fast"]

    assert math.isclose(stats["throughput"], 8 * 1000 / stats["mean"])


def test_runners_are_interleaved_in_bursts_after_an_untimed_call() -> None:
    calls: list[str] = []
    runners = {"a": _recorder("a", calls), "b": _recorder("b", calls)}

    measure_latency(runners, {"x": np.zeros(2)}, iterations=4, warmup=1, burst=2)

    # warm-up a, warm-up b, then per burst one untimed call and two timed ones, alternating
    assert "".join(calls) == "ab" + "aaa" + "bbb" + "aaa" + "bbb"


def test_spent_time_budget_stops_at_the_minimum_iterations() -> None:
    runners = {"a": _sleeper(0.0), "b": _sleeper(0.0)}

    result = measure_latency(
        runners, {"x": np.zeros(1)}, iterations=1000, min_iterations=5, time_budget_s=0, burst=5
    )

    assert {label: s["iterations"] for label, s in result.items()} == {"a": 5, "b": 5}


def test_scalar_input_counts_as_a_batch_of_one() -> None:
    result = measure_latency({"a": _sleeper(0.0)}, {"x": np.array(3.0)}, iterations=3, warmup=0)

    assert math.isclose(result["a"]["throughput"], 1000 / result["a"]["mean"])


def test_identical_outputs_have_zero_error_and_unit_cosine() -> None:
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)

    result = compare_outputs([ref], [ref.copy()], ["logits"])["logits"]

    assert result["max_abs_error"] == 0.0
    assert result["mean_abs_error"] == 0.0
    assert result["cosine_min"] == pytest.approx(1.0)
    assert result["cosine_mean"] == pytest.approx(1.0)
    assert result["top1_agreement"] == 1.0
    assert result["nan_or_inf"] is False
    assert result["shape_match"] is True


def test_known_perturbation_gives_the_exact_errors() -> None:
    ref = np.arange(12, dtype=np.float32).reshape(3, 4)
    cand = ref.copy()
    cand[1, 2] += 0.5

    result = compare_outputs([ref], [cand], ["y"])["y"]

    assert result["max_abs_error"] == 0.5
    assert result["mean_abs_error"] == pytest.approx(0.5 / 12)


def test_cosine_is_per_sample_and_reports_the_worst() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    cand = np.array([[1.0, 1.0], [0.0, 3.0]])

    result = compare_outputs([ref], [cand], ["y"])["y"]

    assert result["cosine_min"] == pytest.approx(1 / math.sqrt(2))
    assert result["cosine_mean"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_top1_agreement_counts_equal_argmax_rows() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = np.array([[0.2, 0.8], [0.7, 0.3], [0.9, 0.1], [0.6, 0.4]])

    result = compare_outputs([ref], [cand], ["probs"])["probs"]

    assert result["top1_agreement"] == 0.75


def test_top1_agreement_is_none_beyond_three_dimensions() -> None:
    ref = np.ones((2, 3, 4, 5))

    result = compare_outputs([ref], [ref], ["hidden"])["hidden"]

    assert result["top1_agreement"] is None


def test_nan_in_the_candidate_is_flagged() -> None:
    ref = np.ones((2, 3), dtype=np.float32)
    cand = ref.copy()
    cand[0, 1] = np.nan

    result = compare_outputs([ref], [cand], ["y"])["y"]

    assert result["nan_or_inf"] is True
    assert result["max_abs_error"] is None


def test_two_zero_samples_have_cosine_one() -> None:
    zeros = np.zeros((2, 5))

    result = compare_outputs([zeros], [zeros.copy()], ["y"])["y"]

    assert result["cosine_min"] == 1.0


def test_one_zero_sample_has_cosine_zero() -> None:
    ref = np.array([[0.0, 0.0], [1.0, 1.0]])
    cand = np.array([[1.0, 0.0], [1.0, 1.0]])

    result = compare_outputs([ref], [cand], ["y"])["y"]

    assert result["cosine_min"] == 0.0


def test_shape_mismatch_is_reported() -> None:
    result = compare_outputs([np.ones((2, 3))], [np.ones((2, 4))], ["y"])["y"]

    assert result["shape_match"] is False
    assert result["max_abs_error"] is None


def test_different_output_counts_raise() -> None:
    with pytest.raises(ValueError, match="match"):
        compare_outputs([np.ones(2)], [np.ones(2), np.ones(2)], ["a"])


def test_rss_grows_when_memory_is_touched() -> None:
    before = rss_bytes()

    block = np.ones(64 * 1024 * 1024, dtype=np.uint8)
    after = rss_bytes()

    assert after - before >= 0.75 * block.nbytes


def test_peak_rss_is_at_least_the_current_rss() -> None:
    current = rss_bytes()

    peak = peak_rss_bytes()

    assert peak >= current > 0
