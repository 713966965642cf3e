"""``/api/v1/demo/notes``: one write route (unit of work, event) and two reads."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from engineroom.core.deps import ReadSessionDep, SessionDep
from engineroom.core.errors import error_responses
from tests.support.demo_module import service
from tests.support.demo_module.models import DemoNote

router = APIRouter(prefix="/api/v1/demo", tags=["demo"])


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


class NoteRead(BaseModel):
    id: uuid.UUID
    title: str
    created_at: datetime

    @classmethod
    def of(cls, note: DemoNote) -> NoteRead:
        return cls(id=note.id, title=note.title, created_at=note.created_at)


class NoteList(BaseModel):
    notes: list[NoteRead]


@router.post(
    "/notes",
    status_code=201,
    response_model=NoteRead,
    responses=error_responses(service.DemoNoteExists),
)
async def create_note(body: NoteCreate, session: SessionDep) -> NoteRead:
    return NoteRead.of(await service.create_note(session, title=body.title))


@router.get("/notes", response_model=NoteList)
async def list_notes(session: ReadSessionDep) -> NoteList:
    return NoteList(notes=[NoteRead.of(note) for note in await service.list_notes(session)])


@router.get(
    "/notes/{note_id}",
    response_model=NoteRead,
    responses=error_responses(service.DemoNoteNotFound),
)
async def get_note(note_id: uuid.UUID, session: ReadSessionDep) -> NoteRead:
    return NoteRead.of(await service.note_or_404(session, note_id))
