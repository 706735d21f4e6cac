"""Models of config/normalization.json (per log type promotions) and of the enrich settings.

normalization.json keeps the seed's shape, one entry per Zeek log type:

    {"dns": {"source": "zeek_dns",
             "promote": {"ts": "event_time", "uid": "flow_id", "id.orig_h": "src_ip", ...},
             "static": {"event_type": "dns", "event_class": "protocol"},
             "enrich": {"time": true, "network": true}}}

and adds a few optional keys per type (all have defaults):
- "key": normalized fields tried in order for the Kafka message key (default ["flow_id"]);
- "default_protocol": the transport a log type implies when its records carry no `proto` (http -> tcp),
  used for the service lookup and the Community ID only (it is not written to `normalized`);
- "service": the service a log type implies (dns.log -> "dns"), used when the record has no service field;
- "service_field": the raw field holding Zeek's own service (conn's `service`);
- "zeek_locality": whether the record's `local_orig`/`local_resp` give the locality of src/dst (false for
  files, whose `local_orig` describes the file's sender, not the connection's originator).

Each target has one raw source (the Parquet writer stores a promoted field once, under its target name).
A promotion of a Zeek `time` field (ts -> event_time) converts it to ms since the epoch. A static string
may contain `{log_type}`. The entry named "default" applies to every log type the file does not list
(unknown types are never dropped: they get the common promotions of ts, uid, id.* and proto); without
it, `DEFAULT_RULE` below applies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from zeek_pipeline.core.config_file import config_file, read_json

# The enriched layer's keys (fixed by the core contract); normalized names must not collide with them
# because the Parquet writer stores both layers as columns of one table.
ENRICHED_KEYS = frozenset({
    "event_year", "event_month", "event_day", "event_hour", "event_weekday",
    "src_ip_is_private", "dst_ip_is_private", "src_is_local", "dst_is_local",
    "direction", "service", "community_id",
    # GeoIP/ASN (enrich.geoip): present only when a database answers for a public, non-local address
    "src_geo_country", "src_geo_city", "src_geo_lat", "src_geo_lon", "src_asn", "src_as_org",
    "dst_geo_country", "dst_geo_city", "dst_geo_lat", "dst_geo_lon", "dst_asn", "dst_as_org",
})
# Normalized keys the transformer sets itself; rules may not promote or set them.
RESERVED_NORMALIZED = frozenset({"ingest_time", "zeek_write_ts"})
DEFAULT_RULE_NAME = "default"
TRANSPORTS = ("tcp", "udp", "icmp", "sctp")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

COMMON_PROMOTIONS: dict[str, str] = {
    "ts": "event_time",
    "uid": "flow_id",
    "id.orig_h": "src_ip",
    "id.resp_h": "dst_ip",
    "id.orig_p": "src_port",
    "id.resp_p": "dst_port",
    "proto": "protocol",
}

DEFAULT_LOCAL_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
    "127.0.0.0/8", "::1/128",  # loopback
    "169.254.0.0/16", "fe80::/10",  # link-local
    "fc00::/7",  # IPv6 unique local addresses
)

# "proto/port" of the responder -> service name, Zeek's analyzer names where Zeek has one.
DEFAULT_SERVICE_PORTS: dict[str, str] = {
    "tcp/20": "ftp-data", "tcp/21": "ftp", "tcp/22": "ssh", "tcp/23": "telnet", "tcp/25": "smtp",
    "tcp/53": "dns", "udp/53": "dns", "udp/67": "dhcp", "udp/68": "dhcp", "udp/69": "tftp",
    "tcp/80": "http", "tcp/88": "krb_tcp", "udp/88": "krb", "tcp/110": "pop3", "udp/123": "ntp",
    "tcp/135": "dce_rpc", "udp/137": "netbios-ns", "udp/138": "netbios-dgm", "tcp/139": "smb",
    "tcp/143": "imap", "udp/161": "snmp", "udp/162": "snmp", "tcp/179": "bgp", "tcp/389": "ldap",
    "udp/389": "ldap", "tcp/443": "ssl", "udp/443": "quic", "tcp/445": "smb", "tcp/465": "ssl",
    "udp/500": "ike", "tcp/502": "modbus", "udp/514": "syslog", "tcp/587": "smtp", "tcp/636": "ssl",
    "tcp/853": "ssl", "tcp/993": "ssl", "tcp/995": "ssl", "tcp/1080": "socks", "tcp/1433": "tds",
    "udp/1812": "radius", "udp/1813": "radius", "udp/1900": "ssdp", "tcp/3268": "ldap",
    "tcp/3306": "mysql", "tcp/3389": "rdp", "udp/3389": "rdp", "udp/4500": "ike", "tcp/5060": "sip",
    "udp/5060": "sip", "udp/5353": "dns", "udp/5355": "dns", "tcp/5432": "postgresql",
    "tcp/5900": "rfb", "tcp/5985": "http", "tcp/5986": "ssl", "tcp/6379": "redis", "tcp/6667": "irc",
    "tcp/8080": "http", "tcp/8443": "ssl", "tcp/20000": "dnp3", "udp/47808": "bacnet",
}


class ConfigError(ValueError):
    """A config problem a user can fix: names the file, the key path, the bad value and what is allowed."""


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: `file: key.path: what is wrong (got <value>)`."""
    lines = [f"{source}: {error.error_count()} invalid setting(s)"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"] if part not in ("root", "[key]")) or "(top level)"
        shown = orjson.dumps(item.get("input"), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        lines.append(f"  {path}: {item['msg']} (got {shown[:200]})")
    return "\n".join(lines)


def is_valid_name(name: str) -> bool:
    """Log types and field targets: 1-100 ASCII letters, digits, `_` or `-` (safe as a directory name)."""
    return 0 < len(name) <= 100 and _NAME_CHARS.issuperset(name)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrichFlags(_Frozen):
    time: bool = True  # event_year/month/day/hour/weekday from event_time
    network: bool = True  # private/local flags, direction, service, community_id


def _check_normalized_name(name: str) -> str:
    if not is_valid_name(name):
        raise ValueError(f"{name!r} is not a valid name (1-100 of A-Z a-z 0-9 _ -)")
    if name in RESERVED_NORMALIZED:
        raise ValueError(f"{name!r} is set by the pipeline itself ({', '.join(sorted(RESERVED_NORMALIZED))})")
    if name in ENRICHED_KEYS:
        raise ValueError(f"{name!r} collides with the enriched field of that name")
    return name


def _check_static_name(name: str) -> str:
    if name == "event_time":
        raise ValueError("'event_time' cannot be static: it comes from a time field (promote ts to it)")
    return _check_normalized_name(name)


def _check_static_value(value: Any) -> str | bool | int | float:
    if isinstance(value, str | bool | int | float):
        return value
    raise ValueError("a static value must be a string, number or boolean")


StaticValue = Annotated[Any, AfterValidator(_check_static_value)]
RawName = Annotated[str, Field(min_length=1)]
NormalizedName = Annotated[str, AfterValidator(_check_normalized_name)]
StaticName = Annotated[str, AfterValidator(_check_static_name)]


class LogTypeRule(_Frozen):
    """How one log type is normalized and enriched."""

    source: str | None = None  # the seed's label (e.g. "zeek_dns"); informational, not emitted
    promote: dict[RawName, NormalizedName] = Field(default_factory=dict)
    static: dict[StaticName, StaticValue] = Field(default_factory=dict)
    enrich: EnrichFlags = EnrichFlags()
    key: list[str] = Field(default_factory=lambda: ["flow_id"])
    default_protocol: Literal["tcp", "udp", "icmp", "sctp"] | None = None
    service: str | None = None
    service_field: str | None = None
    zeek_locality: bool = True

    @model_validator(mode="after")
    def _no_overlap(self) -> LogTypeRule:
        seen: dict[str, str] = {}
        for raw, target in self.promote.items():
            if target in seen:
                raise ValueError(f"promote: {seen[target]!r} and {raw!r} both promote to {target!r}; "
                                 "a target takes one raw field")
            seen[target] = raw
        both = set(self.promote.values()) & set(self.static)
        if both:
            raise ValueError(f"field(s) {sorted(both)} are both promoted and static; keep one")
        return self


DEFAULT_RULE = LogTypeRule(
    promote=dict(COMMON_PROMOTIONS),
    static={"event_type": "{log_type}", "event_class": "other"},
)


class NormalizationRules(RootModel[dict[str, LogTypeRule]]):
    """normalization.json: log type -> rule, plus the optional "default" entry for unknown types."""

    model_config = ConfigDict(frozen=True)

    @field_validator("root")
    @classmethod
    def _check_names(cls, value: dict[str, LogTypeRule]) -> dict[str, LogTypeRule]:
        for name in value:
            if not is_valid_name(name):
                raise ValueError(f"log type {name!r} is not a valid name (1-100 of A-Z a-z 0-9 _ -)")
        return value

    @property
    def types(self) -> dict[str, LogTypeRule]:
        """The configured log types (without the "default" entry)."""
        return {name: rule for name, rule in self.root.items() if name != DEFAULT_RULE_NAME}

    @property
    def default(self) -> LogTypeRule:
        return self.root.get(DEFAULT_RULE_NAME, DEFAULT_RULE)

    def rule_for(self, log_type: str) -> LogTypeRule:
        """The rule of a log type; unknown types get the default rule (common promotions)."""
        rule = self.root.get(log_type)
        return rule if rule is not None and log_type != DEFAULT_RULE_NAME else self.default

    def normalized_fields(self, log_type: str) -> list[str]:
        """Every normalized key a record of this type can have, in document order."""
        rule = self.rule_for(log_type)
        names = ["event_time", "ingest_time"]
        for target in rule.promote.values():
            if target not in names:
                names.append(target)
        names.extend(name for name in rule.static if name not in names)
        names.append("zeek_write_ts")
        return names


def _check_port_key(key: str) -> str:
    proto, sep, port = key.partition("/")
    if not sep or proto not in TRANSPORTS or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"service_ports key {key!r} must be '<proto>/<port>' with proto in "
                         f"{list(TRANSPORTS)} and port 0-65535, e.g. 'tcp/80'")
    return key


class GeoIpSettings(_Frozen):
    """MaxMind DB files (GeoLite2/GeoIP2 City and ASN) for `enrich.geoip`; off while both paths are unset.

    Either database may be given alone. The files are opened when the enricher starts (core/geoip.py), so
    a missing or corrupt one stops the service with one line naming the key and the file.
    """

    city_db: str | None = Field(default=None, min_length=1)  # country ISO code, city, latitude/longitude
    asn_db: str | None = Field(default=None, min_length=1)  # autonomous system number and organisation
    cache_size: int = Field(default=100_000, ge=0, le=10_000_000)  # addresses kept (LRU); 0 disables it

    @property
    def enabled(self) -> bool:
        return self.city_db is not None or self.asn_db is not None


class EnrichSettings(_Frozen):
    """The enrichment knobs, embedded in config/config.json under the top-level key "enrich"."""

    local_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_LOCAL_NETWORKS))
    service_ports: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SERVICE_PORTS))
    community_id_seed: Annotated[int, Field(ge=0, le=65535)] = 0
    geoip: GeoIpSettings = GeoIpSettings()

    @field_validator("local_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"local_networks entry {cidr!r} is not an IPv4/IPv6 CIDR "
                                 f"like '10.0.0.0/8' or 'fd00::/8': {exc}") from None
        return value

    @field_validator("service_ports")
    @classmethod
    def _check_ports(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            _check_port_key(key)
            if not name:
                raise ValueError(f"service_ports[{key!r}] must be a non-empty service name")
        return value

    def service_table(self) -> dict[str, dict[int, str]]:
        """service_ports as proto -> {port: service}, for allocation-free lookups."""
        table: dict[str, dict[int, str]] = {proto: {} for proto in TRANSPORTS}
        for key, name in self.service_ports.items():
            proto, _, port = key.partition("/")
            table[proto][int(port)] = name
        return table


def parse_rules(data: Any, source: str = "normalization.json") -> NormalizationRules:
    """Validate already-parsed normalization.json data; ConfigError names the file and the key path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a JSON object of log type -> rule, "
                          f"got {type(data).__name__}")
    try:
        return NormalizationRules.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_rules(path: Path | str) -> NormalizationRules:
    """Read and validate config/normalization.json (a directory means its normalization.json)."""
    file = config_file(path, "normalization.json")
    return parse_rules(read_json(file, ConfigError), str(file))


def parse_enrich(data: Any, source: str = "config.json") -> EnrichSettings:
    """Validate the "enrich" section alone (the offline tools do not need the Kafka settings)."""
    try:
        return EnrichSettings.model_validate({} if data is None else data)
    except ValidationError as exc:
        error = format_validation_error(source, exc).replace("\n  ", "\n  enrich.")
        raise ConfigError(error) from exc
