// History over REST: the newest page, older pages, and filling seq gaps.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createHistory } from '../js/history.js';
import { sortedMessages } from '../js/store.js';
import { CHAN, msg, signedInStore } from './fixtures.mjs';

/** A server holding `messages` of CHAN, answering history queries as chat-node does. */
function fakeServer(messages) {
  const calls = [];
  const request = async (method, path) => {
    calls.push(path);
    const url = new URL(path, 'http://node');
    const limit = Number(url.searchParams.get('limit'));
    const after = url.searchParams.get('after');
    const before = url.searchParams.get('before');
    let list = [...messages].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
    if (after) {
      list = list.filter((m) => BigInt(m.id) > BigInt(after));
      return { messages: list.slice(0, limit), has_more: list.length > limit };
    }
    if (before) list = list.filter((m) => BigInt(m.id) < BigInt(before));
    list.reverse();
    return { messages: list.slice(0, limit), has_more: list.length > limit };
  };
  return { request, calls };
}

function setup(messages, { live = false } = {}) {
  const store = signedInStore();
  const server = fakeServer(messages);
  const history = createHistory({
    store,
    request: server.request,
    liveEpoch: () => (live ? 1 : -1),
    stillLive: (epoch) => live && epoch === 1,
  });
  return { store, server, history, ch: store.getChan(CHAN) };
}

const seqs = (ch) => sortedMessages(ch).map((m) => m.seq);
const settle = () => new Promise((r) => setTimeout(r, 5));

test('the newest page comes first, older ones on demand, with the limits the node gave', async () => {
  const all = Array.from({ length: 7 }, (_, i) => msg(i + 1));
  const { store, server, history, ch } = setup(all);
  store.setLimits({ history_page_default: 3 });
  await history.loadInitial(ch);
  assert.deepEqual(seqs(ch), [5, 6, 7]);
  assert.equal(ch.loaded, true);
  assert.equal(ch.hasMore, true);
  await history.loadOlder(ch);
  await history.loadOlder(ch);
  assert.deepEqual(seqs(ch), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(ch.hasMore, false);
  await history.loadOlder(ch);
  assert.equal(server.calls.length, 3, 'nothing older to ask for');
  assert.match(server.calls[0], /limit=3$/);
  assert.equal(store.lastSeenId, null, 'fetched while offline: the resume point stays');
});

test('pages fetched while the socket stayed up move the resume point', async () => {
  const all = [msg(1), msg(2)];
  const { store, history, ch } = setup(all, { live: true });
  await history.loadInitial(ch);
  assert.equal(store.lastSeenId, all[1].id);
});

test('a gap announced by a live message is fetched after the message before the hole', async () => {
  const all = Array.from({ length: 6 }, (_, i) => msg(i + 1));
  const held = all.slice(0, 2);
  const { store, server, history, ch } = setup(held);
  await history.loadInitial(ch);
  // The server gets 3..6 meanwhile; only 6 arrives live.
  held.push(...all.slice(2));
  server.calls.length = 0;
  store.mergeMessage(all[5], true);
  assert.deepEqual(seqs(ch), [1, 2, 6]);
  await settle();
  assert.deepEqual(seqs(ch), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(server.calls, [`/channels/${CHAN}/messages?after=${all[1].id}&limit=100`]);
});

test('a gap fill pages on while has_more, and a second trigger meanwhile runs once more', async () => {
  const all = Array.from({ length: 9 }, (_, i) => msg(i + 1));
  const { store, server, history, ch } = setup(all);
  store.setLimits({ history_page_default: 1, history_page_max: 2 });
  await history.loadInitial(ch);
  // Only the newest is loaded; the server says seq 9 is the last: nothing to fill.
  ch.serverSeq = 9;
  history.checkCursor(ch);
  await settle();
  assert.deepEqual(seqs(ch), [9]);

  // A hole: 1 and 9 loaded, 2..8 missing.
  store.mergeMessage(all[0], false);
  const running = history.fillGap(ch);
  history.fillGap(ch);
  assert.equal(ch.refill, true);
  await running;
  await settle();
  assert.deepEqual(seqs(ch), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const after = server.calls.filter((c) => c.includes('after='));
  assert.ok(after.length >= 4, `paged by 2: ${after.join(' ')}`);
  assert.ok(after.every((c) => c.endsWith('limit=2')));
});

test('resync drops the messages and loads the open channel again', async () => {
  const all = [msg(1), msg(2)];
  const { store, history, ch } = setup(all);
  await history.loadInitial(ch);
  store.select(CHAN);
  ch.msgs.delete(all[0].id);
  ch.sorted = null;
  history.resync(ch);
  assert.equal(ch.msgs.size, 0);
  await settle();
  assert.deepEqual(seqs(ch), [1, 2]);
});

test('a failed load keeps its error for the view and can be tried again', async () => {
  const store = signedInStore();
  let fail = true;
  const history = createHistory({
    store,
    request: async () => {
      if (fail) throw new Error('Cannot reach the server.');
      return { messages: [msg(1)], has_more: false };
    },
    liveEpoch: () => -1,
    stillLive: () => false,
  });
  const ch = store.getChan(CHAN);
  const events = [];
  store.on('conversation', (d) => events.push(d));
  await history.loadInitial(ch);
  assert.deepEqual([ch.loaded, ch.loading, ch.loadError], [false, false, 'Cannot reach the server.']);
  assert.deepEqual(events, [{ channelId: CHAN, now: true, toBottom: true, fill: true }]);
  fail = false;
  await history.loadInitial(ch);
  assert.deepEqual([ch.loaded, ch.loadError, ch.hasMore], [true, null, false]);
});
