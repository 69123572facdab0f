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

module.exports = { forkFixture, killChildren, startOverlapServer, runCounters, runAtomize };
