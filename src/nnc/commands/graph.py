"""nnc graph"""

from __future__ import annotations

import os
import sys

HELP = """Draw a spec as a diagram: the input on top, then a box a layer with its name and
kind, key options, output shape and parameter count. The output's extension picks the
format: .svg and .png are drawn with matplotlib (no Graphviz needed), .dot is Graphviz
text. Without -o the diagram goes to SPEC_NAME.svg in the current directory.

Exit status: 0 when the diagram is written, 1 when the spec has errors, 2 on a usage or
I/O error."""
EXAMPLE = "nnc graph specs/mnist_convnet.nnspec -o mnist_convnet.png"


def add_arguments(p):
    p.add_argument("file", metavar="FILE", help="the .nnspec file")
    p.add_argument("-o", "--output", metavar="OUT", help="OUT.svg, OUT.png or OUT.dot (default: FILE's name, .svg)")


def main(args) -> int:
    from nnc.commands import checked_model
    from nnc.lang.checker import check_file
    from nnc.lang.errors import UserError
    from nnc.tools.graph import FORMATS

    out = args.output or os.path.splitext(os.path.basename(args.file))[0] + ".svg"
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    ext = "dot" if ext == "gv" else ext
    if ext not in FORMATS:
        raise UserError(f"cannot tell the format of {out}: expected a name ending in .svg, .png or .dot, "
                        f"received '.{ext}'" if ext else f"cannot tell the format of {out}: it has no extension",
                        exit_code=2, help="for example: -o model.png")
    r = check_file(args.file)
    model = checked_model(r)
    from nnc.lang.weights import atomic_open
    from nnc.tools.graph import render as draw

    data = draw(model, ext)
    try:
        with atomic_open(out, "wb", inputs=(args.file,)) as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}", exit_code=2) from None
    n = len(model.layers)
    print(f"wrote {out} ({model.name}: {n} layer{'s' if n != 1 else ''}, {model.total_params:,} parameters)",
          file=sys.stderr)
    return 0
