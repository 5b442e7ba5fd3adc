"""`oa bench auth`: sync tokens minted and verified per second, on one core.

Targets (issue 4): 2,000 tokens minted/s and 20,000 verified/s on one core, with a warm
JWKS cache. One run, one machine, one Postgres (embedded in a temp folder, or
`OA_BENCH_DATABASE_URL`). Phases:

1. mint, in process: claims + ES256 signature (`SyncTokens.sign`), this process pinned
   to one core: what one core of control can sign;
2. mint over HTTP: `POST /api/sync/token` against `oa control serve` pinned to one core
   (session lookup, signing, the issued-token row in Postgres), load from aiohttp on the
   other core: what a client sees end to end;
3. verify, first sight: the Khala verifier on distinct tokens (every signature checked),
   keys from control's JWKS fetched once over HTTP (warm cache), revocation list loaded;
4. verify, repeat presentation: the same tokens again (a verified token is remembered;
   only time, revocation and Origin are re-checked);
5. the ceiling: the bare ES256 verification of the same tokens with `cryptography`
   (OpenSSL), no JWT work at all, so phase 3 can be read against it.

Results go to a rich table and to `bench/results/auth.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from oa.control.service.accounts import Accounts
from oa.control.service.keyring import Keyring
from oa.control.service.tokens import SyncTokens
from oa.control.settings import ControlSettings
from oa.khala.auth import HttpRevocationSource, JwksCache, RevocationList, SyncTokenVerifier, VerifierConfig
from oa.store import migrate
from oa.store.database import Database

console = Console(width=None if sys.stdout.isatty() else 150)
TARGET_MINT = 2_000
TARGET_VERIFY = 20_000
PASSWORD = "bench-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(pid: int, cpu: int) -> None:
    """Pin a process to one CPU (best effort: a machine with one CPU shares it)."""
    cpus = os.sched_getaffinity(0) if pid == 0 else set(range(psutil.cpu_count() or 1))
    os.sched_setaffinity(pid, {cpu if cpu in cpus else min(cpus)})


def rate(fn: Any, items: list[Any], seconds: float) -> tuple[float, int]:
    """Call fn over items (cycling) for `seconds`; return (calls/s, calls)."""
    n, start, deadline = 0, time.perf_counter(), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for item in items[n % len(items) : n % len(items) + 200]:
            fn(item)
            n += 1
    return n / (time.perf_counter() - start), n


async def arate(fn: Any, items: list[Any], limit: float) -> tuple[float, int]:
    """Await fn over each item once (or until `limit` seconds); return (calls/s, calls)."""
    n, start = 0, time.perf_counter()
    for item in items:
        await fn(item)
        n += 1
        if n % 256 == 0 and time.perf_counter() - start > limit:
            break
    return n / (time.perf_counter() - start), n


def start_control(url: str, home: Path, settings: ControlSettings, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        OA_DATABASE_URL=url,
        OA_HOME=str(home),
        OA_CONTROL_ISSUER=settings.issuer,
        OA_CONTROL_SERVICE_TOKEN=settings.service_token,
        OA_CONTROL_KEY_SECRET=settings.key_secret.decode(),
    )
    proc = subprocess.Popen(
        [benchlib.python(), "-m", "oa.cli.main", "control", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"control exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError("control did not become healthy")


async def http_mint(
    base: str, session_token: str, seconds: float, concurrency: int
) -> tuple[float, int, int]:
    import aiohttp

    headers = {"Authorization": f"Bearer {session_token}", "Content-Type": "application/json"}
    ok = failed = 0
    deadline = time.perf_counter() + seconds

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        while time.perf_counter() < deadline:
            async with s.post(f"{base}/api/sync/token", data=b"{}", headers=headers) as r:
                await r.read()
                if r.status == 200:
                    ok += 1
                else:
                    failed += 1

    start = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return ok / (time.perf_counter() - start), ok, failed


async def jwks_document(url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url) as r:
        doc: dict[str, Any] = await r.json()
        return doc


def raw_verifier(jwks_doc: dict[str, Any]) -> Any:
    """Bare ES256 verification with cryptography: the ceiling for phase 3."""
    import jwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks_doc["keys"]}

    def verify(token: str) -> None:
        h, p, s = token.split(".")
        kid = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["kid"]
        sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        keys[kid].verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))

    return verify


async def run(url: str, seconds: float, tokens: int, concurrency: int) -> dict[str, Any]:
    settings = ControlSettings(
        issuer="http://127.0.0.1",
        key_secret=secrets.token_urlsafe(32).encode(),
        service_token=secrets.token_urlsafe(32),
    )
    db = await Database.connect(url, min_size=1, max_size=4)
    accounts = Accounts(db, settings)
    await accounts.add_user("bench@example.com", PASSWORD, org="bench")
    keyring = Keyring(db, settings)
    await keyring.start()
    minting = SyncTokens(db, keyring, settings)
    signed_in = await accounts.sign_in("bench@example.com", PASSWORD)
    session = await accounts.authenticate(signed_in.session_token)
    results: dict[str, Any] = {}

    pin(0, 1)  # this process: one core (phases 1, 3, 4, 5 are single-threaded anyway)
    with console.status("mint, in process"):
        results["mint_sign"], _ = rate(lambda _: minting.sign(session), [None], seconds)

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="oa-bench-auth-"))
    issuer_settings = ControlSettings(
        issuer=f"http://127.0.0.1:{port}",
        key_secret=settings.key_secret,
        service_token=settings.service_token,
    )
    proc = start_control(url, home, issuer_settings, port)
    try:
        pin(proc.pid, 0)
        base = f"http://127.0.0.1:{port}"
        meter = benchlib.CpuMeter()
        meter.watch("control", lambda: [psutil.Process(proc.pid)])
        meter.watch("client", lambda: [psutil.Process()])  # this process drives the HTTP clients
        meter.start()
        with console.status(f"mint over HTTP ({concurrency} concurrent clients)"):
            results["mint_http"], _ok, n_fail = await http_mint(
                base, signed_in.session_token, seconds, concurrency
            )
        meter.stop()
        results["mint_http_control_cores"] = meter.shares()["control"]
        results["mint_http_cores"], results["mint_http_peaks"] = meter.shares(), meter.peaks()
        results["mint_http_failed"] = n_fail

        issuer_ring = SyncTokens(db, keyring, issuer_settings)
        with console.status(f"minting {tokens} distinct tokens to verify"):
            toks = [issuer_ring.sign(session).token for _ in range(tokens)]
        jwks = JwksCache(f"{base}/.well-known/jwks.json")
        await jwks.refresh(force=True)
        source = HttpRevocationSource(f"{base}/api/sync/revocations", settings.service_token)
        revs = RevocationList(source)
        await revs.refresh()
        verifier = SyncTokenVerifier(
            VerifierConfig(issuer=issuer_settings.issuer, audience="oa-khala-sync", cache_size=tokens * 2),
            jwks,
            revs,
        )
        with console.status("verify, first sight (signature checked)"):
            results["verify_first"], n_first = await arate(verifier.verify, toks, seconds * 3)
        with console.status("verify, repeat presentation"):
            results["verify_repeat"], _ = await arate(verifier.verify, toks[:n_first], seconds * 3)
        doc = await jwks_document(f"{base}/.well-known/jwks.json")
        with console.status("bare ES256 verification (ceiling)"):
            results["verify_ceiling"], _ = rate(raw_verifier(doc), toks, seconds)
        await jwks.aclose()
        await source.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await keyring.stop()
        await db.close()
    results["tokens"] = tokens
    return results


def report(r: dict[str, Any]) -> None:
    table = Table(title="oa bench auth: sync tokens on one core")
    for col in ("phase", "per second", "target", "met", "ratio", "note"):
        table.add_column(col, justify="right" if col in ("per second", "target", "ratio") else "left")

    def row(name: str, value: float, target: int | None, note: str) -> None:
        ratio = f"{value / target:.2f}x" if target else "-"
        met = benchlib.met_cell(value >= target if target else None)
        table.add_row(name, f"{value:,.0f}", f"{target:,}" if target else "-", met, ratio, note)

    row("minted: claims + ES256 sign (in process)", r["mint_sign"], TARGET_MINT, "control's signing core")
    row(
        "minted: POST /api/sync/token (HTTP, end to end)",
        r["mint_http"],
        TARGET_MINT,
        f"{r['mint_http_failed']} failed; "
        + benchlib.cores_cell(r["mint_http_cores"], r["mint_http_peaks"], ("client",), ("control",)),
    )
    row("verified: first sight (signature checked)", r["verify_first"], TARGET_VERIFY, "warm JWKS cache")
    row(
        "verified: repeat presentation (cached)",
        r["verify_repeat"],
        TARGET_VERIFY,
        "time+revocation re-checked",
    )
    row("ceiling: bare ES256 verify (OpenSSL)", r["verify_ceiling"], None, "no JWT parsing or claims")
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.tokens = 1.0, 3_000
    import uvloop

    def measure() -> dict[str, Any]:
        with benchlib.postgres() as pg, benchlib.database(pg.admin_url, "oa_bench_auth") as url:
            migrate(url)
            results = uvloop.run(run(url, args.seconds, args.tokens, args.concurrency))
        report(results)
        return {"targets": {"mint": TARGET_MINT, "verify": TARGET_VERIFY}, **results}

    benchlib.save_results("auth", measure)


if __name__ == "__main__":
    main()
