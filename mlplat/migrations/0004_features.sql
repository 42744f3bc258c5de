-- Feature store registry: entities, versioned feature views, their history, materializations
-- into the online store, and which tracked runs read which view versions.

CREATE TABLE IF NOT EXISTS feature_entities (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,            -- canonical JSON
    applied_at REAL NOT NULL,
    applied_by TEXT NOT NULL
);

-- A view version is never deleted: models trained on it keep being served from it.
CREATE TABLE IF NOT EXISTS feature_views (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    definition TEXT    NOT NULL,         -- canonical JSON (FeatureView.to_dict())
    digest     TEXT    NOT NULL,         -- sha256 of the canonical JSON
    revision   INTEGER NOT NULL DEFAULT 1,
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL,
    applied_by TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE IF NOT EXISTS feature_view_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    revision   INTEGER NOT NULL,
    action     TEXT    NOT NULL CHECK (action IN ('create', 'update')),
    changes    TEXT    NOT NULL,         -- JSON list of human-readable changes
    definition TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    applied_at REAL    NOT NULL,
    applied_by TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS feature_materializations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    start_us    INTEGER NOT NULL,        -- event-time window, microseconds since the epoch, UTC, inclusive
    end_us      INTEGER NOT NULL,
    rows        INTEGER,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    error       TEXT,
    started_at  REAL    NOT NULL,
    finished_at REAL,
    started_by  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS feature_materializations_by_view ON feature_materializations (name, version, id);

-- Lineage: tracked runs that built a training set from a view version.
CREATE TABLE IF NOT EXISTS feature_usage (
    run_id  TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    digest  TEXT    NOT NULL,
    used_at REAL    NOT NULL,
    PRIMARY KEY (run_id, name, version)
);
CREATE INDEX IF NOT EXISTS feature_usage_by_view ON feature_usage (name, version);
