'use strict';

// One measurement in a process of its own: the parent (bench/run.js) forks this file per case,
// adapter and round, sends the job over IPC and gets the figures back, so RSS and CPU time belong
// to one adapter only and a run cannot warm or pollute the next one.

const path = require('node:path');
const { Reservoir, cpuSnapshot, cpuDelta } = require('./stats');
const { entry } = require('./values');

const KEY_PREFIX = 'bench:';
let productDir = null;

/**
 * The adapter a job measures. `job.options`: connection options given to both adapters (ours takes
 * ioredis's options itself; the reference hands them to `new Redis(...)`). `job.cluster`: the
 * cluster's startup nodes; ours gets `{ nodes, options }`, the reference, as the original package
 * is used with a cluster, an ioredis `Cluster` as its `client`.
 */
function makeAdapter(kind, job) {
  const redis = job.redis;
  const extra = job.options || {};
  if (job.cluster) {
    const { nodes } = job.cluster;
    const clusterOptions = job.cluster.options || {};
    if (kind === 'ours') {
      const RedisStorageAdapter = require(productDir || path.join(__dirname, '..'));
      return new RedisStorageAdapter({ nodes, options: clusterOptions, keyPrefix: KEY_PREFIX });
    }
    const Redis = require('ioredis');
    const ReferenceAdapter = require('./reference');
    return new ReferenceAdapter({ client: new Redis.Cluster(nodes, clusterOptions), keyPrefix: KEY_PREFIX });
  }
  const options = { host: redis.host, port: redis.port, keyPrefix: KEY_PREFIX, ...extra };
  if (kind === 'ours') {
    // The parent's snapshot of the built package (bench/run.js), or the repository itself.
    const RedisStorageAdapter = require(productDir || path.join(__dirname, '..'));
    return new RedisStorageAdapter(options);
  }
  const ReferenceAdapter = require('./reference');
  return new ReferenceAdapter(options);
}

async function closeAdapter(adapter) {
  try {
    await adapter.close();
  } catch {
    // the process ends right after
  }
}

const now = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `inflight` loops that each await `op(n, loopIndex)` one after the other (`n` counts
 * operations over all loops) until `ms` milliseconds have passed or `maxOps` operations have started.
 * With a reservoir, each operation's latency goes into it.
 */
async function runLoops({ inflight, ms, maxOps = Infinity, op, reservoir, counter }) {
  const deadline = Number.isFinite(ms) ? now() + BigInt(Math.round(ms * 1e6)) : null;
  const state = { ops: 0, errors: 0, firstError: null };
  async function loop(_, loopIndex) {
    while (counter.n < maxOps && (deadline === null || now() < deadline)) {
      const n = counter.n;
      counter.n += 1;
      const t0 = now();
      try {
        await op(n, loopIndex);
        if (reservoir) reservoir.add(Number(now() - t0));
        state.ops += 1;
      } catch (err) {
        state.errors += 1;
        if (!state.firstError) state.firstError = String((err && err.message) || err);
      }
    }
  }
  await Promise.all(Array.from({ length: inflight }, loop));
  return state;
}

/**
 * redis-server's CPU time in µs (INFO cpu: getrusage of the whole server, µs resolution, where
 * /proc counts 10 ms ticks), summed over `servers` (every node of a cluster, replicas included:
 * they do the replication's share of the work). One INFO per server and reading; its own cost is a
 * few µs.
 */
async function redisCpuUs(servers) {
  const { rawCommands } = require('../__test__/servers');
  const texts = await Promise.all(
    (Array.isArray(servers) ? servers : [servers]).map(async (s) => (await rawCommands(s, [['INFO', 'cpu']]))[0]),
  );
  let total = 0;
  for (const text of texts) {
    const field = (name) => Number((String(text).match(new RegExp(`^${name}:([0-9.]+)`, 'm')) || [])[1]);
    total += (field('used_cpu_sys') + field('used_cpu_user')) * 1e6;
  }
  return total;
}

/** The redis-server processes a job's adapter talks to: the cluster's nodes, or the one server. */
const serversOf = (job) => job.servers || [job.redis];

/** Measures `op` after a warm-up: throughput, latency, CPU per operation and RSS. */
async function measure(job, op, { maxOps = Infinity, rssBefore } = {}) {
  const counter = { n: 0 };
  if (job.warmupMs > 0) {
    await runLoops({ inflight: job.inflight, ms: job.warmupMs, maxOps, op, counter });
  }
  const reservoir = new Reservoir();
  const servers = serversOf(job);
  const pids = servers.map((s) => s.pid);
  const redis0 = await redisCpuUs(servers);
  const cpu0 = process.cpuUsage();
  const ru0 = process.resourceUsage();
  const snap0 = cpuSnapshot(pids);
  const t0 = now();
  const state = await runLoops({ inflight: job.inflight, ms: job.durationMs, maxOps, op, reservoir, counter });
  const seconds = Number(now() - t0) / 1e9;
  const snap1 = cpuSnapshot(pids);
  const cpu = process.cpuUsage(cpu0);
  const ru1 = process.resourceUsage();
  const rssAfter = process.memoryUsage().rss;
  const machine = cpuDelta(snap0, snap1);
  const redisUs = (await redisCpuUs(servers)) - redis0;
  const ops = state.ops;
  return {
    ops,
    seconds,
    opsPerSec: ops / seconds,
    ...latency(reservoir),
    cpuUsPerOp: ops ? (cpu.user + cpu.system) / ops : null,
    kernelCpuUsPerOp: ops ? cpu.system / ops : null,
    redisCpuUsPerOp: ops ? redisUs / ops : null,
    ctxSwitchesPerOp: ops ? ctxSwitches(ru0, ru1) / ops : null,
    selfCores: machine.selfCores,
    redisCores: machine.othersCores.reduce((sum, x) => sum + x, 0),
    restCores: machine.restCores,
    rssBefore,
    rssAfter,
    errors: state.errors,
    firstError: state.firstError,
    exhausted: Number.isFinite(maxOps) && counter.n >= maxOps,
  };
}

/** Context switches of every thread of this process (voluntary and not) between two readings. */
function ctxSwitches(a, b) {
  return (
    b.voluntaryContextSwitches - a.voluntaryContextSwitches +
    (b.involuntaryContextSwitches - a.involuntaryContextSwitches)
  );
}

function latency(reservoir) {
  const s = reservoir.summary();
  return { p50: s.p50, p99: s.p99, maxLatency: s.max, samples: s.samples };
}

/** Stores `count` entries under `prefix` + i through the adapter, 64 at a time. */
async function populate(adapter, prefix, count, value) {
  const counter = { n: 0 };
  await runLoops({
    inflight: Math.min(64, count),
    ms: 600000,
    maxOps: count,
    counter,
    op: (i) => adapter.set(prefix + i, value),
  });
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/** set / get / remove of alova entries. */
async function opJob(job) {
  const adapter = makeAdapter(job.adapter, job);
  try {
    await adapter.get('warm'); // connected
    const value = entry(job.size);
    const keys = job.keys;
    let op;
    let maxOps = Infinity;
    if (job.op === 'set') {
      op = (n) => adapter.set(`s:${n % keys}`, value);
    } else if (job.op === 'get') {
      await populate(adapter, 'g:', keys, value);
      op = async (n) => {
        const v = await adapter.get(`g:${n % keys}`);
        if (v === undefined) throw new Error('get missed a key that was stored');
      };
    } else if (job.op === 'remove') {
      // The parent filled `bench:rm:0 .. pool-1` (DEBUG POPULATE): every remove deletes a key.
      op = (n) => adapter.remove(`rm:${n}`);
      maxOps = job.pool;
    } else {
      throw new Error(`unknown op ${job.op}`);
    }
    return await measure(job, op, { maxOps, rssBefore: process.memoryUsage().rss });
  } finally {
    await closeAdapter(adapter);
  }
}

/** lock + unlock on a resource of each loop's own: no contention, the cost of one cycle. */
async function lockJob(job) {
  const adapter = makeAdapter(job.adapter, job);
  try {
    await adapter.get('warm');
    const locker = adapter.locker;
    const resources = Array.from({ length: job.inflight }, (_, i) => `bench:lk:${i}`);
    const op = async (n, loopIndex) => {
      await locker.lock(resources[loopIndex]);
      await locker.unlock(resources[loopIndex]);
    };
    return await measure(job, op, { rssBefore: process.memoryUsage().rss });
  } finally {
    await closeAdapter(adapter);
  }
}

/**
 * `callers` callers take turns on one resource for `windowMs`, through one adapter or one adapter
 * each, as alova's `atomize` would (on a rejection it tries again after 100 ms). Records
 * cycles/s, how long callers waited, the longest time the resource sat free between an unlock and
 * the next lock, and overlapping holders (a broken exclusion). The parent counts leaked lock keys.
 */
async function contendedJob(job) {
  const adapters = Array.from({ length: job.adapters }, () => makeAdapter(job.adapter, job));
  const resource = 'bench:contended';
  try {
    await Promise.all(adapters.map((a) => a.get('warm')));
    const lockers = adapters.map((a) => a.locker);
    // Warm-up: every adapter locks once (connection, scripts loaded), on a resource of its own.
    await Promise.all(
      lockers.map(async (l, i) => {
        await l.lock(`bench:warm:${i}`);
        await l.unlock(`bench:warm:${i}`);
      }),
    );

    const waits = new Reservoir();
    const perCaller = new Array(job.callers).fill(0);
    let cycles = 0;
    let failures = 0;
    let firstError = null;
    let holders = 0;
    let overlaps = 0;
    let lastUnlockAt = null;
    let lastLockAt = null;
    let maxGapNs = 0n;
    const rssBefore = process.memoryUsage().rss;
    const redis0 = await redisCpuUs(job.redis);
    const cpu0 = process.cpuUsage();
    const ru0 = process.resourceUsage();
    const snap0 = cpuSnapshot([job.redis.pid]);
    const t0 = now();
    const deadline = t0 + BigInt(job.windowMs) * 1000000n;
    // CPU and RSS are read when the window closes; callers still waiting then only drain.
    let atDeadline;
    const windowTimer = setTimeout(() => {
      atDeadline = {
        cpu: process.cpuUsage(cpu0),
        ru: process.resourceUsage(),
        snap: cpuSnapshot([job.redis.pid]),
        rss: process.memoryUsage().rss,
        redisUs: redisCpuUs(job.redis),
      };
    }, job.windowMs);

    async function caller(i) {
      const locker = lockers[i % lockers.length];
      while (now() < deadline) {
        const asked = now();
        try {
          await locker.lock(resource);
        } catch (err) {
          failures += 1;
          if (!firstError) firstError = String((err && err.message) || err);
          await sleep(100);
          continue;
        }
        const got = now();
        lastLockAt = got;
        waits.add(Number(got - asked));
        if (lastUnlockAt !== null && got > lastUnlockAt && got - lastUnlockAt > maxGapNs) {
          maxGapNs = got - lastUnlockAt;
        }
        holders += 1;
        if (holders > 1) overlaps += 1;
        if (job.holdMs > 0) await sleep(job.holdMs);
        holders -= 1;
        await locker.unlock(resource);
        lastUnlockAt = now();
        if (lastUnlockAt <= deadline) {
          cycles += 1;
          perCaller[i] += 1;
        }
      }
    }
    await Promise.all(Array.from({ length: job.callers }, (_, i) => caller(i)));
    const drainedAt = now();
    // Nobody got the lock after the last unlock of the window: the resource sat free (or, with a
    // leaked key, looked taken) until the window closed.
    if (lastUnlockAt !== null && lastUnlockAt < deadline && (lastLockAt === null || lastLockAt < lastUnlockAt)) {
      if (deadline - lastUnlockAt > maxGapNs) maxGapNs = deadline - lastUnlockAt;
    }
    clearTimeout(windowTimer);
    const end = atDeadline || {
      cpu: process.cpuUsage(cpu0),
      ru: process.resourceUsage(),
      snap: cpuSnapshot([job.redis.pid]),
      rss: process.memoryUsage().rss,
      redisUs: redisCpuUs(job.redis),
    };
    const machine = cpuDelta(snap0, end.snap);
    const redisUs = (await end.redisUs) - redis0;
    const s = waits.summary();
    const sorted = [...perCaller].sort((a, b) => b - a);
    return {
      ops: cycles,
      seconds: job.windowMs / 1000,
      opsPerSec: cycles / (job.windowMs / 1000),
      p50: s.p50,
      p99: s.p99,
      maxLatency: s.max,
      samples: s.samples,
      cpuUsPerOp: cycles ? (end.cpu.user + end.cpu.system) / cycles : null,
      redisCpuUsPerOp: cycles ? redisUs / cycles : null,
      ctxSwitchesPerOp: cycles ? ctxSwitches(ru0, end.ru) / cycles : null,
      selfCores: machine.selfCores,
      redisCores: machine.othersCores[0],
      restCores: machine.restCores,
      rssBefore,
      rssAfter: end.rss,
      errors: failures,
      firstError,
      maxGapMs: Number(maxGapNs) / 1e6,
      overlaps,
      busiestShare: cycles ? sorted[0] / cycles : null,
      idleCallers: perCaller.filter((c) => c === 0).length,
      drainMs: Number(drainedAt - deadline) / 1e6,
    };
  } finally {
    await Promise.all(adapters.map(closeAdapter));
  }
}

/** Cached GETs through alova in restore mode, with the adapter as l2Cache and l1 switched off. */
async function alovaJob(job) {
  const { createAlova } = require('alova');
  const adapterFetch = require('alova/fetch');
  const adapter = makeAdapter(job.adapter, job);
  // alova checks its l1Cache first and only goes to l2Cache on an l1 miss (sendRequest in
  // alova's dist): an l1 that never holds anything makes every request an l2 read.
  const noL1 = { set() {}, get() { return undefined; }, remove() {}, clear() {} };
  const alova = createAlova({
    id: 'bench',
    baseURL: job.baseURL,
    requestAdapter: adapterFetch(),
    responded: (response) => response.json(),
    l1Cache: noL1,
    l2Cache: adapter,
    cacheFor: { GET: { mode: 'restore', expire: 60000 } },
    cacheLogger: false,
  });
  try {
    await adapter.get('warm');
    for (let i = 0; i < job.paths; i += 1) await alova.Get(`/item/${i}`).send();
    const op = async (n) => {
      const data = await alova.Get(`/item/${n % job.paths}`).send();
      if (!data || data.path !== `/item/${n % job.paths}`) throw new Error('wrong response');
    };
    return await measure(job, op, { rssBefore: process.memoryUsage().rss });
  } finally {
    alova.destroy();
    await closeAdapter(adapter);
  }
}

/**
 * The raw client a batch job measures: this package's `RedisClient`, or an ioredis `Redis` with
 * its defaults (the client the reference adapter holds), both on `job.redis`.
 */
function makeClient(kind, job) {
  const options = { host: job.redis.host, port: job.redis.port, ...(job.options || {}) };
  if (kind === 'ours') {
    const { RedisClient } = require(productDir || path.join(__dirname, '..'));
    return new RedisClient(options);
  }
  const Redis = require('ioredis');
  return new Redis(options);
}

/**
 * `client.pipeline()` / `client.multi()` of `job.commands` commands, `exec()` awaited: command i
 * of batch n is a `set` (i even) or a `get` (i odd) of key `(n * commands + i) % keys`, so the
 * keys of a batch are distinct, and those of the batches in flight too (keys >= inflight *
 * commands). Every key holds the value beforehand: each `get` must return it, each `set` 'OK'.
 */
async function batchJob(job) {
  const client = makeClient(job.adapter, job);
  try {
    const N = job.commands;
    const keys = job.keys;
    if (keys % N !== 0 || keys < job.inflight * N) throw new Error(`batch case: ${keys} keys do not fit batches of ${N}, ${job.inflight} in flight`);
    const value = 'v'.repeat(job.valueBytes);
    const names = Array.from({ length: keys }, (_, i) => `bench:b:${i}`);
    await client.ping(); // connected
    // Every key filled, in pipelines of 500 (not measured).
    for (let i = 0; i < keys; i += 500) {
      const p = client.pipeline();
      for (let j = i; j < Math.min(keys, i + 500); j += 1) p.set(names[j], value);
      const res = await p.exec();
      const bad = res.find(([err]) => err);
      if (bad) throw bad[0];
    }
    const transaction = job.mode === 'multi';
    const op = async (n) => {
      const base = (n * N) % keys;
      const batch = transaction ? client.multi() : client.pipeline();
      for (let i = 0; i < N; i += 1) {
        if (i & 1) batch.get(names[base + i]);
        else batch.set(names[base + i], value);
      }
      const res = await batch.exec();
      if (!Array.isArray(res) || res.length !== N) throw new Error(`exec() resolved ${Array.isArray(res) ? `${res.length} results` : String(res)}, not ${N}`);
      for (let i = 0; i < N; i += 1) {
        const [err, reply] = res[i];
        if (err) throw err;
        if (i & 1 ? reply !== value : reply !== 'OK') throw new Error(`command ${i} of the batch answered ${String(reply).slice(0, 40)}`);
      }
    };
    const result = await measure(job, op, { rssBefore: process.memoryUsage().rss });
    return { ...result, commandsPerSec: result.opsPerSec * N };
  } finally {
    try {
      await client.quit();
    } catch {
      // the process ends right after
    }
  }
}

/** RSS over `ops` set/get operations (half each) of 250 B entries, sampled ten times. */
async function rssJob(job) {
  const adapter = makeAdapter(job.adapter, job);
  try {
    await adapter.get('warm');
    const value = entry('250B');
    const keys = 10000;
    await populate(adapter, 'r:', keys, value);
    const op = async (n) => {
      if (n & 1) await adapter.get(`r:${(n >> 1) % keys}`);
      else await adapter.set(`r:${(n >> 1) % keys}`, value);
    };
    // Warm-up (JIT, buffers), then a settled baseline.
    await runLoops({ inflight: job.inflight, ms: Infinity, maxOps: Math.min(50000, job.ops / 10), op, counter: { n: 0 } });
    global.gc?.();
    const rssStart = process.memoryUsage().rss;
    const samples = [rssStart];
    const counter = { n: 0 };
    const t0 = now();
    const cpu0 = process.cpuUsage();
    const step = Math.ceil(job.ops / 10);
    let errors = 0;
    for (let done = 0; done < job.ops; done += step) {
      const s = await runLoops({ inflight: job.inflight, ms: Infinity, maxOps: Math.min(job.ops, done + step), op, counter });
      errors += s.errors;
      samples.push(process.memoryUsage().rss);
    }
    const seconds = Number(now() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    global.gc?.();
    const rssEnd = process.memoryUsage().rss;
    return {
      ops: counter.n,
      seconds,
      opsPerSec: counter.n / seconds,
      cpuUsPerOp: (cpu.user + cpu.system) / counter.n,
      rssStart,
      rssEnd,
      rssPeak: Math.max(...samples, rssEnd),
      rssSamples: samples,
      growth: rssEnd - rssStart,
      errors,
    };
  } finally {
    await closeAdapter(adapter);
  }
}

// ---------------------------------------------------------------------------------------------
// Jobs over several processes (bench/procs.js runs them): the parent forks one worker per process,
// sends each its job, and then talks to them with messages that carry a `type` (no `kind`).
// ---------------------------------------------------------------------------------------------

/**
 * A clock shared by the processes of one machine, in milliseconds: `process.hrtime` counts from
 * an arbitrary point of each process, `performance.timeOrigin` is the wall clock when the process
 * started (µs resolution) and `performance.now()` the monotonic time since then.
 */
const wall = () => performance.timeOrigin + performance.now();

const inbox = [];
const inboxWaiters = [];

function deliver(msg) {
  const waiter = inboxWaiters.shift();
  if (waiter) waiter(msg);
  else inbox.push(msg);
}

/** The parent's next message. */
function nextMessage() {
  if (inbox.length) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => inboxWaiters.push(resolve));
}

/**
 * Answers the parent's clock readings (`{ type: 'clock' }`, answered with this process's shared
 * clock) until a message of `type` arrives, and resolves with it.
 */
async function serveUntil(type) {
  for (;;) {
    const msg = await nextMessage();
    if (msg.type === 'clock') {
      process.send({ type: 'clock', at: wall() });
      continue;
    }
    if (msg.type === type) return msg;
    throw new Error(`expected a '${type}' message, got '${msg.type}'`);
  }
}

/** Sleeps until the shared clock reads `at` (a timer to the last millisecond, then a short spin). */
async function sleepUntil(at) {
  const ms = at - wall() - 1;
  if (ms > 0) await sleep(ms);
  while (wall() < at) {
    // under a millisecond
  }
}

/** At most this many lock intervals per process go back to the parent (3 numbers each). */
const MAX_INTERVALS = 400000;

/**
 * One of `job.processes` processes contending for one resource (bench/procs.js starts them
 * together): `job.callers` callers, through one adapter (`job.adaptersPerProcess` 1) or one
 * adapter each, loop lock -> section (empty, or `holdMs` of sleep) -> unlock from the shared
 * start time for `windowMs`; a rejected `lock()` tries again after 100 ms, as `atomize` would.
 * Returns the process's cycles (per caller), wait sample, failures and every cycle's interval
 * (lock resolved, unlock called, unlock resolved; shared clock, ms after the start) for the parent
 * to check exclusion and gaps across processes.
 */
async function contendedProcsJob(job) {
  const adapters = Array.from({ length: job.adaptersPerProcess }, () => makeAdapter(job.adapter, job));
  const resource = job.resource;
  try {
    await Promise.all(adapters.map((a) => a.get('warm')));
    const lockers = adapters.map((a) => a.locker);
    // Warm-up: every adapter locks once (connection, scripts loaded), on a resource of its own.
    await Promise.all(
      lockers.map(async (l, i) => {
        await l.lock(`bench:warm:${job.processIndex}:${i}`);
        await l.unlock(`bench:warm:${job.processIndex}:${i}`);
      }),
    );
    process.send({ type: 'ready' });
    const { startAt } = await serveUntil('go');
    const endAt = startAt + job.windowMs;

    const waits = new Reservoir();
    const perCaller = new Array(job.callers).fill(0);
    const intervals = new Float64Array(MAX_INTERVALS * 3);
    let recorded = 0;
    let cycles = 0;
    let failures = 0;
    let firstError = null;
    let holders = 0;
    let overlaps = 0;
    const rssBefore = process.memoryUsage().rss;

    await sleepUntil(startAt);
    const cpu0 = process.cpuUsage();
    const ru0 = process.resourceUsage();
    let atDeadline;
    const windowTimer = setTimeout(() => {
      atDeadline = { cpu: process.cpuUsage(cpu0), ru: process.resourceUsage(), rss: process.memoryUsage().rss };
    }, Math.max(0, endAt - wall()));

    async function caller(i) {
      const locker = lockers[i % lockers.length];
      while (wall() < endAt) {
        const asked = wall();
        try {
          await locker.lock(resource);
        } catch (err) {
          failures += 1;
          if (!firstError) firstError = String((err && err.message) || err);
          await sleep(100);
          continue;
        }
        const got = wall();
        waits.add((got - asked) * 1e6);
        holders += 1;
        if (holders > 1) overlaps += 1;
        if (job.holdMs > 0) await sleep(job.holdMs);
        holders -= 1;
        const release = wall();
        await locker.unlock(resource);
        const released = wall();
        if (recorded < MAX_INTERVALS) {
          intervals[recorded * 3] = got - startAt;
          intervals[recorded * 3 + 1] = release - startAt;
          intervals[recorded * 3 + 2] = released - startAt;
          recorded += 1;
        }
        if (released <= endAt) {
          cycles += 1;
          perCaller[i] += 1;
        }
      }
    }
    await Promise.all(Array.from({ length: job.callers }, (_, i) => caller(i)));
    const drainMs = wall() - endAt;
    clearTimeout(windowTimer);
    const end = atDeadline || { cpu: process.cpuUsage(cpu0), ru: process.resourceUsage(), rss: process.memoryUsage().rss };
    const n = Math.min(waits.count, waits.buf.length);
    return {
      processIndex: job.processIndex,
      pid: process.pid,
      cycles,
      perCaller,
      failures,
      firstError,
      overlaps,
      waitCount: waits.count,
      waitSample: waits.buf.slice(0, n), // ns
      intervals: intervals.slice(0, recorded * 3),
      intervalsTruncated: recorded >= MAX_INTERVALS,
      cpuUs: end.cpu.user + end.cpu.system,
      ctxSwitches: ctxSwitches(ru0, end.ru),
      rssBefore,
      rssAfter: end.rss,
      drainMs,
    };
  } finally {
    await Promise.all(adapters.map(closeAdapter));
  }
}

/**
 * One of the two processes of the cross-process hand-off measurement (bench/procs.js drives
 * them): on `{ type: 'lock' }` it calls `lock()`, says so at once (`asked`) and reports the shared
 * clock when the lock resolves (`locked`); on `{ type: 'unlock' }` it reads the shared clock right
 * before calling `unlock()` and reports it (`unlocked`); `{ type: 'end' }` ends the job.
 */
async function handoffJob(job) {
  const adapter = makeAdapter(job.adapter, job);
  const resource = job.resource;
  try {
    await adapter.get('warm');
    const locker = adapter.locker;
    await locker.lock(`bench:warm:${job.processIndex}`);
    await locker.unlock(`bench:warm:${job.processIndex}`);
    process.send({ type: 'ready' });
    const cpu0 = process.cpuUsage();
    for (;;) {
      const msg = await nextMessage();
      if (msg.type === 'clock') {
        process.send({ type: 'clock', at: wall() });
      } else if (msg.type === 'lock') {
        const asked = wall();
        locker.lock(resource).then(
          () => {
            const at = wall();
            process.send({ type: 'locked', at, waitedMs: at - asked });
          },
          (err) => process.send({ type: 'locked', failed: true, at: wall(), error: String((err && err.message) || err) }),
        );
        process.send({ type: 'asked', at: asked });
      } else if (msg.type === 'unlock') {
        const at = wall();
        await locker.unlock(resource);
        process.send({ type: 'unlocked', at, doneAt: wall() });
      } else if (msg.type === 'end') {
        const cpu = process.cpuUsage(cpu0);
        return { processIndex: job.processIndex, pid: process.pid, cpuUs: cpu.user + cpu.system };
      } else {
        throw new Error(`unknown message ${msg.type}`);
      }
    }
  } finally {
    await closeAdapter(adapter);
  }
}

const JOBS = {
  op: opJob,
  lock: lockJob,
  contended: contendedJob,
  'contended-procs': contendedProcsJob,
  handoff: handoffJob,
  alova: alovaJob,
  batch: batchJob,
  rss: rssJob,
};

process.on('message', async (job) => {
  if (job && job.kind === undefined) {
    deliver(job); // a message to a running job
    return;
  }
  let reply;
  productDir = job.product || null;
  try {
    const run = JOBS[job.kind];
    if (!run) throw new Error(`unknown job kind ${job.kind}`);
    reply = { type: 'reply', ok: true, result: await run(job) };
  } catch (err) {
    reply = { type: 'reply', ok: false, error: String((err && err.stack) || err) };
  }
  process.send(reply, () => process.exit(0));
});
