"""OpenAgents runtime, Khala sync layer, control, and constrained agent mode.

Rooms (see DESIGN.md): `oa.runtime` owns the truth, `oa.khala` serves derived read models,
`oa.control` is the auth authority, `oa.agent` is the MCP gateway, `oa.store` is Postgres.
"""

__version__ = "0.1.0"
