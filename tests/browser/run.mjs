// SPDX-License-Identifier: MPL-2.0
//
// Drives the browser test (tests/browser/README.md): serves the page and livekit-client's files
// on 127.0.0.1, starts Debian's Chromium headless through playwright-core, and for each case
// starts tests/browser/sender.py (GStreamer: streamencrypt mode=livekit, streamcryptrtpvp8pay,
// webrtcbin) and relays the signalling between it and the page. It then walks the sender through
// SMPTE bars and a sequence of solid colours, each time waiting until the receiver with the right
// key presents it, and prints one JSON report on stdout for tests/browser.rs to judge.
//
//   node tests/browser/run.mjs [case ...]     cases: raw-key, passphrase (default: both)
//
// Exit 0 with {"ok": true, "cases": [...]} when every case ran to its end; 1 with
// {"ok": false, "error", "cases"} (what was seen so far) when something failed or timed out.
// Environment: CHROMIUM (default /usr/bin/chromium), PYTHON (default /usr/bin/python3),
// BROWSER_TEST_TIMEOUT_MS (default 90000, for the whole run), GST_PLUGIN_PATH for the sender,
// BROWSER_TEST_NETWORK (reported: where scripts/browser-test.sh ran this).

import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const livekitDist = join(here, '../livekit/node_modules/livekit-client/dist');
const deadline = Date.now() + Number(process.env.BROWSER_TEST_TIMEOUT_MS ?? 90000);
const remaining = () => Math.max(1, deadline - Date.now());
// Each wait for the browser: a picture normally takes a third of a second, connecting less.
const STEP_TIMEOUT_MS = 30000;
const stepTimeout = () => Math.min(STEP_TIMEOUT_MS, remaining());

// Test keys only. The wrong ones differ from the right ones in one bit or one character.
const RAW_KEY = '6c6976656b69742d65326565207465737420726177206b65792030313233340a';
const WRONG_RAW_KEY = '6c6976656b69742d65326565207465737420726177206b65792030313233340b';
const PASSPHRASE = 'streamcrypt browser test passphrase';
const WRONG_PASSPHRASE = 'streamcrypt browser test passphrasf';
const COLOURS = ['ff0000', '00ff00', '0000ff', 'ffffff'];
// Each picture stays until the receiver with the right key has presented it this many times
// (a third of a second at 30 fps, almost all delta frames), while the others get the same packets.
const FRAMES_PER_PICTURE = 10;

// The first receiver of each case has the right key and is the one watched; the sender passes on
// only its keyframe requests (sender.py --keyframe-requests-from 0): the others never decode a
// frame, so they keep asking, and would turn the stream into keyframes only.
const CASES = {
  // Raw key (HKDF) at key index 3, per-participant keys (BaseKeyProvider).
  'raw-key': {
    keyId: 3,
    senderEnv: { STREAMCRYPT_KEY: RAW_KEY },
    receivers: [
      { name: 'livekit', e2ee: { provider: 'base', key: RAW_KEY, keyIndex: 3 } },
      { name: 'wrong-key', e2ee: { provider: 'base', key: WRONG_RAW_KEY, keyIndex: 3 } },
      { name: 'wrong-key-index', e2ee: { provider: 'base', key: RAW_KEY, keyIndex: 2 } },
      { name: 'no-e2ee', e2ee: null },
    ],
  },
  // Passphrase (PBKDF2) at key index 0, a shared key (ExternalE2EEKeyProvider), as LiveKit's
  // example apps join an encrypted room.
  passphrase: {
    keyId: 0,
    senderEnv: { STREAMCRYPT_PASSPHRASE: PASSPHRASE },
    receivers: [
      { name: 'livekit', e2ee: { provider: 'external', passphrase: PASSPHRASE } },
      {
        name: 'wrong-passphrase',
        e2ee: { provider: 'external', passphrase: WRONG_PASSPHRASE }
      },
    ],
  },
};

const FILES = {
  '/': [join(here, 'receiver.html'), 'text/html'],
  '/receiver.js': [join(here, 'receiver.js'), 'text/javascript'],
};
// livekit-client's published files, as an app serves them: the library, and the E2EE worker.
for (const file of ['livekit-client.umd.js', 'livekit-client.e2ee.worker.mjs']) {
  FILES[`/livekit/${file}`] = [join(livekitDist, file), 'text/javascript'];
}

function serve() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://localhost').pathname;
    const file = FILES[path];
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    try {
      res.writeHead(200, { 'content-type': file[1] }).end(await readFile(file[0]));
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** sender.py as a child: its JSON events, one at a time, and a way to send it commands. */
class Sender {
  constructor(testCase, peers) {
    this.events = [];
    this.waiting = null;
    this.stderr = '';
    this.child = spawn(process.env.PYTHON ?? '/usr/bin/python3', [
      join(here, 'sender.py'), '--peers', String(peers), '--key-id', String(testCase.keyId),
      '--keyframe-requests-from', '0',
    ], { env: { ...process.env, ...testCase.senderEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(({ code, signal }) => this.push({ event: 'exit', code, signal }));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      try {
        this.push(JSON.parse(line));
      } catch {
        this.push({ event: 'noise', line });
      }
    });
  }

  push(event) {
    this.events.push(event);
    this.waiting?.();
  }

  /** The next event named `name`; fails on the sender's error or exit. */
  async next(name, what) {
    const failure = () => this.events.find((e) => e.event === 'error' || e.event === 'exit');
    for (;;) {
      const found = this.events.find((e) => e.event === name && !e.taken);
      if (found) {
        found.taken = true;
        return found;
      }
      const failed = failure();
      if (failed) {
        const how = failed.event === 'error' ? `failed: ${failed.message}` : `exited (${failed.code ?? failed.signal})`;
        throw new Error(`sender ${how} while ${what}; stderr: ${this.stderr.trim() || '(empty)'}`);
      }
      let timer;
      await new Promise((resolve, reject) => {
        this.waiting = resolve;
        timer = setTimeout(() => reject(new Error(`timed out ${what}`)), remaining());
      }).finally(() => clearTimeout(timer));
    }
  }

  send(command) {
    this.child.stdin.write(`${JSON.stringify(command)}\n`);
  }

  /** Closes stdin (the sender reports its stats and exits); kills it if it has not in 5 s. */
  async stop() {
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    const stats = await this.next('stats', 'waiting for the sender to stop').catch(() => null);
    const exit = await this.exited;
    clearTimeout(timer);
    return { stats, exit, warnings: this.events.filter((e) => e.event === 'warning').map((e) => e.message) };
  }
}

async function runCase(browser, origin, name, result) {
  const testCase = CASES[name];
  if (!testCase) throw new Error(`unknown case ${name} (known: ${Object.keys(CASES).join(', ')})`);
  const started = Date.now();
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && pageErrors.length < 20) pageErrors.push(`console: ${m.text()}`);
  });
  const sender = new Sender(testCase, testCase.receivers.length);
  Object.assign(result, {
    case: name, keyId: testCase.keyId, pictures: ['smpte', ...COLOURS], framesPerPicture: FRAMES_PER_PICTURE,
    steps: [], pageErrors,
  });
  const step = (what) => result.steps.push({ what, atMs: Date.now() - started });
  try {
    await page.goto(`${origin}/`, { timeout: remaining() });
    await page.waitForFunction(() => window.streamcrypt, null, { timeout: remaining() });
    const { offers } = await sender.next('offers', 'waiting for the sender\'s offers');
    step('offers');
    const setup = await page.evaluate(([specs, o, c]) => window.streamcrypt.answer(specs, o, c),
      [testCase.receivers, offers, COLOURS]);
    Object.assign(result, { livekitClient: setup.livekitClient, userAgent: setup.userAgent });
    sender.send({ answers: setup.answers });
    step('answers');
    await page.evaluate((t) => window.streamcrypt.waitConnected(t), stepTimeout());
    step('connected');
    // The sender started with the bars; the receiver with the right key must show them first.
    const presented = (state) => page.evaluate(([s, n, t]) => window.streamcrypt.waitFor('livekit', s, n, t),
      [state, FRAMES_PER_PICTURE, stepTimeout()]);
    await presented('smpte');
    step('smpte');
    for (const colour of COLOURS) {
      sender.send({ colour });
      await sender.next('showing', `waiting for the sender to switch to ${colour}`);
      await presented(colour);
      step(colour);
    }
    result.completed = true;
  } finally {
    result.receivers = await page.evaluate(() => window.streamcrypt?.report()).catch((e) => `no report: ${e}`);
    result.sender = await sender.stop();
    result.seconds = (Date.now() - started) / 1000;
    await page.close().catch(() => {});
  }
}

async function main() {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(CASES);
  const report = { ok: false, cases: [] };
  const started = Date.now();
  let server;
  let browser;
  try {
    server = await serve();
    const origin = `http://127.0.0.1:${server.address().port}`;
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      timeout: remaining(),
      // As root, in a network namespace that has only lo (tests/browser/README.md).
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
        '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
      ],
    });
    report.browser = browser.version();
    report.network = process.env.BROWSER_TEST_NETWORK ?? 'as started';
    for (const name of names) {
      const result = {};
      report.cases.push(result);
      await runCase(browser, origin, name, result);
    }
    report.ok = true;
  } catch (e) {
    report.error = String(e?.message ?? e);
  } finally {
    report.seconds = (Date.now() - started) / 1000;
    await browser?.close().catch(() => {});
    server?.close();
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exitCode = report.ok ? 0 : 1;
}

await main();
