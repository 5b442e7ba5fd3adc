"""Spend reservations: ids, their state machine, and what settling one does to the budget.

    reserved ──commit──▶ committed
    reserved ──release─▶ released
    reserved ──deadline passed (sweeper)──▶ reconcile_required ──resolve──▶ committed|released

A repeat of the same settlement is an idempotent replay; commit after release, release
after commit, or a commit with a different amount is a 409 that says which. A reservation
id is a hash of `(authorization, run, tool call)`, the key it is unique on, so a retried
reserve finds its own reservation. All amounts are integer sats; `MAX_SATS` (the bitcoin
supply) bounds every amount, so sums of three never leave a signed 64-bit integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from oa.canonical import canonical_json, sha256_hex
from oa.exceptions import IdempotencyConflict, InvalidRequest, InvalidTransition

MAX_SATS = 2_100_000_000_000_000


class ReservationState(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    RECONCILE_REQUIRED = "reconcile_required"


R = ReservationState


def reservation_id(authorization_id: str, run_id: str, tool_call_id: str) -> str:
    return "rsv_" + sha256_hex(canonical_json([authorization_id, run_id, tool_call_id]))[:32]


@dataclass(frozen=True)
class Settlement:
    """What a commit/release/resolve does: the new state, and the budget deltas.

    `replay` means it already happened (nothing to write)."""

    state: ReservationState
    committed_sats: int | None
    spent_delta: int = 0
    reserved_delta: int = 0
    day_delta: int = 0  # applied only if the reservation counted against the current day
    replay: bool = False


def settle(
    state: ReservationState,
    amount: int,
    committed: int | None,
    action: str,
    commit_amount: int | None,
    *,
    resolving: bool = False,
) -> Settlement:
    """Plan `action` (commit or release) on a reservation of `amount` in `state`.

    `resolving` is the reconcile path: it acts on `reconcile_required` instead of `reserved`.
    """
    want = R.COMMITTED if action == "commit" else R.RELEASED
    if commit_amount is not None and action == "commit" and not 0 <= commit_amount <= amount:
        raise InvalidRequest(
            f"amount_sats {commit_amount} must be between 0 and the reserved {amount}",
            {"field": "amount_sats", "reserved_sats": amount},
        )
    final = amount if commit_amount is None else commit_amount
    if state is want:
        if action == "commit" and commit_amount is not None and committed != commit_amount:
            raise IdempotencyConflict(
                f"the reservation was already committed with {committed} sats, not {commit_amount}",
                {"committed_sats": committed, "amount_sats": commit_amount},
            )
        return Settlement(state, committed, replay=True)
    source = R.RECONCILE_REQUIRED if resolving else R.RESERVED
    if state is not source:
        hint = {
            R.COMMITTED: "it was committed; a committed reservation cannot be released",
            R.RELEASED: "it was released; a released reservation cannot be committed",
            R.RECONCILE_REQUIRED: "it passed its deadline and needs reconciliation "
            "(`oa spend reconcile` or POST .../resolve)",
            R.RESERVED: "it is still reserved; commit or release it instead of resolving",
        }[state]
        raise InvalidTransition(
            f"cannot {action if not resolving else 'resolve'} a {state.value} reservation: {hint}",
            {"state": state.value, "action": action, "allowed_from": source.value},
        )
    if want is R.COMMITTED:
        return Settlement(want, final, spent_delta=final, reserved_delta=-amount, day_delta=final - amount)
    return Settlement(want, None, reserved_delta=-amount, day_delta=-amount)
