'use strict';

// The measurements that need several processes at once (issue 10, deliverable 6), driven from the
// parent (bench/run.js); each process is a bench/worker.js of its own, with one adapter kind.
//
// - `contended-procs`: `processes` workers, each with `callers` callers looping
//   lock -> section -> unlock on one resource, started together on a clock the processes share,
//   for `windowMs`. Cycles/s over all of them, each process's share, waits, failures; exclusion
//   and gaps checked across processes from every cycle's timestamps.
// - `handoff`: two workers take turns on one resource: A holds, B calls lock() (and waits), A
//   unlocks after a random delay; the hand-off is the time from A's unlock() call to B's lock()
//   resolving, both read on the shared clock. Then the roles swap.

const { fork } = require('node:child_process');
const path = require('node:path');
const { rawCommands } = require('../__test__/servers');
const { cpuSnapshot, cpuDelta } = require('./stats');

const ROOT = path.join(__dirname, '..');
const WORKER = path.join(__dirname, 'worker.js');

/** The shared clock of bench/worker.js, in ms. */
const wall = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Forks a worker with structured-clone IPC (typed arrays cross as they are). `next(type)`
 * resolves with its next message of that type; every pending and later `next` rejects once the
 * worker fails (an error reply) or exits. `result()` resolves with the job's reply.
 */
function spawnWorker(children) {
  const child = fork(WORKER, [], {
    cwd: ROOT,
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env },
    serialization: 'advanced',
  });
  children.add(child);
  const queues = new Map(); // type -> messages not taken yet
  const waiting = new Map(); // type -> [{ resolve, reject }]
  let failure = null;
  let reply = null;
  const fail = (err) => {
    if (failure) return;
    failure = err;
    for (const list of waiting.values()) for (const w of list) w.reject(err);
    waiting.clear();
  };
  child.on('message', (msg) => {
    if (msg.type === 'reply') {
      reply = msg;
      if (!msg.ok) fail(new Error(msg.error));
    }
    const list = waiting.get(msg.type);
    if (list && list.length) list.shift().resolve(msg);
    else {
      if (!queues.has(msg.type)) queues.set(msg.type, []);
      queues.get(msg.type).push(msg);
    }
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      fail(new Error(reply && !reply.ok ? reply.error : `worker.js exited (${signal || code})${reply ? '' : ' without a result'}`));
      resolve();
    });
  });
  child.on('error', fail);
  function next(type) {
    const q = queues.get(type);
    if (q && q.length) return Promise.resolve(q.shift());
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      if (!waiting.has(type)) waiting.set(type, []);
      waiting.get(type).push({ resolve, reject });
    });
  }
  return {
    child,
    pid: child.pid,
    send: (msg) => child.send(msg),
    next,
    result: async () => {
      const r = await next('reply');
      await exited;
      return r.result;
    },
    kill: () => {
      try {
        child.kill('SIGKILL');
      } catch {
        // gone
      }
    },
  };
}

/** Kills the workers after `ms` (a measurement that hangs); `timedOut` says it happened. */
function killAfter(workers, ms) {
  const timer = { timedOut: false };
  timer.handle = setTimeout(() => {
    timer.timedOut = true;
    workers.forEach((w) => w.kill());
  }, ms);
  return timer;
}

/**
 * How far a worker's shared clock reads from the parent's, in µs: of `n` readings (a message there
 * and back), the one with the shortest round trip, its offset measured from the round trip's
 * middle; `uncertaintyUs` is half that round trip.
 */
async function clockOffset(worker, n = 15) {
  let best = null;
  for (let i = 0; i < n; i += 1) {
    const t0 = wall();
    worker.send({ type: 'clock' });
    const { at } = await worker.next('clock');
    const t1 = wall();
    if (!best || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: at - (t0 + t1) / 2 };
  }
  return { offsetUs: best.offset * 1000, uncertaintyUs: (best.rtt / 2) * 1000 };
}

/** The spread of the workers' clocks (largest minus smallest offset) and its uncertainty, µs. */
function clockSkew(offsets) {
  const values = offsets.map((o) => o.offsetUs);
  return {
    skewUs: Math.max(...values) - Math.min(...values),
    uncertaintyUs: offsets.reduce((s, o) => s + o.uncertaintyUs, 0),
    offsetsUs: values,
  };
}

/** redis-server's CPU time in µs (INFO cpu). */
async function redisCpuUs(redis) {
  const [text] = await rawCommands(redis, [['INFO', 'cpu']]);
  const field = (name) => Number((String(text).match(new RegExp(`^${name}:([0-9.]+)`, 'm')) || [])[1]);
  return (field('used_cpu_sys') + field('used_cpu_user')) * 1e6;
}

/**
 * Percentiles of samples drawn from several processes, in µs. Each process sent a uniform sample
 * (`sample`, ns) of its `count` waits; a sample value stands for `count / sample.length` waits.
 */
function pooledPercentiles(parts) {
  const items = [];
  for (const { sample, count } of parts) {
    if (!sample.length) continue;
    const weight = count / sample.length;
    for (const v of sample) items.push([v, weight]);
  }
  if (!items.length) return { p50: null, p99: null, max: null };
  items.sort((a, b) => a[0] - b[0]);
  const total = items.reduce((s, x) => s + x[1], 0);
  const at = (q) => {
    let acc = 0;
    for (const [v, w] of items) {
      acc += w;
      if (acc >= q * total) return v / 1000;
    }
    return items[items.length - 1][0] / 1000;
  };
  return { p50: at(0.5), p99: at(0.99), max: items[items.length - 1][0] / 1000 };
}

/** Percentiles of one process's sample (ns), in µs. */
function percentiles(sample) {
  if (!sample.length) return { p50: null, p99: null };
  const sorted = Float64Array.from(sample).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] / 1000;
  return { p50: at(0.5), p99: at(0.99) };
}

/**
 * Exclusion and gaps over every process's cycles. Intervals are [lock resolved, unlock called,
 * unlock resolved] in ms after the start. Two holders overlap when a `lock()` resolved before the
 * previous holder (of any process) had called `unlock()`; both readings lie inside the true holding
 * time in Redis, so an overlap seen here is one there, give or take the clocks' skew (measured).
 * A gap: from an unlock resolving to the next lock resolving, in any process.
 */
function crossProcess(results, windowMs) {
  const all = [];
  for (const r of results) {
    for (let i = 0; i < r.intervals.length; i += 3) all.push([r.intervals[i], r.intervals[i + 1], r.intervals[i + 2], r.processIndex]);
  }
  all.sort((a, b) => a[0] - b[0]);
  let overlaps = 0;
  let crossOverlaps = 0;
  let worstOverlapMs = 0;
  let maxGapMs = 0;
  let heldUntil = -Infinity; // latest unlock call so far
  let heldBy = null;
  let freeSince = -Infinity; // latest unlock resolved so far
  let switches = 0;
  let lastProcess = null;
  for (const [got, release, released, p] of all) {
    if (got < heldUntil) {
      overlaps += 1;
      if (heldBy !== p) crossOverlaps += 1;
      worstOverlapMs = Math.max(worstOverlapMs, heldUntil - got);
    } else if (got > freeSince && Number.isFinite(freeSince) && got <= windowMs) {
      maxGapMs = Math.max(maxGapMs, got - freeSince);
    }
    if (lastProcess !== null && p !== lastProcess) switches += 1;
    lastProcess = p;
    if (release > heldUntil) {
      heldUntil = release;
      heldBy = p;
    }
    freeSince = Math.max(freeSince, released);
  }
  // Nobody locked after the last unlock of the window: the resource sat free until the end.
  if (all.length && freeSince < windowMs && all[all.length - 1][0] < freeSince) maxGapMs = Math.max(maxGapMs, windowMs - freeSince);
  return { overlaps, crossOverlaps, worstOverlapMs, maxGapMs, cycles: all.length, switches };
}

/**
 * Runs a `contended-procs` job: `job.processes` workers, started together on the shared clock.
 * @returns the figures bench/report.js reads for contended cases (cycles/s as `opsPerSec`, waits
 *   as p50/p99), plus each process's cycles, share and waits.
 */
async function runContendedProcs(job, { redis, children, timeoutMs }) {
  const workers = Array.from({ length: job.processes }, () => spawnWorker(children));
  const timer = killAfter(workers, timeoutMs);
  try {
    workers.forEach((w, p) => w.send({ ...job, processIndex: p }));
    await Promise.all(workers.map((w) => w.next('ready')));
    const offsets = [];
    for (const w of workers) offsets.push(await clockOffset(w));
    const startAt = wall() + 250; // every worker has the message long before
    const endAt = startAt + job.windowMs;
    workers.forEach((w) => w.send({ type: 'go', startAt }));
    const pids = [redis.pid, ...workers.map((w) => w.pid)];
    await sleep(Math.max(0, startAt - wall()));
    const snap0 = cpuSnapshot(pids);
    const redis0 = await redisCpuUs(redis);
    await sleep(Math.max(0, endAt - wall()));
    const snap1 = cpuSnapshot(pids);
    const redisUs = (await redisCpuUs(redis)) - redis0;
    const results = await Promise.all(workers.map((w) => w.result()));
    results.sort((a, b) => a.processIndex - b.processIndex);

    const seconds = job.windowMs / 1000;
    const cycles = results.reduce((s, r) => s + r.cycles, 0);
    const shares = results.map((r) => (cycles ? r.cycles / cycles : null));
    const pooled = pooledPercentiles(results.map((r) => ({ sample: r.waitSample, count: r.waitCount })));
    const perProcess = results.map((r) => percentiles(r.waitSample));
    const callers = results.flatMap((r) => r.perCaller);
    const cross = crossProcess(results, job.windowMs);
    const machine = cpuDelta(snap0, snap1);
    const cpuUs = results.reduce((s, r) => s + r.cpuUs, 0);
    const failures = results.reduce((s, r) => s + r.failures, 0);
    const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
    return {
      ops: cycles,
      seconds,
      opsPerSec: cycles / seconds,
      p50: pooled.p50,
      p99: pooled.p99,
      maxLatency: pooled.max,
      samples: results.reduce((s, r) => s + r.waitCount, 0),
      cpuUsPerOp: cycles ? cpuUs / cycles : null,
      redisCpuUsPerOp: cycles ? redisUs / cycles : null,
      ctxSwitchesPerOp: cycles ? results.reduce((s, r) => s + r.ctxSwitches, 0) / cycles : null,
      // The workers' CPU, in cores; the parent (idle, waiting) counts as the rest of the machine.
      selfCores: machine.othersCores.slice(1).reduce((s, x) => s + x, 0),
      redisCores: machine.othersCores[0],
      restCores: machine.restCores + machine.selfCores,
      rssBefore: mean(results.map((r) => r.rssBefore)),
      rssAfter: mean(results.map((r) => r.rssAfter)),
      errors: failures,
      firstError: results.map((r) => r.firstError).find(Boolean) || null,
      maxGapMs: cross.maxGapMs,
      overlaps: cross.overlaps + results.reduce((s, r) => s + r.overlaps, 0),
      crossOverlaps: cross.crossOverlaps,
      worstOverlapUs: cross.worstOverlapMs * 1000,
      busiestShare: cycles ? Math.max(...callers) / cycles : null,
      idleCallers: callers.filter((c) => c === 0).length,
      drainMs: Math.max(...results.map((r) => r.drainMs)),
      processCycles: results.map((r) => r.cycles),
      processShares: shares,
      minProcessShare: cycles ? Math.min(...shares) : 0,
      processFailures: results.map((r) => r.failures),
      processP50: perProcess.map((x) => x.p50),
      processP99: perProcess.map((x) => x.p99),
      // How often the lock moved to another process, per cycle (0: one process kept it).
      switchesPerCycle: cross.cycles ? cross.switches / cross.cycles : null,
      intervalsTruncated: results.some((r) => r.intervalsTruncated),
      clock: clockSkew(offsets),
    };
  } catch (err) {
    throw timer.timedOut ? new Error(`${job.id} (${job.adapter}) did not finish within ${timeoutMs} ms`) : err;
  } finally {
    clearTimeout(timer.handle);
    workers.forEach((w) => w.kill());
  }
}

/**
 * Runs a `handoff` job: `job.handoffs` measured hand-offs (after `job.handoffWarmup` unmeasured
 * ones) between two workers, the roles alternating. Before each release the waiter has called
 * `lock()` and the holder waits `settleMinMs + U(0, settleSpanMs)` ms, so that releases fall at a
 * random point of a polling waiter's `retryDelay` (the reference's) and a woken waiter (ours) is
 * in line and subscribed.
 */
async function runHandoff(job, { children, timeoutMs }) {
  const workers = [spawnWorker(children), spawnWorker(children)];
  const timer = killAfter(workers, timeoutMs);
  try {
    workers.forEach((w, p) => w.send({ ...job, processIndex: p }));
    await Promise.all(workers.map((w) => w.next('ready')));
    const offsets = [];
    for (const w of workers) offsets.push(await clockOffset(w));

    const samples = []; // ms
    const unlockMs = [];
    let failures = 0;
    let firstError = null;
    let early = 0;
    let holder = 0;
    workers[0].send({ type: 'lock' });
    await workers[0].next('asked');
    await workers[0].next('locked');
    for (let i = 0; i < job.handoffWarmup + job.handoffs; i += 1) {
      const waiter = 1 - holder;
      workers[waiter].send({ type: 'lock' });
      await workers[waiter].next('asked');
      await sleep(job.settleMinMs + Math.random() * job.settleSpanMs);
      workers[holder].send({ type: 'unlock' });
      const [u, l] = await Promise.all([workers[holder].next('unlocked'), workers[waiter].next('locked')]);
      if (l.failed) {
        failures += 1;
        if (!firstError) firstError = l.error;
        // Nobody holds now: the waiter takes it (uncontended) and the turns go on.
        workers[waiter].send({ type: 'lock' });
        await workers[waiter].next('asked');
        const again = await workers[waiter].next('locked');
        if (again.failed) throw new Error(`lock() failed without contention: ${again.error}`);
      } else if (i >= job.handoffWarmup) {
        const ms = l.at - u.at;
        if (ms < 0) early += 1; // the waiter had it before the holder let go
        samples.push(ms);
        unlockMs.push(u.doneAt - u.at);
      }
      holder = waiter;
    }
    workers[holder].send({ type: 'unlock' });
    await workers[holder].next('unlocked');
    workers.forEach((w) => w.send({ type: 'end' }));
    const results = await Promise.all(workers.map((w) => w.result()));
    const sorted = [...samples].sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 1000 : null);
    return {
      handoffs: samples.length,
      samplesMs: samples,
      unlockMs,
      // µs, as every latency of the report
      p50: at(0.5),
      p99: at(0.99),
      maxLatency: sorted.length ? sorted[sorted.length - 1] * 1000 : null,
      errors: failures,
      firstError,
      early,
      cpuUsPerOp: samples.length ? results.reduce((s, r) => s + r.cpuUs, 0) / (job.handoffWarmup + job.handoffs) : null,
      clock: clockSkew(offsets),
    };
  } catch (err) {
    throw timer.timedOut ? new Error(`${job.id} (${job.adapter}) did not finish within ${timeoutMs} ms`) : err;
  } finally {
    clearTimeout(timer.handle);
    workers.forEach((w) => w.kill());
  }
}

module.exports = { runContendedProcs, runHandoff, crossProcess, pooledPercentiles };
