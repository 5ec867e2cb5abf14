// Parley web client: plain ES2020 module, no dependencies, same-origin API only.
// It speaks the client protocol (REST under /v1, WebSocket at /v1/ws). Every ID is a decimal
// string and is compared as a BigInt. User text only ever reaches the DOM as text nodes.

const TOKEN_KEY = 'parley.token';
const CHANNEL_KEY = 'parley.channel';
const FLASH_KEY = 'parley.flash';
const PAGE_SIZE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const MAX_TEXT = 4000;
const MAX_ATTACHMENTS = 10;
const SEND_TIMEOUT_MS = 20000;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const GROUP_GAP_MS = 5 * 60 * 1000;
// A token is refreshed at this share of its lifetime (from `iat` to `exp`).
const REFRESH_AT = 0.8;
// setTimeout's longest delay (about 24.8 days); longer waits are planned again.
const MAX_TIMER_MS = 2 ** 31 - 1;

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

const els = {
  authScreen: $('auth-screen'), authForm: $('auth-form'), authUsername: $('auth-username'),
  authPassword: $('auth-password'), authDisplayName: $('auth-display-name'),
  authDisplayNameField: $('auth-display-name-field'), authError: $('auth-error'),
  authSubmit: $('auth-submit'), authTabs: document.querySelectorAll('.tab'),
  app: $('app-screen'), conn: $('conn-status'), connText: $('conn-text'),
  newGroupBtn: $('new-group-btn'), joinGroupBtn: $('join-group-btn'), newDmBtn: $('new-dm-btn'),
  sideForm: $('side-form'), sideFormLabel: $('side-form-label'), sideFormInput: $('side-form-input'),
  sideFormError: $('side-form-error'), sideFormSubmit: $('side-form-submit'), sideFormCancel: $('side-form-cancel'),
  groupList: $('group-list'), dmList: $('dm-list'), groupEmpty: $('group-empty'), dmEmpty: $('dm-empty'),
  meAvatar: $('me-avatar'), meName: $('me-name'), meUsername: $('me-username'), logout: $('logout-btn'),
  chat: $('chat'), menuBtn: $('menu-btn'), title: $('chat-title'), subtitle: $('chat-subtitle'),
  membersBtn: $('members-btn'), welcome: $('welcome'), messages: $('messages'),
  historyStatus: $('history-status'), items: $('message-items'), newBelow: $('new-below'),
  newBelowBtn: $('new-below-btn'), composerWrap: $('composer-wrap'), typing: $('typing-indicator'),
  replyBar: $('reply-bar'), replyText: $('reply-text'), replyCancel: $('reply-cancel'),
  staged: $('staged'), composerError: $('composer-error'), composer: $('composer'),
  fileInput: $('file-input'), input: $('message-input'), sendBtn: $('send-btn'),
  membersPanel: $('members-panel'), memberList: $('member-list'),
};

/** Creates an element. props: class, text, data (dataset), attrs, on (listeners), and any property. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'data') Object.assign(el.dataset, v);
      else if (k === 'attrs') for (const [a, av] of Object.entries(v)) { if (av != null) el.setAttribute(a, av); }
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else el[k] = v;
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const isId = (v) => typeof v === 'string' && /^\d{1,20}$/.test(v);
function cmpId(a, b) {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
function maxId(a, b) {
  if (a == null) return b;
  if (b == null) return a;
  return BigInt(a) >= BigInt(b) ? a : b;
}

/** A random string; crypto.randomUUID needs a secure context, getRandomValues does not. */
function randomString() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Only http(s) URLs (relative ones resolve against the page) reach href/src. */
function safeUrl(u) {
  if (typeof u !== 'string' || !u) return null;
  try {
    const url = new URL(u, location.href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

const scalarLength = (s) => [...s].length;

function fmtTime(d) {
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
function dayKey(d) {
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}
function fmtDay(d) {
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(d) === dayKey(now)) return 'Today';
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  const opts = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}
function fmtAgo(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}
function fmtSize(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const first = [...(parts[0] || '?')][0] || '?';
  const second = parts.length > 1 ? [...parts[parts.length - 1]][0] : '';
  return (first + (second || '')).toUpperCase();
}
const AVATAR_COLORS = ['#4f5bd5', '#d5534f', '#2f9e6e', '#c27c0e', '#8e4fd5', '#1f8fb8', '#c2417f', '#5f7d1a', '#b35c2e', '#3c6fd1'];
function colorFor(id) {
  // FNV-1a, so neighbouring IDs get unrelated colors.
  let hash = 0x811c9dc5;
  for (const c of String(id)) hash = Math.imul(hash ^ c.charCodeAt(0), 0x01000193) >>> 0;
  hash = (hash ^ (hash >>> 13)) >>> 0;
  return AVATAR_COLORS[hash % AVATAR_COLORS.length];
}
function joinNames(names) {
  if (names.length <= 1) return names.join('');
  if (names.length === 2) return `${names[0]} and ${names[1]}`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

// ---------------------------------------------------------------- state

const state = {
  token: null,
  me: null,
  users: new Map(), // id -> User
  userRequests: new Map(), // id -> Promise
  channels: new Map(), // id -> Chan
  currentId: null,
  // Highest message id received while connected, for resume_after. Only messages that came
  // over the socket (or over REST while the socket was up all along) move it, so a resume
  // never skips a message that was sent while we were away.
  lastSeenId: null,
  presence: new Map(), // user id -> Presence
  outbox: new Map(), // client_msg_id -> pending message
  stickBottom: true,
  replyTo: null,
  authMode: 'login',
  sideMode: null,
  membersOpen: false,
  pendingSelect: null,
  channelsLoaded: false,
};

const conn = {
  ws: null,
  ready: false,
  attempt: 0,
  reconnectTimer: null,
  reconnectAt: 0,
  countdownTimer: null,
  pingTimer: null,
  helloTimer: null,
  heartbeatMs: 15000,
  lastRecv: 0,
  refSeq: 0,
  epoch: 0, // bumped at every ready and every drop
  // after_ms of a `reconnect` event (the node is draining; close 4010 follows).
  drainAfterMs: null,
  pending: new Map(), // ref -> {resolve, reject, timer}
  cursors: null, // channels from the last ready
};

function getChan(id) {
  let ch = state.channels.get(id);
  if (!ch) {
    ch = {
      id,
      channel: null,
      dmUserId: null,
      msgs: new Map(),
      sorted: null,
      loaded: false,
      loading: false,
      hasMore: true,
      oldestId: null,
      maxSeq: 0,
      serverSeq: 0,
      filling: false,
      refill: false,
      unread: 0,
      typing: new Map(), // user id -> expiry (ms)
      reads: new Map(), // user id -> message id
      members: null, // [user id]
      lastReadSent: null,
      lastTypingSent: 0,
      draft: { text: '', staged: [] },
      els: new Map(), // key -> element
    };
    state.channels.set(id, ch);
  }
  return ch;
}

const cur = () => (state.currentId ? state.channels.get(state.currentId) || null : null);

function sortedMessages(ch) {
  if (!ch.sorted) ch.sorted = [...ch.msgs.values()].sort((a, b) => cmpId(a.id, b.id));
  return ch.sorted;
}

// ---------------------------------------------------------------- REST

class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError('unavailable', 'Cannot reach the server. Check your connection.', 0);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = data && data.error;
    const e = new ApiError(
      (err && err.code) || 'internal',
      (err && err.message) || `The server answered ${res.status} ${res.statusText}`.trim(),
      res.status,
    );
    if (res.status === 401 && state.token && !path.startsWith('/auth/')) onUnauthorized();
    throw e;
  }
  return data;
}

// ---------------------------------------------------------------- token refresh

const refresh = { timer: null, inFlight: null };

/** The token's claims (`iat`, `exp`: seconds), or null when they cannot be read. */
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** Keeps `token` (here and for the other tabs) and plans its refresh. */
function setToken(token) {
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  scheduleRefresh();
}

/** Plans a refresh at REFRESH_AT of the token's lifetime (at once when that has passed). */
function scheduleRefresh(delayMs) {
  clearTimeout(refresh.timer);
  refresh.timer = null;
  if (!state.token) return;
  let delay = delayMs;
  if (typeof delay !== 'number') {
    const c = tokenClaims(state.token);
    if (!c || !Number.isFinite(c.exp)) return;
    const now = Date.now() / 1000;
    const iat = Number.isFinite(c.iat) ? c.iat : now;
    delay = Math.max(0, (iat + (c.exp - iat) * REFRESH_AT - now) * 1000);
  }
  if (delay > MAX_TIMER_MS) {
    refresh.timer = setTimeout(() => scheduleRefresh(), MAX_TIMER_MS);
    return;
  }
  refresh.timer = setTimeout(() => {
    refreshToken().catch(() => {});
  }, delay);
}

/**
 * Trades the token for a fresh one (POST /v1/auth/refresh). Resolves true when it did; a
 * refused token (401) signs out onto the sign-in form; other failures (offline, busy) are
 * tried again while the token lasts, and reject.
 */
function refreshToken() {
  if (refresh.inFlight) return refresh.inFlight;
  refresh.inFlight = (async () => {
    try {
      const r = await api('POST', '/auth/refresh');
      if (!r || !r.token) throw new ApiError('internal', 'The server answered without a token.', 0);
      setToken(r.token);
      if (r.user && state.me && r.user.id === state.me.id) {
        state.me = r.user;
        cacheUser(r.user);
      }
      return true;
    } catch (e) {
      if (e.status === 401) {
        onUnauthorized();
        return false;
      }
      const c = tokenClaims(state.token || '');
      const left = c && Number.isFinite(c.exp) ? c.exp * 1000 - Date.now() : 0;
      if (left > 0) scheduleRefresh(Math.min(30000, left / 2) * (0.8 + Math.random() * 0.4));
      throw e;
    } finally {
      refresh.inFlight = null;
    }
  })();
  return refresh.inFlight;
}

function onUnauthorized() {
  if (!state.token) return;
  state.token = null;
  localStorage.removeItem(TOKEN_KEY);
  sessionStorage.setItem(FLASH_KEY, 'Your session has ended. Please sign in again.');
  location.reload();
}

// ---------------------------------------------------------------- users and presence

function cacheUser(u) {
  if (!u || !isId(u.id)) return;
  state.users.set(u.id, u);
  state.userRequests.delete(u.id);
  onUserChanged(u.id);
}

function displayName(id) {
  const u = state.users.get(id);
  if (u) return u.display_name || u.username;
  ensureUser(id);
  return '…';
}

function ensureUser(id) {
  if (!isId(id) || state.users.has(id)) return Promise.resolve(state.users.get(id));
  let p = state.userRequests.get(id);
  if (!p) {
    p = api('GET', `/users/${id}`)
      .then((u) => {
        cacheUser(u);
        return u;
      })
      .catch(() => {
        setTimeout(() => state.userRequests.delete(id), 10000);
        return undefined;
      });
    state.userRequests.set(id, p);
  }
  return p;
}

function nameSpan(userId, cls = 'author') {
  return h('span', { class: cls, text: displayName(userId), data: { nameOf: userId } });
}

function avatar(userId, cls = 'avatar') {
  const el = h('span', { class: cls, attrs: { 'aria-hidden': 'true' }, data: { avatarOf: userId } });
  el.textContent = initials(state.users.has(userId) ? displayName(userId) : '?');
  el.style.background = colorFor(userId);
  return el;
}

let userRenderQueued = false;
function onUserChanged(id) {
  if (!isId(id)) return;
  const name = displayName(id);
  for (const el of document.querySelectorAll(`[data-name-of="${id}"]`)) el.textContent = name;
  for (const el of document.querySelectorAll(`[data-avatar-of="${id}"]`)) el.textContent = initials(name);
  if (!userRenderQueued) {
    userRenderQueued = true;
    setTimeout(() => {
      userRenderQueued = false;
      renderChannelList();
      renderHeader();
      renderTyping();
      renderReplyBar();
      invalidate();
    }, 0);
  }
}

function presenceDot(userId) {
  const p = state.presence.get(userId);
  const status = (p && p.status) || 'offline';
  return h('span', {
    class: 'presence',
    data: { status, presenceOf: userId, testid: 'presence-dot' },
    title: status[0].toUpperCase() + status.slice(1),
  });
}

function setPresence(p) {
  if (!p || !isId(p.user_id)) return;
  state.presence.set(p.user_id, p);
  for (const el of document.querySelectorAll(`[data-presence-of="${p.user_id}"]`)) {
    el.dataset.status = p.status || 'offline';
    el.title = (p.status || 'offline').replace(/^./, (c) => c.toUpperCase());
  }
  renderHeader();
}

async function fetchPresence(ids) {
  const unique = [...new Set(ids.filter(isId))];
  for (let i = 0; i < unique.length; i += 100) {
    const chunk = unique.slice(i, i + 100);
    try {
      const r = await api('GET', `/presence?user_ids=${chunk.join(',')}`);
      for (const p of (r && r.presence) || []) setPresence(p);
    } catch {
      /* presence is cosmetic */
    }
  }
}

// ---------------------------------------------------------------- channels

function channelName(ch) {
  if (!ch.channel) return '…';
  if (ch.channel.kind === 'dm') return ch.dmUserId ? displayName(ch.dmUserId) : 'Direct message';
  return ch.channel.name || 'unnamed';
}

function setChannel(c) {
  if (!c || !isId(c.id)) return null;
  const ch = getChan(c.id);
  ch.channel = c;
  if (c.kind === 'dm' && !ch.dmUserId) loadMembers(ch);
  return ch;
}

async function loadChannels() {
  const r = await api('GET', '/channels');
  const seen = new Set();
  for (const c of (r && r.channels) || []) {
    setChannel(c);
    seen.add(c.id);
  }
  for (const [id, ch] of state.channels) {
    if (ch.channel && !seen.has(id)) {
      state.channels.delete(id);
      if (state.currentId === id) selectChannel(null);
    }
  }
  state.channelsLoaded = true;
  renderChannelList();
  const partners = [...state.channels.values()].map((ch) => ch.dmUserId).filter(Boolean);
  if (partners.length) fetchPresence(partners);
}

let channelRefreshTimer = null;
function scheduleChannelRefresh() {
  clearTimeout(channelRefreshTimer);
  channelRefreshTimer = setTimeout(() => loadChannels().catch(() => {}), 250);
}

async function loadMembers(ch) {
  if (ch.membersLoading) return ch.membersLoading;
  ch.membersLoading = api('GET', `/channels/${ch.id}/members`)
    .then((r) => {
      const members = (r && r.members) || [];
      for (const u of members) if (!state.users.has(u.id)) cacheUser(u); else state.users.set(u.id, u);
      ch.members = members.map((u) => u.id);
      if (ch.channel && ch.channel.kind === 'dm') {
        const other = ch.members.find((id) => state.me && id !== state.me.id);
        if (other) {
          const isNew = ch.dmUserId !== other;
          ch.dmUserId = other;
          if (isNew && !state.presence.has(other)) fetchPresence([other]);
        }
      }
      renderChannelList();
      if (ch.id === state.currentId) {
        renderHeader();
        renderMembers();
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
    const c = await api('GET', `/channels/${ch.id}`);
    if (c) ch.channel = c;
  } catch {
    /* ignore */
  }
  if (ch.members || ch.id === state.currentId) await loadMembers(ch);
  renderHeader();
}

// ---------------------------------------------------------------- messages

/** Adds a message (deduped by id). Returns true if it was new. */
function mergeMessage(m, live, advance = live) {
  if (!m || !isId(m.id) || !isId(m.channel_id)) return false;
  const ch = getChan(m.channel_id);
  if (!ch.channel) scheduleChannelRefresh();
  const isNew = !ch.msgs.has(m.id);
  if (live && isNew && ch.loaded && ch.maxSeq > 0 && Number(m.seq) > ch.maxSeq + 1) {
    // A hole in the channel's sequence: fetch what is missing.
    setTimeout(() => fillGap(ch), 0);
  }
  ch.msgs.set(m.id, m);
  ch.sorted = null;
  if (Number(m.seq) > ch.maxSeq) ch.maxSeq = Number(m.seq);
  if (Number(m.seq) > ch.serverSeq) ch.serverSeq = Number(m.seq);
  if (advance) state.lastSeenId = maxId(state.lastSeenId, m.id);
  ensureUser(m.author_id);
  if (m.client_msg_id && state.outbox.has(m.client_msg_id) && state.me && m.author_id === state.me.id) {
    state.outbox.delete(m.client_msg_id);
  }
  if (live && isNew) {
    if (ch.typing.delete(m.author_id)) renderTyping();
    const mine = state.me && m.author_id === state.me.id;
    const viewing = ch.id === state.currentId && document.visibilityState === 'visible' && state.stickBottom;
    if (!mine && !viewing) {
      ch.unread += 1;
      renderChannelList();
    }
    if (!mine && ch.id === state.currentId && !state.stickBottom) els.newBelow.hidden = false;
  }
  return isNew;
}

/** The socket's epoch if it is up now, to tell later whether it stayed up. */
const liveEpoch = () => (conn.ready ? conn.epoch : -1);

function pageMergeResult(ch, r, epoch) {
  const list = (r && r.messages) || [];
  const advance = epoch >= 0 && conn.ready && conn.epoch === epoch;
  let oldest = null;
  for (const m of list) {
    mergeMessage(m, false, advance);
    if (m.channel_id === ch.id) oldest = oldest == null ? m.id : cmpId(m.id, oldest) < 0 ? m.id : oldest;
  }
  return { oldest, count: list.length, hasMore: !!(r && r.has_more) };
}

async function loadInitial(ch) {
  if (ch.loading) return;
  ch.loading = true;
  ch.loadError = null;
  renderHistoryStatus();
  try {
    const epoch = liveEpoch();
    const r = await api('GET', `/channels/${ch.id}/messages?limit=${PAGE_SIZE}`);
    const { oldest, hasMore } = pageMergeResult(ch, r, epoch);
    ch.oldestId = oldest;
    ch.hasMore = hasMore && oldest != null;
    ch.loaded = true;
  } catch (e) {
    ch.loadError = e.message;
  } finally {
    ch.loading = false;
  }
  if (ch.id === state.currentId) {
    render({ toBottom: true });
    fillViewport(ch);
  }
  checkCursor(ch);
}

async function loadOlder(ch) {
  if (!ch.loaded || ch.loading || !ch.hasMore || !ch.oldestId) return;
  ch.loading = true;
  renderHistoryStatus();
  try {
    const epoch = liveEpoch();
    const r = await api('GET', `/channels/${ch.id}/messages?before=${ch.oldestId}&limit=${PAGE_SIZE}`);
    const { oldest, hasMore } = pageMergeResult(ch, r, epoch);
    if (oldest) ch.oldestId = oldest;
    ch.hasMore = hasMore && oldest != null;
  } catch (e) {
    ch.loadError = e.message;
  } finally {
    ch.loading = false;
  }
  if (ch.id === state.currentId) {
    render({ prepend: true });
    fillViewport(ch);
  }
}

/** Loads older pages until the list can scroll (so "scroll to top" can load more). */
function fillViewport(ch) {
  if (ch.id !== state.currentId) return;
  const box = els.messages;
  if (ch.hasMore && !ch.loading && box.scrollHeight <= box.clientHeight + 40) loadOlder(ch);
}

/** Fetches messages after the first hole in the loaded sequence (or after the newest). */
async function fillGap(ch) {
  if (!ch.loaded) return;
  if (ch.filling) {
    ch.refill = true;
    return;
  }
  ch.filling = true;
  try {
    for (let round = 0; round < 20; round++) {
      const list = sortedMessages(ch);
      if (!list.length) break;
      let after = list[list.length - 1].id;
      for (let i = 0; i + 1 < list.length; i++) {
        if (Number(list[i + 1].seq) !== Number(list[i].seq) + 1) {
          after = list[i].id;
          break;
        }
      }
      const epoch = liveEpoch();
      const r = await api('GET', `/channels/${ch.id}/messages?after=${after}&limit=100`);
      const { count, hasMore } = pageMergeResult(ch, r, epoch);
      if (ch.id === state.currentId) render({});
      if (!hasMore || count === 0) break;
    }
  } catch {
    /* try again on the next trigger */
  } finally {
    ch.filling = false;
  }
  if (ch.refill) {
    ch.refill = false;
    fillGap(ch);
  }
}

function hasHole(ch) {
  const list = sortedMessages(ch);
  for (let i = 0; i + 1 < list.length; i++) {
    if (Number(list[i + 1].seq) !== Number(list[i].seq) + 1) return true;
  }
  return false;
}

function checkCursor(ch) {
  if (ch.loaded && (ch.serverSeq > ch.maxSeq || hasHole(ch))) fillGap(ch);
}

function resync(ch) {
  ch.msgs.clear();
  ch.sorted = null;
  ch.els.clear();
  ch.loaded = false;
  ch.hasMore = true;
  ch.oldestId = null;
  ch.maxSeq = 0;
  if (ch.id === state.currentId) {
    els.items.replaceChildren();
    loadInitial(ch);
  }
}

// ---------------------------------------------------------------- WebSocket

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
}

function setConn(status, text) {
  els.conn.dataset.state = status;
  els.connText.textContent = text;
  els.conn.title = status === 'online' ? 'Connected' : 'Click to reconnect now';
}

function connect() {
  clearTimeout(conn.reconnectTimer);
  clearInterval(conn.countdownTimer);
  if (!state.token) return;
  if (conn.ws) return;
  setConn(conn.attempt ? 'reconnecting' : 'connecting', conn.attempt ? 'Reconnecting…' : 'Connecting…');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
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
      if (ws === conn.ws && !conn.ready) dropConnection(0);
    }, 15000);
    const d = { token: state.token };
    if (state.lastSeenId) d.resume_after = state.lastSeenId;
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
  ws.onclose = (ev) => {
    if (ws !== conn.ws) return;
    dropConnection(ev.code);
  };
}

/** Forgets the current socket (closing it if needed) and schedules a reconnect. */
function dropConnection(code) {
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
    p.reject(new ApiError('disconnected', 'Not connected', 0));
  }
  conn.pending.clear();
  for (const p of state.outbox.values()) if (p.status === 'sending') p.status = 'queued';
  invalidate();
  if (!state.token) return;
  if (code === 4001) {
    // Bad hello: if the token is the reason, the 401 below signs us out.
    api('GET', '/users/me').catch(() => {});
  }
  if (code === 4003) {
    // v1.1: the token expired. Reconnect at once with a fresh one; a token that can no
    // longer be refreshed signs out onto the sign-in form (refreshToken).
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
    setConn('offline', s > 0 ? `Disconnected · retrying in ${s}s` : 'Reconnecting…');
  };
  tick();
  conn.countdownTimer = setInterval(tick, 1000);
  conn.reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (conn.ws || !state.token) return;
  connect();
}

function wsRequest(op, d, timeoutMs = SEND_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const ws = conn.ws;
    if (!ws || !conn.ready || ws.readyState !== WebSocket.OPEN) {
      reject(new ApiError('disconnected', 'Not connected', 0));
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
      reject(new ApiError('disconnected', 'Not connected', 0));
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
      dropConnection(0);
      return;
    }
    wsRequest('ping', {}, conn.heartbeatMs * 2).catch(() => {});
  }, every);
}

function handleFrame(f) {
  const t = f.t;
  const d = f.d && typeof f.d === 'object' ? f.d : {};
  if (t === 'ready') {
    onReady(d);
    return;
  }
  if (t === 'error' && f.ref === 'h') {
    // The hello was refused: if the token is the reason, the 401 signs us out.
    api('GET', '/users/me').catch(() => {});
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
  switch (t) {
    case 'message': {
      const isNew = mergeMessage(d, true);
      if (isNew && d.channel_id === state.currentId) invalidate();
      break;
    }
    case 'typing': onTyping(d); break;
    case 'read': onRead(d); break;
    case 'channel_joined': onChannelJoined(d.channel); break;
    case 'member_joined':
    case 'member_left': onMemberChange(t, d); break;
    case 'presence': setPresence(d); break;
    case 'resync_required': if (isId(d.channel_id)) resync(getChan(d.channel_id)); break;
    case 'reconnect': {
      // v1.1: the node is draining; close 4010 follows. Wait after_ms, then resume elsewhere.
      const after = Number(d.after_ms);
      conn.drainAfterMs = Number.isFinite(after) ? Math.min(Math.max(after, 0), 60000) : 0;
      setConn('reconnecting', 'Server restarting · reconnecting…');
      break;
    }
    case 'error': console.warn('parley: server error', d); break;
    default: break;
  }
}

function onReady(d) {
  clearTimeout(conn.helloTimer);
  conn.ready = true;
  conn.epoch += 1;
  conn.attempt = 0;
  conn.heartbeatMs = Number(d.heartbeat_interval_ms) > 0 ? Number(d.heartbeat_interval_ms) : 15000;
  setConn('online', 'Connected');
  startHeartbeat();
  const cursors = Array.isArray(d.channels) ? d.channels : [];
  conn.cursors = cursors;
  let unknown = false;
  for (const c of cursors) {
    if (!isId(c.id)) continue;
    const ch = getChan(c.id);
    if (!ch.channel) unknown = true;
    if (Number(c.last_seq) > ch.serverSeq) ch.serverSeq = Number(c.last_seq);
  }
  const known = [...state.channels.values()].filter((ch) => ch.channel).length;
  if (state.channelsLoaded && (unknown || known !== cursors.length)) scheduleChannelRefresh();
  // Replayed messages come right after ready; anything still missing after that is fetched.
  setTimeout(() => {
    for (const ch of state.channels.values()) checkCursor(ch);
  }, 2500);
  for (const p of state.outbox.values()) if (p.status === 'queued') deliver(p);
  // Catch up on what may have changed while we were away.
  const open = cur();
  if (open && !open.loaded && !open.loading) loadInitial(open);
  const watched = [...state.channels.values()].map((ch) => ch.dmUserId).filter(Boolean);
  if (open && open.members) watched.push(...open.members.slice(0, 200));
  if (watched.length) fetchPresence(watched);
  invalidate();
  maybeSendRead();
}

function onTyping(d) {
  if (!isId(d.channel_id) || !isId(d.user_id)) return;
  if (state.me && d.user_id === state.me.id) return;
  const ch = getChan(d.channel_id);
  ch.typing.set(d.user_id, Date.now() + TYPING_SHOW_MS);
  ensureUser(d.user_id);
  if (ch.id === state.currentId) {
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOW_MS + 50);
  }
}

function onRead(d) {
  if (!isId(d.channel_id) || !isId(d.user_id) || !isId(d.message_id)) return;
  const ch = getChan(d.channel_id);
  if (state.me && d.user_id === state.me.id) {
    // Read on another of my devices.
    ch.lastReadSent = maxId(ch.lastReadSent, d.message_id);
    const newest = sortedMessages(ch).at(-1);
    if (!newest || cmpId(d.message_id, newest.id) >= 0) {
      ch.unread = 0;
      renderChannelList();
    }
    return;
  }
  const prev = ch.reads.get(d.user_id);
  ch.reads.set(d.user_id, maxId(prev, d.message_id));
  ensureUser(d.user_id);
  if (ch.id === state.currentId) invalidate();
}

function onChannelJoined(c) {
  if (!c || !isId(c.id)) return;
  const ch = setChannel(c);
  renderChannelList();
  if (c.kind === 'dm' && ch.dmUserId) fetchPresence([ch.dmUserId]);
  if (state.pendingSelect === c.id) {
    state.pendingSelect = null;
    selectChannel(c.id);
  }
}

function onMemberChange(t, d) {
  if (!isId(d.channel_id)) return;
  const ch = state.channels.get(d.channel_id);
  if (!ch || !ch.channel) return;
  if (isId(d.user_id)) ensureUser(d.user_id);
  if (t === 'member_left' && state.me && d.user_id === state.me.id) {
    scheduleChannelRefresh();
    return;
  }
  refreshChannel(ch);
}

// ---------------------------------------------------------------- sending

function deliver(p) {
  if (!conn.ready) {
    p.status = 'queued';
    invalidate();
    return;
  }
  p.status = 'sending';
  p.error = null;
  invalidate();
  const d = {
    channel_id: p.channel_id,
    text: p.text,
    client_msg_id: p.cmid,
  };
  if (p.attachments.length) d.attachments = p.attachments.map((a) => a.id);
  if (p.reply_to) d.reply_to = p.reply_to;
  wsRequest('send', d)
    .then((r) => {
      if (r && r.message) {
        mergeMessage(r.message, true);
        state.outbox.delete(p.cmid);
        invalidate();
        return;
      }
      if (state.outbox.has(p.cmid)) {
        // ok without a message body: the `message` event will bring it; keep showing it as sent.
        p.status = 'sent';
        invalidate();
      }
    })
    .catch((e) => {
      if (!state.outbox.has(p.cmid)) return;
      if (e.code === 'disconnected') p.status = 'queued';
      else if (e.code === 'rate_limited' && (p.rateRetries || 0) < 5) {
        // Over the send rate: try again shortly with the same client_msg_id.
        p.rateRetries = (p.rateRetries || 0) + 1;
        p.status = 'queued';
        setTimeout(() => {
          if (state.outbox.has(p.cmid) && p.status === 'queued' && conn.ready) deliver(p);
        }, 1000 * p.rateRetries);
      } else {
        p.status = 'failed';
        p.error = e.message || 'Could not send';
      }
      invalidate();
    });
}

async function sendFromComposer() {
  const ch = cur();
  if (!ch || !ch.channel) return;
  const text = els.input.value.trim();
  const staged = ch.draft.staged.slice();
  if (!text && !staged.length) return;
  if (staged.some((s) => s.status === 'failed')) {
    showComposerError('An upload failed. Remove it (×) before sending.');
    return;
  }
  if (staged.length > MAX_ATTACHMENTS) {
    showComposerError(`At most ${MAX_ATTACHMENTS} files per message.`);
    return;
  }
  const len = scalarLength(text);
  if (len > MAX_TEXT) {
    showComposerError(`Messages are limited to ${MAX_TEXT} characters (this one has ${len}).`);
    return;
  }
  showComposerError(null);
  const p = {
    cmid: randomString(),
    channel_id: ch.id,
    text,
    attachments: [],
    staged,
    reply_to: state.replyTo ? state.replyTo.id : null,
    status: staged.some((s) => s.status !== 'ready') ? 'uploading' : 'queued',
    error: null,
    createdAt: new Date().toISOString(),
  };
  state.outbox.set(p.cmid, p);
  els.input.value = '';
  autosize();
  ch.draft = { text: '', staged: [] };
  state.replyTo = null;
  renderReplyBar();
  renderStaged();
  render({ toBottom: true });
  await Promise.all(staged.map((s) => s.promise));
  const failed = staged.filter((s) => s.status !== 'ready');
  if (failed.length) {
    p.status = 'failed';
    p.error = `Upload failed: ${failed[0].error || failed[0].file.name}`;
    p.uploadFailed = true;
    invalidate();
    return;
  }
  p.attachments = staged.map((s) => s.attachment);
  if (!p.text) {
    const names = staged.map((s) => s.attachment.filename || s.file.name).join(', ');
    p.text = [...names].slice(0, MAX_TEXT).join('') || 'file';
  }
  deliver(p);
}

function showComposerError(msg) {
  els.composerError.hidden = !msg;
  els.composerError.textContent = msg || '';
}

// ---------------------------------------------------------------- uploads

async function uploadFile(file) {
  const contentType = file.type || 'application/octet-stream';
  const r = await api('POST', '/media', {
    filename: file.name || 'file',
    content_type: contentType,
    size: file.size,
  });
  if (!r || !r.attachment) throw new Error('The server did not return an attachment');
  const up = r.upload;
  if (up && up.url) {
    let res;
    try {
      res = await fetch(up.url, { method: up.method || 'PUT', headers: up.headers || {}, body: file });
    } catch {
      throw new Error('Could not reach the upload server');
    }
    if (!res.ok) {
      let msg = `upload answered ${res.status}`;
      try {
        const body = await res.json();
        if (body && body.error && body.error.message) msg = body.error.message;
      } catch {
        /* not JSON (S3 answers XML) */
      }
      throw new Error(msg);
    }
  }
  return r.attachment;
}

function addFiles(files) {
  const ch = cur();
  if (!ch || !ch.channel) return;
  for (const file of files) {
    const s = { key: randomString(), file, status: 'uploading', attachment: null, error: null };
    s.promise = uploadFile(file)
      .then((att) => {
        s.status = 'ready';
        s.attachment = att;
      })
      .catch((e) => {
        s.status = 'failed';
        s.error = e.message;
      })
      .finally(renderStaged);
    ch.draft.staged.push(s);
  }
  renderStaged();
  els.input.focus();
}

// ---------------------------------------------------------------- read markers and typing

function maybeSendRead() {
  const ch = cur();
  if (!ch || !ch.loaded || !conn.ready) return;
  if (document.visibilityState !== 'visible' || !state.stickBottom) return;
  const newest = sortedMessages(ch).at(-1);
  if (!newest) return;
  if (ch.unread) {
    ch.unread = 0;
    renderChannelList();
  }
  if (ch.lastReadSent && cmpId(ch.lastReadSent, newest.id) >= 0) return;
  const prev = ch.lastReadSent;
  ch.lastReadSent = newest.id;
  wsRequest('read', { channel_id: ch.id, message_id: newest.id }).catch(() => {
    if (ch.lastReadSent === newest.id) ch.lastReadSent = prev;
  });
}

function onComposerInput() {
  autosize();
  const ch = cur();
  if (!ch) return;
  ch.draft.text = els.input.value;
  if (!els.input.value.trim() || !conn.ready) return;
  const now = Date.now();
  if (now - ch.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  ch.lastTypingSent = now;
  wsRequest('typing', { channel_id: ch.id }).catch(() => {});
}

function autosize() {
  els.input.style.height = 'auto';
  els.input.style.height = `${Math.min(els.input.scrollHeight, 180)}px`;
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;
let renderOpts = {};
/** Batches re-renders of the open conversation. */
function invalidate(opts) {
  renderOpts = { ...renderOpts, ...(opts || {}) };
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    const o = renderOpts;
    renderOpts = {};
    render(o);
  }, 0);
}

function render(opts) {
  renderMessages(opts || {});
  renderHistoryStatus();
  updateTitle();
}

function updateTitle() {
  let unread = 0;
  for (const ch of state.channels.values()) unread += ch.channel ? ch.unread : 0;
  const ch = cur();
  const name = ch && ch.channel ? (ch.channel.kind === 'dm' ? channelName(ch) : `#${channelName(ch)}`) : '';
  document.title = `${unread ? `(${unread}) ` : ''}${name ? `${name} · ` : ''}Parley`;
}

function renderChannelList() {
  const groups = [];
  const dms = [];
  for (const ch of state.channels.values()) {
    if (!ch.channel) continue;
    (ch.channel.kind === 'dm' ? dms : groups).push(ch);
  }
  const byName = (a, b) => channelName(a).localeCompare(channelName(b), undefined, { sensitivity: 'base' });
  groups.sort(byName);
  dms.sort(byName);
  const item = (ch) => {
    const dm = ch.channel.kind === 'dm';
    const btn = h(
      'button',
      {
        type: 'button',
        class: `chan${ch.unread ? ' unread' : ''}`,
        data: { testid: 'channel-item', channelId: ch.id, kind: ch.channel.kind },
        attrs: { 'aria-current': ch.id === state.currentId ? 'true' : 'false' },
        on: { click: () => selectChannel(ch.id) },
      },
      dm
        ? ch.dmUserId
          ? presenceDot(ch.dmUserId)
          : h('span', { class: 'presence' })
        : h('span', { class: 'chan-icon', text: '#', attrs: { 'aria-hidden': 'true' } }),
      dm && ch.dmUserId
        ? h('span', { class: 'chan-name', text: channelName(ch), data: { nameOf: ch.dmUserId } })
        : h('span', { class: 'chan-name', text: channelName(ch) }),
      ch.unread
        ? h('span', { class: 'badge', text: ch.unread > 99 ? '99+' : String(ch.unread), attrs: { 'aria-label': `${ch.unread} unread` } })
        : null,
    );
    return h('li', null, btn);
  };
  els.groupList.replaceChildren(...groups.map(item));
  els.dmList.replaceChildren(...dms.map(item));
  els.groupEmpty.hidden = groups.length > 0;
  els.dmEmpty.hidden = dms.length > 0;
  updateTitle();
}

function renderHeader() {
  const ch = cur();
  if (!ch || !ch.channel) {
    els.title.replaceChildren('Welcome');
    els.subtitle.textContent = '';
    els.membersBtn.hidden = true;
    return;
  }
  els.membersBtn.hidden = false;
  if (ch.channel.kind === 'dm') {
    const other = ch.dmUserId;
    els.title.replaceChildren(...(other ? [presenceDot(other), nameSpan(other, 'chat-title-name')] : ['Direct message']));
    const p = other ? state.presence.get(other) : null;
    const u = other ? state.users.get(other) : null;
    let sub = u ? `@${u.username}` : '';
    if (p && p.status === 'online') sub += ' · online';
    else if (p && p.status === 'idle') sub += ' · idle';
    else if (p && p.last_seen) sub += ` · last seen ${fmtAgo(p.last_seen)}`;
    else if (p) sub += ' · offline';
    els.subtitle.textContent = sub;
  } else {
    els.title.replaceChildren(h('span', { class: 'chan-icon', text: '#', attrs: { 'aria-hidden': 'true' } }), channelName(ch));
    const n = ch.members ? ch.members.length : ch.channel.member_count;
    els.subtitle.textContent = n != null ? `${n} member${n === 1 ? '' : 's'}` : '';
  }
  updateTitle();
}

function renderMembers() {
  const ch = cur();
  els.membersPanel.hidden = !state.membersOpen || !ch || !ch.channel;
  els.membersBtn.setAttribute('aria-pressed', state.membersOpen ? 'true' : 'false');
  if (els.membersPanel.hidden) return;
  if (!ch.members) {
    els.memberList.replaceChildren(h('li', { class: 'nav-empty', text: 'Loading…' }));
    return;
  }
  const rank = { online: 0, idle: 1, offline: 2 };
  const ids = [...ch.members].sort((a, b) => {
    const pa = rank[(state.presence.get(a) || {}).status] ?? 2;
    const pb = rank[(state.presence.get(b) || {}).status] ?? 2;
    return pa - pb || displayName(a).localeCompare(displayName(b));
  });
  els.memberList.replaceChildren(
    ...ids.map((id) => {
      const u = state.users.get(id);
      const av = avatar(id);
      av.append(presenceDot(id));
      return h(
        'li',
        { class: 'member', data: { testid: 'member-item', userId: id } },
        av,
        h(
          'span',
          { class: 'member-names' },
          h('span', { class: 'member-name', text: displayName(id), data: { nameOf: id } }),
          h('span', { class: 'member-username', text: u ? `@${u.username}${state.me && id === state.me.id ? ' (you)' : ''}` : '' }),
        ),
      );
    }),
  );
}

function renderTyping() {
  const ch = cur();
  if (!ch) {
    els.typing.textContent = '';
    return;
  }
  const now = Date.now();
  const names = [];
  for (const [id, until] of ch.typing) {
    if (until <= now) ch.typing.delete(id);
    else names.push(displayName(id));
  }
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2 || names.length === 3) text = `${joinNames(names)} are typing…`;
  else if (names.length > 3) text = 'Several people are typing…';
  els.typing.textContent = text;
}

function renderReplyBar() {
  const r = state.replyTo;
  els.replyBar.hidden = !r;
  if (!r) return;
  els.replyText.replaceChildren('Replying to ', h('b', { text: displayName(r.author_id) }), `: ${snippet(r.text)}`);
}

function snippet(text) {
  const s = String(text || '').replace(/\s+/g, ' ').trim();
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

function renderStaged() {
  const ch = cur();
  const staged = ch ? ch.draft.staged : [];
  els.staged.replaceChildren(
    ...staged.map((s) =>
      h(
        'span',
        { class: `chip${s.status === 'failed' ? ' failed' : ''}`, data: { testid: 'staged-file', status: s.status }, title: s.error || s.file.name },
        h('span', { class: 'chip-name', text: s.file.name || 'file' }),
        h('span', {
          class: 'chip-state',
          text: s.status === 'uploading' ? 'uploading…' : s.status === 'failed' ? `failed: ${s.error || ''}` : fmtSize(s.file.size),
        }),
        h('button', {
          type: 'button',
          class: 'btn btn-ghost',
          text: '×',
          attrs: { 'aria-label': `Remove ${s.file.name}` },
          on: {
            click: () => {
              ch.draft.staged = ch.draft.staged.filter((x) => x !== s);
              renderStaged();
            },
          },
        }),
      ),
    ),
  );
  if (!staged.some((s) => s.status === 'failed')) showComposerError(null);
}

function renderHistoryStatus() {
  const ch = cur();
  if (!ch) return;
  let text = '';
  if (ch.loading) text = ch.loaded ? 'Loading older messages…' : 'Loading messages…';
  else if (ch.loadError && !ch.loaded) text = `Could not load messages: ${ch.loadError}`;
  else if (ch.loaded && !ch.hasMore) {
    text = ch.channel && ch.channel.kind === 'dm'
      ? `This is the beginning of your conversation with ${channelName(ch)}.`
      : `This is the beginning of #${channelName(ch)}.`;
  }
  els.historyStatus.textContent = text;
}

/** The open conversation's items: messages by id, then this channel's unsent ones. */
function conversationItems(ch) {
  const items = sortedMessages(ch).map((m) => ({ key: `m${m.id}`, msg: m, author: m.author_id, at: m.created_at }));
  const pend = [...state.outbox.values()].filter((p) => p.channel_id === ch.id);
  pend.sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1));
  for (const p of pend) items.push({ key: `p${p.cmid}`, pending: p, author: state.me.id, at: p.createdAt });
  return items;
}

function renderMessages(opts) {
  const ch = cur();
  if (!ch) return;
  const box = els.messages;
  const prevHeight = box.scrollHeight;
  const prevTop = box.scrollTop;
  const items = conversationItems(ch);
  const list = els.items;
  let idx = 0;
  let prev = null;
  const wanted = new Set();
  for (const it of items) {
    let el = ch.els.get(it.key);
    const pendVer = it.pending ? `${it.pending.status}|${it.pending.error || ''}` : null;
    if (!el || (it.pending && el._ver !== pendVer)) {
      el = it.pending ? buildPending(it.pending) : buildMessage(ch, it.msg);
      el._ver = pendVer;
      ch.els.set(it.key, el);
    }
    wanted.add(it.key);
    const at = new Date(it.at);
    const prevAt = prev ? new Date(prev.at) : null;
    const newDay = !prevAt || dayKey(prevAt) !== dayKey(at);
    const cont = !newDay && prev.author === it.author && at - prevAt < GROUP_GAP_MS && !(it.msg && it.msg.reply_to);
    el.classList.toggle('new-day', newDay);
    el.classList.toggle('cont', !!cont);
    if (newDay && el._day) el._day.textContent = Number.isNaN(at.getTime()) ? '' : fmtDay(at);
    if (it.msg && el._replyPending) fillReply(ch, el, it.msg);
    if (list.children[idx] !== el) list.insertBefore(el, list.children[idx] || null);
    idx += 1;
    prev = it;
  }
  while (list.children.length > idx) list.lastChild.remove();
  for (const key of ch.els.keys()) if (key.startsWith('p') && !wanted.has(key)) ch.els.delete(key);
  renderSeen(ch);

  if (opts.prepend && !state.stickBottom) box.scrollTop = prevTop + (box.scrollHeight - prevHeight);
  else if (opts.toBottom || state.stickBottom) scrollToBottom();
  maybeSendRead();
}

function scrollToBottom() {
  const box = els.messages;
  box.scrollTop = box.scrollHeight;
  state.stickBottom = true;
  els.newBelow.hidden = true;
}

function renderSeen(ch) {
  const list = sortedMessages(ch);
  const byMsg = new Map();
  for (const [userId, msgId] of ch.reads) {
    // Under the newest loaded message, by someone else, that the reader has seen.
    let target = null;
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].author_id !== userId && cmpId(list[i].id, msgId) <= 0) {
        target = list[i].id;
        break;
      }
    }
    if (!target) continue;
    if (!byMsg.has(target)) byMsg.set(target, []);
    byMsg.get(target).push(userId);
  }
  for (const m of list) {
    const el = ch.els.get(`m${m.id}`);
    if (!el || !el._seen) continue;
    const readers = byMsg.get(m.id);
    const text = readers ? `Seen by ${joinNames(readers.map(displayName))}` : '';
    if (el._seen.textContent !== text) el._seen.textContent = text;
  }
}

function linkify(text) {
  const out = [];
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    let url = m[0];
    const trail = url.match(/[).,!?:;\]]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    const href = safeUrl(url);
    if (!href) continue;
    out.push(text.slice(last, m.index));
    out.push(h('a', { href, text: url, target: '_blank', rel: 'noopener noreferrer' }));
    last = m.index + url.length;
    re.lastIndex = last;
  }
  out.push(text.slice(last));
  return out.filter((x) => x !== '');
}

function buildAttachment(att) {
  const url = safeUrl(att.url);
  const name = att.filename || 'file';
  if (String(att.content_type || '').startsWith('image/') && url) {
    const img = h('img', { src: url, alt: name, loading: 'lazy', decoding: 'async', data: { testid: 'message-image', attachmentId: att.id } });
    let retried = false;
    img.addEventListener('load', () => {
      if (state.stickBottom) scrollToBottom();
    });
    img.addEventListener('error', async () => {
      // The download URL is time-limited: ask for a fresh one, once.
      if (retried || !isId(att.id)) return;
      retried = true;
      try {
        const r = await api('GET', `/media/${att.id}`);
        const fresh = r && r.attachment && safeUrl(r.attachment.url);
        if (fresh) img.src = fresh;
      } catch {
        /* leave the broken image */
      }
    });
    return h('a', { class: 'att-image', href: url, target: '_blank', rel: 'noopener noreferrer', title: name }, img);
  }
  return h(
    'a',
    {
      class: 'att-file',
      href: url || '#',
      target: '_blank',
      rel: 'noopener noreferrer',
      download: name,
      data: { testid: 'message-file', attachmentId: att.id },
    },
    fileIcon(),
    h('span', { class: 'att-file-name', text: name }),
    h('span', { class: 'att-file-size', text: fmtSize(Number(att.size)) }),
  );
}

function fileIcon() {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon att-file-icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5M9 13h6M9 17h6');
  svg.append(path);
  return svg;
}

function fillReply(ch, el, m) {
  const ref = ch.msgs.get(m.reply_to);
  const box = el._reply;
  if (!box) return;
  if (ref) {
    box.replaceChildren('↪ ', h('b', { text: displayName(ref.author_id), data: { nameOf: ref.author_id } }), ` ${snippet(ref.text)}`);
    el._replyPending = false;
  } else {
    box.textContent = '↪ Reply to an earlier message';
    el._replyPending = true;
  }
}

function buildMessage(ch, m) {
  const at = new Date(m.created_at);
  const time = Number.isNaN(at.getTime()) ? '' : fmtTime(at);
  const full = Number.isNaN(at.getTime()) ? '' : at.toLocaleString();
  const dayEl = h('div', { class: 'day-divider' });
  const seen = h('div', { class: 'msg-seen', data: { testid: 'message-seen' } });
  const reply = m.reply_to
    ? h('div', {
        class: 'msg-reply',
        on: {
          click: () => {
            const target = ch.els.get(`m${m.reply_to}`);
            if (target && target.isConnected) {
              target.scrollIntoView({ block: 'center', behavior: 'smooth' });
              target.classList.add('highlight');
              setTimeout(() => target.classList.remove('highlight'), 1500);
            }
          },
        },
      })
    : null;
  const atts = Array.isArray(m.attachments) ? m.attachments : [];
  const el = h(
    'div',
    { class: 'msg', data: { testid: 'message-item', messageId: m.id, authorId: m.author_id, seq: String(m.seq) } },
    dayEl,
    h(
      'div',
      { class: 'msg-row' },
      avatar(m.author_id),
      h('span', { class: 'msg-gutter', text: time, title: full, attrs: { 'aria-hidden': 'true' } }),
      h(
        'div',
        { class: 'msg-body' },
        h(
          'div',
          { class: 'msg-head' },
          h('span', { class: 'author', text: displayName(m.author_id), data: { nameOf: m.author_id, testid: 'message-author' } }),
          h('time', { class: 'msg-time', text: time, title: full, dateTime: m.created_at }),
        ),
        reply,
        h('div', { class: 'msg-text', data: { testid: 'message-text' } }, linkify(String(m.text || ''))),
        m.moderated ? h('div', { class: 'msg-flag', text: 'Some words were masked by moderation.' }) : null,
        atts.length ? h('div', { class: 'attachments' }, atts.map(buildAttachment)) : null,
        seen,
      ),
      h(
        'div',
        { class: 'msg-actions' },
        h('button', {
          type: 'button',
          class: 'btn btn-ghost',
          text: 'Reply',
          on: {
            click: () => {
              state.replyTo = { id: m.id, author_id: m.author_id, text: m.text };
              renderReplyBar();
              els.input.focus();
            },
          },
        }),
      ),
    ),
  );
  el._day = dayEl;
  el._seen = seen;
  el._reply = reply;
  if (reply) fillReply(ch, el, m);
  return el;
}

function buildPending(p) {
  const me = state.me.id;
  const statusText = {
    uploading: 'Uploading…',
    queued: 'Waiting for connection…',
    sending: 'Sending…',
    sent: 'Sent',
    failed: `Not sent: ${p.error || 'error'}`,
  }[p.status] || '';
  const actions = [];
  if (p.status === 'failed') {
    if (!p.uploadFailed) {
      actions.push(h('button', { type: 'button', class: 'btn btn-small', text: 'Retry', on: { click: () => deliver(p) } }));
    }
    actions.push(
      h('button', {
        type: 'button',
        class: 'btn btn-small btn-ghost',
        text: 'Discard',
        on: {
          click: () => {
            state.outbox.delete(p.cmid);
            invalidate();
          },
        },
      }),
    );
  }
  const names = (p.staged || []).map((s) => s.file.name);
  return h(
    'div',
    { class: `msg pending${p.status === 'failed' ? ' failed' : ''}`, data: { testid: 'message-pending', status: p.status } },
    h('div', { class: 'day-divider' }),
    h(
      'div',
      { class: 'msg-row' },
      avatar(me),
      h('span', { class: 'msg-gutter' }),
      h(
        'div',
        { class: 'msg-body' },
        h('div', { class: 'msg-head' }, h('span', { class: 'author', text: displayName(me), data: { nameOf: me } })),
        p.text ? h('div', { class: 'msg-text' }, p.text) : null,
        names.length ? h('div', { class: 'attachments' }, names.map((n) => h('span', { class: 'chip' }, h('span', { class: 'chip-name', text: n })))) : null,
        h('div', { class: 'msg-status' }, statusText, ...actions),
      ),
    ),
  );
}

// ---------------------------------------------------------------- navigation

function selectChannel(id) {
  const prev = cur();
  if (prev) prev.draft.text = els.input.value;
  state.currentId = id && state.channels.has(id) ? id : null;
  if (state.currentId) localStorage.setItem(CHANNEL_KEY, state.currentId);
  state.replyTo = null;
  state.stickBottom = true;
  els.newBelow.hidden = true;
  els.app.classList.remove('nav-open');
  els.items.replaceChildren();
  const ch = cur();
  els.welcome.hidden = !!ch;
  els.messages.hidden = !ch;
  els.composerWrap.hidden = !ch;
  renderChannelList();
  renderHeader();
  renderReplyBar();
  renderTyping();
  showComposerError(null);
  if (!ch) {
    renderMembers();
    return;
  }
  els.input.value = ch.draft.text || '';
  autosize();
  renderStaged();
  ch.unread = 0;
  renderChannelList();
  if (!ch.loaded) loadInitial(ch);
  render({ toBottom: true });
  loadMembers(ch);
  renderMembers();
  els.input.focus({ preventScroll: true });
}

// ---------------------------------------------------------------- side form (new group, join, DM)

const SIDE_MODES = {
  group: { label: 'New group name', button: 'Create', placeholder: 'e.g. design-team' },
  join: { label: 'Name of the group to join', button: 'Join', placeholder: 'e.g. general' },
  dm: { label: 'Username to message', button: 'Start chat', placeholder: 'e.g. alice' },
};

function openSideForm(mode) {
  if (state.sideMode === mode && !els.sideForm.hidden) {
    closeSideForm();
    return;
  }
  state.sideMode = mode;
  const m = SIDE_MODES[mode];
  els.sideForm.hidden = false;
  els.sideForm.dataset.mode = mode;
  els.sideFormLabel.textContent = m.label;
  els.sideFormSubmit.textContent = m.button;
  els.sideFormInput.placeholder = m.placeholder;
  els.sideFormInput.value = '';
  els.sideFormError.hidden = true;
  els.sideFormInput.focus();
}

function closeSideForm() {
  state.sideMode = null;
  els.sideForm.hidden = true;
}

async function submitSideForm() {
  const mode = state.sideMode;
  const value = els.sideFormInput.value.trim();
  const fail = (msg) => {
    els.sideFormError.textContent = msg;
    els.sideFormError.hidden = false;
  };
  if (!value) {
    fail(mode === 'dm' ? 'Enter a username.' : 'Enter a group name.');
    return;
  }
  els.sideFormSubmit.disabled = true;
  try {
    let channel;
    if (mode === 'group') {
      channel = await api('POST', '/channels', { name: value });
    } else if (mode === 'join') {
      const found = await api('GET', `/channels/lookup?name=${encodeURIComponent(value)}`);
      const known = state.channels.get(found.id);
      channel = known && known.channel ? known.channel : await api('POST', `/channels/${found.id}/join`);
      if (!channel || !channel.id) channel = found;
    } else if (mode === 'dm') {
      if (state.me && value.replace(/^@/, '').toLowerCase() === state.me.username.toLowerCase()) {
        fail("That's you. Enter someone else's username.");
        return;
      }
      const user = await api('GET', `/users?username=${encodeURIComponent(value.replace(/^@/, ''))}`);
      cacheUser(user);
      channel = await api('POST', '/dms', { user_id: user.id });
      const ch = getChan(channel.id);
      ch.dmUserId = user.id;
      fetchPresence([user.id]);
    }
    const ch = setChannel(channel);
    closeSideForm();
    renderChannelList();
    if (ch) selectChannel(ch.id);
  } catch (e) {
    fail(e.message || 'Something went wrong.');
  } finally {
    els.sideFormSubmit.disabled = false;
  }
}

// ---------------------------------------------------------------- auth

function setAuthMode(mode) {
  state.authMode = mode;
  for (const tab of els.authTabs) tab.setAttribute('aria-selected', tab.dataset.mode === mode ? 'true' : 'false');
  els.authDisplayNameField.hidden = mode !== 'register';
  els.authSubmit.textContent = mode === 'register' ? 'Create account' : 'Sign in';
  els.authPassword.autocomplete = mode === 'register' ? 'new-password' : 'current-password';
  showAuthError(null);
}

function showAuthError(msg) {
  els.authError.hidden = !msg;
  els.authError.textContent = msg || '';
}

function showAuth(message) {
  els.app.hidden = true;
  els.authScreen.hidden = false;
  setAuthMode(state.authMode);
  showAuthError(message || null);
  els.authUsername.focus();
}

async function submitAuth() {
  const username = els.authUsername.value.trim();
  const password = els.authPassword.value;
  const displayNameValue = els.authDisplayName.value.trim();
  if (!username || !password) {
    showAuthError('Enter a username and a password.');
    return;
  }
  els.authSubmit.disabled = true;
  showAuthError(null);
  try {
    const body = { username, password };
    if (state.authMode === 'register' && displayNameValue) body.display_name = displayNameValue;
    const r = await api('POST', state.authMode === 'register' ? '/auth/register' : '/auth/login', body);
    if (!r || !r.token || !r.user) throw new Error('The server answered without a token.');
    setToken(r.token);
    state.me = r.user;
    cacheUser(r.user);
    els.authPassword.value = '';
    startApp();
  } catch (e) {
    showAuthError(e.message || 'Something went wrong.');
  } finally {
    els.authSubmit.disabled = false;
  }
}

function startApp() {
  els.authScreen.hidden = true;
  els.app.hidden = false;
  const me = state.me;
  els.meName.textContent = me.display_name || me.username;
  els.meName.dataset.nameOf = me.id;
  els.meUsername.textContent = `@${me.username}`;
  els.meAvatar.textContent = initials(me.display_name || me.username);
  els.meAvatar.style.background = colorFor(me.id);
  selectChannel(null);
  connect();
  loadChannels()
    .then(() => {
      const last = localStorage.getItem(CHANNEL_KEY);
      if (!state.currentId && last && state.channels.get(last) && state.channels.get(last).channel) selectChannel(last);
    })
    .catch(() => {
      setTimeout(() => loadChannels().catch(() => {}), 3000);
    });
}

async function boot() {
  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) {
    showAuth(flash);
    return;
  }
  state.token = token;
  scheduleRefresh();
  try {
    const me = await api('GET', '/users/me');
    state.me = me;
    cacheUser(me);
    startApp();
  } catch (e) {
    if (e.status === 401) return; // onUnauthorized reloads onto the sign-in screen
    showAuth(`${e.message} Retrying…`);
    setTimeout(() => {
      if (!state.me && els.authUsername.value === '' && localStorage.getItem(TOKEN_KEY)) boot();
    }, 3000);
  }
}

function logout() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(CHANNEL_KEY);
  state.token = null;
  clearTimeout(refresh.timer);
  if (conn.ws) {
    const ws = conn.ws;
    conn.ws = null;
    ws.close(1000, 'signed out');
  }
  location.reload();
}

// ---------------------------------------------------------------- wiring

function wire() {
  for (const tab of els.authTabs) tab.addEventListener('click', () => setAuthMode(tab.dataset.mode));
  els.authForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submitAuth();
  });

  els.newGroupBtn.addEventListener('click', () => openSideForm('group'));
  els.joinGroupBtn.addEventListener('click', () => openSideForm('join'));
  els.newDmBtn.addEventListener('click', () => openSideForm('dm'));
  els.sideFormCancel.addEventListener('click', closeSideForm);
  els.sideForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submitSideForm();
  });
  els.sideForm.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeSideForm();
  });
  els.logout.addEventListener('click', logout);
  els.conn.addEventListener('click', reconnectNow);
  els.menuBtn.addEventListener('click', (e) => {
    e.stopPropagation();
    els.app.classList.toggle('nav-open');
  });
  // On small screens the conversation list slides over the chat: a click beside it closes it.
  els.chat.addEventListener(
    'click',
    (e) => {
      if (!els.app.classList.contains('nav-open')) return;
      e.preventDefault();
      e.stopPropagation();
      els.app.classList.remove('nav-open');
    },
    true,
  );
  els.membersBtn.addEventListener('click', () => {
    state.membersOpen = !state.membersOpen;
    const ch = cur();
    if (state.membersOpen && ch && !ch.members) loadMembers(ch);
    renderMembers();
  });

  els.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    sendFromComposer();
  });
  els.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendFromComposer();
    } else if (e.key === 'Escape' && state.replyTo) {
      state.replyTo = null;
      renderReplyBar();
    }
  });
  els.input.addEventListener('input', onComposerInput);
  els.input.addEventListener('paste', (e) => {
    const files = e.clipboardData && e.clipboardData.files;
    if (files && files.length) {
      e.preventDefault();
      addFiles([...files]);
    }
  });
  els.fileInput.addEventListener('change', () => {
    const files = [...els.fileInput.files];
    els.fileInput.value = '';
    if (files.length) addFiles(files);
  });
  els.replyCancel.addEventListener('click', () => {
    state.replyTo = null;
    renderReplyBar();
  });
  els.newBelowBtn.addEventListener('click', () => {
    scrollToBottom();
    maybeSendRead();
  });

  let dragDepth = 0;
  els.chat.addEventListener('dragenter', (e) => {
    if (!cur() || !e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    dragDepth += 1;
    els.chat.classList.add('dragover');
  });
  els.chat.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.chat.classList.remove('dragover');
  });
  els.chat.addEventListener('dragover', (e) => {
    if (cur()) e.preventDefault();
  });
  els.chat.addEventListener('drop', (e) => {
    e.preventDefault();
    dragDepth = 0;
    els.chat.classList.remove('dragover');
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) addFiles([...files]);
  });

  els.messages.addEventListener('scroll', () => {
    const box = els.messages;
    state.stickBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    if (state.stickBottom) {
      els.newBelow.hidden = true;
      maybeSendRead();
    }
    const ch = cur();
    if (ch && box.scrollTop < 120) loadOlder(ch);
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      // Timers may have slept with the machine: plan the refresh from the clock again.
      if (state.token && !refresh.inFlight) scheduleRefresh();
      maybeSendRead();
      if (!conn.ws && state.token && state.me) reconnectNow();
    }
  });
  window.addEventListener('online', () => {
    if (state.me) reconnectNow();
  });
  window.addEventListener('focus', maybeSendRead);
  window.addEventListener('storage', (e) => {
    // Signed out in another tab.
    if (e.key === TOKEN_KEY && !e.newValue && state.token) location.reload();
    // Another tab refreshed the token: use the fresh one too.
    if (e.key === TOKEN_KEY && e.newValue && state.token && e.newValue !== state.token) {
      state.token = e.newValue;
      scheduleRefresh();
    }
  });
  setInterval(() => {
    renderTyping();
    if (cur() && cur().channel && cur().channel.kind === 'dm') renderHeader();
  }, 30000);
}

wire();
boot();
