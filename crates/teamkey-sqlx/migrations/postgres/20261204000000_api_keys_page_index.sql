-- teamkey: key tables page newest first within a team. This index serves
-- `WHERE team_id = $1 ... ORDER BY created_at DESC, id DESC LIMIT n` and the
-- per-team COUNT, and its leading team_id column replaces the old index.
-- Ids are compared bytewise (COLLATE "C"), as teamkey orders them, whatever
-- the database's default collation.
CREATE INDEX api_keys_team_page_idx ON api_keys (team_id, created_at, id COLLATE "C");
DROP INDEX IF EXISTS api_keys_team_id_idx;
