"""The audit trail of identities, and signed archives of it.

Every entry records how its actor's identity was established (``auth_method``), under the entry's
keyed hash; entries from before the column still verify. A whole chain recomputed by someone with
write access to the database but not the stack's key (the key and the signed head file live in the
state directory, apart from a PostgreSQL ledger) fails `mlplat audit verify`. `mlplat audit export`
writes a signed archive for write-once storage; `mlplat audit verify --archive` checks it offline and
says what is wrong.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest

from mlplat.db import Database, open_database
from mlplat.services import audit
from tests.conftest import REPO, run_cli, write_project
from tests.pg import fresh_database
from tests.server_support import running_server

pytestmark = pytest.mark.integration

STATE = Path(".mlplat") / "dev"


# --- a provisioned project, built once; tests that tamper work on a copy ---------------------------


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory) -> Path:
    """The dev stack provisioned by ds@example.com (trusted-local), then entries by other means."""
    root = write_project(tmp_path_factory.mktemp("audit-identity") / "project",
                         {"dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()})
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root,
                 env={"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"})
    assert up.returncode == 0, up.stderr
    db = Database(root / STATE / "platform.db")
    conn = db.connect()
    try:
        for actor, method, action in [("risk-office@example.com", "oidc", "approval.approved"),
                                      ("mlplat-controller", "system", "deployment.step"),
                                      ("arn:aws:sts::123456789012:assumed-role/Ops/ana", "aws-iam", "deployment.created")]:
            with db.transaction(conn):
                audit.append(conn, actor=actor, method=method, action=action, model="scorer", version=1,
                             environment="dev", reason=f"{action} by {method}")
    finally:
        conn.close()
    return root


@pytest.fixture
def project(provisioned, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(provisioned, copy)
    return copy


def cli(project: Path, *args: str, **env: str):
    return run_cli(*args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": "ds@example.com", **env})


def ledger(project: Path) -> sqlite3.Connection:
    conn = Database(project / STATE / "platform.db").connect()
    conn.execute("DROP TRIGGER audit_log_no_update")  # tampering as the file's owner could
    return conn


# --- the method of every entry ---------------------------------------------------------------------


def test_every_entry_records_how_its_actor_was_established(provisioned):
    shown = cli(provisioned, "audit", "log", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [(r["actor"], r["auth_method"]) for r in rows] == [
        ("ds@example.com", "trusted-local"),  # `mlplat up` on a trusted-local stack, named by MLPLAT_USER
        ("risk-office@example.com", "oidc"), ("mlplat-controller", "system"),
        ("arn:aws:sts::123456789012:assumed-role/Ops/ana", "aws-iam")]
    table = cli(provisioned, "audit", "log")
    assert table.returncode == 0 and "identity" in table.stdout
    for method in ("trusted-local", "oidc", "system", "aws-iam"):
        assert method in table.stdout
    assert cli(provisioned, "audit", "verify").returncode == 0


@pytest.mark.parametrize("forged", ["oidc", None], ids=["another-method", "removed"])
def test_the_keyed_hash_covers_the_method(project, forged):
    """A trusted-local entry dressed up as an OIDC-authenticated one (or stripped of its method) no longer verifies."""
    conn = ledger(project)
    conn.execute("UPDATE audit_log SET auth_method = ? WHERE seq = 1", (forged,))
    conn.close()
    result = cli(project, "audit", "verify")
    assert result.returncode == 8, result.stdout
    assert "entry #1 (governance.applied by ds@example.com): content does not match its keyed hash" in result.stderr


def test_an_unknown_method_is_refused_and_writes_nothing(project):
    db = Database(project / STATE / "platform.db")
    conn = db.connect()
    try:
        before = conn.execute("SELECT count(*), max(seq) FROM audit_log").fetchone()
        with pytest.raises(ValueError, match="unknown identity method 'root'"):
            with db.transaction(conn):
                audit.append(conn, actor="x@example.com", method="root", action="approval.approved", reason="r")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # the column's own constraint, past the service
            conn.execute("INSERT INTO audit_log (seq, ts, actor, action, evidence, digest, prev_hash, hash, "
                         "auth_method) VALUES (99, 0, 'a', 'x', '{}', 'd', 'p', 'h', 'root')")
        assert conn.execute("SELECT count(*), max(seq) FROM audit_log").fetchone() == before
    finally:
        conn.close()
    assert cli(project, "audit", "verify").returncode == 0


# --- both ledgers: entries from before the column, whole-chain rewrites -----------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def chain(request, tmp_path):
    """(connection, database, head file, untrigger) of a ledger holding three keyed entries."""
    if request.param == "sqlite":
        db = Database(tmp_path / "platform.db")
        head = tmp_path / audit.HEAD_FILE

        def untrigger(c):
            c.execute("DROP TRIGGER audit_log_no_update")
    else:
        db = open_database(fresh_database(request.getfixturevalue("postgres")), key_dir=tmp_path)
        head = tmp_path / db.head_file

        def untrigger(c):
            c.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")  # as a superuser of the database would
    db.migrate()
    conn = db.connect()
    for i, method in enumerate(["os-user", "oidc", "system"]):
        with db.transaction(conn):
            audit.append(conn, actor=f"user{i}@example.com", method=method, action="approval.approved", model="m",
                         version=i + 1, environment="dev", reason=f"reason {i}", evidence={"i": i})
    yield conn, db, head, untrigger
    conn.close()


def _old_mac(key: audit.AuditKey, row: dict) -> str:
    """An entry's keyed hash as the platform computed it before entries recorded a method."""
    body = {**{k: row[k] for k in audit._FIELDS}, "scheme": audit.SCHEME_KEYED, "key_id": key.key_id}
    return hmac.new(key.secret, audit.canonical(body).encode(), hashlib.sha256).hexdigest()


def entries_as_written_before_methods(conn, count: int) -> str:
    """Append ``count`` keyed entries as the platform wrote them before entries recorded a method (no
    auth_method, a MAC without it), anchor the head file, and return the last entry's hash."""
    key = audit.load_key(conn, create=True)
    prev = audit.GENESIS
    for seq in range(1, count + 1):
        row = {"seq": seq, "ts": 1_700_000_000.0 + seq, "actor": f"old{seq}@example.com", "action": "approval.approved",
               "model": "m", "version": seq, "environment": "dev", "reason": "before", "evidence": "{}",
               "digest": "d" * 64, "prev_hash": prev}
        row["hash"] = _old_mac(key, row)
        conn.execute("INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, "
                     "digest, prev_hash, hash, scheme, key_id) VALUES (:seq, :ts, :actor, :action, :model, :version, "
                     ":environment, :reason, :evidence, :digest, :prev_hash, :hash, 'hmac-sha256', :kid)",
                     {**row, "kid": key.key_id})
        conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                     "seq = excluded.seq, hash = excluded.hash", (seq, row["hash"]))
        prev = row["hash"]
    audit.write_head_file(conn, key)
    return prev


def test_entries_from_before_the_method_column_still_verify(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    conn = db.connect()
    prev = entries_as_written_before_methods(conn, 2)
    with db.transaction(conn):
        new = audit.append(conn, actor="new@example.com", method="os-user", action="approval.approved", reason="after")
    assert new["prev_hash"] == prev and new["auth_method"] == "os-user"
    result = audit.verify(conn)
    assert result.ok, result.problems
    assert [e["auth_method"] for e in audit.entries(conn)] == [None, None, "os-user"]
    # giving an old entry a method afterwards is an edit like any other
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET auth_method = 'oidc' WHERE seq = 1")
    assert any("entry #1" in p and "keyed hash" in p for p in audit.verify(conn).problems)
    conn.close()


def rewrite(conn, recompute) -> str:
    """Rewrite entry #2 (actor and method) and recompute every hash and link after it, as whoever holds
    the database but not the key can; returns the new head."""
    prev = audit.GENESIS
    for row in [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]:
        if row["seq"] == 2:
            row["actor"], row["auth_method"] = "mallory@example.com", "oidc"
        row["prev_hash"] = prev
        recompute(row)
        conn.execute("UPDATE audit_log SET actor=?, auth_method=?, prev_hash=?, hash=?, scheme=?, key_id=? WHERE seq=?",
                     (row["actor"], row["auth_method"], row["prev_hash"], row["hash"], row["scheme"], row["key_id"],
                      row["seq"]))
        prev = row["hash"]
    conn.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))
    return prev


def test_a_whole_chain_rewritten_with_a_guessed_key_fails_verify(chain):
    conn, db, _, untrigger = chain
    assert audit.verify(conn).ok
    guessed = audit.derive_key(b"0" * 64)

    def rekey(row):
        row["scheme"], row["key_id"] = audit.SCHEME_KEYED, guessed.key_id
        row["hash"] = audit._row_mac(guessed, row)

    with db.transaction(conn):
        untrigger(conn)
        rewrite(conn, rekey)
    result = audit.verify(conn)
    assert not result.ok
    assert sum("not the stack's key" in p for p in result.problems) == 3, result.problems
    assert any("head file" in p for p in result.problems), result.problems


def test_a_whole_chain_rewritten_without_any_key_fails_verify(chain):
    """Every hash recomputed with plain SHA-256 (the unkeyed scheme): each entry is self-consistent and
    links, but the signed head file outside the database names the real last entry."""
    conn, db, head, untrigger = chain

    def unkeyed(row):
        row["scheme"] = row["key_id"] = None
        row["hash"] = audit._row_hash(row)

    with db.transaction(conn):
        untrigger(conn)
        rewrite(conn, unkeyed)
    assert head.is_file()
    result = audit.verify(conn)
    assert not result.ok and result.head_file == "rewritten"
    assert result.problems == ["entry #3 differs from the one the signed head file names (the tail was rewritten)"]


def test_the_cli_refuses_a_rewritten_chain_and_does_not_archive_it(project, tmp_path):
    conn = ledger(project)

    def unkeyed(row):
        row["scheme"] = row["key_id"] = None
        row["hash"] = audit._row_hash(row)

    rewrite(conn, unkeyed)
    conn.commit()
    conn.close()
    verified = cli(project, "audit", "verify")
    assert verified.returncode == 8 and "the audit log was tampered with" in verified.stderr
    out = tmp_path / "rewritten.tar.gz"
    exported = cli(project, "audit", "export", "--out", str(out))
    assert exported.returncode == 8, exported.stderr
    assert "does not verify, so it is not archived" in exported.stderr and not out.exists()


# --- signed archives -----------------------------------------------------------------------------


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def pack(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def stack_key(project: Path) -> audit.AuditKey:
    return audit.derive_key((project / STATE / "keys" / "platform.key").read_bytes().strip())


def test_export_writes_a_signed_archive_that_verifies_offline(project, tmp_path):
    out = tmp_path / "audit-dev-1-4.tar.gz"
    exported = cli(project, "audit", "export", "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    files = read_archive(out)
    assert sorted(files) == ["entries.jsonl", "manifest.json"]
    manifest = json.loads(files["manifest.json"])
    log = json.loads(cli(project, "audit", "log", "--json").stdout)
    assert {k: manifest[k] for k in ("stack", "first_seq", "last_seq", "count", "prev_hash", "head")} == {
        "stack": "dev", "first_seq": 1, "last_seq": 4, "count": 4, "prev_hash": audit.GENESIS, "head": log[-1]["hash"]}
    assert manifest["entries_sha256"] == hashlib.sha256(files["entries.jsonl"]).hexdigest()
    assert manifest["key_id"] == stack_key(project).key_id == doc["manifest"]["key_id"]
    lines = [json.loads(line) for line in files["entries.jsonl"].decode().splitlines()]
    assert [(e["seq"], e["actor"], e["auth_method"], e["hash"]) for e in lines] == [
        (e["seq"], e["actor"], e["auth_method"], e["hash"]) for e in log]
    # offline: a copy of the archive and of the key, away from the ledger
    vault = tmp_path / "vault"
    vault.mkdir()
    shutil.copy(out, vault / out.name)
    shutil.copy(project / STATE / "keys" / "platform.key", vault / "platform.key")
    shutil.rmtree(project / STATE)
    checked = cli(project, "audit", "verify", "--archive", str(vault / out.name), "--key-file",
                  str(vault / "platform.key"))
    assert checked.returncode == 0, checked.stderr
    assert "audit archive intact: stack dev, entries #1..#4 (4)" in checked.stdout


def test_archives_continue_each_other(project, tmp_path):
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert cli(project, "audit", "export", "--out", str(first)).returncode == 0
    db = Database(project / STATE / "platform.db")
    conn = db.connect()
    with db.transaction(conn):
        audit.append(conn, actor="risk-office@example.com", method="oidc", action="approval.rejected", reason="later")
    conn.close()
    made = cli(project, "audit", "export", "--out", str(second), "--since", "4")
    assert made.returncode == 0, made.stderr
    a, b = (json.loads(read_archive(p)["manifest.json"]) for p in (first, second))
    assert (b["first_seq"], b["last_seq"], b["count"]) == (5, 5, 1)
    assert b["prev_hash"] == a["head"]  # the second archive links to the first one's last entry
    for path in (first, second):
        assert cli(project, "audit", "verify", "--archive", str(path)).returncode == 0


def _resign(manifest: dict, key: audit.AuditKey) -> dict:
    body = audit.canonical({k: v for k, v in manifest.items() if k != "signature"})
    return {**manifest, "signature": hmac.new(key.secret, body.encode(), hashlib.sha256).hexdigest()}


def _tamper(files: dict[str, bytes], how: str, key: audit.AuditKey) -> bytes:
    manifest = json.loads(files["manifest.json"])
    lines = files["entries.jsonl"].decode().splitlines(keepends=True)
    if how == "edited-entry":
        lines[1] = lines[1].replace("risk-office@example.com", "mallory@example.com")
        return pack({"manifest.json": files["manifest.json"], "entries.jsonl": "".join(lines).encode()})
    if how == "edited-entry-and-digest":
        lines[1] = lines[1].replace("risk-office@example.com", "mallory@example.com")
        data = "".join(lines).encode()
        manifest["entries_sha256"] = hashlib.sha256(data).hexdigest()
        return pack({"manifest.json": json.dumps(manifest).encode(), "entries.jsonl": data})
    if how == "dropped-entry":
        data = "".join(lines[:-1]).encode()
        return pack({"manifest.json": files["manifest.json"], "entries.jsonl": data})
    if how == "resigned-with-another-key":
        data = "".join(lines[:-1]).encode()
        manifest.update(entries_sha256=hashlib.sha256(data).hexdigest(), count=3, last_seq=3,
                        head=json.loads(lines[-2])["hash"])  # a consistent manifest, signed with a guess
        other = audit.derive_key(b"1" * 64)
        return pack({"manifest.json": json.dumps(_resign({**manifest, "key_id": key.key_id}, other)).encode(),
                     "entries.jsonl": data})
    if how == "extra-file":
        return pack({**files, "notes.txt": b"nothing to see"})
    if how == "not-an-archive":
        return gzip.compress(b"just some text")
    raise AssertionError(how)


TAMPERING = {
    "edited-entry": ["entries.jsonl is not the file the manifest names",
                     "entry #2 (approval.approved by mallory@example.com): content does not match its keyed hash"],
    "edited-entry-and-digest": ["the manifest's signature does not match its content",
                                "entry #2 (approval.approved by mallory@example.com): content does not match"],
    "dropped-entry": ["entries.jsonl is not the file the manifest names", "the archive holds 3 entries, the manifest says 4",
                      "the entries run #1..#3, the manifest says #1..#4", "the last entry (#3) is not the head"],
    "resigned-with-another-key": ["the manifest's signature does not match its content"],
    "extra-file": ["not an mlplat audit archive: it holds entries.jsonl, manifest.json, notes.txt"],
    "not-an-archive": ["not an mlplat audit archive: it is not a gzip'd tar"],
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_a_tampered_archive_says_what_is_wrong(provisioned, tmp_path, how):
    out = tmp_path / "a.tar.gz"
    assert cli(provisioned, "audit", "export", "--out", str(out)).returncode == 0
    key = stack_key(provisioned)
    assert audit.verify_archive(out.read_bytes(), key).ok
    result = audit.verify_archive(_tamper(read_archive(out), how, key), key)
    assert not result.ok
    for expected in TAMPERING[how]:
        assert any(p.startswith(expected) for p in result.problems), (expected, result.problems)
    assert len(result.problems) == len(TAMPERING[how]), result.problems


def test_the_cli_names_each_problem_of_an_archive(provisioned, tmp_path):
    out, bad = tmp_path / "a.tar.gz", tmp_path / "bad.tar.gz"
    assert cli(provisioned, "audit", "export", "--out", str(out)).returncode == 0
    bad.write_bytes(_tamper(read_archive(out), "edited-entry", stack_key(provisioned)))
    result = cli(provisioned, "audit", "verify", "--archive", str(bad))
    assert result.returncode == 8
    assert "the audit archive does not verify (2 problem(s))" in result.stderr
    assert "entries.jsonl is not the file the manifest names" in result.stderr
    other_key = tmp_path / "other.key"
    other_key.write_text("ab" * 32)
    wrong = cli(provisioned, "audit", "verify", "--archive", str(out), "--key-file", str(other_key))
    assert wrong.returncode == 8 and "is signed with key id" in wrong.stderr and "not the stack's key" in wrong.stderr


def test_export_and_archive_checks_refuse_bad_input(provisioned, tmp_path):
    before = cli(provisioned, "audit", "log", "--json").stdout
    out = tmp_path / "a.tar.gz"
    out.write_bytes(b"an earlier archive")
    taken = cli(provisioned, "audit", "export", "--out", str(out))
    assert taken.returncode == 5 and "an archive is never overwritten" in taken.stderr
    assert out.read_bytes() == b"an earlier archive"
    beyond = cli(provisioned, "audit", "export", "--out", str(tmp_path / "b.tar.gz"), "--since", "4")
    assert beyond.returncode == 4 and "nothing after #4 to archive" in beyond.stderr
    assert not (tmp_path / "b.tar.gz").exists()
    negative = cli(provisioned, "audit", "export", "--out", str(tmp_path / "c.tar.gz"), "--since", "-1")
    assert negative.returncode == 2 and "--since" in negative.stderr
    nowhere = cli(provisioned, "audit", "export", "--out", str(tmp_path / "missing" / "d.tar.gz"))
    assert nowhere.returncode == 4 and "does not exist" in nowhere.stderr
    lonely = cli(provisioned, "audit", "verify", "--key-file", str(tmp_path / "k"))
    assert lonely.returncode == 2 and "--key-file only goes with --archive" in lonely.stderr
    absent = cli(provisioned, "audit", "verify", "--archive", str(tmp_path / "none.tar.gz"))
    assert absent.returncode == 4 and "cannot read the archive" in absent.stderr
    short = tmp_path / "short.key"
    short.write_text("tiny")
    bad_key = cli(provisioned, "audit", "verify", "--archive", str(out), "--key-file", str(short))
    assert bad_key.returncode == 3 and "not a stack's secret key" in bad_key.stderr
    assert cli(provisioned, "audit", "log", "--json").stdout == before  # nothing was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "short.key"]


def test_export_through_the_control_plane(project, tmp_path):
    with running_server(project, "dev") as server:
        out = tmp_path / "remote.tar.gz"
        made = cli(project, "audit", "export", "--out", str(out), **server.client_env())
        assert made.returncode == 0, made.stderr
        import httpx

        doc = httpx.get(server.url + "/api/v1/audit/archive", params={"since": 2},
                        headers={"Mlplat-User": "ds@example.com"}, timeout=30).json()["result"]
    key = stack_key(project)
    assert audit.verify_archive(out.read_bytes(), key).ok
    assert json.loads(read_archive(out)["manifest.json"])["count"] == 4
    partial = audit.verify_archive(base64.b64decode(doc["archive"]), key)
    assert partial.ok and (partial.manifest["first_seq"], partial.manifest["last_seq"]) == (3, doc["manifest"]["last_seq"])


def test_a_client_of_a_server_needs_a_copy_of_the_key_to_check_an_archive(provisioned, tmp_path):
    out = tmp_path / "a.tar.gz"
    assert cli(provisioned, "audit", "export", "--out", str(out)).returncode == 0
    client = write_project(tmp_path / "client", {"dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
                                                 + "  mlplat:controlPlane:\n    url: http://127.0.0.1:9\n"})
    refused = cli(client, "audit", "verify", "--archive", str(out))
    assert refused.returncode == 3, refused.stderr
    assert "keeps its ledger and its key on its mlplat server" in refused.stderr and "--key-file" in refused.stderr
    shutil.copy(provisioned / STATE / "keys" / "platform.key", tmp_path / "platform.key")
    checked = cli(client, "audit", "verify", "--archive", str(out), "--key-file", str(tmp_path / "platform.key"))
    assert checked.returncode == 0, checked.stderr
    assert not (client / ".mlplat").exists()  # checked offline: the server was never called
