"""Password hashing with Argon2id (argon2-cffi), and a decoy for unknown emails.

Verifying against a decoy hash when the email is unknown keeps the time of a failed
sign-in the same whether or not the account exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_CHARS = 10


@dataclass
class Passwords:
    time_cost: int = 3
    memory_kib: int = 65536
    _hasher: PasswordHasher = field(init=False, repr=False)
    _decoy: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._hasher = PasswordHasher(time_cost=self.time_cost, memory_cost=self.memory_kib)
        self._decoy = self._hasher.hash("decoy-password-never-matches")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored or self._decoy, password)) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
