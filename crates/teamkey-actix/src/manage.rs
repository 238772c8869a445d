//! The key-management endpoints as an actix `Scope`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, Scope, web};
use teamkey_core::management::{self, MANAGE_SCOPE};
use teamkey_core::{KeyManager, TeamId};

use crate::{AuthError, Authenticated};

/// Whoever may manage a team's keys, as the application decides: implement
/// it for your own session or admin extractor.
pub trait KeyAdmin: FromRequest + 'static {
    /// The team whose keys the caller manages.
    fn team_id(&self) -> &TeamId;
}

/// teamkey's own [`KeyAdmin`]: a valid API key carrying `keys:manage`.
#[derive(Debug, Clone)]
pub struct ManagesKeys(pub Authenticated);

impl KeyAdmin for ManagesKeys {
    fn team_id(&self) -> &TeamId {
        self.0.team_id()
    }
}

impl FromRequest for ManagesKeys {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AuthError>> + 'static>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Authenticated::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            caller.require_scope(MANAGE_SCOPE)?;
            Ok(Self(caller))
        })
    }
}

/// `/api-keys` (`GET`, `POST`), `/api-keys/{id}` (`DELETE`) and
/// `/api-keys/{id}/rotate` (`POST`) for the team of each caller `A`, with
/// the same JSON as the axum adapter. Needs `web::Data<KeyManager>`:
/// `web::scope("/api/v1").service(management_scope::<ManagesKeys>())`.
pub fn management_scope<A: KeyAdmin>() -> Scope {
    web::scope("/api-keys")
        .route("", web::get().to(list::<A>))
        .route("", web::post().to(create::<A>))
        .route("/{id}", web::delete().to(revoke::<A>))
        .route("/{id}/rotate", web::post().to(rotate::<A>))
}

fn respond(reply: management::Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        Some(body) => HttpResponse::build(status)
            .content_type("application/json")
            .body(body),
        None => HttpResponse::build(status).finish(),
    }
}

async fn list<A: KeyAdmin>(admin: A, keys: web::Data<KeyManager>) -> HttpResponse {
    respond(management::list(&keys, admin.team_id()).await)
}

async fn create<A: KeyAdmin>(admin: A, keys: web::Data<KeyManager>, body: web::Bytes) -> HttpResponse {
    respond(management::create(&keys, admin.team_id(), &body).await)
}

async fn revoke<A: KeyAdmin>(admin: A, keys: web::Data<KeyManager>, id: web::Path<String>) -> HttpResponse {
    respond(management::revoke(&keys, admin.team_id(), &id).await)
}

async fn rotate<A: KeyAdmin>(
    admin: A,
    keys: web::Data<KeyManager>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    respond(management::rotate(&keys, admin.team_id(), &id, &body).await)
}
