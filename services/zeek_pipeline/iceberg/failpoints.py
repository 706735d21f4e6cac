"""Kill the Iceberg maintenance at a named step (SIGKILL to itself), for the crash test of the real command.

The moments that matter (new data files written but not committed, a rewrite committed but the run not
finished) last milliseconds; a test hits them only if the process dies there itself. Nothing happens unless
ZEEK_ICEBERG_FAILPOINT is `<step>` or `<step>@<n>` (the n-th time the step is reached, default 1).
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)

ENVIRONMENT = "ZEEK_ICEBERG_FAILPOINT"
STEPS = frozenset({"written", "committed", "expired"})


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self.step: str | None = None
        self.nth = 1
        self._hits: Counter[str] = Counter()
        if spec:
            step, _, nth = spec.partition("@")
            if step not in STEPS or (nth and not nth.isdigit()):
                raise ValueError(f"{ENVIRONMENT}: cannot read {spec!r} (want <step>[@n], steps {sorted(STEPS)})")
            self.step, self.nth = step, int(nth or 1)

    @classmethod
    def from_environment(cls) -> Failpoints:
        return cls(os.environ.get(ENVIRONMENT, "").strip())

    def hit(self, step: str) -> None:
        if self.step != step:
            return
        self._hits[step] += 1
        if self._hits[step] == self.nth:
            log.warning("failpoint %s@%d: SIGKILL", step, self.nth)
            os.kill(os.getpid(), signal.SIGKILL)
