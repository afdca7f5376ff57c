//! Blocking work for async callers without tying core to a runtime:
//! [`unblock`] runs a closure on a thread of its own and is a future of its
//! result, so packing a tree or a build context never stalls the caller's
//! executor, whichever it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The result slot a worker thread fills, and the task to wake then.
struct Slot<T> {
    result: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

/// The future of a closure running on its own thread.
pub(crate) struct Unblock<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// Runs `work` on a new thread; the future resolves to its result (an
/// error when it panicked, or when no thread could be started).
pub(crate) fn unblock<T, F>(work: F) -> Unblock<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot { result: None, waker: None }));
    let filled = Arc::clone(&slot);
    let spawned = std::thread::Builder::new().name("bot-bottle-blocking".into()).spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let mut slot = filled.lock().unwrap_or_else(|e| e.into_inner());
        slot.result = Some(result);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    });
    if let Err(e) = spawned {
        slot.lock().unwrap_or_else(|e| e.into_inner()).result = Some(Err(Box::new(e)));
    }
    Unblock { slot }
}

impl<T> Future for Unblock<T> {
    type Output = std::thread::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_work_runs_off_the_callers_thread_and_its_result_comes_back() {
        let caller = std::thread::current().id();
        let (value, worker) = unblock(move || (6 * 7, std::thread::current().id())).await.expect("no panic");
        assert_eq!(value, 42);
        assert_ne!(worker, caller, "a single-threaded executor is not blocked by the work");
        assert!(unblock(|| panic!("boom")).await.is_err(), "a panic is an error, not a hang");
    }
}
