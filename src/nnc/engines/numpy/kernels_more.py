"""NumPy forward and backward for Normalization, reshaping, spatial dropout, attention, position embeddings and the
activation layers with options (leaky_relu, elu, prelu).

Same protocol as nnc.engines.numpy.kernels (read its docstring); KERNELS here is merged into its registry.

Keras semantics, which these follow:
- batchnorm normalizes each channel (the last axis) over every other axis. In training it uses
  the batch's mean and biased variance and updates the moving statistics in place in the weights
  dict (m <- m * momentum + batch * (1 - momentum)); in inference it uses the moving ones. Its
  batch statistics need the whole batch, so a model with batchnorm trains in one chunk
  (nnc.engines.numpy.parallel.WHOLE_BATCH). The moving statistics get no gradient.
- layernorm normalizes each sample over its last axis (biased variance).
- spatial dropout drops whole channels: noise [n, 1, c] (1-D) or [n, 1, 1, c] (2-D), the kept
  channels scaled by 1 / (1 - rate).
- attention is MultiHeadAttention's self-attention mha(x, x, use_causal_mask=causal): the
  query is scaled by 1/sqrt(key_dim) before q.k^T, the softmax runs over the keys, dropout
  (training only) acts on the attention probabilities.
"""

from __future__ import annotations

import numpy as np

from nnc.engines.numpy.kernels import Activation, elu, leaky_relu
from nnc.lang.kinds import ACTIVATIONS


def _draws_dtype(x):
    return x.dtype if x.dtype in (np.float32, np.float64) else np.float64


# --- activation layers with options -----------------------------------------------------------


class LeakyRelu:
    """LeakyReLU(negative_slope): x for x > 0, else negative_slope * x (layer default 0.3)."""

    def __init__(self, layer):
        self.slope = float(layer.options["negative_slope"])

    def forward(self, x, w, training=False, rng=None):
        return leaky_relu(x, self.slope), x

    def backward(self, dy, w, cache, need_dx=True):
        x = cache
        return np.where(x > 0, dy, dy * dy.dtype.type(self.slope)), {}


class Elu:
    """ELU(alpha): x for x > 0, else alpha * (e^x - 1)."""

    def __init__(self, layer):
        self.alpha = float(layer.options["alpha"])

    def forward(self, x, w, training=False, rng=None):
        return elu(x, self.alpha), x

    def backward(self, dy, w, cache, need_dx=True):
        x = cache
        a = dy.dtype.type(self.alpha)
        return np.where(x > 0, dy, dy * a * np.exp(np.minimum(x, 0))), {}


class Prelu:
    """PReLU: x for x > 0, else alpha * x, with one learned alpha per input element (no shared
    axes): alpha has the input's shape without the batch."""

    def __init__(self, layer):
        pass

    def forward(self, x, w, training=False, rng=None):
        return np.where(x > 0, x, w["alpha"] * x), x

    def backward(self, dy, w, cache, need_dx=True):
        x = cache
        neg = x <= 0
        dalpha = (dy * np.where(neg, x, 0)).sum(axis=0)
        dx = np.where(neg, dy * w["alpha"], dy) if need_dx else None
        return dx, {"alpha": dalpha}


# --- normalization ----------------------------------------------------------------------------


def _normalize_backward(dxhat, xhat, inv, axes, count):
    """dL/dx of xhat = (x - mean(x)) * inv with inv = 1/sqrt(var(x) + eps), mean and biased
    variance over `axes` (count elements each), from dL/dxhat."""
    s1 = dxhat.sum(axis=axes, keepdims=True)
    s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
    return (inv / count) * (count * dxhat - s1 - xhat * s2)


class Batchnorm:
    def __init__(self, layer):
        o = layer.options
        self.momentum = float(o["momentum"])
        self.epsilon = float(o["epsilon"])
        self.center = o["center"]
        self.scale = o["scale"]

    def forward(self, x, w, training=False, rng=None):
        axes = tuple(range(x.ndim - 1))
        eps = x.dtype.type(self.epsilon)
        if training:
            mean = x.mean(axis=axes)
            centered = x - mean
            var = np.square(centered).mean(axis=axes)  # biased, as Keras
            m = x.dtype.type(self.momentum)
            for name, batch in (("moving_mean", mean), ("moving_variance", var)):
                moving = w[name]
                moving[...] = moving * m + batch.astype(moving.dtype) * (1 - m)
        else:
            centered = x - w["moving_mean"].astype(x.dtype, copy=False)
            var = w["moving_variance"].astype(x.dtype, copy=False)
        inv = 1 / np.sqrt(var + eps)
        xhat = centered * inv
        y = xhat * w["gamma"] if self.scale else xhat.copy()
        if self.center:
            y += w["beta"]
        return y, (xhat, inv, training)

    def backward(self, dy, w, cache, need_dx=True):
        xhat, inv, training = cache
        axes = tuple(range(dy.ndim - 1))
        grads = {}
        if self.scale:
            grads["gamma"] = (dy * xhat).sum(axis=axes)
        if self.center:
            grads["beta"] = dy.sum(axis=axes)
        if not need_dx:
            return None, grads
        dxhat = dy * w["gamma"] if self.scale else dy
        if not training:  # the moving statistics are constants
            return dxhat * inv, grads
        count = int(np.prod(dy.shape[:-1]))
        return _normalize_backward(dxhat, xhat, inv, axes, count), grads


class Layernorm:
    def __init__(self, layer):
        o = layer.options
        self.epsilon = float(o["epsilon"])
        self.center = o["center"]
        self.scale = o["scale"]

    def forward(self, x, w, training=False, rng=None):
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        var = np.square(centered).mean(axis=-1, keepdims=True)
        inv = 1 / np.sqrt(var + x.dtype.type(self.epsilon))
        xhat = centered * inv
        y = xhat * w["gamma"] if self.scale else xhat.copy()
        if self.center:
            y += w["beta"]
        return y, (xhat, inv)

    def backward(self, dy, w, cache, need_dx=True):
        xhat, inv = cache
        lead = tuple(range(dy.ndim - 1))
        grads = {}
        if self.scale:
            grads["gamma"] = (dy * xhat).sum(axis=lead)
        if self.center:
            grads["beta"] = dy.sum(axis=lead)
        if not need_dx:
            return None, grads
        dxhat = dy * w["gamma"] if self.scale else dy
        return _normalize_backward(dxhat, xhat, inv, -1, dy.shape[-1]), grads


# --- reshaping --------------------------------------------------------------------------------


class Reshape:
    def __init__(self, layer):
        self.shape = tuple(layer.output_shape)

    def forward(self, x, w, training=False, rng=None):
        return x.reshape((x.shape[0],) + self.shape), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        return dy.reshape(cache), {}


class Permute:
    """Keras Permute(dims): dims are 1-based input axes (the batch stays first)."""

    def __init__(self, layer):
        self.order = (0,) + tuple(int(a) for a in layer.options["axes"])
        self.inverse = tuple(int(i) for i in np.argsort(self.order))

    def forward(self, x, w, training=False, rng=None):
        return np.ascontiguousarray(x.transpose(self.order)), None

    def backward(self, dy, w, cache, need_dx=True):
        return np.ascontiguousarray(dy.transpose(self.inverse)), {}


class RepeatVector:
    def __init__(self, layer):
        self.n = int(layer.options["n"])

    def forward(self, x, w, training=False, rng=None):
        return np.repeat(x[:, None, :], self.n, axis=1), None

    def backward(self, dy, w, cache, need_dx=True):
        return dy.sum(axis=1), {}


# --- dropout ----------------------------------------------------------------------------------


class SpatialDropout:
    """SpatialDropout1D/2D: whole channels dropped (noise shape [n, 1, c] or [n, 1, 1, c]), the
    kept ones scaled by 1/(1-rate); the identity in inference."""

    def __init__(self, layer):
        self.rate = float(layer.options["rate"])
        self.channels = layer.input_shape[-1]
        self.spatial = len(layer.input_shape) - 1

    def noise_shape(self, n):
        return (n,) + (1,) * self.spatial + (self.channels,)

    def draws(self, n):
        return [self.noise_shape(n)] if self.rate > 0 else []

    def forward(self, x, w, training=False, rng=None):
        if not training or self.rate == 0.0:
            return x, None
        if rng is None:
            raise ValueError("spatial dropout in training needs an rng (numpy.random.Generator)")
        keep = rng.random(self.noise_shape(x.shape[0]), dtype=_draws_dtype(x)) >= self.rate
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * mask, mask

    def backward(self, dy, w, cache, need_dx=True):
        return (dy if cache is None else dy * cache), {}


# --- attention --------------------------------------------------------------------------------


class Attention:
    """Keras MultiHeadAttention as self-attention, x [n, T, F]:
        q, k, v = x Wq + bq, x Wk + bk, x Wv + bv     (kernels [F, heads, dim], biases [heads, dim])
        P = softmax(q k^T / sqrt(key_dim)) per head, over the keys (causal: key s <= query t)
        y = (dropout(P) v) Wo + bo                     (Wo [heads, value_dim, F], bo [F])
    Heads are kept as a batch axis ([n, heads, T, dim]) so each product is one matmul."""

    def __init__(self, layer):
        o = layer.options
        self.heads = int(o["heads"])
        self.key_dim = int(o["key_dim"])
        self.value_dim = int(o["value_dim"] or o["key_dim"])
        self.rate = float(o["dropout"])
        self.causal = bool(o["causal"])
        self.use_bias = bool(o["use_bias"])
        self.steps = int(layer.input_shape[0])

    def draws(self, n):
        return [(n, self.heads, self.steps, self.steps)] if self.rate > 0 else []

    def _project(self, x2, w, part, n, T):
        """x2 [n*T, F] -> [n, heads, T, dim]."""
        kernel = w[f"{part}.kernel"]
        p = x2 @ kernel.reshape(kernel.shape[0], -1)
        if self.use_bias:
            p += w[f"{part}.bias"].reshape(-1)
        return p.reshape(n, T, self.heads, -1).transpose(0, 2, 1, 3)

    def forward(self, x, w, training=False, rng=None):
        n, T, F = x.shape
        x2 = x.reshape(n * T, F)
        scale = x.dtype.type(1.0 / np.sqrt(self.key_dim))
        q = self._project(x2, w, "query", n, T) * scale
        k = self._project(x2, w, "key", n, T)
        v = self._project(x2, w, "value", n, T)
        scores = q @ k.transpose(0, 1, 3, 2)  # [n, heads, T(query), T(key)]
        if self.causal:
            scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        P = np.exp(scores)
        P /= P.sum(axis=-1, keepdims=True)
        mask = None
        Pd = P
        if training and self.rate > 0:
            if rng is None:
                raise ValueError("attention dropout in training needs an rng (numpy.random.Generator)")
            keep = rng.random((n, self.heads, T, T), dtype=_draws_dtype(x)) >= self.rate
            mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
            Pd = P * mask
        ctx = Pd @ v  # [n, heads, T, value_dim]
        ctx2 = ctx.transpose(0, 2, 1, 3).reshape(n * T, self.heads * self.value_dim)
        wo = w["attention_output.kernel"]
        y = ctx2 @ wo.reshape(-1, F)
        if self.use_bias:
            y += w["attention_output.bias"]
        return y.reshape(n, T, F), (x2, q, k, v, P, Pd, mask, ctx2)

    def backward(self, dy, w, cache, need_dx=True):
        x2, q, k, v, P, Pd, mask, ctx2 = cache
        n, h, T, _ = q.shape
        F = x2.shape[1]
        dy2 = dy.reshape(n * T, F)
        wo = w["attention_output.kernel"]
        grads = {"attention_output.kernel": (ctx2.T @ dy2).reshape(wo.shape)}
        if self.use_bias:
            grads["attention_output.bias"] = dy2.sum(axis=0)
        dctx = (dy2 @ wo.reshape(-1, F).T).reshape(n, T, h, self.value_dim).transpose(0, 2, 1, 3)
        dv = Pd.transpose(0, 1, 3, 2) @ dctx
        dP = dctx @ v.transpose(0, 1, 3, 2)
        if mask is not None:
            dP *= mask
        dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))  # softmax; masked keys have P = 0
        dq = (dS @ k) * dy.dtype.type(1.0 / np.sqrt(self.key_dim))
        dk = dS.transpose(0, 1, 3, 2) @ q
        dx2 = None
        for part, d in (("query", dq), ("key", dk), ("value", dv)):
            kernel = w[f"{part}.kernel"]
            d2 = d.transpose(0, 2, 1, 3).reshape(n * T, -1)  # [n*T, heads*dim]
            grads[f"{part}.kernel"] = (x2.T @ d2).reshape(kernel.shape)
            if self.use_bias:
                grads[f"{part}.bias"] = d2.sum(axis=0).reshape(w[f"{part}.bias"].shape)
            if need_dx:
                contrib = d2 @ kernel.reshape(F, -1).T
                dx2 = contrib if dx2 is None else dx2 + contrib
        # Keras's order of the weights, for readable gradient dicts
        order = [name for name in ("query.kernel", "query.bias", "key.kernel", "key.bias", "value.kernel",
                                   "value.bias", "attention_output.kernel", "attention_output.bias") if name in grads]
        grads = {name: grads[name] for name in order}
        return (dx2.reshape(n, T, F) if need_dx else None), grads


class PositionEmbedding:
    """x + table[:steps], the table [max_length, features]."""

    def __init__(self, layer):
        pass

    def forward(self, x, w, training=False, rng=None):
        return x + w["embeddings"][: x.shape[1]], x.shape[1]

    def backward(self, dy, w, cache, need_dx=True):
        steps = cache
        g = np.zeros_like(w["embeddings"])
        g[:steps] = dy.sum(axis=0)
        return dy, {"embeddings": g}


KERNELS: dict[str, type] = {
    # every activation as a layer (relu, sigmoid, tanh and softmax are nnc.engines.numpy.kernels' own)
    **{a: Activation for a in ACTIVATIONS if a not in ("leaky_relu", "elu")},
    "leaky_relu": LeakyRelu,
    "elu": Elu,
    "prelu": Prelu,
    "batchnorm": Batchnorm,
    "layernorm": Layernorm,
    "reshape": Reshape,
    "permute": Permute,
    "repeat_vector": RepeatVector,
    "spatial_dropout1d": SpatialDropout,
    "spatial_dropout2d": SpatialDropout,
    "attention": Attention,
    "position_embedding": PositionEmbedding,
}
