"""The rooms of DESIGN.md, checked on the imports themselves (a reader can trust the layout).

oa.store    imports nothing else from oa
oa.khala    never imports oa.runtime, oa.control or oa.agent
oa.control  never imports oa.runtime, oa.khala or oa.agent
oa.agent    uses only public clients: never runtime/khala/control internals
oa.runtime  writes Khala only through its store API (oa.khala.store, oa.khala.topics)
oa.http     the HTTP plumbing all three services share: neutral, imports no room
oa.bootstrap the composition root: above the services (builds each of them), below the CLI
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "oa"

# room -> prefixes it must never import
FORBIDDEN = {
    "store": ("oa.runtime", "oa.khala", "oa.control", "oa.agent", "oa.cli"),
    "khala": ("oa.runtime", "oa.control", "oa.agent", "oa.cli"),
    "control": ("oa.runtime", "oa.khala", "oa.agent", "oa.cli"),
    "agent": ("oa.khala", "oa.control", "oa.cli", "oa.store", "oa.runtime"),
    "runtime": ("oa.control", "oa.agent", "oa.cli", "oa.khala"),
    # Neutral like oa.exceptions, so every room may use it: it may use none of them.
    "http": ("oa.store", "oa.runtime", "oa.khala", "oa.control", "oa.agent", "oa.cli"),
    # The root builds runtime, control and Khala from their settings; the agent uses only
    # public clients, and the CLI is an entry point above the root.
    "bootstrap": ("oa.agent", "oa.cli"),
}
# The narrow doors a room may use anyway, and why.
ALLOWED = {
    # The projector is Khala's single writer: it uses Khala's store API (writes, generations,
    # upkeep, admin requests) and the topic catalog; never the sync server or its client.
    "runtime": ("oa.khala.store", "oa.khala.topics"),
    # The runtime's caller-signature contract (header name, how to sign) is public.
    "agent": ("oa.runtime.signing",),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_stay_inside_its_boundaries(room: str) -> None:
    bad: list[str] = []
    for path in sorted((SRC / room).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if not name.startswith(FORBIDDEN[room]):
                continue
            if name.startswith(ALLOWED.get(room, ())) or any(
                a.startswith(name + ".") for a in ALLOWED.get(room, ())
            ):
                continue
            bad.append(f"{path.relative_to(SRC.parent)} imports {name}")
    assert not bad, "\n".join(bad)
