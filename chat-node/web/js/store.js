// The client's state and the events views subscribe to. No DOM and no network: the
// controllers (history, outbox, directory, live) do the I/O and apply what they learn
// here; views read the state and re-render on events. Runs as is under `node --test`.
//
// Events (store.on(type, fn)), with their detail:
//   limits                      the node's limits arrived
//   user {id}                   a user's names changed (or arrived)
//   presence {user_id, ...}     a user's presence changed
//   channels                    the conversation list changed (names, unread counts, membership)
//   header                      the open conversation's title or subtitle may have changed
//   members {channelId}         a member list arrived
//   conversation {channelId?, now?, toBottom?, prepend?, fill?}
//                               the open conversation's messages changed: re-render it (at
//                               once with `now`, else batched); `fill`: load older pages
//                               until the list can scroll
//   history {channelId}         a channel's history status (loading, error, beginning) changed
//   typing {channelId}          who is typing changed
//   reply                       the message being replied to changed
//   outbox                      an unsent message was added, changed state or left
//   new-below                   a message arrived below the visible part of the list
//   resync {channelId}          a channel's messages were dropped (the server lost its counter)
// Requests to the controllers:
//   user-needed {id}            a user is shown whose names are unknown: fetch them
//   channel-unknown {channelId} a message came for a channel the list lacks: reload the list
//   gap {channelId}             a live message skipped seq numbers: fetch the missing ones

import { cmpId, isId, maxId } from './util.js';

/** The protocol's defaults, used until GET /v1/limits answers (or when a node predates it). */
export const DEFAULT_LIMITS = Object.freeze({
  text_max_chars: 4000,
  frame_max_bytes: 65536,
  attachments_max: 10,
  upload_max_bytes: Object.freeze({ media: 16 * 1024 * 1024, document: 100 * 1024 * 1024 }),
  group_name_max_chars: 64,
  history_page_default: 50,
  history_page_max: 100,
  send_rate_per_s: 20,
  send_burst: 40,
  typing_min_interval_ms: 1000,
});

const positive = (v) => typeof v === 'number' && Number.isFinite(v) && v > 0;

/** A channel's state: what is known of it, its loaded messages and its live extras. */
function newChannel(id) {
  return {
    id,
    channel: null, // the Channel object, null until the list or an event brings it
    dmUserId: null, // the other member of a DM
    msgs: new Map(), // message id -> Message
    sorted: null, // msgs by id, computed on demand
    loaded: false, // the newest page arrived
    loading: false,
    loadError: null,
    hasMore: true, // older messages exist beyond oldestId
    oldestId: null,
    maxSeq: 0, // highest seq loaded
    serverSeq: 0, // highest seq the server told of (ready's cursors, messages)
    filling: false, // a gap fetch is running
    refill: false, // another one was asked for meanwhile
    unread: 0,
    typing: new Map(), // user id -> expiry (ms since the epoch)
    reads: new Map(), // user id -> newest message id they read
    members: null, // [user id], once loaded
    membersLoading: null, // the running request
    lastReadSent: null, // newest message id our read marker is at
    lastTypingSent: 0, // ms
    draft: { text: '', staged: [] }, // the composer's text and files, per channel
  };
}

/** The messages of a channel, ordered by id. */
export function sortedMessages(ch) {
  if (!ch.sorted) ch.sorted = [...ch.msgs.values()].sort((a, b) => cmpId(a.id, b.id));
  return ch.sorted;
}

/** The index of the first loaded message followed by a seq gap, or -1. */
function firstHole(list) {
  for (let i = 0; i + 1 < list.length; i++) {
    if (Number(list[i + 1].seq) !== Number(list[i].seq) + 1) return i;
  }
  return -1;
}

/** Whether the loaded messages skip a seq number. */
export const hasHole = (ch) => firstHole(sortedMessages(ch)) >= 0;

/**
 * The id to fetch `after` to fill a channel: the message before its first seq hole, else
 * its newest; null when nothing is loaded.
 */
export function gapAfter(ch) {
  const list = sortedMessages(ch);
  if (!list.length) return null;
  const i = firstHole(list);
  return i >= 0 ? list[i].id : list[list.length - 1].id;
}

/** Whether a loaded channel misses messages: a hole, or the server knows a higher seq. */
export const needsCatchUp = (ch) => ch.loaded && (ch.serverSeq > ch.maxSeq || hasHole(ch));

export class Store {
  /** isVisible(): whether the user can see the page (document.visibilityState). */
  constructor({ isVisible = () => true } = {}) {
    this.isVisible = isVisible;
    this.listeners = new Map();
    this.limits = DEFAULT_LIMITS;
    this.me = null;
    this.users = new Map(); // id -> User
    this.presence = new Map(); // user id -> Presence
    this.channels = new Map(); // id -> channel state (newChannel)
    this.channelsLoaded = false;
    this.currentId = null;
    // Highest message id received while connected, for resume_after. Only messages that came
    // over the socket (or over REST while the socket was up all along) move it, so a resume
    // never skips a message that was sent while we were away.
    this.lastSeenId = null;
    this.outbox = new Map(); // client_msg_id -> pending message (see outbox.js)
    this.stickBottom = true; // the list is scrolled to its end
    this.replyTo = null; // {id, author_id, text}
    this.membersOpen = false;
    this.pendingSelect = null; // a channel to open once channel_joined brings it
  }

  // ------------------------------------------------------------ events

  /** Calls fn(detail) on every `type` event; returns the unsubscribe function. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.listeners.get(type) || []) fn(detail);
  }

  // ------------------------------------------------------------ limits and users

  /** Takes the node's limits; unknown or malformed fields keep their defaults. */
  setLimits(l) {
    if (!l || typeof l !== 'object') return;
    const next = { ...DEFAULT_LIMITS };
    for (const k of Object.keys(DEFAULT_LIMITS)) if (positive(l[k])) next[k] = l[k];
    const up = l.upload_max_bytes;
    if (up && positive(up.media) && positive(up.document)) next.upload_max_bytes = { media: up.media, document: up.document };
    this.limits = Object.freeze(next);
    this.emit('limits');
  }

  isMe(userId) {
    return !!this.me && userId === this.me.id;
  }

  setMe(u) {
    this.me = u;
    this.cacheUser(u);
  }

  cacheUser(u) {
    if (!u || !isId(u.id)) return;
    this.users.set(u.id, u);
    this.emit('user', { id: u.id });
  }

  /** Asks for a user's names unless they are known. */
  wantUser(id) {
    if (isId(id) && !this.users.has(id)) this.emit('user-needed', { id });
  }

  /** Display name (or username), or '…' while it is being fetched. */
  displayName(id) {
    const u = this.users.get(id);
    if (u) return u.display_name || u.username;
    this.wantUser(id);
    return '…';
  }

  setPresence(p) {
    if (!p || !isId(p.user_id)) return;
    this.presence.set(p.user_id, p);
    this.emit('presence', p);
  }

  // ------------------------------------------------------------ channels

  getChan(id) {
    let ch = this.channels.get(id);
    if (!ch) {
      ch = newChannel(id);
      this.channels.set(id, ch);
    }
    return ch;
  }

  /** The open channel's state, or null. */
  current() {
    return this.currentId ? this.channels.get(this.currentId) || null : null;
  }

  isCurrent(ch) {
    return !!ch && ch.id === this.currentId;
  }

  /** Takes a Channel object; returns its state (null for a malformed one). */
  setChannel(c) {
    if (!c || !isId(c.id)) return null;
    const ch = this.getChan(c.id);
    ch.channel = c;
    return ch;
  }

  /** Forgets the listed channels missing from `ids`; true when the open one was among them. */
  keepOnly(ids) {
    let lostCurrent = false;
    for (const [id, ch] of this.channels) {
      if (ch.channel && !ids.has(id)) {
        this.channels.delete(id);
        if (this.currentId === id) lostCurrent = true;
      }
    }
    this.channelsLoaded = true;
    return lostCurrent;
  }

  /** The name a channel is shown by: the group's name, or the DM partner's. */
  channelName(ch) {
    if (!ch.channel) return '…';
    if (ch.channel.kind === 'dm') return ch.dmUserId ? this.displayName(ch.dmUserId) : 'Direct message';
    return ch.channel.name || 'unnamed';
  }

  /** Takes a member list; returns the DM partner when it is newly known. */
  setMembers(ch, users) {
    for (const u of users) {
      if (!this.users.has(u.id)) this.cacheUser(u);
      else this.users.set(u.id, u);
    }
    ch.members = users.map((u) => u.id);
    if (!ch.channel || ch.channel.kind !== 'dm') return null;
    const other = ch.members.find((id) => this.me && id !== this.me.id);
    if (!other || ch.dmUserId === other) return null;
    ch.dmUserId = other;
    return other;
  }

  /** Applies ready's cursors ({id, last_seq}); tells whether the channel list looks stale. */
  applyCursors(cursors) {
    let unknown = false;
    for (const c of cursors) {
      if (!isId(c.id)) continue;
      const ch = this.getChan(c.id);
      if (!ch.channel) unknown = true;
      if (Number(c.last_seq) > ch.serverSeq) ch.serverSeq = Number(c.last_seq);
    }
    const known = [...this.channels.values()].filter((ch) => ch.channel).length;
    return this.channelsLoaded && (unknown || known !== cursors.length);
  }

  /** Opens a channel (or none): its unread count is cleared, the reply is dropped. */
  select(id) {
    this.currentId = id && this.channels.has(id) ? id : null;
    this.replyTo = null;
    this.stickBottom = true;
    const ch = this.current();
    if (ch) ch.unread = 0;
    return ch;
  }

  setReplyTo(r) {
    this.replyTo = r;
    this.emit('reply');
  }

  /** Sum of the unread counts of the listed channels. */
  totalUnread() {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.channel ? ch.unread : 0;
    return n;
  }

  // ------------------------------------------------------------ messages

  /**
   * Adds a message (deduplicated by id); true when it was new. `live`: it came as an event
   * (or a send's answer): a seq gap is reported, typing ends, unread counts grow.
   * `advance`: it moves lastSeenId (defaults to `live`; history pages move it only when the
   * socket stayed up while they were fetched).
   */
  mergeMessage(m, live = false, advance = live) {
    if (!m || !isId(m.id) || !isId(m.channel_id)) return false;
    const ch = this.getChan(m.channel_id);
    if (!ch.channel) this.emit('channel-unknown', { channelId: ch.id });
    const isNew = !ch.msgs.has(m.id);
    const seq = Number(m.seq);
    if (live && isNew && ch.loaded && ch.maxSeq > 0 && seq > ch.maxSeq + 1) {
      // A hole in the channel's sequence: the missing messages are to be fetched.
      this.emit('gap', { channelId: ch.id });
    }
    ch.msgs.set(m.id, m);
    ch.sorted = null;
    if (seq > ch.maxSeq) ch.maxSeq = seq;
    if (seq > ch.serverSeq) ch.serverSeq = seq;
    if (advance) this.lastSeenId = maxId(this.lastSeenId, m.id);
    this.wantUser(m.author_id);
    const mine = this.isMe(m.author_id);
    if (m.client_msg_id && mine && this.outbox.has(m.client_msg_id)) this.outbox.delete(m.client_msg_id);
    if (live && isNew) {
      if (ch.typing.delete(m.author_id)) this.emit('typing', { channelId: ch.id });
      const viewing = this.isCurrent(ch) && this.isVisible() && this.stickBottom;
      if (!mine && !viewing) {
        ch.unread += 1;
        this.emit('channels');
      }
      if (!mine && this.isCurrent(ch) && !this.stickBottom) this.emit('new-below');
    }
    return isNew;
  }

  /**
   * Merges a history page ({messages, has_more}) of channel `ch`; `advance` as in
   * mergeMessage. Returns the oldest id of the page in `ch`, its size and has_more.
   */
  mergePage(ch, page, advance) {
    const list = (page && page.messages) || [];
    let oldest = null;
    for (const m of list) {
      this.mergeMessage(m, false, advance);
      if (m.channel_id === ch.id) oldest = oldest == null || cmpId(m.id, oldest) < 0 ? m.id : oldest;
    }
    return { oldest, count: list.length, hasMore: !!(page && page.has_more) };
  }

  /** Drops a channel's messages (the server lost its counter); its history loads again. */
  resync(ch) {
    ch.msgs.clear();
    ch.sorted = null;
    ch.loaded = false;
    ch.hasMore = true;
    ch.oldestId = null;
    ch.maxSeq = 0;
    this.emit('resync', { channelId: ch.id });
  }

  // ------------------------------------------------------------ typing and read markers

  /** Someone else is typing in a channel until `until` (ms). */
  setTyping(channelId, userId, until) {
    if (this.isMe(userId)) return;
    this.getChan(channelId).typing.set(userId, until);
    this.wantUser(userId);
    this.emit('typing', { channelId });
  }

  /** Who is typing in `ch` at `now` (expired entries are dropped). */
  typingUsers(ch, now) {
    const ids = [];
    for (const [id, until] of ch.typing) {
      if (until <= now) ch.typing.delete(id);
      else ids.push(id);
    }
    return ids;
  }

  /** A `read` event: another member's marker, or ours from another device. */
  applyRead({ channel_id: channelId, user_id: userId, message_id: messageId }) {
    if (!isId(channelId) || !isId(userId) || !isId(messageId)) return;
    const ch = this.getChan(channelId);
    if (this.isMe(userId)) {
      ch.lastReadSent = maxId(ch.lastReadSent, messageId);
      const newest = sortedMessages(ch).at(-1);
      if (!newest || cmpId(messageId, newest.id) >= 0) {
        ch.unread = 0;
        this.emit('channels');
      }
      return;
    }
    ch.reads.set(userId, maxId(ch.reads.get(userId), messageId));
    this.wantUser(userId);
    if (this.isCurrent(ch)) this.emit('conversation', { channelId: ch.id });
  }

  // ------------------------------------------------------------ outbox

  /** Queues an unsent message (see outbox.js for its fields and states). */
  addPending(p) {
    this.outbox.set(p.cmid, p);
    this.emit('outbox', p);
  }

  /** Moves an unsent message to `status` (uploading, queued, sending, sent, failed). */
  setPendingStatus(p, status, error = p.error) {
    p.status = status;
    p.error = error;
    this.emit('outbox', p);
  }

  removePending(cmid) {
    this.outbox.delete(cmid);
    this.emit('outbox', null);
  }

  /** A channel's unsent messages, oldest first. */
  pendingIn(channelId) {
    const list = [...this.outbox.values()].filter((p) => p.channel_id === channelId);
    list.sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1));
    return list;
  }

  /** The socket dropped: what was in flight waits for the next connection. */
  requeueSending() {
    for (const p of this.outbox.values()) if (p.status === 'sending') p.status = 'queued';
    this.emit('outbox', null);
  }
}
