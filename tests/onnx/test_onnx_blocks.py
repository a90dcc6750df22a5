"""Blocks (LANGUAGE.md, "Blocks") in the ONNX graph: one node per merge joining branches that
start from the same value, valid in every supported opset, shaped as nnc says, named after the
block path, and computing what the NumPy backend computes (float64) on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import shape_inference

from nnc.engines.numpy import Network
from nnc.lang.model import MERGES, Block
from nnc.onnx import export as ox

from block_cases import BLOCK_SPECS, block_model
from onnx_cases import assert_close, ort_run, random_input, random_weights

SUFFIX = {1: ".ncw", 2: ".nchw"}
JOIN_OPS = {"add": {"Add", "Sum"}, "average": {"Mean"}, "concat": {"Concat"}, "multiply": {"Mul"},
            "maximum": {"Max"}, "minimum": {"Min"}, "subtract": {"Sub"}}


def _steps(nodes):
    """Every layer and block, depth first."""
    for n in nodes:
        yield n
        if isinstance(n, Block):
            for b in n.branches:
                yield from _steps(b)


def _dims(t: onnx.TypeProto) -> list:
    return [d.dim_param or d.dim_value for d in t.tensor_type.shape.dim]


def test_every_merge_kind_has_a_join():
    missing = [m for m in MERGES if not callable(getattr(ox, f"join_{m}", None))]
    assert not missing, f"nnc.onnx.export lacks join_{', join_'.join(missing)}"
    assert set(JOIN_OPS) == set(MERGES)


def numpy_reference(model, weights, x):
    return Network(model, {k: v.astype(np.float64) for k, v in weights.items()}).predict(x.astype(np.float64))


def check_shapes(model, m):
    """full_check clean, and ONNX's own shape inference (nnc's declared shapes dropped) gives nnc's
    shape for every value named after a layer or a block, and for every value nnc declares."""
    onnx.checker.check_model(m, full_check=True)
    bare = onnx.ModelProto()
    bare.CopyFrom(m)
    del bare.graph.value_info[:]
    inferred = shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    shapes = {v.name: _dims(v.type) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = _dims(v.type)
        assert dims.count("batch") == 1 and all(isinstance(d, int) and d > 0 for d in dims if d != "batch"), v.name
    # every layer and every merge block has a value named after it, of nnc's shape
    for step in _steps(model.body):
        if getattr(step, "kind", None) in ("dropout", "repeat"):
            continue
        s = step.output_shape
        last, first = shapes.get(step.name), shapes.get(step.name + SUFFIX.get(len(s) - 1, "?"))
        assert last is not None or first is not None, f"no value named after {step.name}"
        if last is not None:
            assert last == ["batch", *s], step.name
        if first is not None:
            assert first == ["batch", s[-1], *s[:-1]], step.name
    (out,) = inferred.graph.output
    assert _dims(out.type) == ["batch", *model.output_shape]
    for v in m.graph.value_info:  # what nnc declares for Netron is what ONNX infers
        assert shapes[v.name] == _dims(v.type), v.name


@pytest.mark.parametrize("name", list(BLOCK_SPECS))
def test_block_model_checks_infers_nnc_shapes_and_runs_as_numpy(name):
    model = block_model(name)
    w = random_weights(model, seed=1)
    m = ox.to_onnx(model, w)
    check_shapes(model, m)
    # each merge is one node (Mul: one per pair of branches), named BLOCK/Op
    ops = {n.name: n.op_type for n in m.graph.node}
    for block in (s for s in _steps(model.body) if isinstance(s, Block) and s.merge):
        joins = [n for n, op in ops.items() if n.split("/")[-2:-1] == [block.name] and op in JOIN_OPS[block.merge]]
        assert len(joins) == (len(block.branches) - 1 if block.merge == "multiply" else 1), (block.name, joins)
    x = random_input(model, batch=4, seed=2)
    y = ort_run(m, x)
    assert y.dtype == np.float32
    assert_close(y, numpy_reference(model, w, x), rtol=1e-5, what=name)


@pytest.mark.parametrize("opset", list(ox.SUPPORTED_OPSETS))
def test_block_models_in_every_opset(opset):
    for name in ("nested", "concat_sequence", "multiply_three", "average", "rank1_multi_read", "pool_in_branch",
                 "embedding_branches"):
        model = block_model(name)
        w = random_weights(model, seed=3)
        proto = ox.to_onnx(model, w, opset)
        assert proto.opset_import[0].version == opset
        check_shapes(model, proto)
        x = random_input(model, batch=3, seed=4)
        assert_close(ort_run(proto, x), numpy_reference(model, w, x), what=f"{name} at opset {opset}")


def test_node_names_carry_the_block_path():
    names = {n.name for n in ox.to_onnx(block_model("nested"), random_weights(block_model("nested"))).graph.node}
    assert {"conv2d_1/Conv", "stage1/Add", "stage1/concat_1/Concat", "stage1/concat_1/conv2d_2/Conv",
            "stage1/concat_1/residual_1/Add", "stage1/concat_1/residual_1/conv2d_4/Conv",
            "stage1/maximum_1/Max", "stage1/maximum_1/conv2d_5/Conv", "dense_1/Gemm"} <= names, sorted(names)
    model = block_model("repeat_residual")
    names = {n.name for n in ox.to_onnx(model, random_weights(model)).graph.node}
    assert {"repeat_1/residual_1/dense_2/Gemm", "repeat_1/residual_1/Add", "repeat_1/residual_2/Add"} <= names


def test_convolutions_stay_channels_first_through_blocks():
    # conv, residual of convs, relu: channels-first from the first conv to flatten, so two
    # Transposes in all, and the Add joins channels-first values
    model = block_model("residual_conv")
    m = ox.to_onnx(model, random_weights(model))
    assert [n.op_type for n in m.graph.node].count("Transpose") == 2
    (add,) = [n for n in m.graph.node if n.op_type == "Add"]
    assert list(add.input) == ["conv2d_1.nchw", "conv2d_3.nchw"] and list(add.output) == ["residual_1.nchw"]
    # concat on the channels of channels-first values joins on ONNX's axis 1
    model = block_model("concat_sequence")
    m = ox.to_onnx(model, random_weights(model))
    (concat,) = [n for n in m.graph.node if n.op_type == "Concat"]
    assert onnx.helper.get_attribute_value(concat.attribute[0]) == 1 and concat.output[0] == "concat_1.ncw"
    # a value read by several branches is moved to the other layout once
    model = block_model("model t\ninput x: float32[5, 5, 2]\nadd {\n" + "branch { conv2d 2 kernel=1 }\n" * 2 + "}\n")
    m = ox.to_onnx(model, random_weights(model))
    assert [n.op_type for n in m.graph.node].count("Transpose") == 2
    onnx.checker.check_model(m, full_check=True)


def test_parity_is_sensitive_to_the_branch_order():
    # the check above can fail: subtract's branches swapped in the graph give other numbers
    model = block_model("subtract")
    w = random_weights(model)
    x = random_input(model)
    block = model.body[0]
    swapped = block_model("subtract")
    swapped.body[0].branches = list(reversed(block.branches))
    with pytest.raises(AssertionError):
        assert_close(ort_run(ox.to_onnx(swapped, w), x), numpy_reference(model, w, x))
