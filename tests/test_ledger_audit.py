"""The audit finds any change to a stored ledger: sampled byte flips in every table and column (both
backends), raw byte flips in the SQLite file, and the ``phalanx audit`` / ``receipt`` commands."""

from __future__ import annotations

import os
import random
import sqlite3

import pytest
import sqlalchemy as sa

import ledger_sample as ls
from conftest import run_cli
from phalanx.core.merkle import leaf_hash
from phalanx.ledger.audit import audit
from phalanx.ledger.entries import DatasetCommitment, decode_entry
from phalanx.ledger.storage import TABLES, engine_url


def _flip(value, rng: random.Random):
    """The same value with one byte (or one bit of an integer) changed."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(0, 40))
    data = bytearray(value.encode() if isinstance(value, str) else value)
    if not data:
        return b"\x00"
    data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    if isinstance(value, str):
        try:
            return data.decode()
        except UnicodeDecodeError:
            return bytes(data)  # stored as a BLOB in a TEXT column (SQLite) / skipped (PostgreSQL)
    return bytes(data)


def _flips(location, per_column: int, seed: int):
    """Flip one value at a time in every column of every table; yield (table, column, row) while
    the flip is stored, and put the original back afterwards."""
    rng = random.Random(seed)
    engine = sa.create_engine(engine_url(location))
    try:
        for table in TABLES.values():
            key = next(iter(table.primary_key.columns))
            with engine.connect() as conn:
                keys = [r[0] for r in conn.execute(sa.select(key))]
            for column in table.columns:
                write = sa.text(f"UPDATE {table.name} SET {column.name} = :value WHERE {key.name} = :key")
                for k in rng.sample(keys, min(per_column, len(keys))):
                    with engine.begin() as conn:
                        original = conn.execute(sa.select(column).where(key == k)).scalar_one()
                    flipped = _flip(original, rng)
                    if isinstance(flipped, bytes) and isinstance(original, str) and engine.dialect.name != "sqlite":
                        continue  # PostgreSQL text cannot hold invalid UTF-8 at all
                    try:
                        with engine.begin() as conn:
                            conn.execute(write, {"value": flipped, "key": k})
                    except sa.exc.IntegrityError:
                        continue  # the database itself refused it (a duplicate key): nothing changed
                    yield table.name, column.name, k
                    with engine.begin() as conn:
                        conn.execute(write, {"value": original, "key": flipped if column is key else k})
    finally:
        engine.dispose()


def _check_flips(location, policy, per_column: int, seed: int) -> int:
    count = 0
    for table, column, row in _flips(location, per_column, seed):
        report = audit(location, policy=policy)
        assert not report.ok, f"flipping a byte of {table}.{column} (row {row}) went unnoticed"
        finding = str(report.findings[0])
        assert table.rstrip("s") in finding or report.findings[0].where in ("meta", "policy", "file", "store"), \
            f"{table}.{column} row {row}: {finding}"
        count += 1
    assert audit(location, policy=policy).ok  # every flip was undone
    return count


def test_every_sampled_byte_flip_in_every_column_is_found(ledger_location):
    sample = ls.build(ledger_location)
    sample.ledger.close()
    assert audit(ledger_location, policy=sample.policy).ok
    postgres = "://" in str(ledger_location)
    flips = _check_flips(ledger_location, sample.policy, per_column=3 if postgres else 6, seed=1)
    assert flips >= (30 if postgres else 60)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PHALANX_SLOW_TESTS"), reason="set PHALANX_SLOW_TESTS=1 (.ci/run does)")
def test_many_more_byte_flips(tmp_path):
    sample = ls.build(tmp_path / "ledger.db")
    sample.ledger.close()
    total = sum(_check_flips(tmp_path / "ledger.db", sample.policy, per_column=30, seed=s) for s in range(5))
    assert total >= 1000


def _logical(path) -> list | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.text_factory = bytes
        try:
            return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


@pytest.mark.parametrize("seed", range(3))
def test_raw_byte_flips_in_the_file_are_found_or_change_nothing_stored(tmp_path, seed):
    """A flip in the file either changes what is stored, and the audit fails, or it lands in
    bytes SQLite does not use (free space, slack), and the stored rows are byte-identical."""
    sample = ls.build(tmp_path / "ledger.db")
    sample.ledger.close()
    pristine = (tmp_path / "ledger.db").read_bytes()
    before = _logical(tmp_path / "ledger.db")
    rng = random.Random(seed)
    found = unchanged = 0
    for _ in range(40):
        data = bytearray(pristine)
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        (tmp_path / "flipped.db").write_bytes(data)
        report = audit(tmp_path / "flipped.db", policy=sample.policy)
        if report.ok:
            assert _logical(tmp_path / "flipped.db") == before, "stored rows changed and the audit passed"
            unchanged += 1
        else:
            assert "\n" not in report.summary()
            found += 1
    assert found > 0


# ---------------------------------------------------------------- the command


def test_cli_audit_receipts_and_hostile_input(tmp_path):
    sample = ls.build(tmp_path / "ledger.db")
    sample.ledger.submit(DatasetCommitment(name="late", root=ls.h("late"), samples=1), sample.nodes[0])
    sample.ledger.close()
    (tmp_path / "policy.txt").write_text(sample.policy.format())
    ok = run_cli("audit", str(tmp_path / "ledger.db"), "--policy", str(tmp_path / "policy.txt"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 36 entries, 4 checkpoints") and "1 entries after the last checkpoint" in ok.stdout
    exported = run_cli("receipt", "export", str(tmp_path / "ledger.db"), "12", "--out", str(tmp_path / "r.proof"))
    assert exported.returncode == 0, exported.stderr
    good = run_cli("receipt", "verify", str(tmp_path / "r.proof"), "--log-key", sample.log.vkey,
                   *[a for w in sample.witnesses for a in ("--witness", w.vkey)])
    assert good.returncode == 0 and good.stdout.startswith("ok: aggregate_record"), good.stderr
    receipt = (tmp_path / "r.proof").read_text()
    (tmp_path / "bad.proof").write_text(receipt.replace("index 12", "index 13"))
    bad = run_cli("receipt", "verify", str(tmp_path / "bad.proof"), "--policy", str(tmp_path / "policy.txt"))
    assert bad.returncode == 1 and bad.stderr.startswith("receipt does not verify: step 4")
    # a forged log signature on the stored checkpoint, a bad key name, a truncated file
    conn = sqlite3.connect(tmp_path / "ledger.db")
    note = conn.execute("SELECT note FROM checkpoints WHERE id = 1").fetchone()[0]
    conn.execute("UPDATE checkpoints SET note = ? WHERE id = 1", (note.replace(b"\n\n\xe2\x80\x94 phalanx.test/ledger ",
                                                                             b"\n\n\xe2\x80\x94 phalanx test/ledger "),))
    conn.commit()
    conn.close()
    forged = run_cli("audit", str(tmp_path / "ledger.db"))
    assert forged.returncode == 1
    assert forged.stderr.strip() == ("audit failed: checkpoints row 1 note: signature line 1: key name "
                                     "'phalanx' contains a space or '+'") or "checkpoints row 1" in forged.stderr
    assert "Traceback" not in forged.stderr and len(forged.stderr.strip().splitlines()) == 1
    (tmp_path / "cut.db").write_bytes((tmp_path / "ledger.db").read_bytes()[:5000])
    cut = run_cli("audit", str(tmp_path / "cut.db"))
    assert cut.returncode == 1 and "truncated or corrupted" in cut.stderr and "Traceback" not in cut.stderr
    badkey = run_cli("audit", str(tmp_path / "ledger.db"), "--log-key", "no+such+key")
    assert badkey.returncode == 2 and badkey.stderr.startswith("error: vkey no:")
    wrong = run_cli("audit", str(tmp_path / "ledger.db"), "--log-key", ls.log_signer(secret="other").vkey)
    assert wrong.returncode == 1 and "meta: the stored log key" in wrong.stderr


def test_signatures_checked_in_worker_processes_report_the_first_failure(tmp_path):
    sample = ls.build(tmp_path / "ledger.db")
    sample.ledger.close()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    data = conn.execute("SELECT data FROM entries WHERE idx = 9").fetchone()[0]
    at = data.index(decode_entry(data).signature) + 10  # a byte inside the signature
    forged = data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
    conn.execute("UPDATE entries SET data = ?, leaf = ? WHERE idx = 9", (forged, leaf_hash(forged)))  # a careful forger
    conn.commit()
    conn.close()
    for workers in (0, 2):
        report = audit(tmp_path / "ledger.db", workers=workers)
        assert str(report.findings[0]).startswith("entries row 9 data: signature: bad signature"), workers


def test_the_engine_adds_its_own_checks_to_the_audit(tmp_path):
    """The seam for phalanx.engine: per-entry checks that see the entry and the structural state
    (here: no update commitment from a node after its quarantine entry)."""
    sample = ls.build(tmp_path / "ledger.db", everything=False, rounds=1)
    ledger, keys = sample.ledger, sample.nodes
    ledger.submit(ls.Quarantine(node=keys[2].node_id, round=1, action="quarantine", reason="NaN"), keys[0])
    ls.round_entries(ledger, keys, 1, sample.salt)
    ledger.checkpoint(sample.witnesses)
    ledger.close()
    quarantined: set[bytes] = set()

    def not_quarantined(index, entry, state):
        if entry.type == "quarantine":
            quarantined.add(entry.body.node)
        elif entry.type == "update_commitment" and state.node_of(entry.key) in quarantined:
            return f"update from quarantined node {state.node_of(entry.key).hex()[:16]}..."
        return None

    assert audit(tmp_path / "ledger.db").ok  # structurally sound
    report = audit(tmp_path / "ledger.db", checks=[not_quarantined])
    assert str(report.findings[0]).startswith("entries row 16: not_quarantined: update from quarantined node")
