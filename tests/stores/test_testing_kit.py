"""The public contract kit fails stores that break the contract, not only passes good ones.

``DictStore`` is the smallest honest store: a dict and ``ServerStore``'s own load and save,
the way a third-party driver would be written. Each broken store below breaks one rule of
the contract, the way a driver could get it wrong; the kit's matching test must catch it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from aiohttp_sessionkit import ServerStore
from aiohttp_sessionkit.testing import StoreContract


class DictStore(ServerStore):
    """Records in a dict: key -> (expiry on the monotonic clock, payload)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[float, bytes]] = {}

    def _live(self, key: str) -> bool:
        record = self.records.get(key)
        return record is not None and record[0] > time.monotonic()

    async def get(self, key: str) -> bytes | None:
        return self.records[key][1] if self._live(key) else None

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        if self._live(key):
            return False
        self.records[key] = (time.monotonic() + ttl, data)
        return True

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        if not self._live(key):
            return False
        self.records[key] = (time.monotonic() + ttl, data)
        return True

    async def remove(self, key: str) -> None:
        self.records.pop(key, None)

    async def purge_expired(self) -> int:
        expired = [key for key in self.records if not self._live(key)]
        for key in expired:
            del self.records[key]
        return len(expired)


class TestDictStore(StoreContract):
    """A minimal third-party store passes the whole kit."""

    @pytest.fixture
    def store(self) -> DictStore:
        return DictStore()


class MergingDictStore(DictStore):
    """DictStore with ``replace``: no await between the comparison and the write."""

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        if not self._live(key) or self.records[key][1] != expected:
            return False
        self.records[key] = (time.monotonic() + ttl, data)
        return True


class TestMergingDictStore(StoreContract):
    """A third-party store with replace passes the whole kit, its merging tests included."""

    @pytest.fixture
    def store(self) -> MergingDictStore:
        return MergingDictStore()


class ReplaceIgnoresExpected(MergingDictStore):
    """A plain update where a compare-and-swap belongs: concurrent saves overwrite each other."""

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        return await self.update(key, data, ttl)


class ReplaceRevives(MergingDictStore):
    """A compare-and-swap that writes a missing record: a late save undoes a logout."""

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        if not self._live(key):
            self.records[key] = (time.monotonic() + ttl, data)
            return True
        return await super().replace(key, expected, data, ttl)


class ReplaceComparesAPrefix(MergingDictStore):
    """A comparison that stops early (a fixed-size column, a C string at its first NUL)."""

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        if not self._live(key) or self.records[key][1][:64] != expected[:64]:
            return False
        self.records[key] = (time.monotonic() + ttl, data)
        return True


class UpdateCreates(DictStore):
    """An upsert where an update belongs: a late save brings back a logged-out session."""

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return await super().update(key, data, ttl) or await super().create(key, data, ttl)


class CreateOverwrites(DictStore):
    """A plain SET where a create-only write belongs."""

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        await self.remove(key)
        return await super().create(key, data, ttl)


class Truncates(DictStore):
    """A column too small for large sessions (MySQL's BLOB stops at 64 KiB)."""

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return await super().create(key, data[:65535], ttl)


class NeverExpires(DictStore):
    """A store that ignores the TTL."""

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return await super().create(key, data, 3600)


class MonthsAsUnixTime(DictStore):
    """memcached's rule applied by the backend: an expiry over 30 days is a Unix time."""

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return await super().create(key, data, ttl if ttl <= 30 * 86400 else -1)

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return await super().update(key, data, ttl if ttl <= 30 * 86400 else -1)


class KeepsDeleted(DictStore):
    """A delete that does nothing."""

    async def remove(self, key: str) -> None:
        return None


K = StoreContract
Check = Callable[[StoreContract, DictStore], Awaitable[None]]


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (UpdateCreates, K.test_a_logout_is_never_undone_by_a_late_save),
        (UpdateCreates, K.test_unknown_tokens_load_nothing_and_an_update_never_creates),
        (UpdateCreates, K.test_updates_racing_a_delete_never_bring_the_record_back),
        (CreateOverwrites, K.test_create_refuses_a_live_key_and_update_refuses_a_missing_one),
        (CreateOverwrites, K.test_concurrent_creates_of_one_key_let_exactly_one_win),
        (Truncates, K.test_binary_and_large_payloads_survive_unchanged),
        (MonthsAsUnixTime, K.test_a_lifetime_of_months_keeps_the_record),
        (KeepsDeleted, K.test_save_load_update_delete_round_trip),
        (KeepsDeleted, K.test_delete_is_idempotent),
        (ReplaceIgnoresExpected, K.test_replace_writes_only_over_the_expected_payload),
        (ReplaceIgnoresExpected, K.test_concurrent_replaces_from_one_payload_let_exactly_one_win),
        (ReplaceIgnoresExpected, K.test_concurrent_merging_saves_each_keep_their_change),
        (ReplaceRevives, K.test_replace_writes_only_over_the_expected_payload),
        (ReplaceRevives, K.test_a_merging_save_after_a_logout_writes_nothing),
        (ReplaceComparesAPrefix, K.test_replace_compares_whole_binary_payloads),
    ],
)  # fmt: skip
async def test_the_kit_catches_a_broken_store(broken: type[DictStore], check: Check) -> None:
    with pytest.raises(AssertionError):
        await check(StoreContract(), broken())
    # The same test passes on a sound store.
    await check(
        StoreContract(), MergingDictStore() if issubclass(broken, MergingDictStore) else DictStore()
    )


async def test_the_kit_catches_a_store_that_ignores_the_ttl() -> None:
    kit = StoreContract()
    with pytest.raises(AssertionError):
        await kit.test_expiry_hides_records_refuses_updates_and_frees_keys_for_the_purge(
            NeverExpires()
        )


def test_importing_the_package_does_not_import_pytest_or_the_kit() -> None:
    import subprocess

    code = (
        "import sys, aiohttp_sessionkit; "
        "print(sorted(m for m in ('pytest', 'aiohttp_sessionkit.testing', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_the_kit_says_a_store_without_replace_is_last_writer_wins() -> None:
    kit = StoreContract()
    with pytest.raises(pytest.skip.Exception, match="last-writer-wins"):
        await kit.test_concurrent_merging_saves_each_keep_their_change(DictStore())
    # And checks what such a store owes instead: a save asked to merge writes its payload.
    await kit.test_a_store_without_replace_still_saves_a_merging_update_whole(DictStore())
    with pytest.raises(pytest.skip.Exception):
        await kit.test_a_store_without_replace_still_saves_a_merging_update_whole(
            MergingDictStore()
        )
