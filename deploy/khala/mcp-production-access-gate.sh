#!/usr/bin/env sh
# The seed's production-access gate, kept at its path: a thin wrapper over `oa mcp gate`.
# Reads OA_KHALA_MCP_PROD_ACCESS_ENABLED=1, OA_CHANGE_TICKET, OA_MCP_PROD_ACCESS_REASON,
# OA_MCP_PROD_ACKNOWLEDGE_RISK=YES and OA_MCP_PROD_ACCESS_TTL_MINUTES (1-60); exits 1 when denied.
set -eu
if [ -n "${OA_BIN:-}" ]; then exec "$OA_BIN" mcp gate "$@"; fi
if command -v oa >/dev/null 2>&1; then exec oa mcp gate "$@"; fi
exec python3 -m oa.cli.main mcp gate "$@"
