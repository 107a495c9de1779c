"""Alembic migrations of the store schema (``mailbox-appliance db upgrade`` runs them).

They live inside the package so that a normal, non-editable install carries them.
"""
