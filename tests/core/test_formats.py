"""Model formats and their file extensions: one map for downloads and job outputs alike."""

from __future__ import annotations

import pytest

from app.core.formats import MODEL_EXTENSIONS, model_filename


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("onnx", "m.onnx"), ("torchscript", "m.pt"), ("pt2", "m.pt2"), ("tvm", "m.so")],
)
def test_each_format_has_its_extension(fmt: str, name: str) -> None:
    assert model_filename("m", fmt) == name


def test_an_unknown_format_downloads_as_bin() -> None:
    assert model_filename("m", "something-new") == "m.bin"


def test_the_map_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        MODEL_EXTENSIONS["onnx"] = "bin"  # type: ignore[index]
