"""Who owned a partition, read back from offset metadata, and which previous owners may be fenced (pure)."""

from __future__ import annotations

import pytest

from zeek_pipeline.normalizer.failpoints import Failpoints
from zeek_pipeline.normalizer.ownership import Owner, dead_owners

A = Owner("group.normalizer-a", "member-a", "zeek-pipeline-normalizer-a")
B = Owner("group.normalizer-b", "member-b", "zeek-pipeline-normalizer-b")


def test_owner_survives_the_round_trip_through_offset_metadata() -> None:
    assert Owner.decode(A.encode()) == A
    assert len(A.encode()) < 4096  # the broker's default offset.metadata.max.bytes


@pytest.mark.parametrize("metadata", [None, "", "other", "zeek-pipeline/owner {not json", "zeek-pipeline/owner []"])
def test_metadata_written_by_anything_else_names_no_owner(metadata: str | None) -> None:
    assert Owner.decode(metadata) is None


def test_only_owners_that_left_the_group_are_fenced() -> None:
    members = [("member-b", "zeek-pipeline-normalizer-b")]
    assert dead_owners([A, B], members, own_transactional_id="group.normalizer-c") == [A]


def test_a_live_owner_is_recognised_by_its_client_id_after_it_rejoined() -> None:
    # Same pod, new member id (it was restarted under its name, or rejoined after a session timeout).
    members = [("member-a-2", "zeek-pipeline-normalizer-a")]
    assert dead_owners([A], members, own_transactional_id="group.normalizer-c") == []


def test_an_instance_never_fences_its_own_transactional_id() -> None:
    assert dead_owners([A], [], own_transactional_id=A.transactional_id) == []


def test_each_dead_owner_is_fenced_once() -> None:
    other_member = Owner(A.transactional_id, "member-a-old", A.client_id)
    assert dead_owners([A, other_member], [], own_transactional_id="x") in ([A], [other_member])


def test_failpoints_parse_and_refuse_what_they_do_not_know() -> None:
    points = Failpoints.parse("before_send_offsets@2=hang, after_commit_transaction@1=pause:/tmp/x")
    assert points.actions == {("before_send_offsets", 2): "hang", ("after_commit_transaction", 1): "pause:/tmp/x"}
    points.hit("before_send_offsets")  # the first time: nothing happens
    with pytest.raises(ValueError, match="cannot read"):
        Failpoints.parse("somewhere@1=hang")
    with pytest.raises(ValueError, match="cannot read"):
        Failpoints.parse("before_send_offsets@x=crash")
    assert Failpoints.parse("").actions == {}
