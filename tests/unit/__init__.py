"""Unit tests: one piece of the library at a time, no server process."""
