"""nnc import (the module is import_: `import` is a Python keyword)"""

from __future__ import annotations

import sys

HELP = """Turn a Keras model file or an ONNX graph into a spec. A Keras 3 .keras archive or a
legacy Keras .h5 file is read without Keras (its config as JSON, never run; its weights with h5py). Sequential and
functional models whose layers nnc has become a spec whose layers keep the Keras names (so
each weight array maps to one), with Keras's settings written as nnc options (defaults left
out), merges (Add, Concatenate, ...) as blocks, and `expect params` / `expect output` lines;
the spec is checked and its parameter count compared with the file's weights before anything
is written. --weights-out writes the weights as an nnc checkpoint (LAYER.kernel, ...).

An .onnx file that nnc compiled gives back the spec in its metadata (its hash checked) and the
weights in its initializers, exactly. Another ONNX graph (torch.onnx.export, ...) has its
operators matched into layers, channels-first tensors made channels-last (kernels transposed, a
dense after a flatten reordered), so the spec computes the graph's outputs for transposed inputs.

A model with layers (or operators) nnc lacks: each is reported (name, class or operator,
setting, config or attributes) on stderr, the spec is written with those places marked by
`# unsupported:` comments, and the exit code is 1."""
EXAMPLE = "nnc import model.onnx -o model.nnspec --weights-out model.npz && nnc check model.nnspec"


def add_arguments(p):
    p.add_argument("file", metavar="MODEL", help="a .keras, .h5 or .onnx file")
    p.add_argument("-o", "--output", metavar="SPEC.nnspec", help="where to write the spec (default: MODEL with .nnspec)")
    p.add_argument("--weights-out", metavar="W.npz", help="write the model's weights as an nnc checkpoint")
    p.add_argument("--keras-names", action="store_true",
                   help="name the checkpoint's arrays as Keras names the layers in a fresh session "
                        "(conv2d.kernel, conv2d_1.kernel, ...) instead of by the spec's layer names")


def main(args) -> int:
    import os

    from nnc.lang.errors import UserError
    from nnc.lang.weights import atomic_open, output_target, save_checkpoint
    from nnc.tools.keras_io import import_keras, keras_auto_names, rename_weights

    onnx_file = args.file.lower().endswith(".onnx")
    out = args.output or (os.path.splitext(args.file)[0] + ".nnspec")
    output_target(out, inputs=(args.file,))
    if args.weights_out:
        output_target(args.weights_out, inputs=(args.file, out))
        if os.path.realpath(args.weights_out) == os.path.realpath(out):
            raise UserError("--weights-out and -o name the same file")
    if onnx_file:
        from nnc.tools.onnx_import import import_onnx

        imp = import_onnx(args.file)
        for note in imp.notes:
            print(f"nnc import: warning: {note}", file=sys.stderr)
        if imp.weights is not None and args.keras_names:
            imp.weights = rename_weights(imp.weights, keras_auto_names(imp.model))
    else:
        imp = import_keras(args.file, keras_names=args.keras_names)
    with atomic_open(out, "w", inputs=(args.file,)) as f:
        f.write(imp.text)
    if imp.problems:
        n = len(imp.problems)
        what = "operator" if onnx_file else "layer"
        print(f"nnc import: error: {args.file} has {n} {what}{'s' if n != 1 else ''} nnc does not have; "
              f"{out} marks {'them' if n != 1 else 'it'} with `# unsupported:` comments:", file=sys.stderr)
        for name, cls, reason, cfg in imp.problems:
            print(f"  {name} ({cls}): {reason}\n    {'attributes' if onnx_file else 'config'}: {cfg}", file=sys.stderr)
        source = "exported model" if onnx_file else "Keras model"
        print(f"help: replace each marked {what} by nnc kinds (`nnc check` lists them), or remove it from the "
              f"{source} and import again", file=sys.stderr)
        return 1
    model = imp.model
    n = len(model.layers)
    what = f"wrote {out}: {model.name}, {n} layer{'s' if n != 1 else ''}, {model.total_params:,} parameters"
    if args.weights_out:
        save_checkpoint(args.weights_out, imp.weights)
        what += f"; weights in {args.weights_out}"
    print(what, file=sys.stderr)
    return 0
