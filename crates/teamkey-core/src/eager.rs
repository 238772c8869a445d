//! [`Eager`]: the future of work that seldom has to wait.
//!
//! Verifying a key from memory (a cache hit, a `MemoryStore`) and asking an
//! in-process rate limiter need no I/O. Written as `async fn`s, their state
//! machines would be embedded, moved and polled by every caller on every
//! request; instead they run at the call and hand back their output in an
//! `Eager`. Only work that must wait (a store or Redis round trip) is boxed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future whose work was done when it was made, unless that work had to
/// wait for I/O: then it holds the rest, boxed, to run when awaited.
///
/// Await it like any future. [`now`](Self::now) tells whether the output
/// is already there, to take it without a poll. It borrows what it was
/// made from (the manager, the presented key): to verify in a spawned
/// task, move a clone of the `KeyManager` and an owned key into the task
/// and call `verify` there.
#[must_use = "the key may already be checked and the request counted: await it, or call `.now()`, for the answer"]
pub struct Eager<'a, T>(State<'a, T>);

enum State<'a, T> {
    /// `None` once polled to completion.
    Ready(Option<T>),
    Waiting(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Eager<'a, T> {
    /// Work that is done.
    pub(crate) fn ready(output: T) -> Self {
        Self(State::Ready(Some(output)))
    }

    /// Work that must wait for `rest`.
    pub(crate) fn waiting(rest: impl Future<Output = T> + Send + 'a) -> Self {
        Self(State::Waiting(Box::pin(rest)))
    }

    /// The output if the work is done, else the future to await. An enum
    /// rather than a `Result`: a verification's output is itself a
    /// `Result`, and `verify(k).now().is_ok()` would read as "the key is
    /// good" while meaning only "answered at once".
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use teamkey_core::{CreateOptions, KeyManager, MemoryStore, Now, TeamId};
    ///
    /// let keys = KeyManager::new(MemoryStore::new());
    /// let team = TeamId::new("acme")?;
    /// let created = keys.create(&team, "CI", CreateOptions::new()).await?;
    /// let verified = match keys.verify(created.key.expose_secret()).now() {
    ///     Now::Ready(answer) => answer,          // from memory: no await
    ///     Now::Waiting(rest) => rest.await,      // the store must be asked
    /// };
    /// assert_eq!(verified?.team_id(), &team);
    /// # Ok(())
    /// # }
    /// ```
    pub fn now(self) -> Now<'a, T> {
        match self.0 {
            State::Ready(Some(output)) => Now::Ready(output),
            state => Now::Waiting(Self(state)),
        }
    }
}

/// What [`Eager::now`] found.
#[derive(Debug)]
pub enum Now<'a, T> {
    /// The work is done: its output (for a verification, itself a
    /// `Result`: check it).
    Ready(T),
    /// The work waits for I/O: await this for the output.
    Waiting(Eager<'a, T>),
}

// The output is moved out, never pinned in place: pinning an `Eager`
// pins nothing inside it.
impl<T> Unpin for Eager<'_, T> {}

impl<T> Future for Eager<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            State::Ready(output) => Poll::Ready(output.take().expect("`Eager` polled after completion")),
            State::Waiting(rest) => rest.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for Eager<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ready = matches!(self.0, State::Ready(_));
        f.debug_struct("Eager").field("ready", &ready).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_is_taken_now_and_waiting_work_is_awaited() {
        assert!(matches!(Eager::ready(7).now(), Now::Ready(7)));
        assert_eq!(Eager::ready(7).await, 7);
        let waiting = Eager::waiting(async {
            tokio::task::yield_now().await;
            8
        });
        let Now::Waiting(waiting) = waiting.now() else {
            panic!("not done yet")
        };
        assert_eq!(format!("{waiting:?}"), "Eager { ready: false }");
        assert_eq!(waiting.await, 8);
    }
}
