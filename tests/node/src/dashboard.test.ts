/**
 * The dashboard mounts of the Node package over real HTTP, against Redis:
 * the Express/`http` middleware (at the root of a plain server, under a
 * prefix, and under an Express mount path) and the NestJS
 * RunlaneDashboardModule (behind a guard). The answers themselves are the
 * core's (tests/c/test_dashboard.c); these tests prove the adapters carry
 * requests and answers whole: page, JSON, CSRF on actions, 4xx on bad input,
 * the body cap, the mount path.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { CanActivate, ExecutionContext, Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { INestApplication } from '@nestjs/common';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const express = require('express') as () => any;

import { AssistantMessageQueue, rawBinding, runlaneDashboard } from 'runlane';
import { RunlaneDashboardModule, RunlaneModule } from 'runlane/nestjs';
import { memoryStore, redisTest, requireRedis, unique, waitFor } from './helpers';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

type Requester = (base: string, path: string, opts?: { method?: string; body?: string | Buffer; headers?: Record<string, string> }) => Promise<Answer>;

/** The same request with the app's credentials (the guard's and the auth middleware's). */
const authed: Requester = (base, path, o = {}) => plainRequest(base, path, { ...o, headers: { ...(o.headers ?? {}), authorization: 'Bearer ops' } });

/** One HTTP request to `base` + `path` over a real socket. */
function plainRequest(base: string, path: string, opts: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(path, base);
    const req = http.request(u, { method: opts.method ?? 'GET', headers: { ...(opts.headers ?? {}), connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    // A server that refuses an oversized body may close before reading it all.
    req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e)));
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** A queue on Redis with one dead letter (a handler that fails once, maxAttempts 1) and `live` more conversations pending. */
async function queueWithDeadLetter(tag: string): Promise<{ q: AssistantMessageQueue; delivered: string[] }> {
  const delivered: string[] = [];
  let fail = true;
  const q = new AssistantMessageQueue({
    store: requireRedis(), keyPrefix: unique(tag), batchWindowMs: 20, maxAttempts: 1,
    handler: (batch) => {
      if (fail) throw new Error('upstream 503 (test)');
      delivered.push(batch.conversationId);
    },
  });
  await q.startWorker();
  await q.enqueue('conv-dead', 'hello');
  await waitFor('a dead letter', async () => (await q.listDead()).length === 1);
  fail = false;
  return { q, delivered };
}

/**
 * The cases every mount must pass, against the dashboard at `base` (ending
 * with '/'): the same for the middleware and the NestJS module.
 */
async function mountCases(base: string, q: AssistantMessageQueue, delivered: string[], request: Requester = plainRequest): Promise<void> {
  // The page, with the core's headers.
  const page = await request(base, '');
  assert.equal(page.status, 200, page.text);
  assert.match(String(page.headers['content-type']), /^text\/html/);
  assert.match(page.text, /<html/i);
  assert.ok(page.headers['content-security-policy'], 'the core\'s CSP header is sent');
  assert.equal(page.headers['x-content-type-options'], 'nosniff');

  // JSON endpoints.
  const session = await request(base, 'api/session');
  assert.equal(session.status, 200, session.text);
  const token = session.json.csrf_token as string;
  assert.match(token, /^[0-9a-f]{64}$/);
  const overview = await request(base, 'api/overview');
  assert.equal(overview.status, 200, overview.text);
  assert.equal(overview.json.totals.dead, 1);
  const dead = await request(base, 'api/dead?offset=0&limit=10');
  assert.equal(dead.status, 200, dead.text);
  assert.equal(dead.json.items.length, 1);
  assert.match(dead.text, /upstream 503/);
  const deadId = dead.json.items[0].id as string;
  const convs = await request(base, 'api/conversations?state=dead&search=conv-');
  assert.equal(convs.status, 200, convs.text);
  const conv = await request(base, 'api/conversation?id=conv-dead');
  assert.equal(conv.status, 200, conv.text);

  // Bad paths, methods, paging: 4xx from the core, carried whole.
  assert.equal((await request(base, 'api/nope')).status, 404);
  assert.equal((await request(base, 'api/overview', { method: 'POST', body: '{}', headers: { 'x-runlane-csrf': token } })).status, 405);
  const badPaging = await request(base, 'api/conversations?state=dead&limit=100000');
  assert.equal(badPaging.status, 400);
  assert.equal(badPaging.json.error.status, 400);
  assert.equal((await request(base, 'api/conversations?state=bogus')).status, 400);

  // A POST action: refused without the token, with a forged one, with a bad
  // or oversized body; nothing changes.
  const json = { 'content-type': 'application/json' };
  const body = JSON.stringify({ id: deadId });
  const noToken = await request(base, 'api/dead/retry', { method: 'POST', body, headers: json });
  assert.equal(noToken.status, 403, noToken.text);
  const forged = await request(base, 'api/dead/retry', { method: 'POST', body, headers: { ...json, 'x-runlane-csrf': 'f'.repeat(64) } });
  assert.equal(forged.status, 403);
  const badBody = await request(base, 'api/dead/retry', { method: 'POST', body: '{"id": 12}', headers: { ...json, 'x-runlane-csrf': token } });
  assert.equal(badBody.status, 400, badBody.text);
  const unknownMember = await request(base, 'api/dead/retry', { method: 'POST', body: '{"nope": true}', headers: { ...json, 'x-runlane-csrf': token } });
  assert.equal(unknownMember.status, 400);
  const huge = JSON.stringify({ id: 'x'.repeat(64 * 1024) });
  const tooBig = await request(base, 'api/dead/retry', { method: 'POST', body: huge, headers: { ...json, 'x-runlane-csrf': token } });
  assert.equal(tooBig.status, 413, tooBig.text);
  // Streamed without a Content-Length: the adapter stops reading past the cap.
  const chunked = await request(base, 'api/dead/retry', {
    method: 'POST', body: Buffer.from(huge), headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked', 'x-runlane-csrf': token },
  });
  assert.equal(chunked.status, 413, chunked.text);
  assert.equal((await q.listDead()).length, 1, 'refused requests changed nothing');
  assert.equal(delivered.length, 0);

  // With the token: the dead letter goes back and is delivered.
  const ok = await request(base, 'api/dead/retry', { method: 'POST', body, headers: { ...json, 'x-runlane-csrf': token } });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json, { ok: true, count: 1 });
  await waitFor('the retried batch delivered', () => delivered.includes('conv-dead'));
  assert.equal((await q.listDead()).length, 0);
}

describe('dashboard middleware (http, Express)', () => {
  test('a plain http server, the dashboard at the root', redisTest(), async () => {
    const { q, delivered } = await queueWithDeadLetter('dash-http');
    const server = http.createServer(runlaneDashboard(q));
    try {
      const port = await listen(server);
      await mountCases(`http://127.0.0.1:${port}/`, q, delivered);
    } finally {
      server.close();
      await q.close();
    }
  });

  test('a plain http server, the dashboard under a prefix; other paths go to next()', redisTest(), async () => {
    const { q, delivered } = await queueWithDeadLetter('dash-prefix');
    const mw = runlaneDashboard(q, { prefix: '/ops/lanes' });
    const server = http.createServer((req, res) =>
      mw(req, res, () => {
        res.statusCode = 418;
        res.end('app');
      }),
    );
    try {
      const port = await listen(server);
      const base = `http://127.0.0.1:${port}`;
      // The mount point without its slash: redirected, so relative links work.
      const bare = await plainRequest(base, '/ops/lanes?x=1');
      assert.equal(bare.status, 308);
      assert.equal(new URL(String(bare.headers.location), `${base}/ops/lanes?x=1`).pathname, '/ops/lanes/');
      assert.equal((await plainRequest(base, '/ops/lanesX/api/session')).status, 418, 'outside the prefix: the app');
      assert.equal((await plainRequest(base, '/elsewhere')).status, 418);
      await mountCases(`${base}/ops/lanes/`, q, delivered);
    } finally {
      server.close();
      await q.close();
    }
  });

  test('Express: app.use(path, auth, middleware), with express.json() before it', redisTest(), async () => {
    const { q, delivered } = await queueWithDeadLetter('dash-express');
    const app = express();
    app.use(require('express').json());
    const auth = (req: any, res: any, next: () => void) => (req.headers.authorization === 'Bearer ops' ? next() : res.status(401).end());
    app.use('/admin/runlane', auth, runlaneDashboard(q));
    const server = http.createServer(app);
    try {
      const port = await listen(server);
      const base = `http://127.0.0.1:${port}`;
      assert.equal((await plainRequest(base, '/admin/runlane/')).status, 401, 'the app\'s auth runs first');
      const bare = await authed(base, '/admin/runlane');
      assert.equal(bare.status, 308);
      assert.equal(new URL(String(bare.headers.location), `${base}/admin/runlane`).pathname, '/admin/runlane/');
      await mountCases(`${base}/admin/runlane/`, q, delivered, authed);
    } finally {
      server.close();
      await q.close();
    }
  });

  test('after the queue closes, requests get 503', redisTest(), async () => {
    const q = new AssistantMessageQueue({ store: requireRedis(), keyPrefix: unique('dash-closed') });
    const server = http.createServer(runlaneDashboard(q));
    try {
      const port = await listen(server);
      assert.equal((await plainRequest(`http://127.0.0.1:${port}/`, 'api/overview')).status, 200);
      await q.close();
      const r = await plainRequest(`http://127.0.0.1:${port}/`, 'api/overview');
      assert.equal(r.status, 503);
      assert.equal(r.json.error.status, 503);
    } finally {
      server.close();
      await q.close();
    }
  });
});

@Injectable()
class OpsGuard implements CanActivate {
  canActivate(ctx: ExecutionContext): boolean {
    const req = ctx.switchToHttp().getRequest<http.IncomingMessage>();
    return req.headers.authorization === 'Bearer ops';
  }
}

describe('RunlaneDashboardModule (NestJS, platform-express)', () => {
  let app: INestApplication | undefined;
  let base = '';
  let prefix = '';
  before(async () => {
    if (redisTest().skip) return;
    prefix = unique('dash-nest');
    @Module({
      imports: [
        RunlaneModule.forRoot({ store: requireRedis(), keyPrefix: prefix, batchWindowMs: 20, maxAttempts: 1, worker: false }),
        RunlaneDashboardModule.register({ path: 'ops/lanes', guards: [OpsGuard] }),
      ],
    })
    class AppModule {}
    app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
    app.setGlobalPrefix('api/v1');
    await app.listen(0, '127.0.0.1');
    base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  });
  after(async () => {
    await app?.close();
  });

  test('mounted at the global prefix + path, behind the guard, every case', redisTest(), async () => {
    assert.ok(app, 'the app started');
    assert.equal((await plainRequest(base, '/api/v1/ops/lanes/api/session')).status, 403, 'the guard runs first');
    assert.equal((await plainRequest(base, '/ops/lanes/')).status, 404, 'only under the global prefix');
    const bare = await authed(base, '/api/v1/ops/lanes');
    assert.equal(bare.status, 308);
    assert.equal(new URL(String(bare.headers.location), `${base}/api/v1/ops/lanes`).pathname, '/api/v1/ops/lanes/');

    // A dead letter in the module's queue: a second client on the same
    // prefix fails the batch once (the module's queue runs no worker).
    const { AssistantMessageQueueService, getQueueToken } = await import('runlane/nestjs');
    const q = app!.get<InstanceType<typeof AssistantMessageQueueService>>(getQueueToken());
    const delivered: string[] = [];
    let fail = true;
    const worker = new AssistantMessageQueue({
      store: requireRedis(), keyPrefix: prefix, batchWindowMs: 20, maxAttempts: 1,
      handler: (batch) => {
        if (fail) throw new Error('upstream 503 (test)');
        delivered.push(batch.conversationId);
      },
    });
    try {
      await worker.startWorker();
      await q.enqueue('conv-dead', 'hello');
      await waitFor('a dead letter', async () => (await q.listDead()).length === 1);
      fail = false;
      await mountCases(`${base}/api/v1/ops/lanes/`, q, delivered, authed);
    } finally {
      await worker.close();
    }
  });
});

describe('dashboard_server (the browser scenario\'s Node server)', () => {
  for (const mount of ['express', 'http', 'nest']) {
    test(`--mount ${mount}: prints its URL, serves the page and the API there, stops on SIGTERM`, redisTest(), async () => {
      const store = requireRedis();
      const child = spawn(process.execPath, [path.join(__dirname, 'dashboard_server.js'), '--store', store, '--set', `key.prefix=${unique('dash-runner')}`, '--mount', mount], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        const url = await new Promise<string>((resolve, reject) => {
          const rl = createInterface({ input: child.stdout! });
          rl.once('line', (l) => resolve(l.trim()));
          child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
        });
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/ops\/lanes\/$/);
        const page = await plainRequest(url, '');
        assert.equal(page.status, 200, page.text);
        assert.match(page.text, /<html/i);
        const session = await plainRequest(url, 'api/session');
        assert.equal(session.status, 200, session.text);
        assert.match(session.json.csrf_token, /^[0-9a-f]{64}$/);
        assert.equal((await plainRequest(url, 'api/overview')).json.totals.dead, 0);
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, 0, stderr);
    });
  }
});

describe('the raw layer (SWIG typemaps of runlane.i)', () => {
  test('runlane_dashboard_new/handle/response_*: response out-parameter returned, Buffer bodies, NULL -> throw', () => {
    const r = rawBinding() as any;
    const conf = r.runlane_conf_new();
    r.runlane_conf_set(conf, 'store', memoryStore('dash-raw'));
    const rl = r.runlane_new(conf);
    r.runlane_conf_destroy(conf);
    try {
      assert.throws(() => r.runlane_dashboard_new(rl, '{"history_size": 1}'), (e: any) => e.code === 'RUNLANE_ERR_INVALID_ARG' || /history_size/.test(e.message));
      const d = r.runlane_dashboard_new(rl, null);
      try {
        const s = r.runlane_dashboard_handle(d, 'GET', '/api/session', null, null, null);
        assert.equal(r.runlane_dashboard_response_status(s), 200);
        const body = r.runlane_dashboard_response_body(s);
        assert.ok(Buffer.isBuffer(body), 'the body is a Buffer');
        const token = JSON.parse(body.toString('utf8')).csrf_token;
        assert.match(JSON.parse(r.runlane_dashboard_response_headers(s))['Content-Type'], /json/);
        r.runlane_dashboard_response_destroy(s);
        // A Buffer body with a NUL inside reaches the core whole (its length
        // travels with it): refused as bad JSON, not cut at the NUL.
        const nul = r.runlane_dashboard_handle(d, 'POST', '/api/dead/purge', null, Buffer.from('{"all":true}\u0000x'), token);
        assert.equal(r.runlane_dashboard_response_status(nul), 400);
        r.runlane_dashboard_response_destroy(nul);
        const ok = r.runlane_dashboard_handle(d, 'POST', '/api/dead/purge', null, '{"all":true}', token);
        assert.equal(r.runlane_dashboard_response_status(ok), 200, r.runlane_dashboard_response_body(ok).toString());
        r.runlane_dashboard_response_destroy(ok);
        assert.equal(r.RUNLANE_DASHBOARD_BODY_MAX, 16384);
      } finally {
        r.runlane_dashboard_destroy(d);
      }
    } finally {
      r.runlane_destroy(rl);
    }
  });
});
