"""Hostile inputs (YAML bombs, runaway templates) and a way to load them in a child process
under a 2 GiB address-space cap, so a regression fails fast instead of filling the machine."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CAP = 2 << 30  # HARNESS.md §6


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" shape: each anchor is a list of `width` aliases to the previous
    one, so a few hundred bytes stand for width**levels strings."""
    lines = [f"lol0: &lol0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    """`depth` block mappings, one inside the other (key0: key1: key2: ...)."""
    return "".join(f"{'  ' * i}key{i}:\n" for i in range(depth)) + f"{'  ' * depth}leaf\n"


def load_capped(setup: str, code: str, timeout: float = 30) -> dict[str, Any]:
    """Run `setup` (imports), then `code` (which sets `result`), in a fresh interpreter under
    the memory cap; return {"result": ..., "seconds": how long `code` took, "peak_mb": the
    child's peak RSS}."""
    script = (
        "import json, resource, time\n"
        + textwrap.dedent(setup)
        + "\nresult = None\nt0 = time.perf_counter()\n"
        + textwrap.dedent(code)
        + "\n"
        + textwrap.dedent(
            """\
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"result": result, "seconds": seconds, "peak_mb": peak}))
        """
        )
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP)),
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out
