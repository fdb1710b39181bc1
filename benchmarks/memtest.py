"""Memory of N ~100-byte sessions in a MemoryStore, in a fresh process.

``python benchmarks/memtest.py [--sessions 1000000]`` prints one JSON object. Sessions go in
through the real store API (``store.save(None, payload, ttl=3600, namespace=...)``) with
payloads built by the session layer's ``encode_payload``; each payload is dropped by this
script right after saving, so the RSS growth is what the store itself keeps (ids, record
keys, payload bytes, dict slots).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time

import benchcommon as bc


def vm_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def fill(sessions: int) -> dict[str, float]:
    bc.use_working_tree()
    from aiohttp_sessionkit import JSONSerializer, MemoryStore, Session
    from aiohttp_sessionkit.session import encode_payload, now

    serializer = JSONSerializer()
    # max_entries defaults to 100,000 (then it evicts); room for all of them here.
    store = MemoryStore(max_entries=max(sessions, 1))
    t = now()
    sample = encode_payload(Session(data=bc.session_data(0)), serializer, t)
    gc.collect()
    before = vm_rss_bytes()
    started = time.perf_counter()
    for i in range(sessions):
        payload = encode_payload(Session(data=bc.session_data(i)), serializer, t)
        await store.save(None, payload, ttl=3600, namespace=bc.COOKIE_NAME)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = vm_rss_bytes()
    if len(store) != sessions:
        raise RuntimeError(f"the store holds {len(store)} sessions, expected {sessions}")
    return {
        "sessions": sessions,
        "json_bytes": len(bc.compact_json(bc.session_data(0))),
        "payload_bytes": len(sample),
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "delta_bytes": after - before,
        "bytes_per_session": (after - before) / sessions if sessions else 0.0,
        "fill_seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(fill(args.sessions))))


if __name__ == "__main__":
    main()
