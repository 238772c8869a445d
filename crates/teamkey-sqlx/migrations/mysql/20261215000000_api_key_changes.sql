-- teamkey: a log of changed key ids, written by triggers whoever changes
-- api_keys (an instance, the `teamkey` CLI, a hand-written UPDATE), and
-- polled by caches. `seq` is assigned at insert, before commit, so rows may
-- commit out of `seq` order: pollers re-read the seqs they skipped for a
-- while (see SqlxInvalidations). `changed_at` (UTC) only serves pruning and a
-- poller's start. Old rows are pruned by the pollers. TRUNCATE TABLE fires no
-- trigger: delete keys with DELETE.
--
-- The triggers come first: MySQL commits each DDL statement on its own, and
-- CREATE TRIGGER is the statement that may be refused (it needs the TRIGGER
-- privilege, and with binary logging SUPER or log_bin_trust_function_creators).
-- Refused first, it leaves nothing half-applied. Their bodies name the table
-- below only when they run.
CREATE TRIGGER api_keys_changes_insert AFTER INSERT ON api_keys FOR EACH ROW
    -- A new id may be cached as unknown.
    INSERT INTO api_key_changes (key_id, changed_at) VALUES (NEW.id, UTC_TIMESTAMP(6));

-- Not for updates of last_used_at alone: the batched last-used flush makes
-- them all the time, and they change no verification. Strings compare as
-- bytes (BINARY): a PAD SPACE collation would call 'a' and 'a ' equal.
-- Plain INSERT ... VALUES, not one INSERT ... SELECT: that is a "bulk" insert
-- to InnoDB, which may reserve auto-increment values it never uses (gaps
-- that pollers would look for in vain). The compound body is why this file
-- cannot be piped to the `mysql` client as is (it splits at semicolons):
-- apply it with `teamkey migrate` or SqlxStore::migrate.
CREATE TRIGGER api_keys_changes_update AFTER UPDATE ON api_keys FOR EACH ROW
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
        AND BINARY OLD.replaced_by <=> BINARY NEW.replaced_by) THEN
        INSERT INTO api_key_changes (key_id, changed_at) VALUES (OLD.id, UTC_TIMESTAMP(6));
        IF NOT (BINARY OLD.id <=> BINARY NEW.id) THEN
            INSERT INTO api_key_changes (key_id, changed_at) VALUES (NEW.id, UTC_TIMESTAMP(6));
        END IF;
    END IF;
END;

CREATE TRIGGER api_keys_changes_delete AFTER DELETE ON api_keys FOR EACH ROW
    INSERT INTO api_key_changes (key_id, changed_at) VALUES (OLD.id, UTC_TIMESTAMP(6));

CREATE TABLE api_key_changes (
    seq        BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    key_id     CHAR(12)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    changed_at DATETIME(6) NOT NULL,
    INDEX api_key_changes_changed_at_idx (changed_at)
) ENGINE = InnoDB;
