// The store: merging of history pages, live events and resumed messages; gap detection by
// seq; unread counts; read markers; typing; limits.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_LIMITS, gapAfter, hasHole, needsCatchUp, sortedMessages } from '../js/store.js';
import { ALICE, CHAN, ME, msg, ofType, record, signedInStore } from './fixtures.mjs';

const page = (messages, hasMore = false) => ({ messages, has_more: hasMore });

test('a message merges once, by id, and the list stays in id order', () => {
  const store = signedInStore();
  const a = msg(1);
  const b = msg(2);
  assert.equal(store.mergeMessage(b, true), true);
  assert.equal(store.mergeMessage(a, false), true);
  assert.equal(store.mergeMessage(b, true), false, 'the same id again is not new');
  const ch = store.getChan(CHAN);
  assert.deepEqual(sortedMessages(ch).map((m) => m.seq), [1, 2]);
  assert.equal(ch.maxSeq, 2);
  assert.equal(ch.serverSeq, 2);
});

test('malformed messages are ignored', () => {
  const store = signedInStore();
  assert.equal(store.mergeMessage(null, true), false);
  assert.equal(store.mergeMessage({ ...msg(1), id: 12 }, true), false);
  assert.equal(store.mergeMessage({ ...msg(1), channel_id: 'x' }, true), false);
  assert.equal(store.getChan(CHAN).msgs.size, 0);
});

test('a live message that skips seq numbers in a loaded channel asks for the gap', () => {
  const store = signedInStore();
  const seen = record(store, ['gap']);
  const ch = store.getChan(CHAN);
  const [one, two] = [msg(1), msg(2)];
  store.mergePage(ch, page([two, one]), false);
  ch.loaded = true;
  store.mergeMessage(msg(3), true);
  assert.equal(ofType(seen, 'gap').length, 0, 'seq 3 after 2 is no gap');
  store.mergeMessage(msg(6), true);
  assert.deepEqual(ofType(seen, 'gap').map((e) => e.detail), [{ channelId: CHAN }]);
  assert.equal(hasHole(ch), true);
  const list = sortedMessages(ch);
  assert.equal(gapAfter(ch), list[2].id, 'fetch after seq 3, the message before the hole');
  assert.equal(needsCatchUp(ch), true);
});

test('no gap is asked for from history pages or before the channel is loaded', () => {
  const store = signedInStore();
  const seen = record(store, ['gap']);
  const ch = store.getChan(CHAN);
  store.mergeMessage(msg(1), true);
  store.mergeMessage(msg(5), true);
  assert.equal(ofType(seen, 'gap').length, 0, 'not loaded yet');
  ch.loaded = true;
  store.mergePage(ch, page([msg(9)]), false);
  assert.equal(ofType(seen, 'gap').length, 0, 'a page is not live');
});

test('without a hole, the gap to fill starts after the newest message; nothing loaded, none', () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  assert.equal(gapAfter(ch), null);
  const [oldest, newest] = [msg(1), msg(2)];
  store.mergePage(ch, page([newest, oldest]), false);
  assert.equal(hasHole(ch), false);
  assert.equal(gapAfter(ch), newest.id);
  ch.loaded = true;
  assert.equal(needsCatchUp(ch), false);
});

test("ready's cursors: a higher last_seq means the channel misses messages", () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  store.mergePage(ch, page([msg(1), msg(2)]), false);
  ch.loaded = true;
  store.channelsLoaded = true;
  assert.equal(store.applyCursors([{ id: CHAN, last_seq: 4 }]), false, 'the list is complete');
  assert.equal(ch.serverSeq, 4);
  assert.equal(needsCatchUp(ch), true);
  assert.equal(store.applyCursors([{ id: CHAN, last_seq: 4 }, { id: '11', last_seq: 1 }]), true, 'an unknown channel');
  store.setChannel({ id: '12', kind: 'group', name: 'left' });
  assert.equal(store.applyCursors([{ id: CHAN, last_seq: 3 }]), true, 'a listed channel the server left out');
  assert.equal(ch.serverSeq, 4, 'a cursor never goes back');
});

test('lastSeenId (resume_after) moves with live messages and only with pages fetched while live', () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  const old = msg(1);
  const newer = msg(2);
  store.mergePage(ch, page([newer, old]), false);
  assert.equal(store.lastSeenId, null, 'a page fetched while offline moves nothing');
  store.mergePage(ch, page([old]), true);
  assert.equal(store.lastSeenId, old.id);
  const live = msg(3);
  store.mergeMessage(live, true);
  assert.equal(store.lastSeenId, live.id);
  store.mergeMessage(old, true);
  assert.equal(store.lastSeenId, live.id, 'it never goes back');
});

test('resumed messages already loaded by history are not new and count once', () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  const [a, b] = [msg(1), msg(2)];
  store.mergePage(ch, page([b, a]), false);
  ch.loaded = true;
  // After ready with resume_after, the server replays what it thinks we missed.
  const replayed = [a, b, msg(3)].map((m) => store.mergeMessage({ ...m }, true));
  assert.deepEqual(replayed, [false, false, true]);
  assert.equal(ch.msgs.size, 3);
  assert.equal(ch.unread, 1, 'only the new one is unread');
});

test('a page reports its oldest message in the channel, its size and has_more', () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  const [a, b] = [msg(1), msg(2)];
  const other = msg(1, { channel: '11' });
  const r = store.mergePage(ch, page([b, other, a], true), false);
  assert.deepEqual(r, { oldest: a.id, count: 3, hasMore: true });
  assert.equal(store.mergePage(ch, page([]), false).oldest, null);
  assert.equal(store.mergePage(ch, null, false).count, 0);
});

test('a message for a channel the list lacks asks for the list', () => {
  const store = signedInStore();
  const seen = record(store, ['channel-unknown']);
  store.mergeMessage(msg(1, { channel: '11' }), true);
  assert.deepEqual(ofType(seen, 'channel-unknown').map((e) => e.detail), [{ channelId: '11' }]);
});

test('unread counts: others\' live messages away from the open, visible end of the list', () => {
  let visible = true;
  const store = signedInStore({ isVisible: () => visible });
  const seen = record(store, ['channels', 'new-below']);
  const ch = store.getChan(CHAN);
  store.mergeMessage(msg(1), true);
  assert.equal(ch.unread, 1, 'not open');
  store.mergeMessage(msg(2, { author: ME }), true);
  assert.equal(ch.unread, 1, 'mine never');
  store.select(CHAN);
  assert.equal(ch.unread, 0, 'opening clears it');
  store.mergeMessage(msg(3), true);
  assert.equal(ch.unread, 0, 'open, visible, at the end');
  visible = false;
  store.mergeMessage(msg(4), true);
  assert.equal(ch.unread, 1, 'the page is hidden');
  visible = true;
  store.stickBottom = false;
  store.mergeMessage(msg(5), true);
  assert.equal(ch.unread, 2);
  assert.equal(ofType(seen, 'new-below').length, 1, 'scrolled up: shown below');
  store.mergeMessage(msg(6), false);
  assert.equal(ch.unread, 2, 'history is never unread');
  assert.equal(store.totalUnread(), 2);
});

test('a read marker from another device of mine clears unread; others\' move forward only', () => {
  const store = signedInStore();
  const ch = store.getChan(CHAN);
  const [a, b] = [msg(1), msg(2)];
  store.mergeMessage(a, true);
  store.mergeMessage(b, true);
  assert.equal(ch.unread, 2);
  store.applyRead({ channel_id: CHAN, user_id: ME, message_id: a.id });
  assert.equal(ch.unread, 2, 'not up to the newest');
  store.applyRead({ channel_id: CHAN, user_id: ME, message_id: b.id });
  assert.equal(ch.unread, 0);
  assert.equal(ch.lastReadSent, b.id);
  store.applyRead({ channel_id: CHAN, user_id: ALICE, message_id: b.id });
  store.applyRead({ channel_id: CHAN, user_id: ALICE, message_id: a.id });
  assert.equal(ch.reads.get(ALICE), b.id);
  store.applyRead({ channel_id: CHAN, user_id: ALICE, message_id: 'nope' });
  assert.equal(ch.reads.get(ALICE), b.id);
});

test('typing expires, and a message from the typist ends it', () => {
  const store = signedInStore();
  const seen = record(store, ['typing']);
  const ch = store.getChan(CHAN);
  store.setTyping(CHAN, ALICE, 5000);
  store.setTyping(CHAN, ME, 5000);
  assert.deepEqual(store.typingUsers(ch, 1000), [ALICE], 'never myself');
  assert.deepEqual(store.typingUsers(ch, 5000), [], 'expired');
  store.setTyping(CHAN, ALICE, 9000);
  store.mergeMessage(msg(1), true);
  assert.deepEqual(store.typingUsers(ch, 1000), []);
  assert.equal(ofType(seen, 'typing').length, 3);
});

test('resync drops the messages and the seq state of a channel', () => {
  const store = signedInStore();
  const seen = record(store, ['resync']);
  const ch = store.getChan(CHAN);
  store.mergePage(ch, page([msg(1), msg(2)]), false);
  Object.assign(ch, { loaded: true, hasMore: false, oldestId: '1' });
  store.resync(ch);
  assert.equal(ch.msgs.size, 0);
  assert.deepEqual([ch.loaded, ch.hasMore, ch.oldestId, ch.maxSeq], [false, true, null, 0]);
  assert.deepEqual(ofType(seen, 'resync').map((e) => e.detail), [{ channelId: CHAN }]);
});

test('names: a missing user is asked for once shown; members tell a DM partner', () => {
  const store = signedInStore();
  const seen = record(store, ['user-needed', 'user']);
  assert.equal(store.displayName('300'), '…');
  assert.deepEqual(ofType(seen, 'user-needed').map((e) => e.detail), [{ id: '300' }]);
  const dm = store.setChannel({ id: '12', kind: 'dm', name: null });
  assert.equal(store.channelName(dm), 'Direct message');
  const partner = store.setMembers(dm, [{ id: ME, username: 'me' }, { id: '300', username: 'carol', display_name: 'Carol' }]);
  assert.equal(partner, '300');
  assert.equal(store.setMembers(dm, [{ id: ME, username: 'me' }, { id: '300', username: 'carol' }]), null, 'known already');
  assert.equal(store.channelName(dm), 'carol');
  assert.deepEqual(dm.members, [ME, '300']);
});

test('the list keeps only listed channels and tells when the open one went', () => {
  const store = signedInStore();
  store.setChannel({ id: '11', kind: 'group', name: 'gone' });
  store.select('11');
  assert.equal(store.keepOnly(new Set([CHAN])), true);
  assert.equal(store.channels.has('11'), false);
  assert.equal(store.channelsLoaded, true);
  assert.equal(store.keepOnly(new Set([CHAN])), false);
});

test('limits: the node\'s numbers replace the defaults; malformed ones do not', () => {
  const store = signedInStore();
  const seen = record(store, ['limits']);
  assert.equal(store.limits.text_max_chars, DEFAULT_LIMITS.text_max_chars);
  store.setLimits({
    text_max_chars: 12,
    attachments_max: -1,
    history_page_max: 'lots',
    upload_max_bytes: { media: 5, document: 6 },
    something_new: 1,
  });
  assert.equal(store.limits.text_max_chars, 12);
  assert.equal(store.limits.attachments_max, DEFAULT_LIMITS.attachments_max);
  assert.equal(store.limits.history_page_max, DEFAULT_LIMITS.history_page_max);
  assert.deepEqual(store.limits.upload_max_bytes, { media: 5, document: 6 });
  assert.equal('something_new' in store.limits, false);
  store.setLimits(null);
  assert.equal(ofType(seen, 'limits').length, 1);
});

test('events: unsubscribing stops delivery', () => {
  const store = signedInStore();
  let n = 0;
  const off = store.on('channels', () => { n += 1; });
  store.emit('channels');
  off();
  store.emit('channels');
  assert.equal(n, 1);
});
