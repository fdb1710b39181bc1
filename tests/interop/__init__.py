"""Interoperation with the real aiohttp-session and aiohttp-security packages."""
