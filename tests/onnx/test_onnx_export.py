"""The ONNX graph nnc writes: valid, shaped as nnc says, named for people, deterministic."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, shape_inference

from nnc.lang.kinds import DROPOUT_KINDS, KINDS
from nnc.lang.weights import init_weights
from nnc.onnx import export as ox

from onnx_cases import CONTRACT, CONTRACT_IDS, OPTION_SPECS, contract_model, option_model, ort_run, random_input, random_weights

ALL = [(p.stem, p) for p in CONTRACT] + [(n, None) for n in OPTION_SPECS]


def _model(name, path):
    return contract_model(path) if path is not None else option_model(name)


def test_every_kind_has_a_lowering():
    missing = [k for k in KINDS if not callable(getattr(ox, f"lower_{k}", None))]
    assert not missing, f"nnc.onnx.export lacks lower_{', lower_'.join(missing)}"


def test_option_specs_cover_every_kind():
    kinds = {l.kind for n in OPTION_SPECS for l in option_model(n).layers}
    assert kinds == set(KINDS)


def _dims(t: onnx.TypeProto) -> list:
    return [d.dim_param or d.dim_value for d in t.tensor_type.shape.dim]


@pytest.mark.parametrize("name,path", ALL, ids=[a[0] for a in ALL])
def test_checks_and_onnx_shapes_agree_with_nnc(name, path):
    model = _model(name, path)
    m = ox.to_onnx(model, random_weights(model))
    onnx.checker.check_model(m, full_check=True)
    # Infer from scratch: drop the shapes nnc declared, so ONNX's own rules produce them
    bare = onnx.ModelProto()
    bare.CopyFrom(m)
    del bare.graph.value_info[:]
    inferred = shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    shapes = {v.name: _dims(v.type) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    # the input: the spec's name, its own channels-last layout, a symbolic batch
    (inp,) = inferred.graph.input
    assert inp.name == model.input.name
    assert _dims(inp.type) == ["batch", *model.input.shape]
    from_input = {inp.name}  # values computed from the input (the others, from weights alone, have no batch)
    for n in m.graph.node:
        if any(i in from_input for i in n.input):
            from_input.update(n.output)
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):  # every value fully known
        dims = _dims(v.type)  # (recurrent operators' values are time-major: the batch comes second)
        assert dims.count("batch") == (v.name in from_input), (v.name, dims)
        assert all(isinstance(d, int) and d > 0 for d in dims if d != "batch"), (v.name, dims)
    for layer in model.layers:
        if layer.kind in DROPOUT_KINDS:  # the identity at inference: no node, no value
            continue
        last = shapes.get(layer.name)
        suffix = {1: ".ncw", 2: ".nchw"}.get(len(layer.output_shape) - 1)
        first = shapes.get(layer.name + suffix) if suffix else None
        assert last is not None or first is not None, f"no value named after {layer.name}"
        if last is not None:
            assert last == ["batch", *layer.output_shape], layer.name
        if first is not None:
            s = layer.output_shape
            assert first == ["batch", s[-1], *s[:-1]], layer.name
    (out,) = inferred.graph.output
    assert _dims(out.type) == ["batch", *model.output_shape]
    # and the shapes nnc declares for Netron are the ones ONNX infers
    declared = {v.name: _dims(v.type) for v in m.graph.value_info}
    for k, v in declared.items():
        assert shapes[k] == v, k


def test_dropout_is_absent_at_inference():
    m = ox.to_onnx(option_model("dropout_and_activations"), random_weights(option_model("dropout_and_activations")))
    assert not [n for n in m.graph.node if n.op_type == "Dropout" or n.name.startswith("dropout")]


@pytest.mark.parametrize("name,ops", [
    ("mnist_convnet", {"Conv", "MaxPool", "Gemm", "Softmax", "Flatten"}),
    ("imdb_lstm", {"Gather", "LSTM"}),
    ("imdb_gru", {"Gather", "GRU"}),
    ("imdb_simplernn", {"Gather", "RNN"}),
])
def test_natural_operators(name, ops):
    model = contract_model(next(p for p in CONTRACT if p.stem == name))
    m = ox.to_onnx(model, init_weights(model, 0))
    types = {n.op_type for n in m.graph.node}
    assert ops <= types
    for n in m.graph.node:
        if n.op_type in ("LSTM", "GRU", "RNN"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["layout"] == 0  # the CUDA provider rejects layout=1
            if n.op_type == "GRU":
                assert attrs["linear_before_reset"] == 1  # Keras reset_after=true


def test_same_padding_puts_the_odd_pixel_at_the_end():
    # kernel 4x2, stride 2 on 9x10: 9 high -> 5 outputs, total padding (5-1)*2+4-9 = 3: one
    # before, two after; 10 wide -> 5 outputs, total (5-1)*2+2-10 = 0
    model = option_model("conv2d_same_even_stride")
    m = ox.to_onnx(model, random_weights(model))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    pads = next(onnx.helper.get_attribute_value(a) for a in conv.attribute if a.name == "pads")
    assert pads == [1, 0, 2, 0]  # [h_begin, w_begin, h_end, w_end]; kernel 4x2 on w=10: total 0


def test_names_follow_layers_and_metadata_says_where_from(tmp_path):
    path = next(p for p in CONTRACT if p.stem == "mnist_convnet")
    out = tmp_path / "m.onnx"
    from nnc.cli import main

    assert main(["compile", str(path), "-o", str(out)]) == 0
    m = onnx.load(str(out))
    model = contract_model(path)
    inits = {t.name for t in m.graph.initializer if "/" not in t.name}
    assert inits == set(model.weight_shapes())  # conv2d_1.kernel, conv2d_1.bias, ..., dense_2.bias
    layer_names = {l.name for l in model.layers} | {model.input.name}
    for n in m.graph.node:
        assert n.name.split("/")[0] in layer_names, n.name
    assert m.producer_name == "nnc"
    from nnc import __version__

    assert m.producer_version == __version__
    meta = {p.key: p.value for p in m.metadata_props}
    import hashlib

    assert meta["nnc.source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(meta["nnc.input"]) == {"name": "image", "dtype": "float32", "shape": [28, 28, 1]}
    assert meta["nnc.model"] == "mnist_convnet"


def test_vocab_is_stored_for_token_ids():
    model = option_model("embedding_own_vocab")  # input vocab=20, embedding vocab=25: ids < 20
    m = ox.to_onnx(model, random_weights(model))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["nnc.input"])["vocab"] == 20


@pytest.mark.parametrize("path", CONTRACT, ids=CONTRACT_IDS)
def test_deterministic_bytes(tmp_path, path):
    from nnc.cli import main

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["compile", str(path), "-o", str(a)]) == 0
    assert main(["compile", str(path), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    # and a different seed gives different weights
    c = tmp_path / "c.onnx"
    assert main(["compile", str(path), "-o", str(c), "--seed", "1"]) == 0
    assert c.read_bytes() != a.read_bytes()


def test_external_data_past_the_threshold(tmp_path):
    model = contract_model(next(p for p in CONTRACT if p.stem == "mnist_convnet"))
    w = random_weights(model)
    proto = ox.to_onnx(model, w)
    out = tmp_path / "big.onnx"
    files = ox.save(proto, str(out), threshold=ox._GRAPH_MARGIN + 100)  # a small model counts as big
    assert files == [str(tmp_path / "big.onnx.data"), str(out)]
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]  # no temporary left behind
    assert os.path.getsize(out) < 20000 < os.path.getsize(str(out) + ".data")  # the weights are not inside
    onnx.checker.check_model(str(out), full_check=True)
    x = random_input(model)
    import onnxruntime as ort

    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(s.run(None, {"image": x})[0], ort_run(proto, x))
    # the model in memory was not changed by saving
    assert all(t.HasField("raw_data") and t.raw_data for t in proto.graph.initializer if t.dims)
    # below the threshold, one file
    small = tmp_path / "small.onnx"
    assert ox.save(proto, str(small)) == [str(small)]
    # and the same path written again below the threshold drops the data file it no longer reads
    assert ox.save(proto, str(out)) == [str(out)]
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "small.onnx"]
    onnx.checker.check_model(str(out), full_check=True)


def test_the_real_threshold_is_protobufs_2_gib():
    assert ox.EXTERNAL_DATA_THRESHOLD == 2 * 1024**3


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model = option_model("flatten_after_conv")
    proto = ox.to_onnx(model, random_weights(model))
    out = tmp_path / "m.onnx"

    class Boom(Exception):
        pass

    def explode(self):
        raise Boom()

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", explode)
    with pytest.raises(Boom):
        ox.save(proto, str(out))
    assert os.listdir(tmp_path) == []
    # and an existing file is left as it was
    monkeypatch.undo()
    out.write_bytes(b"old")
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", explode)
    with pytest.raises(Boom):
        ox.save(proto, str(out))
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]


def test_weights_are_keras_layouts_moved_to_onnx():
    # Conv kernels [kh, kw, in, out] -> [out, in, kh, kw]; LSTM gates i,f,c,o -> i,o,f,c
    model = option_model("lstm")
    w = random_weights(model)
    m = ox.to_onnx(model, w)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    u = 5
    k = w["lstm_1.kernel"]
    i, f, c, o = (k[:, j * u:(j + 1) * u] for j in range(4))
    np.testing.assert_array_equal(inits["lstm_1.W"][0], np.concatenate([i, o, f, c], axis=1).T)
    np.testing.assert_array_equal(inits["lstm_1.B"][0, 4 * u:], 0)


@pytest.mark.parametrize("text", ["input x: float32[4]", "input x: float32[4]\ndropout 0.5",
                                  "input t: int64[5] vocab=7"])
def test_models_that_compute_the_identity(text):
    # no layers, or only dropout (the identity at inference): still a valid graph with an output
    from nnc.lang.checker import check_source

    model = check_source("model a\n" + text + "\n").model
    m = ox.to_onnx(model, {})
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.output[0].name != m.graph.input[0].name
    x = random_input(model)
    np.testing.assert_array_equal(ort_run(m, x), x)
