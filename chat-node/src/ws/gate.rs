//! [`Gate`]: a future or stream polled only when it asked to be woken and was, so a loop
//! that selects over several of them does not run every branch's poll on every turn.
//!
//! ```text
//!   poll ─► waiting and not woken since? ── yes ─► Pending (the inner is not polled)
//!                  │ no
//!                  ▼
//!          poll the inner with the gate's waker (it wakes the task and marks the gate)
//! ```
//!
//! Why: a session's live loop wakes for every event it writes, and `tokio::select!` polls
//! all its branches on each turn. Polled there, the socket's read side tried a read per
//! event (tungstenite, which the node used then, zeroed its 4 KiB read buffer on each try
//! and re-registered its waker) and the shutdown, drain, close and expiry futures
//! re-registered theirs: about a tenth of the node's CPU in a fan-out profile
//! (docs/performance.md). Behind gates, a turn that an event woke polls them only as far
//! as an atomic flag.
//!
//! Polling what a future or stream registered a waker for, before that waker fired, is
//! never needed: a future that returned `Pending` must wake its waker before it can make
//! progress (the contract of `std::future::Future::poll`). The gate keeps to it: its own
//! waker marks it and wakes the task's latest waker.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};

/// What the inner future or stream wakes: marks the gate and wakes the task.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `inner` (a future or a stream, `Unpin`) behind a gate: see the module's doc. One
/// allocation per gate (its waker), none per poll.
pub(super) struct Gate<T> {
    inner: T,
    signal: Arc<Signal>,
    /// The gate's waker, made once.
    waker: Waker,
    /// The inner returned `Pending` when last polled.
    waiting: bool,
}

impl<T: Unpin> Gate<T> {
    pub(super) fn new(inner: T) -> Self {
        let signal = Arc::new(Signal::default());
        Self {
            inner,
            waker: Waker::from(signal.clone()),
            signal,
            waiting: false,
        }
    }

    /// Polls the inner with `poll` unless it waits and was not woken since.
    fn poll_gated<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.signal.task.register(cx.waker());
        // Cleared before the inner is polled: a wake during that poll is seen next time.
        let woken = self.signal.woken.swap(false, Ordering::AcqRel);
        if self.waiting && !woken {
            return Poll::Pending;
        }
        let mut inner_cx = Context::from_waker(&self.waker);
        let r = poll(Pin::new(&mut self.inner), &mut inner_cx);
        self.waiting = r.is_pending();
        r
    }
}

impl<T: Future + Unpin> Future for Gate<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        self.get_mut().poll_gated(cx, |f, cx| f.poll(cx))
    }
}

impl<T: Stream + Unpin> Stream for Gate<T> {
    type Item = T::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        self.get_mut().poll_gated(cx, |s, cx| s.poll_next(cx))
    }
}

/// Writes are not gated: they pass straight to the inner sink.
impl<T: Sink<I> + Unpin, I> Sink<I> for Gate<T> {
    type Error = T::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), T::Error> {
        Pin::new(&mut self.get_mut().inner).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::StreamExt as _;
    use futures_util::task::noop_waker;
    use tokio::sync::{Notify, mpsc};

    use super::*;

    /// A stream over a channel that counts how often it is polled.
    struct Counted {
        rx: mpsc::UnboundedReceiver<u32>,
        polls: Arc<AtomicUsize>,
    }

    impl Stream for Counted {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.rx.poll_recv(cx)
        }
    }

    #[test]
    fn a_waiting_stream_is_polled_again_only_once_woken() {
        let (tx, rx) = mpsc::unbounded_channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gate = Gate::new(Counted {
            rx,
            polls: polls.clone(),
        });
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(gate.poll_next_unpin(&mut cx).is_pending());
        for _ in 0..10 {
            assert!(gate.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "not woken: not polled");
        // A send wakes the receiver's waker (the gate's): the next poll reaches it.
        tx.send(7).unwrap();
        assert_eq!(gate.poll_next_unpin(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        // After an item, the stream is polled again at once (more may be ready).
        tx.send(8).unwrap();
        assert_eq!(gate.poll_next_unpin(&mut cx), Poll::Ready(Some(8)));
        assert!(gate.poll_next_unpin(&mut cx).is_pending());
        assert!(gate.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 4);
        drop(tx);
        assert_eq!(gate.poll_next_unpin(&mut cx), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_gated_future_wakes_its_task_and_completes() {
        let notify = Arc::new(Notify::new());
        let notified = std::pin::pin!(notify.notified());
        let gate = Gate::new(notified);
        let n = notify.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            n.notify_waiters();
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), gate)
            .await
            .expect("the gate passed the wake on to the task");
    }

    #[tokio::test]
    async fn a_select_loop_over_gates_sees_every_branch() {
        // Events arrive on one branch many times; the other fires once, late.
        let (tx, mut rx) = mpsc::channel::<u32>(4);
        let stop = Arc::new(Notify::new());
        let stopped = std::pin::pin!(stop.notified());
        let mut stopped = Gate::new(stopped);
        let s = stop.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
            }
            s.notify_one();
        });
        let mut got = 0;
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                Some(_) = rx.recv() => got += 1,
            }
        }
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 100);
    }
}
