"""The typed model classes cannot drift from the schema: `tracker.store.tables` declares every
column once, and each table's class in `tracker.store.models` must name each of its columns as a
typed attribute (and no column the table does not have)."""

from __future__ import annotations

from tracker.store import models, tables


def _classes() -> dict[str, type]:
    return {
        cls.__table__.name: cls  # type: ignore[attr-defined]
        for cls in vars(models).values()
        if isinstance(cls, type) and issubclass(cls, models.Base) and cls is not models.Base
    }


def test_every_table_has_a_typed_class():
    assert set(_classes()) == set(tables.metadata.tables) - {"alembic_version"}


def test_every_column_has_a_typed_attribute_and_nothing_else_claims_to_be_one():
    for name, cls in _classes().items():
        table = tables.metadata.tables[name]
        annotated = {
            attr
            for attr, hint in cls.__annotations__.items()
            if str(hint).startswith("Mapped[") and attr not in cls.__mapper__.relationships
        }
        assert annotated == {c.key for c in table.columns}, name
