'use strict';

// alova's `atomize` (alova/server) end to end: child processes (fixtures/lock-atomize.js), each
// with its own alova instance whose l2Cache is an adapter on one real redis-server or on a Redis
// Cluster (3 masters + 3 replicas, shared by the file), send requests through atomize to a local
// HTTP server that records which requests overlap.
//
// atomize (alova 3.5, @alova/server): `atomize(method, { channel = 'default', timeout = 5000,
// interval = 100 })` returns a hooked method whose `send()` loops `await l2Cache.locker.lock(channel)`
// until success or `timeout`, sends the request, then `await locker.unlock(channel)` in finally.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { killChildren, startOverlapServer, runAtomize } = require('./children');
const { closeAll, topologies, existsCount } = require('./helpers');

for (const topo of topologies()) describe(`atomize with the locker (${topo.name})`, () => {
  let target;
  let observer;
  let overlap;
  const open = [];

  /** What the HTTP server saw: overlaps overall and between requests sharing a channel. */
  let seen;

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
    overlap = await startOverlapServer();
    ({ seen } = overlap);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await overlap?.close();
    await target?.stop();
  });

  /** Runs one fixture per entry of `perProcess` (its requests) at once; resolves with their results. */
  const runProcesses = (perProcess, extra = {}, ms = topo.cluster ? 100000 : 90000) =>
    runAtomize(overlap, topo.fixtureOptions(target), perProcess, extra, ms);

  // Fewer requests on the cluster, whose lock round trips take longer.
  const perChannel = topo.cluster ? 15 : 20;
  it(`serialises 3 processes x ${perChannel} concurrent atomized requests on the default channel`, { timeout: 120000 }, async () => {
    const perProcess = [0, 1, 2].map((p) =>
      Array.from({ length: perChannel }, (_, i) => ({ id: `p${p}-${i}`, ms: 20 })),
    );
    const results = await runProcesses(perProcess);
    assert.deepEqual(results.map((r) => r.ok), [perChannel, perChannel, perChannel]);
    assert.equal(seen.total, 3 * perChannel);
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

  const perGroup = topo.cluster ? 3 : 4;
  it(`excludes requests that share any channel of a multi-channel atomize${topo.cluster ? ' (channels in different slots)' : ''}`, { timeout: 120000 }, async () => {
    if (topo.cluster) {
      const slots = await Promise.all(['a', 'b', 'c', 'd'].map((k) => observer.cluster('KEYSLOT', k)));
      assert.equal(new Set(slots).size, 4, `the channels should hash to 4 slots: ${slots}`);
    }
    const perProcess = [0, 1, 2].map((p) => [
      ...Array.from({ length: perGroup }, (_, i) => ({ id: `ab-p${p}-${i}`, channel: ['a', 'b'], ms: 50 })),
      ...Array.from({ length: perGroup }, (_, i) => ({ id: `bc-p${p}-${i}`, channel: ['b', 'c'], ms: 50 })),
      ...Array.from({ length: perGroup }, (_, i) => ({ id: `d-p${p}-${i}`, channel: ['d'], ms: 50 })),
    ]);
    const results = await runProcesses(perProcess);
    assert.deepEqual(results.map((r) => r.ok), [3 * perGroup, 3 * perGroup, 3 * perGroup]);
    assert.equal(seen.total, 9 * perGroup);
    assert.deepEqual(seen.conflicts, [], 'requests sharing a channel overlapped');
    // 'd' shares nothing with ['a','b'] / ['b','c']: the lock is per resource, not global.
    assert.ok(seen.disjointOverlaps > 0, 'a channel-d request never ran alongside an a/b/c request');
    // (One EXISTS per key: a multi-key EXISTS is CROSSSLOT on a cluster.)
    assert.equal(await existsCount(observer, 'a', 'b', 'c', 'd'), 0, 'a lock key was left behind');
  });
});
