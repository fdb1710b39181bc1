"""The public store contract kit (aiohttp_sessionkit.testing) run on every server store.

This is how a third-party store uses the kit, with one difference: ``server_store_factory``
is parametrized, so the one class below runs once per store kind of this project. Driver
files keep what only their driver can show (TTLs in Redis, DDL, indexes, pools).
"""

from __future__ import annotations

import pytest

from aiohttp_sessionkit import AbstractStore
from aiohttp_sessionkit.testing import StoreContract
from tests.conftest import StoreFactory


class TestServerStoreContract(StoreContract):
    @pytest.fixture
    def store(self, server_store_factory: StoreFactory) -> AbstractStore:
        return server_store_factory()  # the factory closes its stores after the test
