"""Running compiled models: the Python API and `nnc run`, input checks, the CUDA provider."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from nnc.cli import main
from nnc.lang.errors import UserError
from nnc.onnx import export as ox
from nnc.onnx.runtime import Runner, run_model

from onnx_cases import CONTRACT, CONTRACT_IDS, assert_close, contract_model, option_model, ort_run, random_input, random_weights


def _compiled(tmp_path, model, weights=None):
    path = tmp_path / f"{model.name}.onnx"
    ox.compile_model(model, weights if weights is not None else random_weights(model), str(path))
    return str(path)


@pytest.fixture
def mnist(tmp_path):
    model = contract_model(next(p for p in CONTRACT if p.stem == "mnist_convnet"))
    return model, _compiled(tmp_path, model)


@pytest.fixture
def imdb(tmp_path):
    model = contract_model(next(p for p in CONTRACT if p.stem == "imdb_gru"))
    return model, _compiled(tmp_path, model)


def test_python_api_runs_on_the_cpu_and_says_so(mnist):
    model, path = mnist
    x = random_input(model, batch=4)
    y, provider = run_model(path, x)
    assert provider == "CPUExecutionProvider"
    assert y.shape == (4, 10)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)  # softmax output
    np.testing.assert_array_equal(y, ort_run(onnx.load(path), x))


def test_cli_run_writes_the_output(mnist, tmp_path, capsys):
    model, path = mnist
    x = random_input(model, batch=2)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", path, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    err = capsys.readouterr().err
    assert "CPUExecutionProvider" in err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run_model(path, x)[0])


def test_cli_run_prints_without_output_file(imdb, tmp_path, capsys):
    model, path = imdb
    x = random_input(model, batch=2)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", path, "--input", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    y = run_model(path, x)[0]
    assert f"{y[0, 0]:.6f}" in out


@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 28, 28), np.float32), r"input has shape float32\[2, 28, 28\], but the model's input 'image' is float32\[batch, 28, 28, 1\]"),
    (np.zeros((2, 28, 28, 3), np.float32), r"shape float32\[2, 28, 28, 3\]"),
    (np.zeros((2, 28, 28, 1), np.float64), r"input has dtype float64, but the model's input 'image' is float32\[batch, 28, 28, 1\]"),
])
def test_input_that_does_not_fit_is_refused(mnist, bad, message):
    with pytest.raises(UserError, match=message):
        run_model(mnist[1], bad)


def test_one_sample_without_batch_gets_a_hint(mnist):
    with pytest.raises(UserError) as e:
        run_model(mnist[1], np.zeros((28, 28, 1), np.float32))
    assert "x[None]" in e.value.help


@pytest.mark.parametrize("bad_id", [10000, -1])
def test_token_ids_out_of_range_are_refused(imdb, bad_id):
    model, path = imdb
    x = random_input(model, batch=2)
    x[1, 7] = bad_id
    with pytest.raises(UserError, match=rf"token id {bad_id} at index \[1, 7\], but ids must be in 0..9999 \(vocab=10000\)"):
        run_model(path, x)


def test_token_ids_need_int64(imdb):
    model, path = imdb
    with pytest.raises(UserError, match="dtype int32"):
        run_model(path, random_input(model).astype(np.int32))


def test_cli_errors_are_one_line(mnist, tmp_path, capsys):
    _, path = mnist
    np.save(tmp_path / "bad.npy", np.zeros((1, 3), np.float32))
    assert main(["run", path, "--input", str(tmp_path / "bad.npy")]) == 1
    assert main(["run", str(tmp_path / "none.onnx"), "--input", str(tmp_path / "bad.npy")]) == 2
    assert main(["run", path, "--input", str(tmp_path / "none.npy")]) == 2
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["run", str(tmp_path / "junk.onnx"), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "input has shape float32[1, 3]" in err
    assert "cannot read model" in err and "cannot read input" in err and "cannot load model" in err


def test_a_model_not_from_nnc_is_checked_against_its_graph(tmp_path):
    # no nnc metadata: the graph's declared input is what is checked
    model = option_model("dense_activations")
    proto = ox.to_onnx(model, random_weights(model))
    del proto.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    r = Runner(str(path))
    assert r.run(np.ones((2, 5), np.float32)).shape == (2, 3)
    with pytest.raises(UserError, match=r"float32\[batch, 5\]"):
        r.run(np.ones((2, 6), np.float32))


def _cuda_session_or_reason(path):
    try:
        return Runner(path, "cuda"), None
    except UserError as e:
        return None, e.message


def test_cuda_never_falls_back_silently(mnist):
    # Where the CUDA provider cannot be created (this machine: no GPU), the run is refused
    # with what is missing; where it can, the session really is on CUDA.
    r, reason = _cuda_session_or_reason(mnist[1])
    if r is None:
        assert reason.startswith("--device cuda:")
        assert "CUDA" in reason and ("cannot load" in reason or "no CUDA provider" in reason or "GPU" in reason)
    else:
        assert r.provider == "CUDAExecutionProvider"


def test_cli_cuda_failure_is_clear(mnist, tmp_path, capsys):
    r, reason = _cuda_session_or_reason(mnist[1])
    if r is not None:
        pytest.skip("a CUDA provider works here; the refusal path is for machines without one")
    model, path = mnist
    np.save(tmp_path / "x.npy", random_input(model, batch=1))
    assert main(["run", path, "--input", str(tmp_path / "x.npy"), "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("nnc run: error: --device cuda:")
    assert "CPUExecutionProvider" not in captured.err and captured.out == ""


@pytest.mark.cuda
@pytest.mark.parametrize("path", CONTRACT, ids=CONTRACT_IDS)
def test_contract_spec_on_cuda_matches_cpu(tmp_path, path):
    model = contract_model(path)
    onnx_path = _compiled(tmp_path, model)
    r, reason = _cuda_session_or_reason(onnx_path)
    if r is None:
        pytest.skip(f"no CUDA provider here: {reason}")
    assert r.session.get_providers()[0] == "CUDAExecutionProvider"
    x = random_input(model, batch=8)
    y_cuda = r.run(x)
    y_cpu, provider = run_model(onnx_path, x, "cpu")
    assert provider == "CPUExecutionProvider"
    # cuDNN and the CPU kernels sum in different orders (TF32 is off): compare at 1e-4
    assert_close(y_cuda, y_cpu, rtol=1e-4, what=f"{model.name} cuda vs cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["kinds", "blocks"])
def test_every_kind_and_block_on_cuda_matches_numpy(tmp_path, family):
    # Every case of the ONNX kind and block tables, compiled and run on the CUDA provider, equals
    # the NumPy backend in float64 (what the CPU provider is checked against elsewhere).
    from block_cases import BLOCK_SPECS, block_model
    from more_cases import MORE_SPECS
    from nnc.engines.numpy import Network

    names, make = (list(MORE_SPECS), option_model) if family == "kinds" else (list(BLOCK_SPECS), block_model)
    failed = []
    for name in names:
        model = make(name)
        w = random_weights(model, seed=5)
        x = random_input(model, batch=2, seed=6)
        path = _compiled(tmp_path, model, w)
        r, reason = _cuda_session_or_reason(path)
        if r is None:
            pytest.skip(f"no CUDA provider here: {reason}")
        assert r.session.get_providers()[0] == "CUDAExecutionProvider"
        ref = Network(model, {k: v.astype(np.float64) for k, v in w.items()}).predict(
            x if x.dtype == np.int64 else x.astype(np.float64))
        y = r.run(x)
        err = float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-6))
        if not err <= 1e-4:
            failed.append(f"{name}: relative error {err:.2e}")
    assert not failed, failed


# --- hostile and broken models (issue 10) -----------------------------------------------------


def _tiny(tmp_path, name, input_dims, nodes, outputs, inits=(), metadata=None):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
                          outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata:
        helper.set_model_props(m, metadata)
    path = tmp_path / name
    onnx.save(m, str(path))
    return str(path)


def test_fixed_batch_model_refuses_another_batch(tmp_path):
    from onnx import TensorProto, helper


    path = _tiny(tmp_path, "fixed.onnx", [2, 3], [helper.make_node("Identity", ["x"], ["y"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    r = Runner(path)
    assert r.run(np.ones((2, 3), np.float32)).shape == (2, 3)
    with pytest.raises(UserError, match=r"input has shape float32\[5, 3\], but the model's input 'x' is float32\[2, 3\]"):
        r.run(np.ones((5, 3), np.float32))


def test_onnxruntime_failing_at_run_time_and_broken_metadata_are_clear_errors(tmp_path):
    from onnx import TensorProto, helper, numpy_helper


    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    path = _tiny(tmp_path, "reshape.onnx", ["batch", "n"], [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits=[shape],
                 metadata={"nnc.input": "{not json"})
    r = Runner(path)  # the broken nnc.input is ignored: the graph's declaration is checked
    assert r.run(np.ones((1, 6), np.float32)).shape == (2, 3)
    with pytest.raises(UserError, match="onnxruntime failed to run"):
        r.run(np.ones((1, 5), np.float32))


def test_a_data_file_from_another_compile_is_refused(tmp_path):

    model = contract_model(next(p for p in CONTRACT if p.stem == "mnist_convnet"))
    a, b = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    ox.save(ox.build(model, random_weights(model, seed=1)), str(a), threshold=ox._GRAPH_MARGIN + 100)
    ox.save(ox.build(model, random_weights(model, seed=2)), str(b), threshold=ox._GRAPH_MARGIN + 100)
    x = np.zeros((1, 28, 28, 1), np.float32)
    Runner(str(a)).run(x)  # a consistent pair runs
    os.replace(str(b) + ".data", str(a) + ".data")  # what a kill between the two renames leaves
    with pytest.raises(UserError, match="is not the one compiled with it"):
        Runner(str(a))
