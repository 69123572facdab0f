'use strict';

// Child processes for the lock suites: forked fixtures that report by IPC messages, killed
// (SIGKILL) when the test process exits.

const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { fork } = require('node:child_process');
const { within } = require('./helpers');

const FIXTURES = path.join(__dirname, 'fixtures');

const children = new Set();

/** Forks a fixture with its config; collects its messages; `next(type)` waits for one. */
function forkFixture(name, config) {
  const child = fork(path.join(FIXTURES, name), [JSON.stringify(config)], {
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  const messages = [];
  const waiters = [];
  let exited = null;
  child.on('message', (msg) => {
    messages.push(msg);
    for (const w of waiters.splice(0)) w();
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    children.delete(child);
    for (const w of waiters.splice(0)) w();
  });
  child.on('error', () => {});
  return {
    child,
    messages,
    /** Resolves with the first message of `type` (an 'error' message or an exit rejects). */
    async next(type, ms = 30000) {
      return within(
        ms,
        (async () => {
          for (;;) {
            const found = messages.find((m) => m.type === type);
            if (found) return found;
            const error = messages.find((m) => m.type === 'error');
            if (error) throw new Error(`${name} failed: ${error.message}`);
            if (exited) throw new Error(`${name} exited (${JSON.stringify(exited)}) before '${type}'`);
            await new Promise((resolve) => waiters.push(resolve));
          }
        })(),
        `${name} '${type}'`,
      );
    },
    /** SIGKILL, resolved once the process is gone. */
    async kill() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await gone;
    },
  };
}

function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on('exit', killChildren);

/**
 * A local HTTP server for atomize tests that records how requests overlap: `?id=&ch=a,b&ms=`
 * answers after `ms`; `seen` counts the requests, the most at once, overlaps of requests
 * sharing a channel (`conflicts`) and overlaps of disjoint ones. `reset()` clears `seen` in place.
 */
async function startOverlapServer() {
  const seen = {};
  const active = new Map(); // request id -> its channels
  const reset = () => Object.assign(seen, { total: 0, maxOverlap: 0, conflicts: [], disjointOverlaps: 0 });
  reset();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const id = url.searchParams.get('id');
    const channels = (url.searchParams.get('ch') || 'default').split(',');
    const ms = Number(url.searchParams.get('ms') || 0);
    seen.total += 1;
    for (const [otherId, otherChannels] of active) {
      if (channels.some((c) => otherChannels.includes(c))) seen.conflicts.push(`${id} (${channels}) during ${otherId} (${otherChannels})`);
      else seen.disjointOverlaps += 1;
    }
    active.set(id, channels);
    seen.maxOverlap = Math.max(seen.maxOverlap, active.size);
    setTimeout(() => {
      active.delete(id);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ id }));
    }, ms);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    baseURL: `http://127.0.0.1:${server.address().port}`,
    seen,
    reset,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Starts forked lock-counter.js fixtures together and waits for them; checks that each ran its
 * `sections` critical sections alone and never lost its lock. Resolves with their results.
 */
async function runCounters(procs, sections, timeout) {
  await Promise.all(procs.map((p) => p.next('ready')));
  for (const p of procs) p.child.send('go');
  const results = await Promise.all(procs.map((p) => p.next('done', timeout)));
  for (const r of results) {
    assert.equal(r.sections, sections, JSON.stringify(r));
    assert.equal(r.overlaps, 0, `a section found another one inside: ${JSON.stringify(r)}`);
    assert.deepEqual(r.warnings.filter((w) => w.code === 'ERR_LOCK_LOST'), []);
  }
  return results;
}

/**
 * Starts one forked lock-atomize.js fixture per entry of `perProcess` (its requests) against the
 * overlap server, with the connection settings `where` (`{ port }` or `{ nodes }`), lets them go
 * together and waits; checks that no request failed and no lock was lost. Resolves with their
 * results.
 */
async function runAtomize(overlap, where, perProcess, extra, ms) {
  overlap.reset();
  const procs = perProcess.map((requests) =>
    forkFixture('lock-atomize.js', { ...where, baseURL: overlap.baseURL, timeout: 60000, requests, ...extra }),
  );
  await Promise.all(procs.map((p) => p.next('ready')));
  for (const p of procs) p.child.send('go');
  const results = await Promise.all(procs.map((p) => p.next('done', ms)));
  for (const r of results) {
    assert.deepEqual(r.failures, [], 'some atomized requests failed');
    assert.deepEqual(r.warnings.filter((w) => w.code === 'ERR_LOCK_LOST'), [], 'a lock was lost while held');
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Fairness: processes looping lock -> work -> unlock (fixtures/lock-loop.js) or atomized requests
// (fixtures/lock-atomize-loop.js) for a fixed time, started together.
// ---------------------------------------------------------------------------------------------

/** Forks one `fixture` per config and resolves with their handles once every one is ready. */
async function forkReady(fixture, configs, ms = 30000) {
  const procs = configs.map((config) => forkFixture(fixture, config));
  await Promise.all(procs.map((p) => p.next('ready', ms)));
  return procs;
}

/**
 * Tells ready loop fixtures to start at one wall-clock instant, `lead` ms from now (they share
 * the machine's clock); returns that instant.
 */
function goTogether(procs, lead = 300) {
  const at = Date.now() + lead;
  for (const p of procs) p.child.send({ cmd: 'go', at });
  return at;
}

/**
 * Resolves with `{ index, message }` for the first of `procs` to send a message of `type`
 * (rejects after `ms`, or when one of them reports an error or exits first).
 */
function firstMessage(procs, type, ms = 30000) {
  return new Promise((resolve, reject) => {
    const listeners = [];
    const finish = (fn, value) => {
      clearTimeout(timer);
      for (const [child, event, listener] of listeners) child.off(event, listener);
      fn(value);
    };
    const timer = setTimeout(() => finish(reject, new Error(`no '${type}' from any of ${procs.length} processes within ${ms} ms`)), ms);
    procs.forEach((p, index) => {
      const already = p.messages.find((m) => m.type === type);
      if (already) {
        finish(resolve, { index, message: already });
        return;
      }
      const onMessage = (msg) => {
        if (msg && msg.type === type) finish(resolve, { index, message: msg });
        else if (msg && msg.type === 'error') finish(reject, new Error(`process ${index} failed: ${msg.message}`));
      };
      const onExit = (code, signal) => finish(reject, new Error(`process ${index} exited (${code}, ${signal}) before '${type}'`));
      p.child.on('message', onMessage);
      p.child.on('exit', onExit);
      listeners.push([p.child, 'message', onMessage], [p.child, 'exit', onExit]);
    });
  });
}

/**
 * Makes one of the running lock-loop fixtures `procs` hold the lock: every one is asked to
 * hold it at its next section, the first that does keeps it and the others are told not to.
 * Resolves with `{ index, message }` of the holder (message: { value, at, lockPttl }); end the
 * hold with `procs[index].child.send({ cmd: 'release' })` (or kill it).
 */
async function holdByOne(procs, { matchLockTtl = false, ms = 20000 } = {}) {
  for (const p of procs) p.child.send({ cmd: 'hold', matchLockTtl });
  const holder = await firstMessage(procs, 'holding', ms);
  const others = procs.filter((_, i) => i !== holder.index);
  for (const p of others) p.child.send({ cmd: 'unhold' });
  const answers = await Promise.all(others.map((p) => p.next('unheld', 10000)));
  assert.ok(answers.every((a) => !a.holding), 'two processes held the lock at once (a hold answered by two)');
  return holder;
}

/** Every exclusion violation any of `procs` reported, killed ones included (they report at once). */
function violationsOf(procs) {
  const out = [];
  for (const p of procs) for (const m of p.messages) if (m.type === 'violation') out.push(m);
  return out;
}

/** How many sections `result` (a lock-loop 'done') entered within [from, to). */
function cyclesBetween(result, from, to = Infinity) {
  let n = 0;
  for (const caller of result.entries) for (const t of caller) if (t >= from && t < to) n += 1;
  return n;
}

/**
 * The longest time one caller of `result` went without entering its section within [from, to]
 * (from `from` to its first entry, between entries, from its last entry to `to`).
 */
function longestGap(result, from, to) {
  let longest = 0;
  for (const caller of result.entries) {
    let last = from;
    for (const t of caller) {
      if (t < from) continue;
      if (t > to) break;
      longest = Math.max(longest, t - last);
      last = t;
    }
    longest = Math.max(longest, to - last);
  }
  return longest;
}

/**
 * Each result's share of `total` (of `count(result)`), as rows and as one line for a test's
 * diagnostics: "A 1112 (40.9%), B 8 (0.3%), ...".
 */
function shares(results, count = (r) => r.cycles) {
  const counts = results.map(count);
  const total = counts.reduce((a, b) => a + b, 0);
  const rows = results.map((r, i) => ({ label: r.label, count: counts[i], share: total ? counts[i] / total : 0 }));
  const line = rows.map((row) => `${row.label} ${row.count} (${(row.share * 100).toFixed(1)}%)`).join(', ');
  return { total, rows, line };
}

module.exports = {
  forkFixture,
  killChildren,
  startOverlapServer,
  runCounters,
  runAtomize,
  forkReady,
  goTogether,
  firstMessage,
  holdByOne,
  violationsOf,
  cyclesBetween,
  longestGap,
  shares,
};
