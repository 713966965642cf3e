"""Alembic migrations: the shared environment, the runner and the kernel's revisions."""
