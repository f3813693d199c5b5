"""Helpers shared by every test suite (import as `support.<module>`; `tests/` is on pytest's pythonpath)."""
