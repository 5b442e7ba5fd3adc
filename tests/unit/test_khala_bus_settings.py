"""OA_KHALA_BUS / OA_KHALA_NATS_URL / OA_KHALA_BUS_SUBJECT and OA_KHALA_READ_URL become
KhalaSettings fields at the entry point (`KhalaSettings.from_env`), refused clearly when bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from oa.khala.settings import KhalaSettings
from oa.khala.sync.bus_settings import DEFAULT_BUS_SUBJECT, DEFAULT_NATS_URL, BusSettings

ENV = {"OA_CONTROL_URL": "http://127.0.0.1:8788"}


def settings(**env: str) -> KhalaSettings:
    return KhalaSettings.from_env({**ENV, **env}, database_url="postgresql://x", home=Path("."))


def test_postgres_alone_is_the_default() -> None:
    assert settings().bus is None
    assert settings(OA_KHALA_BUS="postgres").bus is None
    assert settings(OA_KHALA_BUS=" Postgres ").bus is None


def test_nats_takes_its_url_and_subject() -> None:
    assert settings(OA_KHALA_BUS="nats").bus == BusSettings(DEFAULT_NATS_URL, DEFAULT_BUS_SUBJECT)
    bus = settings(OA_KHALA_BUS="nats", OA_KHALA_NATS_URL="nats://n1:4223", OA_KHALA_BUS_SUBJECT="oa.db2")
    assert bus.bus == BusSettings("nats://n1:4223", "oa.db2")


def test_the_read_replica_is_a_field() -> None:
    assert settings().read_url is None
    assert settings(OA_KHALA_READ_URL=" postgresql://standby/oa ").read_url == "postgresql://standby/oa"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OA_KHALA_BUS": "kafka"},
            r"OA_KHALA_BUS='kafka' is not known: use postgres \(the default\) or nats",
        ),
        (
            {"OA_KHALA_BUS": "nats", "OA_KHALA_NATS_URL": "127.0.0.1:4222"},
            r"OA_KHALA_NATS_URL='127.0.0.1:4222': give the NATS server as nats://host:port",
        ),
        (
            {"OA_KHALA_BUS": "nats", "OA_KHALA_BUS_SUBJECT": "oa.>"},
            r"OA_KHALA_BUS_SUBJECT='oa.>': use dot-separated tokens",
        ),
    ],
)
def test_bad_bus_settings_are_refused_saying_how_to_fix_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**env)
