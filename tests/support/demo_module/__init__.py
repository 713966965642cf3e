"""A small module for tests: one table, one migration branch, routes and an event.

Other test suites (e2e, GraphQL) build apps with it, so keep its surface stable: the
``demo_note`` table, ``/api/v1/demo/notes`` (POST creates and publishes
``demo.note.created``, GET lists from the read session, GET ``/{id}`` answers 404 with
code ``demo_note_not_found``) and the ``demo`` migration branch.
"""

from __future__ import annotations

from pathlib import Path

from engineroom.core.module import Module
from tests.support.demo_module.router import router

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

demo_module = Module(
    name="demo",
    routers=(router,),
    migrations=MIGRATIONS_DIR,
    openapi_tag="demo",
    description="Notes, for tests.",
)

__all__ = ["MIGRATIONS_DIR", "demo_module"]
