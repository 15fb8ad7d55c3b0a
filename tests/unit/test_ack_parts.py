"""How the acker splits a batch into parts applied at once: by occurrence, every ack once, in
the batch's order, and no part smaller than asked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.acker.acks import parts_of
from shared.contracts import ActionAck


def _ack(action_id: str) -> ActionAck:
    return ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": "t"},
            "data": {"actionId": action_id, "attempt": 1, "state": "SUCCEEDED"},
        }
    )


ACKS = {name: _ack(name) for name in "abcdefghijklmnop"}


@given(
    names=st.lists(st.sampled_from(sorted(ACKS)), max_size=60),
    most=st.integers(min_value=1, max_value=4),
    min_part=st.integers(min_value=1, max_value=8),
)
def test_parts_keep_each_occurrence_together_and_in_order(
    names: list[str], most: int, min_part: int
) -> None:
    acks = [ACKS[n] for n in names]
    parts = parts_of(acks, most, min_part)
    assert sorted(i for part in parts for i in part) == list(range(len(acks)))
    assert all(part == sorted(part) and part for part in parts) or not acks
    assert len(parts) <= max(1, min(most, len(acks) // min_part))
    owner = {acks[i].data.action_id: n for n, part in enumerate(parts) for i in part}
    for n, part in enumerate(parts):
        assert all(owner[acks[i].data.action_id] == n for i in part)


def test_a_batch_under_two_parts_worth_stays_whole() -> None:
    acks = [ACKS[n] for n in "abcdefghij"]
    assert parts_of(acks, 3, min_part=6) == [list(range(10))]
    assert len(parts_of(acks * 3, 3, min_part=6)) > 1  # 30 acks of ten occurrences
