-- teamkey: one row per API key. Never the key: only the digest of its secret.
CREATE TABLE api_keys (
    id           VARCHAR(12)  PRIMARY KEY,
    team_id      VARCHAR(128) NOT NULL,
    name         VARCHAR(100) NOT NULL,
    preview      VARCHAR(64)  NOT NULL,
    digest       BYTEA        NOT NULL,
    hash_version SMALLINT     NOT NULL,
    scopes       TEXT         NOT NULL,
    created_at   TIMESTAMPTZ  NOT NULL,
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    replaced_by  VARCHAR(12)
);

CREATE INDEX api_keys_team_id_idx ON api_keys (team_id);
