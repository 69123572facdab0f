'use strict';

// Interop with @sesamecare-oss/redlock (the library the original package used) over ioredis: the
// lock keys, values and scripts match, so a fleet mixing processes on the original and processes
// on this package still excludes each other, in any db.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forkFixture, killChildren, runCounters } = require('./children');
const { Redlock } = require('@sesamecare-oss/redlock');
const RedisStorageAdapter = require('..');
const { startRedis, rawCommands } = require('./servers');
const { rejectsWithCode, ioredisFor, closeAll } = require('./helpers');

const HEX32 = /^[0-9a-f]{32}$/;

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------



// ---------------------------------------------------------------------------------------------

describe('interop with @sesamecare-oss/redlock', () => {
  let redis;
  let observer;
  const open = [];

  function adapterWith(opts = {}) {
    const adapter = new RedisStorageAdapter({ host: redis.host, port: redis.port, ...opts });
    open.push(adapter);
    return adapter;
  }

  /** A Redlock over its own ioredis client (closed in `after`). */
  function redlockWith(settings = {}) {
    const client = ioredisFor(redis, {}, open);
    const redlock = new Redlock([client], { retryCount: 0, ...settings });
    redlock.on('error', () => {});
    return redlock;
  }

  const inDb = async (db, ...cmd) => (await rawCommands(redis, [['SELECT', db], cmd]))[1];

  before(async () => {
    redis = await startRedis();
    observer = ioredisFor(redis, {}, open);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await redis?.stop();
  });

  for (const db of [0, 2]) {
    it(`Redlock holds 'r' -> ours cannot lock it; after release ours can (db ${db})`, { timeout: 20000 }, async () => {
      const resource = `interop:r${db}`;
      const redlock = redlockWith({ db });
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
      const redlock = redlockWith({ db });
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
    const theirs = await redlockWith({ db: 0 }).acquire([resource], 5000);
    await ours.lock(resource); // db 2: not the key Redlock holds in db 0
    assert.equal(await inDb(0, 'GET', resource), theirs.value);
    assert.match(await inDb(2, 'GET', resource), HEX32);
    await ours.unlock(resource);
    await theirs.release();
  });

  it('a multi-resource lock excludes Redlock on any of its resources, and back', { timeout: 20000 }, async () => {
    const redlock = redlockWith();
    const ours = adapterWith({ redlockOptions: { retryCount: 0 } }).locker;
    await ours.lock(['interop:m1', 'interop:m2']);
    await assert.rejects(redlock.acquire(['interop:m2', 'interop:m3'], 1000));
    assert.equal(await observer.exists('interop:m3'), 0);
    await ours.unlock(['interop:m1', 'interop:m2']);
    const theirs = await redlock.acquire(['interop:m2', 'interop:m3'], 5000);
    await rejectsWithCode(ours.lock(['interop:m1', 'interop:m2']), 'ERR_LOCK_NOT_ACQUIRED');
    assert.equal(await observer.exists('interop:m1'), 0);
    await theirs.release();
    await ours.lock(['interop:m1', 'interop:m2']);
    await ours.unlock(['interop:m1', 'interop:m2']);
  });

  it('a process on Redlock and a process on ours count a shared counter to 200', { timeout: 90000 }, async () => {
    const resource = 'interop:counter-lock';
    const counterKey = 'interop:counter';
    const insideKey = 'interop:counter:inside';
    await observer.del(resource, counterKey, insideKey);
    const common = { port: redis.port, resource, counterKey, insideKey, sections: 100, concurrency: 4 };
    const procs = [
      forkFixture('lock-counter.js', { ...common, mode: 'redlock' }),
      forkFixture('lock-counter.js', { ...common, mode: 'ours' }),
    ];
    const results = await runCounters(procs, 100, 80000);
    console.log(`# mixed counter: lock attempts that ran out and were retried (redlock, ours): ${results.map((r) => r.lockFailures).join(', ')}`);
    assert.equal(await observer.get(counterKey), '200');
    assert.equal(await observer.exists(resource), 0, 'a lock key was left behind');
  });
});
