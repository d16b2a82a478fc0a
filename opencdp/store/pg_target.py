"""A table in another PostgreSQL database that activation keeps in step with an audience (the ``postgres``
destination). The connection code lives here because only ``opencdp.store`` talks to a database driver; the
destination plug-in (opencdp/activation/plugins/postgres.py) decides what to write.

Failures are sorted into the error taxonomy: connection problems, timeouts, serialization failures and lack of
resources are :class:`~opencdp.errors.Transient`; anything the same statement would hit again (permissions, a
column of the wrong type, a bad DSN) is :class:`~opencdp.errors.Terminal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from opencdp.errors import Rejected, Terminal, Transient

TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")
"""SQLSTATE classes worth retrying: connection, transaction rollback, resources, object state, operator
intervention, system errors."""


def target_host(dsn: str) -> tuple[str, int]:
    """The host and port a DSN connects to (the SSRF guard checks them before any connection)."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise Rejected(f"the DSN cannot be read: {exc}", code="invalid_dsn", status=422) from None
    host = str(info.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        raise Rejected("the DSN needs one host name or address (no socket path, no host list)", code="invalid_dsn",
                       status=422)  # fmt: skip
    return host, int(info.get("port") or 5432)


class PostgresTarget:
    """Upserts and deletes of ``(audience, profile_id, <traits>)`` rows in one table, one transaction a batch."""

    def __init__(self, dsn: str, hostaddr: str, *, timeout: float) -> None:
        self.dsn = dsn
        self.hostaddr = hostaddr
        self.timeout = timeout

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        ms = int(self.timeout * 1000)
        return psycopg.connect(self.dsn, hostaddr=self.hostaddr, connect_timeout=max(1, int(self.timeout)),
                               options=f"-c statement_timeout={ms} -c lock_timeout={ms}")  # fmt: skip

    def sync(
        self,
        table: str,
        traits: Sequence[str],
        upserts: Sequence[tuple[object, ...]],
        deletes: Sequence[tuple[str, str]],
        synced_at: datetime,
    ) -> None:
        """Create the table (and trait columns) if missing, then upsert ``(audience, profile_id, *traits)`` rows
        and delete ``(audience, profile_id)`` keys, all in one transaction."""
        name = sql.Identifier(*table.split("."))
        trait_ids = [sql.Identifier(t) for t in traits]
        try:
            with self._connect() as conn, conn.cursor() as cur:
                # concurrent CREATE TABLE IF NOT EXISTS of one name race in the catalog: one at a time
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"opencdp:{table}",))
                cur.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (audience text NOT NULL, profile_id text NOT NULL, "
                    "synced_at timestamptz NOT NULL, PRIMARY KEY (audience, profile_id))").format(name))  # fmt: skip
                for t in trait_ids:
                    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text").format(name, t))
                if upserts:
                    columns = sql.SQL(", ").join([sql.Identifier("audience"), sql.Identifier("profile_id"), *trait_ids,
                                                  sql.Identifier("synced_at")])  # fmt: skip
                    marks = sql.SQL(", ").join([sql.Placeholder()] * (len(traits) + 3))
                    updates = sql.SQL(", ").join(
                        sql.SQL("{} = EXCLUDED.{}").format(c, c) for c in [*trait_ids, sql.Identifier("synced_at")]
                    )
                    cur.executemany(
                        sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (audience, profile_id) DO UPDATE SET {}")
                        .format(name, columns, marks, updates),
                        [(*row, synced_at) for row in upserts],
                    )  # fmt: skip
                if deletes:
                    cur.executemany(
                        sql.SQL("DELETE FROM {} WHERE audience = %s AND profile_id = %s").format(name), list(deletes)
                    )
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, psycopg.OperationalError) or state[:2] in TRANSIENT_CLASSES:
                raise Transient(f"postgres target: {first}", code="target_unavailable") from None
            raise Terminal(f"postgres target: {first} (SQLSTATE {state or '?'})", code="target_refused") from None

    def ping(self) -> None:
        try:
            with self._connect() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise Transient(f"postgres target: {str(exc).splitlines()[0]}", code="target_unavailable") from None
