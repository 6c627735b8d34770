'use strict';
// Contract check for one peer server (see README.md): starts the peer on port 0, drives it over
// loopback with the `ws` client from ws-node/node_modules, and stops it with SIGTERM.
//
//   node bench/peers/smoke.js [--viewers N] -- COMMAND [ARGS...]
//
// The peer is started as COMMAND ARGS --viewer-addr 127.0.0.1:0 --api-addr 127.0.0.1:0. Every
// wait is bounded; the script prints each check and exits non-zero on the first failure.

const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const assert = require('node:assert/strict');
const WebSocket = require(path.join(__dirname, 'ws-node', 'node_modules', 'ws'));

const STEP_TIMEOUT_MS = 15000;
/** 64 KiB broadcasts sent at most while waiting for a non-reading viewer to be dropped. */
const STUCK_MAX_PUBLISHES = 1000;

function parseArgs(argv) {
  const sep = argv.indexOf('--');
  if (sep < 0 || sep === argv.length - 1) {
    throw new Error('usage: node smoke.js [--viewers N] -- COMMAND [ARGS...]');
  }
  const opts = { viewers: 2000, command: argv[sep + 1], args: argv.slice(sep + 2) };
  const own = argv.slice(0, sep);
  for (let i = 0; i < own.length; i++) {
    if (own[i] === '--viewers') opts.viewers = Number(own[++i]);
    else throw new Error(`unknown argument ${own[i]}`);
  }
  return opts;
}

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function startPeer(command, args) {
  const child = spawn(command, [...args, '--viewer-addr', '127.0.0.1:0', '--api-addr', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /listening viewer=(\S+) api=(\S+)/.exec(out);
      if (m) resolve({ viewer: m[1], api: m[2] });
    });
    child.on('exit', (code) => reject(new Error(`peer exited (${code}) before listening`)));
  });
  return { child, exited, listening };
}

function request(addr, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
    const req = http.request(
      { host, port, method, path: urlPath, headers: { authorization: 'Bearer ignored' }, agent: false },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode, body: data }));
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A viewer client that keeps every text message in order and lets a test await the next one. */
class Viewer {
  constructor(url) {
    this.messages = [];
    this.waiters = [];
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.closed = new Promise((resolve) => this.ws.on('close', (code) => resolve(code)));
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.messages.push(JSON.parse(data.toString()));
      this.waiters.splice(0).forEach((w) => w());
    });
    this.ws.on('error', () => {});
  }

  async next(what) {
    while (this.messages.length === 0) {
      await withTimeout(new Promise((r) => this.waiters.push(r)), what);
    }
    return this.messages.shift();
  }
}

async function connectViewers(viewerAddr, n) {
  const viewers = [];
  // Connect in waves so the client does not trip the listen backlog.
  const wave = 500;
  for (let i = 0; i < n; i += wave) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + wave); j++) {
      const v = new Viewer(`ws://${viewerAddr}/v1/viewer?stream=s1&region=r${j % 4}`);
      viewers.push(v);
      batch.push(
        v.next(`welcome for viewer ${j}`).then((w) => {
          v.welcome = w;
        }),
      );
    }
    await Promise.all(batch);
  }
  return viewers;
}

/** A viewer that completes the handshake and then never reads again. */
function stuckViewer(viewerAddr) {
  const sep = viewerAddr.lastIndexOf(':');
  const socket = net.connect(Number(viewerAddr.slice(sep + 1)), viewerAddr.slice(0, sep));
  socket.on('error', () => {});
  socket.write(
    'GET /v1/viewer?stream=stuck HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  return withTimeout(
    new Promise((resolve) => {
      socket.once('data', (chunk) => {
        assert.match(chunk.toString('latin1'), /^HTTP\/1\.1 101/);
        socket.pause();
        resolve(socket);
      });
    }),
    'stuck viewer handshake',
  );
}

async function statsUntil(apiAddr, want) {
  for (;;) {
    const res = await request(apiAddr, 'GET', '/api/stats');
    assert.equal(res.status, 200);
    if (JSON.parse(res.body).connections === want) return;
    await new Promise((r) => setImmediate(r));
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const peer = startPeer(opts.command, opts.args);
  const check = (name) => console.log(`ok   ${name}`);
  try {
    const addrs = await withTimeout(peer.listening, 'listening line');
    check(`listening viewer=${addrs.viewer} api=${addrs.api}`);

    const [a, b] = await connectViewers(addrs.viewer, 2);
    const ids = [a, b].map((v) => v.welcome);
    for (const w of ids) assert.equal(w.type, 'welcome');
    assert.notEqual(ids[0].viewer, ids[1].viewer);
    check(`welcome ${JSON.stringify(ids[0])} / ${JSON.stringify(ids[1])}`);

    await withTimeout(statsUntil(addrs.api, 2), 'stats == 2');
    check('GET /api/stats counts 2');

    const payload = { t: 1234567890123, seq: 1, text: 'h\u00e9llo "quoted"', list: [1, 2.5, null] };
    let res = await request(addrs.api, 'POST', '/api/groups/global/messages', JSON.stringify({ payload }));
    assert.equal(res.status, 202, res.body);
    assert.deepEqual(JSON.parse(res.body), { group: 'global', members: 2 });
    check(`POST message -> 202 ${res.body}`);
    for (const v of [a, b]) {
      assert.deepEqual(await v.next('broadcast'), { type: 'message', group: 'global', payload });
    }
    check('both viewers received the message with the payload intact');

    a.ws.send('not json');
    a.ws.send('{"type":"telemetry","bitrate_kbps":1}');
    a.ws.send('{"type":"vote","poll":"p1","choice":3}');
    assert.deepEqual(await a.next('voted'), { type: 'voted', poll: 'p1', choice: 3 });
    check('garbage and telemetry ignored; vote answered with voted');

    const pong = new Promise((resolve) => a.ws.once('pong', (data) => resolve(data.toString())));
    a.ws.ping('abc');
    assert.equal(await withTimeout(pong, 'pong'), 'abc');
    check('ping answered with pong');

    res = await request(addrs.api, 'GET', '/api/nope');
    assert.equal(res.status, 404);
    res = await request(addrs.api, 'POST', '/api/groups/global/messages', '{"payload":');
    assert.equal(res.status, 400);
    check('unknown path -> 404, bad JSON -> 400');

    b.ws.close(1000);
    assert.equal(await withTimeout(b.closed, 'close handshake'), 1000);
    await withTimeout(statsUntil(addrs.api, 1), 'stats == 1 after close');
    check('close handshake completed; stats back to 1');

    const stuck = await stuckViewer(addrs.viewer);
    await withTimeout(statsUntil(addrs.api, 2), 'stats == 2 with a stuck viewer');
    const big = 'x'.repeat(64 << 10);
    let sent = 0;
    for (; sent < STUCK_MAX_PUBLISHES; ) {
      sent += 1;
      res = await request(addrs.api, 'POST', '/api/groups/global/messages', `{"payload":{"seq":${sent},"pad":"${big}"}}`);
      assert.equal(res.status, 202);
      const got = await a.next(`big message ${sent}`);
      assert.equal(got.payload.seq, sent);
      if (JSON.parse(res.body).members === 1) break;
    }
    assert.ok(sent < STUCK_MAX_PUBLISHES, 'a viewer that never reads was never dropped');
    stuck.destroy();
    check(`viewer that never reads dropped after ${sent} x 64 KiB; the reading viewer got all ${sent}`);

    const started = Date.now();
    const many = await connectViewers(addrs.viewer, opts.viewers);
    await withTimeout(statsUntil(addrs.api, opts.viewers + 1), `stats == ${opts.viewers + 1}`);
    check(`${opts.viewers} more viewers connected in ${Date.now() - started} ms`);
    for (let seq = 2; seq <= 6; seq++) {
      res = await request(addrs.api, 'POST', '/api/groups/global/messages', `{"payload":{"seq":${seq}}}`);
      assert.equal(res.status, 202);
      assert.equal(JSON.parse(res.body).members, opts.viewers + 1);
    }
    for (const v of [a, ...many]) {
      for (let seq = 2; seq <= 6; seq++) {
        assert.deepEqual(await v.next(`seq ${seq}`), { type: 'message', group: 'global', payload: { seq } });
      }
    }
    check(`5 broadcasts reached all ${opts.viewers + 1} viewers in order`);

    peer.child.kill('SIGTERM');
    const exit = await withTimeout(peer.exited, 'exit after SIGTERM', 5000);
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);
    const codes = await withTimeout(Promise.all([a, ...many].map((v) => v.closed)), 'viewers closed');
    const goingAway = codes.filter((c) => c === 1001).length;
    check(`SIGTERM -> exit 0; ${goingAway}/${codes.length} viewers got close 1001`);
    console.log('smoke: all checks passed');
  } catch (e) {
    console.error(`FAIL ${e.stack || e}`);
    peer.child.kill('SIGKILL');
    process.exitCode = 1;
  }
  process.exit();
}

main();
