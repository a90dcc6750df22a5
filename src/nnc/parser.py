"""Text to syntax tree. lark stays inside this module: its trees and tokens are turned into
nnc's own AST nodes with `Span`s at the boundary, and its exceptions into diagnostics.

Error recovery: lark stops at the first syntax error, but a user wants every error of a file
in one run. Statements are one a line, so after an error the offending line is blanked
(spaces, so every other position is unchanged) and the file is parsed again; each round
finds the next error. The AST of the final round holds every statement that was well formed,
and the checker then reports the semantic errors of those too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Union

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .diagnostics import Diagnostic, Span

MAX_SYNTAX_ERRORS = 50


# --- AST -----------------------------------------------------------------------------------


@dataclass
class Value:
    kind: str  # int, float, size, word, string, list, tuple
    value: Any
    span: Span
    text: str


@dataclass
class Option:
    key: str
    key_span: Span
    value: Value
    span: Span


Arg = Union[Value, Option]


@dataclass
class ModelDecl:
    name: str
    span: Span


@dataclass
class InputDecl:
    name: str
    dtype: str
    dtype_span: Span
    dims: list[Value]
    dims_span: Span
    args: list[Arg]
    span: Span


@dataclass
class LayerStmt:
    name: str | None
    name_span: Span | None
    kind: str
    kind_span: Span
    args: list[Arg]
    span: Span


@dataclass
class ExpectStmt:
    what: str
    what_span: Span
    op: str
    op_span: Span
    value: Value
    span: Span


@dataclass
class TrainItem:
    key: str
    key_span: Span
    args: list[Arg]
    span: Span


@dataclass
class TrainBlock:
    items: list[TrainItem]
    span: Span


Statement = Union[ModelDecl, InputDecl, LayerStmt, ExpectStmt, TrainBlock]


@dataclass
class SpecAST:
    statements: list[Statement] = field(default_factory=list)
    syntax_errors: list[Diagnostic] = field(default_factory=list)


# --- lark boundary -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _lark() -> Lark:
    text = resources.files("nnc.grammar").joinpath("nnspec.lark").read_text(encoding="utf-8")
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _tree_span(tree: Tree) -> Span:
    m = tree.meta
    return Span(m.line, m.column, m.end_line, m.end_column)


def _value(node: Tree | Token) -> Value:
    if isinstance(node, Token):  # pragma: no cover - values are always wrapped by aliases
        raise TypeError(node)
    kind = node.data
    span = _tree_span(node) if not node.meta.empty else Span.point(1, 1)
    toks = [c for c in node.children if isinstance(c, Token)]
    if kind in ("list", "tuple"):
        items = tuple(int(t.replace("_", "")) for t in toks if t.type == "INT")
        text = ("[" if kind == "list" else "(") + ", ".join(map(str, items)) + ("]" if kind == "list" else ")")
        return Value(kind, items, span, text)
    tok = toks[0]
    span = _tok_span(tok)
    raw = str(tok)
    if kind == "int":
        return Value("int", int(raw.replace("_", "")), span, raw)
    if kind == "float":
        return Value("float", float(raw.replace("_", "")), span, raw)
    if kind == "size":
        return Value("size", tuple(int(p) for p in raw.lower().split("x")), span, raw)
    if kind == "string":
        return Value("string", raw[1:-1], span, raw)
    return Value("word", raw, span, raw)


def _args(children: list) -> list[Arg]:
    out: list[Arg] = []
    for arg in children:
        if not (isinstance(arg, Tree) and arg.data == "arg"):
            continue
        inner = arg.children[0]
        if isinstance(inner, Tree) and inner.data == "option":
            key, val = inner.children
            out.append(Option(str(key), _tok_span(key), _value(val), _tree_span(inner)))
        else:
            out.append(_value(inner))
    return out


def _statement(tree: Tree) -> Statement:
    kind = tree.data
    span = _tree_span(tree)
    ch = tree.children
    if kind == "model_decl":
        return ModelDecl(str(ch[0]), span)
    if kind == "input_decl":
        name, dtype, dims = ch[0], ch[1], ch[2]
        dim_vals = [Value("int", int(t.replace("_", "")), _tok_span(t), str(t)) for t in dims.children]
        return InputDecl(str(name), str(dtype), _tok_span(dtype), dim_vals, _tree_span(dims), _args(ch[3:]), span)
    if kind == "layer":
        toks = [c for c in ch if isinstance(c, Token)]
        if len(toks) == 2:
            name, kind_tok = toks
            return LayerStmt(str(name), _tok_span(name), str(kind_tok), _tok_span(kind_tok), _args(ch), span)
        return LayerStmt(None, None, str(toks[0]), _tok_span(toks[0]), _args(ch), span)
    if kind == "expect":
        what, op, val = ch
        return ExpectStmt(str(what), _tok_span(what), str(op), _tok_span(op), _value(val), span)
    if kind == "train_block":
        items = []
        for item in ch:
            if isinstance(item, Tree) and item.data == "train_item":
                key = item.children[0]
                items.append(TrainItem(str(key), _tok_span(key), _args(item.children[1:]), _tree_span(item)))
        return TrainBlock(items, span)
    raise ValueError(f"unexpected tree {kind}")  # pragma: no cover


# --- errors --------------------------------------------------------------------------------

_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "SIZE": "a size like 3x3",
    "STRING": "a quoted string",
    "COMPARE": "a comparison (==, <=, >=, <, >)",
    "_NL": "end of line",
    "$END": "end of file",
    "EQUAL": "'='",
    "COLON": "':'",
    "COMMA": "','",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "MODEL": "'model'",
    "INPUT": "'input'",
    "EXPECT": "'expect'",
    "TRAIN": "'train'",
}


_VALUE_TERMINALS = {"INT", "FLOAT", "SIZE", "NAME", "STRING", "LSQB", "LPAR"}
_VALUE_HELP = "values are numbers (3, 0.5, 1e-3), sizes (3x5), true/false or words like relu"
_INPUT_HELP = "an input is written: input NAME: DTYPE[D1, D2, ...], as in input image: float32[28, 28, 1]"
_EXPECT_HELP = "write: expect params == N, expect params <= N or expect output == [D1, ...]"


def _describe_expected(names: set[str]) -> str:
    """Expected terminals in words; a set of value terminals is "a value"."""
    names = set(names)
    words = []
    if len(names & _VALUE_TERMINALS) >= 4:  # a value slot: name the group, not every token
        names -= _VALUE_TERMINALS
        words.append("a value")
    if words and "_NL" in names:
        names.discard("RBRACE")  # layer and train-item lines share LALR states; '}' only fits the latter
    words += sorted({_TERMINAL_WORDS.get(n, n) for n in names})
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def _line_words(text: str, line: int) -> list[str]:
    lines = text.split("\n")
    body = lines[line - 1].split("#", 1)[0] if 1 <= line <= len(lines) else ""
    return body.replace(":", " : ").replace("=", " = ").replace("[", " [ ").split()


def _key_before(text: str, tok: Token) -> str | None:
    """The name written right before the token `tok` (an option's `=`, a layer name's `:`)."""
    lines = text.split("\n")
    if not (1 <= tok.line <= len(lines)):
        return None
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", lines[tok.line - 1][: tok.column - 1])
    return m.group(1) if m else None


def _unexpected_token(err: UnexpectedToken, text: str) -> tuple[str, str | None]:
    """(message, help) for a token the grammar does not allow here, in the words of the statement
    being written: what was expected where, not lark's terminal names."""
    tok, expected = err.token, set(err.expected)
    prev = err.token_history[-1] if err.token_history else None
    got = _describe_token(tok)
    words = _line_words(text, tok.line) if tok.type not in ("_NL", "$END") else _line_words(text, prev.line if prev else 1)
    stmt = words[0] if words else ""
    if prev is not None and prev.type == "EQUAL":
        key = _key_before(text, prev)
        where = f"after '{key}='" if key else "after '='"
        return f"expected a value {where}, got {got}", _VALUE_HELP
    if stmt == "model":
        if "NAME" in expected:
            return f"expected the model's name after 'model', got {got}", "write: model NAME, as in model mnist_convnet"
        return f"expected the end of the line after the model's name, got {got}", "a model name is one word: letters, digits and _"
    if stmt == "input":
        if expected == {"NAME"} and prev is not None and prev.type == "INPUT":
            what = "the input's name after 'input'"
        elif expected == {"COLON"}:
            what = "':' after the input's name"
        elif expected == {"NAME"}:
            what = "a dtype (float32 or int64) after ':'"
        elif expected == {"LSQB"}:
            what = "'[' and the dimensions after the dtype"
        elif "RSQB" in expected:
            what = "',' or ']' after a dimension" if "COMMA" in expected else "a dimension or ']'"
        elif "INT" in expected and prev is not None and prev.type in ("LSQB", "COMMA"):
            what = "a dimension (a positive integer)"
        else:
            what = _describe_expected(expected)
        return f"expected {what} in the input declaration, got {got}", _INPUT_HELP
    if stmt == "expect":
        if expected == {"NAME"}:
            return f"expected what to check after 'expect' (params or output), got {got}", _EXPECT_HELP
        if "COMPARE" in expected:
            return f"expected a comparison (==, !=, <=, >=, <, >) after 'expect {prev}', got {got}", _EXPECT_HELP
        if prev is not None and prev.type == "COMPARE":
            return f"expected a number or a shape like [10] after '{prev}', got {got}", _EXPECT_HELP
        return f"expected the end of the line after the expectation, got {got}", _EXPECT_HELP
    if stmt == "train" and tok.type != "$END":
        if expected == {"LBRACE"}:
            return f"expected '{{' after 'train', got {got}", "the train block is written: train { ... } with one setting a line"
    if tok.type == "RBRACE":
        return "'}' without an open train block", "a train block starts with: train {"
    if tok.type == "LBRACE":
        return "'{' opens a block only after 'train'", None
    if tok.type == "EQUAL":
        return "'=' must follow an option name, as in kernel=3", "options are written key=value, with no spaces around '='"
    if tok.type == "COMMA":
        return "unexpected ','; values and options are separated by spaces", "write: conv2d 32 kernel=3 activation=relu"
    if tok.type == "COLON":
        return "unexpected ':'; only a layer's name is followed by ':'", "a layer is written: [NAME:] KIND [VALUE] [key=value ...]"
    if prev is not None and prev.type == "COLON" and expected == {"NAME"}:
        return f"expected a layer kind after '{_key_before(text, prev) or ''}:', got {got}", \
            "a layer is written: [NAME:] KIND [VALUE] [key=value ...], as in hidden: dense 64"
    at_start = prev is None or prev.type in ("_NL", "LBRACE")
    if at_start and expected == {"NAME"}:
        return f"expected a statement (model, input, a layer, expect or train), got {got}", \
            "a layer is written: [NAME:] KIND [VALUE] [key=value ...], as in dense 64 activation=relu"
    if at_start and expected == {"NAME", "RBRACE"}:
        return f"expected a train setting (loss, optimizer, epochs, ...) or '}}', got {got}", \
            "one setting a line, as in: epochs 10"
    return f"expected {_describe_expected(expected)}, got {got}", None


def _syntax_diagnostic(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        help = "names are letters, digits and _; numbers look like 3, 0.5, 1e-3; sizes like 3x3"
        if ch in "-+." :
            help = "a number's sign and point go with its digits: -1, 0.5, 1e-3"
        elif ch == '"' or ch == "'":
            help = "a quoted string closes on the same line"
        return Diagnostic("syntax", f"unexpected character {ch!r}", Span.point(err.line, err.column), help=help, file=file)
    if isinstance(err, UnexpectedToken):
        tok = err.token
        expected = set(err.expected)
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            span = Span.point(len(lines), max(len(lines[-1]), 0) + 1)
            if "RBRACE" in expected:
                opened = _open_brace(text)
                if opened:  # point at the '{' that is never closed, as rustc does
                    return Diagnostic("syntax", "the train block is never closed: expected '}' before the end of the file",
                                      opened, help="close it with '}' on a line of its own after its last setting",
                                      file=file)
                return Diagnostic("syntax", "the train block is not closed: expected '}'", span, file=file)
            msg, help = _unexpected_token(err, text)
            return Diagnostic("syntax", msg.replace(", got end of file", " before the end of the file"), span,
                              help=help, file=file)
        span = _tok_span(tok)
        if tok.type == "_NL":
            span = Span.point(tok.line, tok.column)
        msg, help = _unexpected_token(err, text)
        return Diagnostic("syntax", msg, span, help=help, file=file)
    if isinstance(err, UnexpectedEOF):  # pragma: no cover - LALR reports $END as a token
        lines = text.splitlines() or [""]
        return Diagnostic("syntax", "unexpected end of file", Span.point(len(lines), len(lines[-1]) + 1), file=file)
    return Diagnostic("syntax", str(err).splitlines()[0], Span.point(getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1), file=file)  # pragma: no cover


def _open_brace(text: str) -> Span | None:
    """The span of the last `{` that opens a train block in `text`."""
    found = None
    for i, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*train\s*(\{)", line)
        if m:
            found = Span.point(i, m.start(1) + 1)
    return found


def _blank_line(text: str, line: int) -> str:
    lines = text.split("\n")
    if 1 <= line <= len(lines):
        lines[line - 1] = " " * len(lines[line - 1].rstrip("\r"))
    return "\n".join(lines)


def _last_statement_line(text: str) -> int:
    lines = text.split("\n")
    for i in range(len(lines), 0, -1):
        body = lines[i - 1].split("#", 1)[0].strip()
        if body and body != "}":
            return i
    return 0


def parse(text: str, file: str = "<string>") -> SpecAST:
    """Parse a whole spec; syntax errors are collected, never raised."""
    ast = SpecAST()
    parser = _lark()
    current = text
    blanked: set[int] = set()
    closed = False
    while True:
        try:
            tree = parser.parse(current)
            break
        except UnexpectedInput as err:
            diag = _syntax_diagnostic(err, current, file)
            ast.syntax_errors.append(diag)
            if len(ast.syntax_errors) >= MAX_SYNTAX_ERRORS:
                return ast
            if isinstance(err, UnexpectedToken) and err.token.type == "$END":
                if "RBRACE" in err.expected and not closed:
                    closed = True  # an unclosed train block: close it and go on checking
                    current += "\n}"
                    continue
                line = _last_statement_line(current)
            else:
                line = diag.span.line
            if line in blanked or line < 1:
                return ast  # nothing more can be recovered
            blanked.add(line)
            current = _blank_line(current, line)
    ast.statements = [_statement(t) for t in tree.children if isinstance(t, Tree)]
    return ast
