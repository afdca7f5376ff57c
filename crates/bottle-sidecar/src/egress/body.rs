//! The two body types the proxy streams, frame by frame, never buffering a
//! whole body: [`UpBody`] carries the agent's request body upstream and counts
//! its bytes; [`DownBody`] carries the upstream's response (or the proxy's own
//! short answer) to the agent — scrubbed of injected values, with its
//! trailers, when the request carried a credential — counts its bytes and
//! writes the request's audit line when it ends or is dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

use super::audit::Entry;
use super::scrub::{BodyScrub, Scrubber};

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
    Scrubbed(Box<Scrubbed>),
}

/// An upstream body on its way through a [`BodyScrub`].
struct Scrubbed {
    body: Incoming,
    scrub: BodyScrub,
    /// Frames ready to go: scrubbed data, then trailers.
    ready: VecDeque<Frame<Bytes>>,
    /// Whether the upstream body has ended (or failed).
    done: bool,
}

impl Scrubbed {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.end(),
                Some(Err(err)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let data = self.scrub.feed(data);
                        self.push(data);
                        if self.body.is_end_stream() {
                            self.end();
                        }
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(mut trailers) => {
                            let held = self.scrub.finish();
                            self.push(held);
                            self.scrub.scrubber().scrub_headers(&mut trailers);
                            self.ready.push_back(Frame::trailers(trailers));
                        }
                        Err(other) => self.ready.push_back(other),
                    },
                },
            }
        }
    }

    /// The upstream body is over: what was held back goes out.
    fn end(&mut self) {
        self.done = true;
        let held = self.scrub.finish();
        self.push(held);
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.ready.push_back(Frame::data(data));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty()
    }
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

    /// The upstream's body, scrubbed by `scrubber` (if any), ending `entry` when it ends.
    pub(crate) fn stream(body: Incoming, entry: Entry, scrubber: Option<Arc<Scrubber>>) -> Self {
        let inner = match scrubber {
            None => Inner::Stream(body),
            Some(scrubber) => Inner::Scrubbed(Box::new(Scrubbed {
                body,
                scrub: BodyScrub::new(scrubber),
                ready: VecDeque::new(),
                done: false,
            })),
        };
        DownBody { inner, delivered: 0, entry: Some(entry) }
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
            Inner::Scrubbed(body) => ready!(body.poll_frame(cx)),
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
            Inner::Scrubbed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(body) => body.size_hint(),
            // No exact size, so that hyper sets no `Content-Length` of its own for a
            // body whose length may change (one the upstream sent stays, when it holds).
            Inner::Scrubbed(_) => SizeHint::default(),
        }
    }
}

impl Drop for DownBody {
    fn drop(&mut self) {
        self.finish();
    }
}
