"""A second real broker that authorizes (KRaft StandardAuthorizer), for the tests that need ACLs.

The session broker stays untouched: this one is started only by the tests that ask for it. Fixtures and
test helpers talk to it over PLAINTEXT as User:ANONYMOUS, a super user; the service under test logs in over
SASL/PLAIN as `SERVICE_USER` and may do only what `grant_service` allows (everything it needs, minus
DescribeConfigs on topics, which ACL-managed clusters often keep to operators) and what `deny` takes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.infra.kafka import KafkaBroker

SERVICE_USER = "zeek-service"
SERVICE_PASSWORD = "zeek-service-secret"  # noqa: S105 - a throwaway test broker's login
SERVICE_PRINCIPAL = f"User:{SERVICE_USER}"


def service_security_env(broker: KafkaBroker) -> dict[str, str]:
    """Settings that make a service connect as SERVICE_USER (every cluster it uses is this broker)."""
    return {
        "ZEEK_PIPELINE_KAFKA__BROKERS": broker.sasl_bootstrap,
        "ZEEK_PIPELINE_KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_MECHANISM": "PLAIN",
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_USERNAME": SERVICE_USER,
        "ZEEK_PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": SERVICE_PASSWORD,
    }


def _binding(resource: ResourceType, name: str, operation: AclOperation, permission: AclPermissionType,
             ) -> AclBinding:
    return AclBinding(resource, name, ResourcePatternType.LITERAL, SERVICE_PRINCIPAL, "*", operation, permission)


def create_acls(broker: KafkaBroker, bindings: list[AclBinding]) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(30)


def grant_service(broker: KafkaBroker) -> None:
    """Everything on every topic, group and transactional id, and the cluster, except DescribeConfigs on
    topics (a DENY wins over any ALLOW in StandardAuthorizer)."""
    allow, deny = AclPermissionType.ALLOW, AclPermissionType.DENY
    create_acls(broker, [
        _binding(ResourceType.TOPIC, "*", AclOperation.ALL, allow),
        _binding(ResourceType.GROUP, "*", AclOperation.ALL, allow),
        _binding(ResourceType.TRANSACTIONAL_ID, "*", AclOperation.ALL, allow),
        _binding(ResourceType.BROKER, "kafka-cluster", AclOperation.ALL, allow),
        _binding(ResourceType.TOPIC, "*", AclOperation.DESCRIBE_CONFIGS, deny),
    ])


def deny(broker: KafkaBroker, topic: str, operation: AclOperation) -> None:
    """Take `operation` on `topic` away from the service."""
    create_acls(broker, [_binding(ResourceType.TOPIC, topic, operation, AclPermissionType.DENY)])


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of its own (port, data, ACLs) for one test module; the service may do all but DescribeConfigs."""
    broker = KafkaBroker(workdir=Path(tmp_path_factory.mktemp("kafka-acl")), heap="512m",
                         sasl_users={SERVICE_USER: SERVICE_PASSWORD})
    try:
        broker.start()
        grant_service(broker)
        yield broker
    finally:
        broker.stop()
