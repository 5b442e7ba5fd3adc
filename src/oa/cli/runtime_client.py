"""A signed HTTP client for the local runtime, shared by the `oa spend` and `oa replay` commands.

The caller secret comes from `OA_RUNTIME_CALLER_SECRET` when set (as `oa serve runtime`
reads it), else from the deployment's secret file.
"""

from __future__ import annotations

import os

import httpx
import typer
from rich.console import Console

from oa.deployment import LocalDeployment
from oa.runtime.signing import HEADER, load_or_create_secret, sign_caller

console = Console(stderr=True)


def client(user: str, timeout: float = 60) -> httpx.Client:
    dep = LocalDeployment.from_env()
    env = os.environ.get("OA_RUNTIME_CALLER_SECRET")
    secret = env.encode() if env else load_or_create_secret(dep.caller_secret_file)
    principal = user if ":" in user else f"user:{user}"
    token = sign_caller(secret, principal, 300)
    return httpx.Client(base_url=dep.runtime_url(), headers={HEADER: token}, timeout=timeout)


def fail(resp: httpx.Response) -> None:
    """Print the error envelope's message and exit 1."""
    try:
        err = resp.json()["error"]
        console.print(f"[red]{resp.status_code} {err['code']}[/]: {err['message']}")
    except Exception:
        console.print(f"[red]{resp.status_code}[/]: {resp.text[:500]}")
    raise typer.Exit(1)
