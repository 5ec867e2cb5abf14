// Who and where: the channel list, member lists, users' names and presence, fetched over
// REST into the store; and the three ways into a conversation (create a group, join one by
// name, message a user).

import { isId } from './util.js';

// A user whose fetch failed is asked for again after this long.
const USER_RETRY_MS = 10000;
// Presence is asked for in chunks of this many users.
const PRESENCE_CHUNK = 100;

/** onCurrentGone(): the open channel left the list (navigation closes it). */
export function createDirectory({ store, request, onCurrentGone }) {
  const userRequests = new Map(); // id -> Promise

  /** Fetches a user's names once (again after a failure, later). */
  function ensureUser(id) {
    if (!isId(id) || store.users.has(id)) return Promise.resolve(store.users.get(id));
    let p = userRequests.get(id);
    if (!p) {
      p = request('GET', `/users/${id}`)
        .then((u) => {
          userRequests.delete(id);
          store.cacheUser(u);
          return u;
        })
        .catch(() => {
          setTimeout(() => userRequests.delete(id), USER_RETRY_MS);
          return undefined;
        });
      userRequests.set(id, p);
    }
    return p;
  }

  async function fetchPresence(ids) {
    const unique = [...new Set(ids.filter(isId))];
    for (let i = 0; i < unique.length; i += PRESENCE_CHUNK) {
      const chunk = unique.slice(i, i + PRESENCE_CHUNK);
      try {
        const r = await request('GET', `/presence?user_ids=${chunk.join(',')}`);
        for (const p of (r && r.presence) || []) store.setPresence(p);
      } catch {
        /* presence is cosmetic */
      }
    }
  }

  /** Takes a Channel object; a DM's partner is learnt from its members. */
  function setChannel(c) {
    const ch = store.setChannel(c);
    if (ch && c.kind === 'dm' && !ch.dmUserId) loadMembers(ch);
    return ch;
  }

  async function loadChannels() {
    const r = await request('GET', '/channels');
    const seen = new Set();
    for (const c of (r && r.channels) || []) {
      setChannel(c);
      seen.add(c.id);
    }
    if (store.keepOnly(seen)) onCurrentGone();
    store.emit('channels');
    const partners = [...store.channels.values()].map((ch) => ch.dmUserId).filter(Boolean);
    if (partners.length) fetchPresence(partners);
  }

  let refreshTimer = null;
  /** Reloads the channel list soon (several triggers in a row make one request). */
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => loadChannels().catch(() => {}), 250);
  }

  function loadMembers(ch) {
    if (ch.membersLoading) return ch.membersLoading;
    ch.membersLoading = request('GET', `/channels/${ch.id}/members`)
      .then((r) => {
        const partner = store.setMembers(ch, (r && r.members) || []);
        if (partner && !store.presence.has(partner)) fetchPresence([partner]);
        store.emit('channels');
        if (store.isCurrent(ch)) {
          store.emit('header');
          store.emit('members', { channelId: ch.id });
          fetchPresence(ch.members.slice(0, 200));
        }
      })
      .catch(() => {})
      .finally(() => {
        ch.membersLoading = null;
      });
    return ch.membersLoading;
  }

  async function refreshChannel(ch) {
    try {
      const c = await request('GET', `/channels/${ch.id}`);
      if (c) ch.channel = c;
    } catch {
      /* ignore */
    }
    if (ch.members || store.isCurrent(ch)) await loadMembers(ch);
    store.emit('header');
  }

  /** Creates a group; its Channel. */
  const createGroup = (name) => request('POST', '/channels', { name });

  /** Joins a group by name (case-insensitive); its Channel. */
  async function joinGroup(name) {
    const found = await request('GET', `/channels/lookup?name=${encodeURIComponent(name)}`);
    const known = store.channels.get(found.id);
    const channel = known && known.channel ? known.channel : await request('POST', `/channels/${found.id}/join`);
    return channel && channel.id ? channel : found;
  }

  /** The DM with a user (by username, with or without @); its Channel. */
  async function openDm(username) {
    const user = await request('GET', `/users?username=${encodeURIComponent(username)}`);
    store.cacheUser(user);
    const channel = await request('POST', '/dms', { user_id: user.id });
    store.getChan(channel.id).dmUserId = user.id;
    fetchPresence([user.id]);
    return channel;
  }

  // Names shown before they are known are fetched.
  store.on('user-needed', ({ id }) => {
    ensureUser(id);
  });
  // A message for a channel the list lacks (joined elsewhere): reload the list.
  store.on('channel-unknown', scheduleRefresh);

  return {
    fetchPresence,
    setChannel,
    loadChannels,
    scheduleRefresh,
    loadMembers,
    refreshChannel,
    createGroup,
    joinGroup,
    openDm,
  };
}
