"""GeoIP/ASN lookups for the enriched layer: MaxMind DB files read with `maxminddb`, answers cached per address.

Optional (`enrich.geoip` in config.json, off while no database is set). A City database (GeoLite2/GeoIP2
City, or Country: no city or location then) gives the country ISO code, the English city name and the
latitude/longitude; an ASN database (GeoLite2/GeoIP2 ASN, or ISP) gives the autonomous system number and
organisation. The enricher asks only for public, non-local addresses.

The databases are opened, checked and probed once at start: a missing, unreadable or corrupt file, or the
two paths swapped, raises `GeoIpError` (a ConfigError) with one line naming the key and the file, which the
services print before exiting with the config-error code. Answers are cached in a bounded LRU keyed by the
address string (a Zeek sensor sees the same addresses over and over; a scan of random ones only evicts).
A lookup that fails at run time (a value the reader refuses) gives no fields, never an exception.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import maxminddb

from zeek_pipeline.core.rules import ConfigError, GeoIpSettings

# The enriched keys, per side, in the order of `GeoAnswer`.
GEO_FIELDS: tuple[str, ...] = ("geo_country", "geo_city", "geo_lat", "geo_lon", "asn", "as_org")
SRC_GEO_KEYS: tuple[str, ...] = tuple(f"src_{name}" for name in GEO_FIELDS)
DST_GEO_KEYS: tuple[str, ...] = tuple(f"dst_{name}" for name in GEO_FIELDS)

# (country ISO code, city, latitude, longitude, AS number, AS organisation); None where unknown
GeoAnswer = tuple[str | None, str | None, float | None, float | None, int | None, str | None]
NO_ANSWER: GeoAnswer = (None, None, None, None, None, None)

_PROBES = ("1.1.1.1", "8.8.8.8", "2001:4860:4860::8888")  # any answer (or none) proves the tree is readable


class GeoIpError(ConfigError):
    """A GeoIP database cannot be used: the message is one line naming the config key and the file."""


def _open(path: str, key: str, wrong_kind: str) -> maxminddb.Reader:
    """Open, check the kind and probe one database; `wrong_kind` is a word its database_type must not hold."""
    where = f"enrich.geoip.{key}: {path}"
    if not os.path.isfile(path):
        reason = "is a directory, not a MaxMind DB file" if os.path.isdir(path) else "file not found"
        raise GeoIpError(f"{where}: {reason}")
    try:
        reader = maxminddb.open_database(path)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIpError(f"{where}: not a readable MaxMind DB file ({type(exc).__name__}: {exc})") from None
    kind = str(reader.metadata().database_type)
    if wrong_kind.lower() in kind.lower():
        reader.close()
        other = "asn_db" if key == "city_db" else "city_db"
        raise GeoIpError(f"{where}: is a {kind} database; it belongs in enrich.geoip.{other}")
    try:
        for address in _PROBES:
            reader.get(address)
    except ValueError:
        pass  # an IPv4-only database refuses IPv6 addresses: that is not corruption
    except (maxminddb.InvalidDatabaseError, OSError) as exc:
        reader.close()
        raise GeoIpError(f"{where}: corrupt MaxMind DB ({type(exc).__name__}: {exc})") from None
    return reader


def _text(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


class GeoIpLookup:
    """Address string -> `GeoAnswer`, from the configured databases, cached (LRU, `cache_size` addresses)."""

    __slots__ = ("_asn", "_city", "database_types", "lookup")

    def __init__(self, settings: GeoIpSettings) -> None:
        self._city = _open(settings.city_db, "city_db", "ASN") if settings.city_db else None
        try:
            self._asn = _open(settings.asn_db, "asn_db", "City") if settings.asn_db else None
        except GeoIpError:
            if self._city is not None:
                self._city.close()
            raise
        self.database_types = tuple(
            str(reader.metadata().database_type) for reader in (self._city, self._asn) if reader is not None)
        lookup: Callable[[str], GeoAnswer] = self._answer
        if settings.cache_size:
            lookup = functools.lru_cache(maxsize=settings.cache_size)(self._answer)
        self.lookup = lookup

    def cache_len(self) -> int:
        """Addresses currently cached (0 when caching is off)."""
        info = getattr(self.lookup, "cache_info", None)
        return int(info().currsize) if info is not None else 0

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()

    def _answer(self, address: str) -> GeoAnswer:
        country, city, lat, lon = _place(self._city, address) if self._city is not None else (None,) * 4
        asn, org = _network(self._asn, address) if self._asn is not None else (None, None)
        return (country, city, lat, lon, asn, org)


def _record(reader: maxminddb.Reader, address: str) -> dict[str, Any] | None:
    try:
        record = reader.get(address)
    except (ValueError, maxminddb.InvalidDatabaseError):
        return None  # an address the database cannot take (IPv6 in an IPv4-only one), or bad data
    return record if isinstance(record, dict) else None


def _place(reader: maxminddb.Reader, address: str) -> tuple[str | None, str | None, float | None, float | None]:
    record = _record(reader, address)
    if record is None:
        return None, None, None, None
    country = record.get("country") or record.get("registered_country")  # anycast: registered only
    city = record.get("city")
    names = city.get("names") if isinstance(city, dict) else None
    location = record.get("location")
    if not isinstance(location, dict):
        location = {}
    return (_text(country.get("iso_code")) if isinstance(country, dict) else None,
            _text(names.get("en")) if isinstance(names, dict) else None,
            _number(location.get("latitude")), _number(location.get("longitude")))


def _network(reader: maxminddb.Reader, address: str) -> tuple[int | None, str | None]:
    record = _record(reader, address)
    if record is None:
        return None, None
    number = record.get("autonomous_system_number")
    return (number if type(number) is int and 0 <= number < 1 << 32 else None,
            _text(record.get("autonomous_system_organization")))
