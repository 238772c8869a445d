-- teamkey: rotation lineage, the last use's client address, and the audit
-- log of key changes (issue 11).
--
-- rotated_from names the key a rotation replaced; last_used_ip is written
-- with last_used_at by the batched last-used flush, as text (at most 45
-- characters: an IPv6 address with an embedded IPv4 one), the same on every
-- database. The expiry index serves sweeps for expiring keys across teams
-- (MySQL has no partial indexes: revoked and rotated keys are in it too).
-- One ALTER: MySQL commits each DDL statement on its own, and one statement
-- cannot half-apply.
ALTER TABLE api_keys
    ADD COLUMN rotated_from CHAR(12)    CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN last_used_ip VARCHAR(45) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD INDEX api_keys_expiring_idx (expires_at, id);

-- The change log counts rotated_from as it counts every other column but
-- the last-used pair (last_used_at, and now last_used_ip, which the batched
-- flush writes all the time and which change no verification). The new
-- trigger is made before the old one is dropped, so that no update goes
-- unlogged in between (for that moment both log it: a cache forgets the key
-- twice, which is harmless). It names rotated_from, so it comes after the
-- ALTER above. As in 20261215000000: apply it with `teamkey migrate` or
-- SqlxStore::migrate, not the `mysql` client.
CREATE TRIGGER api_keys_changes_update_v2 AFTER UPDATE ON api_keys FOR EACH ROW
BEGIN
    IF NOT (BINARY OLD.id <=> BINARY NEW.id
        AND BINARY OLD.team_id <=> BINARY NEW.team_id
        AND BINARY OLD.name <=> BINARY NEW.name
        AND BINARY OLD.preview <=> BINARY NEW.preview
        AND OLD.digest <=> NEW.digest
        AND OLD.hash_version <=> NEW.hash_version
        AND BINARY OLD.scopes <=> BINARY NEW.scopes
        AND OLD.created_at <=> NEW.created_at
        AND OLD.expires_at <=> NEW.expires_at
        AND OLD.revoked_at <=> NEW.revoked_at
        AND BINARY OLD.replaced_by <=> BINARY NEW.replaced_by
        AND BINARY OLD.rotated_from <=> BINARY NEW.rotated_from) THEN
        INSERT INTO api_key_changes (key_id, changed_at) VALUES (OLD.id, UTC_TIMESTAMP(6));
        IF NOT (BINARY OLD.id <=> BINARY NEW.id) THEN
            INSERT INTO api_key_changes (key_id, changed_at) VALUES (NEW.id, UTC_TIMESTAMP(6));
        END IF;
    END IF;
END;

DROP TRIGGER api_keys_changes_update;

-- One row per event; never the key, nor its digest. Ids are UUIDv7 as
-- lowercase text, which sort (ascii_bin) as their events happened. Team ids
-- and names compare as the api_keys columns do (utf8mb4_bin); that
-- collation pads with spaces, so the store also compares team ids as bytes.
-- once_key is set only for events recorded once per key (key.expired, each
-- key.expiring notice): unique (NULLs never clash), so that instances
-- racing to record one record it once. Events are not api_keys rows:
-- recording one logs no change.
CREATE TABLE api_key_events (
    id           CHAR(36)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    event_type   VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    occurred_at  DATETIME(6)  NOT NULL,
    team_id      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    actor_type   VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    actor_id     VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    key_id       CHAR(12)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    key_name     VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    preview      VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    scopes       TEXT         CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    successor_id CHAR(12)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    days_left    SMALLINT     NULL,
    request_id   VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    client_ip    VARCHAR(45)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    user_agent   VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    once_key     VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    UNIQUE KEY api_key_events_once_key (once_key),
    -- A team's history pages newest first, by id.
    INDEX api_key_events_team_idx (team_id, id)
) ENGINE = InnoDB;
