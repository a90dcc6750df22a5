"""The PyTorch engine's modules (nnc.engines.torch.modules) against the NumPy backend: for every
layer kind and option (the gradient cases of tests/backend/test_backend_gradients.py) and every
block case (tests/onnx/block_cases.py), the same weights and input give the same outputs, the
same gradients of every weight and of the input (from a random dz, autograd against NumPy's hand
written backward), and the same batchnorm moving statistics after a training step. Training mode
with dropout included: TorchNet takes its masks from the same numpy Generator draws as Network.
The NumPy backend is checked against finite differences and Keras itself; these tests hold the
torch engine to it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "backend"))
sys.path.insert(0, str(HERE.parent / "onnx"))

from block_cases import BLOCK_SPECS, block_model  # noqa: E402
from test_backend_gradients import CASES, build as spec_model, make_inputs, make_weights  # noqa: E402

import nnc  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402
from nnc.engines.numpy.kernels import MERGE_KERNELS  # noqa: E402
from nnc.engines.torch import TORCH_KINDS, TORCH_MERGES, build  # noqa: E402
from nnc.lang.kinds import ACTIVATIONS, KINDS  # noqa: E402
from nnc.lang.model import MERGES  # noqa: E402

TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


def test_every_kind_and_merge_has_a_torch_builder():
    missing = sorted(set(KINDS) - set(TORCH_KINDS))
    assert not missing, f"kinds without a torch builder (nnc.engines.torch.modules.TORCH_KINDS): {missing}"
    missing = sorted((set(MERGES) | set(MERGE_KERNELS)) - set(TORCH_MERGES))
    assert not missing, f"merges without a torch join (nnc.engines.torch.modules.TORCH_MERGES): {missing}"


def test_the_cases_cover_every_kind():
    covered = {layer.kind for inp, body in CASES for layer in spec_model(inp, body).layers}
    assert covered >= set(KINDS), sorted(set(KINDS) - covered)


def _compare(model, dtype, training=True, seed=0, zeros=False):
    """Forward, backward from a random dz, and the weights after the step (batchnorm's moving
    statistics), NumPy against torch; returns the failures. `zeros`: a third of the input 0.0."""
    rng = np.random.default_rng(seed)
    weights = {k: v.astype(dtype) for k, v in make_weights(model, rng).items()}
    x = make_inputs(model, rng)
    if zeros:
        x[rng.random(x.shape) < 1 / 3] = 0
    if x.dtype != np.int64:
        x = x.astype(dtype)
    net = Network(model, {k: v.copy() for k, v in weights.items()}, dtype=dtype)
    z = net.forward(x, training=training, rng=np.random.default_rng(7))
    dz = rng.normal(size=z.shape).astype(dtype)
    grads = net.backward(dz, need_input_grad=True)

    tnet = build(model, weights, dtype=TORCH_DTYPES[dtype])
    assert tnet.final_activation == net.final_activation
    tnet.train(training)
    xt = tnet.prepare(x)
    if xt.is_floating_point():
        xt.requires_grad_(True)
    noise = tnet.draw_noise(len(x), np.random.default_rng(7)) if training else None
    zt = tnet(xt, noise)
    (zt * torch.from_numpy(dz)).sum().backward()

    # float32: within 1e-5 of NumPy's, relative to the array's norm, or to 1% of the model's
    # largest gradient for an array far smaller than the others (attention's query gradient
    # carries the float32 rounding of its larger neighbours; a key bias's is zero in exact
    # arithmetic); float64: 1e-9
    tol = 1e-9 if dtype == np.float64 else 1e-5
    floor = 1e-2 * max((np.linalg.norm(g) for g in grads.values()), default=0.0)
    failures = []

    def check(name, want, got):
        assert got.shape == want.shape, (name, got.shape, want.shape)
        err = np.linalg.norm(want - got) / max(np.linalg.norm(want), floor, 1e-30)
        if not err <= tol:
            failures.append(f"{name} {list(want.shape)}: {err:.2e}")

    check("z", z, zt.detach().numpy())
    params = tnet.trainable()
    assert set(params) == set(grads) == set(model.trainable_weights())
    for name, g in grads.items():
        got = params[name].grad
        check(name, g, np.zeros_like(g) if got is None else got.numpy())
    if net.input_grad is not None:
        check("<input>", net.input_grad, xt.grad.numpy())
    after = tnet.weights_numpy()
    assert list(after) == list(model.weight_shapes())
    for name, w in net.weights.items():  # moving statistics updated alike; the rest untouched
        check(name, w, after[name])
    return failures


CASE_IDS = [f"{i}:{b.replace(chr(10), '/')}" for i, b in CASES]


@pytest.mark.parametrize("inp,body", CASES, ids=CASE_IDS)
def test_every_kind_and_option_matches_numpy_float64(inp, body):
    failures = _compare(spec_model(inp, body), np.float64)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("inp,body", CASES, ids=CASE_IDS)
def test_every_kind_and_option_matches_numpy_float32(inp, body):
    failures = _compare(spec_model(inp, body), np.float32)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("name", list(BLOCK_SPECS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_every_block_matches_numpy(name, dtype):
    failures = _compare(block_model(name), dtype)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("inp,body", [
    ("mat", "batchnorm\ndense 2"),  # the moving statistics
    ("vec", "dense 4\ndropout 0.5\ndense 2"),  # dropout is the identity
    ("mat", "attention heads=2 key_dim=2 value_dim=3 causal=true dropout=0.3 use_bias=false\ndense 2"),
    ("rnn", "gru 2 bidirectional=true dropout=0.3 recurrent_dropout=0.3 activation=elu"),
    ("img", "conv2d 3 kernel=3\nbatchnorm\nspatial_dropout2d 0.3\nflatten\ndense 4 activation=softmax"),
])
def test_inference_mode_matches_numpy(inp, body):
    failures = _compare(spec_model(inp, body), np.float64, training=False)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activations_at_exact_zeros_match_numpy(act):
    # each derivative takes NumPy's (Keras's) value at 0 (softplus' and mish's sigmoid(0), not a
    # relu's or abs's subgradient 0): the input gradient shows it
    failures = _compare(spec_model("mat", f"{act}\ndense 2"), np.float64, zeros=True)
    assert not failures, "; ".join(failures)


def test_weights_go_out_and_in_in_keras_layouts():
    model = spec_model("img", "conv2d 3 kernel=2\nbatchnorm\nflatten\ndense 2 activation=softmax")
    rng = np.random.default_rng(1)
    w = {k: v.astype(np.float32) for k, v in make_weights(model, rng).items()}
    net = build(model, w)
    out = net.weights_numpy()
    assert {k: v.shape for k, v in out.items()} == model.weight_shapes()
    assert all(np.array_equal(out[k], w[k]) and out[k].dtype == np.float32 for k in w)
    # the conv kernel is a parameter in Keras's [kh, kw, in, out]; the moving statistics buffers
    assert tuple(net.trainable()["conv2d_1.kernel"].shape) == (2, 2, 2, 3)
    assert "batchnorm_1.moving_mean" not in net.trainable()
    w2 = {k: v + 1 for k, v in w.items()}
    net.load_numpy(w2)
    assert all(np.array_equal(net.weights_numpy()[k], w2[k]) for k in w2)
    x = make_inputs(model, rng).astype(np.float32)
    net.eval()
    with torch.no_grad():
        z = net(net.prepare(x)).numpy()
    np.testing.assert_allclose(z, Network(model, w2).logits(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(nnc.UserError, match="shape"):
        net.load_numpy({**w2, "dense_1.bias": np.zeros(3, np.float32)})


def test_user_errors():
    model = spec_model("ids", "embedding 3")
    net = build(model, make_weights(model, np.random.default_rng(0)))
    with pytest.raises(nnc.UserError, match="vocab=7"):
        net(net.prepare(np.array([[0, 1, 2, 3, 7]])))
    with pytest.raises(nnc.UserError, match="needs \\[batch, 5\\]"):
        net.prepare(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(nnc.UserError, match="lack"):
        build(model, {})


def test_without_torch_the_engine_is_a_clear_user_error(monkeypatch):
    # a fresh import of the package with torch unimportable
    saved = {k: v for k, v in sys.modules.items() if k.startswith("nnc.engines.torch")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, "torch", None)
    try:
        with pytest.raises(nnc.UserError, match=r"pip install 'nnc\[torch\]'"):
            importlib.import_module("nnc.engines.torch")
    finally:
        for k in [k for k in sys.modules if k.startswith("nnc.engines.torch")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_nothing_in_nnc_imports_the_engine_at_module_level():
    # torch is optional: the package's other modules must import without it
    src = Path(nnc.__file__).resolve().parent
    offenders = []
    for path in src.rglob("*.py"):
        if path.parent.name == "torch" and path.parent.parent.name == "engines":
            continue
        for line in path.read_text().splitlines():
            if line.startswith(("import torch", "from torch", "from nnc.engines.torch", "import nnc.engines.torch")):
                offenders.append(f"{path.relative_to(src)}: {line}")
    assert not offenders, offenders
