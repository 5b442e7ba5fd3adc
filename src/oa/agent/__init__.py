"""The agent room: an MCP server for coding agents, constrained by construction.

It talks to deployments only through their public HTTP APIs (Khala's admin API, the
runtime's `/internal/v1`), never their internals or database. Agents get an anonymous
local deployment by default; production only with a live, audited change-control grant,
and what counts as production is decided by the deployment, never by the agent.
"""
