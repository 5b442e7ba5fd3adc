"""HTTP clients for the public APIs the agent room may use: Khala's admin API, the runtime's."""

from __future__ import annotations

from typing import Any

import httpx

from oa.runtime.signing import HEADER, sign_caller


class ApiError(Exception):
    def __init__(self, service: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{service} answered {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _raise_for(service: str, r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    code, message = "error", r.text[:500]
    try:
        body = r.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code", code))
            message = str(body["error"].get("message", message))
        elif isinstance(body, dict) and "detail" in body:
            code, message = "invalid_request", str(body["detail"])[:500]
    except ValueError:
        pass
    raise ApiError(service, r.status_code, code, message)


class AdminClient:
    """Khala's `/admin/v1`, authenticated with the deployment's admin key."""

    def __init__(self, base_url: str, admin_key: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        self._timeout = timeout

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        async with httpx.AsyncClient(
            base_url=self.base_url + "/admin/v1", headers=self._headers, timeout=self._timeout
        ) as c:
            try:
                r = await c.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise ApiError("khala", 503, "unreachable", f"{self.base_url}: {exc!r}") from exc
        _raise_for("khala", r)
        return r.json()

    async def deployment(self) -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", "/deployment")
        return body

    async def live_grants(self) -> list[dict[str, Any]]:
        body = await self.call("GET", "/grants", params={"live": "true"})
        grants: list[dict[str, Any]] = body["grants"]
        return grants


class RuntimeClient:
    """The runtime's `/internal/v1`, each request signed as `principal` with the caller secret."""

    def __init__(self, base_url: str, secret: bytes, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._timeout = timeout

    async def get(self, principal: str, path: str, params: dict[str, Any] | None = None) -> Any:
        headers = {HEADER: sign_caller(self._secret, principal, 120)}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout) as c:
            try:
                r = await c.get(path, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise ApiError("runtime", 503, "unreachable", f"{self.base_url}: {exc!r}") from exc
        _raise_for("runtime", r)
        return r.json()
