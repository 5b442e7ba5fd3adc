"""Which deployment an agent talks to, decided from env files and the environment (pure).

Sources, later ones winning: `.env`, then `.env.local` (or only `--env-file`), then the
process environment. `KHALA_SELF_HOSTED_URL` and `KHALA_SELF_HOSTED_ADMIN_KEY` select a
deployment together; one alone, or either mixed with another selector, is refused rather
than guessed at. Neither, or `KHALA_AGENT_MODE=anonymous`, means the agent's own local
deployment; anonymous mode ignores production selectors (and says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

URL = "KHALA_SELF_HOSTED_URL"
KEY = "KHALA_SELF_HOSTED_ADMIN_KEY"
MODE = "KHALA_AGENT_MODE"
# Selectors of other deployment styles (cloud names, the seed's Convex variables): never mixed.
OTHER_SELECTORS = (
    "KHALA_DEPLOYMENT",
    "KHALA_URL",
    "CONVEX_DEPLOYMENT",
    "CONVEX_SELF_HOSTED_URL",
    "CONVEX_SELF_HOSTED_ADMIN_KEY",
)
PROD_SELECTORS = (URL, KEY, *OTHER_SELECTORS)


class SelectionError(Exception):
    """The environment selects no deployment unambiguously; the message names the variables."""


@dataclass(frozen=True)
class SelfHosted:
    url: str
    admin_key: str
    runtime_url: str | None
    caller_secret: str | None  # OA_RUNTIME_CALLER_SECRET, else read from OA_HOME
    home: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Anonymous:
    warnings: tuple[str, ...] = ()


Selection = SelfHosted | Anonymous


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, `export ` prefixes and matching quotes allowed."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def env_files(cwd: Path, explicit: Path | None) -> list[Path]:
    if explicit is not None:
        if not explicit.is_file():
            raise SelectionError(f"--env-file {explicit} does not exist")
        return [explicit]
    return [p for p in (cwd / ".env", cwd / ".env.local") if p.is_file()]


def load_env(files: list[Path], process_env: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for f in files:
        merged.update(parse_env_file(f.read_text()))
    merged.update(process_env)
    return merged


def _set(env: Mapping[str, str], name: str) -> bool:
    return bool(env.get(name, "").strip())


def select(env: Mapping[str, str]) -> Selection:
    mode = env.get(MODE, "").strip()
    if mode and mode != "anonymous":
        raise SelectionError(f"{MODE} must be 'anonymous' or unset, not {mode!r}")
    present = [v for v in PROD_SELECTORS if _set(env, v)]
    if mode == "anonymous":
        warnings = (
            (
                f"{MODE}=anonymous: ignoring {', '.join(present)}; the agent uses its own local "
                "deployment (unset KHALA_AGENT_MODE to select that deployment instead)",
            )
            if present
            else ()
        )
        return Anonymous(warnings)
    has_url, has_key = _set(env, URL), _set(env, KEY)
    others = [v for v in OTHER_SELECTORS if _set(env, v)]
    if others:
        raise SelectionError(
            f"{', '.join(others)} cannot select a deployment here"
            + (f" and must not be mixed with {URL}/{KEY}" if has_url or has_key else "")
            + f": use {URL} and {KEY} together, or neither"
        )
    if has_url != has_key:
        found, missing = (URL, KEY) if has_url else (KEY, URL)
        raise SelectionError(
            f"{found} is set but {missing} is not: {URL} and {KEY} select a deployment together "
            f"(set both, or neither for the anonymous local deployment)"
        )
    if not has_url:
        return Anonymous(
            (f"no deployment selected ({URL}/{KEY} unset): using the anonymous local deployment",)
        )
    return SelfHosted(
        url=env[URL].strip().rstrip("/"),
        admin_key=env[KEY].strip(),
        runtime_url=(env.get("OA_RUNTIME_URL") or "").strip().rstrip("/") or None,
        caller_secret=(env.get("OA_RUNTIME_CALLER_SECRET") or "").strip() or None,
        home=(env.get("OA_HOME") or "").strip() or None,
    )
