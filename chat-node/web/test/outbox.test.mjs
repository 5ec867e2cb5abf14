// The outbox: unacknowledged sends wait while offline, go out on ready with the same
// client_msg_id, are retried after rate_limited, and leave once acknowledged.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MAX_RATE_RETRIES, createOutbox } from '../js/outbox.js';
import { CHAN, ME, msg, signedInStore } from './fixtures.mjs';

/** A scripted socket: every request waits until the test answers it. */
function fakeSocket() {
  const sock = {
    ready: false,
    sent: [], // {op, d, resolve, reject}
    request(op, d) {
      return new Promise((resolve, reject) => sock.sent.push({ op, d, resolve, reject }));
    },
  };
  return sock;
}

/** A clock the test advances by hand. */
function fakeTimers() {
  const timers = [];
  return {
    setTimer: (fn, ms) => timers.push({ fn, ms }),
    pending: () => timers.map((t) => t.ms),
    runAll() {
      for (const t of timers.splice(0)) t.fn();
    },
  };
}

function setup() {
  const store = signedInStore();
  const sock = fakeSocket();
  const clock = fakeTimers();
  const outbox = createOutbox({ store, request: sock.request, isReady: () => sock.ready, setTimer: clock.setTimer });
  return { store, sock, clock, outbox };
}

function pending(store, text = 'hi') {
  return {
    cmid: `cmid-${text}`,
    channel_id: CHAN,
    text,
    attachments: [],
    staged: [],
    reply_to: null,
    status: 'queued',
    error: null,
    createdAt: new Date().toISOString(),
  };
}

const flushPromises = () => new Promise((r) => setImmediate(r));

test('offline, a message waits queued; on ready it is sent and, acknowledged, leaves', async () => {
  const { store, sock, outbox } = setup();
  const p = pending(store);
  outbox.add(p);
  await outbox.deliver(p);
  assert.equal(p.status, 'queued');
  assert.equal(sock.sent.length, 0);

  sock.ready = true;
  outbox.flush();
  assert.equal(p.status, 'sending');
  assert.deepEqual(sock.sent.map((s) => [s.op, s.d]), [['send', { channel_id: CHAN, text: 'hi', client_msg_id: 'cmid-hi' }]]);

  const echo = msg(1, { author: ME, client_msg_id: 'cmid-hi', text: 'hi' });
  sock.sent[0].resolve({ message: echo });
  await flushPromises();
  assert.equal(store.outbox.size, 0);
  assert.equal(store.getChan(CHAN).msgs.get(echo.id), echo, 'the answer is merged');
  assert.equal(store.lastSeenId, echo.id);
});

test('the message event may acknowledge it first; an ok without a body shows it as sent', async () => {
  const { store, sock, outbox } = setup();
  sock.ready = true;
  const [a, b] = [pending(store, 'a'), pending(store, 'b')];
  outbox.add(a);
  outbox.add(b);
  outbox.flush();
  store.mergeMessage(msg(1, { author: ME, client_msg_id: a.cmid }), true);
  assert.equal(store.outbox.has(a.cmid), false, 'our own echo acknowledges it');
  sock.sent[1].resolve({});
  await flushPromises();
  assert.equal(b.status, 'sent');
});

test('someone else\'s message with the same client_msg_id acknowledges nothing', () => {
  const { store, outbox } = setup();
  const p = pending(store);
  outbox.add(p);
  store.mergeMessage(msg(1, { client_msg_id: p.cmid }), true);
  assert.equal(store.outbox.has(p.cmid), true);
});

test('a drop puts what was in flight back in the queue; the next ready sends it with the same client_msg_id', async () => {
  const { store, sock, outbox } = setup();
  sock.ready = true;
  const p = pending(store);
  outbox.add(p);
  outbox.flush();
  sock.ready = false;
  store.requeueSending();
  assert.equal(p.status, 'queued');
  const disconnected = Object.assign(new Error('Not connected'), { code: 'disconnected' });
  sock.sent[0].reject(disconnected);
  await flushPromises();
  assert.equal(p.status, 'queued');
  sock.ready = true;
  outbox.flush();
  assert.equal(sock.sent.length, 2);
  assert.equal(sock.sent[1].d.client_msg_id, sock.sent[0].d.client_msg_id);
});

test('rate_limited is retried after 1 s, 2 s, ... with the same client_msg_id, then fails', async () => {
  const { store, sock, clock, outbox } = setup();
  sock.ready = true;
  const p = pending(store);
  outbox.add(p);
  outbox.flush();
  const limited = Object.assign(new Error('Slow down'), { code: 'rate_limited' });
  const waits = [];
  for (let i = 0; i < MAX_RATE_RETRIES; i++) {
    sock.sent.at(-1).reject(limited);
    await flushPromises();
    assert.equal(p.status, 'queued');
    waits.push(...clock.pending());
    clock.runAll();
    assert.equal(p.status, 'sending');
  }
  assert.deepEqual(waits, [1000, 2000, 3000, 4000, 5000]);
  assert.equal(new Set(sock.sent.map((s) => s.d.client_msg_id)).size, 1);
  sock.sent.at(-1).reject(limited);
  await flushPromises();
  assert.equal(p.status, 'failed');
  assert.equal(p.error, 'Slow down');
  assert.deepEqual(clock.pending(), []);
});

test('a retry planned while offline waits for the next ready instead', async () => {
  const { store, sock, clock, outbox } = setup();
  sock.ready = true;
  const p = pending(store);
  outbox.add(p);
  outbox.flush();
  sock.sent[0].reject(Object.assign(new Error('Slow down'), { code: 'rate_limited' }));
  await flushPromises();
  sock.ready = false;
  clock.runAll();
  assert.equal(sock.sent.length, 1);
  assert.equal(p.status, 'queued');
});

test('a refusal fails it with the server\'s words; Retry sends it again, Discard drops it', async () => {
  const { store, sock, outbox } = setup();
  sock.ready = true;
  const p = pending(store);
  outbox.add(p);
  outbox.flush();
  sock.sent[0].reject(Object.assign(new Error('Too long'), { code: 'too_large' }));
  await flushPromises();
  assert.deepEqual([p.status, p.error], ['failed', 'Too long']);
  outbox.deliver(p);
  assert.deepEqual([p.status, p.error], ['sending', null]);
  assert.equal(sock.sent.length, 2);
  outbox.discard(p);
  assert.equal(store.outbox.size, 0);
  sock.sent[1].reject(Object.assign(new Error('late'), { code: 'internal' }));
  await flushPromises();
  assert.equal(p.status, 'sending', 'an answer for a discarded message changes nothing');
});

test('a message whose upload failed fails for good; its files are sent as attachment ids', async () => {
  const { store, sock, outbox } = setup();
  sock.ready = true;
  const broken = { ...pending(store, 'broken'), status: 'uploading' };
  outbox.add(broken);
  await outbox.uploaded(broken, 'cat.png');
  assert.deepEqual([broken.status, broken.error, broken.uploadFailed], ['failed', 'Upload failed: cat.png', true]);

  const ok = { ...pending(store, 'files'), status: 'uploading', attachments: [{ id: '77' }], reply_to: '5' };
  outbox.add(ok);
  outbox.flush();
  assert.equal(sock.sent.length, 0, 'uploading messages are not flushed');
  outbox.uploaded(ok, null);
  assert.deepEqual(sock.sent[0].d, { channel_id: CHAN, text: 'files', client_msg_id: ok.cmid, attachments: ['77'], reply_to: '5' });
});

test('every change of an unsent message is an outbox event (the views redraw it)', () => {
  const { store, outbox } = setup();
  const events = [];
  store.on('outbox', (p) => events.push(p && p.status));
  const p = pending(store);
  outbox.add(p);
  outbox.deliver(p);
  outbox.discard(p);
  assert.deepEqual(events, ['queued', 'queued', null]);
});
