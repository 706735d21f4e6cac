"""A small JSON-in, JSON-out adapter over the kubernetes client (kopf is not an API client).

Objects stay plain dicts end to end (the builders make dicts, the status code reads dicts), so this module
only maps a kind to its REST path and turns API errors into `ApiError` with the HTTP status.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Literal

from zeek_operator.managed_fields import adopt_update_entries

FIELD_MANAGER = "zeek-operator"

# (apiVersion, kind) -> (path prefix, plural)
KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("batch/v1", "CronJob"): ("/apis/batch/v1", "cronjobs"),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases"),
    ("zeek-pipeline.io/v1alpha1", "ZeekPipeline"): ("/apis/zeek-pipeline.io/v1alpha1", "zeekpipelines"),
}
API_VERSIONS = {kind: api_version for api_version, kind in KINDS}


class ApiError(RuntimeError):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        message = reason
        try:
            message = json.loads(body).get("message", reason)
        except (ValueError, AttributeError):
            pass
        super().__init__(f"HTTP {status}: {message}")


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unsupported kind {api_version}/{kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    """The REST calls the operator makes, on one kubernetes ApiClient (thread-safe: a urllib3 pool)."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        return self.request_status(method, path, body, content_type, query, timeout)[1]

    def request_status(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded body): an apply tells a creation (201) from an update (200) only by it."""
        from kubernetes.client.exceptions import ApiException

        method, url, headers, _, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"])
        try:  # the client serializes dict bodies as JSON for json and yaml (apply-patch) content types alike
            response = self.api.call_api(method, url, header_params=headers, body=body,
                                         _request_timeout=timeout)
        except ApiException as exc:  # transport problems (TLS) come as status 0
            raise ApiError(int(exc.status or 0), str(exc.reason), str(exc.body or "")) from None
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiError(int(response.status), str(response.reason), data.decode(errors="replace"))
        return int(response.status), json.loads(data) if data else None

    # -- objects ----------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", object_path(API_VERSIONS[kind], kind, namespace, name))
            return result
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{key}={value}" for key, value in selector.items())}
        result = self.request("GET", object_path(API_VERSIONS[kind], kind, namespace), query=query)
        return list(result.get("items") or [])

    def apply(self, body: Mapping[str, Any]) -> tuple[Literal["created", "applied"], dict[str, Any]]:
        """Server-side apply with force, creating the object when missing: one field manager, one Apply entry.

        So a field the operator stops setting (a TLS volume, a SASL variable, a limit, `rollingUpdate` after a
        switch to `Recreate`) is removed by the API server, and a hand edit of one of our fields is undone.
        Objects an older operator created with POST carry our fields in an *Update* entry that an apply
        never prunes; they are migrated once (`managed_fields.adopt_update_entries`), then applied again.
        """
        try:
            code, live = self._apply(body)
        except ApiError as exc:
            # e.g. 422 "rollingUpdate may not be specified when strategy type is Recreate": a legacy entry
            # keeps the old field alive; without one the error is real
            if exc.status != 422 or not self._migrate(body, None):
                raise
            code, live = self._apply(body)
        else:
            if self._migrate(body, live):
                code, live = self._apply(body)
        return ("created" if code == 201 else "applied"), live

    def _apply(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        meta = body["metadata"]
        path = object_path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
        code, live = self.request_status("PATCH", path, body, content_type="application/apply-patch+yaml",
                                         query={"fieldManager": FIELD_MANAGER, "force": "true"})
        return code, dict(live)

    def _migrate(self, body: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
        """Move our Update entry's fields into our Apply entry (True when there was one to move)."""
        meta = body["metadata"]
        if live is None:
            live = self.get(body["kind"], meta["namespace"], meta["name"])
            if live is None:
                return False
        live_meta = live.get("metadata") or {}
        entries = adopt_update_entries(live_meta.get("managedFields") or [], FIELD_MANAGER)
        if entries is None:
            return False
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": live_meta.get("resourceVersion")},
                 {"op": "replace", "path": "/metadata/managedFields", "value": entries}]
        self.request("PATCH", object_path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"]),
                     patch, content_type="application/json-patch+json")
        return True

    def ensure(self, body: Mapping[str, Any]) -> tuple[Literal["created", "exists"], dict[str, Any]]:
        """Create when missing, never change it afterwards (a volume claim: size and class are the user's)."""
        try:
            return "created", self.create(body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        meta = body["metadata"]
        existing = self.get(body["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted in between: the next reconcile creates it
            raise ApiError(409, "Conflict", '{"message": "created and deleted concurrently"}')
        return "exists", existing

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        result: dict[str, Any] = self.request(
            "POST", object_path(body["apiVersion"], body["kind"], meta["namespace"]), body,
            query={"fieldManager": FIELD_MANAGER})
        return result

    def replace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: fails with 409 when metadata.resourceVersion is stale (optimistic concurrency)."""
        meta = body["metadata"]
        result: dict[str, Any] = self.request(
            "PUT", object_path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"]), body,
            query={"fieldManager": FIELD_MANAGER})
        return result

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", object_path(API_VERSIONS[kind], kind, namespace, name),
                         query={"propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        path = object_path(API_VERSIONS[kind], kind, namespace, name) + "/status"
        result: dict[str, Any] = self.request("PATCH", path, {"status": dict(status)},
                                              content_type="application/merge-patch+json")
        return result

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, base64-decoded (None when it does not exist)."""
        import base64

        secret = self.get("Secret", namespace, name)
        if secret is None:
            return None
        data = dict(secret.get("data") or {})
        out = {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in data.items()}
        out.update(secret.get("stringData") or {})
        return out


_lock = threading.Lock()
_kube: Kube | None = None


def load_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient: in-cluster credentials when in a pod, else $KUBECONFIG / ~/.kube/config."""
    import importlib

    from kubernetes import client

    config: Any = importlib.import_module("kubernetes.config")  # partly typed: keep mypy out of it
    configuration = client.Configuration()
    try:
        if kubeconfig:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


def get_kube() -> Kube:
    """The process-wide client, created on first use (after kopf has started, inside a handler)."""
    global _kube
    with _lock:
        if _kube is None:
            _kube = Kube(load_client())
        return _kube
