"""The values a batch's life is told in: its states, its comparisons' statuses and winners.

StrEnums, stored in the database as their text and compared with it; the servicers turn them
into the contract's enums through one table each (`assessment_service`), where a value missing
from the table is an error rather than a silent 0.
"""

from __future__ import annotations

from enum import StrEnum


class BatchState(StrEnum):
    PENDING = "PENDING"  # accepted, not yet picked up by a replica
    RUNNING = "RUNNING"  # waves of comparisons are being judged
    FINALIZING = "FINALIZING"  # stopped; the final fit and grades are being computed
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_STATES = frozenset({BatchState.COMPLETED, BatchState.FAILED, BatchState.CANCELLED})
UNFINISHED_STATES = (BatchState.PENDING, BatchState.RUNNING, BatchState.FINALIZING)
# The states a batch may move to, each from the states it may leave.
ALLOWED_FROM: dict[BatchState, frozenset[BatchState]] = {
    BatchState.RUNNING: frozenset({BatchState.PENDING}),
    BatchState.FINALIZING: frozenset({BatchState.RUNNING}),
    BatchState.COMPLETED: frozenset({BatchState.FINALIZING}),
    BatchState.FAILED: frozenset({BatchState.PENDING, BatchState.RUNNING, BatchState.FINALIZING}),
    BatchState.CANCELLED: frozenset({BatchState.PENDING, BatchState.RUNNING}),
}


class ComparisonStatus(StrEnum):
    PENDING = "PENDING"  # written and sent to the judge (or to be sent again after a restart)
    DONE = "DONE"  # answered: it has a winner
    FAILED = "FAILED"  # the judge failed it for good: it has an error code
    CANCELLED = "CANCELLED"  # its batch was cancelled before it was answered


ANSWERED = (ComparisonStatus.DONE, ComparisonStatus.FAILED)


class JudgeMode(StrEnum):
    DIRECT = "DIRECT"  # one call per comparison
    BATCH = "BATCH"  # a wave as one job of the provider's batch API


class Winner(StrEnum):
    ESSAY_A = "essay_a"  # the essay shown first
    ESSAY_B = "essay_b"
