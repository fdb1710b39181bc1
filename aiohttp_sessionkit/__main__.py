"""``python -m aiohttp_sessionkit keygen``: print a fresh key for EncryptedCookieStore."""

from __future__ import annotations

import argparse
import sys

from .crypto import generate_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiohttp_sessionkit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new random 32-byte key (URL-safe base64)")
    parser.parse_args(argv)
    sys.stdout.write(generate_key() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
