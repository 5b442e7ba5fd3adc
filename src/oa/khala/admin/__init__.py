"""Khala's admin API (`/admin/v1`): what operators and the MCP agent gateway may ask of a deployment.

It lives in the sync server and shares its SELECT-only role on `khala`: it can read
documents, heads and the journal, record grants and audit rows in `khala_admin`, and
*request* a rebuild or prune, which the projector executes. The deployment's class
(`dev` or `prod`) comes from the server's own configuration, never from a caller.
"""
