// ovation broadcaster console: everything goes through the public operator API of this
// origin (docs/api.md) and the broadcaster WebSocket (docs/protocol.md section 10), with the
// token typed into the form or given as ?token= (then removed from the address bar).

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 1000;
const MAX_TELEMETRY_GROUPS = 24;

const state = {
  token: null,
  streams: [],
  current: null,
  polls: new Map(),
  poll: null,
  results: null,
  socket: null,
  remediations: [],
  refreshes: 0,
  ticker: null,
  /** The followed stream's latest ad break with its beacon counts (a `break` or `beacons`). */
  adBreak: null,
  breakSentAt: null,
};
window.ovationConsole = state;

// ---- API ---------------------------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const why = data && data.error ? data.error.message : `${res.status} ${res.statusText}`;
    const err = new Error(why);
    err.status = res.status;
    throw err;
  }
  return data;
}

function say(text) {
  const alert = $('alert');
  alert.textContent = text;
  alert.hidden = !text;
}

function guard(fn) {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      say('');
      await fn(event);
    } catch (e) {
      say(e.message);
      if (e.status === 401) signOut();
    }
  };
}

// ---- sign in -----------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  await api('GET', '/api/streams');
  sessionStorage.setItem('ovation.token', token);
  $('signin').hidden = true;
  for (const id of ['streams-panel', 'live-panel', 'polls-panel', 'push-panel', 'ads-panel', 'groups-panel']) {
    $(id).hidden = false;
  }
  setLink('online', 'Signed in');
  const events = await api('GET', '/api/remediations');
  state.remediations = events.events.slice(-20);
  renderRemediations();
  await refresh();
  if (!state.ticker) state.ticker = setInterval(() => refresh().catch((e) => say(e.message)), REFRESH_MS);
}

function signOut() {
  sessionStorage.removeItem('ovation.token');
  state.token = null;
  $('signin').hidden = false;
  setLink('offline', 'Signed out');
}

function setLink(kind, text) {
  $('link').dataset.state = kind;
  $('link').textContent = text;
}

// ---- streams -----------------------------------------------------------------------------

async function refresh() {
  if (!state.token) return;
  const { streams } = await api('GET', '/api/streams');
  state.streams = streams;
  renderStreams();
  await refreshGroups();
  state.refreshes += 1;
}

function renderStreams() {
  const body = $('streams').tBodies[0];
  body.replaceChildren();
  for (const s of state.streams) {
    const tr = document.createElement('tr');
    tr.dataset.stream = s.id;
    const name = cell(tr, s.title ? `${s.id} · ${s.title}` : s.id, 'th');
    name.scope = 'row';
    const st = cell(tr, s.state);
    st.className = `state state-${s.state}`;
    st.dataset.role = 'state';
    cell(tr, s.state === 'live' ? `${s.bitrate_kbps} kbit/s` : '–').dataset.role = 'bitrate';
    cell(tr, String(s.audience)).dataset.role = 'audience';
    const actions = cell(tr, '');
    const watch = document.createElement('a');
    watch.href = viewerPageHint(s.id);
    watch.textContent = 'viewer page';
    watch.title = 'The viewer page is served on the viewer port';
    const key = document.createElement('button');
    key.type = 'button';
    key.textContent = 'New key';
    key.setAttribute('aria-label', `New stream key for ${s.id}`);
    key.addEventListener('click', guard(async () => {
      const r = await api('POST', `/api/streams/${encodeURIComponent(s.id)}/key`);
      showIngest(s.id, r.publish_url, r.stream_key);
    }));
    actions.append(watch, ' ', key);
    body.append(tr);
  }
  const select = $('current');
  const before = select.value;
  select.replaceChildren(...state.streams.map((s) => new Option(s.id, s.id)));
  if (state.streams.some((s) => s.id === before)) select.value = before;
  if (select.value && select.value !== state.current) follow(select.value);
  const cur = state.streams.find((s) => s.id === state.current);
  $('current-state').textContent = cur
    ? `${cur.id} is ${cur.state}${cur.state === 'live' ? ` at ${cur.bitrate_kbps} kbit/s from ${cur.publisher}` : ''}, ${cur.audience} watching.`
    : 'No stream yet: create one.';
}

/** The viewer page is served on the viewer port, whose number the server wrote in the page. */
function viewerPageHint(id) {
  const port = document.body.dataset.viewerPort;
  const origin = port ? `${location.protocol}//${location.hostname}:${port}` : '';
  return `${origin}/watch/${encodeURIComponent(id)}`;
}

function cell(tr, text, tag = 'td') {
  const td = document.createElement(tag);
  td.textContent = text;
  tr.append(td);
  return td;
}

function showIngest(id, url, key) {
  $('ingest').hidden = false;
  $('ingest-stream').textContent = id;
  $('publish-url').textContent = url;
  $('stream-key').textContent = key;
}

const createStream = guard(async () => {
  const body = { id: $('create-id').value.trim() };
  const title = $('create-title').value.trim();
  if (title) body.title = title;
  const start = $('create-start').value;
  if (start) body.scheduled_ms = new Date(start).getTime();
  const s = await api('POST', '/api/streams', body);
  showIngest(s.id, s.publish_url, s.stream_key);
  $('create').reset();
  await refresh();
});

// ---- the followed stream: results and remediation over the broadcaster socket --------------

function follow(id) {
  if (state.current === id && state.socket) return;
  state.current = id;
  if (state.socket) state.socket.close();
  state.socket = null;
  state.adBreak = null;
  renderBreak();
  openSocket(id);
}

function openSocket(id) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = new URLSearchParams({ stream: id, token: state.token });
  const socket = new WebSocket(`${scheme}//${location.host}/v1/broadcaster?${q}`);
  state.socket = socket;
  socket.addEventListener('open', () => {
    setLink('online', `Following ${id}`);
    // Beacon pushes missed while the socket was down are in the API's counts.
    loadBreaks(id).catch((e) => say(e.message));
  });
  socket.addEventListener('message', (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    if (msg.type === 'results') onResults(msg).catch((err) => say(err.message));
    if (msg.type === 'break' || msg.type === 'beacons') onBreak(msg);
    if (msg.type === 'error' && msg.code) say(`${msg.code}: ${msg.message}`);
    if (msg.type === 'remediation') {
      state.remediations.push(msg.event);
      state.remediations = state.remediations.slice(-20);
      renderRemediations();
    }
  });
  socket.addEventListener('close', () => {
    if (state.socket !== socket) return;
    state.socket = null;
    setLink('offline', 'Reconnecting…');
    setTimeout(() => {
      if (state.current === id && !state.socket && state.token) openSocket(id);
    }, 1000);
  });
}

async function pollInfo(id) {
  if (!state.polls.has(id)) state.polls.set(id, await api('GET', `/api/polls/${id}`));
  return state.polls.get(id);
}

async function onResults(msg) {
  const poll = await pollInfo(msg.poll);
  if (poll.stream !== state.current) return;
  state.poll = poll;
  state.results = msg;
  renderResults();
}

function renderResults() {
  const { poll, results } = state;
  $('results').hidden = false;
  $('results').dataset.poll = poll.id;
  $('results').dataset.total = String(results.total);
  $('results').dataset.final = String(!!results.final);
  $('results-question').textContent = poll.question;
  const list = $('results-counts');
  list.replaceChildren();
  poll.choices.forEach((choice, i) => {
    const li = document.createElement('li');
    const n = results.counts[i] || 0;
    li.dataset.choice = String(i);
    li.dataset.count = String(n);
    const share = results.total ? Math.round((n * 100) / results.total) : 0;
    const bar = document.createElement('span');
    bar.className = 'choice-bar';
    bar.style.width = `${share}%`;
    bar.setAttribute('aria-hidden', 'true');
    li.append(bar, `${choice}: ${n} (${share}%)`);
    list.append(li);
  });
  $('results-total').textContent = `${results.total} ${results.total === 1 ? 'vote' : 'votes'}${results.final ? ', final' : ', live'}`;
  $('poll-close').hidden = !!results.final;
  const table = $('breakdown');
  const b = results.breakdown;
  table.hidden = !b;
  if (!b) return;
  $('breakdown-caption').textContent = `Votes by ${b.field}`;
  const head = document.createElement('tr');
  cell(head, b.field, 'th').scope = 'col';
  for (const c of poll.choices) cell(head, c, 'th').scope = 'col';
  table.tHead.replaceChildren(head);
  const rows = Object.entries(b.counts).sort(([a], [c]) => a.localeCompare(c));
  table.tBodies[0].replaceChildren(
    ...rows.map(([value, counts]) => {
      const tr = document.createElement('tr');
      tr.dataset.value = value;
      cell(tr, value || '(unknown)', 'th').scope = 'row';
      counts.forEach((n) => (cell(tr, String(n)).dataset.count = String(n)));
      return tr;
    }),
  );
}

const startPoll = guard(async () => {
  if (!state.current) throw new Error('Create a stream first.');
  const choices = $('poll-choices').value.split('\n').map((c) => c.trim()).filter(Boolean);
  const body = {
    stream: state.current,
    question: $('poll-question').value.trim(),
    choices,
    duration_s: Number($('poll-duration').value),
  };
  const breakdown = $('poll-breakdown').value;
  if (breakdown) body.breakdown = breakdown;
  const created = await api('POST', '/api/polls', body);
  const poll = await api('GET', `/api/polls/${created.id}`);
  state.polls.set(poll.id, poll);
  state.poll = poll;
  state.results = { poll: poll.id, counts: poll.counts, total: poll.total, final: false };
  renderResults();
});

const closePoll = guard(async () => {
  if (state.poll) await api('POST', `/api/polls/${state.poll.id}/close`);
});

// ---- ad breaks and their beacons ----------------------------------------------------------

const BEACONS = ['impression', 'start', 'first_quartile', 'midpoint', 'third_quartile', 'complete'];

/** The stream's breaks so far (`GET /api/streams/{id}/breaks`): shows the latest. */
async function loadBreaks(id) {
  const { breaks } = await api('GET', `/api/streams/${encodeURIComponent(id)}/breaks`);
  const latest = breaks.reduce((a, b) => (a && a.id > b.id ? a : b), null);
  if (state.current === id && latest && !(state.adBreak && state.adBreak.id > latest.id)) onBreak(latest);
}

/** A `break` (the answer to ours) or `beacons` push: newer breaks replace older ones. */
function onBreak(msg) {
  if (msg.stream !== state.current) return;
  if (state.adBreak && state.adBreak.id > msg.id) return;
  state.adBreak = msg;
  renderBreak();
}

function renderBreak() {
  const b = state.adBreak;
  const table = $('beacons');
  table.hidden = !b;
  if (!b) {
    $('break-status').textContent = 'No ad break yet.';
    table.tBodies[0].replaceChildren();
    return;
  }
  const when = new Date(b.started_ms).toLocaleTimeString();
  const sessions = `${b.sessions} ${b.sessions === 1 ? 'session' : 'sessions'}`;
  $('break-status').textContent = `Break ${b.id}: ${b.duration_ms / 1000} s from ${when}, reached ${sessions}.`;
  table.dataset.break = String(b.id);
  const ads = Object.keys(b.beacons || {}).sort();
  table.tBodies[0].replaceChildren(
    ...ads.map((ad) => {
      const tr = document.createElement('tr');
      tr.dataset.ad = ad;
      cell(tr, ad, 'th').scope = 'row';
      for (const k of BEACONS) {
        const n = b.beacons[ad][k] || 0;
        const td = cell(tr, String(n));
        td.dataset.beacon = k;
        td.dataset.count = String(n);
      }
      return tr;
    }),
  );
}

/** Starts a break over the broadcaster socket (its answer is a `break`), or through the API
 *  while the socket is reconnecting. */
const startBreak = guard(async () => {
  if (!state.current) throw new Error('Create a stream first.');
  const duration = Number($('break-duration').value);
  state.breakSentAt = Date.now();
  $('break-status').textContent = `Starting a ${duration} s break on ${state.current}…`;
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: 'break', duration_s: duration }));
  } else {
    onBreak(await api('POST', `/api/streams/${encodeURIComponent(state.current)}/breaks`, { duration_s: duration }));
  }
});

// ---- groups, telemetry, remediation -------------------------------------------------------

async function refreshGroups() {
  const { groups } = await api('GET', '/api/groups');
  const shown = groups.slice(0, MAX_TELEMETRY_GROUPS);
  const telemetry = await Promise.all(
    shown.map((g) => api('GET', `/api/groups/${g.id}/telemetry`).catch(() => null)),
  );
  const body = $('groups').tBodies[0];
  body.replaceChildren(
    ...shown.map((g, i) => {
      const w = telemetry[i] && telemetry[i].windows['10s'];
      const tr = document.createElement('tr');
      tr.dataset.group = g.id;
      cell(tr, g.id === g.name ? g.id : `${g.id} · ${g.name}`, 'th').scope = 'row';
      cell(tr, String(g.size)).dataset.role = 'size';
      cell(tr, w ? `${w.reports} / ${w.viewers}` : '–').dataset.role = 'reports';
      cell(tr, w && w.bitrate_kbps.mean !== null ? `${Math.round(w.bitrate_kbps.mean)} kbit/s` : '–');
      cell(tr, w && w.buffering_ratio.mean !== null ? `${(w.buffering_ratio.mean * 100).toFixed(1)} %` : '–');
      cell(tr, w && w.dropped_frames.sum !== null ? String(w.dropped_frames.sum) : '–');
      cell(tr, w ? w.failures_per_min.toFixed(1) : '–');
      return tr;
    }),
  );
  const select = $('message-group');
  const before = select.value;
  select.replaceChildren(...groups.map((g) => new Option(`${g.id} (${g.size})`, g.id)));
  if (groups.some((g) => g.id === before)) select.value = before;
  else if (state.current) select.value = `stream:${state.current}`;
}

function renderRemediations() {
  const list = $('remediations');
  if (!state.remediations.length) return;
  list.replaceChildren(
    ...state.remediations
      .slice()
      .reverse()
      .map((e) => {
        const li = document.createElement('li');
        const when = new Date(e.at_ms).toLocaleTimeString();
        const why = e.window ? ` (${e.window.failures_per_min.toFixed(0)} failures/min, ${e.window.viewers} reporting viewers)` : '';
        li.textContent = `${when} ${e.rule} ${e.action} on ${e.group}${why}`;
        return li;
      }),
  );
}

// ---- pushes ------------------------------------------------------------------------------

const sendMessage = guard(async () => {
  const group = $('message-group').value;
  const r = await api('POST', `/api/groups/${group}/messages`, {
    payload: { text: $('message-text').value },
  });
  say('');
  $('message-text').value = '';
  $('current-state').textContent = `Message sent to ${r.members} ${r.members === 1 ? 'viewer' : 'viewers'} of ${r.group}.`;
});

const applyConfig = guard(async () => {
  if (!state.current) throw new Error('Create a stream first.');
  const body = {};
  const title = $('config-title').value.trim();
  const logo = $('config-logo').value.trim();
  const cap = $('config-bitrate').value;
  if (title) body.title = title;
  if (logo) body.logo_url = logo;
  if (cap) body.max_bitrate_kbps = Number(cap);
  const r = await api('PUT', `/api/streams/${encodeURIComponent(state.current)}/config`, body);
  $('current-state').textContent = `Configuration version ${r.version} pushed to the viewers of ${r.stream}.`;
});

// ---- start -------------------------------------------------------------------------------

$('signin').addEventListener('submit', guard(() => signIn($('token').value.trim())));
$('create').addEventListener('submit', createStream);
$('poll-form').addEventListener('submit', startPoll);
$('poll-close').addEventListener('click', closePoll);
$('message-form').addEventListener('submit', sendMessage);
$('config-form').addEventListener('submit', applyConfig);
$('break-form').addEventListener('submit', startBreak);
$('current').addEventListener('change', (e) => follow(e.target.value));

const params = new URLSearchParams(location.search);
const given = params.get('token') || sessionStorage.getItem('ovation.token');
if (params.has('token')) {
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}`);
}
if (given) guard(() => signIn(given))();
