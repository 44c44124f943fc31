"""Where a ledger lives: SQLite (the embedded default) or PostgreSQL, through SQLAlchemy Core.

Three tables, and nothing in them that is not covered by a hash, a signature or a recomputation
(:mod:`.audit` checks each):

- ``meta(name, value)``: the format, the origin, the log's vkey, the policy text, and the log's
  signature over all of them;
- ``entries(idx, leaf, data, type, node, seq, round)``: ``data`` is the entry's canonical
  encoding (signed by its submitter); ``leaf`` = leaf_hash(data) and the other columns are read
  from ``data``, kept only for fast reopening and queries; ``(node, seq)`` is unique, so the
  database itself refuses a replayed entry;
- ``checkpoints(id, size, note)``: each signed checkpoint note with its cosignatures.

Every append is one transaction. SQLite runs in WAL mode with ``synchronous=FULL``, so a commit
that returned survives the process being killed (and the machine losing power); an interrupted
transaction leaves nothing behind. PostgreSQL is named by URL (``postgresql+psycopg://...``).

A file that is not a ledger (corrupted, truncated, something else) raises :class:`StorageError`
with one line naming the file and what is wrong; nothing is ever written to a store that failed
to open, and an audit opens SQLite read-only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

FORMAT = b"phalanx-ledger/1"

metadata = sa.MetaData()
meta_table = sa.Table(
    "meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)
entries_table = sa.Table(
    "entries", metadata,
    sa.Column("idx", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("leaf", sa.LargeBinary, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("node", sa.LargeBinary, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("round", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("node", "seq", name="entries_node_seq"),
)
checkpoints_table = sa.Table(
    "checkpoints", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("note", sa.LargeBinary, nullable=False),
)
TABLES = {t.name: t for t in (meta_table, entries_table, checkpoints_table)}


class StorageError(Exception):
    """The store cannot be opened or written; one line that names the store and the problem."""


class ConcurrentWriteError(StorageError):
    """Another writer appended to the ledger since this one read it."""


@dataclass(frozen=True)
class EntryRow:
    idx: int
    leaf: bytes
    data: bytes
    type: str
    node: bytes
    seq: int
    round: int | None


def engine_url(location: str | Path, *, readonly: bool = False) -> str:
    """A SQLAlchemy URL: a plain path is a SQLite file; ``postgresql://`` gets the psycopg driver."""
    text = str(location)
    if "://" not in text:
        path = Path(text).resolve()
        return f"sqlite:///file:{path}?mode=ro&uri=true" if readonly else f"sqlite:///{path}"
    if text.startswith("postgresql://") or text.startswith("postgres://"):
        text = "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def describe(location: str | Path) -> str:
    """The store's name for messages, without a password."""
    text = str(location)
    if "://" not in text:
        return text
    try:
        return sa.engine.make_url(text).render_as_string(hide_password=True)
    except Exception:
        return text.split("://", 1)[0] + "://..."


def _sqlite_pragmas(readonly: bool):
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    return on_connect


class Store:
    """The three tables behind one ledger, in one database."""

    def __init__(self, location: str | Path, *, create: bool = False, readonly: bool = False):
        self.location = location
        self.name = describe(location)
        self.readonly = readonly
        is_file = "://" not in str(location)
        if is_file:
            path = Path(location)
            if create and path.exists() and path.stat().st_size > 0:
                raise StorageError(f"{self.name}: the file already exists; open it, or pick a new path")
            if not create and not path.exists():
                raise StorageError(f"{self.name}: no such ledger file")
            if not create:
                _check_sqlite_file(path, self.name)
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
        self.dialect = "sqlite" if is_file or str(location).startswith("sqlite") else "postgresql"
        try:
            self.engine: Engine = sa.create_engine(engine_url(location, readonly=readonly), future=True)
        except Exception as e:  # a malformed URL, a missing driver
            raise StorageError(f"{self.name}: cannot use this location ({_reason(e)})") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas(readonly))
        with self.errors("open"):
            if create:
                self._create()
            else:
                self._check_schema()

    # -------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def errors(self, doing: str):
        """Turn any database error into a one-line :class:`StorageError`."""
        try:
            yield
        except StorageError:
            raise
        except sa.exc.IntegrityError as e:
            raise StorageError(f"{self.name}: {doing}: refused by the database ({_reason(e)})") from None
        except (sa.exc.SQLAlchemyError, OSError, UnicodeDecodeError, ValueError) as e:
            raise StorageError(f"{self.name}: {doing}: {_reason(e)}") from None

    def _create(self) -> None:
        with self.engine.begin() as conn:
            existing = sa.inspect(conn).get_table_names()
            if any(t in existing for t in TABLES):
                raise StorageError(f"{self.name}: already holds a ledger")
            metadata.create_all(conn)

    def _check_schema(self) -> None:
        with self.engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
        missing = [t for t in TABLES if t not in existing]
        if missing:
            what = "not a ledger" if len(missing) == len(TABLES) else f"missing table(s) {', '.join(missing)}"
            raise StorageError(f"{self.name}: {what}")

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- meta

    def read_meta(self) -> dict[str, bytes]:
        with self.errors("reading meta"), self.engine.connect() as conn:
            return {r.name: bytes(r.value) for r in conn.execute(sa.select(meta_table))}

    def write_meta(self, values: dict[str, bytes]) -> None:
        with self.errors("writing meta"), self.engine.begin() as conn:
            conn.execute(meta_table.delete())
            conn.execute(meta_table.insert(), [{"name": k, "value": v} for k, v in sorted(values.items())])

    # -------------------------------------------------------------- entries

    def count_entries(self) -> int:
        with self.errors("counting entries"), self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(entries_table)).scalar_one()

    def leaves(self) -> Iterator[tuple[int, bytes]]:
        with self.errors("reading leaves"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                sa.select(entries_table.c.idx, entries_table.c.leaf).order_by(entries_table.c.idx))
            for idx, leaf in result:
                yield idx, bytes(leaf)

    def plain_rows(self) -> Iterator[tuple[int, str, bytes, int, int | None, bytes | None]]:
        """(idx, type, node, seq, round, data-if-stateful) for reopening, in index order."""
        from phalanx.ledger.state import STATEFUL

        c = entries_table.c
        data = sa.case((c.type.in_(sorted(STATEFUL)), c.data), else_=sa.null())
        with self.errors("reading entries"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                sa.select(c.idx, c.type, c.node, c.seq, c.round, data).order_by(c.idx))
            for idx, type_, node, seq, round_, raw in result:
                yield idx, type_, bytes(node), seq, round_, bytes(raw) if raw is not None else None

    def rows(self, start: int = 0, end: int | None = None) -> Iterator[EntryRow]:
        c = entries_table.c
        query = sa.select(entries_table).where(c.idx >= start).order_by(c.idx)
        if end is not None:
            query = query.where(c.idx < end)
        with self.errors("reading entries"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5_000).execute(query)
            for r in result:
                yield EntryRow(r.idx, bytes(r.leaf), bytes(r.data), r.type, bytes(r.node), r.seq, r.round)

    def row(self, idx: int) -> EntryRow | None:
        return next(self.rows(idx, idx + 1), None)

    def insert_entries(self, rows: Sequence[EntryRow], expected_first: int) -> None:
        """Append rows in one transaction, refusing if the log no longer ends at ``expected_first``."""
        if self.readonly:
            raise StorageError(f"{self.name}: opened read-only")
        with self.errors("appending"), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("LOCK TABLE entries IN SHARE ROW EXCLUSIVE MODE"))
            count = conn.execute(sa.select(sa.func.count()).select_from(entries_table)).scalar_one()
            if count != expected_first:
                raise ConcurrentWriteError(f"{self.name}: the log has {count} entries, not the {expected_first} "
                                           "this writer knows of (another writer?); reopen it")
            conn.execute(entries_table.insert(), [r.__dict__ for r in rows])

    # -------------------------------------------------------------- checkpoints

    def checkpoint_rows(self) -> list[tuple[int, int, bytes]]:
        with self.errors("reading checkpoints"), self.engine.connect() as conn:
            return [(r.id, r.size, bytes(r.note)) for r in
                    conn.execute(sa.select(checkpoints_table).order_by(checkpoints_table.c.id))]

    def put_checkpoint(self, id_: int, size: int, note: bytes) -> None:
        """Store checkpoint ``id_`` (a new row, or the same tree head with more cosignatures)."""
        if self.readonly:
            raise StorageError(f"{self.name}: opened read-only")
        with self.errors("storing a checkpoint"), self.engine.begin() as conn:
            exists = conn.execute(sa.select(checkpoints_table.c.size).where(checkpoints_table.c.id == id_)).first()
            if exists is None:
                conn.execute(checkpoints_table.insert().values(id=id_, size=size, note=note))
            elif exists.size != size:
                raise StorageError(f"{self.name}: checkpoint {id_} has size {exists.size}, not {size}")
            else:
                conn.execute(checkpoints_table.update().where(checkpoints_table.c.id == id_).values(note=note))

    # -------------------------------------------------------------- integrity

    def integrity_problem(self) -> str | None:
        """SQLite's own structural check of the file (None when sound; PostgreSQL: None)."""
        if self.dialect != "sqlite":
            return None
        with self.errors("checking the file"), self.engine.connect() as conn:
            result = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check")]
        return None if result == ["ok"] else "; ".join(" ".join(str(r).split()) for r in result[:3])


def _check_sqlite_file(path: Path, name: str) -> None:
    """A SQLite file starts with its magic string and is a whole number of pages long."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as e:
        raise StorageError(f"{name}: cannot read the file ({e.strerror})") from None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StorageError(f"{name}: the file is corrupted or not a ledger (no SQLite header)")
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1) or size % page:
        raise StorageError(f"{name}: the file is truncated or corrupted ({size} bytes is not a whole number "
                           f"of {page}-byte pages)")


def _reason(e: BaseException) -> str:
    """The database's own words, on one line, without SQLAlchemy's boilerplate."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    if "file is not a database" in line or "malformed" in line:
        return f"the file is corrupted or not a ledger ({line})"
    return line
