"""Text to syntax tree. lark stays inside this module: its tokens are turned into nnc's own
AST nodes with `Span`s while parsing (a transformer of the LALR parser), and its exceptions
into diagnostics.

Error recovery: lark stops at the first syntax error, but a user wants every error of a file
in one run. Statements are one a line, so after an error the offending line is dropped and
parsing resumes on the next line, with every position unchanged (see `parse`). The AST holds
every statement that was well formed, and the checker then reports the semantic errors of
those too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from lark import Lark, Token, Transformer
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


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _between(first: Token | Span, last: Token | Span) -> Span:
    a = first if isinstance(first, Span) else _tok_span(first)
    b = last if isinstance(last, Span) else _tok_span(last)
    return Span(a.line, a.col, b.end_line, b.end_col)


def _span_of(node) -> Span:
    return _tok_span(node) if isinstance(node, Token) else node.span


MAX_DIGITS = 1000  # Python refuses to convert an int of over 4,300 digits; no size needs 1,000


class _BadToken(Exception):
    """A token the grammar accepts but nnc cannot read (a number of 5,000 digits)."""

    def __init__(self, token: Token, message: str):
        super().__init__(message)
        self.token = token
        self.message = message


def _digits(tok: Token) -> str:
    if len(tok) > MAX_DIGITS:
        raise _BadToken(tok, f"a number of {len(tok):,} digits is too long to read")
    return tok.replace("_", "")


def _int(tok: Token) -> int:
    return int(_digits(tok))


class _ToAST(Transformer):
    """lark callbacks, run while parsing (LALR `transformer=`): no parse tree is built, and
    every span is taken from the tokens, so lark's position propagation is not needed."""

    def int(self, ch):
        t = ch[0]
        return Value("int", _int(t), _tok_span(t), str(t))

    def float(self, ch):
        t = ch[0]
        return Value("float", float(_digits(t)), _tok_span(t), str(t))

    def size(self, ch):
        t = ch[0]
        return Value("size", tuple(int(p) for p in _digits(t).lower().split("x")), _tok_span(t), str(t))

    def word(self, ch):
        t = ch[0]
        return Value("word", str(t), _tok_span(t), str(t))

    def string(self, ch):
        t = ch[0]
        return Value("string", t[1:-1], _tok_span(t), str(t))

    def list(self, ch):
        items = tuple(_int(t) for t in ch if t.type == "INT")
        return Value("list", items, _between(ch[0], ch[-1]), "[" + ", ".join(map(str, items)) + "]")

    def tuple(self, ch):
        items = tuple(_int(t) for t in ch if t.type == "INT")
        return Value("tuple", items, _between(ch[0], ch[-1]), "(" + ", ".join(map(str, items)) + ")")

    def option(self, ch):
        key, val = ch
        return Option(str(key), _tok_span(key), val, _between(key, val.span))

    def dims(self, ch):
        return ch  # [LSQB, INT..., RSQB]

    def model_decl(self, ch):
        return ModelDecl(str(ch[1]), _between(ch[0], ch[1]))

    def input_decl(self, ch):
        kw, name, dtype, dims = ch[:4]
        args = ch[4:]
        dim_vals = [Value("int", _int(t), _tok_span(t), str(t)) for t in dims[1:-1]]
        end = args[-1].span if args else dims[-1]
        return InputDecl(str(name), str(dtype), _tok_span(dtype), dim_vals, _between(dims[1], dims[-2]), args,
                         _between(kw, end))

    def layer(self, ch):
        end = _span_of(ch[-1])
        if len(ch) > 1 and isinstance(ch[1], Token):  # NAME ":" KIND ...
            name, kind = ch[0], ch[1]
            return LayerStmt(str(name), _tok_span(name), str(kind), _tok_span(kind), ch[2:], _between(name, end))
        kind = ch[0]
        return LayerStmt(None, None, str(kind), _tok_span(kind), ch[1:], _between(kind, end))

    def expect(self, ch):
        kw, what, op, val = ch
        return ExpectStmt(str(what), _tok_span(what), str(op), _tok_span(op), val, _between(kw, val.span))

    def train_item(self, ch):
        key = ch[0]
        return TrainItem(str(key), _tok_span(key), ch[1:], _between(key, _span_of(ch[-1])))

    def train_block(self, ch):
        return TrainBlock([c for c in ch if isinstance(c, TrainItem)], _between(ch[0], ch[-1]))

    def start(self, ch):
        return ch


def _grammar_text() -> str:
    import nnc.grammar

    # A plain file next to the package when installed normally (importlib.resources would
    # import pathlib, ~10 ms of every `nnc check`); resources for zipped installs.
    path = os.path.join(os.path.dirname(nnc.grammar.__file__ or ""), "nnspec.lark")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    from importlib import resources

    return resources.files("nnc.grammar").joinpath("nnspec.lark").read_text(encoding="utf-8")


def _cache_path(text: str) -> str | None:
    """Where the analysed grammar is cached: the user's cache dir, one file per grammar, lark and
    Python version (so a file is never stale). None when caching is off (NNC_NO_CACHE=1)."""
    if os.environ.get("NNC_NO_CACHE"):
        return None
    import hashlib
    import sys

    from lark import __version__ as lark_version

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{text}\0{lark_version}\0{sys.version_info[:2]}".encode()).hexdigest()[:16]
    return os.path.join(base, "nnc", f"nnspec-{key}.lark-cache")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The LALR parser. Building it from the grammar costs ~25 ms a process, a third of what
    `nnc check` of a small spec costs; lark's own cache (a pickle of the parse tables, checked
    against a hash of the grammar) brings that to ~3 ms. The cache is written to a temporary
    name and renamed, so no process reads it half-written; where it cannot be written, the
    grammar is built each run, which is only slower."""
    text = _grammar_text()
    options = dict(parser="lalr", maybe_placeholders=False, transformer=_ToAST())
    path = _cache_path(text)
    if path is None:
        return Lark(text, **options)
    if os.path.exists(path):
        return Lark(text, cache=path, **options)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        parser = Lark(text, cache=tmp, **options)
        os.replace(tmp, path)
        return parser
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return Lark(text, **options)


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
        if "RSQB" in expected:
            return f"expected ',' or ']' to close the shape, got {got}", _EXPECT_HELP
        return f"expected the end of the line after the expectation, got {got}", _EXPECT_HELP
    if stmt == "train" and tok.type != "$END":
        if expected == {"LBRACE"}:
            return f"expected '{{' after 'train', got {got}", "the train block is written: train { ... } with one setting a line"
    if "RSQB" in expected or "RPAR" in expected:
        line = text.split("\n")[tok.line - 1] if 1 <= tok.line <= text.count("\n") + 1 else ""
        before = line[: tok.column - 1]
        close = "')'" if before.rfind("(") > before.rfind("[") else "']'"  # the bracket left open
        return f"expected ',' or {close} to close the list, got {got}", "write sizes as 3x5 or (3, 5)"
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


def _last_statement_line(text: str) -> int:
    lines = text.split("\n")
    for i in range(len(lines), 0, -1):
        body = lines[i - 1].split("#", 1)[0].strip()
        if body and body != "}":
            return i
    return 0


_TRAIN_OPEN = re.compile(r"\s*train\b[^#]*\{")


def _block_start(lines: list[str], start: int, line: int) -> int | None:
    """The first line of the train block (opened at or after `start`) that holds `line`, or None."""
    for i in range(line - 1, start - 1, -1):
        code = lines[i - 1].split("#", 1)[0]
        if _TRAIN_OPEN.match(code):
            return None if "}" in code.split("{", 1)[1] else i
        if "}" in code:
            return None
    return None


def _window(lines: list[str], start: int, blanked: set[int], stop: int | None = None) -> str:
    """The text of lines [start, stop) at their own line numbers: earlier lines are left empty
    (one newline each, a single token to the lexer) and `blanked` lines become spaces."""
    stop = len(lines) + 1 if stop is None else stop
    body = [" " * len(lines[i - 1]) if i in blanked else lines[i - 1] for i in range(start, stop)]
    return "\n" * (start - 1) + "\n".join(body)


def parse(text: str, file: str = "<string>") -> SpecAST:
    """Parse a whole spec; syntax errors are collected, never raised.

    Error recovery in linear time: lark stops at the first error, so the parser goes on after
    the offending line. Statements are one a line, so the lines before the error (already
    known to parse) are parsed once into statements, the bad line is dropped, and parsing
    resumes on the next line with the earlier lines left empty, so positions are unchanged.
    Inside a train block the bad line is blanked and the block parsed again, so its other
    settings still count. LALR lexes lazily, so each round reads only up to its error; every
    round reports an error, and after MAX_SYNTAX_ERRORS the parser stops.
    """
    ast = SpecAST()
    parser = _lark()
    lines = text.split("\n")
    start = 1  # statements before this line are in ast.statements
    blanked: set[int] = set()  # lines dropped in the window that starts at `start`
    closed = False  # a "}" was added for a train block left open at the end of the file
    while True:
        current = _window(lines, start, blanked) + ("\n}" if closed else "")
        try:
            ast.statements += parser.parse(current)
            return ast
        except (UnexpectedInput, _BadToken) as err:
            if isinstance(err, _BadToken):
                ast.syntax_errors.append(Diagnostic("syntax", err.message, _tok_span(err.token), file=file))
            else:
                ast.syntax_errors.append(_syntax_diagnostic(err, current, file))
            if len(ast.syntax_errors) >= MAX_SYNTAX_ERRORS:
                return ast
            if isinstance(err, UnexpectedToken) and err.token.type == "$END":
                if "RBRACE" in err.expected and not closed:
                    closed = True  # an unclosed train block: close it and go on checking
                    continue
                line = _last_statement_line(current)
            else:
                line = ast.syntax_errors[-1].span.line
            if line < start or line in blanked or line > len(lines):
                return ast  # nothing more can be recovered
            block = _block_start(lines, start, line)
            first = line if block is None else block
            if first > start:
                try:
                    ast.statements += parser.parse(_window(lines, start, blanked, stop=first))
                except (UnexpectedInput, _BadToken):
                    blanked.add(line)  # the lines were not whole statements after all: drop and retry
                    continue
                start = first
                blanked = {b for b in blanked if b >= first}
            if block is None:
                start = line + 1
                blanked = {b for b in blanked if b > line}
            else:
                blanked.add(line)
