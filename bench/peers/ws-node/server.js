'use strict';
// peer-ws-node: the benchmark peer contract (see bench/peers/README.md) built on Node.js and
// the `ws` package. Node runs JavaScript on one thread, so this peer uses one core.
//
// It owns a viewer WebSocket listener, a control HTTP listener and the set of connected
// viewers. A broadcast is serialised once and framed once with `WebSocket.Sender.frame`; the
// same Buffer (header + payload) is then written to every viewer's socket, so no per-viewer
// framing work is done (ws.send would frame again for each viewer). A viewer whose socket
// holds more than MAX_QUEUED_BYTES unwritten is terminated as a slow consumer.

const http = require('node:http');
const { WebSocket, WebSocketServer } = require('ws');

const MAX_QUEUED_BYTES = 1 << 20;
const MAX_API_BODY = 1 << 20;
const MAX_VIEWER_MESSAGE = 64 << 10;
const SHUTDOWN_GRACE_MS = 1000;
// Listen backlog for both listeners (the same for every peer).
const LISTEN_BACKLOG = 4096;
const USAGE = 'usage: node server.js [--viewer-addr ADDR] [--api-addr ADDR]';

function fail(msg, code) {
  process.stderr.write(`peer-ws-node: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const args = { viewerAddr: '127.0.0.1:9080', apiAddr: '127.0.0.1:9081' };
  for (let i = 0; i < argv.length; i++) {
    let name = argv[i];
    let value;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const key = { '--viewer-addr': 'viewerAddr', '--api-addr': 'apiAddr' }[name];
    if (key === undefined) fail(`unknown argument ${JSON.stringify(name)}\n${USAGE}`, 2);
    if (value === undefined) value = argv[++i];
    if (value === undefined) fail(`${name} needs a value\n${USAGE}`, 2);
    args[key] = value;
  }
  return args;
}

/** Splits "host:port" or "[v6]:port" into { host, port }. */
function splitAddr(addr) {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
  if (!m) fail(`bad address ${JSON.stringify(addr)} (want HOST:PORT)`, 2);
  return { host: m[1], port: Number(m[2]) };
}

function formatAddr(server) {
  const a = server.address();
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function listen(server, addr) {
  const { host, port } = splitAddr(addr);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Viewers

/** Connected viewers: WebSocket -> its net.Socket (the socket pre-framed broadcasts go to). */
const viewers = new Map();
let nextViewer = 0;
/** Set by SIGTERM/SIGINT: the process exits once the last viewer has closed. */
let stopping = false;

const viewerHttp = http.createServer((req, res) => {
  res.writeHead(426, { 'content-type': 'text/plain' });
  res.end('expected a WebSocket upgrade\n');
});
// No `path` option: any path is accepted, as the contract asks. Compression stays off.
const wss = new WebSocketServer({
  server: viewerHttp,
  clientTracking: false,
  perMessageDeflate: false,
  maxPayload: MAX_VIEWER_MESSAGE,
});

wss.on('connection', (ws, req) => {
  const socket = req.socket;
  socket.setNoDelay(true);
  viewers.set(ws, socket);
  nextViewer += 1;
  ws.send(`{"type":"welcome","viewer":"${nextViewer}"}`);
  ws.on('message', (data, isBinary) => {
    if (!isBinary) onViewerText(ws, data);
  });
  ws.on('close', () => {
    viewers.delete(ws);
    if (stopping && viewers.size === 0) process.exit(0);
  });
  // Errors (bad frames, resets) end the connection; 'close' follows.
  ws.on('error', () => {});
});

function onViewerText(ws, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  if (msg === null || msg.type !== 'vote') return;
  if (typeof msg.poll !== 'string' || typeof msg.choice !== 'number') return;
  ws.send(JSON.stringify({ type: 'voted', poll: msg.poll, choice: msg.choice }));
}

/** Frames `text` once and writes the same bytes to every open viewer; returns the count. */
function broadcast(text) {
  const parts = WebSocket.Sender.frame(Buffer.from(text), {
    fin: true,
    rsv1: false,
    opcode: 0x01,
    mask: false,
    readOnly: true,
  });
  const frame = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  const members = viewers.size;
  for (const [ws, socket] of viewers) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    if (socket.writableLength > MAX_QUEUED_BYTES) {
      ws.terminate();
      continue;
    }
    socket.write(frame);
  }
  return members;
}

// ---------------------------------------------------------------------------------------------
// Control API

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

function readBody(req, limit) {
  return new Promise((resolve) => {
    const chunks = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? null : Buffer.concat(chunks)));
    req.on('error', () => resolve(null));
  });
}

async function publish(req, res) {
  const body = await readBody(req, MAX_API_BODY);
  if (body === null) return reply(res, 400, { type: 'error', code: 'bad_body' });
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    return reply(res, 400, { type: 'error', code: 'bad_json' });
  }
  if (parsed === null || typeof parsed !== 'object' || !('payload' in parsed)) {
    return reply(res, 400, { type: 'error', code: 'bad_json' });
  }
  // JSON.stringify of the parsed payload: same value, whitespace normalised.
  const members = broadcast(
    `{"type":"message","group":"global","payload":${JSON.stringify(parsed.payload)}}`,
  );
  reply(res, 202, { group: 'global', members });
}

const apiHttp = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (req.method === 'POST' && path === '/api/groups/global/messages') {
    publish(req, res);
  } else if (req.method === 'GET' && path === '/api/stats') {
    reply(res, 200, { connections: viewers.size });
  } else {
    req.resume();
    reply(res, 404, { type: 'error', code: 'not_found' });
  }
});

// ---------------------------------------------------------------------------------------------
// Start and stop

function shutdown() {
  stopping = true;
  process.stderr.write(`peer-ws-node: shutting down, closing ${viewers.size} viewers\n`);
  viewerHttp.close();
  apiHttp.close();
  apiHttp.closeAllConnections();
  if (viewers.size === 0) process.exit(0);
  for (const ws of viewers.keys()) ws.close(1001);
  // Viewers that do not answer the close in time are dropped by exiting anyway.
  setTimeout(() => process.exit(0), SHUTDOWN_GRACE_MS).unref();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  try {
    await listen(viewerHttp, args.viewerAddr);
  } catch (e) {
    fail(`bind viewer ${args.viewerAddr}: ${e.message}`, 1);
  }
  try {
    await listen(apiHttp, args.apiAddr);
  } catch (e) {
    fail(`bind api ${args.apiAddr}: ${e.message}`, 1);
  }
  process.stdout.write(`listening viewer=${formatAddr(viewerHttp)} api=${formatAddr(apiHttp)}\n`);
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main();
