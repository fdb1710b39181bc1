"""The test suite: one package, so every module is imported by its full name (``tests.…``).

harness/  the throwaway servers and apps the tests and benchmarks/ start (and their own tests)
unit/     one piece at a time: Session, keys and ids, setup() checks, transports, masking
stores/   every store through the middleware (the contract), each store's own tests, faults
interop/  with the real aiohttp-session and aiohttp-security packages
system/   the whole thing as users run it: examples, docs, browser, load, processes, clusters

conftest.py (here, so it applies to every folder) holds the store fixtures and app helpers.
"""
