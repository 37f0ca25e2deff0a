/**
 * Serves the dashboard of a queue through a Node mount, for the browser
 * scenario (tests/browser) and for looking at it by hand:
 *
 *   node dist/dashboard_server.js --store redis://127.0.0.1:6379/0 [--set key.prefix=P]...
 *        [--mount express|http|nest] [--path /ops/lanes] [--port 0] [--host 127.0.0.1]
 *        [--history-interval-ms N]
 *
 * Run from the Node test app (tests/node/run.sh builds it into dist/; with
 * RUNLANE_NODE_KEEP_APP the app stays, e.g. build/node-app). Prints the
 * dashboard's URL (ending with '/') as the first line of stdout once it
 * listens; serves until SIGTERM/SIGINT or its stdin pipe closes, then closes the
 * queue. No worker runs here: the traffic and the worker are the caller's.
 */
import 'reflect-metadata';
import { fstatSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { AssistantMessageQueue, runlaneDashboard } from 'runlane';

function parseArgs(argv: string[]): {
  store: string;
  config: Record<string, string>;
  mount: string;
  path: string;
  port: number;
  host: string;
  historyIntervalMs?: number;
} {
  const out = {
    store: '',
    config: {} as Record<string, string>,
    mount: 'express',
    path: '/ops/lanes',
    port: 0,
    host: '127.0.0.1',
    historyIntervalMs: undefined as number | undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = (): string => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--store') out.store = v();
    else if (a === '--set') {
      const kv = v();
      const at = kv.indexOf('=');
      if (at <= 0) throw new Error(`--set wants key=value, got ${kv}`);
      out.config[kv.slice(0, at)] = kv.slice(at + 1);
    } else if (a === '--mount') out.mount = v();
    else if (a === '--path') out.path = '/' + v().replace(/^\/+|\/+$/g, '');
    else if (a === '--port') out.port = Number(v());
    else if (a === '--host') out.host = v();
    else if (a === '--history-interval-ms') out.historyIntervalMs = Number(v());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.store) throw new Error('--store URL is required');
  if (!['express', 'http', 'nest'].includes(out.mount)) throw new Error(`--mount: express, http or nest, got ${out.mount}`);
  if (out.path === '/') throw new Error('--path must not be the root (the mounts are tested under a path)');
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  let close: () => Promise<void>;
  let port: number;
  if (args.mount === 'nest') {
    const { Module } = await import('@nestjs/common');
    const { NestFactory } = await import('@nestjs/core');
    const { RunlaneDashboardModule, RunlaneModule } = await import('runlane/nestjs');
    @Module({
      imports: [
        RunlaneModule.forRoot({ store: args.store, config: args.config, worker: false }),
        RunlaneDashboardModule.register({ path: args.path, historyIntervalMs: args.historyIntervalMs }),
      ],
    })
    class DashboardApp {}
    const app = await NestFactory.create(DashboardApp, { logger: ['error', 'warn'] });
    await app.listen(args.port, args.host);
    port = (app.getHttpServer().address() as AddressInfo).port;
    close = () => app.close();
  } else {
    const queue = new AssistantMessageQueue({ store: args.store, config: args.config });
    let server: http.Server;
    if (args.mount === 'express') {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const express = require('express') as () => any;
      const app = express();
      app.use(args.path, runlaneDashboard(queue, { historyIntervalMs: args.historyIntervalMs }));
      server = http.createServer(app);
    } else {
      const mw = runlaneDashboard(queue, { prefix: args.path, historyIntervalMs: args.historyIntervalMs });
      server = http.createServer((req, res) =>
        mw(req, res, () => {
          res.statusCode = 404;
          res.end('not the dashboard');
        }),
      );
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(args.port, args.host, () => resolve());
    });
    port = (server.address() as AddressInfo).port;
    close = async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await queue.close();
    };
  }
  process.stdout.write(`http://${args.host}:${port}${args.path}/\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    close().then(
      () => process.exit(0),
      (e) => {
        console.error(e);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Only a pipe's end means "stop" (a parent that went away); /dev/null or
  // a terminal does not.
  let fifo = false;
  try {
    fifo = fstatSync(0).isFIFO();
  } catch {
    fifo = false;
  }
  if (fifo) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}

main().catch((e) => {
  console.error(`dashboard_server: ${(e as Error).message ?? e}`);
  process.exit(2);
});
