"""Sphinx configuration: MyST Markdown pages, furo, and the API reference from docstrings.

Built by scripts/build-docs.sh (run by scripts/test.sh) with ``-W --keep-going -n``: any
warning, including a reference that resolves to nothing, fails the build.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp_sessionkit  # noqa: E402 - needs the path above

project = "aiohttp-sessionkit"
author = "the aiohttp-sessionkit authors"
copyright = "the aiohttp-sessionkit authors"
release = aiohttp_sessionkit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# MyST: anchors for headings down to ### so pages can link to sections.
myst_heading_anchors = 3

# Google-style "Args:" / "Returns:" / "Raises:" sections in docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = False
# A method that overrides one of collections.abc without a docstring of its own would show
# the ABC's, whose "get(k[,d]) -> D[k] if k in D..." first line autodoc misreads as a
# signature; the contract's docstrings live on AbstractStore, documented once.
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = f"aiohttp-sessionkit {release}"

# The build runs offline (the only network is PyPI), so no intersphinx inventories: names
# from Python's standard library and from the libraries below would otherwise be "missing
# references". Our own names are still checked, which is what -n is here for.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(aiohttp|yarl|multidict|redis|asyncpg|pymongo|motor|bson)(\..*)?"),
    (r"py:.*", r"(sqlalchemy|jwt|cryptography|aiohttp_security|aiomcache)(\..*)?"),
    (r"py:.*", r"(collections\.abc|asyncio|datetime|logging|types|typing_extensions)\..*"),
    (r"py:.*", r"(web|web_app|web_request|web_response)\..*"),
    # a type variable of Batcher's signature, private by design
    (r"py:class", r"aiohttp_sessionkit\.batching\._Item"),
    # the type variable of abc.mirrors' signature (the decorated method's own type)
    (r"py:class", r"aiohttp_sessionkit\.abc\._Twin"),
]


def _public_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``aiohttp_sessionkit.<module>.<Name>`` to the public ``aiohttp_sessionkit.<Name>``.

    Annotations name a class by the module that defines it; the reference documents every
    public name where users import it from, the package itself.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("aiohttp_sessionkit."):
        return None
    name = target.rsplit(".", 1)[-1]
    if name not in aiohttp_sessionkit.__all__ or target == f"aiohttp_sessionkit.{name}":
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env,
        node.get("refdoc"),
        app.builder,
        node.get("reftype"),
        f"aiohttp_sessionkit.{name}",
        node,
        contnode,
    )


# Napoleon reads the first line of a property's or attribute's docstring as "type:
# description" whenever it holds a colon ("The session id, or None: new and unsaved" would
# become a type named "The session id, or None"). Our attribute docstrings are prose, not
# Google-style sections, so napoleon leaves them alone: the text is kept before napoleon
# runs (priority 500) and put back after it.
_ATTRIBUTE_KINDS = ("attribute", "data", "property")
_kept: dict[str, list[str]] = {}


def _keep_attribute_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in _ATTRIBUTE_KINDS:
        _kept[name] = list(lines)


def _restore_attribute_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in _ATTRIBUTE_KINDS and name in _kept:
        lines[:] = _kept.pop(name)


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a class's public bases: a base from a private module (``stores._db``, the
    plumbing the database stores share) is shown as its own public bases."""
    shown: list[Any] = []
    for base in bases:
        shown.extend(_public(base))
    bases[:] = list(dict.fromkeys(shown))


def _public(base: Any) -> list[Any]:
    cls = typing.get_origin(base) or base
    module = getattr(cls, "__module__", "")
    if not module.startswith("aiohttp_sessionkit.") or not any(
        part.startswith("_") for part in module.split(".")
    ):
        return [base]
    return [
        shown
        for parent in cls.__bases__
        if parent is not typing.Generic
        for shown in _public(parent)
    ]


def setup(app: Any) -> None:
    app.connect("missing-reference", _public_alias)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-docstring", _keep_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=600)
