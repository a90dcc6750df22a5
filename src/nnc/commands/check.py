"""nnc check"""

from __future__ import annotations

import sys

from ..diagnostics import Diagnostic, Span

HELP = """Check specs: grammar, option values, shapes through every layer, parameter counts,
warnings for legal but suspicious models, and the spec's `expect` lines.

Exit status: 0 when every spec is clean, 1 when any spec has an error, 2 on a usage or
I/O error (a file that cannot be read)."""
EXAMPLE = "nnc check specs/*.nnspec --format github --max-params 1000000"


def add_arguments(p):
    from ..report import FORMATS

    p.add_argument("files", nargs="+", metavar="FILE", help=".nnspec files to check")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--max-params", type=int, metavar="N", help="error when a model has more than N parameters")
    p.add_argument("--warnings-as-errors", action="store_true", help="treat warnings as errors (exit 1)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the text format (default: only on a terminal)")


def main(args) -> int:
    from ..checker import check_file
    from ..report import format_results

    results = [check_file(f) for f in args.files]
    io_error = False
    for r in results:
        if any(d.code == "io" for d in r.diagnostics):
            io_error = True
        if args.max_params is not None and r.model is not None and r.model.total_params > args.max_params:
            r.diagnostics.append(Diagnostic(
                "param-budget", f"{r.model.name} has {r.model.total_params:,} parameters, over the budget of "
                f"{args.max_params:,} (--max-params)", Span(1, 1, 1, 1), file=r.path))
            r.model = None
        if args.warnings_as_errors:
            r.diagnostics[:] = [Diagnostic(d.code, d.message, d.span, d.help, d.file, "error") for d in r.diagnostics]
            if r.diagnostics:
                r.model = None
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(format_results(results, args.format, color=color))
    if io_error:
        return 2
    return 1 if any(not r.ok for r in results) else 0
