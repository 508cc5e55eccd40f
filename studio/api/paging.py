"""The one shape of a list: a page of items, its place, and the total; a page past the end is empty, not an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int  # matching the filters, over all pages
    offset: int
    limit: int
    next_offset: int | None  # None: this is the last page


class Window(BaseModel):
    offset: int = 0
    limit: int = 100


def window(
    offset: Annotated[int, Query(ge=0, description="How many matching items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many items at most.")] = 100,
) -> Window:
    return Window(offset=offset, limit=limit)


def page(items: Sequence[T], at: Window) -> Page[T]:
    """The page ``at`` of ``items`` (every match, in their order)."""
    return read_page(items[at.offset : at.offset + at.limit], total=len(items), at=at)


def read_page(items: Sequence[T], *, total: int, at: Window) -> Page[T]:
    """A page the database cut already: ``items`` from ``at.offset``, of ``total`` matches."""
    end = at.offset + at.limit
    return Page[T](
        items=list(items), total=total, offset=at.offset, limit=at.limit, next_offset=end if end < total else None
    )
