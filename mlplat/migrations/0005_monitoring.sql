-- Production monitoring: windows judged by each pass, delayed labels, alert state with
-- its outbox, and debounced retraining triggers.

-- Ground truth joined to captured predictions by request id.
CREATE TABLE IF NOT EXISTS monitor_labels (
    request_id  TEXT PRIMARY KEY,
    label       TEXT NOT NULL,          -- JSON value: an integer class or a class name
    received_at REAL NOT NULL,
    source      TEXT NOT NULL           -- file path, "sdk" or "http"
);

-- One row per (pass, model version, kind): the verdict and metrics of one window.
CREATE TABLE IF NOT EXISTS monitor_windows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id     TEXT    NOT NULL,
    ts          REAL    NOT NULL,
    model       TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    environment TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('drift', 'quality')),
    verdict     TEXT    NOT NULL,       -- ok | drift | breach | insufficient data
    rows        INTEGER NOT NULL,
    first_ts    REAL,
    last_ts     REAL,
    breach      INTEGER NOT NULL DEFAULT 0 CHECK (breach IN (0, 1)),   -- counts towards retraining
    metrics     TEXT    NOT NULL,       -- JSON object metric -> value
    details     TEXT    NOT NULL        -- JSON: per-feature drift, calibration bins
);
CREATE INDEX IF NOT EXISTS monitor_windows_by_model ON monitor_windows (model, kind, ts);
CREATE INDEX IF NOT EXISTS monitor_windows_by_pass ON monitor_windows (pass_id);

-- Alert state per (rule, subject): an alert fires once and resolves once.
CREATE TABLE IF NOT EXISTS alert_state (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,          -- "model@environment" or "team:<team>"
    firing      INTEGER NOT NULL CHECK (firing IN (0, 1)),
    since       REAL NOT NULL,
    last_value  REAL,
    last_seen   REAL NOT NULL,
    breaches    INTEGER NOT NULL DEFAULT 0,     -- consecutive breaching evaluations
    severity    TEXT NOT NULL,
    PRIMARY KEY (rule, subject)
);

CREATE TABLE IF NOT EXISTS alert_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('fired', 'resolved')),
    severity    TEXT NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL,
    threshold   REAL NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_by_ts ON alert_events (ts);

-- Webhook deliveries, sent off the serving path with retries and backoff.
CREATE TABLE IF NOT EXISTS alert_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      INTEGER NOT NULL REFERENCES alert_events (id),
    url           TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    timeout_s     REAL    NOT NULL,
    max_attempts  INTEGER NOT NULL,
    backoff_s     REAL    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    lease_until   REAL,
    last_error    TEXT
);
CREATE INDEX IF NOT EXISTS alert_outbox_pending ON alert_outbox (status, next_attempt);

-- Debounced retraining: one row per trigger, advanced step by step (resumable).
CREATE TABLE IF NOT EXISTS retrain_triggers (
    id           TEXT PRIMARY KEY,
    ts           REAL NOT NULL,
    model        TEXT NOT NULL,
    environment  TEXT NOT NULL,
    from_version INTEGER NOT NULL,
    reason       TEXT NOT NULL,          -- JSON: k, n, breaching windows
    status       TEXT NOT NULL CHECK (status IN ('pending', 'training', 'registered', 'staged', 'failed')),
    data_path    TEXT,
    run_id       TEXT,
    new_version  INTEGER,
    error        TEXT,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS retrain_triggers_by_model ON retrain_triggers (model, ts);
