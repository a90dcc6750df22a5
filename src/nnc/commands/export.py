"""nnc export"""

from __future__ import annotations

import sys

HELP = """Write a spec as a model file of another framework. `nnc export keras` writes a Keras 3
.keras archive (without Keras) that keras.saving.load_model opens with Keras's own layer
classes: a Sequential model for a chain of layers, a Functional one for blocks (and for
attention, whose MultiHeadAttention reads its input twice). The Keras layers keep the spec's
layer names, so a checkpoint's LAYER.kernel is the Keras layer LAYER's kernel; --keras-names
names them as Keras would in a fresh session (conv2d, conv2d_1, ...) and reads --weights
keyed by those names. Without --weights the weights are nnc's initial ones (--seed).

`nnc export torch` writes a standalone PyTorch module file (OUT.py: it needs torch only, not
nnc nor numpy; a class named after the spec, channels-last input as the spec's, Keras's
semantics) and its weights as a state_dict beside it (OUT.pt, or --state-dict), which the
file's load() reads. Writing the state_dict needs torch (pip install 'nnc[torch]')."""
EXAMPLE = "nnc export keras specs/mnist_convnet.nnspec --weights mnist.npz -o mnist.keras"


def add_arguments(p):
    p.add_argument("format", choices=("keras", "torch"),
                   help="the format to write (keras: a Keras 3 .keras archive; torch: a standalone PyTorch "
                        "module file and its state_dict)")
    p.add_argument("file", metavar="SPEC", help="the .nnspec file")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="where to write (default: SPEC with .keras, or with .py for torch)")
    p.add_argument("--state-dict", metavar="W.pt",
                   help="torch: where to write the weights (default: OUT with .pt, beside the module)")
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
    to_torch = args.format == "torch"
    if args.state_dict and not to_torch:
        raise UserError("--state-dict is for `nnc export torch`; a .keras archive holds its weights")
    out = args.output or (os.path.splitext(args.file)[0] + (".py" if to_torch else ".keras"))
    output_target(out, inputs=(args.file, args.weights))
    if to_torch:
        if "-" in (out, args.state_dict):
            raise UserError("nnc export torch writes two files (the module and its state_dict), not standard output",
                            help="give -o FILE.py")
        state = args.state_dict or (os.path.splitext(out)[0] + ".pt")
        if os.path.realpath(state) == os.path.realpath(out):
            raise UserError(f"the module and its state_dict would both be {out}", help="give --state-dict another name")
        output_target(state, inputs=(args.file, args.weights))
    if args.weights and args.keras_names:
        weights = load_keras_named(args.weights, model)
    elif args.weights:
        weights = load_checkpoint(args.weights, model)
    else:
        if args.seed < 0:
            raise UserError(f"--seed must be 0 or more, received {args.seed}")
        weights = init_weights(model, args.seed)
    if to_torch:
        from nnc.tools.torch_export import write

        origin = f"from {args.weights}" if args.weights else f"nnc's initial weights, seed {args.seed}"
        write(model, weights, out, state, spec_file=args.file, origin=origin,
              inputs=(args.file, args.weights or ""))
        print(f"wrote {out} and {state}: {model.name}, {model.total_params:,} parameters, PyTorch ({origin})",
              file=sys.stderr)
        return 0
    export_keras(model, weights, out, inputs=(args.file, args.weights or ""), keras_names=args.keras_names)
    print(f"wrote {out}: {model.name}, {model.total_params:,} parameters, Keras 3 format", file=sys.stderr)
    return 0
