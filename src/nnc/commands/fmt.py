"""nnc fmt"""

from __future__ import annotations

import sys

HELP = """Rewrite specs in the canonical layout: one blank line between sections, layers in
aligned columns (kind, positional values, options), two-space indent in the train block,
comments kept where they were. Formatting is idempotent and never changes what a spec
means. A directory stands for every .nnspec file under it; `-` reads standard input and
writes the result to standard output. A spec with syntax errors is left as it is.

--check changes nothing: it prints a diff for each file that is not formatted.

Exit status: 0 when every file is (or now is) formatted; 1 when --check finds a file to
reformat, or a file has syntax errors; 2 on a usage or I/O error."""
EXAMPLE = "nnc fmt --check specs/"


def add_arguments(p):
    p.add_argument("files", nargs="+", metavar="FILE", help=".nnspec files, directories, or - for standard input")
    p.add_argument("--check", action="store_true",
                   help="write nothing; print a diff and exit 1 when a file is not formatted")


def _write(path: str, text: str) -> None:
    from nnc.lang.weights import atomic_open

    # atomic_open keeps the file's permissions, and its symlinks and hard links
    with atomic_open(path, "wb") as f:
        f.write(text.encode("utf-8"))


def main(args) -> int:
    import difflib

    from nnc.commands.check import expand_files
    from nnc.lang.diagnostics import render
    from nnc.lang.errors import UserError
    from nnc.lang.fmt import format_source

    paths = [p for p in args.files if p == "-"] + expand_files([p for p in args.files if p != "-"])
    status = 0
    changed = unchanged = failed = 0
    for path in paths:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8-sig", newline="") as f:  # a BOM, as nnc check accepts it
                    text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            print(f"nnc fmt: error: cannot read {path}: {reason}", file=sys.stderr)
            status = 2
            continue
        name = "<stdin>" if path == "-" else path
        new, errors = format_source(text, name)
        if new is None:
            for d in errors:
                print(render(d, text), file=sys.stderr)
            print(f"nnc fmt: {name} has syntax errors; not formatted", file=sys.stderr)
            failed += 1
            status = max(status, 1)
            continue
        if path == "-":
            if args.check:
                if new != text:
                    sys.stdout.writelines(_diff(text, new, name, difflib))
                    changed += 1
                    status = max(status, 1)
            else:
                sys.stdout.write(new)
            continue
        if new == text:
            unchanged += 1
            continue
        changed += 1
        if args.check:
            sys.stdout.writelines(_diff(text, new, path, difflib))
            status = max(status, 1)
        else:
            try:
                _write(path, new)
            except UserError as e:  # atomic_open's: a read-only folder, a file that vanished, ...
                print(f"nnc fmt: error: {e.message}", file=sys.stderr)
                status = 2
                continue
            print(f"reformatted {path}", file=sys.stderr)
    if paths != ["-"]:
        verb = "would be reformatted" if args.check else "reformatted"
        parts = [f"{changed} file{'s' if changed != 1 else ''} {verb}", f"{unchanged} already formatted"]
        if failed:
            parts.append(f"{failed} with syntax errors")
        print(", ".join(parts), file=sys.stderr)
    return status


def _diff(old: str, new: str, path: str, difflib) -> list[str]:
    lines = list(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                      f"{path} (as it is)", f"{path} (formatted)"))
    return [ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines]
