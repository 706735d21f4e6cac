"""Settings as the page and API may show them: every secret masked, including librdkafka passthrough keys."""

from __future__ import annotations

import re
from typing import Any

from zeek_pipeline.settings import Settings

MASK = "**********"
_SECRET_KEY = re.compile(r"password|secret|token|credential|oauthbearer|private|pem|(^|[._])key$", re.IGNORECASE)


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if value is not None and _SECRET_KEY.search(key):
        return MASK
    return value


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """SecretStr fields are already masked by pydantic; name-based masking catches free-form passthrough."""
    masked: dict[str, Any] = _mask(settings.redacted())
    return masked
