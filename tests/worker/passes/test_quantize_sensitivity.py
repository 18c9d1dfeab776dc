"""Layer sensitivity and `keep_float: auto` on a network with one deliberately fragile layer: its
input carries an activation outlier (as the FFN down-projections of transformers do after GELU),
so dynamic int8's per-tensor activation scale wipes out every other feature there. And on one
whose first layer is fragile only on its real data (an outlier input feature that synthesized
inputs never have): only a real dataset finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from networks import onnx_fragile_mlp

from app.core.errors import JobFailure
from app.passes.quantize import SENSITIVITY_BATCH, QuantizeConfig, sample_floor, spec_problem
from worker import sensitivity
from worker.passes.base import AccuracyTarget
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context
from worker.sensitivity import Fidelity, Target


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_fragile_mlp(tmp_path_factory.mktemp("fragile") / "fragile.onnx")


def _worst_cosine(a: Path, b: Path) -> float:
    x = np.random.default_rng(7).normal(size=(64, 32)).astype(np.float32)
    ref, got = (ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (a, b))
    with np.errstate(invalid="ignore"):
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(np.nan_to_num(cos, nan=0.0).mean())  # an all-zero output agrees with nothing


def test_sensitivity_ranks_the_fragile_layer_first(fragile: Path, tmp_path: Path) -> None:
    result = QuantizePass().run(
        onnx_context(fragile, tmp_path), QuantizeConfig(op="quantize", sensitivity=True)
    )

    rows = result.sensitivity
    assert rows is not None and rows[0]["node"] == "down"
    assert {r["node"] for r in rows} == {"up", "down", "head"}
    assert rows[0]["error"] > 10 * max(r["error"] for r in rows[1:])
    assert all(0 <= r["time_share"] <= 1 for r in rows)
    assert result.metrics["nodes_quantized"] == 3  # sensitivity alone changes nothing


def test_keep_float_auto_meets_the_target_with_fewer_float_nodes(
    fragile: Path, tmp_path: Path
) -> None:
    (tmp_path / "all").mkdir()
    (tmp_path / "auto").mkdir()
    everything = QuantizePass().run(
        onnx_context(fragile, tmp_path / "all"), QuantizeConfig(op="quantize")
    )
    ctx = onnx_context(fragile, tmp_path / "auto")
    ctx.target_cosine = 0.99

    auto = QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    chosen = auto.metrics["keep_float"]
    assert _worst_cosine(fragile, everything.output_path) < 0.99  # all int8 misses the target
    assert chosen["kept_float"] == ["down"]  # for fidelity: 1 of 3, not all float
    assert chosen["cosine_mean"] >= 0.99
    # On top, op types whose int8 form measured slower here stay float too: never slower.
    slower = {t for t, timed in chosen["op_type_timing"].items() if timed["slower"]}
    assert set(chosen["kept_float_for_speed"]) == ({"up", "head"} if "MatMul" in slower else set())
    if chosen["int8_pays"]:
        assert auto.metrics["float_nodes"] == sorted(["down", *chosen["kept_float_for_speed"]])
    else:  # the whole int8 model measured slower here: the step ships its input unchanged
        assert auto.output_path == ctx.input_path and auto.metrics["nodes_quantized"] == 0
    assert _worst_cosine(fragile, auto.output_path) >= 0.99  # on inputs it never saw


@pytest.mark.parametrize("pays", [True, False])
def test_keep_float_auto_keeps_the_model_float_where_int8_measured_slower_as_a_whole(
    fragile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pays: bool
) -> None:
    """No op type alone measured slower in int8, but the whole chosen model did (QDQ costs that
    no single type's timing shows): the step ships its input unchanged and says so, with the
    measured numbers, at each of the job's benchmark batch sizes."""
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w")
    ctx.target_cosine = 0.99
    ctx.speed_batches = (1, 8)
    timed_batches: list[int] = []
    timed_files: set[Path] = set()

    def timed(chosen: Path, variant: Path, feeds: dict[str, Any], threads: int) -> dict[str, Any]:
        whole = variant == ctx.input_path  # against the float original, not an op-type variant
        if whole:
            timed_batches.append(len(feeds["x"]))
            timed_files.add(chosen)
        slow = whole and not pays
        return {"int8_p50_ms": 2.0 if slow else 1.0, "float_p50_ms": 1.0, "slower": slow}

    monkeypatch.setattr(sensitivity, "_timed", timed)

    result = QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    chosen = result.metrics["keep_float"]
    assert timed_batches == [1, 8]
    assert [row["batch"] for row in chosen["whole_model_timing"]] == [1, 8]
    assert chosen["kept_float"] == ["down"] and chosen["kept_float_for_speed"] == []
    assert chosen["int8_pays"] is pays
    if pays:
        assert timed_files == {result.output_path}  # the step ships the file it timed
        assert result.output_path != ctx.input_path
        assert result.metrics["nodes_quantized"] == 2
        assert not any("int8 measured slower" in w for w in result.warnings)
    else:
        assert result.output_path == ctx.input_path  # the model, unquantized
        assert result.metrics["nodes_quantized"] == 0
        said = next(w for w in result.warnings if "int8 measured slower" in w)
        assert "batch 1: int8 p50 2 ms, float 1 ms" in said
        assert "keeps the model float" in said


@pytest.mark.parametrize(("int8_ms", "float_ms", "slower"), [(2.0, 1.0, True), (1.0, 2.0, False)])
def test_an_op_type_measured_slower_in_int8_stays_float(
    fragile: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    int8_ms: float,
    float_ms: float,
    slower: bool,
) -> None:
    def timed(runners: dict[str, Any], *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return {"int8": {"p50": int8_ms}, "float": {"p50": float_ms}}

    monkeypatch.setattr(sensitivity, "measure_latency", timed)
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w")
    ctx.target_cosine = 0.99

    result = QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    chosen = result.metrics["keep_float"]
    assert chosen["op_type_timing"]["MatMul"]["slower"] is slower
    assert chosen["kept_float_for_speed"] == (["head", "up"] if slower else [])
    assert result.metrics["nodes_quantized"] == (0 if slower else 2)


def test_static_mode_measures_sensitivity_on_the_calibration_data(
    fragile: Path, tmp_path: Path
) -> None:
    data = tmp_path / "cal.npz"
    np.savez(data, x=np.random.default_rng(3).normal(size=(64, 32)).astype(np.float32))
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w", datasets={"cal": data})
    ctx.target_cosine = 0.99
    config = QuantizeConfig(
        op="quantize", mode="static", calibration_dataset_id="cal", keep_float="auto"
    )

    result = QuantizePass().run(ctx, config)

    assert result.sensitivity is not None
    assert result.metrics["sensitivity_samples"] == 64  # all of the calibration data
    assert result.metrics["sensitivity_inputs"] == "calibration dataset cal"
    assert result.metrics["keep_float"]["cosine_mean"] >= 0.99
    assert len(result.metrics["keep_float"]["kept_float"]) < 3


OUTLIER = 0  # the input feature that real data carries at x1000


def _real_only_fragile(path: Path) -> Path:
    """x -> a -> Relu -> b -> Relu -> head, weights of scale 1 / sqrt(fan-in). `a` reads input
    feature 0 with a ~0 weight row: in float it adds nothing, but where the data carries that
    feature at x1000 (the real data below) it sets `a`'s dynamic int8 activation scale and
    wipes out every other feature. Synthesized inputs (standard normal) have no such outlier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    a = (rng.normal(size=(32, 64)) / np.sqrt(32)).astype(np.float32)
    a[OUTLIER, :] = 1e-6
    b = (rng.normal(size=(64, 64)) / 8).astype(np.float32)
    head = (rng.normal(size=(64, 10)) / 8).astype(np.float32)
    inits = [numpy_helper.from_array(w, n) for n, w in (("wa", a), ("wb", b), ("wh", head))]
    nodes = [
        helper.make_node("MatMul", ["x", "wa"], ["ua"], name="a"),
        helper.make_node("Relu", ["ua"], ["ra"], name="relu_a"),
        helper.make_node("MatMul", ["ra", "wb"], ["ub"], name="b"),
        helper.make_node("Relu", ["ub"], ["rb"], name="relu_b"),
        helper.make_node("MatMul", ["rb", "wh"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "real_only_fragile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _real_data(path: Path, samples: int = 100, seed: int = 5) -> Path:
    x = np.random.default_rng(seed).normal(size=(samples, 32)).astype(np.float32)
    x[:, OUTLIER] *= 1000.0
    np.savez(path, x=x)
    return path


def _keep_float_auto(model: Path, work: Path, **config: Any) -> Any:
    data = _real_data(work.parent / f"{work.name}.npz")
    work.mkdir()
    ctx = onnx_context(model, work, datasets={"real": data})
    ctx.target_cosine = 0.99
    return QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto", **config))


def test_a_layer_fragile_only_on_the_real_data_is_found_on_that_data(tmp_path: Path) -> None:
    model = _real_only_fragile(tmp_path / "m.onnx")

    synthesized = _keep_float_auto(model, tmp_path / "synth")
    real = _keep_float_auto(model, tmp_path / "real", sensitivity_dataset_id="real")

    assert synthesized.metrics["sensitivity_inputs"] == "synthesized"
    assert synthesized.metrics["keep_float"]["kept_float"] == []  # random inputs: nothing fragile
    assert real.metrics["sensitivity_inputs"] == "dataset real"
    assert real.metrics["sensitivity_samples"] == 100  # all of it
    assert real.metrics["sensitivity_batch_size"] == 64  # in the job's fidelity batches
    assert real.sensitivity is not None and real.sensitivity[0]["node"] == "a"
    assert real.metrics["keep_float"]["kept_float"] == ["a"]
    # On real data neither choice saw: all int8 (what the synthesized inputs found enough)
    # breaks, the choice made on real data holds.
    (tmp_path / "all").mkdir()
    everything = QuantizePass().run(
        onnx_context(model, tmp_path / "all"), QuantizeConfig(op="quantize")
    )
    held_out = dict(np.load(_real_data(tmp_path / "held.npz", seed=9)))
    assert _mean_cosine(model, everything.output_path, held_out) < 0.99
    assert _mean_cosine(model, real.output_path, held_out) >= 0.99


def _mean_cosine(a: Path, b: Path, feeds: dict[str, np.ndarray]) -> float:
    ref, got = (ort.InferenceSession(str(p)).run(None, feeds)[0] for p in (a, b))
    with np.errstate(invalid="ignore"):
        cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(np.nan_to_num(cos, nan=0.0).mean())


def _fake(kept_to_fidelity: dict[int, Fidelity]) -> tuple[Any, Any]:
    """A quantizer that writes a stub and an evaluation that reads how many nodes stayed float."""
    kept: dict[str, int] = {}

    def quantize(out: Path, include: list[str] | None, exclude: list[str]) -> None:
        out.write_bytes(b"")
        kept[out.name] = len(exclude)

    def evaluate(path: Path) -> Fidelity:
        return kept_to_fidelity[kept[path.name]]

    return quantize, evaluate


def test_keep_float_guards_the_worst_sample_not_only_the_mean(tmp_path: Path) -> None:
    by_kept = {0: Fidelity(0.995, 0.90), 1: Fidelity(0.996, 0.97), 2: Fidelity(0.997, 0.985)}
    order = ["n1", "n2", "n3"]

    mean_only = sensitivity.fewest_float(order, *_fake(by_kept), Target(0.99), tmp_path)
    guarded = sensitivity.fewest_float(order, *_fake(by_kept), Target(0.99, 0.98), tmp_path)

    assert mean_only[0] == []  # the mean alone is met by all int8, its worst sample at 0.90
    assert guarded[0] == ["n1", "n2"] and guarded[1] == Fidelity(0.997, 0.985)
    assert all("cosine_min" in probe for probe in guarded[2])


def test_the_sample_floor_follows_min_cosine_unless_given() -> None:
    assert sample_floor(0.995) == pytest.approx(0.98)
    assert sample_floor(0.995, 0.99) == 0.99
    assert sample_floor(None) is None
    assert "needs `sensitivity" in str(
        spec_problem(QuantizeConfig(op="quantize", sensitivity_dataset_id="d"))
    )


def test_nodes_are_kept_float_by_fidelity_bought_per_time_spent() -> None:
    rows = [
        {"node": "big", "error": 0.004, "time_share": 0.6},
        {"node": "small", "error": 0.003, "time_share": 0.1},
        {"node": "unmeasured", "error": None, "time_share": 0.1},
    ]
    measured = {"big": Fidelity(0.996, 0.99), "small": Fidelity(0.997, 0.99)}

    order = sensitivity.keep_order(rows, measured, Target(0.99, 0.98))

    assert order == ["small", "big", "unmeasured"]


def _labelled(model: Path, path: Path, samples: int = 256, seed: int = 11) -> Path:
    """Inputs and, as `labels`, the float model's own classes on them (baseline accuracy 1)."""
    x = np.random.default_rng(seed).normal(size=(samples, 32)).astype(np.float32)
    classes = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(1)
    np.savez(path, x=x, labels=classes)
    return path


def _accuracy(model: Path, data: Path) -> float:
    """In the step's sensitivity batches: dynamic int8 scales its activations per call."""
    arrays, session = dict(np.load(data)), ort.InferenceSession(str(model))
    x = arrays["x"]
    got = np.concatenate(
        [
            session.run(None, {"x": x[i : i + SENSITIVITY_BATCH]})[0]
            for i in range(0, len(x), SENSITIVITY_BATCH)
        ]
    )
    return float((got.argmax(1) == arrays["labels"]).mean())


def test_keep_float_auto_meets_a_max_accuracy_drop_on_the_evaluation_labels(
    fragile: Path, tmp_path: Path
) -> None:
    data = _labelled(fragile, tmp_path / "eval.npz")
    (tmp_path / "all").mkdir()
    (tmp_path / "auto").mkdir()
    everything = QuantizePass().run(
        onnx_context(fragile, tmp_path / "all"), QuantizeConfig(op="quantize")
    )
    ctx = onnx_context(fragile, tmp_path / "auto", datasets={"eval": data})
    # Three points (near-tie samples flip under any int8 noise); no min_cosine at all.
    ctx.target_accuracy = AccuracyTarget(0.03, "eval", "accuracy")

    auto = QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    chosen = auto.metrics["keep_float"]
    assert _accuracy(everything.output_path, data) < 0.5  # all int8 collapses
    assert auto.metrics["sensitivity_inputs"] == "evaluation dataset eval"
    assert (chosen["target_accuracy_drop"], chosen["target_cosine"]) == (0.03, None)
    assert chosen["accuracy_metric"] == "accuracy"
    assert chosen["kept_float"] == ["down"]  # 1 of 3 float, not all
    assert chosen["accuracy_drop"] <= 0.03
    assert all("accuracy_drop" in probe for probe in chosen["probes"])
    # Measured independently, on labelled inputs the choice never saw:
    held_out = _labelled(fragile, tmp_path / "held.npz", seed=12)
    assert _accuracy(auto.output_path, held_out) >= 0.95


def test_a_zero_accuracy_drop_keeps_every_flipped_sample_right(
    fragile: Path, tmp_path: Path
) -> None:
    data = _labelled(fragile, tmp_path / "eval.npz")
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w", datasets={"eval": data})
    ctx.target_accuracy = AccuracyTarget(0.0, "eval", "accuracy")

    result = QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    chosen = result.metrics["keep_float"]
    assert chosen["accuracy_drop"] <= 0.0
    assert "down" in chosen["kept_float"]
    assert _accuracy(result.output_path, data) == 1.0  # the labels are float's own classes


def test_an_accuracy_target_prefers_the_steps_own_labels(fragile: Path, tmp_path: Path) -> None:
    own = _labelled(fragile, tmp_path / "own.npz", samples=128)
    unlabelled = tmp_path / "eval.npz"
    np.savez(unlabelled, x=np.zeros((8, 32), np.float32))
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w", datasets={"own": own, "eval": unlabelled})
    ctx.target_accuracy = AccuracyTarget(0.01, "eval", "accuracy")

    result = QuantizePass().run(
        ctx, QuantizeConfig(op="quantize", keep_float="auto", sensitivity_dataset_id="own")
    )

    assert result.metrics["sensitivity_inputs"] == "dataset own"
    assert result.metrics["sensitivity_samples"] == 128
    assert result.metrics["keep_float"]["accuracy_drop"] <= 0.01


def test_an_accuracy_target_without_labels_fails_the_step(fragile: Path, tmp_path: Path) -> None:
    unlabelled = tmp_path / "eval.npz"
    np.savez(unlabelled, x=np.zeros((8, 32), np.float32))
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w", datasets={"eval": unlabelled})
    ctx.target_accuracy = AccuracyTarget(0.01, "eval", "accuracy")

    with pytest.raises(JobFailure) as failure:
        QuantizePass().run(ctx, QuantizeConfig(op="quantize", keep_float="auto"))

    assert failure.value.code == "invalid_dataset"
    assert "labels" in failure.value.detail


def test_keep_float_auto_without_any_target_fails_the_step(fragile: Path, tmp_path: Path) -> None:
    with pytest.raises(JobFailure) as failure:
        QuantizePass().run(
            onnx_context(fragile, tmp_path), QuantizeConfig(op="quantize", keep_float="auto")
        )

    assert failure.value.code == "spec_invalid"


def test_an_accuracy_target_needs_a_measured_drop_within_it(tmp_path: Path) -> None:
    by_kept = {
        0: Fidelity(0.999, 0.99, 0.05),  # cosine looks fine, accuracy does not
        1: Fidelity(0.9995, 0.995, 0.02),
        2: Fidelity(0.9999, 0.999, 0.004),
    }

    kept, reached, _probes = sensitivity.fewest_float(
        ["n1", "n2", "n3"], *_fake(by_kept), Target(None, None, 0.01), tmp_path
    )

    assert kept == ["n1", "n2"] and reached.accuracy_drop == 0.004
    assert not Target(None, None, 0.01).met(Fidelity(1.0, 1.0))  # no drop measured: not met
    assert Target(0.99, None, 0.01).met(Fidelity(0.995, 0.9, 0.0))
    assert not Target(0.99, None, 0.01).met(Fidelity(0.985, 0.9, 0.0))


def test_static_keep_float_that_does_not_pay_reports_no_node_quantized(
    fragile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Static mode, the whole int8 model timed slower: the step ships its input and counts no
    node as quantized (counted in the model the nodes were chosen from)."""
    data = tmp_path / "cal.npz"
    np.savez(data, x=np.random.default_rng(3).normal(size=(64, 32)).astype(np.float32))
    (tmp_path / "w").mkdir()
    ctx = onnx_context(fragile, tmp_path / "w", datasets={"cal": data})
    ctx.target_cosine = 0.99

    def timed(chosen: Path, variant: Path, feeds: dict[str, Any], threads: int) -> dict[str, Any]:
        return {"int8_p50_ms": 2.0, "float_p50_ms": 1.0, "slower": True}

    monkeypatch.setattr(sensitivity, "_timed", timed)
    config = QuantizeConfig(
        op="quantize", mode="static", calibration_dataset_id="cal", keep_float="auto"
    )

    result = QuantizePass().run(ctx, config)

    assert result.output_path == ctx.input_path
    assert result.metrics["keep_float"]["int8_pays"] is False
    assert result.metrics["nodes_quantized"] == 0
    assert result.metrics["nodes_kept_float"] == 3
