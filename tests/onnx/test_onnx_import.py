"""`nnc import MODEL.onnx` of graphs nnc compiled: the spec back from the metadata, the weights back
from the initializers (nnc.tools.onnx_import.INVERSES, one inverse per kind), exactly; and the
refusals of files that are not what they claim (altered metadata, external data outside the
model's folder, not ONNX at all)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from nnc.cli import main
from nnc.lang.checker import check_file, check_source
from nnc.lang.fmt import format_source
from nnc.lang.kinds import KINDS
from nnc.onnx.export import compile_model, to_onnx
from nnc.tools.onnx_import import INVERSES, import_onnx

from block_cases import BLOCK_SPECS, spec_text
from onnx_cases import CONTRACT, OPTION_SPECS, ort_run, random_input, random_weights

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.nnspec"))


def test_every_kind_has_an_inverse():
    # a kind added to nnc.lang.kinds needs its inverse of lower_<kind> for `nnc import`
    missing = sorted(set(KINDS) - set(INVERSES))
    assert not missing, f"nnc.tools.onnx_import.INVERSES lacks {', '.join(missing)}"
    assert set(INVERSES) == set(KINDS)


def _cases():
    yield from ((f"option:{n}", f"model {n}\n{OPTION_SPECS[n]}\n") for n in OPTION_SPECS)
    yield from ((f"block:{n}", spec_text(n)) for n in BLOCK_SPECS)
    yield from ((f"spec:{p.stem}", p.read_text()) for p in SPECS)
    yield from ((f"contract:{p.stem}", p.read_text()) for p in CONTRACT)


CASES = dict(_cases())


def _fmt(text: str) -> str:
    out, errors = format_source(text)
    assert out is not None, errors
    return out


def test_the_cases_cover_every_kind():
    kinds = {l.kind for text in CASES.values() for l in check_source(text).model.layers}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_graph_imports_back_exactly(case, tmp_path):
    text = CASES[case]
    r = check_source(text, "case.nnspec")
    assert r.ok, [d.message for d in r.diagnostics]
    model = r.model
    w = random_weights(model, seed=3)
    path = tmp_path / "m.onnx"
    compile_model(model, w, str(path))
    imp = import_onnx(str(path))
    assert not imp.problems
    assert _fmt(imp.text) == _fmt(text)
    assert imp.weights.keys() == w.keys()
    for k in w:  # bit for bit
        assert imp.weights[k].dtype == np.float32 and imp.weights[k].shape == w[k].shape, k
        assert imp.weights[k].tobytes() == w[k].tobytes(), k
    again = tmp_path / "again.onnx"
    compile_model(imp.model, imp.weights, str(again))
    assert again.read_bytes() == path.read_bytes()
    x = random_input(model, batch=2)
    np.testing.assert_array_equal(ort_run(onnx.load(str(again)), x), ort_run(onnx.load(str(path)), x))


def test_import_cli_writes_spec_and_checkpoint(tmp_path, capsys):
    src = SPECS[0]
    model = check_file(str(src)).model
    w = random_weights(model, seed=1)
    np.savez(tmp_path / "w.npz", **w)
    assert main(["compile", str(src), "-o", str(tmp_path / "m.onnx"), "--weights", str(tmp_path / "w.npz")]) == 0
    out, wout = tmp_path / "back.nnspec", tmp_path / "back.npz"
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(out), "--weights-out", str(wout)]) == 0
    assert "wrote" in capsys.readouterr().err
    assert out.read_text() == src.read_text()
    with np.load(wout) as d:
        assert sorted(d.files) == sorted(w) and all(np.array_equal(d[k], w[k]) for k in w)
    assert main(["check", str(out)]) == 0


def _compiled(tmp_path) -> tuple[Path, onnx.ModelProto]:
    text = f"model {'flatten_after_conv'}\n{OPTION_SPECS['flatten_after_conv']}\n"
    model = check_source(text).model
    m = to_onnx(model, random_weights(model))
    return tmp_path / "m.onnx", m


def _meta(m, key, value):
    for p in m.metadata_props:
        if p.key == key:
            p.value = value


def test_altered_spec_is_refused(tmp_path, capsys):
    path, m = _compiled(tmp_path)
    source = next(p.value for p in m.metadata_props if p.key == "nnc.source")
    _meta(m, "nnc.source", source.replace("dense 5", "dense 6"))
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "s.nnspec")]) == 1
    assert "does not match its nnc.source_sha256" in capsys.readouterr().err
    assert not (tmp_path / "s.nnspec").exists()


def test_altered_weights_are_refused(tmp_path, capsys):
    path, m = _compiled(tmp_path)
    # a graph whose spec and hash agree but whose initializers are not the ones the spec gives
    source = next(p.value for p in m.metadata_props if p.key == "nnc.source") + "# edited\n"
    _meta(m, "nnc.source", source)
    _meta(m, "nnc.source_sha256", hashlib.sha256(source.encode()).hexdigest())
    t = next(t for t in m.graph.initializer if t.name.endswith(".kernel") and "dense" in t.name)
    t.dims[0] -= 1
    t.raw_data = t.raw_data[: len(t.raw_data) - 4 * t.dims[1]]
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "s.nnspec")]) == 1
    err = capsys.readouterr().err
    assert "layer dense_1's weights" in err and "Traceback" not in err


def test_initializers_the_spec_does_not_give_are_refused(tmp_path, capsys):
    # the LSTM's recurrent bias Rb: nnc writes zeros (Keras has one bias); the inverse cannot keep a
    # non-zero one, and lowering the imported weights again shows it
    model = check_source(f"model lstm\n{OPTION_SPECS['lstm']}\n").model
    m = to_onnx(model, random_weights(model))
    t = next(t for t in m.graph.initializer if t.name == "lstm_1.B")
    b = onnx.numpy_helper.to_array(t).copy()
    b[0, b.shape[1] // 2:] = 0.5
    t.CopyFrom(onnx.numpy_helper.from_array(b, t.name))
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "s.nnspec")]) == 1
    err = capsys.readouterr().err
    assert "initializers are not what nnc writes" in err and "lstm_1.B" in err


def test_external_data_outside_the_folder_is_refused(tmp_path, capsys):
    path, m = _compiled(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.onnx"
    t = m.graph.initializer[0]
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "s.nnspec")]) == 1
    assert "outside the model's folder" in capsys.readouterr().err
    assert not (tmp_path / "s.nnspec").exists()


def test_external_data_inside_the_folder_is_read(tmp_path):
    path, m = _compiled(tmp_path)
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
                    size_threshold=0)
    imp = import_onnx(str(path))
    model = imp.model
    assert imp.weights.keys() == model.weight_shapes().keys()


def test_not_an_onnx_file(tmp_path, capsys):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 10)
    assert main(["import", str(p), "-o", str(tmp_path / "s.nnspec")]) == 1
    err = capsys.readouterr().err
    assert "is not an ONNX model" in err and "Traceback" not in err
    assert main(["import", str(tmp_path / "missing.onnx")]) == 2


def test_operators_changed_after_compile_are_a_warning(tmp_path, capsys):
    # a tool that rewrote the operators (here: renamed one) but kept the weights: the spec and the
    # weights still come back, with a warning that the graph is not the one the spec compiles to
    path, m = _compiled(tmp_path)
    m.graph.node[0].name = "renamed"
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "s.nnspec"), "--weights-out", str(tmp_path / "w.npz")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "operators differ" in err
    assert (tmp_path / "s.nnspec").exists() and (tmp_path / "w.npz").exists()


def _graph_file(tmp_path, nodes, inits=(), shape=(None, 3, 8, 8)) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch" if d is None else d for d in shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], list(inits)))
    path = tmp_path / "g.onnx"
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("what", ["cycle", "conv_without_kernel", "gemm_of_wrong_size", "free_input_size"])
def test_malformed_graphs_are_refused_with_a_message(what, tmp_path, capsys):
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 7), np.float32), "w")
    shape = (None, 3, 8, 8)
    nodes = {
        "cycle": [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                  helper.make_node("Identity", ["b"], ["y"])],
        "conv_without_kernel": [helper.make_node("Conv", ["x", "missing"], ["y"], kernel_shape=[3, 3])],
        "gemm_of_wrong_size": [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"])],
        "free_input_size": [helper.make_node("Relu", ["x"], ["y"])],
    }[what]
    if what == "free_input_size":
        shape = (None, 3, "h", 8)
    path = _graph_file(tmp_path, nodes, [w], shape)
    rc = main(["import", str(path), "-o", str(tmp_path / "s.nnspec"), "--weights-out", str(tmp_path / "w.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "internal error" not in err, err
    assert not (tmp_path / "w.npz").exists()
    if what in ("conv_without_kernel", "gemm_of_wrong_size"):  # reported where they stand
        assert "# unsupported:" in (tmp_path / "s.nnspec").read_text()
