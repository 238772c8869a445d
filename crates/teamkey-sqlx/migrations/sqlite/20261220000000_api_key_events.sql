-- teamkey: rotation lineage, the last use's client address, and the audit
-- log of key changes (issue 11).
--
-- rotated_from names the key a rotation replaced; last_used_ip is written
-- with last_used_at by the batched last-used flush, as text (an IP address,
-- at most 45 characters), the same on every database.
ALTER TABLE api_keys ADD COLUMN rotated_from TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;

-- Expiry sweeps: active keys (unrevoked, not rotated away) by expiry,
-- soonest first, across teams. Partial: revoked and rotated keys stay out.
CREATE INDEX api_keys_expiring_idx ON api_keys (expires_at, id)
    WHERE revoked_at IS NULL AND replaced_by IS NULL;

-- The change log counts rotated_from as it counts every other column but
-- the last-used pair (last_used_at, and now last_used_ip, which the batched
-- flush writes all the time and which change no verification). SQLite runs
-- this migration in one transaction: no update goes unlogged in between.
DROP TRIGGER api_keys_changes_update;
CREATE TRIGGER api_keys_changes_update AFTER UPDATE OF
    id, team_id, name, preview, digest, hash_version, scopes,
    created_at, expires_at, revoked_at, replaced_by, rotated_from
ON api_keys
BEGIN
    INSERT INTO api_key_changes (key_id, changed_at)
    VALUES (OLD.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
    INSERT INTO api_key_changes (key_id, changed_at)
    SELECT NEW.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER)
    WHERE NEW.id IS NOT OLD.id;
END;

-- One row per event; never the key, nor its digest. Ids are UUIDv7 as
-- lowercase text, which sort (BINARY) as their events happened; times are
-- Unix microseconds. once_key is set only for events recorded once per key
-- (key.expired, each key.expiring notice): unique, so that instances racing
-- to record one record it once. Events are not api_keys rows: recording
-- one invalidates no cache.
CREATE TABLE api_key_events (
    id           TEXT    NOT NULL PRIMARY KEY,
    event_type   TEXT    NOT NULL,
    occurred_at  INTEGER NOT NULL,
    team_id      TEXT    NOT NULL,
    actor_type   TEXT    NOT NULL,
    actor_id     TEXT,
    key_id       TEXT    NOT NULL,
    key_name     TEXT    NOT NULL,
    preview      TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    successor_id TEXT,
    days_left    INTEGER,
    request_id   TEXT,
    client_ip    TEXT,
    user_agent   TEXT,
    once_key     TEXT    UNIQUE
) STRICT;

-- A team's history pages newest first, by id.
CREATE INDEX api_key_events_team_idx ON api_key_events (team_id, id);
