"""A shape check of the PEM text in a pipeline's Kafka TLS Secret, done before anything hands it to librdkafka.

librdkafka refuses a client whose `ssl.ca.pem` is not PEM at construction time, and it does so in the
operator's timer: without this check every tick raised and logged a traceback while the resource's status
said nothing. The pods would fail the same way, so a Secret that is not PEM is a Degraded reason
(`InvalidSecret`) naming the field and the key. This checks the armour and the base64 only; a certificate
that is PEM but not a valid certificate still reaches librdkafka, and is reported in `lagError`.
"""

from __future__ import annotations

import base64
import binascii
import re

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


def pem_problem(text: str, wanted: str) -> str | None:
    """None when `text` holds at least one PEM block whose label ends with `wanted` (CERTIFICATE, PRIVATE
    KEY) and every block's body is base64; otherwise what is wrong, without echoing the Secret's content."""
    blocks = _BLOCK.findall(text)
    if not blocks:
        return "is not in PEM format (no -----BEGIN …----- / -----END …----- block)"
    if not any(label.endswith(wanted) for label, _ in blocks):
        return f"holds no {wanted} PEM block"
    for label, body in blocks:
        lines = [line for line in body.splitlines() if line.strip() and ":" not in line]  # skip RFC 1421 headers
        try:
            base64.b64decode("".join(line.strip() for line in lines), validate=True)
        except (binascii.Error, ValueError):
            return f"has a {label} PEM block whose body is not base64"
    return None
