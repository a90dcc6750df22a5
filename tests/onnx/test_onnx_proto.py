"""nnc.onnx.proto, the hand-written ONNX encoder: its bytes are onnx's own.

The reference is the protobuf runtime: the same model built with onnx.helper (as nnc built
it before it had its own encoder) and serialized with SerializeToString(), for every spec,
every option case and several opsets; external data against onnx.save_model; and `nnc compile`
in a fresh process must not import onnx at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nnc.onnx import export as ox
from nnc.onnx import proto as onnx_proto

from onnx_cases import CONTRACT, OPTION_SPECS, contract_model, option_model, random_weights

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.nnspec"))
ALL = [(p.stem, p) for p in CONTRACT] + [(p.stem, p) for p in SPECS] + [(n, None) for n in OPTION_SPECS]
OPSETS = [14, 17, 18, 21, 26]  # the first, the default, attribute axes become inputs, newer IR versions, the last


class HelperProto:
    """nnc.onnx.proto's interface built on onnx.helper: put in its place, the lowering builds the
    model with onnx's own builders, exactly as nnc did before it had an encoder of its own."""

    DTYPE = onnx_proto.DTYPE
    IR_VERSION = onnx_proto.IR_VERSION

    @staticmethod
    def node(op, inputs, outputs, name="", **attrs):
        return helper.make_node(op, inputs, outputs, name=name, **attrs)

    @staticmethod
    def value_info(name, elem_type, dims):
        return helper.make_tensor_value_info(name, elem_type, dims)

    @staticmethod
    def tensor(name, dims, data_type, raw, external=None):
        assert external is None
        a = np.frombuffer(bytes(raw), dtype=helper.tensor_dtype_to_np_dtype(data_type)).reshape(dims)
        return numpy_helper.from_array(a, name)

    @staticmethod
    def graph(nodes, name, initializers, inputs, outputs, value_infos=(), doc_string=""):
        return helper.make_graph(nodes, name, inputs, outputs, initializer=initializers, value_info=value_infos,
                                 doc_string=doc_string)

    @staticmethod
    def model(graph, opset, ir_version, producer_name, producer_version, model_version, metadata):
        opsets = [helper.make_opsetid("", opset)]
        m = helper.make_model(graph, opset_imports=opsets, producer_name=producer_name,
                              producer_version=producer_version, ir_version=helper.find_min_ir_version_for(opsets))
        m.model_version = model_version
        helper.set_model_props(m, metadata)
        return m

    @staticmethod
    def join(m):
        return m.SerializeToString()


def reference_bytes(monkeypatch, model, weights, opset) -> bytes:
    with monkeypatch.context() as mp:
        mp.setattr(ox, "onnx_proto", HelperProto)
        return ox.build(model, weights, opset).to_bytes()


def _model(name, path):
    return contract_model(path) if path is not None else option_model(name)


@pytest.mark.parametrize("name,path", ALL, ids=[a[0] for a in ALL])
def test_bytes_are_onnx_helpers_bytes(name, path, monkeypatch):
    model = _model(name, path)
    w = random_weights(model)
    for opset in OPSETS:
        ours = ox.build(model, w, opset).to_bytes()
        theirs = reference_bytes(monkeypatch, model, w, opset)
        assert len(theirs) > 100 and ours == theirs, f"{name} at opset {opset}: the bytes differ from onnx's"


def test_the_ir_versions_are_onnx_helpers():
    for opset in ox.SUPPORTED_OPSETS:
        assert onnx_proto.IR_VERSION[opset] == helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


@pytest.mark.parametrize("value", [0, 1, -1, 127, 128, 300, 2**31, -2**63, 2**63 - 1, True, 0.0, -0.5, 1e-30,
                                   float("inf"), "", "same", "é/∂", b"\x00\xff", [0], [1, -1, 2**40],
                                   [1.0], [0.5, -2.0, 3], ["Tanh", "Sigmoid"], [b"a", "b"]])
def test_attributes_are_onnx_helpers(value):
    assert onnx_proto.attribute("a", value) == helper.make_attribute("a", value).SerializeToString()


def test_nodes_are_onnx_helpers():
    cases = [("Relu", ["x"], ["y"], "", {}),
             ("LSTM", ["x", "W", "R", "", "", "h0"], ["Y", "", "Y_c"], "l/LSTM",
              {"hidden_size": 3, "direction": "forward", "layout": 0, "activations": ["Tanh"], "clip": None,
               "activation_alpha": [1.0]}),
             ("Conv", ["x", "w"], ["y"], "名前", {"pads": [0, 1, 0, 1], "group": 1, "kernel_shape": [3, 3]})]
    for op, i, o, name, attrs in cases:
        assert onnx_proto.node(op, i, o, name, **attrs) == \
            helper.make_node(op, i, o, name=name, **attrs).SerializeToString()


@pytest.mark.parametrize("array", [np.zeros((0, 3), np.float32), np.array(7, np.int64),
                                   np.arange(300, dtype=np.float32).reshape(3, 10, 10) - 150,
                                   np.array([-1, 2**62], np.int64)])
@pytest.mark.parametrize("name", ["w", ""])
def test_tensors_are_numpy_helpers(array, name):
    raw = memoryview(array.reshape(-1).view(np.uint8))
    ours = onnx_proto.join(onnx_proto.tensor(name, array.shape, onnx_proto.DTYPE[array.dtype.name], raw))
    assert ours == numpy_helper.from_array(array, name).SerializeToString()


@pytest.mark.parametrize("dims", [[], ["batch"], ["batch", 3, 0, 2**40], [5, "n", "m"]])
def test_value_infos_are_onnx_helpers(dims):
    for dtype in onnx_proto.DTYPE.values():
        assert onnx_proto.value_info("v", dtype, dims) == \
            helper.make_tensor_value_info("v", dtype, dims).SerializeToString()


def test_external_data_is_onnx_save_models(tmp_path):
    # both files byte for byte as onnx.save_model writes them from the same model
    for name in ["mnist_convnet", "imdb_lstm"]:
        model = contract_model(next(p for p in CONTRACT if p.stem == name))
        enc = ox.build(model, random_weights(model))
        ours = tmp_path / name / "ours" / f"{name}.onnx"
        files = ox.save(enc, str(ours), threshold=ox._GRAPH_MARGIN + 100)  # a small model counts as big
        assert files == [str(ours) + ".data", str(ours)]
        assert sorted(os.listdir(ours.parent)) == [ours.name, ours.name + ".data"]  # no temporary left behind
        theirs = tmp_path / name / "theirs" / f"{name}.onnx"
        theirs.parent.mkdir()
        cwd = os.getcwd()
        os.chdir(theirs.parent)  # save_model checks the location against the working folder
        # ours also names its data file's checksum in the metadata (nnc run checks it): give theirs the same
        proto = enc.to_proto()
        props = {p.key: p.value for p in onnx.load(str(ours), load_external_data=False).metadata_props}
        assert json.loads(props[ox.EXTERNAL_DATA_KEY])["location"] == ours.name + ".data"
        helper.set_model_props(proto, props)
        try:
            onnx.save_model(proto, str(theirs), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=theirs.name + ".data", size_threshold=1024)
        finally:
            os.chdir(cwd)
        assert ours.read_bytes() == theirs.read_bytes()
        data = Path(str(ours) + ".data").read_bytes()
        assert data == Path(str(theirs) + ".data").read_bytes()
        assert os.path.getsize(ours) < 20000 < len(data)
        onnx.checker.check_model(str(ours), full_check=True)
        loaded = onnx.load(str(ours))  # and the weights read back are the ones compiled in
        inline = {t.name: numpy_helper.to_array(t) for t in enc.to_proto().graph.initializer}
        assert {t.name for t in loaded.graph.initializer} == set(inline)
        for t in loaded.graph.initializer:
            np.testing.assert_array_equal(numpy_helper.to_array(t), inline[t.name])
        # written again below the threshold: one file, the stale data file gone
        assert ox.save(enc, str(ours)) == [str(ours)]
        assert os.listdir(ours.parent) == [ours.name]
        assert ours.read_bytes() == enc.to_bytes() == enc.to_proto().SerializeToString()


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model = option_model("flatten_after_conv")
    enc = ox.build(model, random_weights(model))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")

    class Boom(Exception):
        pass

    def explode(self, location=None):
        raise Boom()

    monkeypatch.setattr(ox.Encoded, "chunks", explode)
    with pytest.raises(Boom):
        ox.save(enc, str(out))
    with pytest.raises(Boom):
        ox.save(enc, str(out), threshold=1)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]


def test_compile_never_imports_onnx(tmp_path):
    out = tmp_path / "m.onnx"
    mnist = next(p for p in CONTRACT if p.stem == "mnist_convnet")
    code = ("import sys\nfrom nnc.cli import main\n"
            f"rc = main(['compile', {str(mnist)!r}, '-o', {str(out)!r}])\n"
            "assert rc == 0, rc\n"
            "bad = sorted(m for m in sys.modules if m == 'onnx' or m.startswith(('onnx.', 'google.protobuf')))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(str(out), full_check=True)
