"""bf16-stored ONNX graphs: float weights stored as bfloat16, each behind a Cast to fp32 (ONNX
Runtime's CPU provider has no bf16 arithmetic kernels; see worker/passes/convert.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from app.core.errors import JobFailure
from app.passes.convert import ConvertConfig
from worker.precision.fp16 import BF16, FLOAT, blocked_ops

BF16_MIN_ELEMENTS = 16  # smaller float constants (scalars, epsilons) stay fp32: they cost nothing


def bf16_candidate(init: Any) -> bool:
    return bool(init.data_type == FLOAT and int(np.prod(init.dims)) >= BF16_MIN_ELEMENTS)


def to_bf16(source: Any, config: ConvertConfig) -> Any:
    """Weights stored as bf16, each behind a Cast to fp32 (rounded to nearest even)."""
    if next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 0) < 13:
        raise JobFailure("conversion_failed", "bf16 Cast needs opset 13 or later.")
    model = onnx.ModelProto()
    model.CopyFrom(source)
    graph, ops, names = model.graph, blocked_ops(config), set(config.node_block_list)
    kept = {t for n in graph.node if n.op_type in ops or n.name in names for t in n.input}
    kept |= {i.name for i in graph.input}
    casts = []
    for init in graph.initializer:
        if not bf16_candidate(init) or init.name in kept:
            continue
        values = numpy_helper.to_array(init).astype(np.float32)
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        rounded = np.where(np.isnan(values), np.uint16(0x7FC0), rounded)
        name = init.name
        init.name, init.data_type = f"{name}__bf16", BF16
        del init.float_data[:]
        init.raw_data = rounded.astype("<u2").tobytes()
        casts.append(helper.make_node("Cast", [init.name], [name], name=f"{name}__cast", to=FLOAT))
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
