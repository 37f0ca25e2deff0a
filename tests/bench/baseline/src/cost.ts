/*
 * BullMQ's side of tests/bench/redis_cost.py (the same protocol as
 * tests/bench/cost_driver.c, runlane's side):
 *
 *   node dist/cost.js produce PORT QUEUE RATE SECONDS NCONV INDEX NPRODUCERS PAD
 *       Queue.add of RATE jobs/s for SECONDS, one call per message (like a
 *       web handler); job data {c: conversation, content: "t<monotonic ns> "
 *       padded to PAD bytes}; removeOnComplete/removeOnFail so that finished
 *       jobs are deleted, as runlane deletes acked messages. Prints
 *       `R {"sent":N,"seconds":S}`.
 *   node dist/cost.js work PORT QUEUE LATFILE CONCURRENCY
 *       A Worker at CONCURRENCY with an instant processor. Every 100 ms
 *       prints `P <jobs> <jobs>`; on SIGTERM closes and prints `R {json}`.
 *       LATFILE ("-": none): enqueue -> processor start, µs, one per job.
 *
 * The timestamps are process.hrtime.bigint(): CLOCK_MONOTONIC, one clock for
 * every process of the machine (cost_driver.c uses the same clock).
 */
import * as fs from 'node:fs';
import { Queue, Worker } from 'bullmq';

function conn(port: number) {
  return { host: '127.0.0.1', port, maxRetriesPerRequest: null };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function produce(a: string[]): Promise<void> {
  const [port, name, rateS, secsS, nconvS, indexS, nprodS, padS] = a;
  const rate = Number(rateS), secs = Number(secsS), nconv = Number(nconvS);
  const index = Number(indexS), nprod = Number(nprodS), pad = Number(padS);
  const q = new Queue(name, { connection: conn(Number(port)) });
  await q.waitUntilReady();
  const total = Math.floor(rate * secs);
  let sent = 0, errors = 0;
  const t0 = process.hrtime.bigint();
  const opts = { removeOnComplete: true, removeOnFail: true };
  while (sent < total) {
    const el = Number(process.hrtime.bigint() - t0) / 1e9;
    const due = Math.min(total, Math.floor(el * rate) + 1);
    const adds: Promise<unknown>[] = [];
    while (sent < due) {
      const i = sent++;
      let content = `t${process.hrtime.bigint()} `;
      content += 'x'.repeat(Math.max(0, pad - content.length));
      adds.push(q.add('m', { c: `c${(i * nprod + index) % nconv}`, content }, opts).catch(() => { errors++; }));
    }
    await Promise.all(adds);
    const next = Number(t0) / 1e6 + (sent / rate) * 1e3;
    const wait = next - Number(process.hrtime.bigint()) / 1e6;
    if (wait > 0) await sleep(Math.min(wait, 2));
  }
  const took = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(`R ${JSON.stringify({ sent: sent - errors, errors, seconds: took })}\n`);
  await q.close();
}

async function work(a: string[]): Promise<void> {
  const [port, name, latPath, concS] = a;
  const lat: number[] = [];
  const keepLat = latPath !== '-';
  let jobs = 0;
  const w = new Worker(
    name,
    async (job) => {
      if (keepLat) {
        const t = BigInt(String(job.data.content).slice(1, String(job.data.content).indexOf(' ')));
        lat.push(Number((process.hrtime.bigint() - t) / 1000n));
      }
      jobs++;
    },
    { connection: conn(Number(port)), concurrency: Number(concS) },
  );
  await w.waitUntilReady();
  const timer = setInterval(() => process.stdout.write(`P ${jobs} ${jobs}\n`), 100);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    await w.close();
    if (keepLat) fs.writeFileSync(latPath, lat.join('\n') + (lat.length ? '\n' : ''));
    process.stdout.write(`R ${JSON.stringify({ messages: jobs, batches: jobs })}\n`);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const [mode, ...rest] = process.argv.slice(2);
(mode === 'produce' ? produce(rest) : mode === 'work' ? work(rest) : Promise.reject(new Error('usage: cost.js produce|work ...'))).catch(
  (e) => {
    process.stderr.write(`cost.js: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
