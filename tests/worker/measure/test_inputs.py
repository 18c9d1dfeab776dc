"""Tests for input synthesis and dataset binding on tiny real ONNX models."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from worker.measure.inputs import dataset_inputs, onnx_input_specs, synthesize_inputs

VOCAB = 1000
OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _text_model(path: Path) -> Path:
    """A BERT-like embedding sum: token ids go through a Cast into a Gather over 1000 rows."""
    rng = np.random.default_rng(0)
    tables = [
        numpy_helper.from_array(rng.standard_normal((rows, 8)).astype(np.float32), name)
        for name, rows in (("word_emb", VOCAB), ("type_emb", 2), ("pos_emb", 512))
    ]
    dims = ["batch", "sequence"]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims)
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims)
    types = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, dims)
    positions = helper.make_tensor_value_info("position_ids", TensorProto.INT64, dims)
    # Listing an initializer among the inputs (old exporters do) must not make it an input.
    word_input = helper.make_tensor_value_info("word_emb", TensorProto.FLOAT, [VOCAB, 8])
    out = helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [*dims, 8])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["word_emb", "ids32"], ["words"]),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["types"]),
        helper.make_node("Gather", ["pos_emb", "position_ids"], ["positions"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
        helper.make_node("Sum", ["words", "types", "positions"], ["summed"]),
        helper.make_node("Mul", ["summed", "mask3"], ["hidden"]),
    ]
    axis = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis")
    graph = helper.make_graph(
        nodes, "text", [ids, mask, types, positions, word_input], [out], [*tables, axis]
    )
    return _save(graph, path)


def _mixed_model(path: Path) -> Path:
    """Inputs of every other kind: float image, scalar sample rate, bool flags, plain ints."""
    inputs = [
        helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, "height"]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("flags", TensorProto.BOOL, ["N"]),
        helper.make_tensor_value_info("counts", TensorProto.INT64, ["N", 6]),
    ]
    outputs = [helper.make_value_info(f"{i.name}_out", i.type) for i in inputs]
    nodes = [helper.make_node("Identity", [i.name], [f"{i.name}_out"]) for i in inputs]
    return _save(helper.make_graph(nodes, "mixed", inputs, outputs), path)


@pytest.fixture
def text_model(tmp_path: Path) -> Path:
    return _text_model(tmp_path / "text.onnx")


@pytest.fixture
def mixed_model(tmp_path: Path) -> Path:
    return _mixed_model(tmp_path / "mixed.onnx")


def test_specs_list_graph_inputs_without_initializers(text_model: Path) -> None:
    specs = onnx_input_specs(text_model)

    assert [s["name"] for s in specs] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "position_ids",
    ]
    assert specs[0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}


def test_specs_keep_fixed_dims_as_ints(mixed_model: Path) -> None:
    specs = {s["name"]: s for s in onnx_input_specs(mixed_model)}

    assert specs["pixels"] == {"name": "pixels", "dtype": "float32", "shape": ["N", 3, "height"]}
    assert specs["sr"]["shape"] == []


def test_token_ids_stay_below_the_vocabulary_size(text_model: Path) -> None:
    arrays = synthesize_inputs(text_model, batch_size=8)

    ids = arrays["input_ids"]
    assert ids.min() >= 0
    assert ids.max() < VOCAB
    assert ids.max() > 100  # drawn from the whole vocabulary, not just {0, 1}


def test_attention_mask_is_all_ones(text_model: Path) -> None:
    arrays = synthesize_inputs(text_model, batch_size=2)

    assert np.all(arrays["attention_mask"] == 1)


def test_token_type_ids_are_zeros(text_model: Path) -> None:
    arrays = synthesize_inputs(text_model, batch_size=2)

    assert np.all(arrays["token_type_ids"] == 0)


def test_position_ids_count_along_the_last_axis(text_model: Path) -> None:
    arrays = synthesize_inputs(text_model, batch_size=2, input_shapes={"position_ids": [1, 5]})

    assert arrays["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_integer_dynamic_dims_default_to_128_after_the_batch(text_model: Path) -> None:
    arrays = synthesize_inputs(text_model, batch_size=3)

    assert arrays["input_ids"].shape == (3, 128)
    assert arrays["input_ids"].dtype == np.int64


def test_dynamic_dims_come_from_input_shapes_and_batch_replaces_the_first(
    text_model: Path,
) -> None:
    arrays = synthesize_inputs(text_model, batch_size=4, input_shapes={"input_ids": [99, 16]})

    assert arrays["input_ids"].shape == (4, 16)
    assert arrays["attention_mask"].shape == (4, 128)


def test_float_dynamic_dims_default_to_32_and_fixed_dims_are_kept(mixed_model: Path) -> None:
    arrays = synthesize_inputs(mixed_model, batch_size=2)

    assert arrays["pixels"].shape == (2, 3, 32)
    assert arrays["pixels"].dtype == np.float32


def test_float_inputs_are_reproducible_for_a_seed(mixed_model: Path) -> None:
    first = synthesize_inputs(mixed_model, batch_size=2, seed=7)["pixels"]

    second = synthesize_inputs(mixed_model, batch_size=2, seed=7)["pixels"]

    assert np.array_equal(first, second)
    assert not np.array_equal(first, synthesize_inputs(mixed_model, 2, seed=8)["pixels"])


def test_integer_scalar_named_sr_is_a_sample_rate(mixed_model: Path) -> None:
    arrays = synthesize_inputs(mixed_model, batch_size=2)

    assert arrays["sr"].shape == ()
    assert int(arrays["sr"]) == 16000


def test_bool_inputs_are_true(mixed_model: Path) -> None:
    arrays = synthesize_inputs(mixed_model, batch_size=5)

    assert arrays["flags"].dtype == np.bool_
    assert arrays["flags"].shape == (5,)
    assert arrays["flags"].all()


def test_integer_inputs_without_an_embedding_are_zero_or_one(mixed_model: Path) -> None:
    arrays = synthesize_inputs(mixed_model, batch_size=64)

    assert set(np.unique(arrays["counts"]).tolist()) == {0, 1}
    assert arrays["counts"].shape == (64, 6)


def test_synthesized_text_inputs_run_in_onnxruntime(text_model: Path) -> None:
    session = ort.InferenceSession(str(text_model), providers=["CPUExecutionProvider"])
    names = ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
    arrays = synthesize_inputs(text_model, 2, input_shapes={name: [1, 16] for name in names})

    (hidden,) = session.run(None, arrays)

    assert hidden.shape == (2, 16, 8)
    assert np.isfinite(hidden).all()


def test_synthesized_mixed_inputs_run_in_onnxruntime(mixed_model: Path) -> None:
    session = ort.InferenceSession(str(mixed_model), providers=["CPUExecutionProvider"])
    arrays = synthesize_inputs(mixed_model, batch_size=2)

    outputs = session.run(None, arrays)

    assert [o.shape for o in outputs] == [(2, 3, 32), (), (2,), (2, 6)]


def test_input_shapes_for_an_unknown_input_are_refused(text_model: Path) -> None:
    with pytest.raises(ValueError, match="pixels"):
        synthesize_inputs(text_model, batch_size=1, input_shapes={"pixels": [1, 3]})


def test_input_shapes_of_the_wrong_rank_are_refused(text_model: Path) -> None:
    with pytest.raises(ValueError, match="input_ids"):
        synthesize_inputs(text_model, batch_size=1, input_shapes={"input_ids": [1, 3, 4]})


def test_dataset_binds_arrays_by_input_name_and_returns_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, a=np.zeros((4, 2)), b=np.ones((4, 3)), labels=np.arange(4))

    arrays, labels = dataset_inputs(path, ["b", "a"])

    assert sorted(arrays) == ["a", "b"]
    assert arrays["b"].shape == (4, 3)
    assert labels.tolist() == [0, 1, 2, 3]


def test_dataset_without_labels_returns_none(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 2)))

    _, labels = dataset_inputs(path, ["x"])

    assert labels is None


def test_single_input_model_takes_the_only_array_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, images=np.ones((3, 1, 8, 8)), labels=np.arange(3))

    arrays, _ = dataset_inputs(path, ["input.1"])

    assert list(arrays) == ["input.1"]
    assert arrays["input.1"].shape == (3, 1, 8, 8)


def test_dataset_missing_an_input_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, input_ids=np.zeros((2, 4)), other=np.zeros((2, 4)))

    with pytest.raises(ValueError, match="attention_mask"):
        dataset_inputs(path, ["input_ids", "attention_mask"])


def test_dataset_with_object_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([{"payload": 1}, None], dtype=object))

    with pytest.raises(ValueError, match="x"):
        dataset_inputs(path, ["x"])


def test_dataset_limit_takes_the_first_samples(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.arange(10).reshape(5, 2), labels=np.arange(5))

    arrays, labels = dataset_inputs(path, ["x"], limit=2)

    assert arrays["x"].tolist() == [[0, 1], [2, 3]]
    assert labels.tolist() == [0, 1]


def test_dataset_arrays_with_different_sample_counts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((5, 2)), labels=np.arange(4))

    with pytest.raises(ValueError, match="samples"):
        dataset_inputs(path, ["x"])
