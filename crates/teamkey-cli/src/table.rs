//! The tables `list` and `events` print: columns padded to their widest
//! cell, two spaces apart.

use teamkey_core::events::KeyEvent;
use teamkey_core::{KeyId, KeyInfo};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The key table's columns.
const KEY_HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "KEY",
    "CREATED",
    "LAST USED",
    "ROTATED FROM",
    "REPLACED BY",
];

/// The event table's columns.
const EVENT_HEADERS: [&str; 6] = ["TIME", "TYPE", "KEY", "NAME", "ACTOR", "SUCCESSOR"];

/// An empty cell: no value, as opposed to a value that prints as nothing.
const NONE: &str = "-";

fn when(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "never".to_owned())
}

fn key(id: Option<KeyId>) -> String {
    id.map_or_else(|| NONE.to_owned(), |id| id.to_string())
}

/// A team's keys, one per row, with their lineage.
pub(crate) fn keys(keys: &[KeyInfo]) -> String {
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.name.to_string(),
                k.preview.clone(),
                when(Some(k.created_at)),
                when(k.last_used_at),
                key(k.rotated_from),
                key(k.replaced_by),
            ]
        })
        .collect();
    render(KEY_HEADERS, &rows)
}

/// A team's events, one per row, as given (newest first).
pub(crate) fn events(events: &[KeyEvent]) -> String {
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            // `operator:alice`, `key:3xAmPle0Key1`, `system`.
            let actor = match e.actor.id() {
                Some(id) => format!("{}:{id}", e.actor.kind()),
                None => e.actor.kind().to_owned(),
            };
            [
                when(Some(e.at)),
                e.kind.to_string(),
                e.key_id.to_string(),
                e.key_name.to_string(),
                actor,
                key(e.successor_id),
            ]
        })
        .collect();
    render(EVENT_HEADERS, &rows)
}

/// Columns padded to their widest cell, in characters. Cells hold no
/// control characters: names and actors are cleaned by the core.
fn render<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(headers);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}
