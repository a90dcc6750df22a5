"""The flags of `nnc train` that override a spec's train block, defined once for the command and
for nnc.fit (which takes the same settings as keyword arguments, checked by the same actions).

Light on purpose: building the CLI's parser imports neither numpy nor the checker.
"""

from __future__ import annotations

import argparse

from nnc.lang.metric_rules import METRICS

OVERRIDE_GROUP = "overrides of the spec's train block"
# nnc.lang.checker.OPTIMIZERS' names (kept here so that building the parser imports no checker; a test
# checks they agree)
OPTIMIZER_NAMES = ("sgd", "rmsprop", "adam", "adamw", "nadam", "adagrad")


def add_overrides(p: argparse.ArgumentParser) -> None:
    """Add the override flags to `p`, as one argument group titled OVERRIDE_GROUP."""
    g = p.add_argument_group(OVERRIDE_GROUP)
    g.add_argument("--epochs", type=int, metavar="N", help="number of epochs (on --resume: the new total)")
    g.add_argument("--batch-size", type=int, metavar="N")
    g.add_argument("--lr", "--learning-rate", type=float, metavar="LR", dest="lr")
    g.add_argument("--momentum", type=float, metavar="M")
    g.add_argument("--weight-decay", type=float, metavar="L", help="decoupled weight decay, as Keras 3's")
    g.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help="with Keras's defaults (clipping carries over)")
    g.add_argument("--clipnorm", type=float, metavar="C", help="clip each weight's gradient to L2 norm C (Keras's "
                   "clipnorm; replaces the spec's clipping)")
    g.add_argument("--clipvalue", type=float, metavar="C", help="clip each gradient element to [-C, C]")
    g.add_argument("--global-clipnorm", type=float, metavar="C", help="clip all gradients together to L2 norm C")
    g.add_argument("--loss", choices=("sparse_categorical_crossentropy", "categorical_crossentropy",
                                      "binary_crossentropy", "mse", "mae", "huber", "kl_divergence"),
                   help="with Keras's defaults for its options (huber's delta=1.0, no label_smoothing)")
    g.add_argument("--huber-delta", type=float, metavar="D", help="huber's delta (Keras's default 1.0)")
    g.add_argument("--label-smoothing", type=float, metavar="F",
                   help="with categorical_crossentropy or binary_crossentropy: F in [0, 1]")
    g.add_argument("--metrics", nargs="+", metavar="M", help=f"replace the spec's metrics (words or a comma-separated list): {', '.join(METRICS)}")
    g.add_argument("--top-k", type=int, metavar="K", help="top_k_accuracy's k (Keras's default 5)")
    g.add_argument("--class-weight", type=float, nargs="+", metavar="W",
                   help="one weight per class id, in order, as Keras's class_weight={0: W0, 1: W1, ...}")
    g.add_argument("--validation-split", type=float, metavar="F", help="the last fraction F of the training data")
    g.add_argument("--seed", type=int, metavar="N", help="initial weights, shuffling and dropout")
    g.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                   help="shuffle every epoch (--no-shuffle)")
    g.add_argument("--patience", type=int, metavar="N", help="early stopping after N epochs without improvement")
    g.add_argument("--monitor", choices=tuple(pre + m for pre in ("val_", "") for m in ("loss",) + METRICS),
                   help="what early stopping watches (default: val_loss with validation data, else loss)")


def override_actions() -> dict[str, argparse.Action]:
    """The override flags' argparse actions by their names in Python (dest): what nnc train's flags
    and nnc.fit's keyword arguments may set, checked the same way."""
    p = argparse.ArgumentParser(add_help=False)
    add_overrides(p)
    group = next(g for g in p._action_groups if g.title == OVERRIDE_GROUP)
    return {a.dest: a for a in group._group_actions}
