// The session token: kept in localStorage (shared by the tabs), refreshed at 80 % of its
// lifetime (POST /v1/auth/refresh), and the sign-out when the server refuses it. The only
// module that reads or writes the token.

import { ApiError } from './api.js';

export const TOKEN_KEY = 'parley.token';
export const CHANNEL_KEY = 'parley.channel';
export const FLASH_KEY = 'parley.flash';
// A token is refreshed at this share of its lifetime (from `iat` to `exp`).
const REFRESH_AT = 0.8;
// setTimeout's longest delay (about 24.8 days); longer waits are planned again.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The token's claims (`iat`, `exp`: seconds), or null when they cannot be read. */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * request(method, path, body): the REST client; onUser(user): the refresh answered with the
 * signed-in user (fresher data).
 */
export function createSession({ request, onUser }) {
  const session = {
    token: null,
    timer: null,
    inFlight: null,

    /** Takes the stored token, if any, without writing it back; plans its refresh. */
    restore() {
      const token = localStorage.getItem(TOKEN_KEY);
      if (!token) return false;
      session.token = token;
      session.scheduleRefresh();
      return true;
    },

    /** Keeps `token` (here and for the other tabs) and plans its refresh. */
    set(token) {
      session.token = token;
      localStorage.setItem(TOKEN_KEY, token);
      session.scheduleRefresh();
    },

    /** Plans a refresh at REFRESH_AT of the token's lifetime (at once when that has passed). */
    scheduleRefresh(delayMs) {
      clearTimeout(session.timer);
      session.timer = null;
      if (!session.token) return;
      let delay = delayMs;
      if (typeof delay !== 'number') {
        const c = tokenClaims(session.token);
        if (!c || !Number.isFinite(c.exp)) return;
        const now = Date.now() / 1000;
        const iat = Number.isFinite(c.iat) ? c.iat : now;
        delay = Math.max(0, (iat + (c.exp - iat) * REFRESH_AT - now) * 1000);
      }
      if (delay > MAX_TIMER_MS) {
        session.timer = setTimeout(() => session.scheduleRefresh(), MAX_TIMER_MS);
        return;
      }
      session.timer = setTimeout(() => {
        session.refresh().catch(() => {});
      }, delay);
    },

    /**
     * Trades the token for a fresh one. Resolves true when it did; a refused token (401)
     * signs out onto the sign-in form; other failures (offline, busy) are tried again while
     * the token lasts, and reject.
     */
    refresh() {
      if (session.inFlight) return session.inFlight;
      session.inFlight = (async () => {
        try {
          const r = await request('POST', '/auth/refresh');
          if (!r || !r.token) throw new ApiError('internal', 'The server answered without a token.', 0);
          session.set(r.token);
          if (r.user) onUser(r.user);
          return true;
        } catch (e) {
          if (e.status === 401) {
            session.expire();
            return false;
          }
          const c = tokenClaims(session.token || '');
          const left = c && Number.isFinite(c.exp) ? c.exp * 1000 - Date.now() : 0;
          if (left > 0) session.scheduleRefresh(Math.min(30000, left / 2) * (0.8 + Math.random() * 0.4));
          throw e;
        } finally {
          session.inFlight = null;
        }
      })();
      return session.inFlight;
    },

    /** The server refused the token: forget it and reload onto the sign-in form. */
    expire() {
      if (!session.token) return;
      session.token = null;
      localStorage.removeItem(TOKEN_KEY);
      sessionStorage.setItem(FLASH_KEY, 'Your session has ended. Please sign in again.');
      location.reload();
    },

    /** Signs out on purpose: forgets the token and the open channel. */
    clear() {
      localStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(CHANNEL_KEY);
      session.token = null;
      clearTimeout(session.timer);
    },

    /** Another tab changed the stored token: reload when it signed out, else use its token. */
    onStorage(e) {
      if (e.key !== TOKEN_KEY || !session.token) return;
      if (!e.newValue) location.reload();
      else if (e.newValue !== session.token) {
        session.token = e.newValue;
        session.scheduleRefresh();
      }
    },

    /** After the machine slept: plan the refresh from the clock again. */
    wake() {
      if (session.token && !session.inFlight) session.scheduleRefresh();
    },
  };
  return session;
}
