// What the server pushes, applied to the store: `ready` (cursors, catching up, the outbox
// going out again) and the events (message, typing, read, channel_joined, member_joined /
// member_left, presence, resync_required); and the read marker sent back when the newest
// message of the open channel is on screen.

import { cmpId, isId } from './util.js';
import { sortedMessages } from './store.js';

// How long a `typing` event shows someone as typing.
export const TYPING_SHOW_MS = 5000;
// Replayed messages come right after ready; what is still missing after this is fetched.
const CATCH_UP_AFTER_MS = 2500;

/** select(id): opens a channel (navigation, main.js). */
export function createLive({ store, socket, history, outbox, directory, select }) {
  /** Sends the open channel's read marker when its newest message is seen. */
  function maybeSendRead() {
    const ch = store.current();
    if (!ch || !ch.loaded || !socket.isReady()) return;
    if (!store.isVisible() || !store.stickBottom) return;
    const newest = sortedMessages(ch).at(-1);
    if (!newest) return;
    if (ch.unread) {
      ch.unread = 0;
      store.emit('channels');
    }
    if (ch.lastReadSent && cmpId(ch.lastReadSent, newest.id) >= 0) return;
    const prev = ch.lastReadSent;
    ch.lastReadSent = newest.id;
    socket.request('read', { channel_id: ch.id, message_id: newest.id }).catch(() => {
      if (ch.lastReadSent === newest.id) ch.lastReadSent = prev;
    });
  }

  function onReady(d) {
    const cursors = Array.isArray(d.channels) ? d.channels : [];
    if (store.applyCursors(cursors)) directory.scheduleRefresh();
    setTimeout(() => {
      for (const ch of store.channels.values()) history.checkCursor(ch);
    }, CATCH_UP_AFTER_MS);
    outbox.flush();
    // Catch up on what may have changed while we were away.
    const open = store.current();
    if (open && !open.loaded && !open.loading) history.loadInitial(open);
    const watched = [...store.channels.values()].map((ch) => ch.dmUserId).filter(Boolean);
    if (open && open.members) watched.push(...open.members.slice(0, 200));
    if (watched.length) directory.fetchPresence(watched);
    store.emit('conversation', {});
    maybeSendRead();
  }

  function onTyping(d) {
    if (!isId(d.channel_id) || !isId(d.user_id) || store.isMe(d.user_id)) return;
    store.setTyping(d.channel_id, d.user_id, Date.now() + TYPING_SHOW_MS);
    // Shown until it expires: render once more then.
    if (d.channel_id === store.currentId) setTimeout(() => store.emit('typing', { channelId: d.channel_id }), TYPING_SHOW_MS + 50);
  }

  function onChannelJoined(c) {
    if (!c || !isId(c.id)) return;
    const ch = directory.setChannel(c);
    store.emit('channels');
    if (c.kind === 'dm' && ch.dmUserId) directory.fetchPresence([ch.dmUserId]);
    if (store.pendingSelect === c.id) {
      store.pendingSelect = null;
      select(c.id);
    }
  }

  function onMemberChange(t, d) {
    if (!isId(d.channel_id)) return;
    const ch = store.channels.get(d.channel_id);
    if (!ch || !ch.channel) return;
    if (isId(d.user_id)) store.wantUser(d.user_id);
    if (t === 'member_left' && store.isMe(d.user_id)) {
      directory.scheduleRefresh();
      return;
    }
    directory.refreshChannel(ch);
  }

  function onEvent(t, d) {
    switch (t) {
      case 'message':
        if (store.mergeMessage(d, true) && d.channel_id === store.currentId) store.emit('conversation', {});
        break;
      case 'typing': onTyping(d); break;
      case 'read': store.applyRead(d); break;
      case 'channel_joined': onChannelJoined(d.channel); break;
      case 'member_joined':
      case 'member_left': onMemberChange(t, d); break;
      case 'presence': store.setPresence(d); break;
      case 'resync_required': if (isId(d.channel_id)) history.resync(store.getChan(d.channel_id)); break;
      case 'error': console.warn('parley: server error', d); break;
      default: break;
    }
  }

  return { onReady, onEvent, maybeSendRead };
}
