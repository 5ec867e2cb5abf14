// The WebSocket connection (GET /v1/ws): hello with resume_after, ready, heartbeat pings,
// requests matched to replies by `ref`, and reconnecting (back-off with jitter; at once
// with a fresh token after close 4003; after the server's after_ms when a node drains,
// `reconnect` + close 4010). What the frames mean is the caller's (live.js).

import { ApiError } from './api.js';

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
// How long an op waits for its reply.
export const SEND_TIMEOUT_MS = 20000;
// How long the server has to answer hello (its own limit is 10 s).
const HELLO_WAIT_MS = 15000;
const DEFAULT_HEARTBEAT_MS = 15000;

const disconnected = () => new ApiError('disconnected', 'Not connected', 0);

/**
 * url(): the endpoint; token(): the bearer token or null; resumeAfter(): the newest message id
 * seen, or null; onStatus(state, text): `connecting`, `reconnecting`, `online` or
 * `offline`, with words for the user; onReady(d): the `ready` frame's d; onEvent(type, d):
 * every event that answers no request; onDrop(): the connection is gone;
 * onHelloRefused(): hello was refused (check the token over REST: a 401 signs out);
 * refreshToken(): resolves true once a fresh token is stored (close 4003).
 */
export function createSocket(opts) {
  const { url, token, resumeAfter, onStatus, onReady, onEvent, onDrop, onHelloRefused, refreshToken } = opts;
  const conn = {
    ws: null,
    ready: false,
    attempt: 0,
    reconnectTimer: null,
    reconnectAt: 0,
    countdownTimer: null,
    pingTimer: null,
    helloTimer: null,
    heartbeatMs: DEFAULT_HEARTBEAT_MS,
    lastRecv: 0,
    refSeq: 0,
    epoch: 0, // bumped at every ready and every drop
    // after_ms of a `reconnect` event (the node is draining; close 4010 follows).
    drainAfterMs: null,
    pending: new Map(), // ref -> {resolve, reject, timer}
  };

  function connect() {
    clearTimeout(conn.reconnectTimer);
    clearInterval(conn.countdownTimer);
    if (!token()) return;
    if (conn.ws) return;
    onStatus(conn.attempt ? 'reconnecting' : 'connecting', conn.attempt ? 'Reconnecting…' : 'Connecting…');
    let ws;
    try {
      ws = new WebSocket(url());
    } catch {
      scheduleReconnect();
      return;
    }
    conn.ws = ws;
    conn.ready = false;
    conn.lastRecv = Date.now();
    ws.onopen = () => {
      if (ws !== conn.ws) return;
      clearTimeout(conn.helloTimer);
      conn.helloTimer = setTimeout(() => {
        if (ws === conn.ws && !conn.ready) drop(0);
      }, HELLO_WAIT_MS);
      const d = { token: token() };
      const after = resumeAfter();
      if (after) d.resume_after = after;
      ws.send(JSON.stringify({ op: 'hello', ref: 'h', d }));
    };
    ws.onmessage = (ev) => {
      if (ws !== conn.ws) return;
      conn.lastRecv = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') handleFrame(frame);
    };
    // A property, not a listener: the browser test calls it with its own close code.
    ws.onclose = (ev) => {
      if (ws !== conn.ws) return;
      drop(ev.code);
    };
  }

  /** Forgets the current socket (closing it if needed) and plans the reconnect. */
  function drop(code) {
    const ws = conn.ws;
    conn.ws = null;
    conn.ready = false;
    conn.epoch += 1;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.helloTimer);
    if (ws && ws.readyState <= 1) {
      try {
        ws.close();
      } catch {
        /* ignore */
      }
    }
    for (const [, p] of conn.pending) {
      clearTimeout(p.timer);
      p.reject(disconnected());
    }
    conn.pending.clear();
    onDrop();
    if (!token()) return;
    // Bad hello: if the token is the reason, the 401 signs us out.
    if (code === 4001) onHelloRefused();
    if (code === 4003) {
      // v1.1: the token expired. Reconnect at once with a fresh one; a token that can no
      // longer be refreshed signs out onto the sign-in form.
      refreshToken().then(
        (ok) => {
          if (ok) scheduleReconnect(0);
        },
        () => scheduleReconnect(),
      );
      return;
    }
    if (code === 4010) {
      // The node is draining (not a failure): come back after the after_ms it gave, to any
      // node, with resume_after; the back-off is not increased.
      const after = conn.drainAfterMs ?? Math.round(Math.random() * 1000);
      conn.drainAfterMs = null;
      scheduleReconnect(after);
      return;
    }
    conn.drainAfterMs = null;
    scheduleReconnect();
  }

  /** Reconnects after `delayMs`, or after the next back-off step when none is given. */
  function scheduleReconnect(delayMs) {
    clearTimeout(conn.reconnectTimer);
    clearInterval(conn.countdownTimer);
    let delay;
    if (typeof delayMs === 'number') {
      delay = delayMs;
    } else {
      const base = BACKOFF_MS[Math.min(conn.attempt, BACKOFF_MS.length - 1)];
      delay = Math.round(base * (0.8 + Math.random() * 0.4));
      conn.attempt += 1;
    }
    conn.reconnectAt = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((conn.reconnectAt - Date.now()) / 1000));
      onStatus('offline', s > 0 ? `Disconnected · retrying in ${s}s` : 'Reconnecting…');
    };
    tick();
    conn.countdownTimer = setInterval(tick, 1000);
    conn.reconnectTimer = setTimeout(connect, delay);
  }

  /** Sends op `op` with `d`; resolves to the `ok` reply's d, rejects with an ApiError. */
  function request(op, d, timeoutMs = SEND_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const ws = conn.ws;
      if (!ws || !conn.ready || ws.readyState !== WebSocket.OPEN) {
        reject(disconnected());
        return;
      }
      conn.refSeq += 1;
      const ref = `${op[0]}${conn.refSeq}`;
      const timer = setTimeout(() => {
        conn.pending.delete(ref);
        reject(new ApiError('timeout', 'The server did not answer in time', 0));
      }, timeoutMs);
      conn.pending.set(ref, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ op, ref, d }));
      } catch {
        clearTimeout(timer);
        conn.pending.delete(ref);
        reject(disconnected());
      }
    });
  }

  function startHeartbeat() {
    clearInterval(conn.pingTimer);
    const every = Math.max(1000, Math.floor(conn.heartbeatMs * 0.9));
    conn.pingTimer = setInterval(() => {
      if (!conn.ws || !conn.ready) return;
      if (Date.now() - conn.lastRecv > conn.heartbeatMs * 3 + 5000) {
        // Nothing heard for too long: the socket is dead even if the browser has not noticed.
        drop(0);
        return;
      }
      request('ping', {}, conn.heartbeatMs * 2).catch(() => {});
    }, every);
  }

  function ready(d) {
    clearTimeout(conn.helloTimer);
    conn.ready = true;
    conn.epoch += 1;
    conn.attempt = 0;
    conn.heartbeatMs = Number(d.heartbeat_interval_ms) > 0 ? Number(d.heartbeat_interval_ms) : DEFAULT_HEARTBEAT_MS;
    onStatus('online', 'Connected');
    startHeartbeat();
    onReady(d);
  }

  function handleFrame(f) {
    const t = f.t;
    const d = f.d && typeof f.d === 'object' ? f.d : {};
    if (t === 'ready') {
      ready(d);
      return;
    }
    if (t === 'error' && f.ref === 'h') {
      // The hello was refused: if the token is the reason, the 401 signs us out.
      onHelloRefused();
      return;
    }
    if (typeof f.ref === 'string' && conn.pending.has(f.ref)) {
      const p = conn.pending.get(f.ref);
      conn.pending.delete(f.ref);
      clearTimeout(p.timer);
      if (t === 'error') p.reject(new ApiError(d.code || 'internal', d.message || 'Error', 0));
      else p.resolve(d);
      return;
    }
    if (t === 'reconnect') {
      // v1.1: the node is draining; close 4010 follows. Wait after_ms, then resume elsewhere.
      const after = Number(d.after_ms);
      conn.drainAfterMs = Number.isFinite(after) ? Math.min(Math.max(after, 0), 60000) : 0;
      onStatus('reconnecting', 'Server restarting · reconnecting…');
      return;
    }
    onEvent(t, d);
  }

  return {
    connect,
    request,
    /** Connects now unless connected (the user clicked the status, or came back online). */
    reconnectNow() {
      if (conn.ws || !token()) return;
      connect();
    },
    /** Closes for good (sign-out). */
    close() {
      if (!conn.ws) return;
      const ws = conn.ws;
      conn.ws = null;
      ws.close(1000, 'signed out');
    },
    isReady: () => conn.ready,
    hasSocket: () => !!conn.ws,
    /** The epoch if the socket is up now, else -1, to tell later whether it stayed up. */
    liveEpoch: () => (conn.ready ? conn.epoch : -1),
    stillLive: (epoch) => epoch >= 0 && conn.ready && conn.epoch === epoch,
  };
}
