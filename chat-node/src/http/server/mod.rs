//! The HTTP server: hyper's HTTP/1.1 connection driver on an accept loop of our own, with
//! the timeouts and connection caps that `axum::serve` does not have (it runs hyper without
//! a timer, so no header timeout applies, and accepts every connection).
//!
//! ```text
//!  accept ─► caps: total, per TCP peer address (trusted proxies exempt) ─► refused: closed
//!         └► connection (TCP_NODELAY; the permit lives in its IO, so an upgraded
//!            WebSocket keeps counting until it ends):
//!              waiting for a request head ── header timeout (from accept / first byte)
//!              kept alive between requests ─ idle timeout (to the first byte)
//!              request body ──────────────── body timeout + 1 s per min-rate bytes
//!              a write that cannot progress ─ idle timeout
//!              every request gets ClientAddr (X-Forwarded-For from trusted proxies only)
//!                                 and LocalAddr (where it was accepted)
//! ```
//! HTTP/1.1 only (no h2c: no client of a node speaks it; browsers reach HTTP/2 through a
//! TLS-terminating proxy). Shutdown is axum's: stop accepting, let in-flight requests end,
//! close idle connections, wait for the rest.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpLimits;
use crate::http::extract::ClientAddr;

mod bodies;
mod forwarded;

use bodies::{ResponseBody, TimedBody};
pub use forwarded::client_addr;

/// The local address a connection was accepted on, in every request's extensions: the
/// concrete form of `PARLEY_LISTEN` (its real port, the interface a client reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// [`HttpLimits`] as the connections use them.
#[derive(Debug)]
struct Settings {
    header: Duration,
    idle: Duration,
    body: Duration,
    body_min_rate: u64,
    trusted: Vec<IpNet>,
}

impl Settings {
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish, closes idle connections, and returns once every connection
/// has ended (upgraded WebSockets are their sessions' business, not waited for here).
/// Errors: none today (accept errors are logged and retried, as `axum::serve` does).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let settings = Arc::new(Settings {
        header: limits.http_header_timeout,
        idle: limits.http_idle_timeout,
        body: limits.http_body_timeout,
        body_min_rate: limits.http_body_min_rate.max(1),
        trusted: limits.trusted_proxies.clone(),
    });
    warn_over_open_files(limits.http_max_connections);
    let caps = Arc::new(Caps::new(
        limits.http_max_connections,
        limits.http_max_connections_per_address,
    ));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut refusals = Refusals::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::error!("accept error: {e}");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let peer = peer.ip().to_canonical();
        let permit = match caps.admit(peer, settings.trusts(&peer)) {
            Ok(p) => p,
            Err(over) => {
                // Closed before a byte is read: the cheapest answer there is.
                drop(tcp);
                refusals.note(over);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
        connections.spawn(connection(
            tcp,
            peer,
            permit,
            app.clone(),
            settings.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection, from accept to close.
async fn connection(
    tcp: TcpStream,
    peer: IpAddr,
    permit: Permit,
    app: Router,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let local = tcp.local_addr().ok();
    let state = Arc::new(ConnState::new(settings.header, settings.idle));
    let io = TokioIo::new(Guarded::new(tcp, permit, state.clone(), settings.idle));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = client_addr(peer, req.headers(), &settings.trusted);
        req.extensions_mut().insert(ClientAddr(client));
        if let Some(local) = local {
            req.extensions_mut().insert(LocalAddr(local));
        }
        state.request_started();
        let req =
            req.map(|body| Body::new(TimedBody::new(body, settings.body, settings.body_min_rate)));
        let mut app = app.clone();
        let state = state.clone();
        async move {
            // A Router is always ready: no poll_ready needed before call.
            let res = tower_service::Service::call(&mut app, req).await?;
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.upgraded();
                return Ok::<_, Infallible>(res);
            }
            Ok(res.map(|body| {
                Body::new(ResponseBody {
                    inner: body,
                    state: Some(state),
                })
            }))
        }
    });
    // hyper's own header timeout also runs between kept-alive requests (and its default of
    // 30 s applies once a timer is set): the IO below keeps time instead.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Where a connection is in its life, for the read deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head, until then.
    Head(Instant),
    /// Kept alive, waiting for the first byte of the next request, until then.
    Idle(Instant),
    /// A request is being served (its body has its own deadline).
    Busy,
    /// Upgraded (a WebSocket): its session keeps time.
    Upgraded,
}

#[derive(Debug)]
struct ConnState {
    phase: Mutex<Phase>,
    /// The task that last found nothing to read while no deadline ran: woken when the
    /// connection turns idle, so that its idle deadline starts to be watched.
    reader: Mutex<Option<std::task::Waker>>,
    header: Duration,
    idle: Duration,
}

impl ConnState {
    fn new(header: Duration, idle: Duration) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now() + header)),
            reader: Mutex::new(None),
            header,
            idle,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Phase> {
        self.phase.lock()
    }

    fn phase(&self) -> Phase {
        *self.lock()
    }

    /// Bytes came in: a kept-alive connection starts its next request head.
    fn bytes_arrived(&self) {
        let mut phase = self.lock();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now() + self.header);
        }
    }

    fn request_started(&self) {
        *self.lock() = Phase::Busy;
    }

    fn response_done(&self) {
        {
            let mut phase = self.lock();
            if !matches!(*phase, Phase::Busy) {
                return;
            }
            *phase = Phase::Idle(Instant::now() + self.idle);
        }
        // hyper polled the socket while the request was served and waits on it: poll again,
        // now with the idle deadline.
        let reader = self.reader.lock().take();
        if let Some(w) = reader {
            w.wake();
        }
    }

    fn wait_for_reads(&self, waker: &std::task::Waker) {
        let mut reader = self.reader.lock();
        match &*reader {
            Some(w) if w.will_wake(waker) => {}
            _ => *reader = Some(waker.clone()),
        }
    }

    /// The connection is handed over to an upgraded protocol: no deadline will start again,
    /// so the waker kept for one is dropped. (It is hyper's connection task's, which ends
    /// with the upgrade; kept, it would hold that task's memory, about 1 KiB, for as long
    /// as the WebSocket lives.)
    fn upgraded(&self) {
        *self.lock() = Phase::Upgraded;
        drop(self.reader.lock().take());
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// A connection's TCP stream with its deadlines, holding its place under the caps until
/// it is dropped (after an upgrade, when the WebSocket ends).
struct Guarded {
    tcp: TcpStream,
    _permit: Permit,
    state: Arc<ConnState>,
    /// The read deadline it is set to and the timer, made when a read first waits under a
    /// deadline, dropped once the connection is upgraded (a WebSocket's session keeps its
    /// own time): an idle WebSocket holds none.
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Made when a write first stalls.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
    write_bound: Duration,
}

impl Guarded {
    fn new(tcp: TcpStream, permit: Permit, state: Arc<ConnState>, write_bound: Duration) -> Self {
        Self {
            tcp,
            _permit: permit,
            state,
            read_timer: None,
            write_timer: None,
            write_stalled: false,
            write_bound,
        }
    }

    /// A write that returned `Pending`: fails once it has made no progress for the bound.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.write_bound;
            match &mut self.write_timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.write_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if self
            .write_timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(Err(timed_out("the client does not read")));
        }
        Poll::Pending
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_stalled = false;
                ready
            }
        }
    }
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.bytes_arrived();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        match this.state.phase() {
            Phase::Head(deadline) | Phase::Idle(deadline) => {
                let (at, timer) = this.read_timer.get_or_insert_with(|| {
                    (deadline, Box::pin(tokio::time::sleep_until(deadline)))
                });
                if *at != deadline {
                    timer.as_mut().reset(deadline);
                    *at = deadline;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("no complete request in time")));
                }
            }
            // A deadline starts again once the request is served.
            Phase::Busy => this.state.wait_for_reads(cx.waker()),
            // None ever again.
            Phase::Upgraded => this.read_timer = None,
        }
        Poll::Pending
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, data);
        this.progressed(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.progressed(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.progressed(r, cx)
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Total,
    PerAddress,
}

/// The connection caps of one listener.
#[derive(Debug)]
struct Caps {
    total: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, u32>>,
    max_per_address: u32,
}

/// A connection's place under the caps; given back when dropped.
#[derive(Debug)]
struct Permit {
    _total: OwnedSemaphorePermit,
    /// The per-address key, unless the peer is exempt.
    key: Option<IpAddr>,
    caps: Arc<Caps>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut counts = self.caps.per_address.lock();
            if let Some(n) = counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

/// The per-address key of a peer: IPv4 addresses as they are, IPv6 ones by their /64 (one
/// host's, or one customer's, usual allocation).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl Caps {
    fn new(total: u32, per_address: u32) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total as usize)),
            per_address: Mutex::new(HashMap::new()),
            max_per_address: per_address,
        }
    }

    /// A place for a connection from `peer`; trusted proxies (`exempt`) count only toward
    /// the total.
    fn admit(self: &Arc<Self>, peer: IpAddr, exempt: bool) -> Result<Permit, Over> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Over::Total)?;
        let key = if exempt {
            None
        } else {
            let key = address_key(peer);
            let mut counts = self.per_address.lock();
            let n = counts.entry(key).or_insert(0);
            if *n >= self.max_per_address {
                return Err(Over::PerAddress);
            }
            *n += 1;
            Some(key)
        };
        Ok(Permit {
            _total: total,
            key,
            caps: self.clone(),
        })
    }
}

/// Counts refused connections and logs them at most every 10 s.
#[derive(Debug, Default)]
struct Refusals {
    total: u64,
    per_address: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, over: Over) {
        match over {
            Over::Total => self.total += 1,
            Over::PerAddress => self.per_address += 1,
        }
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                over_total = self.total,
                over_per_address = self.per_address,
                "connections refused at accept (PARLEY_HTTP_MAX_CONNECTIONS, \
                 PARLEY_HTTP_MAX_CONNECTIONS_PER_ADDRESS), counted since start"
            );
            self.last_log = Some(now);
        }
    }
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits` (Linux); `None`
/// when unreadable or unlimited.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn warn_over_open_files(max_connections: u32) {
    if let Some(soft) = open_file_limit()
        && u64::from(max_connections) > soft
    {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "PARLEY_HTTP_MAX_CONNECTIONS is above the open-file limit (ulimit -n): the \
             node runs out of descriptors before it refuses connections"
        );
    }
}

#[cfg(test)]
mod tests;
