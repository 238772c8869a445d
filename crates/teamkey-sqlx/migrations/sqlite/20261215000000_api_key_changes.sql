-- teamkey: a log of changed key ids, written by triggers whoever changes
-- api_keys (an instance, the `teamkey` CLI, a hand-written UPDATE), and
-- polled by caches. `seq` orders the log; SQLite has one writer at a time, so
-- rows commit in `seq` order. `changed_at` (Unix microseconds) only serves
-- pruning and a poller's start. Old rows are pruned by the pollers.
CREATE TABLE api_key_changes (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT    NOT NULL,
    changed_at INTEGER NOT NULL
) STRICT;

CREATE INDEX api_key_changes_changed_at_idx ON api_key_changes (changed_at);

CREATE TRIGGER api_keys_changes_insert AFTER INSERT ON api_keys
BEGIN
    -- A new id may be cached as unknown.
    INSERT INTO api_key_changes (key_id, changed_at)
    VALUES (NEW.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;

-- Every column but last_used_at, which the batched last-used flush updates
-- all the time and which changes no verification: `UPDATE OF` leaves such
-- updates without any trigger call.
CREATE TRIGGER api_keys_changes_update AFTER UPDATE OF
    id, team_id, name, preview, digest, hash_version, scopes,
    created_at, expires_at, revoked_at, replaced_by
ON api_keys
BEGIN
    INSERT INTO api_key_changes (key_id, changed_at)
    VALUES (OLD.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
    INSERT INTO api_key_changes (key_id, changed_at)
    SELECT NEW.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER)
    WHERE NEW.id IS NOT OLD.id;
END;

CREATE TRIGGER api_keys_changes_delete AFTER DELETE ON api_keys
BEGIN
    INSERT INTO api_key_changes (key_id, changed_at)
    VALUES (OLD.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;
