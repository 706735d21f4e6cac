"""Kill the compaction at a named step (SIGKILL to itself), for the crash tests of the real command.

The steps that matter (outputs staged but not committed, committed but not published, published but the
inputs still there) last milliseconds; a test can only hit them if the process dies there itself. Nothing
happens unless ZEEK_COMPACT_FAILPOINT is set to `<step>` or `<step>@<n>` (the n-th time the step is
reached in this process, default 1).
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger("zeek_pipeline.compaction")

ENVIRONMENT = "ZEEK_COMPACT_FAILPOINT"
STEPS = frozenset({"claimed", "staged", "committed", "published", "inputs_deleted", "done"})


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
