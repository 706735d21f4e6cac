"""Moving an object's fields from our *Update* managedFields entry to our *Apply* entry (pure).

Why: the operator used to create children with POST (recorded as manager `zeek-operator`, operation
Update) and then server-side apply them under the same name (operation Apply). The API server keeps the
two entries apart, and an apply only prunes fields its *Apply* entry owns; everything first set by the
POST stayed owned by the Update entry forever, so a field the operator stopped rendering was never removed
(`rollingUpdate` left beside `Recreate` -> 422 on every apply; an old TLS volume or SASL variable kept).
client-go's csaupgrade does the same for kubectl's client-side-apply entries: union the field sets into
the Apply entry and drop the Update entry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any


def merge_field_sets(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """The union of two FieldsV1 trees (`{"f:spec": {"f:replicas": {}}, ".": {}}`-style nested sets)."""
    out = copy.deepcopy(dict(first))
    for key, value in second.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_field_sets(out[key], value)
        else:
            out.setdefault(key, copy.deepcopy(value))
    return out


def _main_resource(entry: Mapping[str, Any]) -> bool:
    return not entry.get("subresource")  # status written via /status is another story


def adopt_update_entries(entries: Sequence[Mapping[str, Any]], manager: str) -> list[dict[str, Any]] | None:
    """managedFields with `manager`'s Update entries folded into its Apply entry; None when there are none.

    Entries of other managers (the controller-manager's status, a person's kubectl edit) are kept as they
    are, so their fields stay theirs.
    """
    legacy = [e for e in entries if e.get("manager") == manager and e.get("operation") == "Update"
              and _main_resource(e)]
    if not legacy:
        return None
    applied = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"
                    and _main_resource(e)), None)
    merged = dict(copy.deepcopy(applied)) if applied is not None else {
        "manager": manager, "operation": "Apply", "apiVersion": legacy[0].get("apiVersion"),
        "fieldsType": "FieldsV1", "fieldsV1": {}}
    for entry in legacy:
        merged["fieldsV1"] = merge_field_sets(merged.get("fieldsV1") or {}, entry.get("fieldsV1") or {})
        if not merged.get("time") and entry.get("time"):
            merged["time"] = entry["time"]
    out: list[dict[str, Any]] = []
    for entry in entries:
        if entry in legacy:
            continue
        out.append(merged if entry is applied else dict(entry))
    if applied is None:
        out.append(merged)
    return out
