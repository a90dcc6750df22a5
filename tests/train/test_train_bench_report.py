"""bench/bench_train.py's table in BENCHMARKS.md: one row per CPU model and workload, each naming
its CPU and vendor, so a run on an Intel machine keeps the AMD machine's rows (and the reverse).
The benchmark itself takes minutes and is not run here: only how its figures are recorded."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import _report  # noqa: E402
import bench_train  # noqa: E402

# the section as bench_train.py wrote it before its rows named their CPU
OLD = """<!-- bench:bench_train -->
## Training: NumPy backend against PyTorch

_Measured 2026-11-30 21:37 UTC at commit 443222c on AMD EPYC, 2 cores, Python 3.11.7, load average 1.48, 1.63, 1.72; `bench/bench_train.py`._

Epoch time of training ...

| workload | nnc epoch | PyTorch epoch | ratio nnc/PyTorch | nnc peak RSS | PyTorch peak RSS |
|---|---:|---:|---:|---:|---:|
| convnet | 5.17 s | 4.97 s | **1.04** | 170 MB | 414 MB |
| lstm | 2.78 s | 2.66 s | **1.04** | 274 MB | 489 MB |

Every epoch (s): ...
<!-- /bench:bench_train -->"""

XEON = "Intel(R) Xeon(R) Platinum 8480+"


def _rows(cpu, vendor, ratio, workloads=("convnet", "lstm"), when="2026-12-01, abc1234"):
    return [[cpu, vendor, w, "1.00 s", "2.00 s", f"**{ratio}**", "100 MB", "400 MB", when] for w in workloads]


def test_an_intel_run_keeps_the_amd_rows_of_an_old_section():
    rows = bench_train.merge_rows(OLD, _rows(XEON, "Intel", "0.50"))
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        ("AMD EPYC", "AMD", "convnet", "**1.04**"), ("AMD EPYC", "AMD", "lstm", "**1.04**"),
        (XEON, "Intel", "convnet", "**0.50**"), (XEON, "Intel", "lstm", "**0.50**")]
    amd = rows[0]
    assert amd[3:8] == ["5.17 s", "4.97 s", "**1.04**", "170 MB", "414 MB"] and amd[8] == "2026-11-30, 443222c"


def test_rows_kept_from_earlier_runs_are_named_as_such():
    when = "2026-12-01, abc1234"
    rows = bench_train.merge_rows(OLD, _rows(XEON, "Intel", "0.50", when=when))
    note = bench_train.older_rows_note(rows, when)
    assert note[0].startswith("Rows kept from earlier runs, not measured again in this one: AMD EPYC (2026-11-30, 443222c).")
    assert XEON not in note[0]
    assert bench_train.older_rows_note(_rows(XEON, "Intel", "0.50", when=when), when) == []


def test_a_run_replaces_only_its_own_cpus_rows_of_the_workloads_it_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(_report, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("NNC_BENCH_COMMIT", "abc1234")

    def write(rows):
        merged = bench_train.merge_rows(_report.read_section("bench_train"), rows)
        body = "\n".join([bench_train.TABLE_HEADER, bench_train.TABLE_RULE, *map(bench_train._row, merged)])
        _report.write_section("bench_train", "Training", body)
        return bench_train.table_rows(_report.read_section("bench_train"))

    (tmp_path / "BENCHMARKS.md").write_text(_report.HEADER + "\n" + OLD + "\n")
    write(_rows(XEON, "Intel", "0.50"))
    again = write(_rows("AMD EPYC", "AMD", "0.90", workloads=("convnet",)))  # the AMD machine, convnet only
    assert [(r[0], r[2], r[5]) for r in again] == [
        ("AMD EPYC", "convnet", "**0.90**"), ("AMD EPYC", "lstm", "**1.04**"),
        (XEON, "convnet", "**0.50**"), (XEON, "lstm", "**0.50**")]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.count("<!-- bench:bench_train -->") == 1 and text.startswith("# Benchmarks")


def test_cpu_is_read_from_proc_cpuinfo():
    vendor, model = _report.cpu()
    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    fields = dict(line.split(":", 1) for line in info.read_text().splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert model == fields.get("model name", model)
    assert vendor == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(fields.get("vendor_id"), vendor)
