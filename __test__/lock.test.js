'use strict';

// The locker (Redlock) against real redis-server processes: mutual exclusion across processes and
// inside one process, the in-process hand-off, multi-resource locks, a holder that dies, automatic
// extension, a lock lost while held, quorum over independent nodes (redlockNodes), redlockFilter,
// bad input, and where the lock keys live.
//
// Child processes are fixtures/lock-counter.js (critical sections on a shared counter) and
// fixtures/lock-holder.js (takes a lock and keeps it until killed).
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// shared by the file), where the whole cluster is one voter and a multi-resource lock may span
// slots. What only a cluster has (slot order, keys on the slot's master, redlockFilter per startup
// node) is in cluster-lock.test.js; what only one server has is in the standalone-only block.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { forkFixture, killChildren, runCounters } = require('./children');
const RedisStorageAdapter = require('..');
const { startNodes, rawCommands } = require('./servers');
const {
  rejectsWithCode,
  throwsWithCode,
  within,
  waitFor,
  closeAll,
  collectWarnings,
  topologies,
  existsCount,
  keySlot,
  slotOwners,
} = require('./helpers');

const HEX32 = /^[0-9a-f]{32}$/;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


// ---------------------------------------------------------------------------------------------

for (const topo of topologies()) describe(`locker (${topo.name})`, () => {
  let target;
  let observer; // ioredis (a Cluster for the cluster)
  let owners; // on a cluster: slot -> "host:port" of its master
  const open = [];

  /** An adapter on the target; closed in `after`. */
  function adapterWith(opts = {}) {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target, opts));
    open.push(adapter);
    return adapter;
  }
  /** Deletes `keys` one by one (a multi-key DEL is CROSSSLOT on a cluster). */
  const del = async (...keys) => {
    for (const key of keys) await observer.del(key);
  };
  /**
   * `n` resource names `${base}<i>` whose slots differ and, on a cluster and as far as 3 masters
   * allow, whose masters differ.
   */
  function spreadResources(base, n) {
    const picked = [];
    const usedSlots = new Set();
    const usedMasters = new Set();
    for (let i = 0; picked.length < n && i < 10000; i += 1) {
      const name = `${base}${i}`;
      const slot = keySlot(name);
      const master = owners ? owners[slot] : 'the server';
      if (usedSlots.has(slot)) continue;
      if (owners && usedMasters.has(master) && usedMasters.size < 3) continue;
      usedSlots.add(slot);
      usedMasters.add(master);
      picked.push(name);
    }
    return picked;
  }

  /** An adapter whose lock() tries once. */
  function oneShot(opts = {}) {
    return adapterWith({ ...opts, redlockOptions: { retryCount: 0, ...opts.redlockOptions } });
  }

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
    if (topo.cluster) owners = await slotOwners(observer);
  });

  after(async () => {
    killChildren();
    await closeAll(open);
    await target?.stop();
  });

  it('is one object on every read, with the effective settings', () => {
    const adapter = adapterWith({ redlockOptions: { retryCount: 3 } });
    const locker = adapter.locker;
    assert.equal(adapter.locker, locker);
    assert.equal(typeof locker.lock, 'function');
    assert.equal(typeof locker.unlock, 'function');
    assert.deepEqual(
      { ...locker.options },
      { driftFactor: 0.01, retryCount: 3, retryDelay: 200, retryJitter: 100, automaticExtensionThreshold: 500, db: 0 },
    );
  });

  // Smaller on the cluster, whose lock round trips take longer (one voter all the same).
  const counter = topo.cluster
    ? { procs: 3, sections: 100, concurrency: 4, deadlineMs: 100000, waitMs: 110000, timeout: 120000 }
    : { procs: 4, sections: 200, concurrency: 8, deadlineMs: undefined, waitMs: 80000, timeout: 90000 };
  const total = counter.procs * counter.sections;
  it(`excludes ${counter.procs} processes x ${counter.concurrency} callers: ${total} GET/+1/SET sections count to ${total}`, { timeout: counter.timeout }, async () => {
    const resource = 'lock:counter';
    const counterKey = `counter:${counter.procs}x${counter.sections}`;
    const insideKey = `${counterKey}:inside`;
    await del(resource, counterKey, insideKey);
    const procs = Array.from({ length: counter.procs }, () =>
      forkFixture('lock-counter.js', {
        ...topo.fixtureOptions(target),
        mode: 'ours',
        resource,
        counterKey,
        insideKey,
        sections: counter.sections,
        concurrency: counter.concurrency,
        deadlineMs: counter.deadlineMs,
      }),
    );
    const results = await runCounters(procs, counter.sections, counter.waitMs);
    assert.equal(await observer.get(counterKey), String(total));
    assert.equal(await observer.exists(resource), 0, 'a lock key was left behind');
    console.log(`# ${topo.name} ${counter.procs}x${counter.sections} counter: lock attempts that ran out and were retried: ${results.map((r) => r.lockFailures).join(', ')}`);
  });

  it('hands the lock from one in-process caller to the next without sleeping out retryDelay', { timeout: 30000 }, async () => {
    const adapter = adapterWith(); // default retryDelay 200 ms ± 100: a sleeping hand-off would show
    const locker = adapter.locker;
    const resource = 'lock:handoff';
    await observer.del(resource);
    const runFor = 3000;
    const stopAt = performance.now() + runFor;
    const cycles = []; // { acquired, released } per cycle, in performance.now() ms
    let inside = 0;
    let maxInside = 0;
    let started = 0;
    let completed = 0;
    async function caller() {
      for (let i = 0; i < 100000 && performance.now() < stopAt; i += 1) {
        started += 1;
        await locker.lock(resource);
        const acquired = performance.now();
        inside += 1;
        maxInside = Math.max(maxInside, inside);
        await sleep(1);
        inside -= 1;
        const released = performance.now();
        cycles.push({ acquired, released });
        await locker.unlock(resource);
        completed += 1;
      }
    }
    await within(20000, Promise.all(Array.from({ length: 16 }, caller)), '16 callers');
    assert.equal(completed, started, 'every cycle completes');
    assert.equal(maxInside, 1, 'two callers were inside at once');
    assert.ok(cycles.length >= 16, `only ${cycles.length} cycles`);
    cycles.sort((a, b) => a.acquired - b.acquired);
    const gaps = [];
    for (let i = 1; i < cycles.length; i += 1) gaps.push(cycles[i].acquired - cycles[i - 1].released);
    const sorted = [...gaps].sort((a, b) => a - b);
    const maxGap = sorted[sorted.length - 1];
    const median = sorted[Math.floor(sorted.length / 2)];
    console.log(`# hand-off: ${cycles.length} cycles in ${runFor} ms, gap median ${median.toFixed(2)} ms, max ${maxGap.toFixed(2)} ms`);
    assert.ok(Math.min(...gaps) >= 0, 'a caller got the lock before the previous one released it');
    assert.ok(maxGap < 150, `the longest gap between an unlock and the next lock was ${maxGap.toFixed(1)} ms (median ${median.toFixed(1)} ms): a hand-off slept out retryDelay`);
    assert.equal(await observer.exists(resource), 0, 'a lock key was left behind');
  });

  it('serves concurrent lock() calls of one adapter in FIFO order', { timeout: 20000 }, async () => {
    const locker = adapterWith().locker;
    const resource = 'lock:fifo';
    await locker.lock(resource);
    const order = [];
    const waiters = [];
    for (let i = 0; i < 6; i += 1) {
      waiters.push(
        locker.lock(resource).then(async () => {
          order.push(i);
          await sleep(2);
          await locker.unlock(resource);
        }),
      );
      await sleep(5); // make the call order unambiguous
    }
    await locker.unlock(resource);
    await within(15000, Promise.all(waiters), 'queued waiters');
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
    assert.equal(await observer.exists(resource), 0);
  });

  it('locks several resources at once, all or nothing, and unlocks them together', { timeout: 20000 }, async () => {
    const a = adapterWith().locker;
    const b = oneShot().locker;
    await del('a', 'b', 'c');

    await a.lock(['a', 'b']);
    const value = await observer.get('a');
    assert.match(value, HEX32);
    assert.equal(await observer.get('b'), value, 'one lock: one value on every key');
    await rejectsWithCode(b.lock(['b', 'c']), 'ERR_LOCK_NOT_ACQUIRED', { mentions: ['b', 'c'] });
    assert.equal(await observer.exists('c'), 0, "a refused multi-resource lock set 'c' anyway");
    await b.lock('c'); // 'c' alone is free
    await b.unlock('c');

    await a.unlock(['a', 'b']);
    // (One EXISTS per key: a multi-key EXISTS is CROSSSLOT on a cluster.)
    assert.equal(await existsCount(observer, 'a', 'b'), 0, 'one unlock releases both keys');
    await a.unlock(['a', 'b']); // not held any more: no effect, no error

    await a.lock(['a', 'b']);
    await a.unlock('a');
    assert.equal(await existsCount(observer, 'a', 'b'), 0, "unlock('a') frees the whole ['a','b'] lock");
    await b.lock(['b', 'c']);
    const bValue = await observer.get('b');
    // A stale unlock by the former holder never deletes another holder's key.
    await a.unlock(['a', 'b']);
    assert.equal(await observer.get('b'), bValue);
    assert.equal(await observer.get('c'), bValue);
    await b.unlock(['b', 'c']);
    assert.equal(await existsCount(observer, 'a', 'b', 'c'), 0);
  });

  it('unlock of a resource not held resolves without touching the key', async () => {
    const locker = adapterWith().locker;
    await observer.set('foreign', 'someone-else', 'PX', 10000);
    await locker.unlock('foreign');
    await locker.unlock(['never-locked', 'foreign']);
    assert.equal(await observer.get('foreign'), 'someone-else');
    await observer.del('foreign');
  });

  it('frees a lock whose holder process was SIGKILLed after redlockTTL', { timeout: 30000 }, async () => {
    const resource = 'lock:killed';
    const ttl = 1000;
    await observer.del(resource);
    const holder = forkFixture('lock-holder.js', { ...topo.fixtureOptions(target), resource, redlockTTL: ttl });
    await holder.next('locked');
    const other = oneShot({ redlockTTL: ttl }).locker;
    // Past one TTL the holder, alive, still holds it (it extends).
    await sleep(ttl + 300);
    await rejectsWithCode(other.lock(resource), 'ERR_LOCK_NOT_ACQUIRED');
    assert.match(await observer.get(resource), HEX32);

    await holder.kill();
    const killedAt = Date.now();
    const waiter = adapterWith({ redlockTTL: ttl, redlockOptions: { retryCount: 100, retryDelay: 50, retryJitter: 10 } }).locker;
    await within(ttl + 3000, waiter.lock(resource), 'lock after the holder died');
    const waited = Date.now() - killedAt;
    console.log(`# acquired ${waited} ms after SIGKILL (redlockTTL ${ttl})`);
    assert.ok(waited <= ttl + 1500, `acquired only ${waited} ms after the holder died (redlockTTL ${ttl})`);
    await waiter.unlock(resource);
    assert.equal(await observer.exists(resource), 0);
  });

  it('extends a held lock past redlockTTL until unlock', { timeout: 30000 }, async () => {
    const resource = 'lock:extended';
    await observer.del(resource);
    const holder = adapterWith({ redlockTTL: 500 }).locker;
    const other = oneShot({ redlockTTL: 500 }).locker;
    const warnings = await collectWarnings(async () => {
      await holder.lock(resource);
      const until = Date.now() + 2000;
      let attempts = 0;
      while (Date.now() < until) {
        await sleep(200);
        if (Date.now() >= until) break;
        attempts += 1;
        await rejectsWithCode(other.lock(resource), 'ERR_LOCK_NOT_ACQUIRED', {
          mentions: [resource],
        });
      }
      assert.ok(attempts >= 5, `only ${attempts} attempts during the hold`);
      await holder.unlock(resource);
      await other.lock(resource);
      await other.unlock(resource);
    });
    const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
    assert.deepEqual(lost.map((w) => w.message), [], 'an extended lock was reported lost');
    assert.equal(await observer.exists(resource), 0);
  });

  it('keeps a lock extended while the JavaScript thread is blocked longer than redlockTTL', { timeout: 30000 }, async () => {
    // Replies are read on the JavaScript thread; the extension must not wait for it.
    const resource = 'lock:blocked';
    await observer.del(resource);
    const adapter = adapterWith({ redlockTTL: 500, keyPrefix: 'blocked:' });
    const warnings = await collectWarnings(async () => {
      await adapter.set('k', 1);
      await adapter.locker.lock(resource);
      const until = Date.now() + 1500;
      while (Date.now() < until) {
        // a synchronous computation three times as long as redlockTTL
      }
      assert.equal(await observer.exists(resource), 1, 'the lock expired while the thread was blocked');
      await adapter.locker.unlock(resource);
    });
    const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
    assert.deepEqual(lost.map((w) => w.message), [], 'the lock was reported lost');
    assert.equal(await observer.exists(resource), 0);
  });

  it('reports a lock lost while held (ERR_LOCK_LOST) and never deletes the new holder\'s key', { timeout: 20000 }, async () => {
    const resource = 'lock:lost';
    await observer.del(resource);
    const locker = adapterWith({ redlockTTL: 300 }).locker;
    const warnings = await collectWarnings(async (seen) => {
      await locker.lock(resource);
      await observer.set(resource, 'someone-else', 'PX', 10000);
      await sleep(600);
      await within(5000, locker.unlock(resource), 'unlock of a lost lock');
      await waitFor(() => seen.some((w) => w.code === 'ERR_LOCK_LOST'), {
        timeout: 2000,
        what: 'an ERR_LOCK_LOST warning',
      });
    });
    const lost = warnings.find((w) => w.code === 'ERR_LOCK_LOST');
    assert.ok(lost instanceof Error);
    assert.ok(lost.message.includes(resource), lost.message);
    assert.equal(await observer.get(resource), 'someone-else');
    await observer.del(resource);
  });

  it('releases held locks on close(), a multi-resource one (over 2 slots on a cluster) too', { timeout: 20000 }, async () => {
    const adapter = adapterWith();
    const resources = spreadResources('lock:closed:', 2);
    await del('lock:closed', ...resources);
    await adapter.locker.lock('lock:closed');
    assert.equal(await observer.exists('lock:closed'), 1);
    await adapter.locker.lock(resources);
    assert.equal(await existsCount(observer, resources), 2);
    await adapter.close();
    assert.equal(await observer.exists('lock:closed'), 0);
    assert.equal(await existsCount(observer, resources), 0);
  });

  for (const n of [3, 5]) {
    it(`votes with a majority of ${n} independent nodes (redlockNodes)`, { timeout: 60000 }, async () => {
      const nodes = await startNodes(n);
      try {
        const quorum = Math.floor(n / 2) + 1;
        const adapter = adapterWith({
          redlockNodes: nodes.map((s, i) => (i % 2 ? { host: s.host, port: s.port } : s.url)),
          redlockOptions: { retryCount: 1, retryDelay: 50, retryJitter: 10 },
        });
        const locker = adapter.locker;
        const resource = `lock:quorum${n}`;

        // All up: locks on every node with one value, nothing on the main connection.
        await within(10000, locker.lock(resource), 'lock with all nodes up');
        const values = await Promise.all(nodes.map((s) => s.command('GET', resource)));
        assert.match(values[0], HEX32);
        assert.deepEqual(values, nodes.map(() => values[0]));
        assert.equal(await observer.exists(resource), 0, 'the lock went to the cache connection');
        await adapter.set('cache-key', 1);
        assert.equal(await observer.get('alova:cache-key'), '1', 'the cache stays on the main connection');
        await locker.unlock(resource);
        const left = await Promise.all(nodes.map((s) => s.command('EXISTS', resource)));
        assert.deepEqual(left, nodes.map(() => 0));

        // A minority down: still locks.
        const minority = n - quorum;
        await Promise.all(nodes.slice(0, minority).map((s) => s.stop()));
        await within(10000, locker.lock(resource), `lock with ${minority} of ${n} nodes down`);
        await within(10000, locker.unlock(resource), 'unlock with a minority down');

        // A majority down: rejects, and says how the nodes voted.
        await nodes[minority].stop();
        const err = await within(
          20000,
          rejectsWithCode(locker.lock(resource), 'ERR_LOCK_NOT_ACQUIRED', { mentions: [resource, 'vote'] }),
          `lock with ${minority + 1} of ${n} nodes down`,
        );
        assert.match(err.message, /\b2 attempts?\b/, `retryCount 1 means 2 attempts: ${err.message}`);
        for (const s of nodes) {
          assert.ok(err.message.includes(String(s.port)), `the message does not name node ${s.port}: ${err.message}`);
        }
      } finally {
        await Promise.all(nodes.map((s) => s.stop()));
      }
    });
  }

  it('rejects bad resources with ERR_INVALID_ARG and bad settings with ERR_INVALID_OPTION', async () => {
    const locker = adapterWith().locker;
    await rejectsWithCode(locker.lock([]), 'ERR_INVALID_ARG');
    await rejectsWithCode(locker.lock(5), 'ERR_INVALID_ARG');
    await rejectsWithCode(locker.lock(['a', 1]), 'ERR_INVALID_ARG');
    await rejectsWithCode(locker.unlock([]), 'ERR_INVALID_ARG');
    assert.equal(await observer.exists('a'), 0, 'a rejected lock wrote a key');

    const where = (opts) => topo.adapterOptions(target, opts);
    throwsWithCode(() => new RedisStorageAdapter(where({ redlockTTL: 0 })), 'ERR_INVALID_OPTION', { mentions: ['redlockTTL'] });
    throwsWithCode(() => new RedisStorageAdapter(where({ redlockTTL: -1 })), 'ERR_INVALID_OPTION', { mentions: ['redlockTTL'] });
    throwsWithCode(() => new RedisStorageAdapter(where({ redlockOptions: { retryCount: -2 } })), 'ERR_INVALID_OPTION', {
      mentions: ['retryCount'],
    });
    const unlimited = adapterWith({ redlockOptions: { retryCount: -1 } });
    assert.equal(unlimited.locker.options.retryCount, -1);
    await unlimited.locker.lock('lock:unlimited');
    await unlimited.locker.unlock('lock:unlimited');
  });

  if (!topo.cluster) {
    describe('one server only (redlockFilter sees that server; lock keys in redlockOptions.db: a cluster has db 0 only; the cluster\'s own cases are in cluster-lock.test.js)', () => {
      it('redlockFilter picks the voting nodes; none left throws ERR_NO_LOCK_NODE', { timeout: 60000 }, async () => {
        const seen = [];
        const alone = adapterWith({
          redlockFilter: (node) => {
            seen.push({ host: node.options.host, port: node.options.port });
            return node.options.port !== target.port;
          },
        });
        throwsWithCode(() => alone.locker, 'ERR_NO_LOCK_NODE', { mentions: ['No redis client available'] });
        assert.deepEqual(seen[0], { host: target.host, port: target.port });
        const kept = adapterWith({ redlockFilter: (node) => node.options.port === target.port });
        await kept.locker.lock('lock:filtered');
        await kept.locker.unlock('lock:filtered');

        const nodes = await startNodes(3);
        try {
          const excluded = nodes[2];
          const adapter = adapterWith({
            redlockNodes: nodes.map((s) => s.url),
            redlockFilter: (node) => node.options.port !== excluded.port,
            redlockOptions: { retryCount: 1, retryDelay: 50, retryJitter: 10 },
          });
          const locker = adapter.locker;
          await locker.lock('lock:f3');
          assert.match(await nodes[0].command('GET', 'lock:f3'), HEX32);
          assert.match(await nodes[1].command('GET', 'lock:f3'), HEX32);
          assert.equal(await excluded.command('EXISTS', 'lock:f3'), 0, 'the filtered-out node voted');
          await locker.unlock('lock:f3');
          await excluded.stop();
          await within(10000, locker.lock('lock:f3'), 'lock with the excluded node down');
          await locker.unlock('lock:f3');
          // Two voters: one of them down loses the quorum of 2.
          await nodes[1].stop();
          const err = await within(20000, rejectsWithCode(locker.lock('lock:f3'), 'ERR_LOCK_NOT_ACQUIRED'), 'lock with 1 of 2 voters');
          assert.ok(!err.message.includes(String(excluded.port)), `the excluded node is named as a voter: ${err.message}`);
        } finally {
          await Promise.all(nodes.map((s) => s.stop()));
        }
      });

      it('keeps lock keys as the bare resource name, 32 hex chars, PX redlockTTL, in redlockOptions.db', async () => {
        const ttl = 4000;
        const adapter = adapterWith({ keyPrefix: 'pfx:', redlockTTL: ttl, redlockOptions: { db: 3 } });
        await adapter.locker.lock('k');
        const inDb = async (db, ...cmd) => (await rawCommands(target, [['SELECT', db], cmd]))[1];
        const [value, pttl] = (await rawCommands(target, [['SELECT', 3], ['GET', 'k'], ['PTTL', 'k']])).slice(1);
        assert.match(value, HEX32);
        assert.ok(pttl > 0 && pttl <= ttl, `PTTL ${pttl} for redlockTTL ${ttl}`);
        for (let db = 0; db < 16; db += 1) {
          if (db !== 3) assert.equal(await inDb(db, 'EXISTS', 'k'), 0, `the lock key is also in db ${db}`);
          assert.equal(await inDb(db, 'EXISTS', 'pfx:k'), 0, 'keyPrefix was applied to a lock key');
        }
        await adapter.locker.unlock('k');
        assert.equal(await inDb(3, 'EXISTS', 'k'), 0);
      });
    });
  }
});
