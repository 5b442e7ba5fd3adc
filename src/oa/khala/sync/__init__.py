"""Khala's live sync: the WebSocket protocol, the fan-out hub, HTTP hydration."""
