"""Whole models against PyTorch: the same weights (layouts transposed to PyTorch's), the same
inputs; forward outputs and the gradients of a loss must agree within 1e-5.

PyTorch is an independent implementation: its convolutions, pools, LSTM and GRU cells and
autograd share nothing with nnc's kernels. Data stay channels-last on the PyTorch side and are
permuted to channels-first around each convolution and pool, so flatten's order is Keras's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.engines.numpy import Network
from nnc.lang.kinds import same_pads
from nnc.lang.weights import init_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.reference

HERE = Path(__file__).resolve()
CONTRACT_DIRS = [HERE.parents[1] / "data" / "contract", HERE.parents[2] / ".." / "shared" / "contract"]
CONTRACT = ["lenet_c1", "mnist_convnet", "imdb_simplernn", "imdb_lstm", "imdb_gru"]


def contract_text(name: str) -> str:
    for d in CONTRACT_DIRS:
        if (d / f"{name}.nnspec").exists():
            return (d / f"{name}.nnspec").read_text()
    raise FileNotFoundError(f"{name}.nnspec in none of {CONTRACT_DIRS}")


# --- the same model in PyTorch ----------------------------------------------------------------


def _channels_first(x, fn):
    """Apply fn to a channels-last tensor through PyTorch's channels-first ops."""
    perm = (0, x.dim() - 1) + tuple(range(1, x.dim() - 1))
    back = (0,) + tuple(range(2, x.dim())) + (1,)
    return fn(x.permute(*perm)).permute(*back)


def _torch_pads(layer):
    """F.pad's argument (last spatial axis first) for the layer's Keras padding."""
    spec = layer.spec
    if layer.options["padding"] == "valid":
        return None
    pads = [same_pads(s, w, st) for s, w, st in
            zip(layer.input_shape, spec.window(layer.options), spec.strides(layer.options))]
    return [p for pair in reversed(pads) for p in pair]


def _act(name, x):
    return {"linear": lambda v: v, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "softmax": lambda v: torch.softmax(v, dim=-1)}[name](x)


def torch_layer(layer, x, w):
    kind, o = layer.kind, layer.options
    if kind in ("conv1d", "conv2d"):
        k = w["kernel"]
        pads = _torch_pads(layer)
        if kind == "conv2d":
            weight = k.permute(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]
            conv = lambda v: F.conv2d(F.pad(v, pads) if pads else v, weight, w.get("bias"), stride=o["stride"])
        else:
            weight = k.permute(2, 1, 0)  # [k, in, out] -> [out, in, k]
            conv = lambda v: F.conv1d(F.pad(v, pads) if pads else v, weight, w.get("bias"), stride=o["stride"])
        return _act(o["activation"], _channels_first(x, conv))
    if kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        spatial = 2 if kind.endswith("2d") else 1
        window = o["pool"]
        stride = o["stride"] or o["pool"]
        pads = _torch_pads(layer)
        if kind.startswith("max"):
            pool = F.max_pool2d if spatial == 2 else F.max_pool1d
            fn = lambda v: pool(F.pad(v, pads, value=-float("inf")) if pads else v, window, stride)
        else:
            pool = F.avg_pool2d if spatial == 2 else F.avg_pool1d
            # Keras divides by the unpadded elements: average the zero-padded input, and divide by
            # the average of a zero-padded ones tensor
            def fn(v):
                if not pads:
                    return pool(v, window, stride)
                ones = torch.ones_like(v[:1, :1])
                return pool(F.pad(v, pads), window, stride) / pool(F.pad(ones, pads), window, stride)
        return _channels_first(x, fn)
    if kind == "globalmaxpool":
        return x.flatten(1, -2).amax(dim=1)
    if kind == "globalavgpool":
        return x.flatten(1, -2).mean(dim=1)
    if kind == "flatten":
        return x.flatten(1)
    if kind == "dense":
        y = x @ w["kernel"]
        if "bias" in w:
            y = y + w["bias"]
        return _act(o["activation"], y)
    if kind == "dropout":
        return x  # parity runs inference; dropout's training behaviour is tested on its own
    if kind in ("relu", "sigmoid", "tanh", "softmax"):
        return _act(kind, x)
    if kind == "embedding":
        return F.embedding(x, w["embeddings"])
    if kind in ("rnn", "lstm", "gru"):
        return torch_recurrent(layer, x, w)
    raise AssertionError(f"no PyTorch twin for {kind}")


def torch_recurrent(layer, x, w):
    o = layer.options
    u = o["units"]
    K, U, b = w["kernel"], w["recurrent_kernel"], w["bias"]
    D = x.shape[-1]
    if layer.kind == "lstm":
        # PyTorch's gate order i, f, g, o is Keras's i, f, c, o; Keras has one bias, PyTorch two
        module = torch.nn.LSTM(D, u, batch_first=True)
        params = (K.T, U.T, b, torch.zeros_like(b))
    elif layer.kind == "gru" and o["reset_after"]:
        # PyTorch's GRU is the reset-after form, gate order r, z, n; Keras's is z, r, h
        order = lambda m: torch.cat([m[..., u:2 * u], m[..., :u], m[..., 2 * u:]], dim=-1)
        module = torch.nn.GRU(D, u, batch_first=True)
        params = (order(K).T, order(U).T, order(b[0]), order(b[1]))
    elif layer.kind == "rnn" and o["activation"] in ("tanh", "relu"):
        module = torch.nn.RNN(D, u, nonlinearity=o["activation"], batch_first=True)
        params = (K.T, U.T, b, torch.zeros_like(b))
    else:
        module = None
    if module is not None:
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        out = torch.func.functional_call(module, dict(zip(names, params)), (x,))[0]
    else:
        # the original GRU (reset before the product) and other rnn activations: written out
        # step by step, differentiated by autograd
        h = x.new_zeros(x.shape[0], u)
        outs = []
        for t in range(x.shape[1]):
            xt = x[:, t]
            if layer.kind == "rnn":
                h = _act(o["activation"], xt @ K + h @ U + b)
            else:
                xw = xt @ K + b
                z = torch.sigmoid(xw[:, :u] + h @ U[:, :u])
                r = torch.sigmoid(xw[:, u:2 * u] + h @ U[:, u:2 * u])
                hh = torch.tanh(xw[:, 2 * u:] + (r * h) @ U[:, 2 * u:])
                h = z * h + (1 - z) * hh
            outs.append(h)
        out = torch.stack(outs, dim=1)
    return out if o["return_sequences"] else out[:, -1]


def torch_model(model, weights, x):
    """Output of the whole model (final activation included) and the weight tensors."""
    tw = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    h = torch.tensor(x)
    if model.input.dtype != "int64":
        h.requires_grad_(True)
    xt = h
    for layer in model.layers:
        h = torch_layer(layer, h, {n: tw[f"{layer.name}.{n}"] for n in layer.weights})
    return h, tw, xt


# --- the comparison -----------------------------------------------------------------------------

EXTRA = {
    "gru_reset_before": "input x: float32[12, 5]\ngru 6 reset_after=false return_sequences=true\ngru 4 reset_after=false\n"
                        "dense 3 activation=softmax",
    "conv_same_stride2": "input x: float32[11, 10, 3]\nconv2d 4 kernel=4 stride=2 padding=same activation=relu\n"
                         "conv2d 5 kernel=3x2 stride=2 padding=same\nflatten\ndense 2 activation=sigmoid",
    "avgpool_same": "input x: float32[9, 7, 3]\navgpool2d 2 padding=same\navgpool2d 3 stride=2 padding=same\n"
                    "maxpool2d 2 padding=same\nflatten\ndense 4 activation=softmax",
    "pools_1d": "input x: float32[17, 3]\nconv1d 4 kernel=5 stride=2 padding=same activation=tanh\n"
                "maxpool1d 3 stride=2 padding=same\navgpool1d 2 padding=same\nglobalmaxpool\ndense 2",
    "global_2d": "input x: float32[6, 6, 2]\nconv2d 3 kernel=3 padding=same\nglobalavgpool\ndense 2 activation=softmax",
    "rnn_relu_sequences": "input x: float32[10, 4]\nrnn 5 activation=relu return_sequences=true\n"
                          "lstm 4 return_sequences=true\nrnn 3 activation=sigmoid\ndense 1 activation=sigmoid",
}


def contract_model(name: str) -> nnc.Model:
    text = contract_text(name)
    # the recurrent contract models are checked on 40 steps instead of 500 to keep the test fast;
    # the layers and weights are the contract's
    return nnc.loads(text.replace("int64[500]", "int64[40]"), file=f"{name}.nnspec")


def compare(model: nnc.Model, seed: int = 0, n: int = 8):
    rng = np.random.default_rng(seed)
    weights = init_weights(model, seed)
    for k, v in weights.items():  # nonzero biases, so their handling is tested too
        if k.endswith(".bias"):
            weights[k] = (v + rng.normal(scale=0.1, size=v.shape)).astype(np.float32)
    if model.input.dtype == "int64":
        x = rng.integers(0, model.input.vocab, size=(n,) + model.input.shape)
    else:
        x = rng.normal(size=(n,) + model.input.shape).astype(np.float32)

    net = Network(model, weights)
    y = net.predict(x)
    ty, tw, tx = torch_model(model, weights, x)
    close(y, ty.detach().numpy(), "output")

    # a loss on the final output: cross-entropy after softmax, binary cross-entropy after
    # sigmoid, a fixed projection otherwise. nnc's side gets dL/dz in closed form (its forward
    # stops before the final activation); PyTorch's differentiates log(probabilities).
    z = net.forward(x)
    if net.final_activation == "softmax":
        labels = rng.integers(0, y.shape[-1], size=n)
        dz = y.copy()
        dz[np.arange(n), labels] -= 1
        dz /= n
        tloss = -torch.log(ty[torch.arange(n), torch.tensor(labels)]).mean()
    elif net.final_activation == "sigmoid":
        t = rng.integers(0, 2, size=y.shape).astype(np.float32)
        dz = (y - t) / y.size
        tt = torch.tensor(t)
        tloss = -(tt * torch.log(ty) + (1 - tt) * torch.log(1 - ty)).mean()
    else:
        R = rng.normal(size=z.shape).astype(np.float32)
        dz = R
        tloss = (ty * torch.tensor(R)).sum()
    grads = net.backward(dz.astype(np.float32), need_input_grad=model.input.dtype != "int64")
    tloss.backward()
    for k in weights:
        close(grads[k], tw[k].grad.numpy(), k)
    if model.input.dtype != "int64":
        close(net.input_grad, tx.grad.numpy(), "input")


def close(ours, theirs, what):
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != PyTorch's {theirs.shape}"
    scale = max(float(np.abs(theirs).max()), 1e-3)
    err = float(np.abs(ours - theirs).max()) / scale
    assert err < 1e-5, f"{what} {list(ours.shape)}: max difference {err:.2e} of its largest value {scale:.3g}"


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_model_matches_pytorch(name):
    compare(contract_model(name))


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_option_matches_pytorch(name):
    compare(nnc.loads(f"model {name}\n{EXTRA[name]}\n"))
