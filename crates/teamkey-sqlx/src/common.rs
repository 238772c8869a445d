//! What the three databases share: time bounds, row decoding, error
//! mapping, the batch update builder, and the `KeyStore` implementation
//! itself (records and their events), which each database module
//! instantiates with its own SQL.

use std::fmt;
use std::net::IpAddr;

use sqlx::error::DatabaseError;
use teamkey_core::events::EventId;
use teamkey_core::{KeyId, Scopes, StoreError};
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};

/// The columns of `api_keys`, in `KeyRecord` order (a literal, for `concat!`).
macro_rules! columns {
    () => {
        "id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by, \
         rotated_from, last_used_ip, rate_limit_requests, rate_limit_window_seconds"
    };
}

/// The columns of `api_key_events` that hold a `KeyEvent`, in its order
/// (`once_key` is written, never read back).
macro_rules! event_columns {
    () => {
        "id, event_type, occurred_at, team_id, actor_type, actor_id, key_id, \
         key_name, preview, scopes, successor_id, days_left, request_id, \
         client_ip, user_agent"
    };
}

/// What an expiry sweep selects: active keys (not revoked, no successor)
/// expiring after the cursor `(expires_at, id) > (after, after_id)` and by
/// `until`, in the order of the expiry index. `$id` is the id column as
/// compared (PostgreSQL: `id COLLATE "C"`).
macro_rules! expiring_rows {
    ($id:literal, $after:literal, $after_id:literal, $until:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE revoked_at IS NULL AND replaced_by IS NULL AND (expires_at, ",
            $id,
            ") > (",
            $after,
            ", ",
            $after_id,
            ") AND expires_at <= ",
            $until
        )
    };
}

/// What one page of a team's key table selects, before the cursor: active
/// rows only, so that the `(team_id, created_at, id)` index is walked from
/// the newest row and the walk stops at the page's end.
macro_rules! active_rows {
    ($team:literal, $now:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE team_id = ",
            $team,
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            $now,
            ")"
        )
    };
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// The statements MySQL and SQLite share: both take `?` parameters and
/// compare ids bytewise (MySQL: `ascii_bin`; SQLite: `BINARY`), as the core
/// orders them.
pub(crate) mod qmark_sql {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO api_keys (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    pub(crate) const GET: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = ?");
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE team_id = ? AND revoked_at IS NULL"
    );
    pub(crate) const REVOKE: &str =
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    /// Binds: team, now, limit.
    pub(crate) const LIST_ACTIVE: &str = concat!(
        active_rows!("?", "?"),
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    /// Binds: team, now, cursor time, cursor time, cursor id, limit.
    /// `(created_at, id) < (t, i)` as `created_at <= t AND (created_at < t
    /// OR id < i)`: the same meaning on every database, and the first
    /// conjunct bounds the index range where row values would not.
    pub(crate) const LIST_ACTIVE_AFTER: &str = concat!(
        active_rows!("?", "?"),
        " AND created_at <= ? AND (created_at < ? OR id < ?)",
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    /// Binds: team, now.
    pub(crate) const COUNT_ACTIVE: &str = "SELECT COUNT(*) FROM api_keys WHERE team_id = ? \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)";
    /// Binds: after, until, limit.
    pub(crate) const EXPIRING: &str = concat!(
        expiring_rows!("id", "?", "?", "?"),
        " ORDER BY expires_at, id LIMIT ?"
    );
    /// Binds: the event's columns, then `once_key`.
    pub(crate) const INSERT_EVENT: &str = concat!(
        "INSERT INTO api_key_events (",
        event_columns!(),
        ", once_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    /// Binds: once key.
    pub(crate) const ONCE_RECORDED: &str = "SELECT COUNT(*) FROM api_key_events WHERE once_key = ?";
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// Keys per last-used statement on databases that take them as bind
/// parameters (at most 7 parameters each; MySQL allows 65,535, SQLite
/// 32,766).
pub(crate) const TOUCH_CHUNK: usize = 1_000;

/// The years a stored time may fall in, in UTC: what `DATETIME`,
/// `TIMESTAMPTZ` and the `time` crate all hold without overflow.
const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// `at` in UTC if it falls within [`YEARS`]. Never panics, whatever the
/// offset (`to_offset` would, for 9999-12-31T23:59:59-23:59).
fn bounded(at: OffsetDateTime) -> Option<OffsetDateTime> {
    at.checked_to_offset(UtcOffset::UTC)
        .filter(|utc| YEARS.contains(&utc.year()))
}

/// A time to bind, in UTC; refused before any driver sees it if it lies
/// outside years 1 to 9999. sqlx panics encoding some of those (PostgreSQL
/// and MySQL convert to UTC with `to_offset`), and SQLite would store what
/// no read can decode.
pub(crate) fn storable(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    bounded(at).ok_or_else(|| {
        StoreError::backend(format!(
            "time {at} is outside years 1 to 9999 UTC, which teamkey does not store"
        ))
    })
}

/// A time as read, if within [`YEARS`].
pub(crate) fn readable(at: OffsetDateTime) -> Result<OffsetDateTime, String> {
    bounded(at).ok_or_else(|| format!("{at} is outside years 1 to 9999 UTC"))
}

/// Where a page's cursor puts the query, once its time is checked.
pub(crate) enum CursorBound {
    /// Before year 1: no stored row is older, the page is empty.
    Nothing,
    /// After year 9999: every stored row is older; no bound.
    Everything,
    /// An ordinary cursor, in UTC.
    At(OffsetDateTime),
}

/// A cursor is client input: one out of the stored range is answered, not
/// refused as a backend failure (that would be a 503 for a bad request).
pub(crate) fn cursor_bound(at: OffsetDateTime) -> CursorBound {
    match bounded(at) {
        Some(utc) => CursorBound::At(utc),
        // Instants compare across offsets without conversion: no panic.
        None if at < datetime!(0001-01-01 0:00 UTC) => CursorBound::Nothing,
        None => CursorBound::Everything,
    }
}

/// A query failed because a table or column of teamkey's is missing: the
/// database was never migrated, or not since this version added it. Its
/// text says what to do.
#[derive(Debug)]
pub(crate) struct NotMigrated(sqlx::Error);

impl fmt::Display for NotMigrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NOT_MIGRATED)
    }
}

/// What a store says, and logs, when its database is not migrated.
pub(crate) const NOT_MIGRATED: &str = "teamkey's tables are missing or older than this version \
     (table api_keys or api_key_events, or one of their columns); \
     run SqlxStore::migrate() (or `teamkey migrate`) first";

impl std::error::Error for NotMigrated {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Unique violations are key-id collisions; a missing table or column is
/// named as such (`not_migrated` knows the database's own codes);
/// everything else is the backend's.
pub(crate) fn store_error(error: sqlx::Error, not_migrated: fn(&dyn DatabaseError) -> bool) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(db) if not_migrated(&**db) => StoreError::backend(NotMigrated(error)),
        _ => StoreError::backend(error),
    }
}

/// A row that breaks teamkey's rules: it was not written by teamkey. Names
/// the row's key id when it has a valid one, so that it can be found.
pub(crate) fn corrupt(key_id: Option<&KeyId>, column: &str, detail: impl fmt::Display) -> StoreError {
    corrupt_row("api_keys", key_id.map(KeyId::as_str), column, detail)
}

/// An `api_key_events` row that breaks teamkey's rules, named by its event
/// id when that is valid.
pub(crate) fn corrupt_event(
    event_id: Option<&EventId>,
    column: &str,
    detail: impl fmt::Display,
) -> StoreError {
    corrupt_row(
        "api_key_events",
        event_id.map(|id| id.to_string()).as_deref(),
        column,
        detail,
    )
}

/// [`corrupt_event`] for `map_err`, whatever the error's type.
pub(crate) fn bad_event<E: fmt::Display>(
    event_id: &EventId,
    column: &'static str,
) -> impl FnOnce(E) -> StoreError {
    let event_id = *event_id;
    move |e| corrupt_event(Some(&event_id), column, e)
}

fn corrupt_row(table: &str, id: Option<&str>, column: &str, detail: impl fmt::Display) -> StoreError {
    let message = match id {
        Some(id) => format!("{table} row {id} has an invalid {column}: {detail}"),
        None => format!("an {table} row has an invalid {column}: {detail}"),
    };
    StoreError::backend(message)
}

/// An IP address column as read: text in Rust's own form (what the store
/// writes), or NULL.
pub(crate) fn parse_ip(text: Option<String>) -> Result<Option<IpAddr>, String> {
    text.map(|t| t.parse().map_err(|_| format!("{t:?} is not an IP address")))
        .transpose()
}

/// Scopes are stored space-separated: no scope can contain a space.
pub(crate) fn scopes_text(scopes: &Scopes) -> String {
    let parts: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    parts.join(" ")
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// `UPDATE api_keys SET … WHERE id IN (…)` for `n` keys, with `?`
/// parameters. Made of fixed fragments only, never of input.
///
/// Without addresses: `last_used_at = CASE … END`, binding per key `id, at,
/// at`, then the `n` ids. With them, first `last_used_ip = CASE … END`,
/// binding per key `id, at, ip`: placed first because MySQL evaluates
/// assignments left to right, each seeing the ones before (SQLite sees the
/// old row in all), so the address must be chosen against the old
/// `last_used_at`. A use without an address keeps the one stored.
pub(crate) fn touch_case_sql(n: usize, with_ips: bool) -> String {
    const NEWER: &str = " WHEN id = ? AND (last_used_at IS NULL OR last_used_at < ?) THEN";
    let mut sql = String::from("UPDATE api_keys SET ");
    if with_ips {
        sql.push_str("last_used_ip = CASE");
        for _ in 0..n {
            sql.push_str(NEWER);
            sql.push_str(" COALESCE(?, last_used_ip)");
        }
        sql.push_str(" ELSE last_used_ip END, ");
    }
    sql.push_str("last_used_at = CASE");
    for _ in 0..n {
        sql.push_str(NEWER);
        sql.push_str(" ?");
    }
    sql.push_str(" ELSE last_used_at END WHERE id IN (");
    sql.push_str(&vec!["?"; n].join(", "));
    sql.push(')');
    sql
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// `touch(pool, uses)` for databases without array parameters: one
/// `touch_case_sql` statement per [`TOUCH_CHUNK`] keys, times through the
/// calling module's `to_db`.
macro_rules! impl_touch_by_case {
    ($pool:ty) => {
        async fn touch(pool: &$pool, uses: &[KeyUse]) -> Result<(), StoreError> {
            for chunk in uses.chunks(crate::common::TOUCH_CHUNK) {
                // Times first: a bad one refuses the chunk before any bind.
                let ats = chunk
                    .iter()
                    .map(|u| to_db(u.at))
                    .collect::<Result<Vec<_>, _>>()?;
                // Most managers record no addresses: then the statement
                // leaves last_used_ip alone, without a CASE for it.
                let with_ips = chunk.iter().any(|u| u.ip.is_some());
                // Built from fixed fragments and `?` only (see touch_case_sql).
                let sql = crate::common::touch_case_sql(chunk.len(), with_ips);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if with_ips {
                    for (u, at) in chunk.iter().zip(&ats) {
                        let ip = u.ip.map(|ip| ip.to_string());
                        query = query.bind(u.key_id.as_str()).bind(*at).bind(ip);
                    }
                }
                for (u, at) in chunk.iter().zip(&ats) {
                    query = query.bind(u.key_id.as_str()).bind(*at).bind(*at);
                }
                for u in chunk {
                    query = query.bind(u.key_id.as_str());
                }
                query.execute(pool).await.map_err(store_error)?;
            }
            Ok(())
        }
    };
}

/// Implements `KeyStore` for `SqlxStore<$db>` from the calling module's
/// `sql` constants, its time conversions (`to_db` for binds, giving a
/// `BindTime`; `column_time` for reads), and its `not_migrated` test.
///
/// `begin_write` starts the transactions that write (a change and its
/// event, a rotation).
macro_rules! impl_key_store {
    (
        db: $db:ty,
        row: $row:ty,
        begin_write: $begin:expr,
        touch: $touch:ident $(,)?
    ) => {
        use teamkey_core::events::{Actor, EventId, EventKind, EventQuery, KeyEvent, RequestContext};
        use teamkey_core::{
            ExpiringQuery, HashVersion, KeyId, KeyName, KeyRecord, KeyUse, ListQuery, RateLimit,
            RotateOutcome, Rotation, Scopes, SecretDigest, StoreError, TeamId,
        };
        use time::OffsetDateTime;

        use crate::common::{
            CursorBound, bad_event, corrupt, corrupt_event, cursor_bound, parse_ip, readable, scopes_text,
        };

        /// Errors through the shared mapping, with this database's test for
        /// a missing table or column.
        fn store_error(error: sqlx::Error) -> StoreError {
            crate::common::store_error(error, not_migrated)
        }

        /// A nullable time column of `row`, within the stored years.
        fn row_time(row: &$row, column: &'static str) -> Result<Option<OffsetDateTime>, String> {
            column_time(row, column).and_then(|at| at.map(readable).transpose())
        }

        /// A nullable time column of a row whose id is `id`, within the
        /// stored years.
        fn read_time(
            row: &$row,
            id: &KeyId,
            column: &'static str,
        ) -> Result<Option<OffsetDateTime>, StoreError> {
            row_time(row, column).map_err(|e| corrupt(Some(id), column, e))
        }

        /// The record in `row`, or a backend error naming the row and the
        /// bad column. Never panics, whatever the row holds.
        fn decode(row: &$row) -> Result<KeyRecord, StoreError> {
            let text = |column: &'static str, id: Option<&KeyId>| -> Result<String, StoreError> {
                row.try_get(column).map_err(|e| corrupt(id, column, e))
            };
            let id = KeyId::parse(&text("id", None)?).map_err(|e| corrupt(None, "id", e))?;
            let id_ref = Some(&id);
            let digest: Vec<u8> = row
                .try_get("digest")
                .map_err(|e| corrupt(id_ref, "digest", e))?;
            let digest: [u8; 32] = digest
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(id_ref, "digest", "not 32 bytes"))?;
            let code: i16 = row
                .try_get("hash_version")
                .map_err(|e| corrupt(id_ref, "hash_version", e))?;
            let scopes = text("scopes", id_ref)?;
            let mut record = KeyRecord::new(
                id,
                TeamId::new(text("team_id", id_ref)?).map_err(|e| corrupt(id_ref, "team_id", e))?,
                KeyName::new(text("name", id_ref)?).map_err(|e| corrupt(id_ref, "name", e))?,
                text("preview", id_ref)?,
                SecretDigest::from_bytes(digest),
                HashVersion::from_code(code).ok_or_else(|| corrupt(id_ref, "hash_version", code))?,
                Scopes::new(scopes.split_whitespace()).map_err(|e| corrupt(id_ref, "scopes", e))?,
                read_time(row, &id, "created_at")?.ok_or_else(|| corrupt(id_ref, "created_at", "NULL"))?,
            );
            record.last_used_at = read_time(row, &id, "last_used_at")?;
            record.expires_at = read_time(row, &id, "expires_at")?;
            record.revoked_at = read_time(row, &id, "revoked_at")?;
            let key_column = |column: &'static str| -> Result<Option<KeyId>, StoreError> {
                let text: Option<String> = row
                    .try_get(column)
                    .map_err(|e| corrupt(id_ref, column, e))?;
                text.map(|s| KeyId::parse(&s))
                    .transpose()
                    .map_err(|e| corrupt(id_ref, column, e))
            };
            record.replaced_by = key_column("replaced_by")?;
            record.rotated_from = key_column("rotated_from")?;
            let ip: Option<String> = row
                .try_get("last_used_ip")
                .map_err(|e| corrupt(id_ref, "last_used_ip", e))?;
            record.last_used_ip = parse_ip(ip).map_err(|e| corrupt(id_ref, "last_used_ip", e))?;
            let number = |column: &'static str| -> Result<Option<i64>, StoreError> {
                row.try_get(column).map_err(|e| corrupt(id_ref, column, e))
            };
            record.rate_limit = match (
                number("rate_limit_requests")?,
                number("rate_limit_window_seconds")?,
            ) {
                (None, None) => None,
                (Some(requests), Some(window)) => {
                    let requests =
                        u32::try_from(requests).map_err(|e| corrupt(id_ref, "rate_limit_requests", e))?;
                    let window =
                        u64::try_from(window).map_err(|e| corrupt(id_ref, "rate_limit_window_seconds", e))?;
                    Some(
                        RateLimit::new(requests, std::time::Duration::from_secs(window))
                            .map_err(|e| corrupt(id_ref, "rate_limit_requests", e))?,
                    )
                }
                _ => {
                    return Err(corrupt(
                        id_ref,
                        "rate_limit_requests",
                        "half a rate limit: both columns or neither",
                    ))
                }
            };
            Ok(record)
        }

        /// The event in `row`, every column checked as the core's
        /// constructors check it; a bad row is a backend error naming the
        /// event and the column, never a panic.
        fn decode_event(row: &$row) -> Result<KeyEvent, StoreError> {
            let id: String = row
                .try_get("id")
                .map_err(|e| corrupt_event(None, "id", e))?;
            let id = EventId::parse(&id).map_err(|e| corrupt_event(None, "id", e))?;
            let text = |column: &'static str| -> Result<String, StoreError> {
                row.try_get(column).map_err(bad_event(&id, column))
            };
            let optional = |column: &'static str| -> Result<Option<String>, StoreError> {
                row.try_get(column).map_err(bad_event(&id, column))
            };
            let key_id =
                |column: &'static str, text: &str| KeyId::parse(text).map_err(bad_event(&id, column));

            let kind = text("event_type")?;
            let kind = EventKind::from_name(&kind)
                .ok_or_else(|| corrupt_event(Some(&id), "event_type", format!("unknown type {kind:?}")))?;
            let at = row_time(row, "occurred_at")
                .map_err(bad_event(&id, "occurred_at"))?
                .ok_or_else(|| corrupt_event(Some(&id), "occurred_at", "NULL"))?;
            let actor_type = text("actor_type")?;
            // The id is the app's name for a person: never in a message.
            let actor =
                Actor::from_parts(&actor_type, optional("actor_id")?.as_deref()).ok_or_else(|| {
                    corrupt_event(
                        Some(&id),
                        "actor",
                        format!("no {actor_type:?} actor has such an id"),
                    )
                })?;
            let days_left: Option<i16> = row
                .try_get("days_left")
                .map_err(bad_event(&id, "days_left"))?;
            let days_left = days_left
                .map(u8::try_from)
                .transpose()
                .map_err(bad_event(&id, "days_left"))?;
            let successor = optional("successor_id")?
                .map(|s| key_id("successor_id", &s))
                .transpose()?;
            // Cut and cleaned as the core's builders do it.
            let mut context = RequestContext::new();
            if let Some(request_id) = optional("request_id")? {
                context = context.request_id(request_id);
            }
            if let Some(agent) = optional("user_agent")? {
                context = context.user_agent(agent);
            }
            if let Some(ip) = parse_ip(optional("client_ip")?).map_err(bad_event(&id, "client_ip"))? {
                context = context.client_ip(ip);
            }
            let scopes = text("scopes")?;
            let mut event = KeyEvent::stored(
                id,
                kind,
                at,
                TeamId::new(text("team_id")?).map_err(bad_event(&id, "team_id"))?,
                actor,
                key_id("key_id", &text("key_id")?)?,
                KeyName::new(text("key_name")?).map_err(bad_event(&id, "key_name"))?,
                text("preview")?,
                Scopes::new(scopes.split_whitespace()).map_err(bad_event(&id, "scopes"))?,
                context,
            );
            event.successor_id = successor;
            event.days_left = days_left;
            Ok(event)
        }

        async fn insert_record<'e, E>(executor: E, r: &KeyRecord) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            // Every time is checked before the first bind.
            let created_at = to_db(r.created_at)?;
            let last_used_at = r.last_used_at.map(to_db).transpose()?;
            let expires_at = r.expires_at.map(to_db).transpose()?;
            let revoked_at = r.revoked_at.map(to_db).transpose()?;
            sqlx::query(sql::INSERT)
                .bind(r.id.as_str())
                .bind(r.team_id.as_str())
                .bind(r.name.as_str())
                .bind(r.preview.as_str())
                .bind(&r.digest.as_bytes()[..])
                .bind(r.hash_version.code())
                .bind(scopes_text(&r.scopes))
                .bind(created_at)
                .bind(last_used_at)
                .bind(expires_at)
                .bind(revoked_at)
                .bind(r.replaced_by.as_ref().map(KeyId::as_str))
                .bind(r.rotated_from.as_ref().map(KeyId::as_str))
                .bind(r.last_used_ip.map(|ip| ip.to_string()))
                .bind(r.rate_limit.map(|l| i64::from(l.requests())))
                .bind(r.rate_limit.map(|l| i64::from(l.window_seconds())))
                .execute(executor)
                .await
                .map_err(store_error)?;
            Ok(())
        }

        /// An event as it is written: checked and bounded before any
        /// transaction starts, so that a refusal leaves nothing to undo.
        struct EventRow<'a> {
            event: &'a KeyEvent,
            at: BindTime,
            actor: Actor,
            context: RequestContext,
            once_key: Option<String>,
        }

        fn event_row(event: &KeyEvent) -> Result<EventRow<'_>, StoreError> {
            // Actor and context through the core's builders again: they cut
            // and clean, so that an event assembled field by field still
            // fits the columns.
            let actor = Actor::from_parts(event.actor.kind(), event.actor.id().as_deref())
                .ok_or_else(|| StoreError::backend(format!("event {}: actor cannot be stored", event.id)))?;
            Ok(EventRow {
                event,
                at: to_db(event.at)?,
                actor,
                context: event.context.clone().cleaned(),
                once_key: event.once_key(),
            })
        }

        /// Writes one event with `statement` (`INSERT_EVENT` or
        /// `APPEND_EVENT`); how many rows it wrote.
        async fn insert_event<'e, E>(
            executor: E,
            row: &EventRow<'_>,
            statement: &'static str,
        ) -> Result<u64, StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let e = row.event;
            let done = sqlx::query(statement)
                .bind(e.id.to_string())
                .bind(e.kind.as_str())
                .bind(row.at)
                .bind(e.team_id.as_str())
                .bind(row.actor.kind())
                .bind(row.actor.id())
                .bind(e.key_id.as_str())
                .bind(e.key_name.as_str())
                .bind(e.preview.as_str())
                .bind(scopes_text(&e.scopes))
                .bind(e.successor_id.as_ref().map(KeyId::as_str))
                .bind(e.days_left.map(i16::from))
                .bind(row.context.request_id.as_deref())
                .bind(row.context.client_ip.map(|ip| ip.to_string()))
                .bind(row.context.user_agent.as_deref())
                .bind(row.once_key.as_deref())
                .execute(executor)
                .await
                .map_err(store_error)?;
            Ok(done.rows_affected())
        }

        /// The record and its `key.created` event, in one transaction.
        async fn insert(
            pool: &sqlx::Pool<$db>,
            record: &KeyRecord,
            event: &KeyEvent,
        ) -> Result<(), StoreError> {
            let event = event_row(event)?;
            let mut tx = pool.begin_with($begin).await.map_err(store_error)?;
            // A conflict returns early: the dropped transaction rolls back.
            insert_record(&mut *tx, record).await?;
            insert_event(&mut *tx, &event, sql::INSERT_EVENT).await?;
            tx.commit().await.map_err(store_error)
        }

        async fn get(
            pool: &sqlx::Pool<$db>,
            key_id: &KeyId,
        ) -> Result<Option<std::sync::Arc<KeyRecord>>, StoreError> {
            let row = sqlx::query(sql::GET)
                .bind(key_id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(store_error)?;
            row.map(|row| decode(&row).map(std::sync::Arc::new))
                .transpose()
        }

        async fn list(pool: &sqlx::Pool<$db>, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
            let rows = sqlx::query(sql::LIST)
                .bind(team_id.as_str())
                .fetch_all(pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(decode).collect()
        }

        async fn list_active(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            query: &ListQuery,
        ) -> Result<Vec<KeyRecord>, StoreError> {
            let now = to_db(query.now)?;
            // Past i64 rows is past any table: no bound at all.
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let after = match query
                .after
                .map(|c| (cursor_bound(c.created_at()), c.key_id()))
            {
                None | Some((CursorBound::Everything, _)) => None,
                Some((CursorBound::Nothing, _)) => return Ok(Vec::new()),
                Some((CursorBound::At(at), id)) => Some((to_db(at)?, id)),
            };
            let rows = match after {
                None => {
                    sqlx::query(sql::LIST_ACTIVE)
                        .bind(team_id.as_str())
                        .bind(now)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                Some((at, id)) => {
                    sqlx::query(sql::LIST_ACTIVE_AFTER)
                        .bind(team_id.as_str())
                        .bind(now)
                        .bind(at)
                        .bind(at)
                        .bind(id.as_str())
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
            }
            .map_err(store_error)?;
            rows.iter().map(decode).collect()
        }

        async fn count_active(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            now: OffsetDateTime,
        ) -> Result<usize, StoreError> {
            let count: i64 = sqlx::query_scalar(sql::COUNT_ACTIVE)
                .bind(team_id.as_str())
                .bind(to_db(now)?)
                .fetch_one(pool)
                .await
                .map_err(store_error)?;
            usize::try_from(count).map_err(|_| StoreError::backend(format!("COUNT(*) answered {count}")))
        }

        /// Revokes `event.key_id` of `event.team_id` at `event.at` and
        /// records the event, in one transaction; neither if the key is not
        /// the team's unrevoked key.
        async fn revoke(pool: &sqlx::Pool<$db>, event: &KeyEvent) -> Result<bool, StoreError> {
            let row = event_row(event)?;
            let mut tx = pool.begin_with($begin).await.map_err(store_error)?;
            let done = sqlx::query(sql::REVOKE)
                .bind(row.at)
                .bind(event.key_id.as_str())
                .bind(event.team_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            if done.rows_affected() != 1 {
                tx.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            insert_event(&mut *tx, &row, sql::INSERT_EVENT).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        }

        async fn rotate(pool: &sqlx::Pool<$db>, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
            // Every time checked before the transaction starts: a refusal
            // leaves nothing to undo.
            let retire_at = to_db(rotation.retire_at)?;
            let s = &rotation.successor;
            for at in [
                Some(s.created_at),
                s.last_used_at,
                s.expires_at,
                s.revoked_at,
            ]
            .into_iter()
            .flatten()
            {
                to_db(at)?;
            }
            let event = event_row(&rotation.event)?;
            let mut tx = pool.begin_with($begin).await.map_err(store_error)?;
            let locked: Option<Option<String>> = sqlx::query_scalar(sql::LOCK_FOR_ROTATION)
                .bind(rotation.old.as_str())
                .bind(rotation.team_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
            let outcome = match locked {
                None => RotateOutcome::NotFound,
                Some(Some(_)) => RotateOutcome::AlreadyRotated,
                Some(None) => {
                    sqlx::query(sql::RETIRE)
                        .bind(rotation.successor.id.as_str())
                        .bind(retire_at)
                        .bind(retire_at)
                        .bind(rotation.old.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                    insert_record(&mut *tx, &rotation.successor).await?;
                    insert_event(&mut *tx, &event, sql::INSERT_EVENT).await?;
                    RotateOutcome::Rotated
                }
            };
            // Nothing was written unless rotated; committing either way
            // releases the lock at once.
            tx.commit().await.map_err(store_error)?;
            Ok(outcome)
        }

        /// Records an event outside any change; `false` if its once key is
        /// already recorded.
        async fn append_event(pool: &sqlx::Pool<$db>, event: &KeyEvent) -> Result<bool, StoreError> {
            let row = event_row(event)?;
            match insert_event(pool, &row, sql::APPEND_EVENT).await {
                Ok(written) => Ok(written == 1),
                // Where APPEND_EVENT cannot skip a recorded once key by
                // itself (MySQL), the insert fails as a duplicate: a skip
                // if the once key is what clashed. (Anything else that
                // clashes is the event id: a conflict, as for records.)
                Err(StoreError::Conflict) => match &row.once_key {
                    Some(once) if once_recorded(pool, once).await? => Ok(false),
                    _ => Err(StoreError::Conflict),
                },
                Err(e) => Err(e),
            }
        }

        async fn once_recorded(pool: &sqlx::Pool<$db>, once_key: &str) -> Result<bool, StoreError> {
            let count: i64 = sqlx::query_scalar(sql::ONCE_RECORDED)
                .bind(once_key)
                .fetch_one(pool)
                .await
                .map_err(store_error)?;
            Ok(count > 0)
        }

        async fn events(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            query: &EventQuery,
        ) -> Result<Vec<KeyEvent>, StoreError> {
            // Past i64 rows is past any table: no bound at all.
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let mut select = match query.before {
                None => sqlx::query(sql::EVENTS),
                Some(_) => sqlx::query(sql::EVENTS_BEFORE),
            };
            // The team is bound as often as the database's exact
            // comparison names it.
            for _ in 0..sql::EVENT_TEAM_BINDS {
                select = select.bind(team_id.as_str());
            }
            if let Some(before) = query.before {
                select = select.bind(before.to_string());
            }
            let rows = select
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(decode_event).collect()
        }

        async fn expiring(
            pool: &sqlx::Pool<$db>,
            query: &ExpiringQuery,
        ) -> Result<Vec<KeyRecord>, StoreError> {
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            // No cursor id: nothing at `after` itself. Ids are [0-9A-Za-z],
            // compared bytewise everywhere, and all sort below "~".
            let after_id = query.after_id.as_ref().map_or("~", KeyId::as_str);
            let rows = sqlx::query(sql::EXPIRING)
                .bind(to_db(query.after)?)
                .bind(after_id)
                .bind(to_db(query.until)?)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(decode).collect()
        }

        #[async_trait::async_trait]
        impl teamkey_core::KeyStore for crate::SqlxStore<$db> {
            async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
                self.watched(insert(&self.pool, record, event).await)
            }

            async fn get(&self, key_id: &KeyId) -> Result<Option<std::sync::Arc<KeyRecord>>, StoreError> {
                self.watched(get(&self.pool, key_id).await)
            }

            async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
                self.watched(list(&self.pool, team_id).await)
            }

            async fn list_active(
                &self,
                team_id: &TeamId,
                query: &ListQuery,
            ) -> Result<Vec<KeyRecord>, StoreError> {
                self.watched(list_active(&self.pool, team_id, query).await)
            }

            async fn count_active(&self, team_id: &TeamId, now: OffsetDateTime) -> Result<usize, StoreError> {
                self.watched(count_active(&self.pool, team_id, now).await)
            }

            async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
                self.watched(revoke(&self.pool, event).await)
            }

            async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
                self.watched(rotate(&self.pool, rotation).await)
            }

            async fn append_event(&self, event: &KeyEvent) -> Result<bool, StoreError> {
                self.watched(append_event(&self.pool, event).await)
            }

            async fn events(
                &self,
                team_id: &TeamId,
                query: &EventQuery,
            ) -> Result<Vec<KeyEvent>, StoreError> {
                self.watched(events(&self.pool, team_id, query).await)
            }

            async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
                self.watched(expiring(&self.pool, query).await)
            }

            async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
                if uses.is_empty() {
                    return Ok(());
                }
                self.watched($touch(&self.pool, uses).await)
            }
        }
    };
}
