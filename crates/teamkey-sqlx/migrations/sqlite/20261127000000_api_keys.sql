-- teamkey: one row per API key. Never the key: only the digest of its secret.
-- Times are Unix microseconds: exact, and ordered as integers.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    team_id      TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    preview      TEXT    NOT NULL,
    digest       BLOB    NOT NULL,
    hash_version INTEGER NOT NULL,
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    replaced_by  TEXT
) STRICT;

CREATE INDEX api_keys_team_id_idx ON api_keys (team_id);
