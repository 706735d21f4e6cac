"""Fence the dead previous owner of a partition on assignment, so its open transaction does not hold
read_committed readers (and this instance's own start) until the broker's transaction timeout.

Why: the transactional.id is group + instance name. A pod restarted under its name fences its predecessor
itself (init_transactions with the same id aborts what it left open). A pod replaced under a new name does
not: the dead pod's transaction stays open, the last stable offset of every output partition it wrote to
stops there, and nobody's output becomes visible until transaction.timeout.ms (+ the broker's 10 s abort
check) has passed; if it died with offsets sent, the new owner cannot even read its start offsets.

How (docs/normalizer-exactly-once.md):
1. Every transaction records its owner in the metadata of the offsets it commits: transactional.id, the
   consumer's member id and client id (`Owner.encode`).
2. Before partitions are fetched, the new owner reads that metadata without waiting for pending offsets
   (GroupOffsets with stable=False: an open transaction cannot block it) and learns who may have a
   transaction open on them.
3. Only an owner that is no longer a member of the group (neither its member id nor its client id among the
   group's members) is fenced: a short-lived producer with its transactional.id calls init_transactions,
   which aborts its open transaction at once (or completes it, if it had reached PREPARE_COMMIT).
   A live member is never fenced. Were it fenced by mistake (a restarted pod that has not joined yet), its
   next transactional call fails fatally and it restarts: its open transaction is aborted and its offsets
   were not committed, so nothing is duplicated or lost.
4. The new owner then claims the partitions: it commits their (unchanged) committed offsets with its own
   owner record in a transaction of its own before producing anything for them, so whoever comes after it
   knows whom to fence even if it dies before its first batch commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from zeek_pipeline.normalizer.batch import TopicPartitionKey
from zeek_pipeline.normalizer.errors import describe
from zeek_pipeline.normalizer.group_offsets import GroupOffsets
from zeek_pipeline.normalizer.transactions import ProducerHung, guarded_call

log = logging.getLogger("zeek_pipeline.normalizer-enricher")

METADATA_PREFIX = "zeek-pipeline/owner "
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Owner:
    """Who committed a partition's offsets last: enough to fence it, and to tell whether it is still alive."""

    transactional_id: str
    member_id: str
    client_id: str

    def encode(self) -> str:
        return METADATA_PREFIX + json.dumps({"txn": self.transactional_id, "member": self.member_id,
                                             "client": self.client_id}, separators=(",", ":"))

    @classmethod
    def decode(cls, metadata: str | None) -> Owner | None:
        """None for offsets committed by anything else (an older version, a tool resetting offsets)."""
        if not metadata or not metadata.startswith(METADATA_PREFIX):
            return None
        try:
            fields = json.loads(metadata.removeprefix(METADATA_PREFIX))
            return cls(str(fields["txn"]), str(fields.get("member", "")), str(fields.get("client", "")))
        except (ValueError, KeyError, TypeError):
            return None


def dead_owners(owners: Iterable[Owner], members: Iterable[tuple[str, str]], own_transactional_id: str,
                ) -> list[Owner]:
    """The owners to fence: not this instance, and matching no current member by member id or client id."""
    member_ids = {member for member, _ in members}
    client_ids = {client for _, client in members}
    dead: dict[str, Owner] = {}
    for owner in owners:
        if owner.transactional_id == own_transactional_id:
            continue  # our own init_transactions fenced our predecessor under this id already
        if owner.member_id in member_ids or owner.client_id in client_ids:
            continue
        dead.setdefault(owner.transactional_id, owner)
    return list(dead.values())


class OwnerFence:
    """Reads the previous owners of newly assigned partitions and fences those that are gone."""

    def __init__(self, previous_offsets: GroupOffsets, producer_conf: dict[str, Any], admin: AdminClient,
                 group: str, own_transactional_id: str) -> None:
        self._previous = previous_offsets  # stable=False: an open transaction's pending offsets cannot block it
        self._producer_conf = {key: value for key, value in producer_conf.items()
                               if key not in ("transactional.id", "error_cb", "on_delivery")}
        self._admin = admin
        self._group = group
        self._own = own_transactional_id
        self._hung: list[Producer] = []

    def fence_dead_owners(self, partitions: list[TopicPartitionKey]) -> list[str]:
        """Fence every previous owner of `partitions` that is no longer in the group; returns their ids.

        Best effort: anything that fails is logged and left to the broker's transaction timeout."""
        owners = self._previous_owners(partitions)
        if not owners:
            return []
        try:
            members = self._members()
        except Exception as exc:  # noqa: BLE001 - without the member list nobody can be proven dead
            log.warning("cannot list the group's members (%s): not fencing %s", describe(exc),
                        sorted(o.transactional_id for o in owners))
            return []
        fenced = []
        for owner in dead_owners(owners, members, self._own):
            if self._fence(owner.transactional_id):
                fenced.append(owner.transactional_id)
        return fenced

    def close(self) -> None:
        self._previous.close()

    def _previous_owners(self, partitions: list[TopicPartitionKey]) -> set[Owner]:
        try:
            committed = self._previous.read(partitions, REQUEST_TIMEOUT)
        except KafkaException as exc:
            log.warning("cannot read the previous owners of %d partitions: %s", len(partitions), describe(exc))
            return set()
        return {owner for tp in committed if (owner := Owner.decode(tp.metadata)) is not None}

    def _members(self) -> list[tuple[str, str]]:
        future = self._admin.describe_consumer_groups([self._group], request_timeout=REQUEST_TIMEOUT)[self._group]
        description = future.result(REQUEST_TIMEOUT)
        return [(member.member_id, member.client_id) for member in description.members]

    def _fence(self, transactional_id: str) -> bool:
        """init_transactions under the dead owner's id: the broker bumps its epoch and ends its transaction."""
        producer = Producer({**self._producer_conf, "transactional.id": transactional_id})
        try:
            guarded_call("fence", partial(producer.init_transactions, REQUEST_TIMEOUT), REQUEST_TIMEOUT)
        except ProducerHung as exc:
            self._hung.append(producer)  # destroying a stuck handle would block this thread too
            log.warning("could not fence %s: %s", transactional_id, exc)
            return False
        except KafkaException as exc:
            log.warning("could not fence %s: %s", transactional_id, describe(exc))
            return False
        log.info("fenced the transactional id of a previous owner that left the group", extra={"context": {
            "transactional_id": transactional_id}})
        return True
