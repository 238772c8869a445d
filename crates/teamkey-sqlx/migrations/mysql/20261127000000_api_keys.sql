-- teamkey: one row per API key. Never the key: only the digest of its secret.
-- Binary collations: key ids are case-sensitive base62, and team isolation
-- must not treat 'Acme' and 'acme' as one team.
CREATE TABLE api_keys (
    id           CHAR(12)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    team_id      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name         VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    preview      VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    digest       BINARY(32)   NOT NULL,
    hash_version SMALLINT     NOT NULL,
    scopes       TEXT         CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   DATETIME(6)  NOT NULL,
    last_used_at DATETIME(6)  NULL,
    expires_at   DATETIME(6)  NULL,
    revoked_at   DATETIME(6)  NULL,
    replaced_by  CHAR(12)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    INDEX api_keys_team_id_idx (team_id)
) ENGINE = InnoDB;
