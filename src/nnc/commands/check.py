"""nnc check"""

from __future__ import annotations

import os
import re
import sys

from nnc.lang.diagnostics import Diagnostic, Span

HELP = """Check specs: grammar, option values, shapes through every layer, parameter counts,
warnings for legal but suspicious models, and the spec's `expect` lines. A directory
stands for every .nnspec file under it. Many files are checked in one run, with a closing
count.

Formats: text (default; coloured only on a terminal, and never when NO_COLOR is set),
json (a list of diagnostics), github (workflow commands: annotations on a pull request),
sarif (SARIF 2.1.0, for code-scanning dashboards).

Exit status: 0 when every spec is clean, 1 when any spec has an error, 2 on a usage or
I/O error (a file that cannot be read)."""
EXAMPLE = "nnc check specs/*.nnspec --format github --max-params 1000000"

SPEC_SUFFIX = ".nnspec"


def add_arguments(p):
    from nnc.tools.report import FORMATS

    p.add_argument("files", nargs="+", metavar="FILE", help=".nnspec files, or directories to search for them")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--max-params", type=int, metavar="N", help="error when a model has more than N parameters")
    p.add_argument("--warnings-as-errors", action="store_true", help="treat warnings as errors (exit 1)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the text format (default: only on a terminal)")


def expand_files(paths: list[str]) -> list[str]:
    """Files as given; a directory becomes its .nnspec files (recursively, sorted). A path
    that does not exist stays, so the command reports it as an I/O error."""
    from nnc.lang.errors import UserError

    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip .git, .venv, ...
                found += [os.path.normpath(os.path.join(root, f)) for f in sorted(files) if f.endswith(SPEC_SUFFIX)]
            if not found:
                raise UserError(f"no {SPEC_SUFFIX} files in directory {p}", exit_code=2)
            out.extend(found)
        else:
            out.append(p)
    return out


def _model_span(source: str) -> Span:
    """The span of the `model NAME` statement, where a whole-model diagnostic belongs."""
    for i, line in enumerate(source.splitlines(), 1):
        m = re.match(r"\s*model\s+\w+", line)
        if m:
            start = len(line) - len(line.lstrip())
            return Span(i, start + 1, i, m.end() + 1)
    return Span(1, 1, 1, 2)


def use_color(choice: str, stream=None) -> bool:
    stream = stream or sys.stdout
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


def main(args) -> int:
    from nnc.lang.checker import check_file
    from nnc.lang.errors import UserError
    from nnc.tools.report import format_results

    if args.max_params is not None and args.max_params < 0:
        raise UserError(f"--max-params expects a non-negative integer, received: {args.max_params}", exit_code=2)
    results = [check_file(f) for f in expand_files(args.files)]
    io_error = False
    for r in results:
        if any(d.code == "io" for d in r.diagnostics):
            io_error = True
        if args.max_params is not None and r.model is not None and r.model.total_params > args.max_params:
            r.diagnostics.append(Diagnostic(
                "param-budget", f"{r.model.name} has {r.model.total_params:,} parameters, over the budget of "
                f"{args.max_params:,} (--max-params)", _model_span(r.source),
                help="shrink the largest layers, or raise the budget", file=r.path))
            r.diagnostics.sort(key=Diagnostic.sort_key)
            r.model = None
        if args.warnings_as_errors:
            r.diagnostics[:] = [Diagnostic(d.code, d.message, d.span, d.help, d.file, "error") for d in r.diagnostics]
            if r.diagnostics:
                r.model = None
    print(format_results(results, args.format, color=use_color(args.color)))
    if io_error:
        return 2
    return 1 if any(not r.ok for r in results) else 0
