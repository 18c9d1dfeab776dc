"""PyTorch uploads inside the sandbox: TorchScript and torch.export programs.

Both are loaded only with torch's restricted loaders: `torch.jit.load` for TorchScript (never
through `torch.load`), `torch.export.load` for `.pt2` with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 set by
the supervisor, so the program's pickled constants go through the weights-only unpickler and a
`.pt2` whose pickles need anything else fails to load instead of running code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.core.errors import JobFailure
from worker.measure.inputs import synthesize_from_specs

TORCH_DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "bool", "uint8"}


def load_program(path: Path, fmt: str) -> tuple[Any, Any]:
    """(callable module, ExportedProgram or None), or `model_rejected` if it will not load."""
    if (
        os.environ.get("MODELPRESS_SANDBOX")
        and os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") != "1"
    ):
        raise JobFailure(
            "sandbox_misconfigured", "Refusing to load a program without weights-only."
        )
    try:
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
            return module, None
        program = torch.export.load(str(path))
        return program.module(), program
    except JobFailure:
        raise
    except Exception as exc:
        raise JobFailure("model_rejected", f"torch cannot load this {fmt} program: {exc}") from exc


def _dim(value: Any) -> int | str:
    return int(value) if isinstance(value, int) or str(value).isdigit() else str(value)


def program_inputs(program: Any) -> list[dict[str, Any]]:
    """A .pt2's user inputs with dtypes and shapes (symbolic dims by their symbol name)."""
    user = list(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if val is None or not hasattr(val, "shape"):
                raise JobFailure("model_rejected", f"Input {node.name!r} is not a tensor.")
            dtype = str(val.dtype).removeprefix("torch.")
            shape = [_dim(d) for d in val.shape]
            if shape and isinstance(shape[0], str):
                shape[0] = "batch"  # the first dynamic dim is the batch, whatever its symbol
            specs.append({"name": node.name, "dtype": dtype, "shape": shape})
    return specs


def _script_names(module: Any) -> list[str]:
    return [a.name for a in module.forward.schema.arguments][1:]


def script_inputs(module: Any, input_shapes: Any) -> list[dict[str, Any]]:
    """A TorchScript module's inputs: names from its schema, shapes from the user, dtype probed.

    The first dim is the batch. Float32 is tried first, then int64 (token ids).
    """
    names = _script_names(module)
    if isinstance(input_shapes, dict):
        missing = [n for n in names if n not in input_shapes]
        if missing:
            raise JobFailure("input_shapes_required", f"`input_shapes` lacks {missing}.")
        shapes = [input_shapes[n] for n in names]
    else:
        shapes = list(input_shapes or [])
    if len(shapes) != len(names):
        raise JobFailure(
            "input_shapes_required",
            f"The program takes {len(names)} inputs ({', '.join(names)}); "
            f"`input_shapes` gives {len(shapes)}.",
        )
    for dtype in ("float32", "int64"):
        specs = [
            {"name": n, "dtype": dtype, "shape": ["batch", *s[1:]] if s else []}
            for n, s in zip(names, shapes, strict=True)
        ]
        feeds = {n: np.zeros(s, dtype=dtype) for n, s in zip(names, shapes, strict=True)}
        try:
            TorchRunner(module, specs, 1)(feeds)
            return specs
        except Exception:  # noqa: S112  (probing the dtype: the next one is tried)
            continue
    raise JobFailure(
        "model_rejected", "The program fails on float32 and int64 inputs of the given shapes."
    )


def vocab_sizes(program: Any) -> dict[str, int]:
    """Inputs used as embedding indices, with the table's row count (ids must stay below it)."""
    if program is None:
        return {}

    user = set(program.graph_signature.user_inputs)
    params = {**dict(program.named_parameters()), **dict(program.named_buffers())}
    targets = (
        program.graph_signature.inputs_to_parameters | program.graph_signature.inputs_to_buffers
    )
    sizes: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.embedding.default:
            weight, indices = node.args[0], node.args[1]
            if getattr(indices, "name", None) in user and getattr(weight, "name", None) in targets:
                sizes[indices.name] = int(params[targets[weight.name]].shape[0])
    return sizes


class TorchRunner:
    """Calls a PyTorch program on numpy feeds (by input order), returning numpy outputs."""

    def __init__(
        self, module: Any, specs: list[dict[str, Any]], threads: int, device: str = "cpu"
    ) -> None:
        torch.set_num_threads(threads)
        self.device = device
        self.module, self.names = module.to(device), [s["name"] for s in specs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [
            torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.names
        ]
        with torch.inference_mode():
            out = self.module(*args)
        flat = list(out) if isinstance(out, list | tuple) else [out]
        # .cpu() waits for the device: a timed call includes the GPU work.
        return [t.detach().cpu().numpy() for t in flat]


def parameter_counts(module: Any) -> tuple[int, int]:
    total = nonzero = 0
    for tensor in module.parameters():
        total += int(tensor.numel())
        nonzero += int((tensor != 0).sum())
    return total, nonzero


def load_runner(
    path: Path, fmt: str, specs: list[dict[str, Any]], threads: int
) -> tuple[TorchRunner, float]:
    start = time.perf_counter()
    module, _program = load_program(path, fmt)
    return TorchRunner(module, specs, threads), (time.perf_counter() - start) * 1000


def inspect_torch(path: Path, fmt: str, input_shapes: Any, threads: int) -> dict[str, Any]:
    """Load a program, find its signature, run it once on synthesized inputs."""
    module, program = load_program(path, fmt)
    specs = program_inputs(program) if program is not None else script_inputs(module, input_shapes)
    feeds = synthesize_from_specs(specs, 2, None, seed=0, vocab=vocab_sizes(program))
    try:
        outs = TorchRunner(module, specs, threads)(feeds)
    except Exception as exc:
        raise JobFailure("model_rejected", f"The program fails on its own inputs: {exc}") from exc
    outputs = [
        {
            "name": f"output_{i}" if len(outs) > 1 else "output",
            "dtype": str(o.dtype),
            "shape": ["batch", *o.shape[1:]] if o.ndim else [],
        }
        for i, o in enumerate(outs)
    ]
    params, _nonzero = parameter_counts(module)
    return {"inputs": specs, "outputs": outputs, "parameter_count": params, "opset": None}
