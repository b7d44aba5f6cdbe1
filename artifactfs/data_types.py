"""Tables an artifact can hold with ``Artifact.add(obj, name)``, in W&B's JSON shapes.

``Table`` is stored as ``NAME.table.json`` (``{"_type": "table", "columns", "data", "ncols",
"nrows"}``), ``PartitionedTable`` as ``NAME.partitioned-table.json`` (``{"_type":
"partitioned-table", "parts_path"}``), so the files read the same as W&B's; ``Artifact.get``
reads them back.  Plain JSON-serialisable objects (dicts, lists) are stored as ``NAME.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import UsageError


class Table:
    """Rows of values under named columns."""

    suffix = ".table.json"

    def __init__(self, columns: Sequence[str] | None = None,
                 data: Sequence[Sequence[Any]] | None = None,
                 rows: Sequence[Sequence[Any]] | None = None, dataframe: Any = None) -> None:
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        rows_in = data if data is not None else rows
        self.data: list[list[Any]] = [list(r) for r in (rows_in or [])]
        self.columns: list[str] = list(columns) if columns is not None else [
            f"Column_{i + 1}" for i in range(len(self.data[0]) if self.data else 0)]
        for r in self.data:
            self._check(r)

    def _check(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise UsageError(f"a table row has {len(row)} values for {len(self.columns)} columns")

    def add_data(self, *values: Any) -> None:
        self._check(values)
        self.data.append(list(values))

    def to_json(self) -> dict[str, Any]:
        return {"_type": "table", "columns": self.columns, "data": self.data,
                "ncols": len(self.columns), "nrows": len(self.data)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Table:
        return cls(columns=doc.get("columns"), data=doc.get("data"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and (self.columns, self.data) == (other.columns,
                                                                           other.data)

    __hash__ = None  # type: ignore[assignment]


class PartitionedTable:
    """A table whose parts are the ``*.table.json`` files under ``parts_path``."""

    suffix = ".partitioned-table.json"

    def __init__(self, parts_path: str) -> None:
        self.parts_path = parts_path

    def to_json(self) -> dict[str, Any]:
        return {"_type": "partitioned-table", "parts_path": self.parts_path}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PartitionedTable:
        return cls(str(doc.get("parts_path", "")))


def encode(obj: Any, name: str) -> tuple[str, dict[str, Any] | list[Any]]:
    """(path in the artifact, JSON document) for an object given to ``Artifact.add``."""
    if isinstance(obj, Table | PartitionedTable):
        return (name if name.endswith(obj.suffix) else name + obj.suffix), obj.to_json()
    if isinstance(obj, dict | list):
        return (name if name.endswith(".json") else name + ".json"), obj
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        doc = to_json()
        if isinstance(doc, dict | list):
            return (name if name.endswith(".json") else name + ".json"), doc
    raise UsageError(f"can not add a {type(obj).__name__} to an artifact: add a Table, a "
                     "PartitionedTable, a dict or a list (or a file with add_file)")


def decode(path: str, doc: Any) -> Any:
    """The object a stored JSON document stands for."""
    if path.endswith(Table.suffix) and isinstance(doc, dict):
        return Table.from_json(doc)
    if path.endswith(PartitionedTable.suffix) and isinstance(doc, dict):
        return PartitionedTable.from_json(doc)
    return doc
