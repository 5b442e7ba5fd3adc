"""Verifying sync tokens: Khala trusts only what control signed (DESIGN.md invariant 4).

This package imports nothing from `oa.control` or `oa.runtime`: it learns keys from
control's JWKS over HTTP and revocations from control's feed, like any other verifier.
"""

from oa.khala.auth.jwks import JwksCache, KeySet, StaticKeys, VerificationKey
from oa.khala.auth.revocations import HttpRevocationSource, Revocation, RevocationList
from oa.khala.auth.verifier import SyncClaims, SyncTokenVerifier, VerifierConfig

__all__ = [
    "HttpRevocationSource",
    "JwksCache",
    "KeySet",
    "Revocation",
    "RevocationList",
    "StaticKeys",
    "SyncClaims",
    "SyncTokenVerifier",
    "VerificationKey",
    "VerifierConfig",
]
