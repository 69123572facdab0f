'use strict';

// The locker on a Redis Cluster (3 masters + 3 replicas, one cluster for the whole file), what
// only a cluster has: lock keys on their slot's master, locks over several slots (taken in slot
// order, extended on every slot, excluding Redlock on each), redlockFilter per startup node, the
// locker read before the topology is known. What a cluster shares with one server (exclusion
// across processes, the hand-off, extension, lost locks, close(), atomize, Redlock interop) runs
// over both in lock.test.js, lock-atomize.test.js and lock-interop.test.js.
//
// What the product promises there: the whole cluster is ONE voter (quorum 1 of 1), as
// @sesamecare-oss/redlock documents for cluster use: a lock key lives on the master of its slot.
// A multi-resource lock whose keys hash to different slots is taken all-or-nothing one slot at a
// time, in slot order (a slot found taken: the slots already taken are given back and the vote
// is "no"). `redlockFilter` sees one node per STARTUP node; keeping none throws ERR_NO_LOCK_NODE.
// The locker can be read before the cluster is connected.
//
// Child processes: fixtures/lock-counter.js (critical sections on a shared counter, `nodes` for
// the cluster).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Redlock } = require('@sesamecare-oss/redlock');
const { forkFixture, killChildren, runCounters } = require('./children');
const RedisStorageAdapter = require('..');
const { startCluster } = require('./servers');
const {
  rejectsWithCode,
  throwsWithCode,
  within,
  closeAll,
  keySlot,
  slotOwners,
  existsCount,
  ioredisClusterFor,
  collectWarnings,
} = require('./helpers');

const HEX32 = /^[0-9a-f]{32}$/;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


describe('locker on a Redis Cluster', () => {
  let cluster;
  let observer; // an ioredis Cluster
  let owners; // slot -> "host:port" of its master
  const open = [];

  function adapterWith(opts = {}) {
    const adapter = new RedisStorageAdapter({ nodes: cluster.nodes, ...opts });
    open.push(adapter);
    return adapter;
  }
  /** An adapter whose lock() tries once. */
  function oneShot(opts = {}) {
    return adapterWith({ ...opts, redlockOptions: { retryCount: 0, ...opts.redlockOptions } });
  }
  /** The startCluster server handle of the master that serves `key`'s slot. */
  function masterOf(key) {
    const owner = owners[keySlot(key)];
    const server = cluster.servers.find((s) => `${s.host}:${s.port}` === owner);
    assert.ok(server, `no server for master ${owner}`);
    return server;
  }
  /** `CLUSTER KEYSLOT` of each key, as the server computes it. */
  const slotsOf = (keys) => Promise.all(keys.map((k) => observer.cluster('KEYSLOT', k)));
  /**
   * `n` resource names `${base}<i>` whose slots differ and, as far as 3 masters allow, whose
   * masters differ; sorted by slot unless `order` is given.
   */
  function resourcesInSlots(base, n) {
    const picked = [];
    const usedSlots = new Set();
    const usedMasters = new Set();
    for (let i = 0; picked.length < n && i < 10000; i += 1) {
      const name = `${base}${i}`;
      const slot = keySlot(name);
      const master = owners[slot];
      if (usedSlots.has(slot)) continue;
      if (usedMasters.has(master) && usedMasters.size < 3) continue;
      usedSlots.add(slot);
      usedMasters.add(master);
      picked.push(name);
    }
    return picked.sort((a, b) => keySlot(a) - keySlot(b));
  }

  before(async () => {
    cluster = await startCluster();
    observer = ioredisClusterFor(cluster, {}, open);
    owners = await slotOwners(observer);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await cluster?.stop();
  });

  it('puts the lock key on the master of its slot, one voter for the whole cluster', async () => {
    const adapter = adapterWith({ keyPrefix: 'pfx:', redlockTTL: 4000 });
    const resource = 'clock:one';
    await adapter.locker.lock(resource);
    const server = masterOf(resource);
    const value = await server.command('GET', resource);
    assert.match(value, HEX32);
    const pttl = await server.command('PTTL', resource);
    assert.ok(pttl > 0 && pttl <= 4000, `PTTL ${pttl} for redlockTTL 4000`);
    assert.equal(await observer.exists('pfx:clock:one'), 0, 'keyPrefix was applied to a lock key');
    // The other masters do not serve that slot (one key, one voter).
    const masters = await cluster.masters();
    assert.equal(masters.length, 3);
    for (const m of masters) {
      const s = cluster.servers.find((x) => x.port === m.port);
      if (s === server) continue;
      const reply = await s.command('GET', resource);
      assert.ok(reply instanceof Error && /^MOVED /.test(reply.message), `master ${m.port} answered ${reply}`);
    }
    await adapter.locker.unlock(resource);
    assert.equal(await observer.exists(resource), 0);
  });

  it('excludes 3 processes on one lock over 3 slots of 3 masters: 150 sections count to 150', { timeout: 120000 }, async () => {
    const resources = resourcesInSlots('clock:multi:', 3);
    const slots = await slotsOf(resources);
    assert.equal(new Set(slots).size, 3, `slots ${slots}`);
    assert.equal(new Set(resources.map((r) => owners[keySlot(r)])).size, 3, 'the resources are not on 3 masters');
    const counterKey = 'ccounter:multi';
    const insideKey = 'ccounter:multi:inside';
    for (const k of [...resources, counterKey, insideKey]) await observer.del(k);
    // Each process names the resources in another order: the lock takes them in slot order anyway.
    const orders = [resources, [...resources].reverse(), [resources[1], resources[2], resources[0]]];
    const procs = orders.map((resource) =>
      forkFixture('lock-counter.js', {
        nodes: cluster.nodes,
        mode: 'ours',
        resource,
        counterKey,
        insideKey,
        sections: 50,
        concurrency: 4,
        deadlineMs: 100000,
      }),
    );
    const results = await runCounters(procs, 50, 110000);
    assert.equal(await observer.get(counterKey), '150');
    assert.equal(await existsCount(observer, resources), 0, 'a lock key was left behind');
    console.log(`# cluster 3-slot counter: lock attempts that ran out and were retried: ${results.map((r) => r.lockFailures).join(', ')}`);
  });

  it('locks resources of different slots all or nothing; an overlapping lock is refused and leaves no key', { timeout: 30000 }, async () => {
    // r0 < r1 < r2 < r3 in slot order, on different masters where possible.
    const [r0, r1, r2, r3] = resourcesInSlots('clock:set:', 4);
    const slots = await slotsOf([r0, r1, r2, r3]);
    assert.equal(new Set(slots).size, 4, `CLUSTER KEYSLOT: ${slots}`);
    assert.deepEqual(slots, [...slots].sort((a, b) => a - b));
    assert.deepEqual(slots, [r0, r1, r2, r3].map(keySlot), 'the test computes slots as Redis does');
    const a = adapterWith().locker;
    const b = oneShot().locker;

    await a.lock([r1, r2]);
    const value = await masterOf(r1).command('GET', r1);
    assert.match(value, HEX32);
    assert.equal(await masterOf(r2).command('GET', r2), value, 'one lock: one value on every slot');

    // [r3, r2, r0] is taken in slot order r0, r2, r3: r0 is taken, r2 is found taken, so r0 is
    // given back and r3 never tried.
    await rejectsWithCode(b.lock([r3, r2, r0]), 'ERR_LOCK_NOT_ACQUIRED', { mentions: [r2] });
    assert.equal(await observer.exists(r0), 0, `a refused lock left ${r0} (taken before the taken slot) behind`);
    assert.equal(await observer.exists(r3), 0, `a refused lock set ${r3}`);
    // The refused attempt touched nothing of the holder's.
    assert.equal(await observer.get(r1), value);
    assert.equal(await observer.get(r2), value);
    // And the other way round: the taken slot is the first one.
    await rejectsWithCode(b.lock([r1, r3]), 'ERR_LOCK_NOT_ACQUIRED', { mentions: [r1, r3] });
    assert.equal(await observer.exists(r3), 0);
    await b.lock([r0, r3]); // disjoint: free
    assert.equal(await observer.get(r0), await observer.get(r3));
    await b.unlock(r3);
    assert.equal(await existsCount(observer, r0, r3), 0, `unlock('${r3}') frees the whole [r0, r3] lock`);

    // One unlock releases every slot's key.
    await a.unlock([r1, r2]);
    assert.equal(await existsCount(observer, r1, r2), 0, 'one unlock releases the keys of both slots');
    await a.unlock([r1, r2]); // not held any more: no effect, no error

    await a.lock([r0, r1, r2, r3]);
    const all = await Promise.all([r0, r1, r2, r3].map((r) => masterOf(r).command('GET', r)));
    assert.match(all[0], HEX32);
    assert.deepEqual(all, [all[0], all[0], all[0], all[0]]);
    await a.unlock(r2);
    assert.equal(await existsCount(observer, r0, r1, r2, r3), 0, 'unlock of one resource frees all 4 slots');

    // A stale unlock by the former holder never deletes another holder's keys.
    await b.lock([r2, r3]);
    const bValue = await observer.get(r2);
    await a.unlock([r0, r1, r2, r3]);
    assert.equal(await observer.get(r2), bValue);
    assert.equal(await observer.get(r3), bValue);
    await b.unlock([r2, r3]);
    assert.equal(await existsCount(observer, r0, r1, r2, r3), 0);
  });

  it('keeps a multi-slot lock past redlockTTL (extends every slot) until unlock', { timeout: 30000 }, async () => {
    const resources = resourcesInSlots('clock:ext:', 3);
    const holder = adapterWith({ redlockTTL: 500 }).locker;
    const other = oneShot({ redlockTTL: 500 }).locker;
    const warnings = await collectWarnings(async () => {
      await holder.lock(resources);
      const until = Date.now() + 2000;
      let attempts = 0;
      while (Date.now() < until) {
        await sleep(200);
        if (Date.now() >= until) break;
        attempts += 1;
        // Each slot alone: every one of them is still held.
        await rejectsWithCode(other.lock(resources[attempts % 3]), 'ERR_LOCK_NOT_ACQUIRED');
      }
      assert.ok(attempts >= 5, `only ${attempts} attempts during the hold`);
      await holder.unlock(resources);
      await other.lock(resources);
      await other.unlock(resources);
    });
    const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
    assert.deepEqual(lost.map((w) => w.message), [], 'an extended lock was reported lost');
    assert.equal(await existsCount(observer, resources), 0);
  });

  it('redlockFilter sees one node per startup node; keeping one locks, keeping none throws ERR_NO_LOCK_NODE', { timeout: 30000 }, async () => {
    const seen = [];
    const kept = adapterWith({
      redlockFilter: (node) => {
        seen.push(node);
        return node.options.port === cluster.nodes[4].port; // a replica, as it happens: still one voter
      },
    });
    const locker = kept.locker;
    assert.deepEqual(
      seen.map((n) => ({ host: n.options.host, port: n.options.port, db: n.options.db })),
      cluster.nodes.map((n) => ({ host: n.host, port: n.port, db: 0 })),
      'redlockFilter is called once per startup node, with { options: { host, port, db } }',
    );
    assert.equal(kept.locker, locker);
    assert.equal(seen.length, cluster.nodes.length, 'the filter ran again on a second read');
    // The cluster votes as one: the key goes to its slot's master, whichever node was kept.
    const resources = resourcesInSlots('clock:filtered:', 2);
    await locker.lock(resources);
    for (const r of resources) assert.match(await masterOf(r).command('GET', r), HEX32);
    await rejectsWithCode(oneShot().locker.lock(resources[1]), 'ERR_LOCK_NOT_ACQUIRED');
    await locker.unlock(resources);
    assert.equal(await existsCount(observer, resources), 0);

    // Two startup nodes: two calls.
    const two = [];
    const fromTwo = adapterWith({ nodes: cluster.nodes.slice(0, 2), redlockFilter: (n) => two.push(n.options.port) && true });
    await fromTwo.locker.lock('clock:two');
    assert.deepEqual(two, cluster.nodes.slice(0, 2).map((n) => n.port));
    await fromTwo.locker.unlock('clock:two');

    const none = adapterWith({ redlockFilter: () => false });
    throwsWithCode(() => none.locker, 'ERR_NO_LOCK_NODE', { mentions: ['No redis client available'] });
    // The cache itself still works.
    await none.set('filtered-out', 1);
    assert.equal(await none.get('filtered-out'), 1);
  });

  it('reads the locker before the cluster is connected (lazyConnect), then locks', { timeout: 30000 }, async () => {
    const lazy = adapterWith({ options: { lazyConnect: true } });
    assert.equal(lazy.client.status, 'wait');
    assert.deepEqual(lazy.client.nodes(), [], 'no topology before the first connection');
    const locker = lazy.locker; // no topology needed
    assert.equal(typeof locker.lock, 'function');
    assert.equal(lazy.client.status, 'wait', 'reading the locker connected');
    await within(20000, locker.lock('clock:lazy'), 'the first lock of a lazy adapter');
    assert.equal(lazy.client.status, 'ready');
    assert.match(await observer.get('clock:lazy'), HEX32);
    await locker.unlock('clock:lazy');
    assert.equal(await observer.exists('clock:lazy'), 0);

    // Not lazy, read at once while it is still connecting.
    const eager = adapterWith();
    const early = eager.locker;
    await within(20000, early.lock(['clock:early', 'clock:lazy']), 'a lock right after construction');
    await early.unlock(['clock:early', 'clock:lazy']);
    assert.equal(await existsCount(observer, 'clock:early', 'clock:lazy'), 0);
  });

  describe('interop with @sesamecare-oss/redlock over an ioredis Cluster', () => {
    /** A Redlock over its own ioredis Cluster (closed in `after`). */
    function redlockWith(settings = {}) {
      const client = ioredisClusterFor(cluster, {}, open);
      const redlock = new Redlock([client], { retryCount: 0, ...settings });
      redlock.on('error', () => {});
      return redlock;
    }

    it('our cross-slot lock excludes Redlock on each of its resources', { timeout: 20000 }, async () => {
      const resources = resourcesInSlots('cinterop:x', 3);
      const redlock = redlockWith();
      const ours = adapterWith().locker;
      await ours.lock(resources);
      for (const r of resources) {
        await assert.rejects(redlock.acquire([r], 1000), `Redlock acquired ${r} of a lock we hold`);
      }
      await ours.unlock(resources);
      for (const r of resources) {
        const theirs = await redlock.acquire([r], 1000);
        await theirs.release();
      }
    });
  });
});
