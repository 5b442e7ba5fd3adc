#!/usr/bin/env sh
# The seed's production-access gate, kept at its path: a thin wrapper over `oa mcp gate`.
# Reads OA_KHALA_MCP_PROD_ACCESS_ENABLED=1, OA_CHANGE_TICKET, OA_MCP_PROD_ACCESS_REASON,
# OA_MCP_PROD_ACKNOWLEDGE_RISK=YES and OA_MCP_PROD_ACCESS_TTL_MINUTES (1-60); exits 1 when denied.
# Finds `oa` in this order: $OA_BIN, the project's own .venv (next to deploy/), PATH.
set -eu
if [ -n "${OA_BIN:-}" ]; then exec "$OA_BIN" mcp gate "$@"; fi
project=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
if [ -x "$project/.venv/bin/oa" ]; then exec "$project/.venv/bin/oa" mcp gate "$@"; fi
if command -v oa >/dev/null 2>&1; then exec oa mcp gate "$@"; fi
echo "cannot find the oa command: no $project/.venv/bin/oa and no oa on PATH." >&2
echo "Run \`make lint\` (or \`make run\`) in $project to create .venv, or set OA_BIN=/path/to/oa." >&2
exit 127
