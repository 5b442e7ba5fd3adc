"""HTTP clients for the local deployment, shared by every `oa` command that calls a server.

A server that does not answer ends the command with one line naming the URL, where that URL
came from (a variable, `.oa/deployment.env`, the default) and what to do; never a traceback.
The runtime caller secret comes from `OA_RUNTIME_CALLER_SECRET` when set (as `oa serve
runtime` reads it), else from the deployment's secret file.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer
from rich.console import Console

from oa.cli.identity import Identity, acting_as
from oa.deployment import Endpoint, LocalDeployment
from oa.runtime.signing import HEADER, load_or_create_secret, sign_caller

console = Console(stderr=True)


class DeploymentClient(httpx.Client):
    """An httpx client whose transport failures become a clear message and exit 2."""

    def __init__(self, what: str, endpoint: Endpoint, dep: LocalDeployment, **kwargs: Any) -> None:
        super().__init__(base_url=endpoint.url, **kwargs)
        self.what, self.endpoint, self.dep = what, endpoint, dep

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return super().send(request, **kwargs)
        except httpx.TransportError:
            console.print(f"[red]{self.dep.unreachable(self.what, self.endpoint)}[/]")
            raise typer.Exit(2) from None


def caller_secret(dep: LocalDeployment) -> bytes:
    env = os.environ.get("OA_RUNTIME_CALLER_SECRET")
    return env.encode() if env else load_or_create_secret(dep.caller_secret_file)


def sign_as(who: Identity, ttl_s: int = 300) -> str:
    """A caller signature for `who` (its org, when known, rides in the `oa_org_id` claim)."""
    return sign_caller(caller_secret(LocalDeployment.from_env()), who.principal, ttl_s, org=who.org)


def runtime(who: Identity, timeout: float | None = 60) -> DeploymentClient:
    dep = LocalDeployment.from_env()
    return DeploymentClient(
        "the runtime", dep.endpoint("OA_RUNTIME_URL"), dep, headers={HEADER: sign_as(who)}, timeout=timeout
    )


def control(url: str | None = None, token: str | None = None) -> DeploymentClient:
    dep = LocalDeployment.from_env()
    endpoint = Endpoint(url, "your session (oa login)") if url else dep.endpoint("OA_CONTROL_URL")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return DeploymentClient("control", endpoint, dep, headers=headers, timeout=30)


def client(user: str | None, timeout: float | None = 60) -> DeploymentClient:
    """The runtime, signed as `--user` (a user id or a full principal) or the signed-in account."""
    return runtime(acting_as(user), timeout)


def fail(resp: httpx.Response) -> None:
    """Print the error envelope's message and exit 1."""
    try:
        err = resp.json()["error"]
        console.print(f"[red]{resp.status_code} {err['code']}[/]: {err['message']}")
    except Exception:
        console.print(f"[red]{resp.status_code}[/]: {resp.text[:500]}")
    raise typer.Exit(1)
