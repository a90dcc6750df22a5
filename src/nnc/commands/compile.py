"""nnc compile"""

from __future__ import annotations

import atexit
import gc
import os
import sys

HELP = """Compile a spec to an ONNX model: the graph input is named after the spec's input and
takes it channels-last with a symbolic batch axis; the outputs are what Keras computes with
the same weights.

Weights come from a checkpoint (--weights, an .npz of LAYER.kernel, LAYER.bias, ... in Keras
layouts), or else are initialized as Keras initializes them, from --seed, so the model runs
as it is. The output defaults to FILE with its suffix replaced by .onnx. Models whose weights
pass 2 GiB keep them beside the model in OUT.onnx.data (ONNX external data). Files are
written atomically; the same spec and weights always give the same bytes."""
EXAMPLE = "nnc compile specs/mnist_convnet.nnspec -o mnist.onnx --weights mnist.npz --opset 17"


def add_arguments(p):
    from nnc.onnx.proto import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET  # not onnx_export: no numpy before main

    p.add_argument("file", metavar="FILE", help="the .nnspec file")
    p.add_argument("-o", "--output", metavar="OUT.onnx", help="where to write the model (default: FILE with .onnx)")
    p.add_argument("--weights", metavar="CKPT.npz", help="weights to compile in (default: Keras's initialization)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: {DEFAULT_OPSET})")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the initial weights when there is no --weights (default: 0)")
    p.add_argument("--keras-names", action="store_true",
                   help="--weights names its arrays after Keras's automatic layer names (conv2d.kernel, "
                        "conv2d_1.kernel, ...), as a Keras model built from the spec names them")


def default_output(path: str) -> str:
    root, ext = os.path.splitext(path)
    return (root if ext == ".nnspec" else path) + ".onnx"


def main(args) -> int:
    # The collector finds nothing to free here: the imports (numpy's above all) and the
    # lowering allocate objects that live until the process ends, and collecting while they
    # grow costs ~5-10 ms of a ~150 ms command. At exit, Python's last collection walks all of
    # them once more (~15 ms): freezing them first (atexit runs before it) skips that walk.
    atexit.unregister(gc.freeze)  # once, however many times main runs in one process
    atexit.register(gc.freeze)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(args)
    finally:
        if enabled:
            gc.enable()


def _main(args) -> int:
    from nnc.commands import checked_model
    from nnc.lang.checker import check_file
    from nnc.lang.errors import UserError
    from nnc.onnx.export import SUPPORTED_OPSETS, compile_model

    if args.opset not in SUPPORTED_OPSETS:
        raise UserError(f"--opset {args.opset} is not supported: nnc writes opsets {SUPPORTED_OPSETS.start} "
                        f"to {SUPPORTED_OPSETS.stop - 1}", exit_code=2)
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, received {args.seed}", exit_code=2)
    r = check_file(args.file)
    model = checked_model(r)
    if args.weights and getattr(args, "keras_names", False):
        from nnc.tools.keras_io import load_keras_named

        weights = load_keras_named(args.weights, model)
        origin = f"weights from {args.weights} (Keras names)"
    elif args.weights:
        from nnc.lang.weights import load_checkpoint

        weights = load_checkpoint(args.weights, model)
        origin = f"weights from {args.weights}"
    else:
        from nnc.lang.weights import init_weights

        weights = init_weights(model, args.seed)
        origin = f"initial weights, seed {args.seed}"
    out = args.output or default_output(args.file)
    if os.path.isdir(out):
        raise UserError(f"cannot write {out}: it is a folder; give a file name like {os.path.join(out, model.name)}.onnx")
    from nnc.lang.weights import output_target

    output_target(out, inputs=(args.file, args.weights))  # never over the spec or the weights it reads
    try:
        files = compile_model(model, weights, out, opset=args.opset)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {' and '.join(files)}: {model.name}, {model.total_params:,} parameters, opset {args.opset}, {origin}",
          file=sys.stderr)
    return 0
