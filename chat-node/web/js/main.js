// The entry point: builds the store, the controllers (session, REST, socket, history,
// outbox, directory, live) and the views, connects them, and starts: the sign-in screen,
// or the chat when a token is stored. Navigation (opening a conversation) and the page's
// global listeners (visibility, network, other tabs, drag and drop) live here.
//
//   views ──actions──► controllers ──REST / WebSocket──► node
//     ▲                    │
//     └──events── store ◄──┘ (state changes)

import { createApi } from './api.js';
import { createDirectory } from './directory.js';
import { createHistory } from './history.js';
import { createLive } from './live.js';
import { createOutbox } from './outbox.js';
import { CHANNEL_KEY, FLASH_KEY, TOKEN_KEY, createSession } from './session.js';
import { createSocket } from './socket.js';
import { Store } from './store.js';
import { createAuthView } from './views/auth.js';
import { createComposer } from './views/composer.js';
import { createConversation } from './views/conversation.js';
import { findElements, updatePresenceInPlace, updateUserInPlace } from './views/dom.js';
import { createSidebar } from './views/sidebar.js';

// How often relative times ("last seen 5 min ago") and typing expiries are redrawn.
const CLOCK_TICK_MS = 30000;
// A failed start (no channel list, server unreachable) is tried again after this.
const RETRY_START_MS = 3000;

const els = findElements();
const store = new Store({ isVisible: () => document.visibilityState === 'visible' });

// Controllers. A few are built before the ones they call, so they call through closures.
let api = null;
const request = (...a) => api.request(...a);
const session = createSession({
  request,
  onUser: (u) => {
    if (store.me && u.id === store.me.id) store.setMe(u);
  },
});
api = createApi({ token: () => session.token, onUnauthorized: () => session.expire() });
// The hello was refused or closed 4001: if the token is the reason, the 401 signs us out.
const checkToken = () => request('GET', '/users/me').catch(() => {});

let live = null;
const socket = createSocket({
  url: () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`,
  token: () => session.token,
  resumeAfter: () => store.lastSeenId,
  onStatus: (status, text) => sidebar.setConn(status, text),
  onReady: (d) => live.onReady(d),
  onEvent: (t, d) => live.onEvent(t, d),
  onDrop: () => store.requeueSending(),
  onHelloRefused: checkToken,
  refreshToken: () => session.refresh(),
});
const history = createHistory({ store, request, liveEpoch: socket.liveEpoch, stillLive: socket.stillLive });
const outbox = createOutbox({ store, request: (op, d) => socket.request(op, d), isReady: socket.isReady });
const directory = createDirectory({ store, request, onCurrentGone: () => select(null) });
live = createLive({ store, socket, history, outbox, directory, select: (id) => select(id) });

// Views.
const actions = {
  select: (id) => select(id),
  loadOlder: (ch) => history.loadOlder(ch),
  maybeSendRead: () => live.maybeSendRead(),
  retry: (p) => outbox.deliver(p),
  discard: (p) => outbox.discard(p),
  reply: (m) => {
    store.setReplyTo({ id: m.id, author_id: m.author_id, text: m.text });
    els.input.focus();
  },
};
const sidebar = createSidebar({ store, els, actions, directory });
const conversation = createConversation({ store, els, actions, request, updateTitle: sidebar.updateTitle });
const composer = createComposer({ store, els, upload: (file) => api.upload(file), outbox, socket });
const auth = createAuthView({ els, signIn });

// A user's names arrived: update them in place now, redraw what lists them soon (once for
// a burst of users).
let userRenderQueued = false;
store.on('user', ({ id }) => {
  updateUserInPlace(store, id);
  if (userRenderQueued) return;
  userRenderQueued = true;
  setTimeout(() => {
    userRenderQueued = false;
    sidebar.renderChannelList();
    conversation.renderHeader();
    conversation.renderTyping();
    composer.renderReplyBar();
    conversation.invalidate();
  }, 0);
});
store.on('presence', updatePresenceInPlace);

// ---------------------------------------------------------------- navigation

/** Opens conversation `id` (or the welcome card for null). */
function select(id) {
  const prev = store.current();
  if (prev) prev.draft.text = els.input.value;
  const ch = store.select(id);
  if (ch) localStorage.setItem(CHANNEL_KEY, ch.id);
  els.app.classList.remove('nav-open');
  conversation.open(ch);
  sidebar.renderChannelList();
  conversation.renderHeader();
  conversation.renderTyping();
  composer.open(ch);
  if (!ch) {
    conversation.renderMembers();
    return;
  }
  if (!ch.loaded) history.loadInitial(ch);
  conversation.render({ toBottom: true });
  directory.loadMembers(ch);
  conversation.renderMembers();
  els.input.focus({ preventScroll: true });
}

// ---------------------------------------------------------------- start and sign-out

async function signIn(mode, body) {
  const r = await api.request('POST', mode === 'register' ? '/auth/register' : '/auth/login', body);
  if (!r || !r.token || !r.user) throw new Error('The server answered without a token.');
  session.set(r.token);
  store.setMe(r.user);
  startApp();
}

function startApp() {
  auth.hide();
  sidebar.showMe(store.me);
  select(null);
  socket.connect();
  directory
    .loadChannels()
    .then(() => {
      const last = localStorage.getItem(CHANNEL_KEY);
      const known = last && store.channels.get(last);
      if (!store.currentId && known && known.channel) select(last);
    })
    .catch(() => {
      setTimeout(() => directory.loadChannels().catch(() => {}), RETRY_START_MS);
    });
}

async function boot() {
  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  if (!session.restore()) {
    auth.show(flash);
    return;
  }
  try {
    store.setMe(await api.request('GET', '/users/me'));
    startApp();
  } catch (e) {
    if (e.status === 401) return; // the session expired: the page reloads onto the sign-in screen
    auth.show(`${e.message} Retrying…`);
    setTimeout(() => {
      if (!store.me && !auth.typing() && localStorage.getItem(TOKEN_KEY)) boot();
    }, RETRY_START_MS);
  }
}

function logout() {
  session.clear();
  socket.close();
  location.reload();
}

// ---------------------------------------------------------------- the page's listeners

function wireDrop() {
  let dragDepth = 0;
  els.chat.addEventListener('dragenter', (e) => {
    if (!store.current() || !e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    dragDepth += 1;
    els.chat.classList.add('dragover');
  });
  els.chat.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.chat.classList.remove('dragover');
  });
  els.chat.addEventListener('dragover', (e) => {
    if (store.current()) e.preventDefault();
  });
  els.chat.addEventListener('drop', (e) => {
    e.preventDefault();
    dragDepth = 0;
    els.chat.classList.remove('dragover');
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) composer.addFiles([...files]);
  });
}

function wire() {
  els.logout.addEventListener('click', logout);
  els.conn.addEventListener('click', () => socket.reconnectNow());
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
    store.membersOpen = !store.membersOpen;
    const ch = store.current();
    if (store.membersOpen && ch && !ch.members) directory.loadMembers(ch);
    conversation.renderMembers();
  });
  els.newBelowBtn.addEventListener('click', () => {
    conversation.scrollToBottom();
    live.maybeSendRead();
  });
  wireDrop();

  els.messages.addEventListener('scroll', () => {
    const box = els.messages;
    store.stickBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    if (store.stickBottom) {
      els.newBelow.hidden = true;
      live.maybeSendRead();
    }
    const ch = store.current();
    if (ch && box.scrollTop < 120) history.loadOlder(ch);
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    // Timers may have slept with the machine: plan the refresh from the clock again.
    session.wake();
    live.maybeSendRead();
    if (!socket.hasSocket() && session.token && store.me) socket.reconnectNow();
  });
  window.addEventListener('online', () => {
    if (store.me) socket.reconnectNow();
  });
  window.addEventListener('focus', () => live.maybeSendRead());
  // Signed out, or the token refreshed, in another tab.
  window.addEventListener('storage', (e) => session.onStorage(e));
  setInterval(() => {
    conversation.renderTyping();
    const ch = store.current();
    if (ch && ch.channel && ch.channel.kind === 'dm') conversation.renderHeader();
  }, CLOCK_TICK_MS);
}

wire();
// The node's limits; until they come (or from a node without GET /v1/limits) the protocol's defaults hold.
api.limits().then((l) => store.setLimits(l), () => {});
boot();
