"""OA_KHALA_URLS: the Khala nodes the dashboard may fail over between (KhalaSettings.sync_urls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oa.khala.settings import KhalaSettings

ENV = {"OA_CONTROL_URL": "http://127.0.0.1:8788"}


def settings(value: str) -> KhalaSettings:
    return KhalaSettings.from_env(
        {**ENV, "OA_KHALA_URLS": value}, database_url="postgresql://x", home=Path(".")
    )


def test_nodes_are_listed_trimmed_in_order() -> None:
    got = settings(" http://127.0.0.1:8789/ ,https://khala-b.example.com:443,").sync_urls
    assert got == ("http://127.0.0.1:8789", "https://khala-b.example.com:443")
    assert KhalaSettings.from_env(ENV, database_url="postgresql://x", home=Path(".")).sync_urls == ()


@pytest.mark.parametrize("value", ["127.0.0.1:8789", "ws://127.0.0.1:8789", "http://a b"])
def test_a_bad_node_url_is_refused_saying_how_to_fix_it(value: str) -> None:
    with pytest.raises(
        ValueError, match=r"OA_KHALA_URLS=.*not an http\(s\) base URL; list every node as http://host:port"
    ):
        settings(value)
