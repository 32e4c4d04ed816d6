"""The content-addressed store: an SQLite index (one row per stage) plus one artifact folder per key.

A committed folder holds the stage's artifacts and ``stage.json`` (its full record). A stage works
in ``work/<key>/`` (so a killed training resumes from its epoch checkpoint) and is
committed by moving that folder to ``stages/<key>/`` and then writing its row in one transaction:
a stage is done or absent, never half. A folder without a done row is a leftover of a crash and
is replaced when the stage runs again. Failed stages keep their error; NC is a result.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable

from robquant.modelfolder import write_json
from robquant.provenance import environment, now_iso

FINISHED = ("done", "NC")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    parents TEXT NOT NULL,
    metrics TEXT,
    record TEXT,
    error TEXT,
    versions TEXT,
    pid INTEGER,
    updated TEXT
)
"""


class Store:
    """A store folder: ``index.sqlite``, ``stages/<key>/`` (committed), ``work/<key>/`` (in progress)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "stages").mkdir(parents=True, exist_ok=True)
        (self.root / "work").mkdir(parents=True, exist_ok=True)
        self.db = self.root / "index.sqlite"
        with closing(self._connect()) as con, con:
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=60)
        con.row_factory = sqlite3.Row
        return con

    def artifact_dir(self, key: str) -> Path:
        return self.root / "stages" / key

    def work_dir(self, key: str) -> Path:
        return self.root / "work" / key

    def get(self, key: str) -> dict[str, Any] | None:
        """The stage's row (JSON columns decoded), or None."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM stages WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        for col in ("config", "parents", "metrics", "record", "versions"):
            if out[col] is not None:
                out[col] = json.loads(out[col])
        return out

    def statuses(self, keys: Iterable[str]) -> dict[str, str]:
        """``{key: status}`` for the keys that have a row."""
        keys = list(keys)
        out: dict[str, str] = {}
        with closing(self._connect()) as con:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, status FROM stages WHERE key IN ({','.join('?' * len(chunk))})"
                out.update({r["key"]: r["status"] for r in con.execute(q, chunk)})
        return out

    def finished(self, keys: Iterable[str]) -> set[str]:
        """The keys whose stage is committed: a finished row and its artifact folder."""
        return {k for k, s in self.statuses(keys).items() if s in FINISHED and self.artifact_dir(k).is_dir()}

    def _upsert(self, stage: Any, status: str, **cols: Any) -> None:
        values = {"key": stage.key, "kind": stage.kind, "label": stage.label, "status": status,
                  "config": json.dumps(stage.config, sort_keys=True, default=str), "parents": json.dumps(stage.parents),
                  "updated": now_iso(), **cols}
        names = ", ".join(values)
        marks = ", ".join("?" * len(values))
        updates = ", ".join(f"{k} = excluded.{k}" for k in values if k != "key")
        with closing(self._connect()) as con, con:
            con.execute(f"INSERT INTO stages ({names}) VALUES ({marks}) ON CONFLICT(key) DO UPDATE SET {updates}",
                        list(values.values()))

    def mark_running(self, stage: Any) -> Path:
        """Record that ``stage`` (a :class:`~robquant.pipeline.plan.Stage`) runs in this process and
        return its work folder."""
        self._upsert(stage, "running", pid=os.getpid())
        work = self.work_dir(stage.key)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def commit(self, stage: Any, record: dict[str, Any]) -> None:
        """Move the work folder into place, then write the finished row (one transaction)."""
        key = stage.key
        write_json(self.work_dir(key) / "stage.json", record)  # the full record, beside the artifacts
        final = self.artifact_dir(key)
        if final.exists():  # a leftover of a crash between the move and the row
            shutil.rmtree(final)
        os.replace(self.work_dir(key), final)
        status = record.get("status", "done")
        self._upsert(stage, status if status in FINISHED else "done",
                     metrics=json.dumps(record.get("metrics"), default=str),
                     record=json.dumps(record, default=str), error=None,
                     versions=json.dumps(record.get("env") or environment()), pid=None)

    def fail(self, stage: Any, error: str) -> None:
        """Keep the error; the work folder stays for inspection and resumption."""
        self._upsert(stage, "failed", error=error, pid=None)

    def rows(self) -> list[dict[str, Any]]:
        """Every row: key, kind, label, status, error (for listings)."""
        with closing(self._connect()) as con:
            return [dict(r) for r in con.execute("SELECT key, kind, label, status, error, pid, updated FROM stages")]
