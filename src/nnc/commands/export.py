"""nnc export"""

from __future__ import annotations

import sys

HELP = """Write a spec as a model file of another framework. `nnc export keras` writes a Keras 3
.keras archive (without Keras) that keras.saving.load_model opens with Keras's own layer
classes: a Sequential model for a chain of layers, a Functional one for blocks (and for
attention, whose MultiHeadAttention reads its input twice). The Keras layers keep the spec's
layer names, so a checkpoint's LAYER.kernel is the Keras layer LAYER's kernel; --keras-names
names them as Keras would in a fresh session (conv2d, conv2d_1, ...) and reads --weights
keyed by those names. Without --weights the weights are nnc's initial ones (--seed)."""
EXAMPLE = "nnc export keras specs/mnist_convnet.nnspec --weights mnist.npz -o mnist.keras"


def add_arguments(p):
    p.add_argument("format", choices=("keras",), help="the format to write (keras: a Keras 3 .keras archive)")
    p.add_argument("file", metavar="SPEC", help="the .nnspec file")
    p.add_argument("-o", "--output", metavar="MODEL.keras", help="where to write (default: SPEC with .keras)")
    p.add_argument("--weights", metavar="W.npz", help="weights to write (default: Keras's initialization, --seed)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the initial weights (default: 0)")
    p.add_argument("--keras-names", action="store_true",
                   help="Keras's automatic layer names (conv2d, conv2d_1, ...) for the model and for --weights")


def main(args) -> int:
    import os

    from nnc.commands import checked_model
    from nnc.lang.checker import check_file
    from nnc.lang.errors import UserError
    from nnc.lang.weights import init_weights, load_checkpoint, output_target
    from nnc.tools.keras_io import export_keras, load_keras_named

    model = checked_model(check_file(args.file))
    out = args.output or (os.path.splitext(args.file)[0] + ".keras")
    output_target(out, inputs=(args.file, args.weights))
    if args.weights and args.keras_names:
        weights = load_keras_named(args.weights, model)
    elif args.weights:
        weights = load_checkpoint(args.weights, model)
    else:
        if args.seed < 0:
            raise UserError(f"--seed must be 0 or more, received {args.seed}")
        weights = init_weights(model, args.seed)
    export_keras(model, weights, out, inputs=(args.file, args.weights or ""), keras_names=args.keras_names)
    print(f"wrote {out}: {model.name}, {model.total_params:,} parameters, Keras 3 format", file=sys.stderr)
    return 0
