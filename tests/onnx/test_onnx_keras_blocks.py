"""Independent parity for blocks: the Keras 3 functional twin (backend torch; Add, Concatenate,
Multiply, Average, Maximum, Minimum, Subtract) with the same weights computes what the ONNX graph
computes on onnxruntime and what the NumPy backend computes, forward and (through torch's
autograd) backward.

Skips cleanly when Keras is not installed (`pip install -e .[reference]`); CI installs it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from nnc.engines.numpy import Network  # noqa: E402
from nnc.lang.model import MERGES, Block  # noqa: E402
from nnc.onnx import export as ox  # noqa: E402

from block_cases import BLOCK_SPECS, block_model  # noqa: E402
from keras_twin import keras_model, keras_predict  # noqa: E402
from onnx_cases import assert_close, ort_run, random_input, random_weights  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# one model per merge kind, residual, repeat, nesting
CASES = ["residual_conv", "add_projection", "concat_identity", "concat_three_axis1", "concat_sequence", "multiply",
         "multiply_three", "average", "maximum", "minimum", "subtract", "repeat_residual", "nested",
         "rank1_multi_read", "pool_in_branch", "ends_in_concat", "embedding_branches",
         "transformer_repeat"]


def _kinds(nodes):
    for n in nodes:
        if isinstance(n, Block):
            yield n.kind
            for b in n.branches:
                yield from _kinds(b)


def test_cases_cover_every_merge_kind_and_nesting():
    kinds = {k for name in CASES for k in _kinds(block_model(name).body)}
    assert kinds >= set(MERGES) | {"residual", "repeat"}
    assert set(CASES) <= set(BLOCK_SPECS) and "nested" in CASES


@pytest.mark.parametrize("name", CASES)
def test_block_model_matches_keras(name):
    model = block_model(name)
    w = random_weights(model, seed=5)
    x = random_input(model, batch=3, seed=6)
    ref = keras_predict(model, w, x)
    assert ref.shape == (3, *model.output_shape)
    assert_close(ort_run(ox.to_onnx(model, w), x), ref, rtol=1e-5, what=f"{name}: onnxruntime")
    assert_close(Network(model, w).predict(x), ref, rtol=1e-5, what=f"{name}: numpy float32")
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    assert_close(Network(model, w64).predict(x.astype(np.float64)), ref, rtol=1e-5, what=f"{name}: numpy float64")


def _torch_grads(model, weights, x, dz):
    """dL/dw and dL/dx of L = sum(z * dz) through the Keras twin, by torch's autograd."""
    km = keras_model(model, weights)
    xt = torch.tensor(x, requires_grad=True)
    z = km(xt, training=False)
    (z * torch.tensor(dz)).sum().backward()
    grads = {}
    for layer in model.layers:
        kl = km.get_layer(layer.name)
        for short, var in zip(layer.weights, kl.weights):
            grads[f"{layer.name}.{short}"] = var.value.grad.detach().numpy()
    return grads, xt.grad.numpy()


@pytest.mark.parametrize("merge", ["maximum", "minimum", "multiply", "average", "subtract", "concat"])
def test_gradients_match_keras_autograd_even_at_ties(merge):
    # the branches are dense layers with the same weights (so maximum and minimum tie everywhere)
    # after a shared dense: the gradients Keras's torch backend computes, in float32
    n = 2 if merge == "subtract" else 3
    text = (f"model t\ninput x: float32[5]\ndense 4 activation=tanh\n{merge} {{\n"
            + "branch { dense 3 }\n" * n + "}\ndense 2\n")
    model = block_model(text)
    w = random_weights(model, seed=7)
    for i in range(3, n + 2):
        for p in ("kernel", "bias"):
            w[f"dense_{i}.{p}"] = w[f"dense_2.{p}"].copy()
    x = random_input(model, batch=4, seed=8)
    net = Network(model, w)
    z = net.forward(x)
    dz = np.random.default_rng(9).standard_normal(z.shape).astype(np.float32)
    grads = net.backward(dz, need_input_grad=True)
    ref, dx = _torch_grads(model, w, x, dz)
    assert set(ref) == set(grads)
    for k in ref:
        assert_close(grads[k], ref[k], rtol=1e-5, what=k)
    assert_close(net.input_grad, dx, rtol=1e-5, what="input")


def test_digits_resnet_expect_lines_are_keras_numbers():
    import re
    from pathlib import Path

    from nnc.lang.weights import init_weights

    text = (Path(__file__).resolve().parent.parent.parent / "specs" / "digits_resnet.nnspec").read_text()
    model = block_model(text)
    km = keras_model(model, init_weights(model, 0))
    assert km.count_params() == int(re.search(r"expect params == (\d+)", text).group(1)) == model.total_params
    assert list(km.output_shape[1:]) == list(model.output_shape)


# --- the specs with blocks that users copy (specs/*.nnspec) -------------------------------------

SPEC_DIR = Path(__file__).resolve().parent.parent.parent / "specs"
BLOCK_SPEC_FILES = ["cifar10_resnet", "inception_blocks", "unet_segmentation", "transformer_text"]


def _spec(name):
    from nnc.lang.checker import check_file

    r = check_file(str(SPEC_DIR / f"{name}.nnspec"))
    assert r.diagnostics == [], [d.message for d in r.diagnostics]
    return r.model, (SPEC_DIR / f"{name}.nnspec").read_text()


def _stated(text, what):
    m = re.search(rf"^expect {what} == (\[[^]]*\]|\d+)", text, re.M)
    return None if m is None else json.loads(m.group(1))


def _spec_weights(model, seed):
    """Keras's initial weights (glorot, so a deep net's outputs keep their scale and its softmax is
    not saturated), with random biases, betas, gammas and moving statistics, which Keras starts at
    0 or 1 and which must not hide a mix-up."""
    from nnc.lang.weights import init_weights

    rng = np.random.default_rng(seed)
    w = init_weights(model, seed)
    for k, v in w.items():
        if k.endswith((".bias", ".beta", ".moving_mean")):
            w[k] = (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        elif k.endswith((".gamma", ".moving_variance")):
            w[k] = (1 + 0.2 * rng.random(v.shape)).astype(np.float32)
    return w


def _size(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("name", BLOCK_SPEC_FILES)
def test_block_spec_is_its_keras_functional_twin(name):
    """Each spec's expect lines are the counts and shape of its Keras twin (built from the spec by
    keras_functional), and with the same weights Keras, onnxruntime and the NumPy backend compute
    the same outputs (inference)."""
    model, text = _spec(name)
    assert any(isinstance(n, Block) for n in model.body)
    w = _spec_weights(model, seed=11)
    km = keras_model(model, w)
    assert km.count_params() == model.total_params == _stated(text, "params")
    trainable, frozen = _size(km.trainable_weights), _size(km.non_trainable_weights)
    assert (trainable, frozen) == (model.trainable_params, model.non_trainable_params)
    if frozen:  # batchnorm: both of Keras's figures are stated
        assert (_stated(text, "trainable_params"), _stated(text, "non_trainable_params")) == (trainable, frozen)
    assert list(km.output_shape[1:]) == list(model.output_shape) == _stated(text, "output")
    x = random_input(model, batch=2, seed=12)
    ref = np.asarray(keras.ops.convert_to_numpy(km(x, training=False)))
    assert ref.shape == (2, *model.output_shape)
    assert_close(ort_run(ox.to_onnx(model, w), x), ref, rtol=1e-5, what=f"{name}: onnxruntime")
    assert_close(Network(model, w).predict(x), ref, rtol=1e-5, what=f"{name}: numpy")


@pytest.mark.parametrize("name", BLOCK_SPEC_FILES)
def test_block_spec_gradients_are_keras_autograds(name):
    """dL/dw of L = sum(output * dz) by the NumPy backend (inference: dropout off, batchnorm's
    moving statistics) is what torch's autograd computes through the Keras twin."""
    model, _ = _spec(name)
    w = _spec_weights(model, seed=13)
    x = random_input(model, batch=2, seed=14)
    net = Network(model, w)
    p = net.apply_final(net.forward(x))
    dz = np.random.default_rng(15).standard_normal(p.shape).astype(np.float32)
    assert net.final_activation == "softmax"  # the network stops before it: dL/dlogits by hand
    grads = net.backward(p * (dz - np.sum(p * dz, axis=-1, keepdims=True)))
    km = keras_model(model, w)
    xt = torch.tensor(x)
    (km(xt, training=False) * torch.tensor(dz)).sum().backward()
    ref = {}
    for layer in model.layers:
        kl = km.get_layer(layer.name)
        for short, var in zip(layer.weights, kl.weights):
            if var.trainable:
                ref[f"{layer.name}.{short}"] = var.value.grad.detach().numpy()
    assert set(grads) == set(ref)
    # each layer's gradients at the precision of its largest one: attention's key bias has a zero
    # gradient (softmax ignores what its scores share), so both sides hold float32 rounding there
    layer_scale = {}
    for k, g in ref.items():
        layer = k.split(".")[0]
        layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.max(np.abs(g))))
    for k in ref:
        assert np.all(np.isfinite(grads[k])), k
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-5, atol=1e-5 * layer_scale[k.split(".")[0]],
                                   err_msg=f"{name}: {k}")
