"""`optimize`: ONNX Runtime offline graph optimization (constant folding, fusions)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from app.passes.base import Pass, PassConfig, PassContext, PassResult

LEVEL_WARNING = (
    "Models optimized at the `extended` level may contain ONNX Runtime contrib ops: they run in "
    "ONNX Runtime only, and fusions chosen for this machine's CPU."
)


class OptimizeConfig(PassConfig):
    """Rewrite the graph offline so that it loads and runs faster."""

    op: Literal["optimize"] = Field(description="Graph optimization.")
    level: Literal["basic", "extended"] = Field(
        "basic",
        description=(
            "`basic`: constant folding and redundant-node elimination (portable ONNX). "
            "`extended`: also operator fusions (ONNX Runtime contrib ops)."
        ),
    )


class OptimizePass(Pass[OptimizeConfig]):
    name = "optimize"
    version = "1.0"
    config_cls = OptimizeConfig
    input_formats = ("onnx",)
    summary = "ONNX Runtime offline graph optimization."

    def run(self, ctx: PassContext, config: OptimizeConfig) -> PassResult:
        import onnx
        import onnxruntime as ort

        out = ctx.work_dir / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            if config.level == "basic"
            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        )
        options.optimized_model_filepath = str(out)
        options.intra_op_num_threads = ctx.threads
        ort.InferenceSession(str(ctx.input_path), options, providers=["CPUExecutionProvider"])
        before = onnx.load(str(ctx.input_path), load_external_data=False)
        after = onnx.load(str(out), load_external_data=False)
        metrics = {
            "level": config.level,
            "nodes_before": len(before.graph.node),
            "nodes_after": len(after.graph.node),
            "op_types_after": dict(Counter(n.op_type for n in after.graph.node)),
        }
        warnings = [LEVEL_WARNING] if config.level == "extended" else []
        return PassResult(out, "onnx", metrics, warnings)
