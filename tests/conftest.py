"""Shared fixtures. Tests mirror the package: tests/families/test_python.py tests
rngvault/families/python.py, tests/server/... the server, and so on."""
