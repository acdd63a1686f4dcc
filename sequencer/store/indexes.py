"""Indexes over the rows a hot query reads, declared in models.py and created by the same
DDL on SQLite and PostgreSQL (generate_schemas for a new database, a migration for an old).

tortoise's PartialIndex takes only `column = value` conditions; the due query's rows are
`state = 'active' AND hold IS NULL`, so the condition here is written as SQL both dialects
read alike. A query uses a partial index only when its WHERE says at least what the index's
does (SQLite compares a bound parameter's value; PostgreSQL plans with it)."""

from __future__ import annotations

from typing import Any

from tortoise.indexes import Index


class Where(Index):
    """A B-tree index over `fields`, holding only the rows for which `where` is true."""

    def __init__(self, *, fields: tuple[str, ...] | list[str], name: str, where: str) -> None:
        super().__init__(fields=fields, name=name)
        self.where = where
        self.extra = f" WHERE {where}"

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        return path, args, {**kwargs, "where": self.where}
