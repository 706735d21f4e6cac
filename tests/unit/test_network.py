"""IP classification: private and local, IPv4 and IPv6, with the default local networks."""

from __future__ import annotations

import pytest

from zeek_pipeline.core.network import NetworkClassifier
from zeek_pipeline.core.rules import DEFAULT_LOCAL_NETWORKS


@pytest.fixture
def classifier() -> NetworkClassifier:
    return NetworkClassifier(DEFAULT_LOCAL_NETWORKS)


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("10.47.1.100", True), ("172.16.0.1", True), ("172.31.255.255", True), ("172.32.0.1", False),
        ("192.168.1.52", True), ("100.64.0.1", True), ("100.128.0.1", False), ("127.0.0.1", True),
        ("169.254.10.1", True), ("8.8.8.8", False), ("64.225.56.201", False), ("224.0.0.1", False),
        ("::1", True), ("fe80::200:86ff:fe05:80da", True), ("fd00::1", True), ("fc00::1", True),
        ("2001:db8::1", True), ("2607:f8b0:400c:c03::1a", False), ("::ffff:10.1.2.3", True),
        ("::ffff:8.8.8.8", False), ("ff02::1", False),
    ],
)
def test_private_addresses(classifier: NetworkClassifier, address: str, private: bool) -> None:
    info = classifier.lookup(address)
    assert info is not None
    assert info.is_private is private


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("10.0.0.100", True), ("192.168.0.1", True), ("100.64.1.1", True), ("8.8.8.8", False),
        ("198.18.0.1", False),  # private (benchmarking) but not in the default local networks
        ("fe80::1", True), ("fd12:3456::1", True), ("2001:470::1", False), ("::ffff:192.168.1.1", True),
    ],
)
def test_local_addresses_by_default_networks(classifier: NetworkClassifier, address: str, local: bool) -> None:
    info = classifier.lookup(address)
    assert info is not None
    assert info.is_local is local


def test_configured_local_networks_include_public_space() -> None:
    classifier = NetworkClassifier(["64.225.56.0/24", "2001:470:e5bf::/48"])
    assert classifier.lookup("64.225.56.201").is_local  # type: ignore[union-attr]
    assert classifier.lookup("2001:470:e5bf:dead::1").is_local  # type: ignore[union-attr]
    assert not classifier.lookup("10.0.0.1").is_local  # type: ignore[union-attr]


def test_packed_bytes_are_network_order() -> None:
    classifier = NetworkClassifier([])
    assert classifier.lookup("1.2.3.4").packed == bytes([1, 2, 3, 4])  # type: ignore[union-attr]
    assert len(classifier.lookup("::1").packed) == 16  # type: ignore[union-attr]


@pytest.mark.parametrize("address", ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4 ", "example.com",
                                     "1.2.3.4/24", "fe80::1%eth0", "::g", "1.2.3.4\x00"])
def test_not_an_address_is_none(classifier: NetworkClassifier, address: str) -> None:
    assert classifier.lookup(address) is None


def test_cache_is_bounded() -> None:
    classifier = NetworkClassifier([], cache_size=10)
    for i in range(100):
        assert classifier.lookup(f"10.0.0.{i}") is not None
    assert len(classifier.known) <= 10
