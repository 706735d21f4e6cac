"""A Kafka TLS Secret that librdkafka cannot use is a status field (Degraded InvalidSecret, lagError), never an
exception out of the operator's timer. The clients are real: librdkafka refuses them at construction, before
any connection, so no broker is needed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zeek_operator.autoscale import LagReader
from zeek_operator.pem import pem_problem
from zeek_operator.reconcile import _read_lag, read_secrets
from zeek_operator.spec import PipelineSpec, parse_spec

NAMESPACE = "zeek"


class SecretsOnly:
    """The one Kube call the lag tick makes before building clients."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        assert namespace == NAMESPACE
        return self.secrets.get(name)


def tls_spec(**tls: Any) -> PipelineSpec:
    return parse_spec({"kafka": {"bootstrapServers": ["127.0.0.1:1"],
                                 "security": {"protocol": "SSL", "tls": {"secretRef": {"name": "kafka-tls"}, **tls}}}})


def real_ca() -> tuple[str, str]:
    """A self-signed CA certificate and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zeek test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_a_ca_that_is_not_pem_is_a_degraded_reason_and_a_lag_error_not_a_traceback() -> None:
    kube: Any = SecretsOnly({"kafka-tls": {"ca.crt": "MIIB this was pasted without its armour"}})
    spec = tls_spec()
    _, problem = read_secrets(kube, NAMESPACE, spec)
    assert problem == ("InvalidSecret", "spec.kafka.security.tls.secretRef: key 'ca.crt' of Secret 'kafka-tls' is "
                                        "not in PEM format (no -----BEGIN …----- / -----END …----- block)")
    lags, extra, events = _read_lag(kube, NAMESPACE, spec, LagReader)  # the real client factory
    assert lags == {} and events == []
    assert extra["lagError"] == f"not read: {problem[1]}"


def test_a_ca_librdkafka_refuses_although_pem_shaped_is_a_lag_error() -> None:
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    kube: Any = SecretsOnly({"kafka-tls": {"ca.crt": broken}})
    spec = tls_spec()
    assert read_secrets(kube, NAMESPACE, spec)[1] is None  # the shape is right; only librdkafka can tell
    lags, extra, _ = _read_lag(kube, NAMESPACE, spec, LagReader)
    assert lags == {}
    assert extra["lagError"].startswith("cannot create a Kafka client from the pipeline's settings: ")
    assert "ssl.ca.pem" in extra["lagError"]


def test_a_real_ca_and_client_certificate_pass_and_a_key_that_is_not_pem_is_named() -> None:
    cert, key = real_ca()
    assert pem_problem(cert, "CERTIFICATE") is None and pem_problem(key, "PRIVATE KEY") is None
    spec = tls_spec(certKey="tls.crt", keyKey="tls.key")
    good: Any = SecretsOnly({"kafka-tls": {"ca.crt": cert, "tls.crt": cert, "tls.key": key}})
    assert read_secrets(good, NAMESPACE, spec)[1] is None
    swapped: Any = SecretsOnly({"kafka-tls": {"ca.crt": cert, "tls.crt": cert, "tls.key": cert}})
    assert read_secrets(swapped, NAMESPACE, spec)[1] == (
        "InvalidSecret", "spec.kafka.security.tls.secretRef: key 'tls.key' of Secret 'kafka-tls' holds no "
                         "PRIVATE KEY PEM block")
    assert "body is not base64" in (pem_problem("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----",
                                                "CERTIFICATE") or "")
