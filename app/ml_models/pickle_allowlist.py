"""The allowlist of globals a pickle in an uploaded torch program may import (`pickle_scan`
matches every GLOBAL, INST and STACK_GLOBAL against it exactly).

What it trusts:

- `TENSOR_GLOBALS`: what `torch.save` writes for tensors and containers of them (the tensor
  rebuild functions, the typed storage classes, dtypes, `torch.Size`, `torch.device`,
  `collections.OrderedDict`); `torch.load(weights_only=True)` allows the same kind of names.
- TorchScript only: the `torch.jit._pickle` list builders the TorchScript pickler writes, and
  `__torch__.<dotted identifiers>` classes. `torch.jit.load` unpickles with its own C++
  unpickler, which resolves a `__torch__` name to a TorchScript class compiled from the
  archive's own `code/` (the program we run in the sandbox anyway) and never imports Python. The
  match is exact on the form: the module is `__torch__` or starts with `__torch__.`, every dotted
  part is an identifier and none is a dunder (`__torch__x.os`, `__torch__.__builtins__` and
  `torch._utils.__builtins__` are refused). `.pt2` pickles get no `__torch__` names at all.
"""

from __future__ import annotations

from dataclasses import dataclass

_STORAGES = [
    "Double",
    "Float",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexDouble",
    "ComplexFloat",
    "QUInt8",
    "QInt8",
    "QInt32",
    "QUInt4x2",
    "QUInt2x4",
    "Untyped",
]
_DTYPES = [
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "half",
    "float",
    "double",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "short",
    "int",
    "long",
    "bool",
    "quint8",
    "qint8",
    "qint32",
    "quint4x2",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "uint16",
    "uint32",
    "uint64",
]

TENSOR_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        *(("torch", f"{s}Storage") for s in _STORAGES),
        *(("torch", d) for d in _DTYPES),
    }
)
TORCHSCRIPT_GLOBALS: frozenset[tuple[str, str]] = TENSOR_GLOBALS | {
    ("torch.jit._pickle", name)
    for name in (
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_tensor_from_id",
        "restore_type_tag",
    )
}


@dataclass(frozen=True)
class Policy:
    """The globals one archive kind may import."""

    exact: frozenset[tuple[str, str]]
    torchscript_classes: bool = False

    def allows(self, module: str, name: str) -> bool:
        if (module, name) in self.exact:
            return True
        return self.torchscript_classes and _is_torchscript_class(module, name)


PT2_POLICY = Policy(TENSOR_GLOBALS)
TORCHSCRIPT_POLICY = Policy(TORCHSCRIPT_GLOBALS, torchscript_classes=True)


def _is_torchscript_class(module: str, name: str) -> bool:
    parts = module.split(".")
    if parts[0] != "__torch__":
        return False
    return all(
        p.isidentifier() and not (p.startswith("__") and p.endswith("__"))
        for p in (*parts[1:], name)
    )
