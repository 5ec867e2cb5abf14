// One message in the list: author, time, reply preview, text with links, attachments
// (images with a fresh URL on error) and the "Seen by" line; and an unsent message with its
// state and its Retry / Discard buttons.

import { fmtSize, fmtTime, isId, safeUrl, snippet } from '../util.js';
import { avatar, h, nameSpan } from './dom.js';

/** Text with its http(s) URLs as links (text nodes only, never HTML). */
function linkify(text) {
  const out = [];
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    let url = m[0];
    const trail = url.match(/[).,!?:;\]]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    const href = safeUrl(url, location.href);
    if (!href) continue;
    out.push(text.slice(last, m.index));
    out.push(h('a', { href, text: url, target: '_blank', rel: 'noopener noreferrer' }));
    last = m.index + url.length;
    re.lastIndex = last;
  }
  out.push(text.slice(last));
  return out.filter((x) => x !== '');
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

/**
 * Builders of message elements. request: the REST client (fresh download URLs);
 * onImageLoad(): an image got its size (keep the list at its end); onReply(message);
 * onRetry(pending), onDiscard(pending).
 */
export function createMessageViews({ store, request, onImageLoad, onReply, onRetry, onDiscard }) {
  function buildAttachment(att) {
    const url = safeUrl(att.url, location.href);
    const name = att.filename || 'file';
    if (String(att.content_type || '').startsWith('image/') && url) {
      const img = h('img', { src: url, alt: name, loading: 'lazy', decoding: 'async', data: { testid: 'message-image', attachmentId: att.id } });
      let retried = false;
      img.addEventListener('load', onImageLoad);
      img.addEventListener('error', async () => {
        // The download URL is time-limited: ask for a fresh one, once.
        if (retried || !isId(att.id)) return;
        retried = true;
        try {
          const r = await request('GET', `/media/${att.id}`);
          const fresh = r && r.attachment && safeUrl(r.attachment.url, location.href);
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

  /** Fills a message's reply preview; marks it to fill again while the original is not loaded. */
  function fillReply(ch, el, m) {
    const ref = ch.msgs.get(m.reply_to);
    const box = el._reply;
    if (!box) return;
    if (ref) {
      box.replaceChildren('↪ ', h('b', { text: store.displayName(ref.author_id), data: { nameOf: ref.author_id } }), ` ${snippet(ref.text)}`);
      el._replyPending = false;
    } else {
      box.textContent = '↪ Reply to an earlier message';
      el._replyPending = true;
    }
  }

  /** A message of channel `ch`; `elementOf(key)` finds another message's element (replies). */
  function buildMessage(ch, m, elementOf) {
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
              const target = elementOf(`m${m.reply_to}`);
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
        avatar(store, m.author_id),
        h('span', { class: 'msg-gutter', text: time, title: full, attrs: { 'aria-hidden': 'true' } }),
        h(
          'div',
          { class: 'msg-body' },
          h(
            'div',
            { class: 'msg-head' },
            h('span', { class: 'author', text: store.displayName(m.author_id), data: { nameOf: m.author_id, testid: 'message-author' } }),
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
          h('button', { type: 'button', class: 'btn btn-ghost', text: 'Reply', on: { click: () => onReply(m) } }),
        ),
      ),
    );
    el._day = dayEl;
    el._seen = seen;
    el._reply = reply;
    if (reply) fillReply(ch, el, m);
    return el;
  }

  /** An unsent message (see outbox.js): its text, its files and its state. */
  function buildPending(p) {
    const me = store.me.id;
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
        actions.push(h('button', { type: 'button', class: 'btn btn-small', text: 'Retry', on: { click: () => onRetry(p) } }));
      }
      actions.push(h('button', { type: 'button', class: 'btn btn-small btn-ghost', text: 'Discard', on: { click: () => onDiscard(p) } }));
    }
    const names = (p.staged || []).map((s) => s.file.name);
    return h(
      'div',
      { class: `msg pending${p.status === 'failed' ? ' failed' : ''}`, data: { testid: 'message-pending', status: p.status } },
      h('div', { class: 'day-divider' }),
      h(
        'div',
        { class: 'msg-row' },
        avatar(store, me),
        h('span', { class: 'msg-gutter' }),
        h(
          'div',
          { class: 'msg-body' },
          h('div', { class: 'msg-head' }, nameSpan(store, me)),
          p.text ? h('div', { class: 'msg-text' }, p.text) : null,
          names.length ? h('div', { class: 'attachments' }, names.map((n) => h('span', { class: 'chip' }, h('span', { class: 'chip-name', text: n })))) : null,
          h('div', { class: 'msg-status' }, statusText, ...actions),
        ),
      ),
    );
  }

  return { buildMessage, buildPending, fillReply };
}
