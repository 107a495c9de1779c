"""Fixtures shared by the test modules (never copied between them)."""
