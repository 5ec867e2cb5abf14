// Test helpers: messages, a store with a signed-in user, and an event recorder.

import { Store } from '../js/store.js';

export const ME = '100';
export const ALICE = '200';
export const CHAN = '10';

let nextId = 1000n;
/** A message of channel `channel` with seq `seq`; ids grow with every call. */
export function msg(seq, { channel = CHAN, author = ALICE, id, ...rest } = {}) {
  nextId += 1n;
  return {
    id: id ?? String(nextId),
    channel_id: channel,
    seq,
    author_id: author,
    text: `message ${seq}`,
    client_msg_id: null,
    attachments: [],
    reply_to: null,
    created_at: new Date(2025, 0, 1, 12, 0, seq).toISOString(),
    moderated: false,
    ...rest,
  };
}

/** A store signed in as ME, with group CHAN listed and users known (no user-needed noise). */
export function signedInStore(opts = {}) {
  const store = new Store(opts);
  store.setMe({ id: ME, username: 'me', display_name: 'Me' });
  store.cacheUser({ id: ALICE, username: 'alice', display_name: 'Alice' });
  store.setChannel({ id: CHAN, kind: 'group', name: 'lobby', member_count: 2 });
  return store;
}

/** Records every event of the listed types: [{type, detail}]. */
export function record(store, types) {
  const seen = [];
  for (const type of types) store.on(type, (detail) => seen.push({ type, detail }));
  return seen;
}

export const ofType = (seen, type) => seen.filter((e) => e.type === type);
