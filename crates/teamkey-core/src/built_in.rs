//! Seeing through a user-given store or limiter to this crate's own
//! `MemoryStore` and `LocalRateLimiter`, which answer without waiting: the
//! manager then asks them directly, without their trait's boxed future (a
//! store or limiter that never waits should not cost an allocation per
//! request).

use std::any::Any;
use std::sync::Arc;

/// `given` itself when it is a `T`, or an `Arc<T>` (a `MemoryStore`
/// shared with another manager or with the caller).
pub(crate) fn as_built_in<T, G>(given: &Arc<G>) -> Option<Arc<T>>
where
    T: Any + Send + Sync,
    G: Any + Send + Sync,
{
    let given: Arc<dyn Any + Send + Sync> = Arc::clone(given) as _;
    match given.downcast::<T>() {
        Ok(built_in) => Some(built_in),
        Err(given) => given.downcast::<Arc<T>>().ok().map(|shared| Arc::clone(&*shared)),
    }
}
