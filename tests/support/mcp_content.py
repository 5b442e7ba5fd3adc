"""Typed access to MCP tool results for the tests."""

from __future__ import annotations

from mcp.types import CallToolResult, TextContent


def text_of(result: CallToolResult, index: int = 0) -> str:
    """The text of the `index`-th content item, which must be a `TextContent`."""
    item = result.content[index]
    assert isinstance(item, TextContent), f"expected text content, got {item!r}"
    return item.text
