"""Assignments and anchors: the rules, on the CJ database. No grpc here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.content_client import ContentClient
from cj_svc.engine.scales import SCALES, get_scale
from cj_svc.models import Anchor, Assignment
from cj_svc.references import ESSAY_KINDS, PROMPT_KINDS, RUBRIC_KINDS, Reference, check, unknown_assignment
from cj_svc.requests import RequestKey, remember
from mesh_server import database, errors, pages


def known_scale(key: str, field: str = "grade_scale") -> str:
    if key not in SCALES:
        raise errors.InvalidArgument(
            f"unknown grade scale {key!r}; known scales: {', '.join(sorted(SCALES))}", field=field
        )
    return key


def _assignment_references(prompt_id: str | None, rubric_id: str | None) -> list[Reference]:
    return [
        Reference("student_prompt_storage_id", "the student prompt", prompt_id or "", PROMPT_KINDS),
        Reference("judge_rubric_storage_id", "the judge rubric", rubric_id or "", RUBRIC_KINDS),
    ]


@dataclass
class AdminStore:
    sessions: async_sessionmaker[AsyncSession]
    content: ContentClient

    async def _check_stored(self, *references: Reference) -> None:
        wanted = [r for r in references if r.storage_id]
        if wanted:
            check(wanted, await self.content.held([r.storage_id for r in wanted]))

    async def create_assignment(
        self,
        assignment_id: str,
        grade_scale: str,
        course_code: str = "",
        instructions: str = "",
        student_prompt_storage_id: str = "",
        judge_rubric_storage_id: str = "",
        request: RequestKey | None = None,
    ) -> Assignment:
        known_scale(grade_scale)
        await self._check_stored(*_assignment_references(student_prompt_storage_id, judge_rubric_storage_id))
        now = datetime.now(UTC)
        row = Assignment(
            assignment_id=assignment_id,
            course_code=course_code,
            instructions=instructions,
            grade_scale=grade_scale,
            student_prompt_storage_id=student_prompt_storage_id or None,
            judge_rubric_storage_id=judge_rubric_storage_id or None,
            created_at=now,
            updated_at=now,
        )
        try:

            async def transaction(session: AsyncSession) -> Any:
                session.add(row)
                remember(session, request)

            await database.write(self.sessions, transaction)
        except IntegrityError:
            raise errors.AlreadyExists(
                f"assignment {assignment_id!r} exists already; update it instead", field="assignment_id"
            ) from None
        return row

    async def get_assignment(self, assignment_id: str) -> Assignment:
        async with self.sessions() as session:
            row = await session.get(Assignment, assignment_id)
        if row is None:
            raise unknown_assignment(assignment_id)
        return row

    async def list_assignments(self, page_size: int, page_token: str) -> tuple[list[Assignment], str]:
        size = page_size or 100
        after = pages.position("assignments", page_token)
        async with self.sessions() as session:
            query = select(Assignment).where(Assignment.assignment_id > after).order_by(Assignment.assignment_id)
            rows = list((await session.execute(query.limit(size + 1))).scalars())
        more = len(rows) > size
        rows = rows[:size]
        return rows, pages.next_token("assignments", rows[-1].assignment_id if more else "")

    async def update_assignment(
        self, assignment_id: str, request: RequestKey | None = None, **changes: str | None
    ) -> Assignment:
        given = {k: v for k, v in changes.items() if v is not None}
        if "grade_scale" in given:
            known_scale(given["grade_scale"])
        await self._check_stored(
            *_assignment_references(given.get("student_prompt_storage_id"), given.get("judge_rubric_storage_id"))
        )

        async def transaction(session: AsyncSession) -> Any:
            row = await session.get(Assignment, assignment_id, with_for_update=True)
            if row is None:
                raise unknown_assignment(assignment_id)
            scale = given.pop("grade_scale", None)
            if scale is not None and scale != row.grade_scale:
                raise errors.FailedPrecondition(
                    f"the grade scale of {assignment_id!r} is {row.grade_scale} and cannot change once set; "
                    "create a new assignment for another scale",
                    field="grade_scale",
                )
            for key, value in given.items():
                setattr(row, key, value or (None if key.endswith("storage_id") else ""))
            row.updated_at = datetime.now(UTC)
            remember(session, request)
            return row

        return await database.write(self.sessions, transaction)

    async def delete_assignment(self, assignment_id: str, request: RequestKey | None = None) -> None:
        async def transaction(session: AsyncSession) -> Any:
            row = await session.get(Assignment, assignment_id)
            if row is None:
                raise unknown_assignment(assignment_id)
            for anchor in (
                await session.execute(select(Anchor).where(Anchor.assignment_id == assignment_id))
            ).scalars():
                await session.delete(anchor)
            await session.delete(row)
            remember(session, request)

        await database.write(self.sessions, transaction)

    async def register_anchor(
        self, assignment_id: str, label: str, grade: str, storage_id: str, request: RequestKey | None = None
    ) -> tuple[Anchor, bool]:
        assignment = await self.get_assignment(assignment_id)
        scale = get_scale(assignment.grade_scale)
        try:
            scale.index(grade)
        except ValueError as error:
            raise errors.InvalidArgument(str(error), field="grade") from None
        await self._check_stored(Reference("storage_id", f"anchor {label}", storage_id, ESSAY_KINDS))
        now = datetime.now(UTC)

        async def transaction(session: AsyncSession) -> Any:
            query = select(Anchor).where(
                Anchor.assignment_id == assignment_id, Anchor.label == label, Anchor.grade_scale == scale.key
            )
            row = (await session.execute(query)).scalar_one_or_none()
            created = row is None
            if row is None:
                row = Anchor(
                    assignment_id=assignment_id, label=label, grade_scale=scale.key, created_at=now, grade=grade,
                    storage_id=storage_id, updated_at=now,
                )  # fmt: skip
                session.add(row)
            else:
                row.grade, row.storage_id, row.updated_at = grade, storage_id, now
            remember(session, request)
            return row, created

        return await database.write(self.sessions, transaction)

    async def list_anchors(self, assignment_id: str) -> list[Anchor]:
        assignment = await self.get_assignment(assignment_id)
        async with self.sessions() as session:
            query = (
                select(Anchor)
                .where(Anchor.assignment_id == assignment_id, Anchor.grade_scale == assignment.grade_scale)
                .order_by(Anchor.label)
            )
            return list((await session.execute(query)).scalars())

    async def get_anchor(self, assignment_id: str, label: str) -> Anchor:
        anchors = {row.label: row for row in await self.list_anchors(assignment_id)}
        if label not in anchors:
            raise errors.NotFound(f"assignment {assignment_id!r} has no anchor {label!r}", field="label")
        return anchors[label]

    async def delete_anchor(self, assignment_id: str, label: str, request: RequestKey | None = None) -> None:
        await self.get_assignment(assignment_id)

        async def transaction(session: AsyncSession) -> Any:
            rows = list(
                (
                    await session.execute(
                        select(Anchor).where(Anchor.assignment_id == assignment_id, Anchor.label == label)
                    )
                ).scalars()
            )
            if not rows:
                raise errors.NotFound(f"assignment {assignment_id!r} has no anchor {label!r}", field="label")
            for row in rows:
                await session.delete(row)
            remember(session, request)

        await database.write(self.sessions, transaction)
