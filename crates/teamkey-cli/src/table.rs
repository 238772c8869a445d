//! The key table: ID, NAME, KEY, CREATED, LAST USED.

use teamkey_core::KeyInfo;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const HEADERS: [&str; 5] = ["ID", "NAME", "KEY", "CREATED", "LAST USED"];

fn when(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "never".to_owned())
}

/// Columns padded to their widest cell, in characters.
pub(crate) fn render(keys: &[KeyInfo]) -> String {
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.name.to_string(),
                k.preview.clone(),
                when(Some(k.created_at)),
                when(k.last_used_at),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(HEADERS);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}
