"""spec.enrich.geoip: the operator mounts the MaxMind DB files from one Secret, ConfigMap or claim into the
normalizer-enricher at a fixed path, points the config at them, and reports a missing or wrong source on
the resource; the rendered config opens the real databases the tests build."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.infra.geoip import write_asn_db, write_city_db
from tests.unit.test_operator_resources import build, by_kind, container, load_rendered
from tests.unit.test_operator_spec import with_
from zeek_operator import render
from zeek_operator.reconcile import PROBLEM_REASONS, geoip_problem
from zeek_operator.spec import SpecError, parse_spec
from zeek_pipeline.core.rules import GeoIpSettings
from zeek_pipeline.core.transform import Transformer

NAMESPACE = "zeek"


def geoip(**fields: Any) -> dict[str, Any]:
    return with_("enrich.geoip", fields)


def deployments(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return by_kind(build(raw)[3], "Deployment")


def geoip_mount(deployment: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    mounts = [m for m in container(deployment)["volumeMounts"] if m["name"] == "geoip"]
    volumes = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "geoip"]
    return (mounts[0] if mounts else None), (volumes[0] if volumes else None)


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        ({"secretName": "geolite2"},
         {"secret": {"secretName": "geolite2", "defaultMode": 0o440, "items": [
             {"key": "GeoLite2-City.mmdb", "path": "GeoLite2-City.mmdb"},
             {"key": "GeoLite2-ASN.mmdb", "path": "GeoLite2-ASN.mmdb"}]}}),
        ({"configMapName": "geolite2", "cityFile": ""},
         {"configMap": {"name": "geolite2", "defaultMode": 0o440, "items": [
             {"key": "GeoLite2-ASN.mmdb", "path": "GeoLite2-ASN.mmdb"}]}}),
        ({"claimName": "geoip-data", "cityFile": "maxmind/GeoIP2-City.mmdb"},
         {"persistentVolumeClaim": {"claimName": "geoip-data", "readOnly": True}}),
    ],
    ids=["secret", "configmap", "claim"],
)
def test_the_source_is_mounted_read_only_into_the_normalizer_only(source: dict[str, Any],
                                                                 volume: dict[str, Any]) -> None:
    children = deployments(geoip(**source))
    mount, found = geoip_mount(children["lab-normalizer-enricher"])
    assert mount == {"name": "geoip", "mountPath": render.GEOIP_DIR, "readOnly": True}
    assert found == {"name": "geoip", **volume}
    for other in ("lab-parquet-writer", "lab-health"):
        assert geoip_mount(children[other]) == (None, None)


def test_without_geoip_nothing_is_mounted_and_the_config_has_no_databases(tmp_path: Path) -> None:
    _, files, _, children = build()
    assert geoip_mount(by_kind(children, "Deployment")["lab-normalizer-enricher"]) == (None, None)
    assert not load_rendered(files, tmp_path).enrich.geoip.enabled


def test_the_rendered_config_points_at_the_mounted_files(tmp_path: Path) -> None:
    _, files, _, _ = build(geoip(claimName="geoip-data", cityFile="maxmind/GeoIP2-City.mmdb", asnFile="",
                                 cacheSize=5000))
    settings = load_rendered(files, tmp_path).enrich.geoip
    assert settings == GeoIpSettings(city_db=f"{render.GEOIP_DIR}/maxmind/GeoIP2-City.mmdb", asn_db=None,
                                     cache_size=5000)


def test_the_rendered_config_opens_real_databases_at_the_mount_path(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's view: the files at GEOIP_DIR (here a temporary directory standing in for the mount)."""
    mounted = tmp_path / "mount"
    mounted.mkdir()
    write_city_db(mounted / "GeoLite2-City.mmdb")
    write_asn_db(mounted / "GeoLite2-ASN.mmdb")
    monkeypatch.setattr(render, "GEOIP_DIR", str(mounted))
    _, files, _, _ = build(geoip(secretName="geolite2"))
    (tmp_path / "config").mkdir()
    settings = load_rendered(files, tmp_path / "config")
    transformer = Transformer.from_config_dir(tmp_path / "config", enrich=settings.enrich)
    assert transformer.enrich_settings.geoip.enabled


def test_every_container_keeps_its_last_log_line_as_termination_message() -> None:
    for deployment in deployments(geoip(secretName="geolite2")).values():
        assert container(deployment)["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "set exactly one of secretName, configMapName, claimName"),
        ({"secretName": "a", "claimName": "b"}, "set exactly one of secretName, configMapName, claimName"),
        ({"secretName": "a", "cityFile": "", "asnFile": ""}, "name at least one of cityFile, asnFile"),
        ({"secretName": "a", "cityFile": "dir/City.mmdb"}, "a Secret or ConfigMap key has no '/'"),
        ({"claimName": "a", "cityFile": "../etc/City.mmdb"}, "must stay inside the volume"),
        ({"claimName": "a", "cityFile": "/abs/City.mmdb"}, "String should match pattern"),
        ({"claimName": "a", "cacheSize": -1}, "greater than or equal to 0"),
    ],
)
def test_an_invalid_geoip_spec_names_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(geoip(**fields))
    assert info.value.field.startswith("spec.enrich.geoip")
    assert message in str(info.value)


# ---------------------------------------------------------------------------------- references on the API


class Objects:
    """The one Kube call geoip_problem makes: get(kind, namespace, name) of a Secret or ConfigMap."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert namespace == NAMESPACE
        return self.objects.get((kind, name))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_asn_db(tmp_path_factory.mktemp("geoip") / "asn.mmdb").read_bytes()


def test_a_secret_and_a_configmap_holding_real_databases_pass(real_db: bytes) -> None:
    kube: Any = Objects({("Secret", "geo"): {"data": {"GeoLite2-City.mmdb": b64(real_db),
                                                      "GeoLite2-ASN.mmdb": b64(real_db)}},
                         ("ConfigMap", "geo"): {"binaryData": {"GeoLite2-ASN.mmdb": b64(real_db)}}})
    assert geoip_problem(kube, NAMESPACE, parse_spec(geoip(secretName="geo"))) is None
    assert geoip_problem(kube, NAMESPACE, parse_spec(geoip(configMapName="geo", cityFile=""))) is None
    assert geoip_problem(kube, NAMESPACE, parse_spec(geoip(claimName="geo"))) is None  # seen by the pod only


def test_a_missing_source_key_or_a_file_that_is_no_database_is_a_degraded_reason(real_db: bytes) -> None:
    kube: Any = Objects({("Secret", "geo"): {"data": {"GeoLite2-City.mmdb": b64(b"<html>Not Found</html>"),
                                                      "GeoLite2-ASN.mmdb": b64(real_db)}},
                         ("ConfigMap", "geo"): {"binaryData": {"GeoLite2-City.mmdb": b64(real_db)}}})
    assert geoip_problem(kube, NAMESPACE, parse_spec(geoip(secretName="other"))) == (
        "MissingSecret", "spec.enrich.geoip.secretName: Secret 'other' not found in namespace zeek")
    assert geoip_problem(kube, NAMESPACE, parse_spec(geoip(configMapName="geo"))) == (
        "MissingConfigMap", "spec.enrich.geoip.configMapName: ConfigMap 'geo' has no binaryData key "
                            "'GeoLite2-ASN.mmdb'")
    problem = geoip_problem(kube, NAMESPACE, parse_spec(geoip(secretName="geo")))
    assert problem == ("InvalidGeoIP", "spec.enrich.geoip.secretName: key 'GeoLite2-City.mmdb' of Secret 'geo' "
                                       "is not a MaxMind DB file (no MaxMind metadata section)")
    assert problem[0] in PROBLEM_REASONS  # kept on the resource until a reconcile clears it
