"""The strict checks of the pass and catalog tests fail on a pass that does nothing.

Each test here replaces one technique's `run` by a no-op that returns a plain copy of its input
(`shutil.copy(ctx.input_path, ctx.work_dir / "same.onnx")`), runs it on the input and with the
config the real test uses, checks that premise (the no-op ran, its output is the input byte for
byte), and runs the `assert_*` helper of tests/support.py that the real test relies on: it must
raise its own AssertionError (matched by message, so that no other assertion can stand in for
it). The real tests (test_prune_channel.py, test_distill.py, test_prune_distill_recovery.py,
tests/integration/test_catalog_api.py) run the same helpers on real outputs, where they pass.
Margins are 0 here, the strictest case: a no-op gains nothing, not even by a hair.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    assert_accuracy_gain,
    assert_agreement_gain,
    assert_closer_to_teacher,
    assert_fewer_parameters,
    assert_fp16_weights,
    assert_graph_optimized,
    assert_pruned_to,
    assert_quantized,
    assert_sparser,
    assert_torchscript_archive,
    assert_weights_changed,
    sha256_of,
)

from app.passes.base import PassConfig
from app.passes.convert import ConvertConfig
from app.passes.distill import DistillConfig
from app.passes.export import ExportConfig
from app.passes.optimize import OptimizeConfig
from app.passes.prune_channel import PruneChannelConfig, PruneNeuronConfig
from app.passes.prune_magnitude import PruneMagnitudeConfig
from app.passes.quantize import QuantizeConfig
from worker.passes.base import Pass, PassContext, PassResult
from worker.passes.convert import ConvertPass
from worker.passes.distill import DistillPass
from worker.passes.export import ExportPass
from worker.passes.optimize import OptimizePass
from worker.passes.prune_channel import PruneChannelPass, PruneNeuronPass
from worker.passes.prune_magnitude import PruneMagnitudePass
from worker.passes.quantize import QuantizePass
from worker.pipeline.tools import onnx_context

Noop = Callable[[type[Pass[Any]]], list[str]]


@pytest.fixture
def noop(monkeypatch: pytest.MonkeyPatch) -> Noop:
    """Patch a pass class so that `run` returns a plain copy of its input; returns the names of
    the passes whose patched `run` was called."""
    calls: list[str] = []

    def patch(pass_class: type[Pass[Any]]) -> list[str]:
        def run(self: Pass[Any], ctx: PassContext, config: PassConfig) -> PassResult:
            calls.append(type(self).__name__)
            shutil.copy(ctx.input_path, ctx.work_dir / "same.onnx")
            return PassResult(ctx.work_dir / "same.onnx", "onnx")

        monkeypatch.setattr(pass_class, "run", run)
        return calls

    return patch


def _run(pass_class: type[Pass[Any]], source: Path, work: Path, config: Any, **ctx: Any) -> Path:
    """Run the (patched) pass as the real tests do; its output file."""
    work.mkdir(parents=True, exist_ok=True)
    return pass_class().run(onnx_context(source, work, **ctx), config).output_path


def _assert_was_a_noop(
    calls: list[str], pass_class: type[Pass[Any]], source: Path, out: Path
) -> None:
    """The premise: the patched `run` ran once and wrote the input back, byte for byte."""
    assert calls == [pass_class.__name__]
    assert out != source and sha256_of(out) == sha256_of(source)


# ---------------------------------------------------------------- prune: neuron and channel


def test_noop_neuron_pruning_fails_the_dead_units_check(
    noop: Noop, dead_channels: dict[str, Any], tmp_path: Path
) -> None:
    calls, source = noop(PruneNeuronPass), dead_channels["model"]
    config = PruneNeuronConfig(
        op="prune", method="neuron", calibration_dataset_id="calib", calibration_samples=64
    )

    out = _run(
        PruneNeuronPass, source, tmp_path, config, datasets={"calib": dead_channels["calibration"]}
    )

    _assert_was_a_noop(calls, PruneNeuronPass, source, out)
    with pytest.raises(AssertionError, match="units not removed"):
        assert_pruned_to(source, out, dead_channels["pruned_shapes"])


def test_noop_neuron_pruning_fails_the_catalog_check(
    noop: Noop, dead_neuron_mlp_onnx: Path, tmp_path: Path
) -> None:
    calls = noop(PruneNeuronPass)
    inputs = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=inputs)
    config = PruneNeuronConfig(op="prune", method="neuron", calibration_dataset_id="cal")

    out = _run(
        PruneNeuronPass,
        dead_neuron_mlp_onnx,
        tmp_path / "work",
        config,
        datasets={"cal": tmp_path / "data.npz"},
    )

    _assert_was_a_noop(calls, PruneNeuronPass, dead_neuron_mlp_onnx, out)
    with pytest.raises(AssertionError, match="units not removed"):
        assert_pruned_to(dead_neuron_mlp_onnx, out, {0: (48, 32), 1: (10, 48)})


def test_noop_channel_pruning_fails_the_parameter_check(
    noop: Noop, cnn_onnx: Path, tmp_path: Path
) -> None:
    calls = noop(PruneChannelPass)
    config = PruneChannelConfig(op="prune", method="channel", ratio=0.5, round_to=1)

    out = _run(PruneChannelPass, cnn_onnx, tmp_path, config)

    _assert_was_a_noop(calls, PruneChannelPass, cnn_onnx, out)
    with pytest.raises(AssertionError, match="parameters not removed"):
        assert_fewer_parameters(cnn_onnx, out)


# ---------------------------------------------------------------- distill


@pytest.fixture
def noop_distilled(
    noop: Noop,
    distill_models: dict[str, Path],
    digits_split: dict[str, Any],
    tmp_path: Path,
) -> Path:
    """The damaged digits student "distilled" by the no-op, as test_distill.py runs it."""
    calls, student = noop(DistillPass), distill_models["student"]
    images, labels = digits_split["distill"]
    np.savez(tmp_path / "digits.npz", image=images, labels=labels)
    config = DistillConfig(op="distill", dataset_id="d", epochs=10)
    out = _run(
        DistillPass,
        student,
        tmp_path / "work",
        config,
        threads=1,
        datasets={"d": tmp_path / "digits.npz"},
        original_path=distill_models["teacher"],
        original_format="onnx",
    )
    _assert_was_a_noop(calls, DistillPass, student, out)
    return out


def test_noop_distillation_fails_the_new_weights_check(
    noop_distilled: Path, distill_models: dict[str, Path]
) -> None:
    student = distill_models["student"]

    with pytest.raises(AssertionError, match="weights unchanged by training"):
        assert_weights_changed(student, noop_distilled)


def test_noop_distillation_fails_the_accuracy_check(
    noop_distilled: Path, distill_models: dict[str, Path], digits_split: dict[str, Any]
) -> None:
    images, labels = digits_split["test"]

    with pytest.raises(AssertionError, match="accuracy did not rise"):
        assert_accuracy_gain(distill_models["student"], noop_distilled, images, labels, 0.0)


def test_noop_distillation_fails_the_agreement_check(
    noop_distilled: Path, distill_models: dict[str, Path], digits_split: dict[str, Any]
) -> None:
    student, teacher = distill_models["student"], distill_models["teacher"]

    with pytest.raises(AssertionError, match="agreement did not rise"):
        assert_agreement_gain(student, noop_distilled, teacher, digits_split["test"][0], 0.0)


def test_noop_distillation_fails_the_teacher_gap_check(
    noop_distilled: Path, distill_models: dict[str, Path], digits_split: dict[str, Any]
) -> None:
    student, teacher = distill_models["student"], distill_models["teacher"]

    with pytest.raises(AssertionError, match="not closer to the teacher"):
        assert_closer_to_teacher(student, noop_distilled, teacher, digits_split["test"][0], 0.0)


def test_noop_distillation_after_pruning_fails_the_catalog_check(
    noop: Noop, mlp_onnx: Path, tmp_path: Path
) -> None:
    inputs = np.random.default_rng(0).standard_normal((256, 32)).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=inputs)
    pruning = PruneMagnitudeConfig(op="prune", method="magnitude", sparsity=0.7)
    pruned = _run(PruneMagnitudePass, mlp_onnx, tmp_path / "pruned", pruning)
    calls = noop(DistillPass)
    config = DistillConfig(op="distill", dataset_id="d", epochs=3)

    out = _run(
        DistillPass,
        pruned,
        tmp_path / "work",
        config,
        datasets={"d": tmp_path / "data.npz"},
        original_path=mlp_onnx,
        original_format="onnx",
    )

    _assert_was_a_noop(calls, DistillPass, pruned, out)
    with pytest.raises(AssertionError, match="not closer to the teacher"):
        assert_closer_to_teacher(pruned, out, mlp_onnx, inputs, 0.0)


# ---------------------------------------------------------------- the other catalog techniques


Check = Callable[[Path, Path], None]
CATALOG: dict[str, tuple[type[Pass[Any]], PassConfig, str, Check, str]] = {
    "optimize": (
        OptimizePass,
        OptimizeConfig(op="optimize"),
        "unfolded_cnn_onnx",
        assert_graph_optimized,
        "graph not optimized",
    ),
    "convert": (
        ConvertPass,
        ConvertConfig(op="convert", precision="fp16"),
        "transformer_onnx",
        assert_fp16_weights,
        "no float16 weights",
    ),
    "prune.magnitude": (
        PruneMagnitudePass,
        PruneMagnitudeConfig(op="prune", method="magnitude", sparsity=0.5),
        "cnn_onnx",
        lambda upload, out: assert_sparser(upload, out, at_least=0.0),
        "weights not sparsified",
    ),
    "quantize": (
        QuantizePass,
        QuantizeConfig(op="quantize", mode="static", calibration_dataset_id="cal"),
        "cnn_onnx",
        assert_quantized,
        "not quantized",
    ),
    "export": (
        ExportPass,
        ExportConfig(op="export", format="torchscript"),
        "cnn_onnx",
        assert_torchscript_archive,
        "artifact is the upload",
    ),
}


@pytest.mark.parametrize("technique", list(CATALOG))
def test_noop_fails_the_catalog_check(
    noop: Noop, technique: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    pass_class, config, fixture, check, message = CATALOG[technique]
    calls, upload = noop(pass_class), request.getfixturevalue(fixture)
    images = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=images)  # the calibration set of the quantize test

    out = _run(
        pass_class, upload, tmp_path / "work", config, datasets={"cal": tmp_path / "data.npz"}
    )

    _assert_was_a_noop(calls, pass_class, upload, out)
    with pytest.raises(AssertionError, match=message):
        check(upload, out)
