"""The CI-facing files and the command line's self-description: the pre-commit hooks and the
sample GitHub workflow run real nnc commands that work; every command has --help with an
example; the generated bash completion completes commands, options, values and files."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess

import pytest

from ci_helpers import REPO, run_nnc

FORMATTED = "model tiny\n\ninput x: float32[4]\n\ndense 2 activation=softmax\n"


def hooks() -> list[dict]:
    """The hook list of .pre-commit-hooks.yaml (flat `key: value` items, as pre-commit reads them)."""
    out: list[dict] = []
    for line in (REPO / ".pre-commit-hooks.yaml").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(- |  )(\w+): (.*)$", line)
        assert m, f"unexpected line in .pre-commit-hooks.yaml: {line!r}"
        if m[1] == "- ":
            out.append({})
        value = m[3].strip()
        out[-1][m[2]] = value[1:-1] if value.startswith('"') else value
    return out


def test_pre_commit_hooks_run_nnc_on_specs(capsys, tmp_path):
    hs = {h["id"]: h for h in hooks()}
    assert {"nnc-check", "nnc-fmt"} <= set(hs)
    good = tmp_path / "good.nnspec"
    good.write_text(FORMATTED)
    messy = tmp_path / "messy.nnspec"
    messy.write_text("model tiny\ninput x:float32[4]\ndense 2 activation=softmax\n")
    for h in hs.values():
        assert h["language"] == "python" and set(h) >= {"id", "name", "entry", "language", "files"}
        files = re.compile(h["files"])
        assert files.search("specs/mnist_convnet.nnspec") and not files.search("src/nnc/cli.py")
        argv = shlex.split(h["entry"])
        assert argv[0] == "nnc"
        rc, _, err = run_nnc(capsys, *argv[1:], str(good))  # pre-commit appends the staged files
        assert rc == 0, (h["id"], err)
    assert run_nnc(capsys, *shlex.split(hs["nnc-check"]["entry"])[1:], str(messy))[0] == 0  # layout is not an error
    if "nnc-fmt-check" in hs:
        assert run_nnc(capsys, *shlex.split(hs["nnc-fmt-check"]["entry"])[1:], str(messy))[0] == 1
    assert run_nnc(capsys, *shlex.split(hs["nnc-fmt"]["entry"])[1:], str(messy))[0] == 0
    assert messy.read_text() == FORMATTED


def test_the_workflow_checks_and_format_checks_specs(capsys, tmp_path):
    text = (REPO / ".github" / "workflows" / "nnc.yml").read_text()
    assert "actions/checkout@" in text and "actions/setup-python@" in text
    runs = [m.strip() for m in re.findall(r"^\s+run: (.*)$", text, re.M)]
    assert "pip install ." in runs
    nnc_runs = [r for r in runs if r.startswith("nnc ")]
    assert any(r.startswith("nnc check --format github specs/") for r in nnc_runs)
    assert "nnc fmt --check specs/" in nnc_runs
    # each nnc step, on a specs/ folder that is clean and formatted, passes
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny.nnspec").write_text(FORMATTED)
    for r in nnc_runs:
        cmd = r.split(">")[0].split("||")[0]
        argv = [str(tmp_path / "specs" / "tiny.nnspec") if a == "specs/*.nnspec" else
                str(tmp_path / "specs") if a == "specs/" else a for a in shlex.split(cmd)]
        rc, _, err = run_nnc(capsys, *argv[1:])
        assert rc == 0, (r, err)


def _existing_commands() -> list[str]:
    from nnc.cli import COMMANDS, MODULES

    names = []
    for name in COMMANDS:
        try:
            importlib.import_module(f"nnc.commands.{MODULES.get(name, name)}")
        except ModuleNotFoundError:
            continue  # a command another part of the project has not written yet
        names.append(name)
    return names


def test_every_command_has_help_with_an_example(capsys):
    names = _existing_commands()
    assert {"check", "fmt", "graph", "summary"} <= set(names)
    for name in names:
        rc, out, err = run_nnc(capsys, name, "--help")
        assert rc == 0, (name, err)
        assert out.startswith(f"usage: nnc {name}"), name
        example = out.split("example:\n", 1)[1].strip()
        assert example.startswith("nnc ") or example.startswith("eval "), (name, example)
    rc, out, _ = run_nnc(capsys, "--help")
    assert rc == 0 and "example:" in out


# --- shell completion ------------------------------------------------------------------------

bash = shutil.which("bash")


def complete(script: str, words: list[str], cwd) -> list[str]:
    line = " ".join(shlex.quote(w) for w in words)
    prog = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMPREPLY=(); _nnc; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run([bash, "-c", prog], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.splitlines() if x)


@pytest.mark.skipif(bash is None, reason="no bash on this machine")  # Linux CI has it
def test_bash_completion(tmp_path):
    from nnc.commands.completion import bash_script, zsh_script

    script = bash_script()
    (tmp_path / "a.nnspec").write_text(FORMATTED)
    (tmp_path / "b.onnx").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert complete(script, ["nnc", "gr"], tmp_path) == ["graph"]
    assert complete(script, ["nnc", "check", "--form"], tmp_path) == ["--format"]
    assert complete(script, ["nnc", "check", "--format", ""], tmp_path) == ["github", "json", "sarif", "text"]
    assert complete(script, ["nnc", "check", ""], tmp_path) == ["a.nnspec"]
    assert complete(script, ["nnc", "fmt", "--check", ""], tmp_path) == ["a.nnspec"]
    assert complete(script, ["nnc", "graph", "a.nnspec", "-o", "no"], tmp_path) == ["notes.txt"]
    if "run" in _existing_commands():
        assert complete(script, ["nnc", "run", ""], tmp_path) == ["b.onnx"]
    assert "bashcompinit" in zsh_script() and script in zsh_script()


def test_completion_command_prints_the_script(capsys):
    from argparse import Namespace

    from nnc.commands import completion

    assert completion.main(Namespace(shell="bash")) == 0
    out = capsys.readouterr().out
    assert out == completion.bash_script() and out.rstrip().endswith("complete -o filenames -F _nnc nnc")
