//! The bodies a connection wraps: a request body with a deadline, a response body that
//! tells its connection when it has been sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::ConnState;

/// A request body that must arrive within its deadline: the body timeout from the moment
/// the head was read, plus one second for every `min_rate` bytes received.
pub(super) struct TimedBody {
    inner: Incoming,
    started: Instant,
    timeout: Duration,
    min_rate: u64,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
    expired: bool,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, timeout: Duration, min_rate: u64) -> Self {
        Self {
            inner,
            started: Instant::now(),
            timeout,
            min_rate,
            received: 0,
            timer: None,
            timer_at: None,
            expired: false,
        }
    }

    fn deadline(&self) -> Instant {
        self.started
            + self.timeout
            + Duration::from_millis(self.received.saturating_mul(1000) / self.min_rate)
    }
}

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time (PARLEY_HTTP_BODY_TIMEOUT_MS)")]
struct BodyTimeout;

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let deadline = this.deadline();
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if this.timer_at != Some(deadline) {
            timer.as_mut().reset(deadline);
            this.timer_at = Some(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            this.expired = true;
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells its connection when it has been sent (or dropped): the
/// connection is then idle until the next request.
pub(super) struct ResponseBody {
    pub(super) inner: Body,
    pub(super) state: Option<Arc<ConnState>>,
}

impl ResponseBody {
    fn done(&mut self) {
        if let Some(state) = self.state.take() {
            state.response_done();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.done();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
