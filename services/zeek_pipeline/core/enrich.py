"""The enriched layer: UTC time parts, private/local flags, direction, service and Community ID.

Keys appear only when computable. Conventions:
- event_weekday is ISO 8601: Monday=1 .. Sunday=7, in UTC like the other parts.
- src_is_local/dst_is_local: the record's own `local_orig`/`local_resp` (Zeek's Site::local_nets) win
  when present and the rule allows it; otherwise the configured `local_networks`.
- direction from locality: both local -> internal; src only -> outbound; dst only -> inbound;
  neither -> external.
- service: the rule's `service_field` (Zeek's own, e.g. conn `service`, lower-cased, sets joined by ",")
  when present and non-empty, else the service the log type implies (rule `service`), else the
  `service_ports` map by protocol and responder port.
- community_id: Community ID v1 (configured seed, default 0) when both addresses, the protocol (`proto`,
  or the rule's `default_protocol`) and, for TCP/UDP/SCTP/ICMP, both ports are known.
- src_/dst_ geo_country, geo_city, geo_lat, geo_lon, asn, as_org: with `enrich.geoip` only (core/geoip.py),
  for an address that is neither private nor local (by the locality above, Zeek's flags included), and
  only the fields the databases know.
"""

from __future__ import annotations

from typing import Any

from zeek_pipeline.core.community_id import ICMP, ICMP6, PROTOCOL_NUMBERS, community_id
from zeek_pipeline.core.geoip import DST_GEO_KEYS, SRC_GEO_KEYS, GeoAnswer, GeoIpLookup
from zeek_pipeline.core.network import IpInfo, NetworkClassifier
from zeek_pipeline.core.normalize import TypePlan
from zeek_pipeline.core.rules import EnrichSettings
from zeek_pipeline.core.timefmt import HOUR_PARTS, time_parts

FLOW_CACHE_SIZE = 16_384  # flows whose Community ID is kept (~270 B each; cleared when full: ~4.5 MB at most)
_DIRECTION = {(True, True): "internal", (True, False): "outbound", (False, True): "inbound",
              (False, False): "external"}


class Enricher:
    __slots__ = ("_classifier", "_flows", "_geo", "_seed", "_services")

    def __init__(self, settings: EnrichSettings) -> None:
        """Opens the GeoIP databases when `settings.geoip` names any (GeoIpError when one is unusable)."""
        self._classifier = NetworkClassifier(settings.local_networks)
        self._services = settings.service_table()
        self._seed = settings.community_id_seed
        self._geo = GeoIpLookup(settings.geoip) if settings.geoip.enabled else None
        self._flows: dict[tuple[Any, ...], str | None] = {}  # (addresses, protocol, ports) -> Community ID

    def enrich(self, plan: TypePlan, record: dict[str, Any], normalized: dict[str, Any],
               event_ms: int | None) -> dict[str, Any]:
        enriched: dict[str, Any] = {}
        if plan.enrich_time and event_ms is not None:
            parts = HOUR_PARTS.get(event_ms // 3_600_000)  # time_parts' cache, read without the call
            year, month, day, hour, weekday = parts if parts is not None else time_parts(event_ms)
            enriched["event_year"] = year
            enriched["event_month"] = month
            enriched["event_day"] = day
            enriched["event_hour"] = hour
            enriched["event_weekday"] = weekday
        if plan.enrich_network:
            self._network(plan, record, normalized, enriched)
        return enriched

    def _network(self, plan: TypePlan, record: dict[str, Any], normalized: dict[str, Any],
                 enriched: dict[str, Any]) -> None:
        known = self._classifier.known
        src_ip = normalized.get("src_ip")
        dst_ip = normalized.get("dst_ip")
        src: IpInfo | None = None
        dst: IpInfo | None = None
        if src_ip is not None:
            src = known.get(src_ip)
            if src is None and src_ip not in known:  # None is also the cached answer for a non-address
                src = self._classifier.lookup(src_ip)
            if src is not None:
                enriched["src_ip_is_private"] = src.is_private
        if dst_ip is not None:
            dst = known.get(dst_ip)
            if dst is None and dst_ip not in known:
                dst = self._classifier.lookup(dst_ip)
            if dst is not None:
                enriched["dst_ip_is_private"] = dst.is_private

        src_local: bool | None = src.is_local if src is not None else None
        dst_local: bool | None = dst.is_local if dst is not None else None
        if plan.zeek_locality:
            value = record.get("local_orig")
            if type(value) is bool:
                src_local = value
            value = record.get("local_resp")
            if type(value) is bool:
                dst_local = value
        if src_local is not None:
            enriched["src_is_local"] = src_local
            if dst_local is not None:
                enriched["dst_is_local"] = dst_local
                enriched["direction"] = _DIRECTION[src_local, dst_local]
        elif dst_local is not None:
            enriched["dst_is_local"] = dst_local
        geo = self._geo
        if geo is not None:
            if src is not None and not src.is_private and not src_local:
                _add_geo(geo.lookup(src_ip), SRC_GEO_KEYS, enriched)  # type: ignore[arg-type]
            if dst is not None and not dst.is_private and not dst_local:
                _add_geo(geo.lookup(dst_ip), DST_GEO_KEYS, enriched)  # type: ignore[arg-type]

        protocol = normalized.get("protocol")
        if type(protocol) is not str:
            protocol = plan.default_protocol
        dst_port = normalized.get("dst_port")
        service = self._service(plan, record, protocol, dst_port)
        if service is not None:
            enriched["service"] = service

        if src is not None and dst is not None and protocol is not None:
            # One flow shows up in several logs (conn, dns, http, files...): its ID is hashed once.
            flow = (src_ip, dst_ip, protocol, normalized.get("src_port"), dst_port)
            cid = self._flows.get(flow)
            if cid is None and flow not in self._flows:
                cid = self._community_id(src, dst, protocol, flow[3], dst_port)
                if len(self._flows) >= FLOW_CACHE_SIZE:
                    self._flows.clear()
                self._flows[flow] = cid
            if cid is not None:
                enriched["community_id"] = cid

    def _community_id(self, src: IpInfo, dst: IpInfo, protocol: str, src_port: Any, dst_port: Any) -> str | None:
        number = PROTOCOL_NUMBERS.get(protocol)
        if number is None:
            return None
        if number == ICMP and len(src.packed) == 16:
            number = ICMP6
        return community_id(src.packed, dst.packed, number, src_port, dst_port, self._seed)

    def _service(self, plan: TypePlan, record: dict[str, Any], protocol: str | None, port: Any) -> str | None:
        if plan.service_field is not None:
            own = record.get(plan.service_field)
            if type(own) is str:
                if own and own != "-":
                    return own.lower()
            elif type(own) is list and own and all(type(item) is str for item in own):
                return ",".join(own).lower()
        if plan.service is not None:
            return plan.service
        if protocol is not None and port is not None:
            table = self._services.get(protocol)
            if table is not None:
                return table.get(port)
        return None


def _add_geo(answer: GeoAnswer, keys: tuple[str, ...], enriched: dict[str, Any]) -> None:
    for key, value in zip(keys, answer, strict=True):
        if value is not None:
            enriched[key] = value
