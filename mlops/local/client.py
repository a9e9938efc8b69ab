"""A small synchronous client for the platform daemon's HTTP routes (what LocalBackend calls)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from mlops.backend import DeploymentStatus, EndpointStatus, PlatformError, VariantStatus
from mlops.local.runfile import DaemonInfo

TOKEN_HEADER = "x-mlops-token"


def deployment_from_json(raw: dict[str, Any]) -> DeploymentStatus:
    return DeploymentStatus(
        target_version=int(raw["target_version"]),
        status=str(raw["status"]),
        started_at=str(raw["started_at"]),
        finished_at=raw.get("finished_at"),
        message=str(raw.get("message", "")),
        from_version=raw.get("from_version"),
    )


def endpoint_from_json(raw: dict[str, Any]) -> EndpointStatus:
    last = raw.get("last_deployment")
    return EndpointStatus(
        name=str(raw["name"]),
        status=str(raw["status"]),
        variants=[VariantStatus(**v) for v in raw.get("variants", [])],
        serving_version=raw.get("serving_version"),
        last_deployment=deployment_from_json(last) if last else None,
        queued_version=raw.get("queued_version"),
        notes=[str(n) for n in raw.get("notes", [])],
        database_bytes=raw.get("database_bytes"),
    )


class DaemonClient:
    def __init__(self, info: DaemonInfo, timeout: float = 30.0) -> None:
        self.info = info
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None, *, control: bool = True) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"content-type": "application/json"}
        if control:
            headers[TOKEN_HEADER] = self.info.token
        req = urllib.request.Request(f"{self.info.base_url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body).get("error", "")
            except (ValueError, AttributeError):
                message = body.decode(errors="replace")
            raise PlatformError(f"{method} {path} answered HTTP {exc.code}: {message}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PlatformError(
                f"the platform daemon at {self.info.base_url} is not answering ({exc}); run `mlops local up`"
            ) from exc

    def status(self) -> EndpointStatus:
        return endpoint_from_json(self._call("GET", "/_platform/status"))

    def deploy(self, version: int, *, allow_signature_change: bool = False) -> DeploymentStatus:
        payload: dict[str, Any] = {"version": version}
        if allow_signature_change:
            payload["allow_signature_change"] = True
        return deployment_from_json(self._call("POST", "/_platform/deploy", payload))

    def teardown(self) -> list[str]:
        """Delete the endpoint (model servers stop, nothing serves); the registry stays."""
        return [str(item) for item in self._call("POST", "/_platform/teardown", {})["removed"]]

    def rollback(self, *, allow_signature_change: bool = False) -> DeploymentStatus:
        """Back to the version that served before the serving one (the daemon applies the lifecycle rules)."""
        payload: dict[str, Any] = {"rollback": True}
        if allow_signature_change:
            payload["allow_signature_change"] = True
        return deployment_from_json(self._call("POST", "/_platform/deploy", payload))

    def latest_deployment(self) -> DeploymentStatus | None:
        raw = self._call("GET", "/_platform/deployments/latest")
        return deployment_from_json(raw) if raw else None

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("POST", "/predict", payload, control=False)
        return answer
