"""Losses and metrics, with Keras 3's semantics: each loss is the mean over every sample (and,
for sequence outputs, every position), its gradient is taken with respect to z, the network's
output *before* its final softmax or sigmoid (Network.forward leaves that activation out).

When the loss and the final activation belong together (categorical cross-entropy after softmax,
binary cross-entropy after sigmoid) they are fused: the loss is computed from z with
log-sum-exp, so it stays finite for any z, and its gradient is the familiar p - y. Any other
pairing is computed as Keras computes it on probabilities (normalize, clip to [1e-7, 1 - 1e-7],
log) and back-propagated through the final activation.

    value, dz = loss_and_grad("sparse_categorical_crossentropy", z, y, "softmax")
    value, dz = loss_and_grad("huber", z, y, None, delta=2.0, sample_weight=w)

The regression losses (mse, mae, huber) and kl_divergence are computed on the outputs, as Keras
computes them, and back-propagated through the final activation. Metrics live in nnc.training.metrics.
"""

from __future__ import annotations

import numpy as np

from nnc.lang.model import Model, TrainConfig

EPSILON = 1e-7  # keras.config.epsilon(): the clip of probabilities before a log
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse", "mae",
          "huber", "kl_divergence")
SMOOTHABLE = ("categorical_crossentropy", "binary_crossentropy")  # the losses that take label_smoothing=


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
                  need_grad: bool = True, *, delta: float = 1.0, label_smoothing: float = 0.0,
                  sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """The mean loss over the batch and dL/dz. `y`: integer class ids shaped like z without its
    last axis (sparse), or targets shaped like z (every other loss).

    - `delta`: huber's (Keras's Huber(delta=1.0)).
    - `label_smoothing`: Keras's, on categorical_crossentropy (y * (1 - ls) + ls / classes) and
      binary_crossentropy (y * (1 - ls) + 0.5 * ls); Keras's sparse loss has none.
    - `sample_weight`: one weight per sample (class_weight's), multiplying that sample's loss;
      the sum is still divided by the number of samples (Keras's sum_over_batch_size)."""
    m = _positions(z)
    if loss == "sparse_categorical_crossentropy":
        if label_smoothing:
            raise ValueError("sparse_categorical_crossentropy takes no label_smoothing (as Keras's)")
        y = np.asarray(y).astype(np.int64, copy=False)
        onehot = np.zeros(z.shape, dtype=z.dtype)
        np.put_along_axis(onehot, y[..., None], 1, axis=-1)
        terms, dz = _categorical(z, onehot, activation, m, need_grad)
    else:
        y = np.asarray(y, dtype=z.dtype)
        if label_smoothing and loss in SMOOTHABLE:
            ls = z.dtype.type(label_smoothing)
            y = y * (1 - ls) + (ls / z.shape[-1] if loss == "categorical_crossentropy" else z.dtype.type(0.5) * ls)
        if loss == "categorical_crossentropy":
            terms, dz = _categorical(z, y, activation, m, need_grad)
        elif loss == "binary_crossentropy":
            terms, dz = _binary(z, y, activation, m, need_grad)
        elif loss in ("mse", "mae", "huber"):
            terms, dz = _regression(loss, z, y, activation, m, need_grad, delta)
        elif loss == "kl_divergence":
            terms, dz = _kl_divergence(z, y, activation, m, need_grad)
        else:
            raise ValueError(f"unknown loss {loss!r}")
    if sample_weight is None:
        return float(terms.sum(dtype=np.float64) / m), dz
    w = np.asarray(sample_weight, dtype=np.float64)
    w = w.reshape(w.shape + (1,) * (terms.ndim - w.ndim))  # one weight per sample, over its positions
    value = float((terms * w).sum(dtype=np.float64) / m)
    if dz is not None:  # each position's loss depends on its own row of z only
        dz = dz * w[..., None].astype(z.dtype)
    return value, dz


# Each helper returns (the loss of every position, shaped z.shape[:-1], in float64; dL/dz of the
# unweighted mean over the m positions, or None).


def _regression(loss, z, y, activation, m, need_grad, delta):
    """Keras's mean_squared_error, mean_absolute_error and huber: a mean over the last axis."""
    p = final(z, activation)
    diff = p - y
    c = z.shape[-1]
    if loss == "mse":
        terms = np.square(diff, dtype=np.float64).mean(axis=-1)
        grad = 2.0 * diff
    elif loss == "mae":
        terms = np.abs(diff).astype(np.float64).mean(axis=-1)
        grad = np.sign(diff)
    else:  # Keras's huber: 0.5 e^2 where |e| <= delta, delta (|e| - 0.5 delta) beyond
        e = diff.astype(np.float64)
        small = np.abs(e) <= delta
        terms = np.where(small, 0.5 * np.square(e), delta * np.abs(e) - 0.5 * delta * delta).mean(axis=-1)
        grad = np.where(np.abs(diff) <= delta, diff, z.dtype.type(delta) * np.sign(diff))
    if not need_grad:
        return terms, None
    return terms, _final_backward(activation, p, grad / (m * c)).astype(z.dtype, copy=False)


def _kl_divergence(z, y, activation, m, need_grad):
    """Keras's kl_divergence: y_true and y_pred clipped to [epsilon, 1], sum y log(y / p)."""
    p = final(z, activation)
    yc = np.clip(y, EPSILON, 1).astype(np.float64)
    pc = np.clip(p, EPSILON, 1)
    terms = (yc * (np.log(yc) - np.log(pc.astype(np.float64)))).sum(axis=-1)
    if not need_grad:
        return terms, None
    dp = np.where((p >= EPSILON) & (p <= 1), -yc / pc, 0.0) / m
    return terms, _final_backward(activation, p, dp.astype(z.dtype, copy=False)).astype(z.dtype, copy=False)


def _categorical(z, y, activation, m, need_grad):
    if activation == "softmax":
        logp = _log_softmax(z)
        terms = -(y * logp).sum(axis=-1, dtype=np.float64)
        if not need_grad:
            return terms, None
        # d/dz of -sum_k y_k (z_k - logsumexp z) = softmax(z) * sum_k y_k - y
        return terms, (np.exp(logp) * y.sum(axis=-1, keepdims=True) - y) / m
    # probabilities from another activation (or none): Keras normalizes, clips, takes the log
    p = final(z, activation)
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    qc = np.clip(q, EPSILON, 1 - EPSILON)
    terms = -(y * np.log(qc)).sum(axis=-1, dtype=np.float64)
    if not need_grad:
        return terms, None
    dq = np.where((q > EPSILON) & (q < 1 - EPSILON), -y / qc, 0.0) / m
    dp = (dq - (dq * q).sum(axis=-1, keepdims=True)) / s  # through q = p / sum(p)
    return terms, _final_backward(activation, p, dp).astype(z.dtype, copy=False)


def _binary(z, y, activation, m, need_grad):
    c = z.shape[-1]
    if activation == "sigmoid":
        # -[y log s(z) + (1-y) log(1 - s(z))] = max(z, 0) - z y + log(1 + exp(-|z|))
        elems = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        terms = elems.sum(axis=-1, dtype=np.float64) / c
        if not need_grad:
            return terms, None
        return terms, (_sigmoid(z) - y) / (m * c)
    p = final(z, activation)
    pc = np.clip(p, EPSILON, 1 - EPSILON)
    elems = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    terms = elems.sum(axis=-1, dtype=np.float64) / c
    if not need_grad:
        return terms, None
    dp = np.where((p > EPSILON) & (p < 1 - EPSILON), -y / pc + (1 - y) / (1 - pc), 0.0) / (m * c)
    return terms, _final_backward(activation, p, dp).astype(z.dtype, copy=False)


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


def class_sample_weights(y: np.ndarray, class_weight: tuple[float, ...] | list[float]) -> np.ndarray:
    """Keras's class_weight_to_sample_weights: each sample's class id (a sparse label, the argmax
    of a one-hot target, or a single sigmoid target rounded to 0 or 1) picks its weight."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    ids = np.round(y).astype(np.int64)
    return np.asarray(class_weight, dtype=np.float64)[ids]


def loss_options(cfg: TrainConfig | None) -> dict:
    """The loss's options in a train config, as loss_and_grad takes them."""
    if cfg is None:
        return {}
    return {"delta": cfg.huber_delta, "label_smoothing": cfg.label_smoothing}


# --- regularization ----------------------------------------------------------------------------


def regularization(model: Model, weights: dict[str, np.ndarray],
                   need_grad: bool = True) -> tuple[float, dict[str, np.ndarray]]:
    """Keras's L1L2 kernel regularizers (the `l1=`/`l2=` options, on the weights each kind's
    `regularized(opts)` names): the penalty l1 * sum|w| + l2 * sum(w^2), summed over layers, which
    Keras adds to the loss it minimizes and reports (training and validation alike:
    Model.compute_loss adds `self.losses`), and its gradient l1 * sign(w) + 2 * l2 * w per weight."""
    total = 0.0
    grads: dict[str, np.ndarray] = {}
    for layer in model.layers:
        l1, l2 = float(layer.options.get("l1", 0.0) or 0.0), float(layer.options.get("l2", 0.0) or 0.0)
        if not (l1 or l2):
            continue
        for short in layer.spec.regularized(layer.options):
            name = f"{layer.name}.{short}"
            w = weights[name]
            if l1:
                total += l1 * float(np.abs(w).sum(dtype=np.float64))
            if l2:
                total += l2 * float(np.square(w).sum(dtype=np.float64))
            if need_grad:
                g = np.zeros_like(w)
                if l1:
                    g += w.dtype.type(l1) * np.sign(w)
                if l2:
                    g += w.dtype.type(2 * l2) * w
                grads[name] = g
    return total, grads
