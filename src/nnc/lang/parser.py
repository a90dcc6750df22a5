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

from nnc.lang.diagnostics import Diagnostic, Span

MAX_SYNTAX_ERRORS = 50
MAX_NESTING = 50  # blocks inside blocks: far more than any model needs, and the checker's recursion stays shallow


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
class BlockStmt:
    """`[NAME:] KIND [VALUE] [key=value ...] { ... }`: a layer line with a brace body. The
    checker decides which kinds open blocks (residual, add, concat, ..., repeat, branch)."""

    name: str | None
    name_span: Span | None
    kind: str
    kind_span: Span
    args: list[Arg]
    body: list["LayerStmt | BlockStmt"]
    span: Span  # from the name (or kind) to the closing '}'
    open_span: Span | None = None  # the '{'
    depth: int = field(default=1, repr=False)  # blocks nested in it, itself included


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


Statement = Union[ModelDecl, InputDecl, LayerStmt, BlockStmt, ExpectStmt, TrainBlock]


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


@dataclass
class _Body:
    open: Span
    stmts: list
    close: Span
    depth: int


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

    def plain(self, ch):  # `_head` is inlined: ch is [NAME ":"]? KIND args...
        return self.layer(ch)

    def block(self, ch):  # the same, then the _Body
        return self.layer(ch)

    def layer(self, ch):
        body = ch.pop() if ch and isinstance(ch[-1], _Body) else None
        end = body.close if body is not None else _span_of(ch[-1])
        if len(ch) > 1 and isinstance(ch[1], Token):  # NAME ":" KIND ...
            name, kind, args, first = ch[0], ch[1], ch[2:], ch[0]
        else:
            name, kind, args, first = None, ch[0], ch[1:], ch[0]
        name_span = _tok_span(name) if name is not None else None
        if body is not None:
            return BlockStmt(None if name is None else str(name), name_span, str(kind), _tok_span(kind), args,
                             body.stmts, _between(first, end), body.open, body.depth)
        return LayerStmt(None if name is None else str(name), name_span, str(kind), _tok_span(kind), args,
                         _between(first, end))

    def body(self, ch):
        stmts = [c for c in ch[1:-1] if isinstance(c, (LayerStmt, BlockStmt))]
        depth = 1 + max((c.depth for c in stmts if isinstance(c, BlockStmt)), default=0)
        if depth > MAX_NESTING:
            raise _BadToken(ch[0], f"blocks nest more than {MAX_NESTING} deep here")
        return _Body(_tok_span(ch[0]), stmts, _tok_span(ch[-1]), depth)

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


GRAMMAR_OPTIONS = dict(parser="lalr", maybe_placeholders=False)
TABLES_FILE = "nnspec.tables.json"
_INT_KEYS, _TUPLE = "\u0000i", "\u0000t"  # JSON has neither int keys nor tuples: tagged, restored on load


def _to_json(o):
    if isinstance(o, dict):
        if all(isinstance(k, str) for k in o):
            return {k: _to_json(v) for k, v in o.items()}
        return {_INT_KEYS: [[k, _to_json(v)] for k, v in o.items()]}
    if isinstance(o, tuple):
        return {_TUPLE: [_to_json(v) for v in o]}
    if isinstance(o, list):
        return [_to_json(v) for v in o]
    return o


def _from_json(d: dict):
    if len(d) == 1:
        if _INT_KEYS in d:
            return {k: v for k, v in d[_INT_KEYS]}
        if _TUPLE in d:
            return tuple(d[_TUPLE])
    return d


def grammar_tables(text: str) -> str:
    """The LALR tables of grammar `text` as JSON (lark's memo_serialize, what its standalone
    generator embeds), with the grammar's SHA-256 and the lark version that made them. They ship
    beside the grammar (nnc/grammar/nnspec.tables.json); `write_tables()` regenerates them."""
    import hashlib
    import json

    from lark import __version__ as lark_version
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    data, memo = Lark(text, **GRAMMAR_OPTIONS).memo_serialize([TerminalDef, Rule])
    return json.dumps({"grammar_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                       "lark_version": lark_version, "data": _to_json(data), "memo": _to_json(memo)},
                      separators=(",", ":"), sort_keys=True) + "\n"


def _grammar_path(name: str) -> str:
    import nnc.grammar

    return os.path.join(os.path.dirname(nnc.grammar.__file__ or ""), name)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The LALR parser. Analysing the grammar costs ~25 ms a process, a third of what `nnc check`
    of a small spec costs, so its tables ship with the package as data (JSON, read in ~3 ms).
    They are used only when they were made from this grammar by this lark; otherwise the grammar
    is analysed here, which is only slower. Nothing is read from a user-writable cache: lark's
    own cache is a pickle, and a pickle planted there would run code on `nnc check`."""
    import hashlib
    import json

    from lark import __version__ as lark_version

    text = _grammar_text()
    try:
        with open(_grammar_path(TABLES_FILE), encoding="utf-8") as f:
            tables = json.loads(f.read(), object_hook=_from_json)
        if (tables["grammar_sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
                and tables["lark_version"] == lark_version):
            return Lark._load_from_dict(tables["data"], tables["memo"], transformer=_ToAST())
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no tables (a zipped install), or not these: analyse the grammar
    return Lark(text, transformer=_ToAST(), **GRAMMAR_OPTIONS)


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


def _text_before(text: str, tok: Token) -> str:
    """What the token's line holds before it, without trailing blanks."""
    lines = text.split("\n")
    return lines[tok.line - 1][: tok.column - 1].rstrip() if 1 <= tok.line <= len(lines) else ""


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
        return "'}' without an open block", _stray_close_help(text, tok.line)
    if tok.type == "LBRACE":
        return _stray_open(text, tok, prev)
    if tok.type == "EQUAL":
        return "'=' must follow an option name, as in kernel=3", "options are written key=value, with no spaces around '='"
    if tok.type == "COMMA":
        return "unexpected ','; values and options are separated by spaces", "write: conv2d 32 kernel=3 activation=relu"
    if tok.type == "COLON":
        return "unexpected ':'; only a layer's name is followed by ':'", "a layer is written: [NAME:] KIND [VALUE] [key=value ...]"
    if prev is not None and prev.type == "COLON" and expected == {"NAME"}:
        return f"expected a layer kind after '{_key_before(text, prev) or ''}:', got {got}", \
            "a layer is written: [NAME:] KIND [VALUE] [key=value ...], as in hidden: dense 64"
    if tok.type == "NAME" and _text_before(text, tok).endswith("}"):
        return f"one statement a line: after a block's '}}' at the top of the spec, '{tok}' must start a line of " \
            "its own", "inside a block, branches and blocks may follow each other on a line " \
            "(add { branch { } branch { dense 8 } }); the model's own steps are one a line"
    at_start = prev is None or prev.type in ("_NL", "LBRACE")
    if at_start and expected == {"NAME"}:
        return f"expected a statement (model, input, a layer, expect or train), got {got}", \
            "a layer is written: [NAME:] KIND [VALUE] [key=value ...], as in dense 64 activation=relu"
    if at_start and expected - {"_NL"} == {"NAME", "RBRACE"}:
        inside = _open_kind(text, tok.line, tok.column)
        if inside != "train":
            return f"expected a layer, a block or '}}' inside {_block_name(inside)}, got {got}", \
                "one statement a line, as in: conv2d 32 kernel=3 padding=same"
        return f"expected a train setting (loss, optimizer, epochs, ...) or '}}', got {got}", \
            "one setting a line, as in: epochs 10"
    return f"expected {_describe_expected(expected)}, got {got}", None


BLOCK_WORDS = ("residual", "repeat", "branch", "add", "concat", "multiply", "average", "maximum", "minimum",
               "subtract")  # the words that open blocks (nnc.lang.model.BLOCKS and branch), for messages


def _code_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0] for line in text.split("\n")]


def _stray_close_help(text: str, line: int) -> str:
    """Help for a '}' that closes nothing: name the block head above it that lacks its '{'."""
    lines = _code_lines(text)
    for i in range(min(line, len(lines)) - 1, 0, -1):
        code = lines[i - 1].strip()
        m = _HEAD.match(code)
        if m and m.group(1) in BLOCK_WORDS + ("train",) and "{" not in code:
            return f"'{code}' at line {i} opens no block: write {code} {{ on that line"
    return "a block opens with '{' at the end of its first line: residual {, add {, repeat 3 {, train {"


def _stray_open(text: str, tok: Token, prev: Token | None) -> tuple[str, str | None]:
    if prev is None or prev.type == "_NL":
        lines = _code_lines(text)
        above = next((lines[i - 1].strip() for i in range(tok.line - 1, 0, -1) if lines[i - 1].strip()), "")
        help = f"write: {above} {{" if _HEAD.match(above) else "write the block's head and '{' on one line: residual {"
        return "'{' must be on the same line as its block's head", help
    return "'{' opens a block only after its head, as in residual {, add {, repeat 3 { or train {", None


def _open_kind(text: str, line: int, col: int) -> str:
    """The kind of the innermost block open at (line, col), 1-based; 'this' when unknown."""
    lines = text.split("\n")
    head = "\n".join(lines[: line - 1] + [lines[line - 1][: col - 1] if line <= len(lines) else ""])
    stack = _unclosed(head)
    return stack[-1][1] if stack else "this"


def _open_parens(code: str) -> int:
    return code.count("(") + code.count("[") - code.count(")") - code.count("]")


_CALL_REST = re.compile(r"\s*([A-Za-z_]\w*\s*=(?!=)|[)\]])")


def _keras_call_diagnostic(err: UnexpectedInput, text: str, file: str) -> Diagnostic | None:
    """A line written as a Keras call (`Conv2D(32, (3, 3), activation='relu')`, `model.add(Flatten())`):
    one diagnostic for the whole line, with the nnc line to write instead. A call spread over
    several lines is translated whole at its first line; a later line of it (`activation='relu'))`)
    is said to be the rest of a call, not taken for a broken nnc statement."""
    tok = getattr(err, "token", None)
    line = _last_statement_line(text) if tok is not None and tok.type == "$END" else getattr(err, "line", None)
    lines = text.split("\n")
    if not isinstance(line, int) or not 1 <= line <= len(lines):
        return None
    code = [l.split("#", 1)[0] for l in lines]
    first, end = call_columns(lines[line - 1])
    span = Span(line, first, line, end)
    here = code[line - 1].strip()
    if _CALL_REST.match(here) and (here.endswith(",") or _open_parens(here) < 0):
        return Diagnostic("keras-call", "this line looks like the rest of a Python (Keras) call begun above it",
                          span, file=file, help="an nnc statement is one line: write the layer as the error at the "
                          "call's first line says, and remove this line")
    if "(" not in here:
        return None
    from nnc.lang.keras_names import translate  # only for a line with a '(': kinds stay unloaded otherwise

    stop = line
    while _open_parens(" ".join(code[line - 1: stop])) > 0 and stop < min(len(code), line + 10):
        stop += 1
    call = translate(" ".join(code[line - 1: stop]))
    if call is None:
        return None
    return Diagnostic("keras-only" if call.not_in_nnc else "keras-call", call.message(), span, help=call.help(),
                      file=file)


def _open_parens(code: str) -> int:
    return code.count("(") + code.count("[") - code.count(")") - code.count("]")


def call_columns(line: str) -> tuple[int, int]:
    """1-based (first, end exclusive) columns of the code of a line, its comment and the spaces
    around it left out."""
    code = line.split("#", 1)[0].rstrip()
    start = len(code) - len(code.lstrip())
    return start + 1, max(len(code), start + 1) + 1


def _syntax_diagnostic(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    keras = _keras_call_diagnostic(err, text, file)
    if keras is not None:
        return keras
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
                return _unclosed_diagnostic(text, span, file)
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


def _braces(line: str) -> list[tuple[int, str]]:
    """(0-based column, '{' or '}') of each brace in a line's code: quoted strings and the comment
    are left out."""
    if "{" not in line and "}" not in line:
        return []
    out = []
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "{}":
            out.append((i, ch))
    return out


_HEAD = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*\s*:\s*)?([A-Za-z_][A-Za-z0-9_]*)")


def _head_word(line: str, col: int) -> str:
    """The kind of the block whose '{' is at 0-based `col`: the first word of its head
    (`stage1: repeat 2 {` -> repeat; `add { branch {` -> branch)."""
    before = line[:col]
    cut = max(before.rfind("{"), before.rfind("}")) + 1
    m = _HEAD.match(before[cut:].strip())
    return m.group(1) if m else "this"


def _unclosed(text: str) -> list[tuple[Span, str]]:
    """The '{' of every block of `text` left open at its end, outermost first, with its kind."""
    stack: list[tuple[Span, str]] = []
    for i, line in enumerate(text.split("\n"), 1):
        for col, ch in _braces(line):
            if ch == "{":
                stack.append((Span.point(i, col + 1), _head_word(line, col)))
            elif stack:
                stack.pop()
    return stack


def _block_name(word: str) -> str:
    return "this block" if word == "this" else f"the {word} block"


def _unclosed_diagnostic(text: str, at_end: Span, file: str) -> Diagnostic:
    """An unclosed block at the end of the file, reported at its '{' as rustc does."""
    stack = _unclosed(text)
    if not stack:
        return Diagnostic("syntax", "a block is not closed: expected '}' before the end of the file", at_end,
                          help="close each block with '}'", file=file)
    span, word = stack[-1]  # the innermost: the last lines belong to it
    what = "setting" if word == "train" else "statement"
    help = f"close it with '}}' on a line of its own after its last {what}"
    if len(stack) > 1:
        outer = ", ".join(f"{_block_name(w)} at line {s.line}" for s, w in reversed(stack[:-1]))
        help += f"; {outer} {'is' if len(stack) == 2 else 'are'} not closed either"
    return Diagnostic("syntax", f"{_block_name(word)} is never closed: expected '}}' before the end of the file",
                      span, help=help, file=file)


def _last_statement_line(text: str) -> int:
    lines = text.split("\n")
    for i in range(len(lines), 0, -1):
        body = lines[i - 1].split("#", 1)[0].strip()
        if body and body != "}":
            return i
    return 0


def _enclosing(code: "_Lines", start: int, line: int) -> list[int]:
    """The lines (outermost first) that open the blocks still open where `line` begins; blocks
    open before `start` cannot be: the parser only resumes at a line outside every block."""
    found = []
    unmatched = 0  # closers met reading backwards, not yet matched by an opener
    for i in range(line - 1, start - 1, -1):
        for _, ch in reversed(_braces(code[i])):
            if ch == "}":
                unmatched += 1
            elif unmatched:
                unmatched -= 1
            else:
                found.append(i)
    return found[::-1]


class _Lines:
    """The source lines (1-based) as the parser currently sees them: some blanked or edited."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.edits: dict[int, str] = {}

    def __getitem__(self, i: int) -> str:
        return self.edits.get(i, self.lines[i - 1])

    def __len__(self) -> int:
        return len(self.lines)

    def put(self, i: int, cols: list[int], keep: set[int] = frozenset()) -> None:
        """Blank the characters at 0-based `cols` of line i (every one but `keep` when cols is empty)."""
        text = self[i]
        if cols:
            chars = list(text)
            for c in cols:
                chars[c] = " "
        else:
            chars = [ch if j in keep else " " for j, ch in enumerate(text)]
        self.edits[i] = "".join(chars)

    def forget(self, before: int) -> None:
        self.edits = {i: t for i, t in self.edits.items() if i >= before}

    def window(self, start: int, stop: int | None = None) -> str:
        """The text of lines [start, stop) at their own line numbers: earlier lines are left empty
        (one newline each, a single token to the lexer)."""
        stop = len(self.lines) + 1 if stop is None else stop
        return "\n" * (start - 1) + "\n".join(self[i] for i in range(start, stop))


def _drop_line(code: _Lines, line: int, depth: int) -> None:
    """Blank a line with a syntax error so that the braces around it still match: the '}' that
    close blocks opened above stay, and the '}' that would close blocks the line opens go."""
    braces = _braces(code[line])
    opens = sum(1 for _, ch in braces if ch == "{")
    closes = len(braces) - opens
    keep = [c for c, ch in braces if ch == "}"][: max(0, min(closes - opens, depth))]
    code.put(line, [], keep=set(keep))
    extra = opens - closes
    level = lowest = extra
    i = line + 1
    while lowest > 0 and i <= len(code):
        cols = []
        for col, ch in _braces(code[i]):
            level += 1 if ch == "{" else -1
            if level < lowest:
                lowest = level
                cols.append(col)
                if not lowest:
                    break
        if cols:
            code.put(i, cols)
        i += 1


_KEYWORDS = ("model", "input", "expect", "train")


def _prescan(parser, code: _Lines, first: int, line: int, ast: SpecAST, dropped: set[int], file: str) -> None:
    """After an error at `line` inside the block opened at `first`, find the other bad lines of the
    block in one pass, so the block is re-read once rather than once an error (a block of 10,000
    lines with 50 mistakes). Each later line without braces is parsed alone, inside a block of the
    kind it is in, which gives the same error as in place; a bad one is reported and blanked. Lines
    with braces, keywords or train settings are left to the main loop."""
    stack = [word for _, word in _unclosed(code.window(first, line))]
    for j in range(line + 1, len(code) + 1):
        if not stack or len(ast.syntax_errors) >= MAX_SYNTAX_ERRORS:
            return
        text = code[j]
        braces = _braces(text)
        if braces:
            for col, ch in braces:
                if ch == "{":
                    stack.append(_head_word(text, col))
                elif stack:
                    stack.pop()
            continue
        words = text.split("#", 1)[0].split()
        if not words or words[0] in _KEYWORDS or stack[-1] == "train":
            continue
        wrapped = f"{stack[-1]} {{\n{text}\n}}"
        try:
            parser.parse(wrapped)
            continue
        except _BadToken as err:
            diag = Diagnostic("syntax", err.message, _tok_span(err.token), file=file)
        except UnexpectedInput as err:
            diag = _syntax_diagnostic(err, wrapped, file)
        if diag.span.line != 2 or diag.span.end_line != 2:
            continue  # not this line's own mistake: the main loop will see it in place
        ast.syntax_errors.append(Diagnostic(diag.code, diag.message, Span(j, diag.span.col, j, diag.span.end_col),
                                            help=diag.help, file=file))
        code.put(j, [])
        dropped.add(j)


def parse(text: str, file: str = "<string>") -> SpecAST:
    """Parse a whole spec; syntax errors are collected, never raised.

    Error recovery in linear time: lark stops at the first error, so the parser goes on after
    the offending line. Statements are one a line, so the lines before the error (already
    known to parse) are parsed once into statements, the bad line is dropped, and parsing
    resumes on the next line with the earlier lines left empty, so positions are unchanged.
    Inside a block (a train block, `residual { ... }`, ...) the bad line is blanked and the
    outermost block parsed again, so its other lines still count; a '}' on the bad line that
    closes a block stays, and the '}' of a block the bad line opens goes with it, so braces
    still match. An unclosed block at the end is closed after the error is reported. LALR
    lexes lazily, so each round reads only up to its error; every round reports an error, and
    after MAX_SYNTAX_ERRORS the parser stops.
    """
    ast = SpecAST()
    parser = _lark()
    code = _Lines(text.split("\n"))
    start = 1  # statements before this line are in ast.statements
    closers = 0  # "}" added for blocks left open at the end of the file
    dropped: set[int] = set()  # lines blanked for an error: a second error there blanks them whole
    while True:
        current = code.window(start) + "\n}" * closers
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
                if "RBRACE" in err.expected and not closers:
                    closers = max(1, len(_unclosed(current)))  # close them and go on checking
                    continue
                line = _last_statement_line(current)
            else:
                line = ast.syntax_errors[-1].span.line
            if line < start or line > len(code) or not code[line].strip():
                return ast  # nothing more can be recovered
            opened = _enclosing(code, start, line)
            _drop_line(code, line, 0 if line in dropped else len(opened))
            dropped.add(line)
            first = opened[0] if opened else None
            if opened:
                _prescan(parser, code, opened[0], line, ast, dropped, file)
            if first is None and any(ch == "{" for _, ch in _braces(code.lines[line - 1])):
                first = line  # the line opened a block: its inside is read as plain lines
            if first is not None and first <= start:
                continue  # re-read the block from its first line, the bad line blanked
            stop = line if first is None else first
            if stop > start:
                try:
                    ast.statements += parser.parse(code.window(start, stop=stop))
                except (UnexpectedInput, _BadToken):
                    continue  # the lines were not whole statements after all: retry with the line blanked
            start = stop if first is not None else line + 1
            code.forget(start)




def write_tables() -> str:
    """Regenerate grammar/nnspec.tables.json after an edit of grammar/nnspec.lark (a test fails
    until then): python -c 'from nnc.lang.parser import write_tables; write_tables()'."""
    path = _grammar_path(TABLES_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(grammar_tables(_grammar_text()))
    return path
