//! The data both bench servers serve: acme's three scans.

use serde::Serialize;

#[derive(Clone, Serialize)]
pub(crate) struct Scan {
    pub(crate) id: &'static str,
    pub(crate) team: &'static str,
    pub(crate) target: &'static str,
    pub(crate) status: &'static str,
    pub(crate) created_at: &'static str,
}

pub(crate) const SCANS: [Scan; 3] = [
    Scan {
        id: "scn_acme_3",
        team: "acme",
        target: "github.com/acme/mobile",
        status: "running",
        created_at: "2026-11-22T09:00:00Z",
    },
    Scan {
        id: "scn_acme_2",
        team: "acme",
        target: "github.com/acme/api",
        status: "completed",
        created_at: "2026-11-21T09:00:00Z",
    },
    Scan {
        id: "scn_acme_1",
        team: "acme",
        target: "github.com/acme/web",
        status: "completed",
        created_at: "2026-11-20T09:00:00Z",
    },
];

#[derive(Serialize)]
pub(crate) struct Page {
    pub(crate) data: Vec<Scan>,
}
