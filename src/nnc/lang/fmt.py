"""The canonical layout of a spec: what `nnc fmt` writes.

The layout, in the order a spec reads:

    # comments before the model line stay on top
    model NAME

    input NAME: DTYPE[D1, D2] key=value

    conv2d    32 kernel=3 activation=relu   # layers: kind, positional values and options
    maxpool2d 2                             # in aligned columns, comments aligned too

    expect params == 93322

    train {
      loss sparse_categorical_crossentropy
    }

- one blank line between sections (model, input, layers, expects, train);
- blocks (`residual {`, `add {`, `repeat 3 {`, ...): the inside two spaces deeper a level, `}`
  on its own line, `branch { }` for an empty branch, a branch of one layer and no comment
  inside on one line; a block ends a group of aligned layer columns, but the trailing
  comments of a run align across its blocks' lines;
- inside a section the user's blank lines stay, runs of them collapsed to one; a blank line
  also ends a group of aligned rows;
- comments stay where they were: a full-line comment with the statement that follows it, a
  trailing comment on its statement's line;
- every token is written as it was typed (option names, aliases, numbers like `1e-3`); only
  the spaces between tokens, `3X3` (written `3x3`) and the spacing inside `[...]` change.
  Statements keep their order, so the formatted spec checks to the identical model.

Comments are not in the AST, so they are read from the source lines: a `#` outside a
quoted string starts one. A spec with syntax errors is not formatted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nnc.lang.diagnostics import Diagnostic
from nnc.lang.parser import (
    BlockStmt,
    ExpectStmt,
    InputDecl,
    LayerStmt,
    ModelDecl,
    Option,
    TrainBlock,
    TrainItem,
    Value,
    parse,
)

INDENT = "  "
COMMENT_GAP = "  "

_SECTION = {ModelDecl: 0, InputDecl: 1, LayerStmt: 2, BlockStmt: 2, ExpectStmt: 3, TrainBlock: 4}


def split_comment(line: str) -> tuple[str, str | None]:
    """(code, comment): the comment runs from a `#` outside quotes to the end of the line."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i], line[i:].rstrip()
    return line, None


# --- from source lines to items -------------------------------------------------------------


@dataclass
class _Blank:
    pass


@dataclass
class _Comment:
    text: str
    # a comment-only line indented past its statement, right under a trailing comment: it
    # continues that comment, so it stays in the trailing-comment column
    continues: bool = False


@dataclass
class _Stmt:
    node: object  # a parser statement, or a TrainItem inside a train block
    comment: str | None = None
    # a train block only: what is inside, and the comments on its `{` and `}` lines
    inner: list = field(default_factory=list)
    open_comment: str | None = None
    close_comment: str | None = None


def _items(lines: list[str], statements: list) -> list:
    at = {st.span.line: st for st in statements}
    out: list = []
    i = 1
    while i <= len(lines):
        code, comment = split_comment(lines[i - 1])
        st = at.get(i)
        if isinstance(st, TrainBlock):
            out.append(_train_items(lines, st))
            i = st.span.end_line + 1
            continue
        if isinstance(st, BlockStmt):
            out.append(_block_items(lines, st, _comment_owners(lines, st)))
            i = st.span.end_line + 1
            continue
        if st is not None:
            out.append(_Stmt(st, comment))
        elif code.strip():  # pragma: no cover - every non-blank line of a parsed spec belongs to a statement
            raise ValueError(f"line {i} belongs to no statement: {lines[i - 1]!r}")
        elif comment is not None:
            out.append(_Comment(comment, _continues(out, lines[i - 1])))
        else:
            out.append(_Blank())
        i += 1
    return out


def _continues(previous: list, line: str) -> bool:
    """Whether a comment-only line continues the trailing comment above it: it is indented past
    the statement it follows (inside a block, a comment at the statements' own indent does not)."""
    if not previous or not line[:1].isspace():
        return False
    last = previous[-1]
    if isinstance(last, _Stmt) and last.comment is not None:
        return len(line) - len(line.lstrip()) + 1 > last.node.span.col
    return isinstance(last, _Comment) and last.continues


def _train_items(lines: list[str], block: TrainBlock) -> _Stmt:
    stmt = _Stmt(block)
    at = {it.span.line: it for it in block.items}
    first, last = block.span.line, block.span.end_line
    for j in range(first, last + 1):
        code, comment = split_comment(lines[j - 1])
        if j in at:
            stmt.inner.append(_Stmt(at[j], comment))
        elif j == first:
            stmt.open_comment = comment
        elif j == last:
            stmt.close_comment = comment
        elif comment is not None:
            stmt.inner.append(_Comment(comment, _continues(stmt.inner, lines[j - 1])))
        else:
            stmt.inner.append(_Blank())
    return stmt


def _comment_owners(lines: list[str], top: BlockStmt) -> dict[tuple[str, int], str]:
    """Which part of a block each comment on a line with code belongs to: the last thing on its
    line, a statement, a block's '{' or a block's '}' ((what, id(statement)) -> comment)."""
    last: dict[int, tuple[tuple[int, int], tuple[str, int]]] = {}

    def event(line: int, col: int, key: tuple[str, int]) -> None:
        if line not in last or (line, col) > (line, last[line][0][1]):
            last[line] = ((line, col), key)

    stack = [top]
    while stack:
        st = stack.pop()
        if isinstance(st, BlockStmt):
            event(st.open_span.line, st.open_span.col, ("open", id(st)))
            event(st.span.end_line, st.span.end_col, ("close", id(st)))
            stack.extend(st.body)
        else:
            event(st.span.end_line, st.span.end_col, ("stmt", id(st)))
    owners = {}
    for line, (_, key) in last.items():
        comment = split_comment(lines[line - 1])[1] if line <= len(lines) else None
        if comment is not None:
            owners[key] = comment
    return owners


def _block_items(lines: list[str], block: BlockStmt, owners: dict) -> _Stmt:
    """A block and what is inside, in source order: statements, nested blocks, and the comment and
    blank lines between them."""
    stmt = _Stmt(block, open_comment=owners.get(("open", id(block))), close_comment=owners.get(("close", id(block))))
    children = sorted(block.body, key=lambda c: (c.span.line, c.span.col))
    covered = set()
    for c in children:
        covered.update(range(c.span.line, c.span.end_line + 1))
    free = [j for j in range(block.span.line + 1, block.span.end_line) if j not in covered]
    k = 0
    for c in children:
        while k < len(free) and free[k] < c.span.line:
            _free_line(lines, free[k], stmt.inner)
            k += 1
        if isinstance(c, BlockStmt):
            stmt.inner.append(_block_items(lines, c, owners))
        else:
            stmt.inner.append(_Stmt(c, owners.get(("stmt", id(c)))))
    for j in free[k:]:
        _free_line(lines, j, stmt.inner)
    return stmt


def _free_line(lines: list[str], j: int, inner: list) -> None:
    comment = split_comment(lines[j - 1])[1]
    if comment is not None:
        inner.append(_Comment(comment, _continues(inner, lines[j - 1])))
    else:
        inner.append(_Blank())


# --- tokens as written ----------------------------------------------------------------------


def value_text(v: Value) -> str:
    if v.kind == "size":
        return v.text.lower()
    return v.text  # list and tuple texts are already rebuilt as "[1, 2]" by the parser


def arg_text(a) -> str:
    if isinstance(a, Option):
        return f"{a.key}={value_text(a.value)}"
    return value_text(a)


def _simple(node) -> str:
    if isinstance(node, ModelDecl):
        return f"model {node.name}"
    if isinstance(node, InputDecl):
        dims = ", ".join(d.text for d in node.dims)
        return " ".join([f"input {node.name}: {node.dtype}[{dims}]"] + [arg_text(a) for a in node.args])
    if isinstance(node, ExpectStmt):
        return f"expect {node.what} {node.op} {value_text(node.value)}"
    if isinstance(node, TrainItem):
        return " ".join([node.key] + [arg_text(a) for a in node.args])
    raise TypeError(node)  # pragma: no cover


def _layer_cells(st: LayerStmt) -> tuple[str, str, str, str]:
    """(label, kind, positional values, the rest): the rest keeps its order as written."""
    n = 0
    while n < len(st.args) and not isinstance(st.args[n], Option):
        n += 1
    label = f"{st.name}:" if st.name else ""
    return label, st.kind, " ".join(arg_text(a) for a in st.args[:n]), " ".join(arg_text(a) for a in st.args[n:])


def _align_layers(stmts: list[LayerStmt]) -> list[str]:
    rows = [_layer_cells(s) for s in stmts]
    if not rows:
        return []
    # a column is as wide as its longest cell among the rows where something follows it:
    # `flatten` or `dropout 0.25` alone on a row does not push the options to the right
    widths = [max((len(r[c]) for r in rows if any(r[c + 1:])), default=0) for c in range(3)] + [0]
    lines = []
    for r in rows:
        cells = [(r[c], widths[c]) for c in range(4) if r[c] or widths[c]]
        lines.append(" ".join(cell.ljust(w) for cell, w in cells).rstrip())
    return lines


# --- layout ---------------------------------------------------------------------------------


def _normalize_gap(gap: list) -> list:
    """Comments and blank lines between two statements: runs of blanks become one."""
    out: list = []
    for g in gap:
        if isinstance(g, _Blank) and (not out or isinstance(out[-1], _Blank)):
            if out:
                continue
        out.append(g)
    return out


def _run_entries(run: list[_Stmt], indent: str) -> list:
    """The lines of a run before its trailing comments are aligned: (code, comment) pairs, plain
    strings, and comments that continue a trailing one. A block's lines are all in its run."""
    # layers share columns with the layers next to them; a block ends such a group
    groups: list[list[LayerStmt]] = [[]]
    for s in run:
        if isinstance(s, _Stmt) and isinstance(s.node, BlockStmt):
            groups.append([])
        elif isinstance(s, _Stmt) and isinstance(s.node, LayerStmt):
            groups[-1].append(s.node)
    layer_texts = iter([text for group in groups for text in _align_layers(group)])
    code: list[tuple[str, str | None] | str] = []
    for s in run:
        if isinstance(s, _Comment):
            code.append(s if s.continues else indent + s.text)
        elif isinstance(s.node, LayerStmt):
            code.append((indent + next(layer_texts), s.comment))
        elif isinstance(s.node, BlockStmt):
            code.extend(_block_entries(s, indent))
        else:
            code.append((indent + _simple(s.node), s.comment))
    return code


def _emit_run(run: list[_Stmt], indent: str) -> list[str]:
    """A run of statements with no blank line between them (comments may be): layers in it
    share columns, and the trailing comments of the run share a column (a block's too)."""
    code = _run_entries(run, indent)
    width = max((len(c[0]) for c in code if isinstance(c, tuple) and c[1] is not None), default=0)
    out = []
    for c in code:
        if isinstance(c, _Comment):
            out.append(" " * (width + len(COMMENT_GAP)) + c.text if width else indent + c.text)
        elif isinstance(c, str):
            out.append(c)
        elif c[1] is None:
            out.append(c[0])
        else:
            out.append(c[0].ljust(width) + COMMENT_GAP + c[1])
    return out


def _emit_block(items: list, indent: str, top: bool, raw: bool = False) -> list:
    """Lines of a sequence of items (the top level, or a train block's inside); `raw`: the
    entries of a block's inside, their comments aligned by the run that holds the block."""
    out: list[str] = []
    run: list = []  # statements (and comments between them) not separated by a blank line
    prev_section = None
    pending: list = []
    started = False

    def flush():
        nonlocal run
        if run:
            out.extend(_run_entries(run, indent) if raw else _emit_run(run, indent))
        run = []

    for it in items + [None]:
        if it is not None and not isinstance(it, _Stmt):
            pending.append(it)
            continue
        gap = _normalize_gap(pending)
        pending = []
        if it is None:  # comments after the last statement
            while gap and isinstance(gap[-1], _Blank):
                gap.pop()
        section = _SECTION.get(type(it.node)) if it is not None and top else None
        if not started:
            while gap and isinstance(gap[0], _Blank):
                gap.pop(0)
        elif top and it is not None and section != prev_section and not (gap and isinstance(gap[0], _Blank)):
            gap.insert(0, _Blank())
            for g in gap:  # after the blank line a comment no longer continues a trailing one
                if isinstance(g, _Comment):
                    g.continues = False
        for g in gap:
            if isinstance(g, _Blank):
                flush()
                out.append("")
            else:
                run.append(g)
        if it is None:
            break
        started = True
        prev_section = section
        if isinstance(it.node, TrainBlock):
            flush()
            out.extend(_emit_train(it, indent))
        else:
            run.append(it)
    flush()
    return out


def _emit_train(st: _Stmt, indent: str) -> list[str]:
    head = indent + "train {"
    inner = _emit_block(st.inner, indent + INDENT, top=False)
    if not inner and not st.open_comment and not st.close_comment:
        return [indent + "train {}"]
    lines = [head + (COMMENT_GAP + st.open_comment if st.open_comment else "")]
    lines += inner
    lines.append(indent + "}" + (COMMENT_GAP + st.close_comment if st.close_comment else ""))
    return lines


def _block_entries(st: _Stmt, indent: str) -> list:
    """`head {`, the inside indented two more spaces, `}` on its own line. An empty block is
    `head { }`; a branch of one layer and no comments inside is one line: `branch { dense 8 }`."""
    node = st.node
    head = indent + " ".join(c for c in _layer_cells(node) if c)
    body = [it for it in st.inner if not isinstance(it, _Blank)]
    if not body and not st.open_comment:
        return [(head + " { }", st.close_comment)]
    if (node.kind == "branch" and not st.open_comment and len(body) == 1 and isinstance(body[0], _Stmt)
            and isinstance(body[0].node, LayerStmt) and body[0].comment is None):
        return [(head + " { " + " ".join(c for c in _layer_cells(body[0].node) if c) + " }", st.close_comment)]
    return ([(head + " {", st.open_comment)] + _emit_block(st.inner, indent + INDENT, top=False, raw=True)
            + [(indent + "}", st.close_comment)])


def format_source(text: str, file: str = "<string>") -> tuple[str | None, list[Diagnostic]]:
    """The spec in the canonical layout, or (None, syntax errors) when it does not parse."""
    ast = parse(text, file)
    if ast.syntax_errors:
        return None, ast.syntax_errors
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    out = _emit_block(_items(lines, ast.statements), "", top=True)
    return ("\n".join(out) + "\n") if out else "", []
