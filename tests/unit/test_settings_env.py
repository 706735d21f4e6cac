"""The environment overlay of config.json (pydantic-settings: ZEEK_PIPELINE_ + key path joined by `__`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeek_pipeline.settings import Settings, SettingsError, env_name, load_settings, settings_from

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.json"

# What Kubernetes injects into every pod started after a Service named zeek-pipeline-health (and one named
# zeek-pipeline) exists in the namespace, unless the pod says enableServiceLinks: false.
SERVICE_LINKS = {
    "ZEEK_PIPELINE_HEALTH_SERVICE_HOST": "10.0.0.5",
    "ZEEK_PIPELINE_HEALTH_SERVICE_PORT": "8080",
    "ZEEK_PIPELINE_HEALTH_SERVICE_PORT_HTTP": "8080",
    "ZEEK_PIPELINE_HEALTH_PORT": "tcp://10.0.0.5:8080",
    "ZEEK_PIPELINE_HEALTH_PORT_8080_TCP": "tcp://10.0.0.5:8080",
    "ZEEK_PIPELINE_HEALTH_PORT_8080_TCP_PROTO": "tcp",
    "ZEEK_PIPELINE_HEALTH_PORT_8080_TCP_PORT": "8080",
    "ZEEK_PIPELINE_HEALTH_PORT_8080_TCP_ADDR": "10.0.0.5",
    "ZEEK_PIPELINE_METRICS_PORT": "tcp://10.0.0.6:9090",
    "ZEEK_PIPELINE_SERVICE_HOST": "10.0.0.7",
    "ZEEK_PIPELINE_PORT": "tcp://10.0.0.7:80",
}


def test_service_link_variables_do_not_break_or_change_the_settings() -> None:
    plain = load_settings(CONFIG, environ={})
    linked = load_settings(CONFIG, environ=SERVICE_LINKS)
    assert linked == plain
    assert linked.health.port == 8080


def test_nested_keys_are_joined_by_a_double_underscore() -> None:
    settings = load_settings(CONFIG, environ={
        "ZEEK_PIPELINE_KAFKA__BROKERS": "b1:9092, b2:9092",
        "ZEEK_PIPELINE_OUTPUT__PARQUET__BASE_PATH": "s3://lake/zeek",
        "ZEEK_PIPELINE_HEALTH__PORT": "9000",
        "ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS": "2.5",
        "ZEEK_PIPELINE_INSTANCE_ID": "n-0",
        **SERVICE_LINKS,
    })
    assert settings.kafka.brokers == ["b1:9092", "b2:9092"]
    assert settings.output.parquet.base_path == "s3://lake/zeek"
    assert settings.health.port == 9000
    assert settings.write.flush_interval_seconds == 2.5
    assert settings.instance_id == "n-0"


def test_one_variable_overrides_one_key_and_keeps_the_rest_of_the_file_section() -> None:
    base = load_settings(CONFIG, environ={})
    settings = load_settings(CONFIG, environ={"ZEEK_PIPELINE_OUTPUT__KAFKA__TOPIC": "other"})
    assert settings.output.kafka.topic == "other"
    assert settings.output.kafka.dlq_topic == base.output.kafka.dlq_topic
    assert settings.output.parquet == base.output.parquet


def test_text_stays_text_and_json_objects_and_lists_parse() -> None:
    settings = settings_from({}, {
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": "123456",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_USERNAME": "true",
        "ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": '{"socket.keepalive.enable": true}',
        "ZEEK_PIPELINE_ENRICH__LOCAL_NETWORKS": '["10.0.0.0/8", "fd00::/8"]',
    })
    assert settings.kafka.security.sasl_password is not None
    assert settings.kafka.security.sasl_password.get_secret_value() == "123456"
    assert settings.kafka.security.sasl_username == "true"
    assert settings.kafka.librdkafka == {"socket.keepalive.enable": True}
    assert settings.enrich.local_networks == ["10.0.0.0/8", "fd00::/8"]


def test_the_old_single_underscore_names_are_ignored() -> None:
    assert settings_from({}, {"ZEEK_PIPELINE_KAFKA_BROKERS": "old:9092"}).kafka.brokers == ["localhost:9092"]


def test_a_misspelt_nested_key_is_an_error_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"kafka\.broker: Extra inputs are not permitted"):
        settings_from({}, {"ZEEK_PIPELINE_KAFKA__BROKER": "b1:9092"})


def test_a_bad_value_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"health\.port"):
        settings_from({}, {"ZEEK_PIPELINE_HEALTH__PORT": "tcp://10.0.0.5:8080"})
    with pytest.raises(SettingsError, match="environment"):
        settings_from({}, {"ZEEK_PIPELINE_KAFKA__LIBRDKAFKA": "not json"})


def test_validating_data_never_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator validates the config.json it renders; its own environment must not change the verdict."""
    monkeypatch.setenv("ZEEK_PIPELINE_HEALTH__PORT", "7")
    assert Settings.model_validate({}).health.port == 8080
    assert Settings().health.port == 8080
    assert settings_from({}).health.port == 7  # the services' loader does read it


def test_env_name_follows_the_loader() -> None:
    name = env_name("output", "parquet", "s3", "secret_key")
    assert name == "ZEEK_PIPELINE_OUTPUT__PARQUET__S3__SECRET_KEY"
    assert settings_from({}, {name: "s"}).output.parquet.s3.secret_key is not None
