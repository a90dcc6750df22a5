"""`nnc check` as CI relies on it: exit codes, the closing count, many files and
directories, --max-params, --warnings-as-errors, colour only when asked or on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ci_helpers import CASES, run_nnc

CLEAN = "model tiny\ninput x: float32[4]\ndense 2 activation=softmax\n"  # 4*2+2 = 10 parameters


def test_exit_codes_follow_the_contract(capsys, tmp_path):
    good = tmp_path / "good.nnspec"
    good.write_text(CLEAN)
    assert run_nnc(capsys, "check", str(good))[0] == 0
    assert run_nnc(capsys, "check", str(good), str(CASES / "shapes.nnspec"))[0] == 1
    assert run_nnc(capsys, "check", str(good), str(tmp_path / "absent.nnspec"))[0] == 2
    assert run_nnc(capsys, "check", "--format", "xml", str(good))[0] == 2  # usage error
    assert run_nnc(capsys, "check")[0] == 2


def test_many_files_end_with_a_closing_count(capsys, in_cases):
    rc, out, _ = run_nnc(capsys, "check", "options.nnspec", "shapes.nnspec", "warnings.nnspec")
    assert rc == 1
    assert out.rstrip().splitlines()[-1] == "4 errors, 2 warnings in 3 files"
    assert "options.nnspec:6:7: error:" in out and "shapes.nnspec:7:10: error:" in out


def test_a_clean_run_says_so(capsys, tmp_path):
    (tmp_path / "a.nnspec").write_text(CLEAN)
    (tmp_path / "b.nnspec").write_text(CLEAN)
    rc, out, _ = run_nnc(capsys, "check", str(tmp_path))  # a directory stands for its specs
    assert (rc, out.strip()) == (0, "2 files checked: no problems")


def test_a_directory_without_specs_is_a_usage_error(capsys, tmp_path):
    rc, _, err = run_nnc(capsys, "check", str(tmp_path))
    assert rc == 2 and "no .nnspec files" in err


def test_max_params_is_a_budget(capsys, tmp_path):
    spec = tmp_path / "tiny.nnspec"
    spec.write_text(CLEAN)
    assert run_nnc(capsys, "check", "--max-params", "10", str(spec))[0] == 0  # exactly at the budget
    rc, out, _ = run_nnc(capsys, "check", "--max-params", "9", "--format", "json", str(spec))
    (d,) = json.loads(out)
    assert rc == 1
    assert (d["code"], d["line"], d["column"], d["end_column"]) == ("param-budget", 1, 1, 11)  # `model tiny`
    assert "10 parameters, over the budget of 9" in d["message"]


def test_warnings_as_errors(capsys, in_cases):
    assert run_nnc(capsys, "check", "warnings.nnspec")[0] == 0
    rc, out, _ = run_nnc(capsys, "check", "--warnings-as-errors", "warnings.nnspec")
    assert rc == 1
    assert "warnings.nnspec:7:1: error:" in out
    assert out.rstrip().endswith("2 errors, 0 warnings in 1 file")


def test_colour_only_when_asked_or_on_a_terminal(capsys, in_cases, monkeypatch):
    _, plain, _ = run_nnc(capsys, "check", "shapes.nnspec")  # captured output is not a terminal
    assert "\x1b[" not in plain
    _, coloured, _ = run_nnc(capsys, "check", "--color", "always", "shapes.nnspec")
    assert "\x1b[1;31merror\x1b[0m" in coloured
    from nnc.commands.check import use_color

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color("auto", Tty()) is True
    assert use_color("never", Tty()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color("auto", Tty()) is False


def test_the_installed_command_runs_without_numpy(tmp_path):
    """`nnc check` stays light: numpy and onnx are never imported on its path."""
    spec = tmp_path / "tiny.nnspec"
    spec.write_text(CLEAN)
    code = ("import sys; from nnc.cli import main; "
            f"rc = main(['check', '--format', 'sarif', {str(spec)!r}]); "
            "assert 'numpy' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "2.1.0"
