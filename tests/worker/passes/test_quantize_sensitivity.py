"""Layer sensitivity and `keep_float: auto` on a network with one deliberately fragile layer: its
input carries an activation outlier (as the FFN down-projections of transformers do after GELU),
so dynamic int8's per-tensor activation scale wipes out every other feature there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from networks import onnx_fragile_mlp

from app.passes.quantize import QuantizeConfig
from worker import sensitivity
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context


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
    assert auto.metrics["float_nodes"] == sorted(["down", *chosen["kept_float_for_speed"]])
    assert _worst_cosine(fragile, auto.output_path) >= 0.99  # on inputs it never saw


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
    assert result.metrics["sensitivity_samples"] == 16  # the first calibration batch
    assert result.metrics["keep_float"]["cosine_mean"] >= 0.99
    assert len(result.metrics["keep_float"]["kept_float"]) < 3
