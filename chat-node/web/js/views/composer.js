// The composer: the message box (Enter sends, Shift+Enter a new line, typing notices to the
// others), files staged for the next message (picked, pasted or dropped; uploaded at once),
// the reply bar, and the checks a message passes before it joins the outbox (the node's
// limits from GET /v1/limits).

import { fmtSize, randomString, scalarLength, snippet } from '../util.js';
import { h } from './dom.js';

// The composer tells the others we type at most this often (and never more often than the
// node allows, typing_min_interval_ms).
const TYPING_SEND_EVERY_MS = 3000;
const MAX_INPUT_HEIGHT_PX = 180;

/**
 * upload(file): resolves to the stored Attachment; outbox: add, uploaded; socket: isReady,
 * request (typing notices).
 */
export function createComposer({ store, els, upload, outbox, socket }) {
  function showError(msg) {
    els.composerError.hidden = !msg;
    els.composerError.textContent = msg || '';
  }

  function autosize() {
    els.input.style.height = 'auto';
    els.input.style.height = `${Math.min(els.input.scrollHeight, MAX_INPUT_HEIGHT_PX)}px`;
  }

  function renderReplyBar() {
    const r = store.replyTo;
    els.replyBar.hidden = !r;
    if (!r) return;
    els.replyText.replaceChildren('Replying to ', h('b', { text: store.displayName(r.author_id) }), `: ${snippet(r.text)}`);
  }

  function stagedChip(ch, s) {
    return h(
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
    );
  }

  function renderStaged() {
    const ch = store.current();
    const staged = ch ? ch.draft.staged : [];
    els.staged.replaceChildren(...staged.map((s) => stagedChip(ch, s)));
    if (!staged.some((s) => s.status === 'failed')) showError(null);
  }

  /** Stages files for the open channel's next message and starts their uploads. */
  function addFiles(files) {
    const ch = store.current();
    if (!ch || !ch.channel) return;
    for (const file of files) {
      const s = { key: randomString(), file, status: 'uploading', attachment: null, error: null };
      s.promise = upload(file)
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

  /** Why the message cannot be sent as it is, or null. */
  function refusal(text, staged) {
    const { text_max_chars: maxText, attachments_max: maxFiles } = store.limits;
    if (staged.some((s) => s.status === 'failed')) return 'An upload failed. Remove it (×) before sending.';
    if (staged.length > maxFiles) return `At most ${maxFiles} files per message.`;
    const len = scalarLength(text);
    if (len > maxText) return `Messages are limited to ${maxText} characters (this one has ${len}).`;
    return null;
  }

  async function send() {
    const ch = store.current();
    if (!ch || !ch.channel) return;
    const text = els.input.value.trim();
    const staged = ch.draft.staged.slice();
    if (!text && !staged.length) return;
    const refused = refusal(text, staged);
    showError(refused);
    if (refused) return;
    const p = {
      cmid: randomString(),
      channel_id: ch.id,
      text,
      attachments: [],
      staged,
      reply_to: store.replyTo ? store.replyTo.id : null,
      status: staged.some((s) => s.status !== 'ready') ? 'uploading' : 'queued',
      error: null,
      createdAt: new Date().toISOString(),
    };
    outbox.add(p);
    els.input.value = '';
    autosize();
    ch.draft = { text: '', staged: [] };
    store.setReplyTo(null);
    renderStaged();
    store.emit('conversation', { now: true, toBottom: true });
    await Promise.all(staged.map((s) => s.promise));
    const failed = staged.find((s) => s.status !== 'ready');
    if (failed) {
      outbox.uploaded(p, failed.error || failed.file.name);
      return;
    }
    p.attachments = staged.map((s) => s.attachment);
    if (!p.text) {
      // A message of files only is named after them.
      const names = staged.map((s) => s.attachment.filename || s.file.name).join(', ');
      p.text = [...names].slice(0, store.limits.text_max_chars).join('') || 'file';
    }
    outbox.uploaded(p, null);
  }

  function onInput() {
    autosize();
    const ch = store.current();
    if (!ch) return;
    ch.draft.text = els.input.value;
    if (!els.input.value.trim() || !socket.isReady()) return;
    const now = Date.now();
    if (now - ch.lastTypingSent < Math.max(TYPING_SEND_EVERY_MS, store.limits.typing_min_interval_ms)) return;
    ch.lastTypingSent = now;
    socket.request('typing', { channel_id: ch.id }).catch(() => {});
  }

  /** Shows channel `ch`'s draft (or clears the composer when none is open). */
  function open(ch) {
    renderReplyBar();
    showError(null);
    if (!ch) return;
    els.input.value = ch.draft.text || '';
    autosize();
    renderStaged();
  }

  function wire() {
    els.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      send();
    });
    els.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      } else if (e.key === 'Escape' && store.replyTo) {
        store.setReplyTo(null);
      }
    });
    els.input.addEventListener('input', onInput);
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
    els.replyCancel.addEventListener('click', () => store.setReplyTo(null));
  }

  wire();
  store.on('reply', renderReplyBar);
  return { open, addFiles, renderReplyBar };
}
