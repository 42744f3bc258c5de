-- Serving: what each endpoint routes now, rollouts as resumable state machines, their
-- decision history, the served-version history (for cost), and captured traffic.

-- One row per (model, environment): the routing the gateway applies right now.
CREATE TABLE IF NOT EXISTS endpoints (
    model            TEXT    NOT NULL,
    environment      TEXT    NOT NULL,
    strategy         TEXT    NOT NULL CHECK (strategy IN ('direct', 'ab', 'canary', 'shadow')),
    routes           TEXT    NOT NULL,   -- JSON [{"variant", "version", "weight"}], weights sum to 100
    shadow           TEXT,               -- JSON {"version", "percent"} or NULL
    stable_version   INTEGER NOT NULL,   -- the version rollback returns to while a candidate is live
    previous_version INTEGER,            -- the stable version before this one, kept warm for rollback
    rollout_id       INTEGER,            -- the canary rollout driving the routes, if any
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    updated_by       TEXT    NOT NULL,
    PRIMARY KEY (model, environment)
);

-- Canary rollouts: steps, bake time and thresholds frozen at deploy time; the controller
-- advances step_index and writes every decision to rollout_events.
CREATE TABLE IF NOT EXISTS rollouts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    model             TEXT    NOT NULL,
    environment       TEXT    NOT NULL,
    stable_version    INTEGER NOT NULL,
    candidate_version INTEGER NOT NULL,
    policy            TEXT    NOT NULL,  -- JSON: steps, bake_seconds, thresholds, min_requests
    step_index        INTEGER NOT NULL DEFAULT 0,
    step_started_at   REAL    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'rolled_back', 'superseded')),
    created_at        REAL    NOT NULL,
    created_by        TEXT    NOT NULL,
    finished_at       REAL,
    reason            TEXT,
    last_analysis     TEXT,              -- JSON: the controller's latest verdict and metrics
    analyzed_at       REAL
);
CREATE INDEX IF NOT EXISTS rollouts_running ON rollouts (state, model, environment);

CREATE TABLE IF NOT EXISTS rollout_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  INTEGER,
    model       TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    ts          REAL    NOT NULL,
    actor       TEXT    NOT NULL,
    event       TEXT    NOT NULL,        -- deployed | step | promoted | rolled_back | superseded | waiting
    step_index  INTEGER,
    percent     INTEGER,
    reason      TEXT    NOT NULL,
    metrics     TEXT    NOT NULL         -- JSON: per-variant metrics the decision was based on
);
CREATE INDEX IF NOT EXISTS rollout_events_by_model ON rollout_events (model, environment, ts);

-- Served-version intervals: one row per (version, variant) while it takes traffic.
CREATE TABLE IF NOT EXISTS deployments (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    model          TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    variant        TEXT    NOT NULL,
    started_at     REAL    NOT NULL,
    ended_at       REAL,
    instance_type  TEXT,
    instances      INTEGER NOT NULL DEFAULT 1,
    price_per_hour REAL
);
CREATE INDEX IF NOT EXISTS deployments_open ON deployments (model, environment, ended_at);

-- Bumped by every routing change; the gateway polls it to reload without restart.
CREATE TABLE IF NOT EXISTS serving_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO serving_revision (id, revision) VALUES (1, 0);

-- Captured traffic (sampled), written off the request path; monitoring reads it.
CREATE TABLE IF NOT EXISTS captures (
    request_id  TEXT    PRIMARY KEY,
    ts          REAL    NOT NULL,
    model       TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    variant     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    inputs      TEXT    NOT NULL,        -- JSON {feature: value}, or a list of such for batches
    outputs     TEXT,                    -- JSON predictions
    latency_ms  REAL    NOT NULL,
    status      INTEGER NOT NULL,
    shadow      INTEGER NOT NULL DEFAULT 0 CHECK (shadow IN (0, 1))
);
CREATE INDEX IF NOT EXISTS captures_by_model ON captures (model, version, ts);
CREATE INDEX IF NOT EXISTS captures_by_ts ON captures (ts);
