-- teamkey: key tables page newest first within a team. This index serves
-- `WHERE team_id = ? ... ORDER BY created_at DESC, id DESC LIMIT n` and the
-- per-team COUNT, and its leading team_id column replaces the old index.
CREATE INDEX api_keys_team_page_idx ON api_keys (team_id, created_at, id);
DROP INDEX IF EXISTS api_keys_team_id_idx;
