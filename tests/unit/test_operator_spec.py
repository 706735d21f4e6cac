"""The ZeekPipeline spec model and the CRD generated from it: defaults, validation messages, drift."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeek_operator import crd
from zeek_operator.spec import PipelineSpec, SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"kafka": {"bootstrapServers": ["redpanda.redpanda.svc.cluster.local:9092"]}}


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """MINIMAL (or base) with one dotted path set."""
    spec = copy.deepcopy(base or MINIMAL)
    node = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return spec


def problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    return caught.value.problems


def apply_crd_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's structural defaulting does: fill absent properties that have a default."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if name in out:
            out[name] = apply_crd_defaults(prop, out[name])
    return out


def spec_schema() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "operator/crds/zeekpipelines.zeek-pipeline.io.yaml").read_text())
    schema: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_minimal_spec_gets_working_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.kafka.topics.raw == "zeek-raw" and spec.kafka.topics.normalized == "zeek-normalized"
    assert spec.kafka.consumer_groups.normalizer == "zeek-normalizer-enricher"
    assert spec.normalizer.replicas == 1 and spec.writer.replicas == 1
    assert spec.normalizer.processing_guarantee == "exactly_once"
    assert spec.writer.storage.type == "pvc" and spec.writer.storage.pvc.size == "10Gi"
    assert spec.writer.flush.interval_seconds == 60 and spec.health.enabled
    assert spec.normalizer.resources.limits == {"cpu": "1", "memory": "1Gi"}


def test_committed_crd_is_generated_from_the_models() -> None:
    assert crd.main(["--check"]) == 0, "run: python -m zeek_operator.crd"


def test_crd_defaults_equal_the_model_defaults() -> None:
    # A minimal resource defaulted by the API server must mean exactly what the operator assumes.
    defaulted = apply_crd_defaults(spec_schema(), MINIMAL)
    expected = PipelineSpec.model_validate(MINIMAL).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert defaulted == expected


def test_crd_schema_names_every_model_field_with_a_description() -> None:
    def walk(schema: dict[str, Any], path: str) -> list[str]:
        missing = [] if schema.get("description") or path == "spec" else [path]
        for name, prop in (schema.get("properties") or {}).items():
            missing += walk(prop, f"{path}.{name}")
        return missing

    assert walk(spec_schema(), "spec") == []


def test_crd_has_status_subresource_short_name_and_printer_columns() -> None:
    document = crd.build_crd()
    version = document["spec"]["versions"][0]
    assert document["spec"]["names"]["shortNames"] == ["zp"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready", "Normalizers", "Writers", "Lag", "Reason", "Compacted", "Age"]


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (with_("writer.flush", {"bufferMB": 0, "intervalSeconds": 0, "eventCount": 0}), "spec.writer.flush",
         "at least one of"),
        (with_("writer.storage", {"type": "s3"}), "spec.writer.storage", "needs s3"),
        (with_("writer.storage", {"type": "nfs"}), "spec.writer.storage.type", "'pvc' or 's3'"),
        (with_("kafka.security", {"protocol": "SASL_SSL"}), "spec.kafka.security", "needs sasl"),
        (with_("kafka.security", {"protocol": "PLAINTEXT", "sasl": {"secretRef": {"name": "k"}}}),
         "spec.kafka.security", "SASL_PLAINTEXT or SASL_SSL"),
        (with_("kafka.librdkafka", {"sasl.password": "hunter2"}), "spec.kafka", "must not carry secrets"),
        (with_("normalizer.autoscaling", {"minReplicas": 5, "maxReplicas": 2}), "spec.normalizer.autoscaling",
         "must not exceed"),
        (with_("writer.resources", {"limits": {"memory": "1GB"}}), "spec.writer.resources.limits.memory",
         "not a Kubernetes quantity"),
        (with_("normalizer.replicas", -1), "spec.normalizer.replicas", "greater than or equal to 0"),
        (with_("kafka.bootstrapServers", ["no-port"]), "spec.kafka.bootstrapServers[0]", "pattern"),
        (with_("writer.bogus", 1), "spec.writer.bogus", "Extra inputs"),
        (with_("writer.replicas", 2), "spec.writer", "accessModes to [ReadWriteMany]"),
        (with_("writer.autoscaling", {"enabled": True, "maxReplicas": 3}), "spec.writer", "Multi-Attach"),
        ({}, "spec.kafka", "Field required"),
    ],
)
def test_invalid_spec_names_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    found = problems(raw)
    assert any(path == field and words in message for path, message in found), found


@pytest.mark.parametrize("writer", [
    {"replicas": 3, "storage": {"pvc": {"accessModes": ["ReadWriteMany"]}}},
    {"replicas": 3, "storage": {"type": "s3", "s3": {"bucket": "lake"}}},
    {"replicas": 1, "autoscaling": {"enabled": True, "maxReplicas": 1}},
    {"replicas": 0},
])
def test_several_writers_are_fine_where_every_writer_can_mount_the_output(writer: dict[str, Any]) -> None:
    assert parse_spec(with_("writer", writer)).writer.replicas == writer["replicas"]


def test_inline_normalization_and_configmap_ref_are_exclusive() -> None:
    raw = with_("normalization", {"rules": {"dns": {}}, "configMapRef": {"name": "rules"}})
    assert problems(raw)[0] == ("spec.normalization", "use either inline rules/schema or configMapRef, not both")


def test_example_resources_are_valid_specs() -> None:
    for path in [ROOT / "zeekpipeline.yaml", *sorted((ROOT / "config/examples").glob("*.yaml"))]:
        if not path.exists():
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "ZeekPipeline":
                parse_spec(document["spec"])


def test_docs_spec_reference_is_current() -> None:
    text = (ROOT / "docs/operator.md").read_text()
    start, end = "<!-- spec-reference:start -->\n", "<!-- spec-reference:end -->"
    assert text[text.index(start) + len(start):text.index(end)] == crd.spec_reference(), \
        "regenerate: python -m zeek_operator.crd --reference"
