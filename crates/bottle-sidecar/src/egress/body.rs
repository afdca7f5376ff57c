//! The two body types the proxy streams, frame by frame, never buffering a
//! whole body: [`UpBody`] carries the agent's request body upstream and counts
//! its bytes; [`DownBody`] carries the upstream's response (or the proxy's own
//! short answer) to the agent, counts its bytes and writes the request's audit
//! line when it ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

use super::audit::Entry;

/// The agent's request body on its way upstream.
pub(crate) struct UpBody {
    inner: Option<Incoming>,
    sent: Arc<AtomicU64>,
}

impl UpBody {
    pub(crate) fn new(inner: Incoming, sent: Arc<AtomicU64>) -> Self {
        UpBody { inner: Some(inner), sent }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref) {
            this.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if frame.is_none() {
            this.inner = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

enum Inner {
    Full(Option<Bytes>),
    Stream(Incoming),
}

/// A response body on its way to the agent.
pub(crate) struct DownBody {
    inner: Inner,
    delivered: u64,
    entry: Option<Entry>,
}

impl DownBody {
    /// A body of `bytes`, ending `entry` (if any) when delivered.
    pub(crate) fn full(bytes: impl Into<Bytes>, entry: Option<Entry>) -> Self {
        let bytes = bytes.into();
        DownBody { inner: Inner::Full((!bytes.is_empty()).then_some(bytes)), delivered: 0, entry }
    }

    /// The upstream's body, ending `entry` when it ends.
    pub(crate) fn stream(body: Incoming, entry: Entry) -> Self {
        DownBody { inner: Inner::Stream(body), delivered: 0, entry: Some(entry) }
    }

    fn finish(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.finish(self.delivered);
        }
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            Inner::Full(bytes) => bytes.take().map(|bytes| Ok(Frame::data(bytes))),
            Inner::Stream(body) => ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.delivered += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish();
                }
            }
            Some(Err(_)) | None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(body) => body.size_hint(),
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        self.finish();
    }
}
