"""Losses and metrics, with Keras 3's semantics: each loss is the mean over every sample (and,
for sequence outputs, every position), its gradient is taken with respect to z, the network's
output *before* its final softmax or sigmoid (Network.forward leaves that activation out).

When the loss and the final activation belong together (categorical cross-entropy after softmax,
binary cross-entropy after sigmoid) they are fused: the loss is computed from z with
log-sum-exp, so it stays finite for any z, and its gradient is the familiar p - y. Any other
pairing is computed as Keras computes it on probabilities (normalize, clip to [1e-7, 1 - 1e-7],
log) and back-propagated through the final activation.

    value, dz = loss_and_grad("sparse_categorical_crossentropy", z, y, "softmax")
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # keras.config.epsilon(): the clip of probabilities before a log
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse")


# --- activations and their backward, for the final one -------------------------------------


def _log_softmax(z: np.ndarray) -> np.ndarray:
    # subtract the max before exp: exp never overflows, and the largest term is exp(0) = 1
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def final(z: np.ndarray, activation: str | None) -> np.ndarray:
    """The probabilities (or outputs) the model gives for pre-activation z."""
    if activation == "softmax":
        return np.exp(_log_softmax(z))
    if activation == "sigmoid":
        return _sigmoid(z)
    return z


def _final_backward(activation: str | None, p: np.ndarray, dp: np.ndarray) -> np.ndarray:
    if activation == "softmax":  # Jacobian-vector product of softmax: p * (dp - <dp, p>)
        return p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    if activation == "sigmoid":
        return dp * p * (1 - p)
    return dp


# --- losses -----------------------------------------------------------------------------------


def _positions(z: np.ndarray) -> int:
    """How many loss terms Keras averages over: every sample and position, not the class axis."""
    return int(np.prod(z.shape[:-1])) or 1


def loss_and_grad(loss: str, z: np.ndarray, y: np.ndarray, activation: str | None,
                  need_grad: bool = True) -> tuple[float, np.ndarray | None]:
    """The mean loss over the batch and dL/dz. `y`: integer class ids shaped like z without its
    last axis (sparse), or targets shaped like z (every other loss)."""
    m = _positions(z)
    if loss == "sparse_categorical_crossentropy":
        y = np.asarray(y).astype(np.int64, copy=False)
        onehot = np.zeros(z.shape, dtype=z.dtype)
        np.put_along_axis(onehot, y[..., None], 1, axis=-1)
        return _categorical(z, onehot, activation, m, need_grad)
    y = np.asarray(y, dtype=z.dtype)
    if loss == "categorical_crossentropy":
        return _categorical(z, y, activation, m, need_grad)
    if loss == "binary_crossentropy":
        return _binary(z, y, activation, m, need_grad)
    if loss == "mse":
        p = final(z, activation)
        diff = p - y
        c = z.shape[-1]
        value = float(np.mean(np.square(diff, dtype=np.float64)))
        if not need_grad:
            return value, None
        return value, _final_backward(activation, p, 2.0 * diff / (m * c))
    raise ValueError(f"unknown loss {loss!r}")


def _categorical(z, y, activation, m, need_grad):
    if activation == "softmax":
        logp = _log_softmax(z)
        value = float(-(y * logp).sum(dtype=np.float64) / m)
        if not need_grad:
            return value, None
        # d/dz of -sum_k y_k (z_k - logsumexp z) = softmax(z) * sum_k y_k - y
        return value, (np.exp(logp) * y.sum(axis=-1, keepdims=True) - y) / m
    # probabilities from another activation (or none): Keras normalizes, clips, takes the log
    p = final(z, activation)
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    qc = np.clip(q, EPSILON, 1 - EPSILON)
    value = float(-(y * np.log(qc)).sum(dtype=np.float64) / m)
    if not need_grad:
        return value, None
    dq = np.where((q > EPSILON) & (q < 1 - EPSILON), -y / qc, 0.0) / m
    dp = (dq - (dq * q).sum(axis=-1, keepdims=True)) / s  # through q = p / sum(p)
    return value, _final_backward(activation, p, dp).astype(z.dtype, copy=False)


def _binary(z, y, activation, m, need_grad):
    c = z.shape[-1]
    if activation == "sigmoid":
        # -[y log s(z) + (1-y) log(1 - s(z))] = max(z, 0) - z y + log(1 + exp(-|z|))
        terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        value = float(terms.sum(dtype=np.float64) / (m * c))
        if not need_grad:
            return value, None
        return value, (_sigmoid(z) - y) / (m * c)
    p = final(z, activation)
    pc = np.clip(p, EPSILON, 1 - EPSILON)
    terms = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    value = float(terms.sum(dtype=np.float64) / (m * c))
    if not need_grad:
        return value, None
    dp = np.where((p > EPSILON) & (p < 1 - EPSILON), -y / pc + (1 - y) / (1 - pc), 0.0) / (m * c)
    return value, _final_backward(activation, p, dp).astype(z.dtype, copy=False)


# --- metrics ----------------------------------------------------------------------------------


def accuracy_kind(loss: str, output_units: int) -> str:
    """Which accuracy Keras picks for metrics=["accuracy"]: binary when the loss is binary
    cross-entropy or the model has one output, sparse for sparse labels, else categorical."""
    if loss == "binary_crossentropy" or output_units == 1:
        return "binary"
    if loss == "sparse_categorical_crossentropy":
        return "sparse_categorical"
    return "categorical"


def correct(kind: str, z: np.ndarray, y: np.ndarray, activation: str | None) -> tuple[float, int]:
    """(number correct, number counted) for a batch; accuracy is their ratio over the epoch."""
    if kind == "sparse_categorical":
        hits = np.argmax(z, axis=-1) == np.asarray(y).astype(np.int64)
    elif kind == "categorical":
        hits = np.argmax(z, axis=-1) == np.argmax(y, axis=-1)
    else:  # keras.metrics.binary_accuracy: y_pred > 0.5, compared with y_true, averaged per sample
        pred = final(z, activation) > 0.5
        hits = (pred == (np.asarray(y) > 0.5)).mean(axis=-1)
    return float(np.sum(hits, dtype=np.float64)), int(np.size(hits))
