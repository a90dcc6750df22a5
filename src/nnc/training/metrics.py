"""Metrics of the train block, with Keras 3's semantics and names, streamed over batches.

Each metric is an object like Keras's stateful ones: `reset()`, then `update(z, y, activation)`
per batch (z: the network's output before its final activation, as the losses take it; y: the
targets as the loss takes them), and `result()` at any time is the metric over every batch since
the reset. So an epoch's `auc`, `precision` and `recall` are computed from the confusion counts of
all its batches (not a mean of per-batch values), and the mean-type metrics (`accuracy`, `mae`,
`mse`, `top_k_accuracy`) are means over every sample seen, as Keras's Mean metrics are.

Metrics are not weighted by class_weight: Keras 3's fit passes the sample weights it derives from
class_weight to the loss and to `weighted_metrics` only, never to `metrics`.

- `accuracy`: Keras's choice from the loss and output (nnc.training.losses.accuracy_kind).
- `mae`, `mse`: keras.metrics.MeanAbsoluteError / MeanSquaredError on the model's outputs
  (probabilities after a softmax or sigmoid); targets shaped like the outputs.
- `auc`: keras.metrics.AUC(): ROC curve, 200 thresholds evenly spread over [0, 1] (plus -epsilon
  and 1 + epsilon), trapezoidal ("interpolation") summation.
- `precision`, `recall`: keras.metrics.Precision() / Recall(), threshold 0.5.
  These three compare 0/1 targets with probabilities element by element over every output, as
  Keras does: on a sigmoid output that is the usual binary (or, with several sigmoid units,
  micro-averaged multi-label) metric; on a softmax output with one-hot targets each class is a
  yes/no question (one-vs-rest, all classes pooled). Class ids (sparse labels) do not fit them.
- `top_k_accuracy k=5`: keras.metrics.SparseTopKCategoricalAccuracy with sparse labels,
  TopKCategoricalAccuracy with one-hot targets (a tie with the k-th largest counts as a hit).
"""

from __future__ import annotations

# numpy (and nnc.training.losses) are imported where a metric computes; the tables and the
# checker's rules live in nnc.lang.metric_rules (checking a spec never imports numpy)
from nnc.lang.metric_rules import METRIC_ALIASES, METRICS, misfit


class Metric:
    name = ""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, z, y, activation: str | None) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class _Mean(Metric):
    """A mean over every sample (and position) seen since the reset."""

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class Accuracy(_Mean):
    name = "accuracy"

    def __init__(self, kind: str):
        self.kind = kind  # binary, sparse_categorical or categorical (accuracy_kind)
        super().__init__()

    def update(self, z, y, activation):
        from nnc.training.losses import correct

        hits, counted = correct(self.kind, z, y, activation)
        self.total += hits
        self.count += counted


class MeanError(_Mean):
    """keras.metrics.MeanAbsoluteError (`mae`) or MeanSquaredError (`mse`): the per-sample mean
    over the last axis, averaged over samples."""

    def __init__(self, name: str):
        self.name = name
        super().__init__()

    def update(self, z, y, activation):
        import numpy as np

        from nnc.training.losses import final

        diff = final(z, activation).astype(np.float64) - np.asarray(y, dtype=np.float64)
        err = np.abs(diff) if self.name == "mae" else np.square(diff)
        per_position = err.mean(axis=-1)
        self.total += float(per_position.sum())
        self.count += int(per_position.size)


class TopKAccuracy(_Mean):
    """Keras's (Sparse)TopKCategoricalAccuracy: the target class among the k largest
    probabilities, a tie with the k-th counting as a hit (ops.in_top_k)."""

    name = "top_k_accuracy"

    def __init__(self, k: int, sparse: bool):
        self.k, self.sparse = k, sparse
        super().__init__()

    def update(self, z, y, activation):
        import numpy as np

        from nnc.training.losses import final

        p = final(z, activation)
        labels = np.asarray(y).astype(np.int64) if self.sparse else np.argmax(y, axis=-1)
        target = np.take_along_axis(p, labels[..., None], axis=-1)
        hits = (p > target).sum(axis=-1) < self.k
        self.total += float(hits.sum())
        self.count += int(hits.size)


class AUC(Metric):
    """keras.metrics.AUC(): ROC, 200 evenly spread thresholds, trapezoidal summation. Keras's
    bucketing (its even-threshold path): a probability p (clipped to [0, 1]) counts as positive
    at threshold i / 199 when p > i / 199; the first and last thresholds are -epsilon and 1 + epsilon."""

    name = "auc"

    def __init__(self, num_thresholds: int = 200):
        self.num_thresholds = num_thresholds
        super().__init__()

    def reset(self):
        import numpy as np

        t = self.num_thresholds
        self.tp, self.fp = np.zeros(t), np.zeros(t)
        self.positives = self.negatives = 0.0

    def update(self, z, y, activation):
        import numpy as np

        from nnc.training.losses import final

        t = self.num_thresholds
        p = np.clip(final(z, activation).astype(np.float32).ravel(), 0.0, 1.0)
        truth = (np.asarray(y) != 0).ravel()
        buckets = np.maximum(np.ceil(p * np.float32(t - 1)) - 1, 0).astype(np.int64)
        # predictions above threshold i: those in bucket i or higher (a reversed cumulative sum)
        self.tp += np.bincount(buckets[truth], minlength=t)[::-1].cumsum()[::-1]
        self.fp += np.bincount(buckets[~truth], minlength=t)[::-1].cumsum()[::-1]
        self.positives += float(truth.sum())
        self.negatives += float(truth.size - truth.sum())

    def result(self):
        import numpy as np

        recall = self.tp / self.positives if self.positives else np.zeros_like(self.tp)
        fp_rate = self.fp / self.negatives if self.negatives else np.zeros_like(self.fp)
        heights = (recall[:-1] + recall[1:]) / 2
        return float(((fp_rate[:-1] - fp_rate[1:]) * heights).sum())


class _Confusion(Metric):
    """Counts at Keras's default threshold 0.5: predicted positive when p > 0.5, actually
    positive when the target is not 0."""

    def reset(self):
        self.tp = self.fp = self.fn = 0.0

    def update(self, z, y, activation):
        import numpy as np

        from nnc.training.losses import final

        pred = final(z, activation) > 0.5
        truth = np.asarray(y) != 0
        self.tp += float(np.sum(pred & truth))
        self.fp += float(np.sum(pred & ~truth))
        self.fn += float(np.sum(~pred & truth))


class Precision(_Confusion):
    name = "precision"

    def result(self):
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0


class Recall(_Confusion):
    name = "recall"

    def result(self):
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def make_metrics(names: tuple[str, ...], loss: str, output_shape: tuple[int, ...], activation: str | None,
                 k: int = 5) -> list[Metric]:
    """The metric objects for a train block's `metrics` (in its order); UserError for a metric
    that does not fit the loss and output (the checker reports the same, located, for a spec)."""
    from nnc.lang.errors import UserError
    from nnc.training.losses import accuracy_kind

    out: list[Metric] = []
    for raw in names:
        name = METRIC_ALIASES.get(raw, raw)
        if name not in METRICS:
            raise UserError(f"unknown metric '{raw}'", help=f"metrics: {', '.join(METRICS)}")
        bad = misfit(name, loss, output_shape, activation, k)
        if bad:
            raise UserError(bad[0], help=bad[1])
        units = output_shape[-1] if output_shape else 1
        if name == "accuracy":
            out.append(Accuracy(accuracy_kind(loss, units)))
        elif name in ("mae", "mse"):
            out.append(MeanError(name))
        elif name == "top_k_accuracy":
            out.append(TopKAccuracy(k, sparse=loss == "sparse_categorical_crossentropy"))
        else:
            out.append({"auc": AUC, "precision": Precision, "recall": Recall}[name]())
    return out
