-- teamkey: rotation lineage, the last use's client address, and the audit
-- log of key changes (issue 11).
--
-- rotated_from names the key a rotation replaced; last_used_ip is written
-- with last_used_at by the batched last-used flush, as text (at most 45
-- characters: an IPv6 address with an embedded IPv4 one), the same on every
-- database.
ALTER TABLE api_keys
    ADD COLUMN rotated_from VARCHAR(12),
    ADD COLUMN last_used_ip VARCHAR(45);

-- Expiry sweeps: active keys (unrevoked, not rotated away) by expiry,
-- soonest first, across teams. Partial: revoked and rotated keys, which
-- pile up over the years, stay out of it.
CREATE INDEX api_keys_expiring_idx ON api_keys (expires_at, id COLLATE "C")
    WHERE revoked_at IS NULL AND replaced_by IS NULL;

-- One row per event; never the key, nor its digest. Ids are UUIDv7 as
-- lowercase text: they sort as their events happened, compared bytewise
-- (COLLATE "C") whatever the database's collation. once_key is set only for
-- events recorded once per key (key.expired, each key.expiring notice):
-- unique, so that instances racing to record one record it once.
CREATE TABLE api_key_events (
    id           VARCHAR(36)  COLLATE "C" PRIMARY KEY,
    event_type   VARCHAR(32)  NOT NULL,
    occurred_at  TIMESTAMPTZ  NOT NULL,
    team_id      VARCHAR(128) NOT NULL,
    actor_type   VARCHAR(16)  NOT NULL,
    actor_id     VARCHAR(200),
    key_id       VARCHAR(12)  NOT NULL,
    key_name     VARCHAR(100) NOT NULL,
    preview      VARCHAR(64)  NOT NULL,
    scopes       TEXT         NOT NULL,
    successor_id VARCHAR(12),
    days_left    SMALLINT,
    request_id   VARCHAR(128),
    client_ip    VARCHAR(45),
    user_agent   VARCHAR(256),
    once_key     VARCHAR(64)  COLLATE "C" UNIQUE
);

-- A team's history pages newest first: WHERE team_id = $1 AND id < $2
-- ORDER BY id DESC LIMIT n walks this index backwards and stops.
CREATE INDEX api_key_events_team_idx ON api_key_events (team_id, id);

-- The change feed ignores last_used_ip as it ignores last_used_at: the
-- batched last-used flush writes both all the time, and neither changes a
-- verification. Every other column, rotated_from included, still counts.
-- Events are another table: recording one notifies nobody.
CREATE OR REPLACE FUNCTION teamkey_api_keys_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- No rows to name: '*' tells caches to forget everything.
        PERFORM pg_notify('teamkey_api_keys', '*');
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE'
        AND (to_jsonb(OLD) - ARRAY['last_used_at', 'last_used_ip'])
          = (to_jsonb(NEW) - ARRAY['last_used_at', 'last_used_ip']) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('teamkey_api_keys', OLD.id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        -- A new id may be cached as unknown.
        PERFORM pg_notify('teamkey_api_keys', NEW.id);
    END IF;
    RETURN NULL;
END
$$;
