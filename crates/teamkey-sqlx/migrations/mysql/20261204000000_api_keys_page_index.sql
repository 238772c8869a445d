-- teamkey: key tables page newest first within a team. This index serves
-- `WHERE team_id = ? ... ORDER BY created_at DESC, id DESC LIMIT n` and the
-- per-team COUNT, and its leading team_id column replaces the old index.
-- One ALTER: MySQL commits each DDL statement on its own, and one statement
-- cannot half-apply.
ALTER TABLE api_keys
    ADD INDEX api_keys_team_page_idx (team_id, created_at, id),
    DROP INDEX api_keys_team_id_idx;
