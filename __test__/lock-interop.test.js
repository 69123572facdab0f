'use strict';

// Interop with @sesamecare-oss/redlock (the library the original package used) over ioredis: the
// lock keys, values and scripts match, so a fleet mixing processes on the original and processes
// on this package still excludes each other, in any db.
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// shared by the file), where Redlock runs over an ioredis Cluster. Redlock's multi-resource lock
// is one script on several keys: on a cluster they must share a slot, hence the hash tag
// `{interop}`. Other dbs than 0 are a one-server matter (a cluster has db 0 only); a lock of ours
// over several slots against Redlock is in cluster-lock.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forkFixture, killChildren, runCounters } = require('./children');
const { Redlock } = require('@sesamecare-oss/redlock');
const RedisStorageAdapter = require('..');
const { rawCommands } = require('./servers');
const { rejectsWithCode, ioredisFor, closeAll, topologies, existsCount, keySlot } = require('./helpers');

const HEX32 = /^[0-9a-f]{32}$/;

for (const topo of topologies()) describe(`interop with @sesamecare-oss/redlock (${topo.name})`, () => {
  let target;
  let observer;
  const open = [];

  function adapterWith(opts = {}) {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target, opts));
    open.push(adapter);
    return adapter;
  }

  /** A Redlock over its own ioredis client, or ioredis Cluster (closed in `after`). */
  function redlockWith(settings = {}) {
    const client = topo.observer(target, open);
    const redlock = new Redlock([client], { retryCount: 0, ...settings });
    redlock.on('error', () => {});
    return redlock;
  }

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await target?.stop();
  });

  // db 0; another db in the one-server block below.
  it("Redlock holds 'r' -> ours cannot lock it; after release ours can (db 0)", { timeout: 20000 }, async () => {
    const resource = 'interop:r0';
    const redlock = redlockWith({ db: 0 });
    const ours = adapterWith({ redlockOptions: { retryCount: 0, db: 0 } }).locker;
    const theirs = await redlock.acquire([resource], 5000);
    assert.equal(await observer.get(resource), theirs.value);
    await rejectsWithCode(ours.lock(resource), 'ERR_LOCK_NOT_ACQUIRED', { mentions: [resource] });
    assert.equal(await observer.get(resource), theirs.value, "our refused attempt touched Redlock's key");
    // Our unlock of a lock we do not hold leaves Redlock's key alone.
    await ours.unlock(resource);
    assert.equal(await observer.get(resource), theirs.value);
    await theirs.release();
    await ours.lock(resource);
    assert.match(await observer.get(resource), HEX32);
    await ours.unlock(resource);
    assert.equal(await observer.exists(resource), 0);
  });

  it("ours holds 'r' -> Redlock cannot acquire it; after our unlock it can (db 0)", { timeout: 20000 }, async () => {
    const resource = 'interop:o0';
    const redlock = redlockWith({ db: 0 });
    const ours = adapterWith({ redlockOptions: { db: 0 } }).locker;
    await ours.lock(resource);
    const value = await observer.get(resource);
    assert.match(value, HEX32);
    await assert.rejects(redlock.acquire([resource], 1000, { retryCount: 0 }), 'Redlock acquired a lock we hold');
    assert.equal(await observer.get(resource), value, "Redlock's refused attempt touched our key");
    await ours.unlock(resource);
    const theirs = await redlock.acquire([resource], 1000, { retryCount: 0 });
    assert.equal(await observer.get(resource), theirs.value);
    await theirs.release();
    assert.equal(await observer.exists(resource), 0);
  });

  it('a multi-resource lock excludes Redlock on any of its resources, and back', { timeout: 20000 }, async () => {
    const [m1, m2, m3] = ['{interop}m1', '{interop}m2', '{interop}m3'];
    assert.equal(new Set([m1, m2, m3].map(keySlot)).size, 1, 'a hash tag puts them in one slot');
    const redlock = redlockWith();
    const ours = adapterWith({ redlockOptions: { retryCount: 0 } }).locker;
    await ours.lock([m1, m2]);
    await assert.rejects(redlock.acquire([m2, m3], 1000));
    assert.equal(await observer.exists(m3), 0);
    await ours.unlock([m1, m2]);
    const theirs = await redlock.acquire([m2, m3], 5000);
    await rejectsWithCode(ours.lock([m1, m2]), 'ERR_LOCK_NOT_ACQUIRED');
    assert.equal(await observer.exists(m1), 0);
    await theirs.release();
    await ours.lock([m1, m2]);
    assert.equal(await observer.get(m1), await observer.get(m2));
    await ours.unlock([m1, m2]);
    assert.equal(await existsCount(observer, m1, m2, m3), 0);
  });

  it('a process on Redlock and a process on ours count a shared counter to 200', { timeout: topo.cluster ? 120000 : 90000 }, async () => {
    const resource = 'interop:counter-lock';
    const counterKey = 'interop:counter';
    const insideKey = 'interop:counter:inside';
    for (const k of [resource, counterKey, insideKey]) await observer.del(k);
    const common = {
      ...topo.fixtureOptions(target),
      resource,
      counterKey,
      insideKey,
      sections: 100,
      concurrency: 4,
      ...(topo.cluster ? { deadlineMs: 100000 } : {}),
    };
    const procs = [
      forkFixture('lock-counter.js', { ...common, mode: 'redlock' }),
      forkFixture('lock-counter.js', { ...common, mode: 'ours' }),
    ];
    const results = await runCounters(procs, 100, topo.cluster ? 110000 : 80000);
    console.log(`# ${topo.name} mixed counter: lock attempts that ran out and were retried (redlock, ours): ${results.map((r) => r.lockFailures).join(', ')}`);
    assert.equal(await observer.get(counterKey), '200');
    assert.equal(await observer.exists(resource), 0, 'a lock key was left behind');
  });

  if (!topo.cluster) {
    describe('in another db, on one server (a cluster has db 0 only)', () => {
      const inDb = async (db, ...cmd) => (await rawCommands(target, [['SELECT', db], cmd]))[1];
      /** A Redlock over its own ioredis client on `db` (closed in `after`). */
      function redlockIn(db) {
        const client = ioredisFor(target, { db }, open);
        const redlock = new Redlock([client], { retryCount: 0, db });
        redlock.on('error', () => {});
        return redlock;
      }

      for (const db of [2]) {
        it(`Redlock holds 'r' -> ours cannot lock it; after release ours can (db ${db})`, { timeout: 20000 }, async () => {
          const resource = `interop:r${db}`;
          const redlock = redlockIn(db);
          const ours = adapterWith({ redlockOptions: { retryCount: 0, db } }).locker;
          const theirs = await redlock.acquire([resource], 5000);
          assert.equal(await inDb(db, 'GET', resource), theirs.value);
          await rejectsWithCode(ours.lock(resource), 'ERR_LOCK_NOT_ACQUIRED', { mentions: [resource] });
          assert.equal(await inDb(db, 'GET', resource), theirs.value, "our refused attempt touched Redlock's key");
          // Our unlock of a lock we do not hold leaves Redlock's key alone.
          await ours.unlock(resource);
          assert.equal(await inDb(db, 'GET', resource), theirs.value);
          await theirs.release();
          await ours.lock(resource);
          assert.match(await inDb(db, 'GET', resource), HEX32);
          await ours.unlock(resource);
          assert.equal(await inDb(db, 'EXISTS', resource), 0);
        });

        it(`ours holds 'r' -> Redlock cannot acquire it; after our unlock it can (db ${db})`, { timeout: 20000 }, async () => {
          const resource = `interop:o${db}`;
          const redlock = redlockIn(db);
          const ours = adapterWith({ redlockOptions: { db } }).locker;
          await ours.lock(resource);
          const value = await inDb(db, 'GET', resource);
          assert.match(value, HEX32);
          await assert.rejects(redlock.acquire([resource], 1000, { retryCount: 0 }), 'Redlock acquired a lock we hold');
          assert.equal(await inDb(db, 'GET', resource), value, "Redlock's refused attempt touched our key");
          await ours.unlock(resource);
          const theirs = await redlock.acquire([resource], 1000, { retryCount: 0 });
          assert.equal(await inDb(db, 'GET', resource), theirs.value);
          await theirs.release();
          assert.equal(await inDb(db, 'EXISTS', resource), 0);
        });
      }

      it('keeps locks of different dbs apart, as Redlock does', { timeout: 20000 }, async () => {
        const resource = 'interop:dbs';
        const ours = adapterWith({ redlockOptions: { retryCount: 0, db: 2 } }).locker;
        const theirs = await redlockIn(0).acquire([resource], 5000);
        await ours.lock(resource); // db 2: not the key Redlock holds in db 0
        assert.equal(await inDb(0, 'GET', resource), theirs.value);
        assert.match(await inDb(2, 'GET', resource), HEX32);
        await ours.unlock(resource);
        await theirs.release();
      });
    });
  }
});
