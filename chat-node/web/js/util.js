// Pure helpers shared by every module: IDs (decimal strings compared as BigInt), random
// keys, text lengths and the formatting of names, times and sizes. No DOM, no state.

/** A Snowflake ID: a decimal string of at most 20 digits. */
export const isId = (v) => typeof v === 'string' && /^\d{1,20}$/.test(v);

/** Orders two IDs (-1, 0, 1); IDs sort by creation time. */
export function cmpId(a, b) {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The larger of two IDs, either of which may be null. */
export function maxId(a, b) {
  if (a == null) return b;
  if (b == null) return a;
  return BigInt(a) >= BigInt(b) ? a : b;
}

/** A random string; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function randomString() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Only http(s) URLs (relative ones resolve against `base`, the page) reach href/src. */
export function safeUrl(u, base) {
  if (typeof u !== 'string' || !u) return null;
  try {
    const url = new URL(u, base);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/** Length in Unicode scalar values, as the server counts message text. */
export const scalarLength = (s) => [...s].length;

/** One line of at most 80 characters, for reply previews. */
export function snippet(text) {
  const s = String(text || '').replace(/\s+/g, ' ').trim();
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

/** "A", "A and B", "A, B and C", "A, B and 3 others". */
export function joinNames(names) {
  if (names.length <= 1) return names.join('');
  if (names.length === 2) return `${names[0]} and ${names[1]}`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

export function fmtTime(d) {
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** The local calendar day of a date, to compare two dates by day. */
export function dayKey(d) {
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "Today", "Yesterday" or a long date (with the year when not this one). */
export function fmtDay(d) {
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(d) === dayKey(now)) return 'Today';
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  const opts = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

/** "just now", "5 min ago", "3 h ago" or a short date, for an RFC 3339 timestamp. */
export function fmtAgo(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

/** A byte count as B, KB or MB. */
export function fmtSize(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Up to two initials of a display name, for avatars. */
export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const first = [...(parts[0] || '?')][0] || '?';
  const second = parts.length > 1 ? [...parts[parts.length - 1]][0] : '';
  return (first + (second || '')).toUpperCase();
}

const AVATAR_COLORS = ['#4f5bd5', '#d5534f', '#2f9e6e', '#c27c0e', '#8e4fd5', '#1f8fb8', '#c2417f', '#5f7d1a', '#b35c2e', '#3c6fd1'];

/** A stable avatar color for a user ID. */
export function colorFor(id) {
  // FNV-1a, so neighbouring IDs get unrelated colors.
  let hash = 0x811c9dc5;
  for (const c of String(id)) hash = Math.imul(hash ^ c.charCodeAt(0), 0x01000193) >>> 0;
  hash = (hash ^ (hash >>> 13)) >>> 0;
  return AVATAR_COLORS[hash % AVATAR_COLORS.length];
}
