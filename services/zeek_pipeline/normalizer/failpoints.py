"""Failpoints: make the transactional producer stop at an exact step of a commit, for the fault tests.

Why in the product: the states that matter (a transaction open with records, offsets sent but not committed,
commit_transaction accepted by the broker but never returning) last milliseconds; a test can only kill the
process or stop the broker inside them if the process waits there. Nothing happens unless the environment
variable ZEEK_NORMALIZER_FAILPOINTS is set (outside the ZEEK_PIPELINE_ settings namespace on purpose), as a
comma-separated list of `<point>@<n>=<action>`:

- points: `before_send_offsets`, `before_commit_transaction`, `after_commit_transaction`, each counted per
  transaction commit attempt of this process (`@3` = the third time the point is reached);
- actions: `hang` (block forever; the test kills the process, or the helper-thread guard gives up on the
  call) or `pause:<file>` (create the file, continue once the test deleted it).

Every trigger is logged at WARNING with the point and action.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

ENVIRONMENT = "ZEEK_NORMALIZER_FAILPOINTS"
POINTS = frozenset({"before_send_offsets", "before_commit_transaction", "after_commit_transaction"})


@dataclass
class Failpoints:
    actions: dict[tuple[str, int], str] = field(default_factory=dict)
    _hits: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        actions: dict[tuple[str, int], str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            where, _, action = item.partition("=")
            point, _, nth = where.partition("@")
            if point not in POINTS or not nth.isdigit() or not (action == "hang" or action.startswith("pause:")):
                raise ValueError(f"{ENVIRONMENT}: cannot read {item!r} (want <point>@<n>=hang|pause:<file>, "
                                 f"points {sorted(POINTS)})")
            actions[(point, int(nth))] = action
        return cls(actions)

    @classmethod
    def from_environment(cls) -> Failpoints:
        return cls.parse(os.environ.get(ENVIRONMENT, ""))

    def hit(self, point: str) -> None:
        if not self.actions:
            return
        with self._lock:
            self._hits[point] += 1
            action = self.actions.get((point, self._hits[point]))
        if action is None:
            return
        log.warning("failpoint %s@%d: %s", point, self._hits[point], action)
        if action == "hang":
            while True:
                time.sleep(3600)
        marker = Path(action.removeprefix("pause:"))
        marker.touch()
        while marker.exists():
            time.sleep(0.05)
        log.warning("failpoint %s: resumed", point)
