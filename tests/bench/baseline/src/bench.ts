/*
 * The baseline's side of tests/bench/compare.py: one process that is both the
 * producer (addMessageToThread) and the worker, as the original library ran.
 *
 *   node dist/bench.js --redis URL --prefix P --base-url URL --window-ms W
 *                      [--concurrency 5] [--lock-ttl 300] [--api-key K]
 *                      [--no-worker]
 *
 * stdin, one JSON command a line:
 *   {"op":"burst","thread":T,"messages":[...],"gaps":[ms before each message]}
 *   {"op":"stop"}
 * stdout, one JSON event a line ({"ev":...,"at":epoch ms,...}): ready, added,
 * job, posted, run-created, poll, run-finished, http-error, stopped.
 */
import * as readline from 'node:readline';
import { AssistantMessageQueue } from './AssistantMessageQueue';

function arg(name: string, def?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (def === undefined) throw new Error(`--${name} is required`);
  return def;
}

function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main(): Promise<void> {
  const q = new AssistantMessageQueue({
    redisUrl: arg('redis'),
    prefix: arg('prefix', 'amq'),
    baseUrl: arg('base-url'),
    apiKey: arg('api-key', 'sk-bench'),
    assistantId: arg('assistant-id', 'asst_bench'),
    batchWindowMs: Number(arg('window-ms', '10000')),
    concurrency: Number(arg('concurrency', '5')),
    lockTtlSeconds: Number(arg('lock-ttl', '300')),
  });
  for (const ev of ['added', 'job', 'posted', 'run-created', 'poll', 'run-finished', 'http-error']) {
    q.on(ev, (data: Record<string, unknown>) => out({ ev, ...data }));
  }
  if (!process.argv.includes('--no-worker')) q.startWorker();
  await q.queue.waitUntilReady();
  out({ ev: 'ready', at: Date.now(), pid: process.pid });

  const bursts: Promise<void>[] = [];
  const rl = readline.createInterface({ input: process.stdin });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await Promise.allSettled(bursts);
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    out({ ev: 'stopped', at: Date.now(), rss: mem.rss, cpu_user_us: cpu.user, cpu_system_us: cpu.system });
    // Jobs still polling a run would keep close() waiting: the bench is over.
    await Promise.race([q.close(), sleep(2000)]);
    process.exit(0);
  };
  rl.on('line', (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (cmd.op === 'burst') {
      bursts.push((async () => {
        const gaps: number[] = cmd.gaps ?? [];
        for (let i = 0; i < cmd.messages.length; i++) {
          if (gaps[i] > 0) await sleep(gaps[i]);
          try {
            await q.addMessageToThread(cmd.thread, cmd.messages[i]);
          } catch (e) {
            out({ ev: 'add-error', at: Date.now(), thread: cmd.thread, error: String(e) });
          }
        }
      })());
    } else if (cmd.op === 'stop') {
      void stop();
    }
  });
  rl.on('close', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((e) => {
  process.stderr.write(`baseline: ${e?.stack ?? e}\n`);
  process.exit(1);
});
