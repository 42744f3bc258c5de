-- Label uploads arrive in batches (at most a few thousand rows per request), each under an id the
-- sender picks: a batch received again under the same id is answered from here and writes nothing.
CREATE TABLE IF NOT EXISTS monitor_label_batches (
    batch_id    TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,          -- sha256 of the batch's labels: the same id with other labels is refused
    source      TEXT NOT NULL,
    received_at REAL NOT NULL,
    result      TEXT NOT NULL           -- JSON: the counts the first delivery answered
);
