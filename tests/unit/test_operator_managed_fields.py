"""Folding the operator's old Update managedFields entry into its Apply entry, so applies prune again."""

from __future__ import annotations

from typing import Any

from zeek_operator.managed_fields import adopt_update_entries, merge_field_sets

MANAGER = "zeek-operator"


def entry(operation: str, fields: dict[str, Any], manager: str = MANAGER, **extra: Any) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": fields, **extra}


POSTED = {"f:spec": {"f:strategy": {"f:type": {}, "f:rollingUpdate": {".": {}, "f:maxSurge": {}}},
                     "f:replicas": {}}}
APPLIED = {"f:spec": {"f:strategy": {"f:type": {}}, "f:replicas": {}}, "f:metadata": {"f:labels": {}}}
CONTROLLER = entry("Update", {"f:status": {"f:replicas": {}}}, manager="kube-controller-manager",
                   subresource="status")


def test_field_sets_are_united_level_by_level() -> None:
    assert merge_field_sets(APPLIED, POSTED) == {
        "f:spec": {"f:strategy": {"f:type": {}, "f:rollingUpdate": {".": {}, "f:maxSurge": {}}}, "f:replicas": {}},
        "f:metadata": {"f:labels": {}}}


def test_the_update_entry_is_folded_into_the_apply_entry_and_others_are_kept() -> None:
    hand_edit = entry("Update", {"f:spec": {"f:paused": {}}}, manager="kubectl-edit")
    entries = [entry("Update", POSTED), entry("Apply", APPLIED), CONTROLLER, hand_edit]
    migrated = adopt_update_entries(entries, MANAGER)
    assert migrated is not None
    ours = [e for e in migrated if e["manager"] == MANAGER]
    assert [e["operation"] for e in ours] == ["Apply"]
    assert ours[0]["fieldsV1"] == merge_field_sets(APPLIED, POSTED)
    assert CONTROLLER in migrated and hand_edit in migrated and len(migrated) == 3


def test_an_object_only_ever_posted_gets_an_apply_entry() -> None:
    migrated = adopt_update_entries([entry("Update", POSTED), CONTROLLER], MANAGER)
    assert migrated is not None
    (ours,) = [e for e in migrated if e["manager"] == MANAGER]
    assert (ours["operation"], ours["apiVersion"], ours["fieldsV1"]) == ("Apply", "apps/v1", POSTED)


def test_nothing_to_do_without_an_update_entry_of_ours() -> None:
    assert adopt_update_entries([entry("Apply", APPLIED), CONTROLLER], MANAGER) is None
    # our own status writes (subresource status) are not the object's fields
    assert adopt_update_entries([entry("Update", {"f:status": {}}, subresource="status")], MANAGER) is None
