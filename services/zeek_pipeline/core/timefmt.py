"""Zeek time values -> exact integer microseconds since the epoch (UTC), and cached calendar parts.

Zeek writes `time` fields as epoch seconds (JSON number, TSV decimal text) or, with json-streaming-logs
or `JSON::TS_ISO8601`, as ISO 8601 text such as "2018-03-24T17:15:20.865716Z". Both are accepted, plus
ISO with a `+HH:MM`/`-HHMM` offset, without fraction, with up to 9 fractional digits (truncated to µs) and
without a zone (read as UTC). Anything else is not a time (None), never an exception.

Speed: the common ISO shape costs one dict lookup on the "YYYY-MM-DDTHH" prefix (one entry per hour of
data) plus a few slices; epoch floats cost one multiplication. No regex, no datetime per record.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253402300800  # 10000-01-01T00:00:00Z (exclusive)
MIN_US = MIN_SECONDS * 1_000_000
MAX_US = MAX_SECONDS * 1_000_000
_MIN_F = float(MIN_SECONDS)
_MAX_F = float(MAX_SECONDS)
EXACT_FLOAT_SECONDS = _EXACT_F = 4294967296.0  # below 2^32 s one multiplication gives the exact µs (to_us)
_CACHE_LIMIT = 100_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_hour_base: dict[str, int] = {}  # "YYYY-MM-DDTHH" -> epoch seconds of that hour
_second_base: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds
HOUR_PARTS: dict[int, tuple[int, int, int, int, int]] = {}  # epoch hour -> (y, m, d, h, iso weekday)


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit alone accepts '²' and other Unicode digits)."""
    return text.isascii() and text.isdigit()


def _hour_seconds(prefix: str) -> int | None:
    """Epoch seconds of "YYYY-MM-DDTHH" (separator T, t or space), validated; None when not a date-hour."""
    if len(prefix) != 13 or prefix[4] != "-" or prefix[7] != "-" or prefix[10] not in "Tt ":
        return None
    y, mo, d, h = prefix[0:4], prefix[5:7], prefix[8:10], prefix[11:13]
    if not (_digits(y) and _digits(mo) and _digits(d) and _digits(h)):
        return None
    year, month, day, hour = int(y), int(mo), int(d), int(h)
    if year < 1 or not 1 <= month <= 12 or hour > 23:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    days = datetime(year, month, day).toordinal() - 719163  # 719163 = date(1970, 1, 1).toordinal()
    return days * 86400 + hour * 3600


def _cached_hour(prefix: str) -> int | None:
    base = _hour_base.get(prefix)
    if base is None:
        base = _hour_seconds(prefix)
        if base is None:
            return None
        if len(_hour_base) >= _CACHE_LIMIT:
            _hour_base.clear()
        _hour_base[prefix] = base
    return base


def _fraction_us(frac: str) -> int | None:
    """".865716" digits -> µs (padded or truncated to 6 digits); None unless 1-9 ASCII digits."""
    if not 0 < len(frac) <= 9 or not _digits(frac):
        return None
    return int((frac + "00000")[:6])


def _offset_seconds(zone: str) -> int | None:
    """"Z", "+01:00", "-0130", "+05" -> seconds east of UTC; "" (no zone) is UTC."""
    if zone in ("", "Z", "z"):
        return 0
    sign = zone[0]
    if sign not in "+-":
        return None
    rest = zone[1:]
    if len(rest) == 5 and rest[2] == ":":
        hh, mm = rest[:2], rest[3:]
    elif len(rest) == 4:
        hh, mm = rest[:2], rest[2:]
    elif len(rest) == 2:
        hh, mm = rest, "00"
    else:
        return None
    if not (_digits(hh) and _digits(mm)) or int(hh) > 23 or int(mm) > 59:
        return None
    seconds = int(hh) * 3600 + int(mm) * 60
    return -seconds if sign == "-" else seconds


def _second(prefix: str) -> int | None:
    """Epoch seconds of "YYYY-MM-DDTHH:MM:SS", validated and cached (one entry per second of data)."""
    seconds = _second_base.get(prefix)
    if seconds is None:
        base = _cached_hour(prefix[:13])
        mm, ss = prefix[14:16], prefix[17:19]
        if base is None or prefix[13] != ":" or prefix[16] != ":" or not (_digits(mm) and _digits(ss)):
            return None
        if int(mm) > 59 or int(ss) > 60:
            return None
        seconds = base + int(mm) * 60 + int(ss)
        if len(_second_base) >= _CACHE_LIMIT:
            _second_base.clear()
        _second_base[prefix] = seconds
    return seconds


def iso_to_us(text: str) -> int | None:
    """ISO 8601 date-time text -> µs since the epoch, or None when it is not one."""
    n = len(text)
    if n == 27 and text[26] == "Z" and text[19] == ".":  # "2018-03-24T17:15:20.865716Z"
        seconds = _second(text[:19])
        frac = text[20:26]
        if seconds is not None and frac.isdigit() and frac.isascii():
            return seconds * 1_000_000 + int(frac)
    # Fast path: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z", the shape of json-streaming-logs and JSON::TS_ISO8601.
    if n >= 20 and text[-1] == "Z" and text[13] == ":" and text[16] == ":":
        base = _cached_hour(text[:13])
        if base is not None:
            mm, ss = text[14:16], text[17:19]
            if _digits(mm) and _digits(ss) and int(mm) < 60 and int(ss) <= 60:
                seconds = base + int(mm) * 60 + int(ss)
                if n == 20:
                    return seconds * 1_000_000
                if text[19] in ".,":
                    micros = _fraction_us(text[20:-1])
                    if micros is not None:
                        return seconds * 1_000_000 + micros
    return _iso_general(text)


def _iso_general(text: str) -> int | None:
    """Every other ISO 8601 extended date-time: optional seconds, fraction and zone."""
    if len(text) < 16 or not text.isascii() or text[13] != ":":
        return None
    base = _hour_seconds(text[:13])
    mm = text[14:16]
    if base is None or not _digits(mm) or int(mm) > 59:
        return None
    seconds = base + int(mm) * 60
    frac = 0
    i = 16
    n = len(text)
    if i < n and text[i] == ":":
        ss = text[i + 1:i + 3]
        if len(ss) != 2 or not _digits(ss) or int(ss) > 60:
            return None
        seconds += int(ss)
        i += 3
        if i < n and text[i] in ".,":
            j = i + 1
            while j < n and "0" <= text[j] <= "9":
                j += 1
            parsed = _fraction_us(text[i + 1:j])
            if parsed is None:
                return None
            frac = parsed
            i = j
    offset = _offset_seconds(text[i:])
    if offset is None:
        return None
    us = (seconds - offset) * 1_000_000 + frac
    return us if MIN_US <= us < MAX_US else None


def epoch_text_to_us(text: str) -> int | None:
    """Decimal epoch seconds as text ("1713484795.943239", "-1.5", "1713484795") -> exact µs."""
    body = text[1:] if text[:1] == "-" else text
    whole, dot, frac = body.partition(".")
    if not _digits(whole) or len(whole) > 12:
        return None
    us = int(whole) * 1_000_000
    if dot:
        if not frac:
            return None
        parsed = _fraction_us(frac)
        if parsed is None:
            return None
        us += parsed
    if body is not text:
        us = -us
    return us if MIN_US <= us < MAX_US else None


def to_us(value: object) -> int | None:
    """A Zeek time in any accepted form -> µs since the epoch; None when the value is not a time."""
    kind = type(value)
    if kind is float:
        seconds: float = value  # type: ignore[assignment]
        if -_EXACT_F < seconds < _EXACT_F:
            # Below 2^32 s (year 2106) one multiplication recovers the printed µs exactly: the float's
            # representation error (< 0.24 µs) plus the product's rounding (< 0.25 µs) stay under 0.5 µs.
            return round(seconds * 1_000_000)
        if _MIN_F <= seconds < _MAX_F:  # also false for NaN
            return epoch_text_to_us(repr(seconds))  # the shortest repr is the decimal Zeek printed
        return None
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if len(text) >= 16 and text[4] == "-":
            return iso_to_us(text)
        return epoch_text_to_us(text)
    if kind is int:  # bool is a subclass of int, but type() is bool: rejected above by `is`
        number: int = value  # type: ignore[assignment]
        if MIN_SECONDS <= number < MAX_SECONDS:
            return number * 1_000_000
    return None


def to_ms(value: object) -> int | None:
    """A Zeek time -> ms since the epoch (floored, so 17:15:20.865716 -> ...865)."""
    us = to_us(value)
    return None if us is None else us // 1000


def us_to_epoch(us: int) -> float:
    """µs -> epoch seconds as the float Zeek's JSON writer would print (repr round-trips to the same µs)."""
    return us / 1_000_000


def us_to_iso(us: int) -> str:
    """µs -> "YYYY-MM-DDTHH:MM:SS.ffffffZ", the json-streaming-logs shape."""
    moment = _EPOCH + timedelta(microseconds=us)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}Z")


def time_parts(ms: int) -> tuple[int, int, int, int, int]:
    """(year, month, day, hour, ISO weekday Monday=1..Sunday=7) in UTC, cached per hour of data."""
    hour = ms // 3_600_000
    parts = HOUR_PARTS.get(hour)
    if parts is None:
        moment = _EPOCH + timedelta(hours=hour)
        parts = (moment.year, moment.month, moment.day, moment.hour, moment.isoweekday())
        if len(HOUR_PARTS) >= _CACHE_LIMIT:
            HOUR_PARTS.clear()
        HOUR_PARTS[hour] = parts
    return parts
