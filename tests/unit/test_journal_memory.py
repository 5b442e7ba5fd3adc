"""The journal contract against the in-memory reference backend (no database)."""

from __future__ import annotations

import pytest

from tests.contract.journal_contract import JournalBackend, JournalContract
from tests.contract.memory_journal import MemoryJournal


class TestMemoryJournal(JournalContract):
    @pytest.fixture
    def journal(self) -> JournalBackend:
        return MemoryJournal()
