//! Paging through a team's key table: newest first, by an opaque cursor.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::clock::{from_unix_micros, unix_micros};
use crate::error::ValidationError;
use crate::ident::{KeyId, TeamId};
use crate::record::{KeyInfo, KeyRecord};

/// Rows per page unless asked otherwise.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Most rows one page may hold.
pub const MAX_PAGE_LIMIT: usize = 100;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z, in Unix microseconds.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Where a page ends: the creation time and id of its last row. Its text
/// form (`Display`, `FromStr`) is what clients hand back; treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    created_at: i64,
    id: KeyId,
}

impl Cursor {
    /// The cursor just after `record` in newest-first order.
    pub fn after(record: &KeyRecord) -> Self {
        Self {
            created_at: unix_micros(record.created_at),
            id: record.id,
        }
    }

    /// The creation time of the last row seen.
    pub fn created_at(&self) -> OffsetDateTime {
        from_unix_micros(self.created_at)
    }

    /// The id of the last row seen.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Whether `record` comes after the cursor in newest-first order
    /// (`created_at` descending, then id descending).
    pub fn precedes(&self, record: &KeyRecord) -> bool {
        (unix_micros(record.created_at), record.id) < (self.created_at, self.id)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

impl FromStr for Cursor {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (micros, id) = s.split_once('.').ok_or(ValidationError::InvalidCursor)?;
        let created_at: i64 = micros.parse().map_err(|_| ValidationError::InvalidCursor)?;
        // Only times a record can have (years 1 to 9999) come from a real cursor.
        if !(MIN_MICROS..=MAX_MICROS).contains(&created_at) {
            return Err(ValidationError::InvalidCursor);
        }
        let id = KeyId::parse(id).map_err(|_| ValidationError::InvalidCursor)?;
        Ok(Self { created_at, id })
    }
}

/// Which page of a key table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    limit: usize,
    after: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// The first page, of up to `limit` rows (1 to [`MAX_PAGE_LIMIT`]).
    pub fn first(limit: usize) -> Result<Self, ValidationError> {
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(ValidationError::InvalidPageLimit { max: MAX_PAGE_LIMIT });
        }
        Ok(Self { limit, after: None })
    }

    /// The page after `cursor`.
    pub fn after(self, cursor: Cursor) -> Self {
        Self {
            after: Some(cursor),
            ..self
        }
    }

    /// Rows per page.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Where the previous page ended.
    pub fn cursor(&self) -> Option<Cursor> {
        self.after
    }
}

/// One page of a key table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The rows, newest first.
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// What [`KeyStore::list_active`](crate::KeyStore::list_active) is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Keys expired at this instant are left out.
    pub now: OffsetDateTime,
    /// Only records after this cursor (newest-first order).
    pub after: Option<Cursor>,
    /// At most this many records.
    pub limit: usize,
}

impl ListQuery {
    /// A query for up to `limit` active records at `now`, after `after`.
    pub fn new(now: OffsetDateTime, after: Option<Cursor>, limit: usize) -> Self {
        Self { now, after, limit }
    }

    /// Whether `record` of `team_id` belongs in the answer (ignoring `limit`).
    pub fn matches(&self, team_id: &TeamId, record: &KeyRecord) -> bool {
        &record.team_id == team_id
            && record.is_active(self.now)
            && self.after.is_none_or(|cursor| cursor.precedes(record))
    }
}

/// Newest first: `created_at` descending, then id descending.
pub(crate) fn newest_first(a: &KeyRecord, b: &KeyRecord) -> std::cmp::Ordering {
    b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor: Cursor = "1798761600123456.abcdefABCDEF".parse().unwrap();
        assert_eq!(cursor.to_string(), "1798761600123456.abcdefABCDEF");
        for bad in [
            "",
            ".",
            "x.abcdefABCDEF",
            "1.short",
            "1abcdefABCDEF",
            &"9".repeat(10_000),
        ] {
            assert_eq!(
                bad.parse::<Cursor>(),
                Err(ValidationError::InvalidCursor),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursor_bounds_are_the_first_and_last_instants_a_record_can_have() {
        use time::macros::datetime;
        let ends = [
            datetime!(0001-01-01 0:00 UTC),
            datetime!(9999-12-31 23:59:59.999999 UTC),
        ];
        assert_eq!(unix_micros(ends[0]), MIN_MICROS);
        assert_eq!(unix_micros(ends[1]), MAX_MICROS);
        assert!(format!("{MAX_MICROS}.abcdefABCDEF").parse::<Cursor>().is_ok());
    }

    #[test]
    fn page_limits_are_bounded() {
        assert!(PageRequest::first(0).is_err());
        assert!(PageRequest::first(MAX_PAGE_LIMIT + 1).is_err());
        assert_eq!(
            PageRequest::first(MAX_PAGE_LIMIT).unwrap().limit(),
            MAX_PAGE_LIMIT
        );
    }
}

/// Which keys an expiry sweep reads: active keys of every team (not
/// revoked, no successor) expiring after `after` (and, at that very
/// instant, with an id above `after_id`) and at the latest `until`,
/// soonest first (`expires_at`, then id), at most `limit`. The
/// `(expires_at, id)` cursor lets a sweep page through any number of keys
/// sharing one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiringQuery {
    /// Only keys expiring after this instant...
    pub after: OffsetDateTime,
    /// ...or at it, with an id above this one (`None`: none at it).
    pub after_id: Option<KeyId>,
    /// Only keys expiring no later than this.
    pub until: OffsetDateTime,
    /// At most this many.
    pub limit: usize,
}

impl ExpiringQuery {
    /// Keys expiring in `(after, until]`, at most `limit`.
    pub fn new(after: OffsetDateTime, until: OffsetDateTime, limit: usize) -> Self {
        Self {
            after,
            after_id: None,
            until,
            limit,
        }
    }

    /// The page after `record`, the last of the previous one.
    pub fn after_record(mut self, record: &KeyRecord) -> Self {
        if let Some(at) = record.expires_at {
            self.after = at;
            self.after_id = Some(record.id);
        }
        self
    }

    /// Whether `record` belongs in this page (before the limit).
    pub fn matches(&self, record: &KeyRecord) -> bool {
        let Some(at) = record.expires_at else {
            return false;
        };
        let after_cursor = match self.after_id {
            Some(id) => (at, record.id) > (self.after, id),
            None => at > self.after,
        };
        record.revoked_at.is_none() && record.replaced_by.is_none() && after_cursor && at <= self.until
    }
}
