"""The VS Code extension's TextMate grammar (editors/vscode/syntaxes/nnspec.tmLanguage.json).

Always (no npm needed): the committed grammar is what editors/vscode/generate_grammar.py writes
from nnc's tables (so a kind added to nnc.lang.kinds.KINDS fails here until the grammar is
regenerated); every kind and block word is highlighted as one; every spec of the repository
tokenizes with no unknown word; and the assertions of editors/vscode/test/*.nnspec (the
vscode-tmgrammar-test format) hold, checked by a small TextMate tokenizer written here with
Python's re (the patterns are kept in the subset Oniguruma and Python share).

With the extension's node_modules installed (`npm install` in editors/vscode): the same test
files and the repository's specs run through vscode-tmgrammar-test, on vscode-textmate and
Oniguruma, the engine VS Code itself uses. Only that part skips without node_modules.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ci_helpers import REPO, repo_specs

VSCODE = REPO / "editors" / "vscode"
GRAMMAR_PATH = VSCODE / "syntaxes" / "nnspec.tmLanguage.json"
TESTS = sorted((VSCODE / "test").glob("*.nnspec"))
INVALID = ("invalid.illegal.unknown-kind.nnspec", "invalid.illegal.unknown-key.nnspec")
KIND_SCOPE, BLOCK_SCOPE = "entity.name.function.kind.nnspec", "keyword.control.block.nnspec"


def generator():
    spec = importlib.util.spec_from_file_location("nnspec_generate_grammar", VSCODE / "generate_grammar.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_grammar() -> dict:
    return json.loads(GRAMMAR_PATH.read_text())


# --- a small TextMate tokenizer (match, begin/end, captures, include), as vscode-textmate runs one


class Tokenizer:
    def __init__(self, grammar: dict):
        self.g = grammar
        self.repo = grammar["repository"]
        self._re: dict[str, re.Pattern] = {}

    def rx(self, pattern: str) -> re.Pattern:
        if pattern not in self._re:
            self._re[pattern] = re.compile(pattern)
        return self._re[pattern]

    def expand(self, patterns: list[dict]) -> list[dict]:
        out = []
        for p in patterns:
            if "include" in p:
                r = self.repo[p["include"].removeprefix("#")]
                out += self.expand(r["patterns"]) if "match" not in r and "begin" not in r else [r]
            else:
                out.append(p)
        return out

    def tokenize(self, lines: list[str]) -> list[list[list[str]]]:
        """For each line, for each column, its scopes (outermost first, source.nnspec included)."""
        stack: list[tuple[dict | None, list[dict]]] = [(None, self.expand(self.g["patterns"]))]
        out = []
        for line in lines:
            cols: list[list[str]] = [[] for _ in line]
            pos = 0

            def base() -> list[str]:
                return [self.g["scopeName"]] + [r["name"] for r, _ in stack[1:] if r.get("name")]

            def paint(start: int, end: int, names: list[str]) -> None:
                for c in range(start, min(end, len(line))):
                    cols[c] = names[:]

            while pos <= len(line):
                region, patterns = stack[-1]
                best = None
                # the region's end first: at the same column it wins (vscode-textmate's default)
                for kind, p in ([("end", region)] if region else []) + [("rule", q) for q in patterns]:
                    m = self.rx(p["end"] if kind == "end" else p.get("match") or p["begin"]).search(line, pos)
                    if m and (best is None or m.start() < best[2].start()):
                        best = (kind, p, m)
                if best is None:
                    break
                kind, p, m = best
                paint(pos, m.start(), base())
                if kind == "end":
                    outer = base()
                    self._captures(cols, m, outer, p.get("endCaptures", {}))
                    stack.pop()
                elif "begin" in p:
                    stack.append((p, self.expand(p.get("patterns", []))))
                    self._captures(cols, m, base(), p.get("beginCaptures", {}))
                else:
                    names = base() + ([p["name"]] if p.get("name") else [])
                    self._captures(cols, m, names, p.get("captures", {}))
                pos = m.end() if m.end() > pos else pos + 1
            paint(pos, len(line), base())
            out.append(cols)
        return out

    @staticmethod
    def _captures(cols, m, names, captures) -> None:
        for c in range(m.start(), m.end()):
            cols[c] = names[:]
        for group in sorted(captures, key=int):
            if m.start(int(group)) < 0:
                continue
            for c in range(m.start(int(group)), m.end(int(group))):
                cols[c] = cols[c] + [captures[group]["name"]]


# --- the vscode-tmgrammar-test format


ASSERT = re.compile(r"^#\s*(\^|<~*-+)")


def parse_test_file(text: str) -> tuple[list[str], list[tuple[int, int, int, list[str], list[str], int]]]:
    """(source lines, assertions (source line, from, to, required, excluded, file line))."""
    lines = text.split("\n")
    assert re.match(r'^#\s+SYNTAX\s+TEST\s+"source\.nnspec"', lines[0]), lines[0]
    source, assertions = [], []
    for i, s in enumerate(lines[1:], 2):
        if not ASSERT.match(s):
            source.append(s)
            continue
        body = s[1:]
        spans = []
        if body.strip().startswith("^"):
            spans = [(1 + m.start(), 1 + m.end()) for m in re.finditer(r"\^+", body)]
            rest = body[body.rindex("^") + 1:]
        else:
            m = re.match(r"\s*<(~*)(-+)", body)
            spans = [(len(m.group(1)), len(m.group(1)) + len(m.group(2)))]
            rest = body[m.end():]
        if rest.strip().startswith("-"):
            required, excluded = "", rest.strip()[1:]
        else:
            required, _, excluded = rest.partition(" - ")
        for a, b in spans:
            assertions.append((len(source) - 1, a, b, required.split(), excluded.split(), i))
    return source, assertions


def has_in_order(required: list[str], actual: list[str]) -> bool:
    it = iter(actual)
    return all(any(r == a for a in it) for r in required)


# --- always


def test_committed_grammar_is_the_generated_one():
    assert GRAMMAR_PATH.read_text() == generator().render(), \
        "the committed grammar is stale: run .venv/bin/python editors/vscode/generate_grammar.py"


def test_a_kind_added_to_nnc_is_missing_until_the_grammar_is_regenerated(monkeypatch):
    from nnc.lang import kinds

    monkeypatch.setitem(kinds.KINDS, "fancy2d", kinds.KINDS["dense"])
    regenerated = json.loads(generator().render())
    committed, fresh = Tokenizer(load_grammar()), Tokenizer(regenerated)
    assert KIND_SCOPE not in committed.tokenize(["fancy2d 8"])[0][0]
    assert "invalid.illegal.unknown-kind.nnspec" in committed.tokenize(["fancy2d 8"])[0][0]
    assert KIND_SCOPE in fresh.tokenize(["fancy2d 8"])[0][0]
    assert generator().render() != GRAMMAR_PATH.read_text()


def test_every_kind_and_block_word_is_highlighted_as_one():
    from nnc.lang.kinds import KINDS
    from nnc.lang.model import BLOCKS

    g = load_grammar()
    kinds_rx = re.compile(g["repository"]["layer"]["match"])
    tok = Tokenizer(g)
    for kind in KINDS:
        m = kinds_rx.match(f"{kind} 3")
        assert m and m.group(3) == kind, kind
        for line, at in ((f"{kind} 3 activation=relu", 0), (f"  stem_1: {kind}", 10),
                         (f"add {{ branch {{ {kind} }} }}", 15)):
            cols = tok.tokenize([line])[0]
            for c in range(at, at + len(kind)):
                assert cols[c][-1] == KIND_SCOPE, (line, c, cols[c])
        assert not kinds_rx.match(f"{kind}x 3"), kind  # whole words only
    for word in BLOCKS + ("branch",):
        cols = tok.tokenize([f"{word} {{"])[0]
        assert all(cols[c][-1] == BLOCK_SCOPE for c in range(len(word))), word


def test_every_repo_spec_tokenizes_with_no_unknown_word():
    tok = Tokenizer(load_grammar())
    specs = repo_specs()
    assert len(specs) >= 20
    heads = 0
    for spec in specs:
        lines = spec.read_text().splitlines()
        for n, (line, cols) in enumerate(zip(lines, tok.tokenize(lines)), 1):
            bad = [c for c, scopes in enumerate(cols) if any(s in INVALID for s in scopes)]
            assert not bad, f"{spec.name}:{n}:{bad[0] + 1}: {line!r} has an unknown word"
            stripped = line.lstrip()
            if stripped and not stripped.startswith(("#", "}")):
                # a statement's first word always gets a scope of its own: keyword, kind, block or train key
                assert len(cols[len(line) - len(stripped)]) > 1, f"{spec.name}:{n}: {line!r}"
                heads += 1
    assert heads > 300


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_grammar_test_files_hold_in_python(path):
    source, assertions = parse_test_file(path.read_text())
    assert len(assertions) >= 30
    cols = Tokenizer(load_grammar()).tokenize(source)
    failures = []
    for line, a, b, required, excluded, where in assertions:
        for c in range(a, min(b, len(source[line]))):
            actual = cols[line][c]
            if not has_in_order(required, actual) or any(x in actual for x in excluded):
                failures.append(f"{path.name}:{where}: column {c} of {source[line]!r}: {actual}, want {required}"
                                f"{' - ' + ' '.join(excluded) if excluded else ''}")
                break
    assert not failures, "\n".join(failures)


def test_python_checker_of_the_test_format_can_fail():
    """The checker above is not vacuous: a wrong scope, and a wrong column, fail."""
    tok = Tokenizer(load_grammar())
    src, asserts = parse_test_file('# SYNTAX TEST "source.nnspec"\ndense 3\n# <----- ' + KIND_SCOPE
                                   + "\n#     ^ " + KIND_SCOPE + "\n#     ^ - constant.numeric.integer.nnspec\n")
    cols = tok.tokenize(src)
    verdicts = [all(has_in_order(req, cols[ln][c]) and not any(x in cols[ln][c] for x in exc) for c in range(a, b))
                for ln, a, b, req, exc, _ in asserts]
    assert verdicts == [True, False, False]


def test_language_configuration_and_package_agree():
    pkg = json.loads((VSCODE / "package.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    (grammar,) = pkg["contributes"]["grammars"]
    assert lang["id"] == grammar["language"] == "nnspec" and lang["extensions"] == [".nnspec"]
    assert grammar["scopeName"] == load_grammar()["scopeName"] == "source.nnspec"
    assert (VSCODE / grammar["path"]).resolve() == GRAMMAR_PATH
    props = pkg["contributes"]["configuration"]["properties"]
    assert props["nnc.path"]["default"] == "nnc" and props["nnc.inlayHints"]["type"] == "boolean"
    assert (VSCODE / pkg["main"]).is_file()
    conf = json.loads((VSCODE / lang["configuration"]).read_text())
    assert conf["comments"] == {"lineComment": "#"}
    assert ["{", "}"] in conf["brackets"] and ["[", "]"] in conf["brackets"]
    js = (VSCODE / "extension.js").read_text()
    assert "vscode-languageclient/node" in js and '"lsp"' in js and "nnc.path" in js and "nnc.inlayHints" in js


# --- with node_modules: vscode-tmgrammar-test (vscode-textmate + Oniguruma)


def _tmgrammar_test() -> Path:
    tool = VSCODE / "node_modules" / ".bin" / "vscode-tmgrammar-test"
    if not tool.exists() or shutil.which("node") is None:
        pytest.skip("editors/vscode/node_modules is not installed (npm install there); the Python checks above ran")
    return tool


def test_vscode_tmgrammar_test_on_the_test_files_and_every_repo_spec(tmp_path):
    tool = _tmgrammar_test()
    # every line of every spec: no column may be an unknown word (a negative assertion per column)
    for spec in repo_specs():
        out = ['# SYNTAX TEST "source.nnspec" "' + spec.name + ': no unknown word"']
        for line in spec.read_text().splitlines():
            if ASSERT.match(line):  # a comment that reads as an assertion line: keep it out of the source
                continue
            out.append(line)
            if line:
                out.append("# <- - " + " ".join(INVALID))
            if len(line) > 1:
                out.append("#" + "^" * (len(line) - 1) + " - " + " ".join(INVALID))
        (tmp_path / f"{spec.parent.name}_{spec.name}").write_text("\n".join(out) + "\n")
    files = [str(p) for p in TESTS] + [str(p) for p in sorted(tmp_path.glob("*.nnspec"))]
    proc = subprocess.run([str(tool), "-c", "-g", str(GRAMMAR_PATH), *files], cwd=VSCODE, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "ERROR" not in proc.stdout

    # and the tool fails on a wrong assertion (the run above is not vacuous)
    bad = tmp_path / "bad" / "bad.nnspec"
    bad.parent.mkdir()
    bad.write_text('# SYNTAX TEST "source.nnspec"\ndense 3\n# <----- keyword.control.model.nnspec\n')
    proc = subprocess.run([str(tool), "-c", "-g", str(GRAMMAR_PATH), str(bad)], cwd=VSCODE, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "keyword.control.model.nnspec" in proc.stdout


def test_extension_loads_with_its_language_client():
    """extension.js resolves vscode-languageclient/node from node_modules and exports activate and
    deactivate (VS Code's own module stubbed: it exists only inside the editor)."""
    _tmgrammar_test()
    script = r"""
const Module = require('module'); const load = Module._load;
const stub = new Proxy({}, {get: (t, k) => k === '__esModule' ? false : (t[k] ??= class { static from() {} })});
Module._load = function (request, ...rest) { return request === 'vscode' ? stub : load.call(this, request, ...rest); };
const ext = require('./extension.js');
const lc = require('vscode-languageclient/node');
if (typeof lc.LanguageClient !== 'function' || lc.State.Running === undefined) throw new Error('no LanguageClient');
console.log(JSON.stringify(Object.keys(ext).sort()));
"""
    proc = subprocess.run(["node", "-e", script], cwd=VSCODE, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["activate", "deactivate"]
