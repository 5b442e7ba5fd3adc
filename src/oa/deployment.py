"""The local deployment's files under `OA_HOME` (default `./.oa`).

`deployment.env` is how every client (CLI, scripts, agents) finds a running deployment;
`runtime-caller.secret` signs caller tokens for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalDeployment:
    home: Path

    @classmethod
    def from_env(cls) -> LocalDeployment:
        return cls(Path(os.environ.get("OA_HOME", ".oa")).resolve())

    @property
    def env_file(self) -> Path:
        return self.home / "deployment.env"

    @property
    def caller_secret_file(self) -> Path:
        return self.home / "runtime-caller.secret"

    def write_env(self, values: dict[str, str]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by `oa run`: selects this local deployment.",
            *(f"{k}={v}" for k, v in values.items()),
        ]
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.env_file)

    def read_env(self) -> dict[str, str]:
        if not self.env_file.exists():
            return {}
        values: dict[str, str] = {}
        for line in self.env_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        return values

    def runtime_url(self) -> str:
        url = os.environ.get("OA_RUNTIME_URL") or self.read_env().get("OA_RUNTIME_URL")
        if not url:
            raise SystemExit(
                f"no runtime found: {self.env_file} is missing. Start one with `make run` "
                "(or set OA_RUNTIME_URL)."
            )
        return url
