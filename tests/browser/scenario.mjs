// The dashboard scenario in a real browser, for any mount of the page.
//
// runScenario(page, baseUrl, opts) drives the page served at baseUrl (the
// `runlane dashboard` program, or the Node/Python mounts: the page uses
// relative URLs, so baseUrl must end with "/") over a queue with live
// traffic, and checks what an operator on call needs:
//   1. the totals and their chart fill in (screenshot overview.png);
//   2. a conversation fed by the producer is seen in two different states
//      (screenshots conversations.png, conversation.png: its detail);
//   3. the dead letter of opts.deadConversation is opened: its error and
//      messages shown (dead-letter.png);
//   4. retry: a dismissed confirmation changes nothing; an accepted one
//      puts the batch back, and it is delivered (opts.isDelivered);
//   5. on a 390x844 phone viewport the page fits the width (phone.png);
//   6. no answer the page received and no text it shows carries a secret
//      (opts.secrets: the API key, the store password).
//
// opts: {
//   artifacts: directory for the screenshots (created),
//   liveConversation: a conversation id the producer keeps feeding,
//   deadConversation: a conversation id with a dead letter,
//   beforeRetry: async () => {}  (make the next attempt succeed),
//   isDelivered: async (conversationId) => boolean,
//   secrets: [string, ...],
//   timeoutMs: overall deadline for each wait (default 30000),
//   log: (msg) => {} }
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

function assert(cond, msg) {
  if (!cond) throw new Error(`dashboard scenario: ${msg}`);
}

async function until(what, fn, timeoutMs, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`dashboard scenario: timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// The value of one totals card ("enqueued", "dead", ...), or null.
async function card(page, name) {
  return page.evaluate((n) => {
    for (const c of document.querySelectorAll('#cards .card')) {
      if (c.querySelector('span')?.textContent === n) return Number(c.querySelector('b').textContent);
    }
    return null;
  }, name);
}

// Shows one tab (filtered by `search`) and returns its rows once the list
// request that the click started has answered and been drawn.
async function rowsOf(page, state, search) {
  const search_el = page.locator('#search');
  if ((await search_el.inputValue()) !== search) {
    const filled = page.waitForResponse((r) => r.url().includes('api/conversations?') && r.url().includes(`search=${encodeURIComponent(search)}`));
    await search_el.fill(search);
    await filled;
  }
  const answered = page.waitForResponse((r) => r.url().includes(`api/conversations?state=${state}&`));
  await page.click(`#tab-${state}`);
  await answered;
  await page.waitForTimeout(50); // the response handler draws the rows
  return page.$$eval('#rows tr', (trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)));
}

export async function runScenario(page, baseUrl, opts) {
  const t = opts.timeoutMs ?? 30000;
  const log = opts.log ?? (() => {});
  const secrets = (opts.secrets ?? []).filter(Boolean);
  assert(baseUrl.endsWith('/'), `baseUrl must end with "/": ${baseUrl}`);
  mkdirSync(opts.artifacts, { recursive: true });
  const shot = async (name) => {
    const path = join(opts.artifacts, name);
    await page.screenshot({ path, fullPage: true });
    log(`screenshot ${path}`);
  };

  // Every answer the page gets is checked for secrets (6).
  const leaks = [];
  const pending = [];
  page.on('response', (r) => {
    pending.push((async () => {
      let text = '';
      try { text = await r.text(); } catch { return; }
      const headers = JSON.stringify(await r.allHeaders());
      for (const s of secrets) if (text.includes(s) || headers.includes(s)) leaks.push(`${r.url()} shows a secret`);
    })());
  });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));

  // 1. totals and chart
  await page.goto(baseUrl);
  await until('the totals', async () => (await card(page, 'enqueued')) > 0, t);
  await until('the chart (two history samples)', async () => (await page.$$('#chart polyline')).length > 0, t);
  assert(/updated/.test(await page.textContent('#status')), 'the status line does not say "updated"');
  await shot('overview.png');

  // 2. a live conversation changes state
  const live = opts.liveConversation;
  const seen = new Set();
  await until(`${live} in two different states`, async () => {
    for (const s of ['pending', 'ready', 'inflight']) {
      const rows = await rowsOf(page, s, live);
      if (rows.some((r) => r[0] === live && r[1] === s)) seen.add(s);
    }
    return seen.size >= 2;
  }, t, 0);
  log(`${live} seen as: ${[...seen].join(', ')}`);
  await shot('conversations.png');
  // its detail: open it from whichever tab lists it now
  await until(`${live} listed to open`, async () => {
    for (const s of ['inflight', 'pending', 'ready']) {
      const rows = await rowsOf(page, s, live);
      if (rows.some((r) => r[0] === live)) {
        const opened = page.waitForResponse((r) => r.url().includes('api/conversation?id='));
        await page.click(`#rows tr:has(td:text-is("${live}"))`);
        await opened;
        return true;
      }
    }
    return false;
  }, t, 0);
  await until('the conversation view', async () => (await page.textContent('#detail h3')) === live, t);
  const detail = await page.textContent('#detail');
  assert(/state: /.test(detail) && /lease owner: /.test(detail) && /pending \(\d+\)/.test(detail),
    `the conversation view lacks state, lease or pending: ${detail.slice(0, 300)}`);
  await shot('conversation.png');

  // 3. the dead letter
  const dead = opts.deadConversation;
  let deadRow;
  await until(`the dead letter of ${dead}`, async () => {
    const rows = await rowsOf(page, 'dead', dead);
    deadRow = rows.find((r) => r[0] === dead && r[1] === 'dead');
    return deadRow;
  }, t);
  assert(deadRow[3].length > 0, 'the dead letter shows no error');
  const row = page.locator(`#rows tr:has(td:text-is("${dead}"))`);
  const detailDead = page.waitForResponse((r) => r.url().includes('api/dead?'));
  await row.locator('td').first().click();
  await detailDead;
  await until('the dead letter view', async () => /dead letter /.test(await page.textContent('#detail h3')) &&
    (await page.$$('#detail pre')).length >= 2, t);
  const deadText = await page.textContent('#detail');
  assert(deadText.includes(deadRow[3].slice(0, 20)), 'the dead letter view does not show its error');
  assert(/"content"/.test(deadText), 'the dead letter view does not show its messages');
  await shot('dead-letter.png');

  // 4. retry, with the confirmation
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
  await row.locator('button', { hasText: 'retry' }).click();
  await until('the confirmation', async () => asked, t);
  assert(/Retry dead letter/.test(asked), `unexpected confirmation: ${asked}`);
  const stillDead = await rowsOf(page, 'dead', dead);
  assert(stillDead.some((r) => r[0] === dead), 'a dismissed confirmation retried anyway');
  if (opts.beforeRetry) await opts.beforeRetry();
  const deadBefore = await card(page, 'dead');
  page.once('dialog', (d) => d.accept());
  const retried = page.waitForResponse((r) => r.url().endsWith('api/dead/retry') && r.request().method() === 'POST');
  await page.locator(`#rows tr:has(td:text-is("${dead}"))`).locator('button', { hasText: 'retry' }).click();
  const rr = await retried;
  assert(rr.status() === 200, `retry answered ${rr.status()}: ${await rr.text()}`);
  await until(`${dead} delivered`, async () => opts.isDelivered(dead), t);
  await until('the dead letter gone from the page', async () => {
    const rows = await rowsOf(page, 'dead', dead);
    return !rows.some((r) => r[0] === dead) && (await card(page, 'dead')) < deadBefore;
  }, t);
  log(`${dead} retried from the page and delivered`);

  // 5. a phone
  await page.fill('#search', '');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await until('the totals on a phone', async () => (await card(page, 'enqueued')) > 0, t);
  await page.click('#tab-inflight');
  await page.waitForTimeout(300);
  const widths = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, view: window.innerWidth }));
  await shot('phone.png');
  assert(widths.doc <= widths.view + 1, `the page is wider than a phone: ${widths.doc} > ${widths.view}`);

  // 6. no secret anywhere
  await Promise.all(pending);
  const shown = await page.evaluate(() => document.documentElement.outerHTML);
  for (const s of secrets) assert(!shown.includes(s), 'the page shows a secret');
  assert(leaks.length === 0, leaks.join('; '));
  assert(pageErrors.length === 0, `errors in the page: ${pageErrors.join('; ')}`);
  return { statesSeen: [...seen] };
}
