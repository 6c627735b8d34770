// ovation viewer page: plays /watch/{stream} with hls.js (native HLS where hls.js cannot run),
// keeps the control WebSocket open beside it (docs/protocol.md) and shows what the server
// pushes: stream state, polls and live results, messages, the player configuration and ad
// breaks. Reports real player telemetry and reconnects with its resume token.

const $ = (id) => document.getElementById(id);
const video = $('video');
const stream = decodeURIComponent(location.pathname.split('/')[2] || '');
const viewerPath = document.body.dataset.viewerPath || '/v1/viewer';
const resumeKey = `ovation.resume.${stream}`;
/** Message types of ad breaks (`ad_break`, `ad-start`, `break_end`, ...): the generic banner. */
const BREAK_TYPE = /^ad([_-]|$)|break/i;
/** hls.js's default manifest policy with more retries on errors: a stream that just went
 *  live answers 503 until its first segment reaches the shard serving the request (hls.js
 *  retries 5xx, never 4xx). Given whole: hls.js merges its configuration one level deep. */
const MANIFEST_LOAD_POLICY = {
  default: {
    maxTimeToFirstByteMs: Infinity,
    maxLoadTimeMs: 20000,
    timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
    errorRetry: { maxNumRetry: 5, retryDelayMs: 500, maxRetryDelayMs: 2000 },
  },
};
/** First report this long after playback starts, then every REPORT_MS. */
const FIRST_REPORT_MS = 2000;
const REPORT_MS = 5000;

/** Everything the page knows; `window.ovation` exposes it for operators and tests. */
const state = {
  stream,
  viewer: null,
  shard: null,
  welcomes: 0,
  resumed: 0,
  reconnects: 0,
  streamState: 'connecting',
  endpoint: null,
  loadedUrl: null,
  poll: null,
  voted: null,
  config: {},
  override: {},
  configVersion: -1,
  messages: 0,
  breaks: 0,
  /** Inside an ad break as the player plays it (hls.js only: EXT-X-CUE-OUT .. CUE-IN). */
  inAd: false,
  adBreaks: 0,
  adStartedAt: null,
  adEndedAt: null,
  telemetrySent: 0,
  playerErrors: [],
  fatalError: null,
  started: performance.now(),
  firstFrameMs: null,
};

let ws = null;
let hls = null;
let retryMs = 500;
let retryTimer = null;

// ---- control connection -------------------------------------------------------------------

function socketUrl() {
  const params = new URLSearchParams(location.search);
  params.delete('resume');
  const resume = sessionStorage.getItem(resumeKey);
  if (resume) params.set('resume', resume);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = params.toString();
  return `${scheme}//${location.host}${viewerPath}${query ? `?${query}` : ''}`;
}

function connect() {
  retryTimer = null;
  const socket = new WebSocket(socketUrl());
  ws = socket;
  socket.addEventListener('message', (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    if (msg && typeof msg.type === 'string') onMessage(msg);
  });
  socket.addEventListener('close', () => {
    if (ws !== socket) return;
    ws = null;
    state.reconnects += 1;
    telemetry.failures += 1;
    $('fact-reconnects').textContent = String(state.reconnects);
    setBadge('reconnecting', 'Reconnecting…');
    // Back off, with jitter so a restarted server is not met by every viewer at once.
    const delay = retryMs * (0.75 + Math.random() * 0.5);
    retryMs = Math.min(retryMs * 2, 5000);
    retryTimer = setTimeout(connect, delay);
  });
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function onMessage(msg) {
  switch (msg.type) {
    case 'welcome':
      return onWelcome(msg);
    case 'stream':
      if (msg.stream === stream) setStreamState(msg.state);
      return;
    case 'endpoint':
      if (msg.stream === stream) onEndpoint(msg);
      return;
    case 'config':
      return onConfig(msg);
    case 'poll':
      if (msg.stream === stream) showPoll(msg);
      return;
    case 'results':
      return showResults(msg);
    case 'voted':
      state.voted = msg.choice;
      markVote();
      $('poll-status').textContent = 'Your vote is counted.';
      return;
    case 'message':
      return showMessage(msg);
    case 'error':
      return onError(msg);
    case 'pong':
      return;
    default:
      // Ad breaks arrive as their own messages (issue 16: the sessions work defines them);
      // any break-related message gets the generic banner.
      if (BREAK_TYPE.test(msg.type)) showBreak(msg);
  }
}

function onWelcome(msg) {
  state.welcomes += 1;
  retryMs = 500;
  if (msg.resumed) state.resumed += 1;
  state.viewer = msg.viewer;
  state.shard = msg.shard;
  sessionStorage.setItem(resumeKey, msg.resume);
  document.body.dataset.viewer = msg.viewer;
  $('fact-viewer').textContent = `${msg.viewer}${msg.resumed ? ' (resumed)' : ''}`;
  send({ type: 'hello', app_version: 'ovation-web/1' });
  // A resumed viewer keeps its stream; a new one (a fresh start, or a server that restarted
  // and forgot the token) asks for it again.
  if (!msg.resumed || !state.loadedUrl) {
    if (!stream) return setStreamState('unknown');
    // Until the answer: a `stream` message comes first unless the stream is live.
    setStreamState('connecting');
    send({ type: 'watch', stream });
  } else {
    setStreamState(state.streamState);
  }
}

function onError(msg) {
  if (msg.code === 'unknown_stream') {
    setStreamState('unknown');
  } else if (['poll_closed', 'not_in_audience', 'bad_choice', 'unknown_poll', 'identity_required'].includes(msg.code)) {
    $('poll-status').textContent = msg.message;
  }
}

// ---- stream state and player --------------------------------------------------------------

const STATE_TEXT = {
  connecting: ['Connecting…', 'Connecting…'],
  reconnecting: ['Reconnecting…', null],
  offline: ['Offline', 'The broadcast has not started yet.'],
  live: ['Live', null],
  ended: ['Ended', 'The broadcast has ended.'],
  unknown: ['Not found', 'There is no such stream.'],
};

function setBadge(kind, text) {
  const badge = $('state');
  badge.dataset.state = kind;
  badge.textContent = text;
}

function setStreamState(s) {
  state.streamState = s;
  document.body.dataset.streamState = s;
  const [badge, curtain] = STATE_TEXT[s] || [s, null];
  setBadge(s, badge);
  $('curtain').hidden = !curtain;
  if (curtain) $('curtain').textContent = curtain;
  if (s === 'ended' || s === 'offline' || s === 'unknown') stopPlayer();
}

function onEndpoint(msg) {
  state.endpoint = msg.url;
  // `stream` comes before `endpoint` when the stream is not live (protocol.md, ordering);
  // an endpoint on its own means it is live.
  if (state.streamState === 'offline' || state.streamState === 'ended') return;
  setStreamState('live');
  if (state.loadedUrl !== msg.url || state.fatalError) play(msg.url);
}

function play(url) {
  stopPlayer();
  state.loadedUrl = url;
  state.fatalError = null;
  if (window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls({ liveDurationInfinity: true, manifestLoadPolicy: MANIFEST_LOAD_POLICY });
    watchPlayer(hls);
    hls.loadSource(url);
    hls.attachMedia(video);
    $('fact-player').textContent = `hls.js ${window.Hls.version}`;
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = url;
    $('fact-player').textContent = 'native HLS';
  } else {
    state.fatalError = 'this browser cannot play HLS';
    $('fact-player').textContent = state.fatalError;
    return;
  }
  video.play().catch(() => {
    // Autoplay refused (sound, or a browser policy): the controls stay for the viewer.
  });
}

function stopPlayer() {
  setAd(false);
  if (hls) {
    hls.destroy();
    hls = null;
  }
  if (video.getAttribute('src')) {
    video.removeAttribute('src');
    video.load();
  }
  state.loadedUrl = null;
}

function watchPlayer(h) {
  const Hls = window.Hls;
  h.on(Hls.Events.FRAG_LOADED, (_e, data) => {
    const stats = data.frag.stats || data.stats;
    const bytes = stats ? stats.total || stats.loaded : 0;
    if (bytes && data.frag.duration > 0) {
      telemetry.bitrateKbps = Math.round((bytes * 8) / data.frag.duration / 1000);
      $('fact-bitrate').textContent = `${telemetry.bitrateKbps} kbit/s`;
    }
    if (stats && stats.loading && stats.loading.first > stats.loading.start) {
      telemetry.rttMs = Math.round(stats.loading.first - stats.loading.start);
    }
  });
  h.on(Hls.Events.LEVEL_LOADED, () => capBitrate());
  // The fragment now playing: the session playlist marks an ad break's first fragment with
  // EXT-X-CUE-OUT (or a DATERANGE with SCTE35-OUT) and the content after it with
  // EXT-X-CUE-IN (docs/media.md, ad breaks); hls.js keeps those tags on `frag.tagList`.
  h.on(Hls.Events.FRAG_CHANGED, (_e, data) => {
    if (h !== hls) return;
    const cue = breakCue(data.frag.tagList || []);
    if (cue !== null) setAd(cue);
  });
  h.on(Hls.Events.ERROR, (_e, data) => {
    if (h !== hls) return;
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) telemetry.failures += 1;
    // The HTTP status of a failed load says which (503: no segment yet; 403/404: the URL or
    // the session), for operators and the tests' failure messages.
    const status = data.response && data.response.code ? ` ${data.response.code}` : '';
    state.playerErrors.push(`${data.type}/${data.details}${status}${data.fatal ? ' (fatal)' : ''}`);
    if (state.playerErrors.length > 20) state.playerErrors.shift();
    if (!data.fatal) return;
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      h.recoverMediaError();
    } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR && state.streamState === 'live') {
      // Playlist or segments unreachable (a stream that just went live answers 503 until its
      // first segment): load again shortly while the stream is live.
      setTimeout(() => {
        if (h === hls && state.streamState === 'live' && state.endpoint) play(state.endpoint);
      }, 1000);
    } else {
      state.fatalError = `${data.type}/${data.details}`;
      $('fact-player').textContent = `error: ${state.fatalError}`;
    }
  });
}

/** `true` for a fragment that opens a break, `false` for one that closes it, else `null`. */
function breakCue(tags) {
  let cue = null;
  for (const [name, value = ''] of tags) {
    if (name === 'EXT-X-CUE-OUT') cue = true;
    else if (name === 'EXT-X-CUE-IN') cue = false;
    else if (name === 'EXT-X-DATERANGE' && /SCTE35-OUT=/.test(value)) cue = true;
    else if (name === 'EXT-X-DATERANGE' && /SCTE35-IN=/.test(value)) cue = false;
  }
  return cue;
}

function setAd(on) {
  if (on === state.inAd) return;
  state.inAd = on;
  if (on) {
    state.adBreaks += 1;
    state.adStartedAt = Date.now();
  } else {
    state.adEndedAt = Date.now();
  }
  document.body.dataset.ad = String(on);
  $('ad').hidden = !on;
}

/** Keeps hls.js below the configuration's `max_bitrate_kbps`, where it has renditions. */
function capBitrate() {
  if (!hls) return;
  const cap = effectiveConfig().max_bitrate_kbps;
  if (!cap) {
    hls.autoLevelCapping = -1;
    return;
  }
  let best = -1;
  hls.levels.forEach((level, i) => {
    if (!level.bitrate || level.bitrate <= cap * 1000) best = i;
  });
  hls.autoLevelCapping = best < 0 ? 0 : best;
}

// ---- telemetry ----------------------------------------------------------------------------

const telemetry = {
  bitrateKbps: null,
  rttMs: null,
  failures: 0,
  stallSince: null,
  stalledMs: 0,
  lastDropped: 0,
  lastReport: performance.now(),
};

// Rebuffering only: the wait for the first frame is start-up time, not buffering.
video.addEventListener('waiting', () => {
  if (state.firstFrameMs !== null && telemetry.stallSince === null) {
    telemetry.stallSince = performance.now();
  }
});
function endStall() {
  if (telemetry.stallSince !== null) {
    telemetry.stalledMs += performance.now() - telemetry.stallSince;
    telemetry.stallSince = null;
  }
}
video.addEventListener('playing', endStall);
// Native HLS (no hls.js) reports its failures only here.
video.addEventListener('error', () => {
  if (hls || !state.loadedUrl) return;
  telemetry.failures += 1;
  const e = video.error;
  state.fatalError = `media error ${e ? e.code : '?'}`;
  $('fact-player').textContent = `error: ${state.fatalError}`;
});
video.addEventListener('timeupdate', () => {
  if (video.currentTime > 0 && state.firstFrameMs === null) {
    state.firstFrameMs = Math.round(performance.now() - state.started);
    document.body.dataset.playing = 'true';
    telemetry.lastReport = performance.now();
    telemetry.stallSince = null;
    setTimeout(report, FIRST_REPORT_MS);
  }
  if (!video.paused && telemetry.stallSince !== null && video.readyState >= 3) endStall();
});

function report() {
  const now = performance.now();
  let stalled = telemetry.stalledMs;
  if (telemetry.stallSince !== null) {
    stalled += now - telemetry.stallSince;
    telemetry.stallSince = now;
  }
  const elapsed = Math.max(now - telemetry.lastReport, 1);
  const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const dropped = quality ? quality.droppedVideoFrames : 0;
  const msg = {
    type: 'telemetry',
    buffering_ms: Math.round(stalled),
    buffering_ratio: Math.min(1, stalled / elapsed),
    dropped_frames: Math.max(0, dropped - telemetry.lastDropped),
    failures: Math.min(1000, telemetry.failures),
  };
  if (telemetry.bitrateKbps !== null) msg.bitrate_kbps = telemetry.bitrateKbps;
  if (telemetry.rttMs !== null) msg.rtt_ms = telemetry.rttMs;
  if (ws && ws.readyState === WebSocket.OPEN) {
    send(msg);
    state.telemetrySent += 1;
    telemetry.failures = 0;
    telemetry.stalledMs = 0;
    telemetry.lastDropped = dropped;
    telemetry.lastReport = now;
  }
  $('fact-buffering').textContent = `${Math.round(stalled)} ms`;
  setTimeout(report, REPORT_MS);
}

// ---- overlay: configuration, polls, messages, breaks ---------------------------------------

function effectiveConfig() {
  return { ...state.config, ...state.override };
}

function onConfig(msg) {
  if (typeof msg.version === 'number' && msg.version < state.configVersion) return;
  if (msg.stream === '*') {
    state.override = msg.config || {};
  } else if (msg.stream === stream) {
    state.config = msg.config || {};
  } else {
    return;
  }
  state.configVersion = Math.max(state.configVersion, msg.version ?? -1);
  const c = effectiveConfig();
  const title = c.title || stream || 'Live';
  $('title').textContent = title;
  document.title = `${title} · ovation`;
  const logo = $('logo');
  if (c.logo_url && /^https?:\/\//.test(c.logo_url)) {
    logo.src = c.logo_url;
    logo.alt = `${title} logo`;
  } else {
    logo.src = '/web/logo.svg';
    logo.alt = 'ovation';
  }
  const list = $('upcoming');
  list.replaceChildren();
  for (const u of c.upcoming || []) {
    const li = document.createElement('li');
    const when = new Date(u.scheduled_ms);
    const time = document.createElement('time');
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString();
    li.append(`${u.title || u.stream} · `, time);
    list.append(li);
  }
  $('upcoming-panel').hidden = !(c.upcoming && c.upcoming.length);
  $('fact-cap').textContent = c.max_bitrate_kbps ? `${c.max_bitrate_kbps} kbit/s` : 'none';
  capBitrate();
}

function showPoll(msg) {
  const sameOpenPoll = state.poll && state.poll.id === msg.poll && !state.poll.final;
  state.poll = { id: msg.poll, choices: msg.choices, counts: null, total: 0, final: false };
  if (!sameOpenPoll) state.voted = null;
  $('poll').hidden = false;
  $('poll').dataset.poll = msg.poll;
  $('poll-question').textContent = msg.question;
  const box = $('poll-choices');
  box.replaceChildren();
  msg.choices.forEach((choice, i) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'choice';
    button.dataset.choice = String(i);
    button.setAttribute('aria-pressed', 'false');
    const label = document.createElement('span');
    label.className = 'choice-label';
    label.textContent = choice;
    const count = document.createElement('span');
    count.className = 'choice-count';
    const bar = document.createElement('span');
    bar.className = 'choice-bar';
    bar.setAttribute('aria-hidden', 'true');
    button.append(bar, label, count);
    button.addEventListener('click', () => send({ type: 'vote', poll: msg.poll, choice: i }));
    box.append(button);
  });
  const closes = new Date(msg.closes_at);
  $('poll-status').textContent = `Open until ${closes.toLocaleTimeString()}. Choose one.`;
  markVote();
}

function markVote() {
  for (const b of $('poll-choices').querySelectorAll('button')) {
    b.setAttribute('aria-pressed', String(Number(b.dataset.choice) === state.voted));
  }
}

function showResults(msg) {
  if (!state.poll || state.poll.id !== msg.poll) return;
  state.poll.counts = msg.counts;
  state.poll.total = msg.total;
  state.poll.final = !!msg.final;
  const buttons = $('poll-choices').querySelectorAll('button');
  buttons.forEach((b, i) => {
    const n = msg.counts[i] || 0;
    const share = msg.total ? Math.round((n * 100) / msg.total) : 0;
    b.querySelector('.choice-count').textContent = `${n} (${share}%)`;
    b.querySelector('.choice-bar').style.width = `${share}%`;
    b.disabled = !!msg.final;
  });
  $('poll').dataset.total = String(msg.total);
  $('poll-status').textContent = msg.final
    ? `Final results: ${msg.total} ${msg.total === 1 ? 'vote' : 'votes'}.`
    : `${msg.total} ${msg.total === 1 ? 'vote' : 'votes'} so far.`;
}

function showMessage(msg) {
  const p = msg.payload;
  if (p && typeof p === 'object' && typeof p.type === 'string' && BREAK_TYPE.test(p.type)) {
    return showBreak(p);
  }
  state.messages += 1;
  const text = typeof p === 'string' ? p : p && typeof p.text === 'string' ? p.text : JSON.stringify(p);
  $('no-messages')?.remove();
  const li = document.createElement('li');
  li.textContent = text;
  const list = $('messages');
  list.prepend(li);
  while (list.children.length > 50) list.lastElementChild.remove();
}

let breakTimer = null;
function showBreak(msg) {
  const ending = /end|stop|finish|over/i.test(String(msg.type)) || msg.state === 'ended';
  const banner = $('break');
  clearTimeout(breakTimer);
  if (ending) {
    banner.hidden = true;
    return;
  }
  state.breaks += 1;
  const seconds = Number(msg.duration_s ?? (msg.duration_ms ? msg.duration_ms / 1000 : 0));
  $('break-detail').textContent = seconds > 0 ? `· back in ${Math.round(seconds)} s` : '';
  banner.hidden = false;
  if (seconds > 0) breakTimer = setTimeout(() => (banner.hidden = true), seconds * 1000);
}

// ---- start --------------------------------------------------------------------------------

window.ovation = {
  state,
  /** Drops the control connection as a network failure would; the page resumes. */
  reconnect() {
    if (ws) ws.close(4000, 'reconnect');
  },
};

if (!stream) {
  setStreamState('unknown');
} else {
  $('title').textContent = stream;
  document.title = `${stream} · ovation`;
  connect();
}
