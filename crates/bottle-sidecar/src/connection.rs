//! A sidecar's client connections, watched: [`Watched`] closes a connection
//! idle (no byte read or written, and the server not [`Activity::busy`]) for
//! too long; [`HeaderTimer`] gives hyper a header-read timeout that starts
//! with a request's first byte, so an idle keep-alive connection waits for
//! the idle timeout while a slow request head fails after the header
//! timeout. The egress proxy and the git gate both serve through them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// When a connection last moved a byte, how many reads brought data, and
/// whether the server is busy with work of its own for it.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last_ms: AtomicU64,
    reads: AtomicU64,
    /// The [`Busy`] guards alive.
    busy: AtomicUsize,
}

/// Held while the server works for a connection without waiting on its peer
/// (see [`Activity::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The peer's silence counts again from now.
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    /// Says the server is at work of its own (fetching, say) until the guard
    /// is dropped: the peer has nothing to send meanwhile, so its silence is
    /// no idleness and [`Watched`] does not cut it.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// An I/O stream that fails with `TimedOut` once no byte moved for `idle`.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, idle: Duration) -> Self {
        Self::with_activity(inner, idle, Activity::new())
    }

    pub(crate) fn with_activity(inner: T, idle: Duration, activity: Arc<Activity>) -> Self {
        activity.touch();
        let sleep = Box::pin(tokio::time::sleep(idle));
        Watched { inner, activity, idle, sleep }
    }

    pub(crate) fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }

    /// Called when the inner stream is not ready: fails once the connection has
    /// been idle too long, else makes sure the task wakes up when it would be.
    /// The timer is re-armed only when it fires (traffic moves the deadline
    /// on every byte; resetting a timer that often would cost more than it saves).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.activity.busy.load(Ordering::Relaxed) > 0 {
                self.activity.touch();
            }
            let deadline = self.activity.last() + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long"));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.activity.reads.fetch_add(1, Ordering::Relaxed);
                    this.activity.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.activity.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.activity.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// hyper's header-read timer for one connection: hyper arms it whenever it
/// starts waiting for a request head. It fires `header` after the first byte
/// of that head arrived, or after `idle` when none did.
#[derive(Clone)]
pub(crate) struct HeaderTimer {
    activity: Arc<Activity>,
    idle: Duration,
}

impl HeaderTimer {
    pub(crate) fn new(activity: Arc<Activity>, idle: Duration) -> Self {
        HeaderTimer { activity, idle }
    }
}

impl hyper::rt::Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let armed = Instant::now();
        Box::pin(HeaderSleep {
            header: deadline.saturating_duration_since(armed.into_std()),
            armed,
            idle: self.idle,
            reads_at_arm: self.activity.reads(),
            started: None,
            activity: Arc::clone(&self.activity),
            sleep: Box::pin(tokio::time::sleep_until(armed + self.idle)),
        })
    }
}

struct HeaderSleep {
    header: Duration,
    armed: Instant,
    idle: Duration,
    reads_at_arm: u64,
    /// When the first byte of the head was seen.
    started: Option<Instant>,
    activity: Arc<Activity>,
    sleep: Pin<Box<Sleep>>,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.started.is_none() && this.activity.reads() != this.reads_at_arm {
            this.started = Some(Instant::now());
        }
        let deadline = match this.started {
            Some(started) => started + this.header,
            None => this.armed + this.idle,
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeaderSleep {}

#[cfg(test)]
mod tests {
    use hyper::rt::Timer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn an_idle_stream_times_out_and_traffic_defers_it() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watched::new(near, 300 * MS);
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(150 * MS).await;
                far.write_all(b"x").await.expect("write");
            }
            far
        });
        let mut byte = [0u8; 1];
        for _ in 0..4 {
            watched.read_exact(&mut byte).await.expect("bytes keep the stream alive");
        }
        let _far = writer.await.expect("writer");
        let err = watched.read(&mut byte).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= 900 * MS, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_header_timer_waits_for_the_first_byte() {
        let activity = Activity::new();
        let timer = HeaderTimer::new(Arc::clone(&activity), 1000 * MS);

        // No byte: the idle limit applies.
        let start = Instant::now();
        timer.sleep(100 * MS).await;
        assert!(start.elapsed() >= 1000 * MS, "{:?}", start.elapsed());

        // A byte 150 ms after arming: the header limit runs from then. hyper
        // polls the timer whenever the connection wakes; so does this loop.
        let mut sleep = timer.sleep(100 * MS);
        let start = Instant::now();
        let mut read = false;
        loop {
            if !read && start.elapsed() >= 150 * MS {
                activity.reads.fetch_add(1, Ordering::Relaxed);
                read = true;
            }
            if tokio::time::timeout(10 * MS, sleep.as_mut()).await.is_ok() {
                break;
            }
        }
        let fired = start.elapsed();
        assert!(fired >= 250 * MS && fired < 900 * MS, "{fired:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_server_is_not_idle() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watched::new(near, 10_000 * MS);
        let activity = watched.activity();
        let mut byte = [0u8; 1];
        // A busy minute without a byte: the connection stays...
        let work = activity.busy();
        let read = tokio::time::timeout(60_000 * MS, watched.read_exact(&mut byte)).await;
        assert!(read.is_err(), "still open after a busy minute: {read:?}");
        drop(work);
        far.write_all(b"x").await.expect("a write");
        watched.read_exact(&mut byte).await.expect("the connection is open");
        // ...and then idleness counts again.
        let err = watched.read_exact(&mut byte).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
