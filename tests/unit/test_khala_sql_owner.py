"""Only Khala's store issues SQL against Khala's schemas (`khala`, `khala_admin`).

The room test sees imports, not SQL strings: the runtime once wrote `khala.*` tables from
its rebuild, prune and request code. This test reads every string literal in `src/oa`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "oa"
# A schema-qualified table/sequence named in SQL: khala.documents, khala_admin.requests, ...
KHALA_SQL = re.compile(
    r"\b(FROM|INTO|UPDATE|JOIN|TRUNCATE|TABLE|ON|nextval\(|setval\(|EXECUTE)\s*'?(khala|khala_admin)\.[a-z_]+",
    re.IGNORECASE,
)
OWNERS = {
    # Khala's store: the only door to its tables.
    "oa/khala/store",
    # The migrations create and alter the schema.
    "oa/store/migrations",
    # The admin room's own store: the gate role's tables (khala_admin.*, written only through
    # SECURITY DEFINER functions) and its read-only views of `khala` for operators. It is
    # Khala's store for the admin API, on a pool of its own role; kept there beside the API
    # it serves rather than moved while the admin API itself is being reworked.
    "oa/khala/admin/store.py",
}


def owned(path: Path) -> bool:
    rel = path.relative_to(SRC.parent).as_posix()
    return any(rel == o or rel.startswith(o + "/") for o in OWNERS)


def khala_sql(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and KHALA_SQL.search(node.value):
            found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.value.strip()[:80]}")
    return found


def test_only_khalas_store_names_khalas_tables_in_sql() -> None:
    bad = [hit for path in sorted(SRC.rglob("*.py")) if not owned(path) for hit in khala_sql(path)]
    assert not bad, "SQL against Khala's schemas outside oa.khala.store:\n" + "\n".join(bad)


def test_the_check_sees_such_sql(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text('Q = "SELECT 1 FROM khala.checkpoints c JOIN khala.state s ON true"\n')
    assert khala_sql.__code__  # the same scanner as above
    tree_hits = [n for n in ast.walk(ast.parse(sample.read_text())) if isinstance(n, ast.Constant)]
    assert any(KHALA_SQL.search(str(n.value)) for n in tree_hits)
