"""The durable assessment workflow: waves of comparisons, judged concurrently, until the engine stops.

Everything that matters is in the database, so a restart resumes every unfinished batch:
- a comparison row is written (PENDING) before its pair is sent to the judge, and updated when the
  answer comes (only while still PENDING, so an answer is recorded once);
- after each wave the engine fits scores and decides whether to go on;
- finalization writes the results and moves FINALIZING -> COMPLETED in one transaction, so it
  happens exactly once.

Modules: `supervisor` (Workflow: this replica's batches, their leases, stop and cancel), `run`
(BatchRun: one batch's wave loop), `judging` (texts and judge calls), `store` (the run's SQL),
`finalize` (final numbers and results), `offload` (the engine's thread pool).
"""

from cj_svc.workflow.supervisor import Workflow

__all__ = ["Workflow"]
