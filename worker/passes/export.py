"""`export`: convert between ONNX, TorchScript and `.pt2`, validated numerically.

Which exporter works depends on the input (docs/field-notes.md, "Export", torch 2.13): a `.pt2`
program goes to ONNX through the dynamo exporter (it keeps the program's dynamic axes); a
TorchScript module only through the TorchScript-based exporter (dynamo fails on a ScriptModule),
with a dynamic batch axis on every input and output. Every export is checked against the original at
two batch sizes; an export that drifts (e.g. a shape baked in at trace time) fails the step with the
measured error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app.core.formats import model_filename
from app.passes.export import (
    ExportConfig,
    ExportTechnique,
)
from worker import onnx_io
from worker.onnx_to_torch.module import OnnxModule
from worker.passes.base import Pass, PassContext, PassResult

TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript-based exporter's newest opset


class ExportPass(Pass[ExportConfig]):
    technique = ExportTechnique()

    def run(self, ctx: PassContext, config: ExportConfig) -> PassResult:
        pair = (ctx.input_format, config.format)
        out = ctx.work_dir / model_filename("model", config.format)
        warnings: list[str] = []
        if pair == ("pt2", "onnx"):
            metrics = _pt2_to_onnx(ctx, out, config.opset)
        elif pair == ("torchscript", "onnx"):
            metrics = _torchscript_to_onnx(ctx, out, config.opset)
            warnings.append(
                "TorchScript exports keep only the batch axis dynamic: other axes are fixed at "
                "the upload's input_shapes."
            )
        elif pair == ("pt2", "torchscript"):
            metrics = _pt2_to_torchscript(ctx, out)
        elif pair == ("onnx", "tvm"):
            metrics = _onnx_to_tvm(ctx, out)
            warnings.append(
                "The TVM library is compiled for this machine's CPU (target llvm): run it where "
                "the same TVM version and a compatible CPU are; see the runner snippet artifact."
            )
        elif pair == ("onnx", "torchscript"):
            metrics = _onnx_to_torchscript(ctx, out)
            warnings.append(
                "Traced from our ONNX-to-PyTorch conversion: checked at two batch sizes; other "
                "shapes of the non-batch axes are not guaranteed."
            )
        else:
            metrics = _onnx_opset(ctx, out, config.opset)
        metrics["validation"] = ctx.tools.validate(
            ctx.input_path, ctx.input_format, out, config.format, rtol=config.rtol, atol=config.atol
        )
        return PassResult(out, config.format, metrics, warnings)


def _example_args(ctx: PassContext) -> tuple[Any, ...]:
    feeds = ctx.tools.example_inputs(2)
    return tuple(torch.from_numpy(feeds[spec["name"]]) for spec in ctx.inputs)


def _pt2_to_onnx(ctx: PassContext, out: Path, opset: int) -> dict[str, Any]:
    _module, program = ctx.tools.load_torch(ctx.input_path, "pt2")
    torch.onnx.export(
        program, (), str(out), dynamo=True, external_data=False, opset_version=opset, optimize=True
    )
    return {"exporter": "torch.onnx dynamo", "opset": opset}


def _torchscript_to_onnx(ctx: PassContext, out: Path, opset: int) -> dict[str, Any]:
    module, _program = ctx.tools.load_torch(ctx.input_path, "torchscript")
    args = _example_args(ctx)
    with torch.inference_mode():
        result = module(*args)
    count = len(result) if isinstance(result, list | tuple) else 1
    names = [spec["name"] for spec in ctx.inputs]
    outputs = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    torch.onnx.export(
        module,
        args,
        str(out),
        dynamo=False,
        input_names=names,
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in names + outputs},
        opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
    )
    return {"exporter": "torch.onnx torchscript", "opset": min(opset, TORCHSCRIPT_MAX_OPSET)}


def _pt2_to_torchscript(ctx: PassContext, out: Path) -> dict[str, Any]:
    module, _program = ctx.tools.load_torch(ctx.input_path, "pt2")
    traced = torch.jit.trace(module, _example_args(ctx), strict=False, check_trace=False)
    torch.jit.save(traced, str(out))
    return {"exporter": "torch.jit.trace"}


def _onnx_to_torchscript(ctx: PassContext, out: Path) -> dict[str, Any]:
    module = OnnxModule(onnx_io.load_model(ctx.input_path)).eval()
    with torch.inference_mode():
        traced = torch.jit.trace(module, _example_args(ctx), check_trace=False)
    torch.jit.save(traced, str(out))
    return {"exporter": "OnnxModule + torch.jit.trace"}


def _onnx_to_tvm(ctx: PassContext, out: Path) -> dict[str, Any]:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    # Symbolic dims (the batch) stay symbolic: one library serves every batch size.
    module = from_onnx(onnx_io.load_model(ctx.input_path), keep_params_in_input=False)
    module = relax.transform.DecomposeOpsForInference()(module)
    module = relax.transform.LegalizeOps()(module)
    tvm.compile(module, target="llvm").export_library(str(out))
    names = [s["name"] for s in ctx.inputs]
    (ctx.work_dir / "run_tvm.py").write_text(TVM_RUNNER.replace("INPUT_NAMES", repr(names)))
    return {"compiler": f"Apache TVM {tvm.__version__} Relax", "target": "llvm"}


TVM_RUNNER = '''"""Run the TVM library ModelPress compiled: python run_tvm.py model.so inputs.npz"""
import sys

import numpy as np
import tvm
from tvm import relax

library, data = sys.argv[1], np.load(sys.argv[2], allow_pickle=False)
vm = relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
args = [tvm.runtime.tensor(data[name], tvm.cpu()) for name in INPUT_NAMES]
out = vm["main"](*args)
outs = [out] if hasattr(out, "numpy") else list(out)
for o in outs:
    print(o.numpy())
'''


def _onnx_opset(ctx: PassContext, out: Path, opset: int) -> dict[str, Any]:
    model = onnx_io.load_model(ctx.input_path)
    before = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    converted = model if before == opset else onnx_io.convert_opset(model, opset)
    onnx_io.save_model(converted, out)
    return {"exporter": "onnx.version_converter", "opset_before": before, "opset": opset}
