-- Core tables of the platform database.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Resources the local provisioner manages, with the config hash last applied.
CREATE TABLE IF NOT EXISTS stack_resources (
    resource   TEXT NOT NULL,
    name       TEXT NOT NULL,
    config     TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (resource, name)
);
