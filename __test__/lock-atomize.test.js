'use strict';

// alova's `atomize` (alova/server) end to end: child processes (fixtures/lock-atomize.js), each
// with its own alova instance whose l2Cache is an adapter on one real redis-server, send requests
// through atomize to a local HTTP server that records which requests overlap.
//
// atomize (alova 3.5, @alova/server): `atomize(method, { channel = 'default', timeout = 5000,
// interval = 100 })` returns a hooked method whose `send()` loops `await l2Cache.locker.lock(channel)`
// until success or `timeout`, sends the request, then `await locker.unlock(channel)` in finally.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { killChildren, startOverlapServer, runAtomize } = require('./children');
const { startRedis } = require('./servers');
const { ioredisFor, closeAll } = require('./helpers');


// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------



// ---------------------------------------------------------------------------------------------

describe('atomize with the locker', () => {
  let redis;
  let observer;
  let overlap;
  const open = [];

  /** What the HTTP server saw: overlaps overall and between requests sharing a channel. */
  let seen;

  before(async () => {
    redis = await startRedis();
    observer = ioredisFor(redis, {}, open);
    overlap = await startOverlapServer();
    ({ seen } = overlap);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await overlap?.close();
    await redis?.stop();
  });

  /** Runs one fixture per entry of `perProcess` (its requests) at once; resolves with their results. */
  const runProcesses = (perProcess, extra = {}, ms = 90000) =>
    runAtomize(overlap, { port: redis.port }, perProcess, extra, ms);

  it('serialises 3 processes x 20 concurrent atomized requests on the default channel', { timeout: 120000 }, async () => {
    const perProcess = [0, 1, 2].map((p) =>
      Array.from({ length: 20 }, (_, i) => ({ id: `p${p}-${i}`, ms: 20 })),
    );
    const results = await runProcesses(perProcess);
    assert.deepEqual(results.map((r) => r.ok), [20, 20, 20]);
    assert.equal(seen.total, 60);
    assert.deepEqual(seen.conflicts, []);
    assert.equal(seen.maxOverlap, 1);
    assert.equal(await observer.exists('default'), 0, 'the lock key was left behind');
  });

  it('keeps requests 3x longer than redlockTTL exclusive (the lock is extended)', { timeout: 120000 }, async () => {
    const perProcess = [0, 1, 2].map((p) =>
      Array.from({ length: 3 }, (_, i) => ({ id: `long-p${p}-${i}`, channel: 'long', ms: 900 })),
    );
    const results = await runProcesses(perProcess, { redlockTTL: 300 });
    assert.deepEqual(results.map((r) => r.ok), [3, 3, 3]);
    assert.equal(seen.total, 9);
    assert.deepEqual(seen.conflicts, [], 'two requests of one channel overlapped: a lock expired under a long request');
    assert.equal(seen.maxOverlap, 1);
    assert.equal(await observer.exists('long'), 0, 'the lock key was left behind');
  });

  it('excludes requests that share any channel of a multi-channel atomize', { timeout: 120000 }, async () => {
    const perProcess = [0, 1, 2].map((p) => [
      ...Array.from({ length: 4 }, (_, i) => ({ id: `ab-p${p}-${i}`, channel: ['a', 'b'], ms: 50 })),
      ...Array.from({ length: 4 }, (_, i) => ({ id: `bc-p${p}-${i}`, channel: ['b', 'c'], ms: 50 })),
      ...Array.from({ length: 4 }, (_, i) => ({ id: `d-p${p}-${i}`, channel: ['d'], ms: 50 })),
    ]);
    const results = await runProcesses(perProcess);
    assert.deepEqual(results.map((r) => r.ok), [12, 12, 12]);
    assert.equal(seen.total, 36);
    assert.deepEqual(seen.conflicts, [], 'requests sharing a channel overlapped');
    // 'd' shares nothing with ['a','b'] / ['b','c']: the lock is per resource, not global.
    assert.ok(seen.disjointOverlaps > 0, 'a channel-d request never ran alongside an a/b/c request');
    assert.equal(await observer.exists('a', 'b', 'c', 'd'), 0, 'a lock key was left behind');
  });
});
