"""Create-if-absent on S3: a PUT with `If-None-Match: *`, sent by botocore.

Why a second S3 client: a commit record must be written only if no record of that seq exists yet, so that
two writers that both believe they own a partition (a zombie and its successor) cannot both commit the
same seq. On local disk link(2) gives that; on S3 only a conditional PUT does (the server answers
412 Precondition Failed when the key exists), and pyarrow's S3 file system cannot send one. The bulk of
the traffic (Parquet files, listings, copies) stays on pyarrow; this client writes commit records only.
boto3 is imported when a client is made, not with this module: ~13 MB of RSS a writer on local disk never uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from zeek_pipeline.settings import S3Settings

# 412: the key exists. 409 ConditionalRequestConflict: another conditional write of the key is in progress
# (AWS); the caller treats it as a transient failure, retries and then sees the winner's record.
_EXISTS = {"PreconditionFailed", "412"}


class ConditionalPutError(Exception):
    """The conditional PUT could not be done (network, credentials, server error); the outcome is unknown."""


class ConditionalPut:
    """`put_if_absent(key, data)` against one bucket, with the same endpoint and credentials as pyarrow's."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """True when the object was created, False when it already existed (nothing written)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if str(error.get("Code", "")) in _EXISTS or status == "412":
                return False
            raise ConditionalPutError(f"conditional PUT {self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ConditionalPutError(f"conditional PUT {self.bucket}/{key}: {exc}") from exc
        return True

    def delete_objects(self, keys: list[str]) -> None:
        """Delete up to 1000 keys in one DeleteObjects request (missing keys count as deleted)."""
        if not keys:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise ConditionalPutError(f"DeleteObjects {self.bucket} ({len(keys)} keys): {exc}") from exc
        errors = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            raise ConditionalPutError(f"DeleteObjects {self.bucket}: {errors[:3]}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the S3 server is, from `output.parquet.s3`, else the AWS environment: one answer for both clients."""

    region: str
    scheme: str  # http | https
    netloc: str | None  # host:port of a custom endpoint; None: AWS itself


def endpoint_of(settings: S3Settings, environ: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if environ is None else environ
    region = settings.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = settings.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return Endpoint(region, settings.scheme, None)
    parsed = urlsplit(endpoint if "://" in endpoint else f"{settings.scheme}://{endpoint}")
    return Endpoint(region, "https" if parsed.scheme == "https" else "http", parsed.netloc)


def conditional_put(bucket: str, settings: S3Settings, environ: Mapping[str, str] | None = None) -> ConditionalPut:
    """A botocore client configured like `storage.s3_filesystem` (endpoint, region, keys, timeouts, retries)."""
    import boto3
    from botocore.config import Config

    where = endpoint_of(settings, environ)
    kwargs: dict[str, Any] = {
        "region_name": where.region,
        # A custom endpoint (MinIO, SeaweedFS, ...) is addressed by path, as pyarrow does with endpoint_override.
        "config": Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                         s3={"addressing_style": "path" if where.netloc else "auto"}),
    }
    if where.netloc:
        kwargs["endpoint_url"] = f"{where.scheme}://{where.netloc}"
    if settings.access_key is not None and settings.secret_key is not None:
        kwargs["aws_access_key_id"] = settings.access_key.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.secret_key.get_secret_value()
    session = boto3.session.Session()
    return ConditionalPut(session.client("s3", **kwargs), bucket)
