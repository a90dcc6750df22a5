"""Shared by the benchmarks: each writes its own section of BENCHMARKS.md, between markers,
so running one benchmark refreshes its figures and leaves the others as they were."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Figures written by the scripts in `bench/` (each refreshes its own section). Every figure is
a ratio against a reference measured in the same run on the same machine, so the ratios
hold across machines even where the seconds do not. Run one with
`.venv/bin/python bench/NAME.py`; see each section for what it measures.
"""


def machine() -> str:
    """One line about where the figures were taken, including the load at the time."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}"


VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon", "CentaurHauls": "Centaur"}


def cpu() -> tuple[str, str]:
    """(vendor, model) of this machine's CPU, from /proc/cpuinfo's `vendor_id` and `model name`
    ("Intel", "Intel(R) Xeon(R) Platinum 8480+"); where it cannot be read, what platform says."""
    vendor, model = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and not vendor:
                    vendor = VENDORS.get(value, value)
                elif key == "model name" and not model:
                    model = value
                if vendor and model:
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    if not vendor:
        vendor = next((v for v in ("Intel", "AMD") if v.lower() in model.lower()), platform.machine() or "unknown")
    return vendor, model


def read_section(name: str) -> str | None:
    """The section `name` of BENCHMARKS.md as it is now (markers included), or None."""
    if not BENCHMARKS.exists():
        return None
    m = re.search(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", BENCHMARKS.read_text(), re.S)
    return m.group(0) if m else None


def commit() -> str:
    if os.environ.get("NNC_BENCH_COMMIT"):  # a copy of the tree without .git (the GPU machine)
        return os.environ["NNC_BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n## {title}\n\n_Measured {stamp} at commit {commit()} on "
             f"{machine()}; `bench/{name}.py`._\n\n{body.strip()}\n<!-- /bench:{name} -->")
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)
