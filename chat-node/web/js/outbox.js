// Sending: the outbox of messages the server has not acknowledged yet. Each keeps its
// client_msg_id for life, so every retry is the same send to the server (a repeat returns
// the original message and delivers nothing new). Over the socket only; while it is down
// messages wait as `queued` and go out at the next `ready`.
//
// A pending message: {cmid, channel_id, text, attachments: [Attachment], staged (files),
// reply_to, status, error, createdAt, rateRetries, uploadFailed}; status is one of
//   uploading ─► queued ─► sending ─► (acknowledged: removed) | sent (ok without a body)
//                  ▲          │
//                  └──────────┴─► failed (Retry ─► sending, Discard ─► removed)
// A `rate_limited` answer is retried after 1 s, 2 s, ... up to MAX_RATE_RETRIES times.

export const MAX_RATE_RETRIES = 5;
const RATE_RETRY_STEP_MS = 1000;

/**
 * request(op, d): a WebSocket request, resolving to the `ok` reply's d and rejecting with an
 * error whose code is the server's (or `disconnected`, `timeout`); isReady(): the socket is
 * up; setTimer(fn, ms): setTimeout (tests pass their own clock).
 */
export function createOutbox({ store, request, isReady, setTimer = (fn, ms) => setTimeout(fn, ms) }) {
  const present = (p) => store.outbox.has(p.cmid);

  function onAnswer(p, r) {
    if (r && r.message) {
      store.mergeMessage(r.message, true);
      store.removePending(p.cmid);
      return;
    }
    // ok without a message body: the `message` event will bring it; keep showing it as sent.
    if (present(p)) store.setPendingStatus(p, 'sent');
  }

  function onRefused(p, e) {
    if (!present(p)) return;
    if (e.code === 'disconnected') {
      store.setPendingStatus(p, 'queued');
    } else if (e.code === 'rate_limited' && (p.rateRetries || 0) < MAX_RATE_RETRIES) {
      // Over the send rate: try again shortly with the same client_msg_id.
      p.rateRetries = (p.rateRetries || 0) + 1;
      store.setPendingStatus(p, 'queued');
      setTimer(() => {
        if (present(p) && p.status === 'queued' && isReady()) deliver(p);
      }, RATE_RETRY_STEP_MS * p.rateRetries);
    } else {
      store.setPendingStatus(p, 'failed', e.message || 'Could not send');
    }
  }

  /** Sends a pending message now, or leaves it queued for the next connection. */
  function deliver(p) {
    if (!isReady()) {
      store.setPendingStatus(p, 'queued');
      return Promise.resolve();
    }
    store.setPendingStatus(p, 'sending', null);
    const d = { channel_id: p.channel_id, text: p.text, client_msg_id: p.cmid };
    if (p.attachments.length) d.attachments = p.attachments.map((a) => a.id);
    if (p.reply_to) d.reply_to = p.reply_to;
    return request('send', d).then(
      (r) => onAnswer(p, r),
      (e) => onRefused(p, e),
    );
  }

  /** Sends every queued message (the socket is ready again). */
  function flush() {
    for (const p of store.outbox.values()) if (p.status === 'queued') deliver(p);
  }

  /** Queues a new message; `uploading` until its files are stored. */
  function add(p) {
    store.addPending(p);
  }

  /** Its uploads ended: delivers it, or fails it (for good: it cannot be retried). */
  function uploaded(p, failedUpload) {
    if (failedUpload) {
      p.uploadFailed = true;
      store.setPendingStatus(p, 'failed', `Upload failed: ${failedUpload}`);
      return Promise.resolve();
    }
    return deliver(p);
  }

  const discard = (p) => store.removePending(p.cmid);

  return { add, uploaded, deliver, flush, discard };
}
