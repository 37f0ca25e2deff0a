/**
 * The web dashboard in a Node HTTP server: a thin adapter over the core's
 * request handler (runlane_dashboard_handle), which owns every route, answer,
 * check and action. This file only moves bytes between Node's
 * IncomingMessage/ServerResponse and the handler, off the event loop (the
 * handler's store round trips run in the libuv threadpool).
 *
 *   import express from 'express';
 *   import { AssistantMessageQueue, runlaneDashboard } from 'runlane';
 *   app.use('/ops/lanes', requireOperator, runlaneDashboard(queue));
 *
 * Plain `http` works too: `http.createServer(runlaneDashboard(queue, { prefix: '/ops/lanes' }))`.
 * NestJS: `RunlaneDashboardModule` in 'runlane/nestjs'.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import { ClosedError, RunlaneError } from './errors';
import { raw } from './native';
import type { DashboardHandle } from './native';
import type { AssistantMessageQueue } from './queue';

/** Options of the core's handler (runlane_dashboard_new), plus the adapter's own. */
export interface RunlaneDashboardOptions {
  /** Spacing of the totals history samples, 1000..3600000 ms (core default 10000). */
  historyIntervalMs?: number;
  /** History samples kept, 2..10000 (core default 360: one hour). */
  historySize?: number;
  /** Refuse every action (retry, purge, release) with 403. */
  readOnly?: boolean;
  /** The most members of one partition's ready or lease set a list request looks at, 100..100000 (core default 10000). */
  scanLimit?: number;
  /**
   * For a plain `http` server (or any mount that does not strip its path):
   * the path the dashboard lives under, e.g. '/ops/lanes'. Requests outside
   * it go to `next()` (or get 404 without one). Express's `app.use(path, …)`
   * strips the path itself: leave this unset there.
   */
  prefix?: string;
  /** Take history samples on a timer, so the chart has data before a page opens (default true). */
  sample?: boolean;
}

/** One request, as the core's handler takes it. */
export interface DashboardRequest {
  method: string;
  /** Path relative to the mount point: '/', '/api/overview', ... */
  path: string;
  /** Raw query string without '?', or null. */
  query?: string | null;
  body?: Buffer | null;
  /** The request's X-Runlane-CSRF header. */
  csrf?: string | null;
}

/** One answer of the core's handler. */
export interface DashboardResponse {
  status: number;
  /** Every header to send (Content-Type, Cache-Control, Content-Security-Policy, ...). */
  headers: Record<string, string>;
  body: Buffer;
}

/** A request handler for Express, Connect and plain `http`. */
export type DashboardMiddleware = ((req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void) & {
  /** The handler behind it. */
  readonly dashboard: RunlaneDashboard;
};

const CSRF_HEADER = 'x-runlane-csrf';

/** The core's body cap (RUNLANE_DASHBOARD_BODY_MAX): a request is read up to one byte past it. */
function bodyMax(): number {
  return raw().RUNLANE_DASHBOARD_BODY_MAX;
}

/**
 * The dashboard handler of one queue. Created lazily on the first request
 * (the queue may still be connecting); lives as long as the queue. After the
 * queue closes, requests get 503.
 */
export class RunlaneDashboard {
  private handle?: Promise<DashboardHandle>;
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly queue: AssistantMessageQueue,
    private readonly options: RunlaneDashboardOptions = {},
  ) {
    if (options.sample !== false) {
      // runlane_dashboard_sample makes a store round trip only when a
      // sample is due, so a 1 s tick costs nothing in between.
      this.timer = setInterval(() => {
        if (this.queue.isClosed || this.closed) return this.close();
        this.sampleNow().catch(() => undefined);
      }, 1000);
      this.timer.unref();
    }
  }

  /** Stops the sampling timer. The queue stays open. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private dash(): Promise<DashboardHandle> {
    if (!this.handle) {
      const o = this.options;
      const opts: Record<string, unknown> = {};
      if (o.historyIntervalMs !== undefined) opts.history_interval_ms = o.historyIntervalMs;
      if (o.historySize !== undefined) opts.history_size = o.historySize;
      if (o.readOnly !== undefined) opts.read_only = o.readOnly;
      if (o.scanLimit !== undefined) opts.scan_limit = o.scanLimit;
      const json = Object.keys(opts).length ? JSON.stringify(opts) : null;
      this.handle = this.queue._bridgeCall(async (b) => raw().dashboard_new(b, json));
      this.handle.catch(() => {
        this.handle = undefined; // a closed queue or bad options: tried again (and refused) next time
      });
    }
    return this.handle;
  }

  /** Takes a history sample now if one is due (the timer calls it). */
  async sampleNow(): Promise<void> {
    const d = await this.dash();
    await this.queue._bridgeCall((b) => raw().bridge_call(b, 'dashboard_sample', d));
  }

  /** Answers one request (no HTTP involved): for servers other than Node's. */
  async handleRequest(req: DashboardRequest): Promise<DashboardResponse> {
    const d = await this.dash();
    const r = await this.queue._bridgeCall((b) =>
      raw().bridge_call(b, 'dashboard_handle', d, req.method, req.path, req.query || null, req.body ?? null, req.csrf ?? null),
    );
    return { status: r.status, headers: JSON.parse(r.headers) as Record<string, string>, body: r.body };
  }

  /** The Express/Connect/`http` request handler. */
  middleware(): DashboardMiddleware {
    const fn = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void => {
      this.serve(req, res, next).catch((e) => {
        if (next) next(e);
        else if (!res.headersSent) sendError(res, 500, 'internal', 'runlane dashboard: ' + String((e as Error)?.message ?? e));
        else res.destroy();
      });
    };
    return Object.assign(fn, { dashboard: this });
  }

  private async serve(req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q < 0 ? url : url.slice(0, q);
    const prefix = this.options.prefix?.replace(/\/+$/, '');
    if (prefix) {
      if (path !== prefix && !path.startsWith(prefix + '/')) {
        if (next) return next();
        return sendError(res, 404, 'not_found', 'no such endpoint');
      }
      path = path.slice(prefix.length);
    }
    return this.respond(req, res, path);
  }

  /**
   * Answers `req` on `res`, `path` being the request's path relative to the
   * mount point ('' or '/' for the page). Mounts that find the path their own
   * way (the NestJS controller) call this.
   */
  async respond(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const query = q < 0 ? null : url.slice(q + 1);
    // The page's links are relative: the mount point itself needs its
    // trailing slash, or 'api/session' would resolve beside it.
    const full = ((req as { originalUrl?: string }).originalUrl ?? url).split('?')[0];
    if ((path === '' || path === '/') && !full.endsWith('/')) {
      const last = full.slice(full.lastIndexOf('/') + 1);
      res.statusCode = 308;
      res.setHeader('Location', `./${last}/${query !== null ? '?' + query : ''}`);
      res.setHeader('Content-Length', '0');
      res.end();
      return;
    }
    const method = (req.method ?? 'GET').toUpperCase();
    let body: Buffer | null = null;
    let tooBig = false;
    if (method !== 'GET' && method !== 'HEAD') {
      const got = await readBody(req, bodyMax());
      body = got.body;
      tooBig = got.tooBig;
    }
    const csrfRaw = req.headers[CSRF_HEADER];
    const csrf = Array.isArray(csrfRaw) ? csrfRaw[0] : csrfRaw;
    let r: DashboardResponse;
    try {
      r = await this.handleRequest({ method, path: path || '/', query, body, csrf: csrf ?? null });
    } catch (e) {
      if (e instanceof ClosedError || (e instanceof RunlaneError && this.queue.isClosed)) {
        return sendError(res, 503, 'unavailable', 'the queue is closed');
      }
      throw e;
    }
    res.statusCode = r.status;
    for (const [k, v] of Object.entries(r.headers)) res.setHeader(k, v);
    res.setHeader('Content-Length', String(r.body.length));
    // The rest of an oversized body is not read: the connection goes.
    if (tooBig) res.setHeader('Connection', 'close');
    if (method === 'HEAD') res.end();
    else res.end(r.body);
  }
}

/**
 * The body of a request, at most `max + 1` bytes (the core answers 413 past
 * `max`). A body a parser already read (express.json(), express.raw(),
 * NestJS) is taken from `req.rawBody` or `req.body`.
 */
async function readBody(req: IncomingMessage, max: number): Promise<{ body: Buffer | null; tooBig: boolean }> {
  const r = req as IncomingMessage & { rawBody?: unknown; body?: unknown; _body?: boolean };
  if (Buffer.isBuffer(r.rawBody)) return cut(r.rawBody, max);
  if (r._body || r.readableEnded || (r.body !== undefined && r.body !== null)) {
    if (Buffer.isBuffer(r.body)) return cut(r.body, max);
    if (typeof r.body === 'string') return cut(Buffer.from(r.body, 'utf8'), max);
    // Parsed JSON: the same document again (its key order kept).
    if (r.body !== undefined && r.body !== null) return cut(Buffer.from(JSON.stringify(r.body), 'utf8'), max);
    return { body: null, tooBig: false };
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    // Refused unread: the core sees a body one byte over its cap.
    return { body: Buffer.alloc(max + 1), tooBig: true };
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (tooBig: boolean): void => {
      if (done) return;
      done = true;
      req.removeListener('data', onData);
      req.removeListener('end', onEnd);
      req.removeListener('error', onError);
      if (tooBig) req.pause();
      const all = Buffer.concat(chunks);
      resolve({ body: all.length ? all.subarray(0, max + 1) : null, tooBig });
    };
    const onData = (c: Buffer | string): void => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      chunks.push(b);
      size += b.length;
      if (size > max) finish(true);
    };
    const onEnd = (): void => finish(false);
    const onError = (e: Error): void => {
      if (done) return;
      done = true;
      reject(e);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

function cut(b: Buffer, max: number): { body: Buffer | null; tooBig: boolean } {
  if (!b.length) return { body: null, tooBig: false };
  return b.length > max ? { body: b.subarray(0, max + 1), tooBig: false } : { body: b, tooBig: false };
}

// Only for what the core cannot answer (no handler: the queue is closed),
// in the core's error shape.
function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = Buffer.from(JSON.stringify({ error: { status, code, message } }));
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', String(body.length));
  res.end(body);
}

/**
 * The dashboard of `queue` as an Express/Connect/`http` request handler:
 * `app.use('/ops/lanes', auth, runlaneDashboard(queue))`. Put it behind the
 * app's own authentication: the dashboard shows conversation contents and
 * can retry, purge and release.
 */
export function runlaneDashboard(queue: AssistantMessageQueue, options: RunlaneDashboardOptions = {}): DashboardMiddleware {
  return new RunlaneDashboard(queue, options).middleware();
}
