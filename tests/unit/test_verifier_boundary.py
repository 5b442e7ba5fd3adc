"""The verifier is Khala's: it must not import control or the runtime, and it must agree
with control about which sync scopes exist."""

from __future__ import annotations

import ast
from pathlib import Path

import oa.khala.auth
from oa.control.domain.scopes import SYNC_SCOPES
from oa.khala.topics import TOPIC_NAMES


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_verifier_imports_nothing_from_control_or_runtime() -> None:
    files = sorted(Path(oa.khala.auth.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"verifier.py", "jwks.py", "revocations.py"}
    for f in files:
        bad = [m for m in imported_modules(f) if m.startswith(("oa.control", "oa.runtime", "oa.agent"))]
        assert not bad, f"{f.name} imports {bad}"


def test_control_scopes_are_the_khala_topics() -> None:
    assert tuple(SYNC_SCOPES) == tuple(TOPIC_NAMES)


def test_control_and_khala_agree_on_resources_and_audiences() -> None:
    from oa.control.domain.tokens import DEFAULT_AUDIENCES, DEFAULT_RESOURCE
    from oa.khala.sync.principal import HTTP_AUDIENCE, HTTP_AUDIENCES, SOCKET_AUDIENCES, SYNC_AUDIENCE

    assert dict(DEFAULT_AUDIENCES) == {"khala-sync": SYNC_AUDIENCE, "khala-http": HTTP_AUDIENCE}
    assert DEFAULT_AUDIENCES[DEFAULT_RESOURCE] == SYNC_AUDIENCE  # the default serves everything
    assert set(DEFAULT_AUDIENCES.values()) == HTTP_AUDIENCES and {SYNC_AUDIENCE} == SOCKET_AUDIENCES
