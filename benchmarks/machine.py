"""The hardware line every benchmark result file starts with: CPU model, core count and
memory, read from /proc where Linux has it (the platform module knows neither)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def hardware() -> str:
    """e.g. ``AMD EPYC 7B13, 2 CPU cores, 24 GiB RAM``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        memory = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores{memory}"
