"""A small functions package that uses every kind of type codegen spells, written to a temporary folder.

Folders, a package ``__init__``, a ``_private`` module and a ``_generated`` folder that must never be
imported (its module raises) are included, so the tests see the paths the loader really produces.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

from backend.registry import Registry, load_functions

THINGS = '''
from __future__ import annotations

import enum
from typing import Literal, NotRequired, TypedDict

import msgspec

from backend import ActionCtx, Id, Instant, MutationCtx, QueryCtx, action, internal_query, mutation, query
from backend.values import Int64


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(msgspec.Struct, rename="camel"):
    x_pos: float
    label: str | None = None


class Sparse(msgspec.Struct, rename="camel", omit_defaults=True):
    total: int
    hint: str | None = None


class Cat(msgspec.Struct, tag="cat"):
    lives: int


class Dog(msgspec.Struct, tag="dog"):
    good: bool


class Tree(msgspec.Struct):
    children: list[Tree]


class Meta(TypedDict):
    note: str
    extra: NotRequired[int]


@mutation
async def make(
    ctx: MutationCtx,
    booking_id: Id["bookings"],
    count: Int64,
    blob: bytes,
    mode: Literal["a", "b"],
    color: Color,
    where: Point,
    pet: Cat | Dog,
    tags: dict[str, int],
    meta: Meta,
    when: Instant,
    pair: tuple[int, str],
    note: str | None = None,
) -> Point:
    """Makes a point.

    Only the first paragraph becomes the doc comment.
    """
    return where


@query
async def nothing(ctx: QueryCtx) -> None:
    return None


@query
async def sparse(ctx: QueryCtx, elsewhere: Id["not_a_table"]) -> Sparse:
    return Sparse(1)


@query
async def tree(ctx: QueryCtx) -> Tree:
    return Tree([])


@action
async def ping(ctx: ActionCtx, times: float) -> list[float]:
    return [times]


@internal_query
async def secret(ctx: QueryCtx) -> int:
    return 1
'''

CLASSES = '''
from backend import Id, QueryCtx, query


@query
async def list_all(ctx: QueryCtx) -> list[Id["class_instances"]]:
    return []
'''

TEMPLATES = '''
from backend import Id, MutationCtx, mutation


@mutation
async def create(ctx: MutationCtx, name: str) -> Id["class_templates"]:
    raise NotImplementedError
'''

PRIVATE = '''
from backend import QueryCtx, query


@query
async def hidden(ctx: QueryCtx) -> int:
    return 1
'''


def write_sample_package(root: Path) -> str:
    """Writes the package under ``root`` (put on ``sys.path``) and returns its import name."""
    name = f"cg_sample_{uuid.uuid4().hex[:8]}"
    files = {
        "__init__.py": "",
        "things.py": THINGS,
        "classes/__init__.py": CLASSES,
        "classes/templates.py": TEMPLATES,
        "_private.py": PRIVATE,
        "_generated/__init__.py": "",
        "_generated/api.py": "raise RuntimeError('the loader imported a generated module')\n",
    }
    for path, text in files.items():
        target = root / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return name


def load_sample(root: Path) -> tuple[str, Registry]:
    name = write_sample_package(root)
    return name, load_functions(name, include_testing=False)
