//! The pages, as maud templates: checked at compile time, every value
//! escaped. No inline script, style or event handler anywhere: the
//! Content-Security-Policy forbids them.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use teamkey::time::format_description::well_known::Rfc3339;
use teamkey::time::{Duration, OffsetDateTime};
use teamkey::{KeyInfo, TeamId, TeamRules};

use super::API_BASE;
use crate::demo::{self, Plan};

/// An HTML answer no cache keeps: pages hold the session's CSRF token and
/// the team's keys.
pub(crate) fn no_store(status: StatusCode, markup: Markup) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], markup).into_response()
}

/// A 503 page: the database (users, sessions or keys) is down.
pub(crate) fn unavailable() -> Response {
    no_store(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Unavailable",
            None,
            html! {
                h1 { "Unavailable" }
                p { "The service cannot answer right now. Retry in a moment." }
            },
        ),
    )
}

/// Who is signed in, for the header.
struct Header<'a> {
    email: &'a str,
    team: &'a TeamId,
    csrf: &'a str,
}

fn layout(title: &str, signed_in: Option<&Header<'_>>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Gecko" }
                link rel="stylesheet" href="/static/settings/settings.css";
                link rel="icon" type="image/svg+xml" href="/static/settings/favicon.svg";
                @if let Some(header) = signed_in {
                    meta name="csrf-token" content=(header.csrf);
                    script src="/static/settings/api-keys.js" defer {}
                }
            }
            body {
                header.topbar {
                    a.brand href="/settings/api-keys" { "Gecko" }
                    @if let Some(header) = signed_in {
                        div.account {
                            span.who {
                                (header.email) " · team " strong { (header.team.as_str()) }
                            }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf_token" value=(header.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

/// `/login`: the form, with `email` kept after a refusal and `error` said.
pub(crate) fn login(email: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p.muted { "Demo users and their passwords are printed by the server at its first start." }
                @if let Some(error) = error {
                    p.alert role="alert" { (error) }
                }
                form.stack method="post" action="/login" {
                    div.field {
                        label for="email" { "Email" }
                        input #email type="email" name="email" value=(email) autocomplete="username" required maxlength="254";
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required maxlength="1024";
                    }
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// What the settings page shows.
pub(crate) struct SettingsView<'a> {
    pub(crate) email: &'a str,
    pub(crate) team: &'a TeamId,
    pub(crate) plan: Plan,
    pub(crate) csrf: &'a str,
    pub(crate) rules: &'a TeamRules,
    pub(crate) keys: &'a [KeyInfo],
    pub(crate) now: OffsetDateTime,
}

/// The expiries offered: "Never" and lifetimes, in seconds.
const EXPIRIES: [(&str, Option<i64>); 4] = [
    ("Never", None),
    ("In 30 days", Some(30 * 86_400)),
    ("In 90 days", Some(90 * 86_400)),
    ("In 1 year", Some(365 * 86_400)),
];

/// The rotation's grace periods, in seconds: the old key keeps working
/// that long beside its successor.
const GRACES: [(&str, i64); 4] = [
    ("Now", 0),
    ("1 hour", 3_600),
    ("24 hours", 86_400),
    ("7 days", 604_800),
];

/// The expiries this team's plan allows.
fn expiries(rules: &TeamRules) -> Vec<(&'static str, Option<i64>)> {
    EXPIRIES
        .into_iter()
        .filter(|(_, seconds)| match seconds {
            None => !rules.require_expiry && rules.max_lifetime.is_none(),
            Some(s) => rules.max_lifetime.is_none_or(|max| Duration::seconds(*s) <= max),
        })
        .collect()
}

/// The scopes a key of this team may get: the plan's, or the demo's.
fn scopes(rules: &TeamRules) -> Vec<String> {
    match &rules.grantable_scopes {
        Some(scopes) => scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        None => demo::QUICKSTART_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// `/settings/api-keys`.
pub(crate) fn settings(view: &SettingsView<'_>) -> Markup {
    let header = Header {
        email: view.email,
        team: view.team,
        csrf: view.csrf,
    };
    let rules = view.rules;
    let api = format!("{API_BASE}/api-keys");
    layout(
        "API Keys",
        Some(&header),
        html! {
            div #api-keys data-api=(api) data-rows="/settings/api-keys/rows" {
                nav.crumbs aria-label="Breadcrumb" { "Settings" span aria-hidden="true" { " › " } "API Keys" }
                h1 { "API Keys" }
                p.muted {
                    "Keys let " strong { (view.team.as_str()) } "'s programs call the Gecko API "
                    "(send one in the " code { "X-API-Key" } " header). Plan: " strong { (format!("{:?}", view.plan)) } "."
                }
                p #page-error .alert role="alert" hidden {}
                p #page-status .status role="status" {}
                @if rules.api_access {
                    (create_form(rules))
                } @else {
                    section.card.notice aria-labelledby="plan-title" {
                        h2 #plan-title { "Your plan has no API access" }
                        p {
                            "The " strong { (format!("{:?}", view.plan)) } " plan does not include the API: "
                            "keys of " (view.team.as_str()) " are refused, and new ones cannot be made. "
                            "Upgrade to Pro or Enterprise to create API keys."
                        }
                    }
                }
                section.card aria-labelledby="keys-title" {
                    h2 #keys-title { "Active keys" }
                    div.table-wrap {
                        table.keys {
                            thead {
                                tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Key" }
                                    th scope="col" { "Scopes" }
                                    th scope="col" { "Created" }
                                    th scope="col" { "Last used" }
                                    th scope="col" { "Expires" }
                                    th scope="col" { span.visually-hidden { "Actions" } }
                                }
                            }
                            tbody #key-rows { (rows(view.keys, rules.api_access, view.now)) }
                        }
                    }
                }
                (dialogs())
            }
        },
    )
}

fn create_form(rules: &TeamRules) -> Markup {
    let expiries = expiries(rules);
    html! {
        section.card aria-labelledby="create-title" {
            h2 #create-title { "Create a key" }
            form #create-form .stack {
                div.field {
                    label for="key-name" { "Name" }
                    input #key-name type="text" name="name" required maxlength="100" autocomplete="off" placeholder="e.g. Nightly export";
                }
                fieldset.field {
                    legend { "Scopes" }
                    div.checks {
                        @for scope in scopes(rules) {
                            label.check {
                                input type="checkbox" name="scopes" value=(scope) checked[scope == "scans:read"];
                                " " (scope)
                            }
                        }
                    }
                }
                div.field {
                    label for="key-expiry" { "Expires" }
                    select #key-expiry name="expires_in" {
                        @for (label, seconds) in &expiries {
                            option value=(seconds.map(|s| s.to_string()).unwrap_or_default()) { (label) }
                        }
                    }
                    @if let Some(max) = rules.max_lifetime {
                        p.hint { "Your plan requires keys to expire within " (max.whole_days()) " days." }
                    }
                }
                div { button.primary #create-submit type="submit" { "Create key" } }
            }
        }
    }
}

/// The dialogs: the one-time reveal, the delete confirmation, the
/// rotation's grace period. Filled and opened by the page's script.
fn dialogs() -> Markup {
    html! {
        dialog #reveal-dialog aria-labelledby="reveal-title" aria-describedby="reveal-warning" {
            h2 #reveal-title { "Your new API key" }
            p #reveal-warning .warning {
                strong { "Copy it now: it will not be shown again." }
                " Gecko keeps only a hash of it."
            }
            div.key-box { code #reveal-key {} }
            p #copy-status .status role="status" {}
            div.dialog-actions {
                button #copy-key type="button" { "Copy" }
                button.primary #reveal-done type="button" { "Done" }
            }
        }
        dialog #delete-dialog aria-labelledby="delete-title" {
            h2 #delete-title { "Delete API key" }
            p {
                "Delete " strong #delete-name {} "? Requests with this key are refused at once. "
                "This cannot be undone."
            }
            div.dialog-actions {
                button type="button" data-close { "Cancel" }
                button.danger #delete-confirm type="button" { "Delete key" }
            }
        }
        dialog #rotate-dialog aria-labelledby="rotate-title" {
            h2 #rotate-title { "Rotate API key" }
            p { "A new key replaces " strong #rotate-name {} ". It is shown once." }
            fieldset.field {
                legend { "The old key keeps working for" }
                div.checks {
                    @for (label, seconds) in GRACES {
                        label.check {
                            input type="radio" name="grace" value=(seconds) checked[seconds == 3_600];
                            " " (label)
                        }
                    }
                }
            }
            div.dialog-actions {
                button type="button" data-close { "Cancel" }
                button.primary #rotate-confirm type="button" { "Rotate key" }
            }
        }
    }
}

/// The table body: one row per active key, newest first.
pub(crate) fn rows(keys: &[KeyInfo], api_access: bool, now: OffsetDateTime) -> Markup {
    html! {
        @if keys.is_empty() {
            tr.empty { td colspan="7" { "No active keys yet." } }
        }
        @for key in keys {
            @let name = key.name.as_str();
            @let rotated = key.replaced_by.is_some();
            tr data-key-id=(key.id.as_str()) {
                th scope="row" data-label="Name" {
                    (name)
                    @if rotated { " " span.badge { "Rotated" } }
                }
                td data-label="Key" { code { (key.preview) } }
                td data-label="Scopes" {
                    @if key.scopes.is_empty() {
                        span.muted { "None" }
                    }
                    @for scope in &key.scopes { code.scope { (scope.as_str()) } " " }
                }
                td data-label="Created" { (time(key.created_at, &date(key.created_at))) }
                td data-label="Last used" {
                    @match key.last_used_at {
                        Some(at) => (time(at, &ago(now, at))),
                        None => span.muted { "Never" },
                    }
                }
                td data-label="Expires" {
                    @match key.expires_at {
                        Some(at) if rotated => { "Old key: expires " (time(at, &until(now, at))) }
                        Some(at) => (time(at, &until(now, at))),
                        None => span.muted { "Never" },
                    }
                }
                td.actions {
                    // A rotated key's successor is rotated instead; a plan
                    // without API access refuses rotations.
                    @if api_access && !rotated {
                        button type="button" data-action="rotate" data-key-id=(key.id.as_str()) data-key-name=(name)
                            aria-label=(format!("Rotate {name}")) { "Rotate" }
                    }
                    button.danger-outline type="button" data-action="delete" data-key-id=(key.id.as_str()) data-key-name=(name)
                        aria-label=(format!("Delete {name}")) { "Delete" }
                }
            }
        }
    }
}

/// The table body in a table of its own: what the page's script parses
/// as a document to refresh its table.
pub(crate) fn rows_table(keys: &[KeyInfo], api_access: bool, now: OffsetDateTime) -> Markup {
    html! { table { tbody #key-rows { (rows(keys, api_access, now)) } } }
}

/// A `<time>` with the instant, its full form as a tooltip, and `text`.
fn time(at: OffsetDateTime, text: &str) -> Markup {
    let stamp = at.format(&Rfc3339).unwrap_or_default();
    html! { time datetime=(stamp) title=(stamp) { (text) } }
}

/// "27 Nov 2026" (UTC, as every time on the page).
fn date(at: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(usize::from(u8::from(at.month())).saturating_sub(1))
        .unwrap_or(&"");
    format!("{} {month} {}", at.day(), at.year())
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// How long ago `at` was: "just now", "5 minutes ago", "3 days ago".
pub(crate) fn ago(now: OffsetDateTime, at: OffsetDateTime) -> String {
    let seconds = (now - at).whole_seconds().max(0);
    match seconds {
        0..60 => "just now".to_owned(),
        60..3_600 => format!("{} ago", plural(seconds / 60, "minute")),
        3_600..86_400 => format!("{} ago", plural(seconds / 3_600, "hour")),
        86_400..2_592_000 => format!("{} ago", plural(seconds / 86_400, "day")),
        _ => date(at),
    }
}

/// How far off `at` is, rounded: "in 1 hour", "in 30 days", "expired".
/// Rounded, not floored: a key made for 30 days says so, not "29 days".
pub(crate) fn until(now: OffsetDateTime, at: OffsetDateTime) -> String {
    let seconds = (at - now).whole_seconds();
    let round = |unit: i64| (seconds + unit / 2) / unit;
    if seconds <= 0 {
        "expired".to_owned()
    } else if seconds < 60 {
        "in less than a minute".to_owned()
    } else if round(60) < 60 {
        format!("in {}", plural(round(60), "minute"))
    } else if round(3_600) < 24 {
        format!("in {}", plural(round(3_600), "hour"))
    } else if round(86_400) < 365 {
        format!("in {}", plural(round(86_400), "day"))
    } else {
        format!("on {}", date(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let before = |seconds: i64| ago(now, now - Duration::seconds(seconds));
        assert_eq!(before(5), "just now");
        assert_eq!(before(60), "1 minute ago");
        assert_eq!(before(7_200), "2 hours ago");
        assert_eq!(before(86_400 * 3), "3 days ago");
        assert_eq!(before(86_400 * 40), "6 Dec 2026");
        let after = |seconds: i64| until(now, now + Duration::seconds(seconds));
        assert_eq!(after(-1), "expired");
        assert_eq!(after(30), "in less than a minute");
        assert_eq!(after(3_000), "in 50 minutes");
        assert_eq!(after(3_599), "in 1 hour");
        assert_eq!(after(86_400 * 30 - 5), "in 30 days");
        assert_eq!(after(86_400 * 90), "in 90 days");
        assert_eq!(after(86_400 * 400), "on 19 Feb 2028");
    }
}
