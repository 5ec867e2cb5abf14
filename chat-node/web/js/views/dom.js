// DOM building blocks for the views: `h` (elements from props; user text only ever
// becomes text nodes), the page's elements by id, and the small pieces every view shows
// (names, avatars, presence dots) that update in place when a user or presence changes.

import { colorFor, initials } from '../util.js';

/** Creates an element. props: class, text, data (dataset), attrs, on (listeners), and any property. */
export function h(tag, props, ...children) {
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

/** The elements of index.html the views use, by role. */
export function findElements() {
  const $ = (id) => document.getElementById(id);
  return {
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
}

/** A user's name, kept current (data-name-of). */
export function nameSpan(store, userId, cls = 'author') {
  return h('span', { class: cls, text: store.displayName(userId), data: { nameOf: userId } });
}

/** A user's initials on their color, kept current (data-avatar-of). */
export function avatar(store, userId, cls = 'avatar') {
  const el = h('span', { class: cls, attrs: { 'aria-hidden': 'true' }, data: { avatarOf: userId } });
  el.textContent = initials(store.users.has(userId) ? store.displayName(userId) : '?');
  el.style.background = colorFor(userId);
  return el;
}

const statusTitle = (status) => status[0].toUpperCase() + status.slice(1);

/** A user's presence dot, kept current (data-presence-of). */
export function presenceDot(store, userId) {
  const p = store.presence.get(userId);
  const status = (p && p.status) || 'offline';
  return h('span', {
    class: 'presence',
    data: { status, presenceOf: userId, testid: 'presence-dot' },
    title: statusTitle(status),
  });
}

/** Brings every shown name and avatar of user `id` up to date. */
export function updateUserInPlace(store, id) {
  const name = store.displayName(id);
  for (const el of document.querySelectorAll(`[data-name-of="${id}"]`)) el.textContent = name;
  for (const el of document.querySelectorAll(`[data-avatar-of="${id}"]`)) el.textContent = initials(name);
}

/** Brings every shown presence dot of presence `p`'s user up to date. */
export function updatePresenceInPlace(p) {
  const status = p.status || 'offline';
  for (const el of document.querySelectorAll(`[data-presence-of="${p.user_id}"]`)) {
    el.dataset.status = status;
    el.title = statusTitle(status);
  }
}
