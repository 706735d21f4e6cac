"""Generate the ZeekPipeline CustomResourceDefinition from the pydantic spec models.

    python -m zeek_operator.crd            # rewrite operator/crds/zeekpipelines.zeek-pipeline.io.yaml
    python -m zeek_operator.crd --check    # exit 1 when the committed file is stale
    python -m zeek_operator.crd --reference  # the spec reference table of docs/operator.md

The spec schema is pydantic's JSON schema made structural for Kubernetes: references inlined, no
`additionalProperties: false` (the API server prunes and kubectl rejects unknown fields), `Optional` as a
plain optional field (the API server prunes a null), exclusive bounds in OpenAPI v3 form, and the defaults
taken from the models themselves (`{}` for a nested object whose own fields default, so the API server
fills those in). The status schema is written here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from zeek_operator.resources import MAX_NAME, NAME_PATTERN
from zeek_operator.spec import PipelineSpec, SpecModel

GROUP = "zeek-pipeline.io"
VERSION = "v1alpha1"
KIND = "ZeekPipeline"
PLURAL = "zeekpipelines"
SINGULAR = "zeekpipeline"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = Path(__file__).resolve().parents[1] / "crds" / f"{CRD_NAME}.yaml"

_KEEP = {
    "type", "description", "enum", "minimum", "maximum", "pattern", "minLength", "maxLength", "minItems",
    "maxItems", "format", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}

CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string", "description": "Ready, Progressing or Degraded."},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "description": "CamelCase reason of the last transition."},
        "message": {"type": "string", "description": "Human-readable detail, naming the field on spec errors."},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    },
}

COMPONENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "desiredReplicas": {"type": "integer"},
        "replicas": {"type": "integer"},
        "readyReplicas": {"type": "integer"},
        "updatedReplicas": {"type": "integer"},
        "availableReplicas": {"type": "integer"},
    },
}

AUTOSCALE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "desiredReplicas": {"type": "integer"},
        "lag": {"type": "integer", "format": "int64"},
        "partitions": {"type": "integer"},
        "reason": {"type": "string"},
        "lastScaleTime": {"type": "string", "format": "date-time"},
        "backlog": {"type": "integer", "format": "int64",
                    "description": "parquet-writer: lag minus what its flush interval explains (the signal)."},
        "backlogReason": {"type": "string", "description": "parquet-writer: how the backlog was computed."},
        "inputRate": {"type": "number", "description": "parquet-writer: messages/s into its topic."},
        "endOffsets": {"type": "integer", "format": "int64",
                       "description": "parquet-writer: summed end offsets at sampleTime (for the rate)."},
        "sampleTime": {"type": "string", "format": "date-time"},
    },
}

COMPACTION_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "schedule": {"type": "string"},
        "suspended": {"type": "boolean"},
        "active": {"type": "integer", "description": "Jobs running now."},
        "lastScheduleTime": {"type": "string", "format": "date-time", "description": "When the last Job was started."},
        "lastSuccessfulTime": {"type": "string", "format": "date-time",
                               "description": "When the last Job succeeded."},
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Written by the operator: conditions, replicas per component, lag per consumer group.",
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64",
                               "description": "The spec generation the status describes."},
        "conditions": {"type": "array", "items": CONDITION_SCHEMA,
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        "components": {"type": "object", "additionalProperties": COMPONENT_SCHEMA,
                       "description": "Replica counts per component (normalizer-enricher, parquet-writer, health)."},
        "normalizers": {"type": "string", "description": "ready/desired normalizer-enricher replicas."},
        "writers": {"type": "string", "description": "ready/desired parquet-writer replicas."},
        "lag": {"type": "object", "additionalProperties": {"type": "integer", "format": "int64"},
                "description": "Consumer-group lag (messages) per group id."},
        "totalLag": {"type": "integer", "format": "int64", "description": "Sum of lag over the groups."},
        "lagTime": {"type": "string", "format": "date-time", "description": "When the lag was read."},
        "lagError": {"type": "string", "description": "Why the lag could not be read (empty when it could)."},
        "autoscaling": {"type": "object", "additionalProperties": AUTOSCALE_SCHEMA,
                        "description": "Last autoscaling decision per component."},
        "topicsCreated": {"type": "array", "items": {"type": "string"}},
        "compaction": {**COMPACTION_STATUS_SCHEMA, "description": "The compaction CronJob and its last runs."},
        "icebergMaintenance": {**COMPACTION_STATUS_SCHEMA,
                               "description": "The Iceberg maintenance CronJob and its last runs."},
        "configHash": {"type": "string", "description": "Digest of the rendered ConfigMap (pod annotation)."},
        "healthUrl": {"type": "string", "description": "In-cluster URL of the health dashboard."},
    },
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Normalizers", "type": "string", "jsonPath": ".status.normalizers"},
    {"name": "Writers", "type": "string", "jsonPath": ".status.writers"},
    {"name": "Lag", "type": "integer", "jsonPath": ".status.totalLag"},
    {"name": "Reason", "type": "string", "priority": 1,
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Compacted", "type": "date", "priority": 1, "jsonPath": ".status.compaction.lastSuccessfulTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _models() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = [SpecModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


def _field_default(model: type[BaseModel], alias: str) -> tuple[bool, Any]:
    """(has a default, the default as the resource would spell it) for the field with this alias."""
    for name, field in model.model_fields.items():
        if (field.alias or name) != alias:
            continue
        if field.is_required():
            return False, None
        value = field.get_default(call_default_factory=True)
        if value is None:
            return False, None
        if isinstance(value, BaseModel):
            dumped = value.model_dump(by_alias=True, exclude_none=True, mode="json")
            # `{}` lets the API server fill the nested defaults, but CEL rules are checked against the
            # default as written, so a model with rules gets its default spelled out.
            extra = type(value).model_config.get("json_schema_extra")
            has_rules = isinstance(extra, dict) and "x-kubernetes-validations" in extra
            plain = None
            if _all_default(type(value)) and not has_rules:
                plain = type(value)().model_dump(by_alias=True, exclude_none=True, mode="json")
            return True, {} if dumped == plain else dumped
        if isinstance(value, list | dict | str | int | float | bool):
            return True, value
        raise TypeError(f"{model.__name__}.{name}: default {value!r} cannot go into the CRD")
    raise KeyError(f"{model.__name__} has no field {alias}")


def _all_default(model: type[BaseModel]) -> bool:
    return all(not field.is_required() for field in model.model_fields.values())


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.models = _models()

    def node(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            out = self.model(name)
            if "description" in schema:
                out["description"] = schema["description"]
            return out
        any_of = schema.get("anyOf")
        if any_of and not schema.get("x-kubernetes-int-or-string"):
            others = [item for item in any_of if item.get("type") != "null"]
            if len(others) != 1 or len(others) == len(any_of):
                raise ValueError(f"unsupported anyOf in CRD schema: {schema}")
            # Optional fields are simply not required: a null is pruned by the API server (not nullable).
            out = self.node(others[0])
            if "description" in schema:
                out["description"] = schema["description"]
            return out
        out = {key: value for key, value in schema.items() if key in _KEEP}
        if "exclusiveMinimum" in schema:
            out["minimum"] = schema["exclusiveMinimum"]
            out["exclusiveMinimum"] = True
        if "exclusiveMaximum" in schema:
            out["maximum"] = schema["exclusiveMaximum"]
            out["exclusiveMaximum"] = True
        if any_of:
            out["anyOf"] = any_of
        if "items" in schema:
            out["items"] = self.node(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = self.node(schema["additionalProperties"])
        return out

    def model(self, name: str) -> dict[str, Any]:
        schema = self.defs[name]
        model = self.models[name]
        out: dict[str, Any] = {"type": "object"}
        if model.__doc__ and "description" not in schema:
            out["description"] = " ".join(model.__doc__.split())
        if "description" in schema:
            out["description"] = " ".join(schema["description"].split())
        properties: dict[str, Any] = {}
        for alias, prop in schema.get("properties", {}).items():
            converted = self.node(prop)
            has_default, default = _field_default(model, alias)
            if has_default:
                converted["default"] = default
            properties[alias] = converted
        out["properties"] = properties
        if schema.get("required"):
            out["required"] = list(schema["required"])
        if "x-kubernetes-validations" in schema:
            out["x-kubernetes-validations"] = schema["x-kubernetes-validations"]
        return out


def _ordered(node: Any) -> Any:
    """type and description first, the rest as generated: the YAML reads like a hand-written CRD."""
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    if not isinstance(node, dict):
        return node
    first = [key for key in ("type", "description") if key in node]
    rest = [key for key in node if key not in first]
    return {key: _ordered(node[key]) for key in (*first, *rest)}


def spec_schema() -> dict[str, Any]:
    raw = PipelineSpec.model_json_schema(by_alias=True, mode="validation")
    defs = dict(raw.get("$defs", {}))
    defs["PipelineSpec"] = {key: value for key, value in raw.items() if key != "$defs"}
    result: dict[str, Any] = _ordered(_Converter(defs).model("PipelineSpec"))
    return result


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict (apply it, or dump it to YAML)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "zeek-pipeline",
                                                  "app.kubernetes.io/component": "crd"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": ["zp"], "categories": ["zeek"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A Zeek log pipeline: Kafka -> normalizer-enricher -> parquet-writer, "
                                   "with a health dashboard.",
                    "required": ["spec"],
                    # Children are named <name>-normalizer-enricher etc.; Service names must be DNS labels.
                    "x-kubernetes-validations": [{
                        "rule": f"size(self.metadata.name) <= {MAX_NAME} && "
                                f"self.metadata.name.matches('{NAME_PATTERN}')",
                        "message": f"metadata.name must be a DNS label of at most {MAX_NAME} characters "
                                   "starting with a letter (the children append suffixes)",
                    }],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": STATUS_SCHEMA,
                    },
                }},
            }],
        },
    }


HEADER = """\
# GENERATED by `python -m zeek_operator.crd` from operator/zeek_operator/spec.py: do not edit by hand.
# The ZeekPipeline custom resource (zeek-pipeline.io/v1alpha1, short name zp). Install it before the operator:
#   kubectl apply --server-side -f operator/crds/zeekpipelines.zeek-pipeline.io.yaml
"""


def render_yaml() -> str:
    import importlib

    yaml: Any = importlib.import_module("yaml")  # PyYAML ships no type stubs

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        def ignore_aliases(self, data: Any) -> bool:
            return True  # no &id001 anchors: every node spelled out, as kubectl and helm users expect

    return HEADER + str(yaml.dump(build_crd(), Dumper=Dumper, sort_keys=False, width=110, allow_unicode=True))


def _constraints(prop: dict[str, Any]) -> str:
    parts = []
    if "enum" in prop:
        parts.append(" / ".join(f"`{v}`" for v in prop["enum"]))
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None or high is not None:
        opener = "(" if prop.get("exclusiveMinimum") else "["
        parts.append(f"{opener}{'' if low is None else low}, {'' if high is None else high}]")
    if prop.get("minItems"):
        parts.append(f"at least {prop['minItems']}")
    if prop.get("x-kubernetes-int-or-string"):
        parts.append("quantity")
    return ", ".join(parts)


def _type(prop: dict[str, Any]) -> str:
    if prop.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(prop.get("type", "object"))
    if kind == "array":
        return f"list of {_type(prop.get('items') or {})}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'])}"
    return kind


def spec_reference() -> str:
    """The spec as a Markdown table (docs/operator.md), straight from the generated schema."""
    import json

    rows = ["| Field | Type | Default | Allowed | Description |", "|---|---|---|---|---|"]

    def walk(schema: dict[str, Any], path: str, required: bool) -> None:
        default = None if schema.get("type") == "object" else schema.get("default")
        shown = "required" if required else ("" if default is None else f"`{json.dumps(default)}`")
        description = str(schema.get("description", "")).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(schema)} | {shown} | {_constraints(schema)} | {description} |")
        for name, prop in (schema.get("properties") or {}).items():
            walk(prop, f"{path}.{name}", name in (schema.get("required") or []))

    for name, prop in spec_schema()["properties"].items():
        walk(prop, f"spec.{name}", name in (spec_schema().get("required") or []))
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the committed CRD file is stale")
    parser.add_argument("--output", type=Path, default=CRD_FILE, help=f"default: {CRD_FILE}")
    parser.add_argument("--reference", action="store_true", help="print the spec reference table (Markdown)")
    args = parser.parse_args(argv)
    if args.reference:
        sys.stdout.write(spec_reference())
        return 0
    text = render_yaml()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is stale: run python -m zeek_operator.crd\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
