"""One deployment per OA_HOME: the claim, what a second start is told, and the stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oa.deployment import DeploymentRunning, LocalDeployment


def test_a_second_claim_names_the_first_even_while_it_starts(tmp_path: Path) -> None:
    dep = LocalDeployment(tmp_path)
    with dep.claim():
        with pytest.raises(DeploymentRunning) as starting, dep.claim():
            pass
        assert f"pid {os.getpid()}" in str(starting.value)  # before deployment.env exists
        dep.write_env({"OA_RUNTIME_URL": "http://127.0.0.1:1234", "OA_PID": str(os.getpid())})
        with pytest.raises(DeploymentRunning) as running, dep.claim():
            pass
        assert "OA_RUNTIME_URL=http://127.0.0.1:1234" in str(running.value)
    assert not dep.env_file.exists()  # the stop removed it
    with dep.claim():  # and the home is free again
        pass
