"""Sync scopes are the Khala topics. A token never carries more than its holder may see.

Control may not import Khala: it reads the topic names from the proto catalog
(`oa.catalog`, generated from proto/oa/sync/v1/catalog.proto), as Khala does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from oa.catalog import TOPIC_NAMES
from oa.exceptions import Forbidden, InvalidRequest

SYNC_SCOPES: tuple[str, ...] = TOPIC_NAMES
DEFAULT_MEMBER_SCOPES: tuple[str, ...] = SYNC_SCOPES


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    """Known scope names, deduplicated, in catalog order; unknown names are a 400."""
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SYNC_SCOPES]
    if unknown:
        raise InvalidRequest(
            f"unknown sync scope(s): {', '.join(unknown)}; known: {', '.join(SYNC_SCOPES)}",
            {"unknown_scopes": unknown, "known_scopes": list(SYNC_SCOPES)},
        )
    return [s for s in SYNC_SCOPES if s in wanted]


def narrow(requested: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    """The scopes to put in a token: all allowed when none are asked for, else exactly the
    asked ones, which must all be allowed (asking for more is a 403 naming them)."""
    allowed_set = set(allowed)
    if requested is None:
        granted = [s for s in SYNC_SCOPES if s in allowed_set]
    else:
        wanted = validate_scopes(requested)
        denied = [s for s in wanted if s not in allowed_set]
        if denied:
            raise Forbidden(
                f"you may not sync {', '.join(denied)}; ask only for scopes you were granted",
                {"denied_scopes": denied, "allowed_scopes": [s for s in SYNC_SCOPES if s in allowed_set]},
            )
        granted = wanted
    if not granted:
        raise Forbidden(
            "you were granted no sync scopes in this organization; ask an operator",
            {"denied_scopes": list(requested or []), "allowed_scopes": []},
        )
    return granted
