// The sidebar: the connection status, the conversation list (groups and DMs with unread
// badges and presence), the form that creates, joins or opens a conversation, the signed-in
// user's footer, and the document title (unread total and open conversation).

import { colorFor, initials } from '../util.js';
import { h, presenceDot } from './dom.js';

const SIDE_MODES = {
  group: { label: 'New group name', button: 'Create', placeholder: 'e.g. design-team' },
  join: { label: 'Name of the group to join', button: 'Join', placeholder: 'e.g. general' },
  dm: { label: 'Username to message', button: 'Start chat', placeholder: 'e.g. alice' },
};

/** actions: select(id); directory: createGroup, joinGroup, openDm, setChannel. */
export function createSidebar({ store, els, actions, directory }) {
  let sideMode = null;

  function updateTitle() {
    const unread = store.totalUnread();
    const ch = store.current();
    const name = ch && ch.channel ? (ch.channel.kind === 'dm' ? store.channelName(ch) : `#${store.channelName(ch)}`) : '';
    document.title = `${unread ? `(${unread}) ` : ''}${name ? `${name} · ` : ''}Parley`;
  }

  function channelItem(ch) {
    const dm = ch.channel.kind === 'dm';
    const name = store.channelName(ch);
    const btn = h(
      'button',
      {
        type: 'button',
        class: `chan${ch.unread ? ' unread' : ''}`,
        data: { testid: 'channel-item', channelId: ch.id, kind: ch.channel.kind },
        attrs: { 'aria-current': ch.id === store.currentId ? 'true' : 'false' },
        on: { click: () => actions.select(ch.id) },
      },
      dm
        ? ch.dmUserId
          ? presenceDot(store, ch.dmUserId)
          : h('span', { class: 'presence' })
        : h('span', { class: 'chan-icon', text: '#', attrs: { 'aria-hidden': 'true' } }),
      dm && ch.dmUserId
        ? h('span', { class: 'chan-name', text: name, data: { nameOf: ch.dmUserId } })
        : h('span', { class: 'chan-name', text: name }),
      ch.unread
        ? h('span', { class: 'badge', text: ch.unread > 99 ? '99+' : String(ch.unread), attrs: { 'aria-label': `${ch.unread} unread` } })
        : null,
    );
    return h('li', null, btn);
  }

  function renderChannelList() {
    const groups = [];
    const dms = [];
    for (const ch of store.channels.values()) {
      if (!ch.channel) continue;
      (ch.channel.kind === 'dm' ? dms : groups).push(ch);
    }
    const byName = (a, b) => store.channelName(a).localeCompare(store.channelName(b), undefined, { sensitivity: 'base' });
    groups.sort(byName);
    dms.sort(byName);
    els.groupList.replaceChildren(...groups.map(channelItem));
    els.dmList.replaceChildren(...dms.map(channelItem));
    els.groupEmpty.hidden = groups.length > 0;
    els.dmEmpty.hidden = dms.length > 0;
    updateTitle();
  }

  /** The connection indicator: connecting, reconnecting, online or offline. */
  function setConn(status, text) {
    els.conn.dataset.state = status;
    els.connText.textContent = text;
    els.conn.title = status === 'online' ? 'Connected' : 'Click to reconnect now';
  }

  function showMe(me) {
    els.meName.textContent = me.display_name || me.username;
    els.meName.dataset.nameOf = me.id;
    els.meUsername.textContent = `@${me.username}`;
    els.meAvatar.textContent = initials(me.display_name || me.username);
    els.meAvatar.style.background = colorFor(me.id);
  }

  function openSideForm(mode) {
    if (sideMode === mode && !els.sideForm.hidden) {
      closeSideForm();
      return;
    }
    sideMode = mode;
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
    sideMode = null;
    els.sideForm.hidden = true;
  }

  async function submitSideForm() {
    const mode = sideMode;
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
        channel = await directory.createGroup(value);
      } else if (mode === 'join') {
        channel = await directory.joinGroup(value);
      } else if (mode === 'dm') {
        const username = value.replace(/^@/, '');
        if (store.me && username.toLowerCase() === store.me.username.toLowerCase()) {
          fail("That's you. Enter someone else's username.");
          return;
        }
        channel = await directory.openDm(username);
      }
      const ch = directory.setChannel(channel);
      closeSideForm();
      renderChannelList();
      if (ch) actions.select(ch.id);
    } catch (e) {
      fail(e.message || 'Something went wrong.');
    } finally {
      els.sideFormSubmit.disabled = false;
    }
  }

  function wire() {
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
  }

  wire();
  store.on('channels', renderChannelList);
  return { renderChannelList, updateTitle, setConn, showMe };
}
