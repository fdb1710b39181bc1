"""Example applications; importable as ``examples.NAME`` by the tests (run them as scripts)."""
