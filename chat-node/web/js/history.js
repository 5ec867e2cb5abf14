// History: the newest page of a channel, older pages on scroll, and the filling of seq
// gaps (after a live message skipped numbers, a resume, or ready's cursors say the server
// has more). REST only; what arrives is merged into the store.

import { gapAfter, needsCatchUp } from './store.js';

// Rounds of `after` pages one gap fill may take before it waits for the next trigger.
const MAX_FILL_ROUNDS = 20;

/**
 * request(method, path): the REST client; liveEpoch(): the socket's epoch when it is up, else
 * -1; stillLive(epoch): whether the socket stayed up since then (only then does a page move
 * the resume point, see Store.lastSeenId).
 */
export function createHistory({ store, request, liveEpoch, stillLive }) {
  const page = (ch, query, epoch) =>
    request('GET', `/channels/${ch.id}/messages?${query}`).then((r) => store.mergePage(ch, r, stillLive(epoch)));

  /** Loads a channel's newest page. */
  async function loadInitial(ch) {
    if (ch.loading) return;
    ch.loading = true;
    ch.loadError = null;
    store.emit('history', { channelId: ch.id });
    try {
      const { oldest, hasMore } = await page(ch, `limit=${store.limits.history_page_default}`, liveEpoch());
      ch.oldestId = oldest;
      ch.hasMore = hasMore && oldest != null;
      ch.loaded = true;
    } catch (e) {
      ch.loadError = e.message;
    } finally {
      ch.loading = false;
    }
    store.emit('conversation', { channelId: ch.id, now: true, toBottom: true, fill: true });
    checkCursor(ch);
  }

  /** Loads the page before the oldest loaded message. */
  async function loadOlder(ch) {
    if (!ch.loaded || ch.loading || !ch.hasMore || !ch.oldestId) return;
    ch.loading = true;
    store.emit('history', { channelId: ch.id });
    try {
      const query = `before=${ch.oldestId}&limit=${store.limits.history_page_default}`;
      const { oldest, hasMore } = await page(ch, query, liveEpoch());
      if (oldest) ch.oldestId = oldest;
      ch.hasMore = hasMore && oldest != null;
    } catch (e) {
      ch.loadError = e.message;
    } finally {
      ch.loading = false;
    }
    store.emit('conversation', { channelId: ch.id, now: true, prepend: true, fill: true });
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
      for (let round = 0; round < MAX_FILL_ROUNDS; round++) {
        const after = gapAfter(ch);
        if (after == null) break;
        const query = `after=${after}&limit=${store.limits.history_page_max}`;
        const { count, hasMore } = await page(ch, query, liveEpoch());
        store.emit('conversation', { channelId: ch.id, now: true });
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

  /** Fills a loaded channel that misses messages. */
  function checkCursor(ch) {
    if (needsCatchUp(ch)) fillGap(ch);
  }

  /** Drops a channel's messages and, when it is open, loads it again. */
  function resync(ch) {
    store.resync(ch);
    if (store.isCurrent(ch)) loadInitial(ch);
  }

  // A live message skipped seq numbers.
  store.on('gap', ({ channelId }) => {
    const ch = store.channels.get(channelId);
    if (ch) setTimeout(() => fillGap(ch), 0);
  });

  return { loadInitial, loadOlder, fillGap, checkCursor, resync };
}
