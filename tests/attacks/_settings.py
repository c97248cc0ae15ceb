"""Settings shared by the attack tests (imported by name: pytest puts this folder on sys.path)."""

ATTACK = {"steps": 1500, "tol": 1e-8, "memory_size": 50}
"""One attack setting shared by the tests, so that the attack compiles once per session."""
