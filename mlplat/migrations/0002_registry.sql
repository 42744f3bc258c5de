-- Model registry governance: versions with sealed manifests, stages, gate reports,
-- approvals, the promotion state machine and the hash-chained audit log.
-- The platform database is the source of truth; MLflow aliases only mirror it.

CREATE TABLE IF NOT EXISTS model_versions (
    model           TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    run_id          TEXT    NOT NULL,
    author          TEXT    NOT NULL,
    framework       TEXT    NOT NULL,
    task            TEXT,                       -- classification | regression | NULL (decided at the gate)
    source          TEXT    NOT NULL,           -- where the provider keeps the artifact files
    manifest        TEXT    NOT NULL,           -- canonical JSON: relative path -> sha256
    artifact_digest TEXT    NOT NULL,           -- sha256 of the canonical manifest
    seal            TEXT    NOT NULL,           -- HMAC-SHA256 of the canonical manifest with the stack key
    lineage         TEXT    NOT NULL,           -- JSON: run, datasets, code, environment
    signature       TEXT,                       -- JSON: MLflow model signature
    holdout         TEXT,                       -- JSON {path, label} named at registration
    created_at      REAL    NOT NULL,
    PRIMARY KEY (model, version)
);

-- One row per (model, version, environment); a version without a row is in 'dev'.
CREATE TABLE IF NOT EXISTS model_stages (
    model       TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    environment TEXT    NOT NULL,
    stage       TEXT    NOT NULL CHECK (stage IN ('dev', 'staging', 'production', 'archived')),
    updated_at  REAL    NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (model, version, environment),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
-- Exactly one production version per model per environment, enforced by the database.
CREATE UNIQUE INDEX IF NOT EXISTS one_production_per_model_env
    ON model_stages (model, environment) WHERE stage = 'production';

CREATE TABLE IF NOT EXISTS gate_reports (
    digest          TEXT    PRIMARY KEY,        -- sha256 of the canonical report (no timestamps in it)
    model           TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    artifact_digest TEXT    NOT NULL,
    passed          INTEGER NOT NULL CHECK (passed IN (0, 1)),
    report          TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    created_by      TEXT    NOT NULL,
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
CREATE INDEX IF NOT EXISTS gate_reports_by_version ON gate_reports (model, version, environment, created_at);

-- An approval or rejection binds to (artifact digest, gate report digest); a decision is
-- final for its binding: one per approver, and none after a rejection (enforced in code).
CREATE TABLE IF NOT EXISTS approvals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model           TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    approver        TEXT    NOT NULL,
    decision        TEXT    NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reason          TEXT    NOT NULL CHECK (length(trim(reason)) > 0),
    artifact_digest TEXT    NOT NULL,
    gate_digest     TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    UNIQUE (model, version, environment, approver, artifact_digest, gate_digest),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);

-- The promotion state machine. Steps are recorded as they start and finish so a rerun resumes.
CREATE TABLE IF NOT EXISTS promotions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    environment  TEXT    NOT NULL,
    target       TEXT    NOT NULL CHECK (target IN ('staging', 'production')),
    state        TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'abandoned')),
    step         TEXT,
    steps        TEXT    NOT NULL DEFAULT '{}',  -- JSON: step -> {status, started, finished, detail}
    requested_by TEXT    NOT NULL,
    error        TEXT,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
-- At most one unfinished promotion per model and environment.
CREATE UNIQUE INDEX IF NOT EXISTS one_running_promotion
    ON promotions (model, environment) WHERE state = 'running';

-- Append-only, hash-chained audit log. Each row's hash covers its content and the previous hash.
CREATE TABLE IF NOT EXISTS audit_log (
    seq         INTEGER PRIMARY KEY,
    ts          REAL    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    model       TEXT,
    version     INTEGER,
    environment TEXT,
    reason      TEXT,
    evidence    TEXT    NOT NULL,   -- canonical JSON
    digest      TEXT    NOT NULL,   -- the artifact digest the entry is about, else sha256 of the evidence
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_by_model ON audit_log (model, seq);
-- The head of the chain, written in the same transaction as each append: a deleted tail shows.
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
