"""Small MaxMind DB files (City and ASN) built by the tests themselves with `mmdb-writer`; nothing is downloaded.

The records have MaxMind's own shape (GeoLite2-City: country.iso_code, city.names.en, location.latitude/
longitude; GeoLite2-ASN: autonomous_system_number as uint32, autonomous_system_organization), so the reader
sees what it sees in production. `KNOWN` pins a few public networks to fixed answers; `world=True` also
covers the rest of the public address space with synthetic answers derived from the first octet, so every
public address of the real Zeek corpus gets one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet


@dataclass(frozen=True)
class Place:
    country: str
    city: str
    latitude: float
    longitude: float
    asn: int
    as_org: str


KNOWN: dict[str, Place] = {
    "8.8.8.0/24": Place("US", "Mountain View", 37.4056, -122.0775, 15169, "GOOGLE"),
    "1.1.1.0/24": Place("AU", "Sydney", -33.8688, 151.2093, 13335, "CLOUDFLARENET"),
    "64.225.56.0/24": Place("US", "Santa Clara", 37.3541, -121.9552, 14061, "DIGITALOCEAN-ASN"),
    "167.94.138.0/24": Place("US", "Ann Arbor", 42.2808, -83.743, 398324, "CENSYS-ARIN-01"),
    "2001:4860::/32": Place("US", "Mountain View", 37.4056, -122.0775, 15169, "GOOGLE"),
}
_COUNTRIES = ("DE", "FR", "JP", "BR", "IN", "NL", "CA", "GB", "ZA", "SE")


def world_place(first_octet: int) -> Place:
    """The synthetic answer for any other public IPv4 address, by its first octet (IPv6: 0)."""
    country = _COUNTRIES[first_octet % len(_COUNTRIES)]
    return Place(country, f"City-{first_octet}", float(first_octet % 90), float(first_octet % 180) - 90.0,
                 64_512 + first_octet, f"AS-ORG-{first_octet}")


def _networks(world: bool) -> list[tuple[IPSet, Place]]:
    known = IPSet(KNOWN)
    out = [(IPSet([cidr]), place) for cidr, place in KNOWN.items()]
    if world:
        for octet in range(1, 224):
            rest = IPSet([f"{octet}.0.0.0/8"]) - known
            if rest:
                out.append((rest, world_place(octet)))
        out.append((IPSet(["2000::/3"]) - known, world_place(0)))
    return out


def _writer(database_type: str) -> MMDBWriter:
    return MMDBWriter(ip_version=6, database_type=database_type, languages=["en"],
                      description={"en": f"zeek-pipeline test {database_type}"}, ipv4_compatible=True)


def _city(place: Place) -> dict[str, object]:
    return {
        "country": {"iso_code": place.country, "names": {"en": place.country}},
        "city": {"names": {"en": place.city}},
        "location": {"latitude": MmdbF64(place.latitude), "longitude": MmdbF64(place.longitude)},
    }


def _asn(place: Place) -> dict[str, object]:
    return {"autonomous_system_number": MmdbU32(place.asn), "autonomous_system_organization": place.as_org}


def write_city_db(path: Path, *, world: bool = False, database_type: str = "GeoLite2-City",
                  extra: Mapping[str, Place] | None = None) -> Path:
    writer = _writer(database_type)
    for network, place in _networks(world) + [(IPSet([c]), p) for c, p in (extra or {}).items()]:
        writer.insert_network(network, _city(place))
    writer.to_db_file(str(path))
    return path


def write_asn_db(path: Path, *, world: bool = False, database_type: str = "GeoLite2-ASN") -> Path:
    writer = _writer(database_type)
    for network, place in _networks(world):
        writer.insert_network(network, _asn(place))
    writer.to_db_file(str(path))
    return path


_LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")  # GeoLite2's eight


def _names(text: str) -> dict[str, str]:
    return {language: f"{text} ({language})" if language != "en" else text for language in _LANGUAGES}


def _full_city(index: int) -> dict[str, object]:
    """A record the size and shape of a GeoLite2-City one (names in eight languages, continent, subdivisions)."""
    country = _COUNTRIES[index % len(_COUNTRIES)]
    return {
        "city": {"geoname_id": MmdbU32(5_000_000 + index), "names": _names(f"City-{index}")},
        "continent": {"code": "EU", "geoname_id": MmdbU32(6_255_148), "names": _names("Europe")},
        "country": {"geoname_id": MmdbU32(2_921_044 + index % 10), "iso_code": country, "names": _names(country)},
        "location": {"accuracy_radius": 20 + index % 200, "latitude": MmdbF64((index % 180) - 90.0 + 0.5),
                     "longitude": MmdbF64((index % 360) - 180.0 + 0.25), "time_zone": "Europe/Berlin"},
        "postal": {"code": f"{10000 + index}"},
        "registered_country": {"geoname_id": MmdbU32(2_921_044), "iso_code": country, "names": _names(country)},
        "subdivisions": [{"geoname_id": MmdbU32(2_951_839 + index), "iso_code": "BY",
                          "names": _names(f"Region-{index % 50}")}],
    }


def write_realistic_dbs(folder: Path, *, prefix: int = 14, cities: int = 2000) -> tuple[Path, Path]:
    """City and ASN databases for `make bench`: every public IPv4 /`prefix` (about 14,000 networks at /14) and
    2000::/3 in /16s, answered by `cities` distinct GeoLite2-sized records, so tree depth and record decoding
    cost about what the real databases cost (the real City database has more networks, the same record size)."""
    city_writer, asn_writer = _writer("GeoLite2-City"), _writer("GeoLite2-ASN")
    step = 1 << (16 - prefix) if prefix <= 16 else 1
    index = 0
    private = IPSet(["10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                     "192.168.0.0/16"])
    for first in range(1, 224):
        for second in range(0, 256, step):
            network = IPSet([f"{first}.{second}.0.0/{prefix}"]) - private
            if not network:
                continue
            index += 1
            city_writer.insert_network(network, _full_city(index % cities))
            asn_writer.insert_network(network, {"autonomous_system_number": MmdbU32(1000 + index % 60_000),
                                                "autonomous_system_organization": f"Example Networks {index % 60_000}"})
    for block in range(0x2000, 0x4000, 0x20):
        network = IPSet([f"{block:x}::/11"])
        index += 1
        city_writer.insert_network(network, _full_city(index % cities))
        asn_writer.insert_network(network, {"autonomous_system_number": MmdbU32(1000 + index % 60_000),
                                            "autonomous_system_organization": f"Example Networks {index % 60_000}"})
    city, asn = folder / "GeoLite2-City.mmdb", folder / "GeoLite2-ASN.mmdb"
    city_writer.to_db_file(str(city))
    asn_writer.to_db_file(str(asn))
    return city, asn
