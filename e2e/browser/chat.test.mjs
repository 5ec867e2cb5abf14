// Headless-browser test of the chat page that chat-node serves: two users, two browser
// contexts, one embedded chat-node started from its binary.
//
//   PARLEY_CHAT_NODE_BIN  the chat-node binary (default <repo>/target/debug/chat-node)
//   CHROMIUM_PATH         the browser (default /usr/bin/chromium, Debian's package)
//   PARLEY_E2E_KEEP=1     keep the server's data dir and print where it is

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const BIN = process.env.PARLEY_CHAT_NODE_BIN || path.join(repo, 'target', 'debug', 'chat-node');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- the server

/** Starts chat-node on a free port with a fresh data dir; resolves once it prints its URL. */
function startServer() {
  if (!fs.existsSync(BIN)) {
    throw new Error(`no chat-node binary at ${BIN}: build it (cargo build -p chat-node) or set PARLEY_CHAT_NODE_BIN`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-browser-'));
  const child = spawn(BIN, [], {
    env: {
      ...process.env,
      PARLEY_LISTEN: '127.0.0.1:0',
      PARLEY_DATA_DIR: dataDir,
      PARLEY_HEARTBEAT_INTERVAL_MS: '2000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const keep = (stream, name) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(`[${name}] ${line}`);
        if (log.length > 400) log.shift();
        server.emit(line);
      }
    });
  };
  const listeners = new Set();
  const server = {
    child,
    dataDir,
    log,
    emit: (line) => listeners.forEach((fn) => fn(line)),
    url: null,
  };
  keep(child.stdout, 'stdout');
  keep(child.stderr, 'stderr');
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat-node did not print its URL within 30 s\n${log.join('\n')}`)), 30_000);
    listeners.add((line) => {
      const m = /parley chat-node listening on (https?:\/\/\S+)/i.exec(line);
      if (m && !server.url) {
        clearTimeout(timer);
        server.url = m[1].replace(/\/+$/, '');
        resolve(server);
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`chat-node exited early (code ${code}, signal ${signal})\n${log.join('\n')}`));
    });
  });
  return { server, ready };
}

async function stopServer(server) {
  if (!server) return;
  const { child } = server;
  if (child.exitCode == null && child.signalCode == null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  if (process.env.PARLEY_E2E_KEEP) console.log(`# data dir kept at ${server.dataDir}`);
  else fs.rmSync(server.dataDir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- a PNG made here

function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A size×size RGBA PNG: a colored square with a diagonal. */
function makePng(size = 24) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  const rows = [];
  for (let y = 0; y < size; y++) {
    const row = Buffer.alloc(1 + size * 4);
    for (let x = 0; x < size; x++) {
      const on = Math.abs(x - y) < 3;
      row.set(on ? [255, 255, 255, 255] : [79, 91, 213, 255], 1 + x * 4);
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------------------------------------------------------------- page helpers

// Wraps WebSocket so the test can drop a page's socket and hold it offline for a while.
const SOCKET_HOOK = `(() => {
  const Native = window.WebSocket;
  const hook = { sockets: [], block: false };
  window.__parleyTest = hook;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(hook.block ? String(url).replace(/\\/v1\\/ws$/, '/v1/ws-blocked-by-test') : url, protocols);
      hook.sockets.push(this);
    }
  };
})();`;

const byTestId = (scope, id) => scope.locator(`[data-testid="${id}"]`);

async function register(page, baseUrl, username, displayName) {
  await page.goto(`${baseUrl}/`);
  await byTestId(page, 'auth-mode-register').click();
  await byTestId(page, 'auth-username').fill(username);
  await byTestId(page, 'auth-password').fill('correct horse battery staple');
  await byTestId(page, 'auth-display-name').fill(displayName);
  await byTestId(page, 'auth-submit').click();
  await byTestId(page, 'me-name').filter({ hasText: displayName }).waitFor();
  await waitOnline(page);
}

const waitOnline = (page) => page.locator('[data-testid="conn-status"][data-state="online"]').waitFor();

function messageItem(page, text) {
  return byTestId(page, 'message-item').filter({ hasText: text });
}

async function sideForm(page, button, value) {
  await byTestId(page, button).click();
  await byTestId(page, 'side-form-input').fill(value);
  await byTestId(page, 'side-form-submit').click();
}

async function send(page, text) {
  await byTestId(page, 'message-input').fill(text);
  await byTestId(page, 'send-button').click();
  // Acknowledged by the server: the real message replaced the pending one.
  await messageItem(page, text).waitFor();
}

async function authorOf(item) {
  return (await byTestId(item, 'message-author').textContent()).trim();
}

// ---------------------------------------------------------------- the test

test('two users chat through the web page', { timeout: 120_000 }, async (t) => {
  const started = Date.now();
  const { server, ready } = startServer();
  const pageErrors = [];
  let browser;
  try {
    await ready;
    const base = server.url;
    t.diagnostic(`chat-node at ${base}`);

    browser = await chromium.launch({
      headless: true,
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const open = async (who) => {
      const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
      await context.addInitScript(SOCKET_HOOK);
      const page = await context.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') t.diagnostic(`${who} console: ${msg.text()}`);
      });
      return page;
    };
    const alice = await open('alice');
    const bob = await open('bob');
    const bobHellos = [];
    bob.on('websocket', (ws) => {
      ws.on('framesent', (f) => {
        try {
          const frame = JSON.parse(String(f.payload));
          if (frame.op === 'hello') bobHellos.push(frame.d);
        } catch {
          /* not JSON */
        }
      });
    });

    let failed = false;
    const step = async (name, fn) => {
      await t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
        try {
          await fn();
        } catch (e) {
          failed = true;
          throw e;
        }
      });
    };

    await step('a wrong sign-in shows the server error', async () => {
      await bob.goto(`${base}/`);
      await byTestId(bob, 'auth-username').fill('nobody');
      await byTestId(bob, 'auth-password').fill('wrong password');
      await byTestId(bob, 'auth-submit').click();
      const err = byTestId(bob, 'auth-error');
      await err.waitFor();
      assert.notEqual((await err.textContent()).trim(), '');
    });

    await step('both users register through the page', async () => {
      await Promise.all([
        register(alice, base, 'alice', 'Alice Liddell'),
        register(bob, base, 'bob', 'Bob Builder'),
      ]);
    });

    await step('Alice creates a group and Bob joins it by name', async () => {
      await sideForm(alice, 'new-group-btn', 'lobby');
      await alice.locator('[data-testid="channel-item"][aria-current="true"]', { hasText: 'lobby' }).waitFor();
      await byTestId(alice, 'channel-title').filter({ hasText: 'lobby' }).waitFor();

      await sideForm(bob, 'join-group-btn', 'no-such-group');
      await byTestId(bob, 'side-form-error').waitFor();
      await byTestId(bob, 'side-form-input').fill('LOBBY');
      await byTestId(bob, 'side-form-submit').click();
      await bob.locator('[data-testid="channel-item"][aria-current="true"]', { hasText: 'lobby' }).waitFor();
      await byTestId(bob, 'channel-subtitle').filter({ hasText: '2 members' }).waitFor();
    });

    const hello = 'Hello Bob, welcome to the lobby!';
    await step("Bob sees Alice typing, then her message live with her name", async () => {
      const input = byTestId(alice, 'message-input');
      await input.click();
      await Promise.all([
        input.pressSequentially(hello, { delay: 15 }),
        byTestId(bob, 'typing-indicator').filter({ hasText: 'Alice Liddell is typing' }).waitFor(),
      ]);
      await input.press('Enter');
      const item = messageItem(bob, hello);
      await item.waitFor();
      assert.equal(await authorOf(item), 'Alice Liddell');
      // The indicator goes away once her message arrives.
      await bob.waitForFunction(() => document.querySelector('[data-testid="typing-indicator"]').textContent === '');
    });

    const reply = 'Hi Alice! Glad to be here.';
    await step('Bob replies, Alice sees it, and sees that Bob read hers', async () => {
      await send(bob, reply);
      const item = messageItem(alice, reply);
      await item.waitFor();
      assert.equal(await authorOf(item), 'Bob Builder');
      await byTestId(messageItem(alice, hello), 'message-seen').filter({ hasText: 'Seen by Bob Builder' }).waitFor();
    });

    await step('Alice uploads a PNG and Bob sees the image', async () => {
      await byTestId(alice, 'file-input').setInputFiles({ name: 'square.png', mimeType: 'image/png', buffer: makePng() });
      await alice.locator('[data-testid="staged-file"][data-status="ready"]').waitFor();
      await byTestId(alice, 'message-input').fill('a picture');
      await byTestId(alice, 'send-button').click();
      for (const page of [alice, bob]) {
        const img = byTestId(messageItem(page, 'a picture'), 'message-image');
        await img.waitFor();
        await img.evaluate(
          (el) =>
            new Promise((resolve, reject) => {
              if (el.complete && el.naturalWidth > 0) {
                resolve();
                return;
              }
              el.addEventListener('load', () => resolve());
              el.addEventListener('error', () => reject(new Error(`image failed to load: ${el.src}`)));
              setTimeout(() => reject(new Error(`image did not load: ${el.src}`)), 8000);
            }),
        );
        assert.equal(await img.evaluate((el) => el.naturalWidth), 24);
      }
    });

    const away = 'Did you get this while you were away?';
    await step("Bob's socket drops; he resumes and gets what he missed", async () => {
      await bob.evaluate(() => {
        window.__parleyTest.block = true;
        window.__parleyTest.sockets.at(-1).close();
      });
      await bob.locator('[data-testid="conn-status"]:not([data-state="online"])').waitFor();
      await send(alice, away);
      await bob.evaluate(() => {
        window.__parleyTest.block = false;
      });
      await waitOnline(bob);
      await messageItem(bob, away).waitFor();
      const last = bobHellos.at(-1);
      assert.ok(last && /^\d+$/.test(last.resume_after || ''), `resume_after in the last hello: ${JSON.stringify(last)}`);
      // Nothing twice.
      assert.equal(await messageItem(bob, hello).count(), 1);
    });

    await step('Bob reloads the page and the history is still there', async () => {
      await bob.reload();
      await waitOnline(bob);
      await byTestId(bob, 'channel-title').filter({ hasText: 'lobby' }).waitFor();
      for (const text of [hello, reply, away]) await messageItem(bob, text).waitFor();
      await byTestId(messageItem(bob, 'a picture'), 'message-image').waitFor();
      assert.equal(await authorOf(messageItem(bob, hello)), 'Alice Liddell');
    });

    const secret = 'psst, this one is just for you';
    await step('Alice starts a DM with Bob by username and Bob gets it', async () => {
      await sideForm(alice, 'new-dm-btn', 'bob');
      await alice.locator('[data-testid="channel-item"][data-kind="dm"][aria-current="true"]', { hasText: 'Bob Builder' }).waitFor();
      await byTestId(alice, 'channel-title').filter({ hasText: 'Bob Builder' }).waitFor();
      await send(alice, secret);

      const dm = bob.locator('[data-testid="channel-item"][data-kind="dm"]', { hasText: 'Alice Liddell' });
      await dm.waitFor();
      await dm.click();
      const item = messageItem(bob, secret);
      await item.waitFor();
      assert.equal(await authorOf(item), 'Alice Liddell');
      await send(bob, 'got it, thanks ✓');
      await messageItem(alice, 'got it, thanks ✓').waitFor();
    });

    await step('a socket closed with 4003 (token expired): the page refreshes its token and reconnects with it', async () => {
      const before = await bob.evaluate(() => localStorage.getItem('parley.token'));
      // Tokens carry whole seconds: the fresh one must come from a later second.
      await new Promise((r) => setTimeout(r, 1100));
      const hellos = bobHellos.length;
      // As if the server closed it with 4003 (a browser's own close never reports its code
      // back): the page's close handler sees 4003.
      await bob.evaluate(() => {
        const socket = window.__parleyTest.sockets.at(-1);
        const onclose = socket.onclose;
        socket.onclose = null;
        socket.close();
        onclose(new CloseEvent('close', { code: 4003, reason: 'token expired' }));
      });
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      while (bobHellos.length === hellos && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const after = await bob.evaluate(() => localStorage.getItem('parley.token'));
      assert.ok(after && after !== before, 'a fresh token was stored');
      assert.equal(bobHellos.at(-1)?.token, after, 'the reconnect said hello with the fresh token');
      await waitOnline(bob);
      await send(bob, 'still here with a fresh token');
      await messageItem(alice, 'still here with a fresh token').waitFor();
    });

    await step('screenshots', async () => {
      // Show Alice the group again, with the member list open, for a fuller picture.
      await alice.locator('[data-testid="channel-item"]', { hasText: 'lobby' }).click();
      await byTestId(alice, 'members-btn').click();
      await byTestId(alice, 'member-item').nth(1).waitFor();
      for (const [name, page] of [['alice', alice], ['bob', bob]]) {
        const file = path.join(os.tmpdir(), `parley-chat-${name}.png`);
        await page.screenshot({ path: file });
        t.diagnostic(`screenshot: ${file}`);
      }
    });

    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    t.diagnostic(`took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (e) {
    if (server.log.length) t.diagnostic(`chat-node output (last lines):\n${server.log.slice(-60).join('\n')}`);
    throw e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    await stopServer(server);
  }
});
