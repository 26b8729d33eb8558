"""An indexed-tier storage backend on SQLite: a fire reads only the rows of
its trigger and writes only what changed, under a lock every process sees.

The lock is SQLite's own write lock (``BEGIN IMMEDIATE``), held by the
operation's connection until it commits -- one writer per database file at
a time, which keeps the example short; a server database would lock one
session row (``SELECT ... FOR UPDATE``), as the built-in database backend
does.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from triggers.exceptions import LockHeldError, LockTimeoutError
from triggers.storages import IndexedStorage, storage_backends
from triggers.storages.base import config_from_stored
from triggers.storages.data import (
    Changes,
    FetchRequest,
    Snapshot,
    build_index,
    max_idempotency_keys,
)

DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "triggers-indexed.sqlite3")

SCHEMA = """
CREATE TABLE IF NOT EXISTS s_session (uid TEXT PRIMARY KEY, meta TEXT, activity REAL);
CREATE TABLE IF NOT EXISTS s_task (uid TEXT, name TEXT, config TEXT, next INTEGER DEFAULT 0,
                                   PRIMARY KEY (uid, name));
CREATE TABLE IF NOT EXISTS s_index (uid TEXT, trigger TEXT, tasks TEXT, PRIMARY KEY (uid, trigger));
CREATE TABLE IF NOT EXISTS s_instance (uid TEXT, name TEXT, record TEXT, lease_token TEXT,
                                       lease_expires REAL, PRIMARY KEY (uid, name));
CREATE TABLE IF NOT EXISTS s_waiting (uid TEXT, task TEXT, trigger TEXT, instance TEXT,
                                      PRIMARY KEY (uid, task, trigger, instance));
CREATE TABLE IF NOT EXISTS s_kwargs (uid TEXT, trigger TEXT, kwargs TEXT,
                                     PRIMARY KEY (uid, trigger));
CREATE TABLE IF NOT EXISTS s_timer (uid TEXT, id TEXT, timer TEXT, PRIMARY KEY (uid, id));
CREATE TABLE IF NOT EXISTS s_idem (uid TEXT, key TEXT, expires REAL, PRIMARY KEY (uid, key));
"""
TABLES = ("s_session", "s_task", "s_index", "s_instance", "s_waiting", "s_kwargs", "s_timer",
          "s_idem")  # fmt: skip


def connect(path: str, timeout: float = 30) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.executescript(SCHEMA)
    return db


class SQLiteLock:
    """The session lock: an open ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, path: str, uid: str) -> None:
        self.path, self.uid = path, uid
        self.db: sqlite3.Connection | None = None

    def acquire_within(self, timeout: float) -> None:
        db = connect(self.path, timeout)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            db.close()
            raise LockTimeoutError(self.uid, timeout) from None
        self.db = db

    def release(self) -> None:
        if self.db is not None:
            if self.db.in_transaction:
                self.db.rollback()  # nothing committed: nothing written
            self.db.close()
            self.db = None


@storage_backends.register("sqlite-indexed")
class SQLiteIndexedStorage(IndexedStorage):
    name = "sqlite-indexed"

    def __init__(self, uid: str, path: str = DEFAULT_PATH) -> None:
        super().__init__(uid)
        self.path = path

    def get_init_kwargs(self) -> dict[str, Any]:
        return {"path": self.path}

    def make_lock(self) -> SQLiteLock:
        return SQLiteLock(self.path, self.uid)

    def _rows(self, db: sqlite3.Connection, sql: str, *args: Any) -> list[Any]:
        return db.execute(sql, (self.uid, *args)).fetchall()

    # -- reads ------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> Snapshot:
        txn = self.current_transaction
        if txn is not None and isinstance(txn.lock, SQLiteLock) and txn.lock.db is not None:
            return self._read(txn.lock.db, request)  # inside the lock's transaction
        with closing(connect(self.path)) as db:
            db.execute("BEGIN")  # one consistent moment
            return self._read(db, request)

    def _read(self, db: sqlite3.Connection, request: FetchRequest) -> Snapshot:
        row = self._rows(db, "SELECT meta FROM s_session WHERE uid = ?")
        snap = Snapshot(meta=json.loads(row[0][0]) if row and row[0][0] else None)
        if request.everything:
            tasks = [r[0] for r in self._rows(db, "SELECT name FROM s_task WHERE uid = ?")]
            names = [r[0] for r in self._rows(db, "SELECT name FROM s_instance WHERE uid = ?")]
        else:
            tasks, names = list(request.tasks), list(request.instances)
        for trig in request.triggers:
            found = self._rows(db, "SELECT tasks FROM s_index WHERE uid = ? AND trigger = ?", trig)
            if found:
                snap.index[trig] = json.loads(found[0][0])
                tasks += snap.index[trig]
        for name in dict.fromkeys(tasks):
            found = self._rows(
                db, "SELECT config, next FROM s_task WHERE uid = ? AND name = ?", name
            )
            if found:
                snap.configs[name] = config_from_stored(name, json.loads(found[0][0]))
                snap.counters[name] = found[0][1]
        waiting_sql = "SELECT instance FROM s_waiting WHERE uid = ? AND task = ? AND trigger = ?"
        for trig, task_names in snap.index.items():
            for task in task_names:
                snap.waiting[(task, trig)] = [r[0] for r in self._rows(db, waiting_sql, task, trig)]
                names += snap.waiting[(task, trig)]
        now = time.time()
        for name in dict.fromkeys(names):
            found = self._rows(
                db,
                "SELECT record, lease_expires FROM s_instance WHERE uid = ? AND name = ?",
                name,
            )
            if found:
                snap.records[name] = json.loads(found[0][0])
                if found[0][1] and found[0][1] > now:
                    snap.leases[name] = int((found[0][1] - now) * 1000)
        # Whether each trigger the loaded tasks mention fired, and with what.
        triggers = set(request.triggers).union(*(c.triggers for c in snap.configs.values()))
        for trig in sorted(triggers):
            snap.kwargs_known.add(trig)
            found = self._rows(
                db, "SELECT kwargs FROM s_kwargs WHERE uid = ? AND trigger = ?", trig
            )
            if found:
                snap.latest_kwargs[trig] = json.loads(found[0][0])
        if request.everything:
            snap.index = build_index(snap.configs)
            for task, trig, inst in self._rows(
                db, "SELECT task, trigger, instance FROM s_waiting WHERE uid = ?"
            ):
                snap.waiting.setdefault((task, trig), []).append(inst)
            for trig, kwargs in self._rows(
                db, "SELECT trigger, kwargs FROM s_kwargs WHERE uid = ?"
            ):
                snap.kwargs_known.add(trig)
                snap.latest_kwargs[trig] = json.loads(kwargs)
            snap.everything = True
        if request.timers or request.everything:
            for timer_id, timer in self._rows(db, "SELECT id, timer FROM s_timer WHERE uid = ?"):
                snap.timers[timer_id] = json.loads(timer)
        if request.idempotency_key is not None:
            snap.idempotency_seen = bool(self._rows(
                db, "SELECT 1 FROM s_idem WHERE uid = ? AND key = ? AND expires > ?",
                request.idempotency_key, time.time(),
            ))  # fmt: skip
        return snap

    # -- writes -----------------------------------------------------------------
    def commit(self, lock: Any, changes: Changes, release: bool) -> None:
        try:
            if changes:
                self._write(lock.db, changes)
                lock.db.commit()
        finally:
            if release:
                lock.release()

    def _write(self, db: sqlite3.Connection, ch: Changes) -> None:
        run = db.execute
        uid = self.uid
        run("INSERT OR IGNORE INTO s_session (uid) VALUES (?)", (uid,))
        run("UPDATE s_session SET activity = ? WHERE uid = ?", (time.time(), uid))
        if ch.meta is not None:
            run("UPDATE s_session SET meta = ? WHERE uid = ?", (json.dumps(ch.meta), uid))
        for name, cfg in ch.configs.items():
            run(
                "INSERT INTO s_task (uid, name, config) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET config = excluded.config",
                (uid, name, json.dumps(cfg.to_directives())),
            )
        if ch.index is not None:
            run("DELETE FROM s_index WHERE uid = ?", (uid,))
            for trig, task_names in ch.index.items():
                run("INSERT INTO s_index VALUES (?, ?, ?)", (uid, trig, json.dumps(task_names)))
        for name, inst in ch.instances.items():
            run(
                "INSERT INTO s_instance (uid, name, record) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET record = excluded.record",
                (uid, name, json.dumps(inst.to_record())),
            )
        for task, trig, inst_name in ch.waiting_remove:
            run("DELETE FROM s_waiting WHERE uid = ? AND task = ? AND trigger = ? AND instance = ?",
                (uid, task, trig, inst_name))  # fmt: skip
        for task, trig, inst_name in ch.waiting_add:
            run("INSERT OR IGNORE INTO s_waiting VALUES (?, ?, ?, ?)", (uid, task, trig, inst_name))
        for task, number in ch.counters.items():
            run("UPDATE s_task SET next = ? WHERE uid = ? AND name = ?", (number, uid, task))
        for trig, kwargs in ch.latest_kwargs.items():
            run("INSERT OR REPLACE INTO s_kwargs VALUES (?, ?, ?)", (uid, trig, json.dumps(kwargs)))
        for name, (token, ms) in ch.leases_set.items():
            expires = time.time() + ms / 1000
            run("UPDATE s_instance SET lease_token = ?, lease_expires = ?"
                " WHERE uid = ? AND name = ?", (token, expires, uid, name))  # fmt: skip
        for name in ch.leases_drop:
            run("UPDATE s_instance SET lease_token = NULL, lease_expires = NULL"
                " WHERE uid = ? AND name = ?", (uid, name))  # fmt: skip
        for timer_id, timer in ch.timers_add.items():
            value = json.dumps(timer)
            run("INSERT OR REPLACE INTO s_timer VALUES (?, ?, ?)", (uid, timer_id, value))
        for timer_id in ch.timers_remove:
            run("DELETE FROM s_timer WHERE uid = ? AND id = ?", (uid, timer_id))
        if ch.idempotency is not None:  # drop expired keys, and all but the newest N
            run("DELETE FROM s_idem WHERE uid = ? AND expires <= ?", (uid, time.time()))
            run("INSERT OR REPLACE INTO s_idem VALUES (?, ?, ?)", (uid, *ch.idempotency))
            run("DELETE FROM s_idem WHERE uid = ? AND key NOT IN (SELECT key FROM s_idem"
                " WHERE uid = ? ORDER BY expires DESC LIMIT ?)",
                (uid, uid, max_idempotency_keys()))  # fmt: skip

    def renew_lease(self, name: str, token: str, ms: int) -> bool:
        # One statement, no session lock: it only extends a lease still ours.
        with closing(connect(self.path)) as db:
            cursor = db.execute(
                "UPDATE s_instance SET lease_expires = ?"
                " WHERE uid = ? AND name = ? AND lease_token = ?",
                (time.time() + ms / 1000, self.uid, name, token),
            )
        return cursor.rowcount == 1

    def delete(self, *, idle_before: datetime | None = None) -> bool:
        if self.current_transaction is not None:
            raise LockHeldError(f"delete() of session {self.uid!r} inside its own block")
        lock = self.make_lock()
        lock.acquire_within(30)
        try:
            assert lock.db is not None
            row = self._rows(lock.db, "SELECT activity FROM s_session WHERE uid = ?")
            if not row or (idle_before is not None and row[0][0] >= idle_before.timestamp()):
                return False
            for table in TABLES:
                lock.db.execute(f"DELETE FROM {table} WHERE uid = ?", (self.uid,))
            lock.db.commit()
            return True
        finally:
            lock.release()
