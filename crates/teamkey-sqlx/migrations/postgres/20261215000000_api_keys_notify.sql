-- teamkey: every change of a key that verification depends on is announced
-- on the channel `teamkey_api_keys`, with the key id as payload, whoever
-- makes it (an instance, the `teamkey` CLI, a hand-written UPDATE). Caches
-- LISTEN and forget that key. NOTIFY is sent at commit, in commit order, and
-- never for a transaction that rolls back.
--
-- Not for `last_used_at`: the batched last-used flush updates it all the
-- time, and it changes no verification. The comparison is made in the
-- function rather than by `UPDATE OF <columns>`, which would forbid
-- changing those columns' types (as a database's own collation may need),
-- and it counts every other column, including any added later.
CREATE FUNCTION teamkey_api_keys_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- No rows to name: '*' tells caches to forget everything.
        PERFORM pg_notify('teamkey_api_keys', '*');
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE'
        AND (to_jsonb(OLD) - 'last_used_at') = (to_jsonb(NEW) - 'last_used_at') THEN
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

CREATE TRIGGER api_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION teamkey_api_keys_notify();

CREATE TRIGGER api_keys_notify_truncate
    AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION teamkey_api_keys_notify();
