"""What the broker said about sizes, kept across aborts so one record cannot stall its partition.

A document larger than the output topic's max.message.bytes fails its delivery with MSG_SIZE_TOO_LARGE;
in a transaction that makes the whole transaction abortable, and a plain replay would meet the same record
again, forever. The limit is usually read at startup (DescribeConfigs), but ACLs often deny that call, and
then only the configured normalizer.max_message_bytes is known.

So every MSG_SIZE_TOO_LARGE delivery failure is remembered here. librdkafka fails the whole record batch,
small neighbours included, and does not say which record was too big; the largest failed value of a topic
is the suspect. On replay a value at least that large is produced alone (flushed before and after, so it
sits in a record batch of its own):

- refused alone: it is too large by itself. Output documents of that size and more are dead-lettered from
  now on with reason MSG_SIZE_TOO_LARGE; dead letters are cut to half their size (a truncated letter keeps
  its original size in `error.truncated_from`), down to MIN_DEAD_LETTER_BYTES;
- accepted alone: the batch around it was too large, not the record; the suspicion is dropped.

A dead letter refused even at MIN_DEAD_LETTER_BYTES cannot be delivered at all: `DeadLetterRefused`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

MSG_SIZE_TOO_LARGE = "MSG_SIZE_TOO_LARGE"  # the delivery error's name, used as the dead letter's reason too
MIN_DEAD_LETTER_BYTES = 1024
UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class SizeFailure:
    """One delivery the broker refused as too large: where it went and how big its value was."""

    topic: str
    size: int


class DeadLetterRefused(RuntimeError):
    """The dead-letter topic refuses even a minimal dead letter: records cannot be parked there."""


class SizeGuard:
    def __init__(self, output_topic: str, dlq_topic: str) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.output_refused = UNLIMITED  # output documents this large or larger were refused alone
        self.dlq_limit = UNLIMITED  # dead-letter values are cut to this many bytes
        self.output_suspect = UNLIMITED  # values this large or larger are produced alone
        self.dlq_suspect = UNLIMITED

    def output_fast_limit(self, configured: int) -> int:
        """The largest document the hot path may produce batched with the others without a second look."""
        return min(configured, self.output_refused - 1, self.output_suspect - 1)

    def dlq_value_limit(self, configured: int) -> int:
        return min(configured, self.dlq_limit)

    def learn(self, failures: list[SizeFailure]) -> None:
        """After an abort: the largest refused value of each topic becomes that topic's suspect."""
        for topic, explained in ((self.output_topic, self.output_refused), (self.dlq_topic, self.dlq_limit + 1)):
            sizes = [failure.size for failure in failures if failure.topic == topic]
            if not sizes or max(sizes) >= explained:  # refused alone already: the replay takes care of it
                continue
            largest = max(sizes)
            if topic == self.output_topic:
                self.output_suspect = min(self.output_suspect, largest)
            else:
                self.dlq_suspect = min(self.dlq_suspect, largest)
            log.warning("%s refused a record batch as too large (%d records, largest value %d bytes): values "
                        "of that size are produced alone on replay", topic, len(sizes), largest)

    def output_refused_alone(self, size: int) -> None:
        self.output_refused = min(self.output_refused, size)
        self.output_suspect = UNLIMITED
        log.warning("%s refused a %d-byte document on its own: documents this large go to %s with reason %s",
                    self.output_topic, size, self.dlq_topic, MSG_SIZE_TOO_LARGE)

    def output_accepted_alone(self, size: int) -> None:
        if size >= self.output_suspect:
            self.output_suspect = UNLIMITED
            log.warning("%s accepted a %d-byte document on its own: the batch around it was too large (is the "
                        "topic's max.message.bytes below the producer's batch.size?)", self.output_topic, size)

    def dlq_refused_alone(self, size: int) -> None:
        """Cut dead letters to half this size from now on; DeadLetterRefused when they cannot get smaller."""
        self.dlq_suspect = UNLIMITED
        if size <= MIN_DEAD_LETTER_BYTES:
            raise DeadLetterRefused(f"{self.dlq_topic} refuses a dead letter of {size} bytes as "
                                    f"{MSG_SIZE_TOO_LARGE}: its max.message.bytes is too small")
        self.dlq_limit = max(MIN_DEAD_LETTER_BYTES, min(self.dlq_limit, size // 2))
        log.warning("%s refused a %d-byte dead letter on its own: dead letters are cut to %d bytes",
                    self.dlq_topic, size, self.dlq_limit)

    def dlq_accepted_alone(self, size: int) -> None:
        if size >= self.dlq_suspect:
            self.dlq_suspect = UNLIMITED
