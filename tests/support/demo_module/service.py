"""The demo module's business rules: a note's title is unique."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.errors import Conflict, NotFound
from engineroom.core.events import publish
from tests.support.demo_module.models import DemoNote

NOTE_CREATED = "demo.note.created"


class DemoNoteNotFound(NotFound):
    code = "demo_note_not_found"


class DemoNoteExists(Conflict):
    code = "demo_note_exists"


async def create_note(session: AsyncSession, *, title: str) -> DemoNote:
    taken = await session.scalar(select(DemoNote.id).where(DemoNote.title == title))
    if taken is not None:
        raise DemoNoteExists(f"a note titled {title!r} exists")
    note = DemoNote(title=title)
    session.add(note)
    await session.flush()
    publish(session, NOTE_CREATED, {"id": str(note.id), "title": note.title})
    return note


async def list_notes(session: AsyncSession) -> list[DemoNote]:
    result = await session.scalars(select(DemoNote).order_by(DemoNote.created_at, DemoNote.id))
    return list(result)


async def note_or_404(session: AsyncSession, note_id: uuid.UUID) -> DemoNote:
    note = await session.get(DemoNote, note_id)
    if note is None:
        raise DemoNoteNotFound(f"no note with id {note_id}")
    return note
