// The open conversation: its header (title, DM partner's presence, member count), the
// member panel, the message list (history status, day dividers, grouping of a run of one
// author's messages, unsent messages last, "Seen by"), scrolling (stick to the end, keep
// the place when older pages arrive, "New messages ↓") and who is typing.

import { cmpId, dayKey, fmtAgo, fmtDay, joinNames } from '../util.js';
import { sortedMessages } from '../store.js';
import { avatar, h, nameSpan, presenceDot } from './dom.js';
import { createMessageViews } from './message.js';

// Messages of one author closer than this are grouped under one header.
const GROUP_GAP_MS = 5 * 60 * 1000;

/**
 * actions: loadOlder(ch), maybeSendRead(), retry(p), discard(p), reply(m); request: the REST
 * client; updateTitle(): the document title follows the open conversation.
 */
export function createConversation({ store, els, actions, request, updateTitle }) {
  const cache = new Map(); // channel id -> Map(key -> element); keys m<id> and p<cmid>
  const elementsOf = (ch) => {
    if (!cache.has(ch.id)) cache.set(ch.id, new Map());
    return cache.get(ch.id);
  };
  const views = createMessageViews({
    store,
    request,
    onImageLoad: () => {
      if (store.stickBottom) scrollToBottom();
    },
    onReply: actions.reply,
    onRetry: actions.retry,
    onDiscard: actions.discard,
  });

  function renderHeader() {
    const ch = store.current();
    if (!ch || !ch.channel) {
      els.title.replaceChildren('Welcome');
      els.subtitle.textContent = '';
      els.membersBtn.hidden = true;
      return;
    }
    els.membersBtn.hidden = false;
    if (ch.channel.kind === 'dm') {
      const other = ch.dmUserId;
      els.title.replaceChildren(...(other ? [presenceDot(store, other), nameSpan(store, other, 'chat-title-name')] : ['Direct message']));
      const p = other ? store.presence.get(other) : null;
      const u = other ? store.users.get(other) : null;
      let sub = u ? `@${u.username}` : '';
      if (p && p.status === 'online') sub += ' · online';
      else if (p && p.status === 'idle') sub += ' · idle';
      else if (p && p.last_seen) sub += ` · last seen ${fmtAgo(p.last_seen)}`;
      else if (p) sub += ' · offline';
      els.subtitle.textContent = sub;
    } else {
      els.title.replaceChildren(h('span', { class: 'chan-icon', text: '#', attrs: { 'aria-hidden': 'true' } }), store.channelName(ch));
      const n = ch.members ? ch.members.length : ch.channel.member_count;
      els.subtitle.textContent = n != null ? `${n} member${n === 1 ? '' : 's'}` : '';
    }
    updateTitle();
  }

  function renderMembers() {
    const ch = store.current();
    els.membersPanel.hidden = !store.membersOpen || !ch || !ch.channel;
    els.membersBtn.setAttribute('aria-pressed', store.membersOpen ? 'true' : 'false');
    if (els.membersPanel.hidden) return;
    if (!ch.members) {
      els.memberList.replaceChildren(h('li', { class: 'nav-empty', text: 'Loading…' }));
      return;
    }
    const rank = { online: 0, idle: 1, offline: 2 };
    const ids = [...ch.members].sort((a, b) => {
      const pa = rank[(store.presence.get(a) || {}).status] ?? 2;
      const pb = rank[(store.presence.get(b) || {}).status] ?? 2;
      return pa - pb || store.displayName(a).localeCompare(store.displayName(b));
    });
    els.memberList.replaceChildren(
      ...ids.map((id) => {
        const u = store.users.get(id);
        const av = avatar(store, id);
        av.append(presenceDot(store, id));
        return h(
          'li',
          { class: 'member', data: { testid: 'member-item', userId: id } },
          av,
          h(
            'span',
            { class: 'member-names' },
            h('span', { class: 'member-name', text: store.displayName(id), data: { nameOf: id } }),
            h('span', { class: 'member-username', text: u ? `@${u.username}${store.isMe(id) ? ' (you)' : ''}` : '' }),
          ),
        );
      }),
    );
  }

  function renderTyping() {
    const ch = store.current();
    if (!ch) {
      els.typing.textContent = '';
      return;
    }
    const names = store.typingUsers(ch, Date.now()).map((id) => store.displayName(id));
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2 || names.length === 3) text = `${joinNames(names)} are typing…`;
    else if (names.length > 3) text = 'Several people are typing…';
    els.typing.textContent = text;
  }

  function renderHistoryStatus() {
    const ch = store.current();
    if (!ch) return;
    let text = '';
    if (ch.loading) text = ch.loaded ? 'Loading older messages…' : 'Loading messages…';
    else if (ch.loadError && !ch.loaded) text = `Could not load messages: ${ch.loadError}`;
    else if (ch.loaded && !ch.hasMore) {
      text = ch.channel && ch.channel.kind === 'dm'
        ? `This is the beginning of your conversation with ${store.channelName(ch)}.`
        : `This is the beginning of #${store.channelName(ch)}.`;
    }
    els.historyStatus.textContent = text;
  }

  /** The open conversation's items: messages by id, then this channel's unsent ones. */
  function conversationItems(ch) {
    const items = sortedMessages(ch).map((m) => ({ key: `m${m.id}`, msg: m, author: m.author_id, at: m.created_at }));
    for (const p of store.pendingIn(ch.id)) items.push({ key: `p${p.cmid}`, pending: p, author: store.me.id, at: p.createdAt });
    return items;
  }

  function elementFor(ch, it, known) {
    let el = known.get(it.key);
    const pendVer = it.pending ? `${it.pending.status}|${it.pending.error || ''}` : null;
    if (!el || (it.pending && el._ver !== pendVer)) {
      el = it.pending ? views.buildPending(it.pending) : views.buildMessage(ch, it.msg, (key) => known.get(key));
      el._ver = pendVer;
      known.set(it.key, el);
    }
    return el;
  }

  function renderMessages(opts) {
    const ch = store.current();
    if (!ch) return;
    const box = els.messages;
    const prevHeight = box.scrollHeight;
    const prevTop = box.scrollTop;
    const known = elementsOf(ch);
    const list = els.items;
    let idx = 0;
    let prev = null;
    const wanted = new Set();
    for (const it of conversationItems(ch)) {
      const el = elementFor(ch, it, known);
      wanted.add(it.key);
      const at = new Date(it.at);
      const prevAt = prev ? new Date(prev.at) : null;
      const newDay = !prevAt || dayKey(prevAt) !== dayKey(at);
      const cont = !newDay && prev.author === it.author && at - prevAt < GROUP_GAP_MS && !(it.msg && it.msg.reply_to);
      el.classList.toggle('new-day', newDay);
      el.classList.toggle('cont', !!cont);
      if (newDay && el._day) el._day.textContent = Number.isNaN(at.getTime()) ? '' : fmtDay(at);
      if (it.msg && el._replyPending) views.fillReply(ch, el, it.msg);
      if (list.children[idx] !== el) list.insertBefore(el, list.children[idx] || null);
      idx += 1;
      prev = it;
    }
    while (list.children.length > idx) list.lastChild.remove();
    for (const key of known.keys()) if (key.startsWith('p') && !wanted.has(key)) known.delete(key);
    renderSeen(ch, known);

    if (opts.prepend && !store.stickBottom) box.scrollTop = prevTop + (box.scrollHeight - prevHeight);
    else if (opts.toBottom || store.stickBottom) scrollToBottom();
    actions.maybeSendRead();
  }

  /** "Seen by": under the newest loaded message by someone else that each reader has seen. */
  function renderSeen(ch, known) {
    const list = sortedMessages(ch);
    const byMsg = new Map();
    for (const [userId, msgId] of ch.reads) {
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
      const el = known.get(`m${m.id}`);
      if (!el || !el._seen) continue;
      const readers = byMsg.get(m.id);
      const text = readers ? `Seen by ${joinNames(readers.map((id) => store.displayName(id)))}` : '';
      if (el._seen.textContent !== text) el._seen.textContent = text;
    }
  }

  function scrollToBottom() {
    const box = els.messages;
    box.scrollTop = box.scrollHeight;
    store.stickBottom = true;
    els.newBelow.hidden = true;
  }

  /** Loads older pages until the list can scroll (so "scroll to top" can load more). */
  function fillViewport(ch) {
    if (!store.isCurrent(ch)) return;
    const box = els.messages;
    if (ch.hasMore && !ch.loading && box.scrollHeight <= box.clientHeight + 40) actions.loadOlder(ch);
  }

  function render(opts) {
    renderMessages(opts || {});
    renderHistoryStatus();
    updateTitle();
  }

  let queued = false;
  let queuedOpts = {};
  /** Batches re-renders of the open conversation. */
  function invalidate(opts) {
    queuedOpts = { ...queuedOpts, ...(opts || {}) };
    if (queued) return;
    queued = true;
    setTimeout(() => {
      queued = false;
      const o = queuedOpts;
      queuedOpts = {};
      render(o);
    }, 0);
  }

  /** Shows `ch` (or the welcome card): an empty list that renders from scratch. */
  function open(ch) {
    els.newBelow.hidden = true;
    els.items.replaceChildren();
    els.welcome.hidden = !!ch;
    els.messages.hidden = !ch;
    els.composerWrap.hidden = !ch;
  }

  store.on('conversation', (d = {}) => {
    if (d.channelId && d.channelId !== store.currentId) return;
    const { now, fill, channelId, ...opts } = d;
    if (!now) {
      invalidate(opts);
      return;
    }
    render(opts);
    if (fill) fillViewport(store.current());
  });
  store.on('outbox', () => invalidate());
  store.on('history', ({ channelId }) => {
    if (channelId === store.currentId) renderHistoryStatus();
  });
  store.on('typing', renderTyping);
  store.on('header', renderHeader);
  store.on('members', renderMembers);
  store.on('presence', renderHeader);
  store.on('new-below', () => {
    els.newBelow.hidden = false;
  });
  store.on('resync', ({ channelId }) => {
    cache.delete(channelId);
    if (channelId === store.currentId) els.items.replaceChildren();
  });

  return {
    render,
    invalidate,
    open,
    renderHeader,
    renderMembers,
    renderTyping,
    scrollToBottom,
  };
}
