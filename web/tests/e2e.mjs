// End-to-end test of the viewer page and the broadcaster console in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core). Run by tests/web.rs, which starts
// the server and the ffmpeg publisher; this script talks to it over stdio:
//   stdout "@@ publish KEY" -> the test publishes a test pattern with that stream key, then
//                              writes "ok" on stdin;
//   stdout "@@ stop"        -> the test stops the publisher (the broadcast ends), then "ok";
//   stdout "@@ restart"     -> the test restarts the server on the same ports and data
//                              directory, then writes "ok".
// Environment: OVATION_VIEWER, OVATION_API (http://HOST:PORT), OVATION_TOKEN,
// OVATION_SCREENSHOTS (directory for the PNGs), OVATION_AD_DIR (an ad's MPEG-TS segments
// 0.ts and 1.ts, one second each, encoded by the test like the publish). Exits non-zero on the first failed check.

import { createInterface } from 'node:readline';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const VIEWER = process.env.OVATION_VIEWER;
const API = process.env.OVATION_API;
const TOKEN = process.env.OVATION_TOKEN;
const SHOTS = process.env.OVATION_SCREENSHOTS;
const AD_DIR = process.env.OVATION_AD_DIR;
/** Upper bound of every wait on the browser or the server. */
const WAIT = 60_000;
const ANDROID =
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36';

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(request) {
  console.log(`@@ ${request}`);
  const reply = await lines.next();
  if (reply.done || !reply.value.startsWith('ok')) throw new Error(`${request}: ${reply.value}`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function api(method, path, body) {
  const res = await fetch(`${API}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Polls `f` (async) until it returns a truthy value, at most WAIT. */
async function until(what, f) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A live playlist the server answered 503 (+ Retry-After) because the stream had no segment
 *  at that moment: by design, and the player retries. Chromium logs it as a console error whose
 *  location is the resource's URL; only that exact case is tolerated. */
function playlistNotReady(text, url) {
  if (!/^Failed to load resource: the server responded with a status of 503\b/.test(text)) return false;
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  return u.origin === new URL(VIEWER).origin && /^\/hls\/[^/]+\/index\.m3u8$/.test(u.pathname);
}

/** Console errors and uncaught exceptions of a page, with the phase they happened in. A 503 on
 *  an HLS playlist is counted in `log.notReady`, not logged as an error. */
function watchErrors(page, name, log) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (playlistNotReady(m.text(), m.location().url)) {
      log.notReady = (log.notReady || 0) + 1;
      return;
    }
    log.push({ page: name, phase: log.phase, text: m.text(), url: m.location().url });
  });
  page.on('pageerror', (e) => log.push({ page: name, phase: log.phase, text: `uncaught: ${e.message}`, uncaught: true }));
}

/** Accessible markup: every form control has a label, every button and image a name, one h1,
 *  and headings do not skip levels. */
async function accessible(page, what) {
  const problems = await page.evaluate(() => {
    const out = [];
    const visible = (el) => !el.closest('[hidden]');
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (visible(el) && el.labels.length === 0 && !el.getAttribute('aria-label')) out.push(`unlabelled ${el.id || el.outerHTML}`);
    }
    for (const el of document.querySelectorAll('button, a')) {
      if (visible(el) && !(el.textContent.trim() || el.getAttribute('aria-label'))) out.push(`nameless ${el.outerHTML}`);
    }
    for (const el of document.querySelectorAll('img')) {
      if (!el.hasAttribute('alt')) out.push(`img without alt ${el.outerHTML}`);
    }
    if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
    let level = 1;
    for (const h of document.querySelectorAll('h1, h2, h3, h4')) {
      const n = Number(h.tagName[1]);
      if (visible(h) && n > level + 1) out.push(`heading ${h.tagName} after h${level}: ${h.textContent}`);
      if (visible(h)) level = n;
    }
    if (!document.documentElement.lang) out.push('no lang on <html>');
    return out;
  });
  check(problems.length === 0, `${what}: accessible markup (${problems.join('; ')})`);
}

/** The video's currentTime advances by `by` seconds (bounded). */
async function advances(page, by, what) {
  const t0 = await page.evaluate(() => document.getElementById('video').currentTime);
  try {
    await page.waitForFunction(
      ([t, d]) => document.getElementById('video').currentTime > t + d,
      [t0, by],
      { timeout: WAIT },
    );
  } catch (e) {
    const why = await page.evaluate(() => {
      const v = document.getElementById('video');
      const ranges = [];
      for (let i = 0; i < v.buffered.length; i++) ranges.push([v.buffered.start(i), v.buffered.end(i)]);
      const err = v.error ? `${v.error.code} ${v.error.message}` : null;
      return { currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, ranges, err, state: window.ovation.state };
    });
    throw new Error(`${what}: the video does not advance: ${JSON.stringify(why)}`);
  }
  const t1 = await page.evaluate(() => document.getElementById('video').currentTime);
  check(t1 > t0 + by, `${what}: currentTime ${t0.toFixed(2)} -> ${t1.toFixed(2)}`);
}

/** No player error is left; `recovered`: hls.js errors the page recovered from are allowed. */
async function playerHealthy(page, what, recovered = false) {
  const s = await page.evaluate(() => window.ovation.state);
  check(s.fatalError === null, `${what}: no player error (${s.fatalError})`);
  const fatal = s.playerErrors.filter((e) => e.includes('fatal'));
  if (recovered) {
    console.log(`web: ${what}: hls.js errors recovered from: ${JSON.stringify(s.playerErrors)}`);
  } else {
    check(fatal.length === 0, `${what}: no fatal hls.js error (${fatal.join(', ')})`);
  }
}

// The one console error tolerated (Chromium's message, its location being the resource URL),
// and only for a live playlist on the viewer origin.
{
  const msg503 = 'Failed to load resource: the server responded with a status of 503 (Service Unavailable)';
  const msg404 = 'Failed to load resource: the server responded with a status of 404 (Not Found)';
  const cases = [
    [msg503, `${VIEWER}/hls/main/index.m3u8?session=1&exp=2&sig=3`, true],
    [msg503, `${VIEWER}/hls/main/index.m3u8`, true],
    [msg404, `${VIEWER}/hls/main/index.m3u8`, false],
    [msg503, `${VIEWER}/hls/main/7.ts`, false],
    [msg503, `${VIEWER}/hls/main/rec/1/index.m3u8`, false],
    [msg503, `${API}/api/relay/main/index.m3u8`, false],
    [msg503, `${VIEWER}/watch/main`, false],
    [msg503, '', false],
  ];
  for (const [text, url, tolerated] of cases) {
    if (playlistNotReady(text, url) !== tolerated) throw new Error(`check failed: 503 filter on ${text} at ${url}`);
  }
  check(true, 'console errors: only a live playlist\'s 503 on the viewer origin is tolerated');
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const errors = [];
errors.phase = 'before restart';
try {
  mkdirSync(SHOTS, { recursive: true });

  // ---- console: sign in with ?token=, create the stream, publish to it ----
  const consoleCtx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const con = await consoleCtx.newPage();
  watchErrors(con, 'console', errors);
  await con.goto(`${API}/console?token=${TOKEN}`);
  await con.locator('#streams-panel').waitFor({ state: 'visible', timeout: WAIT });
  check(!con.url().includes('token='), 'the console removes ?token= from the address bar');
  await con.getByLabel('Stream id').fill('main');
  await con.locator('#create-title').fill('Main stage');
  await con.getByRole('button', { name: 'Create stream' }).click();
  await con.locator('#stream-key').filter({ hasText: /-/ }).waitFor({ timeout: WAIT });
  const key = await con.locator('#stream-key').textContent();
  const publishUrl = await con.locator('#publish-url').textContent();
  check(/^[0-9a-f]{16}-[0-9a-f]{16}$/.test(key), `the console shows the stream key (${key})`);
  check(publishUrl.startsWith('rtmp://'), `the console shows the RTMP URL (${publishUrl})`);
  // The ad library gets a two-second ad, the stream's program plays it to everyone.
  const segments = [0, 1].map((i) => ({ duration_ms: 1000, data: readFileSync(join(AD_DIR, `${i}.ts`)).toString('base64') }));
  const ad = await api('POST', '/api/ads', { id: 'web-spot', segments });
  check(ad.status === 201 && ad.body.duration_ms === 2000, `an ad in the library (${JSON.stringify(ad.body)})`);
  const program = await api('PUT', '/api/streams/main/program', { default: ['web-spot'] });
  check(program.status === 200, `the stream's program plays it (${JSON.stringify(program.body)})`);
  await ask(`publish ${key}`);
  const liveRow = con.locator('tr[data-stream="main"]');
  await liveRow.locator('[data-role="state"]', { hasText: 'live' }).waitFor({ timeout: WAIT });
  await liveRow.locator('[data-role="bitrate"]', { hasText: /^[1-9]\d* kbit\/s$/ }).waitFor({ timeout: WAIT });
  check(true, `the console shows main live at ${await liveRow.locator('[data-role="bitrate"]').textContent()}`);

  // ---- viewer page on a desktop: plays, reports telemetry ----
  const deskCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const desk = await deskCtx.newPage();
  watchErrors(desk, 'viewer', errors);
  const t0 = Date.now();
  await desk.goto(`${VIEWER}/watch/main?region=hu`);
  await desk.waitForFunction(() => document.body.dataset.playing === 'true', null, { timeout: WAIT });
  const firstFrameWall = Date.now() - t0;
  await advances(desk, 1.5, 'the viewer page plays');
  await playerHealthy(desk, 'desktop viewer');
  const weight = await desk.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const res = performance.getEntriesByType('resource');
    const media = (r) => /\/hls\//.test(r.name);
    const sum = (list, k = 'encodedBodySize') => list.reduce((n, r) => n + (r[k] || 0), 0);
    return {
      page: (nav ? nav.encodedBodySize : 0) + sum(res.filter((r) => !media(r))),
      decoded: (nav ? nav.decodedBodySize : 0) + sum(res.filter((r) => !media(r)), 'decodedBodySize'),
      files: 1 + res.filter((r) => !media(r)).length,
      media: sum(res.filter(media)),
      firstFrameMs: window.ovation.state.firstFrameMs,
    };
  });
  console.log(
    `web: page weight ${weight.page} bytes transferred (${weight.decoded} decoded) in ${weight.files} files ` +
      `(media so far ${weight.media} bytes); ` +
      `time to first frame ${weight.firstFrameMs} ms after navigation (${firstFrameWall} ms wall, from goto)`,
  );
  const viewerId = await desk.evaluate(() => window.ovation.state.viewer);
  check(/^[0-9a-f]{16}$/.test(viewerId), `the viewer page got its welcome (${viewerId})`);

  // The page's own telemetry reaches the group's windows on the server.
  const tel = await until('telemetry from the page in stream:main', async () => {
    const r = await api('GET', '/api/groups/stream:main/telemetry');
    const w = r.body.windows && r.body.windows['60s'];
    return w && w.reports >= 1 && w.bitrate_kbps.count >= 1 ? w : null;
  });
  check(tel.bitrate_kbps.mean > 0, `telemetry reached the server: ${tel.reports} report(s), bitrate ${tel.bitrate_kbps.mean} kbit/s, rtt ${tel.rtt_ms.mean} ms, dropped ${tel.dropped_frames.sum}, failures ${tel.failures.sum}`);

  // ---- viewer page on a phone (Android UA, small screen) ----
  const phoneCtx = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    userAgent: ANDROID,
  });
  const phone = await phoneCtx.newPage();
  watchErrors(phone, 'phone viewer', errors);
  await phone.goto(`${VIEWER}/watch/main`);
  await phone.waitForFunction(() => document.body.dataset.playing === 'true', null, { timeout: WAIT });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the viewer page fits a 390 px wide phone (overflow ${overflow} px)`);

  // ---- poll: the console starts it, both viewers vote (click, keyboard), exact results ----
  await con.getByLabel('Question').fill('Who wins the final?');
  await con.getByLabel('Choices, one per line').fill('Red\nBlue\nDraw');
  await con.getByLabel('Break results down by').selectOption('os');
  await con.getByRole('button', { name: 'Start poll' }).click();
  await desk.locator('#poll-question', { hasText: 'Who wins the final?' }).waitFor({ timeout: WAIT });
  await phone.locator('#poll-question', { hasText: 'Who wins the final?' }).waitFor({ timeout: WAIT });
  check(true, 'both viewer pages show the poll');
  await desk.getByRole('button', { name: /^Blue/ }).click();
  await phone.getByRole('button', { name: /^Red/ }).focus();
  await phone.keyboard.press('Enter');
  await desk.locator('button[aria-pressed="true"]', { hasText: 'Blue' }).waitFor({ timeout: WAIT });
  await phone.locator('button[aria-pressed="true"]', { hasText: 'Red' }).waitFor({ timeout: WAIT });
  check(true, 'the votes are acknowledged (click on the desktop, Enter on the phone)');
  const results = con.locator('#results[data-total="2"]');
  await results.waitFor({ timeout: WAIT });
  const counts = await con.locator('#results-counts li').evaluateAll((lis) => lis.map((l) => Number(l.dataset.count)));
  check(JSON.stringify(counts) === '[1,1,0]', `the console shows the exact counts ${JSON.stringify(counts)}`);
  await con.locator('#breakdown tr[data-value="android"]').waitFor({ timeout: WAIT });
  const rows = await con.locator('#breakdown tbody tr').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.dataset.value, [...tr.querySelectorAll('td')].map((td) => Number(td.dataset.count))])),
  );
  check(
    JSON.stringify(rows) === JSON.stringify({ android: [1, 0, 0], linux: [0, 1, 0] }),
    `the console shows the breakdown by OS ${JSON.stringify(rows)}`,
  );
  const pollId = await con.locator('#results').getAttribute('data-poll');
  const stored = await api('GET', `/api/polls/${pollId}`);
  check(JSON.stringify(stored.body.counts) === '[1,1,0]', 'the API agrees with the console');
  await desk.locator('#poll[data-total="2"]').waitFor({ timeout: WAIT });
  check(true, 'the viewer page shows the live results');

  // ---- pushes: a message, the player configuration, an upcoming broadcast ----
  await con.getByLabel('Group').selectOption('stream:main');
  await con.getByLabel('Message').fill('Welcome to the final!');
  await con.getByRole('button', { name: 'Send message' }).click();
  await desk.locator('#messages li', { hasText: 'Welcome to the final!' }).waitFor({ timeout: WAIT });
  await phone.locator('#messages li', { hasText: 'Welcome to the final!' }).waitFor({ timeout: WAIT });
  check(true, 'both viewer pages show the message');
  // Ad breaks are defined on another branch (sessions); a break-related message gets the
  // page's generic banner until its end.
  await api('POST', '/api/groups/stream:main/messages', { payload: { type: 'ad_break', duration_s: 30 } });
  await desk.locator('#break', { hasText: 'back in 30 s' }).waitFor({ state: 'visible', timeout: WAIT });
  await api('POST', '/api/groups/stream:main/messages', { payload: { type: 'ad_break_end' } });
  await desk.locator('#break').waitFor({ state: 'hidden', timeout: WAIT });
  check(true, 'a break-related message shows the ad break banner until its end');
  await con.locator('#config-title').fill('Grand final');
  await con.getByLabel('Logo URL').fill(`${VIEWER}/web/logo.svg`);
  await con.getByRole('button', { name: 'Apply configuration' }).click();
  await desk.locator('#title', { hasText: 'Grand final' }).waitFor({ timeout: WAIT });
  check((await desk.locator('#logo').getAttribute('alt')) === 'Grand final logo', 'the viewer page shows the configured title and logo');
  await con.locator('#create-id').fill('finals');
  await con.locator('#create-title').fill('The finals');
  await con.locator('#create-start').fill('2031-06-01T20:00');
  await con.getByRole('button', { name: 'Create stream' }).click();
  await desk.locator('#upcoming li', { hasText: 'The finals' }).waitFor({ timeout: WAIT });
  check(true, 'the viewer page lists the upcoming broadcast');
  await con.locator('tr[data-group="stream:main"] [data-role="size"]', { hasText: /^2$/ }).waitFor({ timeout: WAIT });
  check(true, 'the console shows the audience of stream:main (2)');
  await con.locator('tr[data-group="stream:main"] [data-role="reports"]', { hasText: /^[1-9]/ }).waitFor({ timeout: WAIT });
  check(true, 'the console shows the telemetry of stream:main');

  await accessible(desk, 'viewer page');
  await accessible(phone, 'viewer page on a phone');
  await accessible(con, 'console');

  await desk.screenshot({ path: join(SHOTS, 'viewer.png') });
  await phone.screenshot({ path: join(SHOTS, 'viewer-phone.png'), fullPage: true });
  // The ad break below is counted for one viewing session: the desktop's.
  await phoneCtx.close();

  // ---- the console closes the poll: final results on both sides ----
  await con.getByRole('button', { name: 'Close poll' }).click();
  await con.locator('#results[data-final="true"][data-total="2"]').waitFor({ timeout: WAIT });
  await desk.locator('#poll-status', { hasText: 'Final results: 2 votes.' }).waitFor({ timeout: WAIT });
  check(await desk.getByRole('button', { name: /^Blue/ }).isDisabled(), 'the console closes the poll; the page shows the final results and stops taking votes');

  // ---- the control connection drops: the page resumes as the same viewer, and reports the
  // drop as a failure, which a remediation rule on stream:main turns into a bitrate cap ----
  const rule = await api('POST', '/api/rules', {
    id: 'web-failures',
    groups: ['stream:main'],
    window_s: 10,
    min_reports: 1,
    failures_per_min_above: 0,
    hold_s: 0,
    actions: [{ type: 'player_config', config: { max_bitrate_kbps: 1500 } }],
  });
  check(rule.status === 201, `a remediation rule on stream:main (${JSON.stringify(rule.body)})`);
  await desk.evaluate(() => window.ovation.reconnect());
  await desk.waitForFunction(() => window.ovation.state.resumed >= 1, null, { timeout: WAIT });
  const resumedId = await desk.evaluate(() => window.ovation.state.viewer);
  check(resumedId === viewerId, `the page resumed as the same viewer (${resumedId})`);
  await advances(desk, 1, 'the video plays on through the reconnect');
  await con.locator('#remediations li', { hasText: 'web-failures applied on stream:main' }).waitFor({ timeout: WAIT });
  check(true, 'the console shows the remediation event fired by the page\'s reported failure');
  await desk.waitForFunction(() => window.ovation.state.override.max_bitrate_kbps === 1500, null, { timeout: WAIT });
  check(true, 'the viewer page got the remediation\'s bitrate cap');

  // ---- an ad break from the console (keyboard): the page shows the Ad indicator and plays
  // the ad through, the console counts its beacons, the same as the API ----
  const adBreaks = await desk.evaluate(() => window.ovation.state.adBreaks);
  await con.getByLabel('Break duration (seconds)').fill('2');
  await con.getByLabel('Break duration (seconds)').press('Enter');
  await con.locator('#beacons[data-break] tr[data-ad="web-spot"]').waitFor({ timeout: WAIT });
  const breakId = Number(await con.locator('#beacons').getAttribute('data-break'));
  check(breakId >= 1, `the console started break ${breakId}: ${await con.locator('#break-status').textContent()}`);
  await desk.waitForFunction(
    (n) => window.ovation.state.adBreaks > n && !document.getElementById('ad').hidden,
    adBreaks,
    { timeout: WAIT },
  );
  const inAd = await desk.evaluate(() => ({ at: window.ovation.state.adStartedAt, t: document.getElementById('video').currentTime }));
  const sentAt = await con.evaluate(() => window.ovationConsole.breakSentAt);
  check(true, `the viewer page shows the Ad indicator (at currentTime ${inAd.t.toFixed(2)})`);
  await desk.screenshot({ path: join(SHOTS, 'viewer-ad.png') });
  await desk.waitForFunction(() => !window.ovation.state.inAd, null, { timeout: WAIT });
  const adLeft = await desk.evaluate(() => ({ at: window.ovation.state.adEndedAt, t: document.getElementById('video').currentTime }));
  check(adLeft.t > inAd.t + 1.5, `the video played through the ad (currentTime ${inAd.t.toFixed(2)} -> ${adLeft.t.toFixed(2)})`);
  check(await desk.locator('#ad').isHidden(), 'the Ad indicator is gone after the break');
  await advances(desk, 1, 'the video plays on after the break');
  await playerHealthy(desk, 'desktop viewer through the ad break');
  console.log(
    `web: ad break ${breakId}: ${inAd.at - sentAt} ms from the console's Start to the ad's first frame on the page, ` +
      `ad shown for ${adLeft.at - inAd.at} ms`,
  );
  const beaconRow = con.locator(`#beacons[data-break="${breakId}"] tr[data-ad="web-spot"]`);
  await beaconRow.locator('td[data-beacon="complete"][data-count="1"]').waitFor({ timeout: WAIT });
  const shown = await beaconRow.locator('td').evaluateAll((tds) => Object.fromEntries(tds.map((td) => [td.dataset.beacon, Number(td.dataset.count)])));
  const all = { impression: 1, start: 1, first_quartile: 1, midpoint: 1, third_quartile: 1, complete: 1 };
  check(JSON.stringify(shown) === JSON.stringify(all), `the console shows the beacons of the one session ${JSON.stringify(shown)}`);
  const listed = await api('GET', '/api/streams/main/breaks');
  const listedBreak = listed.body.breaks.find((b) => b.id === breakId);
  check(
    listedBreak && Object.keys(all).every((k) => listedBreak.beacons['web-spot'][k] === shown[k]),
    `GET /api/streams/main/breaks agrees (${JSON.stringify(listedBreak)})`,
  );
  await con.screenshot({ path: join(SHOTS, 'console.png'), fullPage: true });

  const before = errors.filter((e) => e.phase === 'before restart');
  check(
    before.length === 0,
    `no console errors on any page (${JSON.stringify(before)}; ${errors.notReady || 0} live playlist 503s while a stream had no segment yet, retried)`,
  );

  // ---- the broadcaster stops: the page and the console show the broadcast ended ----
  await ask('stop');
  await desk.locator('#state[data-state="ended"]').waitFor({ timeout: WAIT });
  await desk.locator('#curtain', { hasText: 'The broadcast has ended.' }).waitFor({ state: 'visible', timeout: WAIT });
  await liveRow.locator('[data-role="state"]', { hasText: 'ended' }).waitFor({ timeout: WAIT });
  check(true, 'the page and the console show the broadcast ended');

  // ---- the server restarts: the page reconnects and watches again (offline until the
  // broadcaster is back), then plays ----
  errors.phase = 'restart';
  const { welcomes, loadedUrl } = await desk.evaluate(() => window.ovation.state);
  await ask('restart');
  await desk.waitForFunction((n) => window.ovation.state.welcomes > n, welcomes, { timeout: WAIT });
  await desk.locator('#state[data-state="offline"]').waitFor({ timeout: WAIT });
  check(true, 'after the restart the page is back and shows the stream offline');
  await ask(`publish ${key}`);
  await desk.waitForFunction(
    (old) => window.ovation.state.streamState === 'live' && window.ovation.state.loadedUrl && window.ovation.state.loadedUrl !== old,
    loadedUrl,
    { timeout: WAIT },
  );
  await advances(desk, 1.5, 'the viewer page plays again after the server restarted');
  await playerHealthy(desk, 'desktop viewer after the restart', true);
  const after = await desk.evaluate(() => window.ovation.state);
  console.log(
    `web: after the restart the page is viewer ${after.viewer} (resume token unknown to the new process: ` +
      `${after.viewer === viewerId ? 'same' : 'new'} id), ${after.reconnects} reconnects, ${after.telemetrySent} telemetry reports sent`,
  );
  await liveRow.locator('[data-role="state"]', { hasText: 'live' }).waitFor({ timeout: WAIT });
  check(true, 'the console follows the restarted server');
  const unexpected = errors.filter(
    (e) => e.uncaught || !/net::ERR_|WebSocket connection to|Failed to load resource/.test(e.text),
  );
  check(unexpected.length === 0, `only network errors while the server was down (${JSON.stringify(unexpected)})`);
  console.log(`web: ${errors.length} network errors logged by the browser while the server restarted`);

  // ---- a repeat visit: the browser revalidates the page and its files (ETag, 304) ----
  const again = await deskCtx.newPage();
  watchErrors(again, 'repeat visit', errors);
  await again.goto(`${VIEWER}/watch/main`);
  await again.waitForFunction(() => document.body.dataset.playing === 'true', null, { timeout: WAIT });
  const repeat = await again.evaluate(() => {
    const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
    const pageFiles = entries.filter((r) => !/\/hls\//.test(r.name));
    return {
      // transferSize: headers and body on the wire; a 304 is its head only.
      bytes: pageFiles.reduce((n, r) => n + (r.transferSize || 0), 0),
      files: pageFiles.length,
      firstFrameMs: window.ovation.state.firstFrameMs,
    };
  });
  console.log(
    `web: repeat visit: ${repeat.bytes} bytes on the wire for ${repeat.files} page files (revalidated), ` +
      `time to first frame ${repeat.firstFrameMs} ms`,
  );
  check(repeat.bytes < 20_000, 'a repeat visit does not download the player again');
} finally {
  await browser.close();
}
console.log('web: all checks passed');
process.exit(0);
