"""Small helpers the end-to-end tests share: a command that must succeed, and polling until a check holds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result of a command that must have succeeded (its output in the failure message otherwise)."""
    assert result.returncode == 0, f"{result.args}\nstdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}"
    return result


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy and return that; AssertionError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
