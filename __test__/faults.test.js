'use strict';

// Faults (SPEC invariants 2-4, issue 9): every wait ends when its option says, close() ends
// everything, order and read-your-writes survive a frozen or restarted server, and a lock lost to
// a restart is reported. Real redis-server processes, plus three tiny scripted servers from
// ./fakes.js for what a real server cannot be made to do: a black hole (accepts, never answers),
// one that answers garbage and one that answers a truncated bulk reply.
//
// The time bounds here are generous hang guards derived from the options (a few times what the
// options allow), not measurements.
//
// One server only: the scripted servers speak no cluster, and the faults are of one process
// (SIGSTOP, SIGKILL, a restart by pid). A cluster's faults are a failover: call order through one
// is in order.test.js (the connection matrix), an adapter serving through one in
// cluster-failover.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { startRedis, freePort, HOST } = require('./servers');
const { blackHole, garbageServer, truncatedServer } = require('./fakes');
const {
  ERROR_CODES,
  errorText,
  rejectsWithCode,
  within,
  waitFor,
  ioredisFor,
  closeAll,
  collectWarnings,
} = require('./helpers');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles `promise` into { ok, value } / { ok: false, error }, so it can never go unhandled. */
const outcome = (promise) => promise.then((value) => ({ ok: true, value }), (error) => ({ ok: false, error }));

/** Asserts that every outcome is a rejection with `code`. */
function allRejectedWith(outcomes, code, what) {
  const seen = outcomes.map((o) => (o.ok ? `resolved ${JSON.stringify(o.value)}` : `${o.error && o.error.code}: ${o.error && o.error.message}`));
  assert.ok(
    outcomes.every((o) => !o.ok && o.error instanceof Error && o.error.code === code),
    `${what}: expected every call to reject ${code}, got ${JSON.stringify(seen)}`,
  );
}

/** Ten calls of every kind the adapter has: set/get/remove and client commands. */
function tenCalls(adapter) {
  return [
    adapter.set('q1', 1), adapter.get('q1'), adapter.remove('q1'), adapter.set('q2', { two: 2 }),
    adapter.get('q2'), adapter.client.call('SET', 'raw:q3', '3'), adapter.client.get('raw:q3'),
    adapter.client.rpush('raw:list', 'a'), adapter.set('q4', [4, Date.now() + 60000]), adapter.get('q4'),
  ].map(outcome);
}

describe('faults of one server (scripted servers, SIGSTOP, SIGKILL and restarts by pid: a cluster\'s failover is in order.test.js and cluster-failover.test.js)', () => {
  const open = [];
  const track = (thing) => {
    open.push(thing);
    return thing;
  };
  after(async () => {
    await closeAll(open);
  });

  describe('a black-hole server (accepts, never answers)', () => {
    let hole;
    before(async () => {
      hole = await blackHole();
    });
    after(async () => {
      await hole?.close();
    });

    it('connectTimeout: 500, commandTimeout: 500: set, get and client calls reject ERR_TIMEOUT within 3 s', { timeout: 30000 }, async () => {
      // ioredis rejects after 0.5 s (commandTimeout counts from the call). 3 s is a hang guard.
      const a = track(new RedisStorageAdapter({ host: HOST, port: hole.port, connectTimeout: 500, commandTimeout: 500 }));
      await within(3000, Promise.all([
        rejectsWithCode(a.set('k', 1), 'ERR_TIMEOUT'),
        rejectsWithCode(a.get('k'), 'ERR_TIMEOUT'),
        rejectsWithCode(a.client.call('PING'), 'ERR_TIMEOUT'),
      ]), 'set/get/call against a black hole');
      // Later calls are bounded the same way.
      await within(3000, rejectsWithCode(a.get('k'), 'ERR_TIMEOUT'), 'a later get');
    });

    it('a RedisClient with the same options rejects ERR_TIMEOUT within 3 s', { timeout: 30000 }, async () => {
      const client = track(new RedisClient({ host: HOST, port: hole.port, connectTimeout: 500, commandTimeout: 500 }));
      await within(3000, Promise.all([
        rejectsWithCode(client.set('k', '1'), 'ERR_TIMEOUT'),
        rejectsWithCode(client.get('k'), 'ERR_TIMEOUT'),
      ]), 'RedisClient calls against a black hole');
    });

    it('close() while connecting to it resolves within 1.5 s and the queued calls reject ERR_CLOSED', { timeout: 30000 }, async () => {
      // Default connectTimeout (10 s): the first attempt is still under way when close() comes.
      const a = track(new RedisStorageAdapter({ host: HOST, port: hole.port }));
      const calls = tenCalls(a);
      await sleep(100);
      const [, outcomes] = await within(1500, Promise.all([a.close(), Promise.all(calls)]), 'close() while connecting');
      allRejectedWith(outcomes, 'ERR_CLOSED', 'calls queued while connecting');
    });
  });

  const nonsense = [
    ['garbage (not RESP)', garbageServer],
    ['a truncated bulk reply ($10\\r\\nabc)', truncatedServer],
  ];
  for (const [what, start] of nonsense) {
    describe(`a server that answers ${what}`, () => {
      let fake;
      before(async () => {
        fake = await start();
      });
      after(async () => {
        await fake?.close();
      });

      it('costs at most one connectTimeout per attempt: with one retry, calls reject ERR_PROTOCOL or ERR_TIMEOUT within 5 s; reconnecting follows retryStrategy', { timeout: 30000 }, async () => {
        // Two attempts of at most 500 ms and a 100 ms pause: about 1.1 s. 5 s is a hang guard.
        const times = [];
        const a = track(new RedisStorageAdapter({
          host: HOST,
          port: fake.port,
          connectTimeout: 500,
          maxRetriesPerRequest: 1,
          retryStrategy: (n) => {
            times.push(n);
            return 100;
          },
        }));
        const outcomes = await within(5000, Promise.all([a.set('k', 1), a.get('k'), a.client.call('PING')].map(outcome)),
          `calls to a server that answers ${what}`);
        for (const o of outcomes) {
          assert.ok(!o.ok, `a call resolved: ${JSON.stringify(o.value)}`);
          assert.ok(['ERR_PROTOCOL', 'ERR_TIMEOUT'].includes(o.error.code), `${o.error.code}: ${errorText(o.error)}`);
        }
        // Reconnecting goes on, paced by retryStrategy (consulted with the attempt number).
        await waitFor(() => times.length >= 1, { timeout: 3000, what: 'retryStrategy to be consulted after the failed attempt' });
        assert.equal(times[0], 1);
        await within(1500, a.close(), 'close()');
      });

      it('commandTimeout bounds a call also while the handshake fails (default retries)', { timeout: 30000 }, async () => {
        const a = track(new RedisStorageAdapter({ host: HOST, port: fake.port, connectTimeout: 500, commandTimeout: 1000 }));
        const outcomes = await within(4000, Promise.all([a.set('k', 1), a.get('k')].map(outcome)),
          `calls with commandTimeout 1000 to a server that answers ${what}`);
        for (const o of outcomes) {
          assert.ok(!o.ok, `a call resolved: ${JSON.stringify(o.value)}`);
          assert.ok(['ERR_PROTOCOL', 'ERR_TIMEOUT'].includes(o.error.code), `${o.error.code}: ${errorText(o.error)}`);
        }
        await within(1500, a.close(), 'close()');
      });
    });
  }

  describe('close() against a dead port (nothing listens)', () => {
    for (const [name, extra] of [['default options', {}], ['maxRetriesPerRequest: null', { maxRetriesPerRequest: null }]]) {
      it(`${name}: close() with 10 calls queued resolves within 1.5 s; the calls reject ERR_CLOSED`, { timeout: 30000 }, async () => {
        const port = await freePort();
        const a = track(new RedisStorageAdapter({ host: HOST, port, ...extra }));
        const calls = tenCalls(a);
        await sleep(200); // a few refused attempts: the client is reconnecting
        const [, outcomes] = await within(1500, Promise.all([a.close(), Promise.all(calls)]), 'close() and the queued calls');
        allRejectedWith(outcomes, 'ERR_CLOSED', 'calls queued against a dead port');
        await rejectsWithCode(() => a.get('k'), 'ERR_CLOSED');
      });
    }

    for (const how of ['disconnect', 'quit']) {
      it(`RedisClient.${how}() settles the queued calls at once (ERR_CLOSED)`, { timeout: 30000 }, async () => {
        const port = await freePort();
        const client = track(new RedisClient({ host: HOST, port, maxRetriesPerRequest: null }));
        const calls = ['a', 'b', 'c', 'd', 'e'].map((k) => outcome(client.set(k, k)));
        await sleep(200);
        const ended = how === 'quit' ? outcome(client.quit()) : (client.disconnect(), Promise.resolve());
        const outcomes = await within(1500, Promise.all(calls), `the queued calls after ${how}()`);
        allRejectedWith(outcomes, 'ERR_CLOSED', `calls queued before ${how}()`);
        await within(1500, ended, `${how}()`);
      });
    }
  });

  describe('a server that goes away', () => {
    let own;
    let observer;
    before(async () => {
      own = await startRedis();
      observer = ioredisFor(own, {}, open);
    });
    after(async () => {
      await own?.stop();
    });

    for (const [index, [name, extra]] of [['default options', {}], ['maxRetriesPerRequest: null', { maxRetriesPerRequest: null }]].entries()) {
      it(`${name}: close() while reconnecting resolves within 1.5 s; the queued calls reject ERR_CLOSED and write nothing`, { timeout: 40000 }, async () => {
        if (!own.running) await own.restart();
        const prefix = `cwr${index}:`;
        const a = track(new RedisStorageAdapter({ host: own.host, port: own.port, keyPrefix: prefix, connectionName: 'closing-while-reconnecting' }));
        await a.set('warm', 1);
        await own.kill('SIGKILL');
        const calls = Array.from({ length: 10 }, (_, i) => outcome(a.set(`k${i}`, i)));
        await waitFor(() => a.client.status === 'reconnecting', { timeout: 5000, what: 'status reconnecting' });
        const [, outcomes] = await within(1500, Promise.all([a.close(), Promise.all(calls)]), 'close() while reconnecting');
        allRejectedWith(outcomes, 'ERR_CLOSED', 'calls queued while reconnecting');
        // A closed adapter does not come back: nothing of it reaches the restarted server.
        await own.restart();
        await sleep(500);
        assert.deepEqual(await observer.keys(`${prefix}*`), [], 'a call rejected by close() was written');
        assert.doesNotMatch(await observer.call('CLIENT', 'LIST'), /name=closing-while-reconnecting\b/, 'the closed adapter reconnected');
      });
    }
  });

  describe('a frozen server (SIGSTOP, then SIGCONT)', () => {
    let own;
    let observer;
    before(async () => {
      own = await startRedis();
      observer = ioredisFor(own, {}, open);
    });
    after(async () => {
      await own?.stop(); // thaws it first
    });

    it('calls reject ERR_TIMEOUT while it is frozen; after SIGCONT later calls succeed in call order, with no stale reply', { timeout: 40000 }, async () => {
      const a = track(new RedisStorageAdapter({ host: own.host, port: own.port, commandTimeout: 500, keyPrefix: 'frozen:' }));
      await a.set('k', 'before');
      await own.kill('SIGSTOP');
      try {
        // Sent on the open connection: the server reads them when it thaws.
        const frozenSet = a.set('k', 'frozen');
        const frozenGet = a.get('k');
        const frozenCall = a.client.call('GET', 'frozen:k');
        // A new connection gets TCP (the kernel accepts) but no handshake: connectTimeout.
        const late = track(new RedisStorageAdapter({ host: own.host, port: own.port, connectTimeout: 500, commandTimeout: 500, keyPrefix: 'frozen:' }));
        await within(3000, Promise.all([
          rejectsWithCode(frozenSet, 'ERR_TIMEOUT'),
          rejectsWithCode(frozenGet, 'ERR_TIMEOUT'),
          rejectsWithCode(frozenCall, 'ERR_TIMEOUT'),
          rejectsWithCode(late.get('k'), 'ERR_TIMEOUT'),
        ]), 'calls to a frozen server');
      } finally {
        await own.kill('SIGCONT');
      }
      // The replies of the timed-out calls come now: none may be taken for a later call's.
      const sets = [];
      for (let i = 0; i < 20; i += 1) sets.push(a.set('k', i));
      const read = a.get('k');
      const raw = a.client.call('GET', 'frozen:k');
      await within(10000, Promise.all(sets), 'the sets after SIGCONT');
      assert.equal(await within(10000, read, 'the get after SIGCONT'), 19);
      assert.equal(await raw, '19');
      assert.equal(await observer.get('frozen:k'), '19');
      // A burst of pushes keeps its order too.
      const pushes = Array.from({ length: 10 }, (_, i) => a.client.rpush('frozen:list', String(i)));
      assert.deepEqual(await within(10000, Promise.all(pushes), 'the pushes'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.deepEqual(await observer.lrange('frozen:list', 0, -1), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    });
  });

  describe('a restart under traffic', () => {
    let own;
    let observer;
    before(async () => {
      own = await startRedis();
      observer = ioredisFor(own, {}, open);
    });
    after(async () => {
      await own?.stop();
    });

    it('every call settles; each set-then-get pair agrees with call order; afterwards nothing resolved is lost', { timeout: 90000 }, async (t) => {
      const a = track(new RedisStorageAdapter({ host: own.host, port: own.port, keyPrefix: 'rut:' }));
      await a.set('warm', 1);
      const LANES = 16;
      const failures = [];
      const disorder = [];
      const lastAfter = new Array(LANES).fill(null); // the last pair issued after the restart
      let pairs = 0;
      let pairsAfter = 0;
      let restarted = false;
      let stop = false;
      // Each lane: set(k, n) and get(k) issued together, not awaited in between. The get runs
      // after the set, so it returns n, or nothing if the restart came between them (no
      // persistence); never an older value. Once the server is back for good, always n.
      const lane = async (i) => {
        for (let n = 1; !stop; n += 1) {
          const after = restarted;
          const [s, g] = await Promise.all([outcome(a.set(`k${i}`, n)), outcome(a.get(`k${i}`))]);
          pairs += 1;
          if (after) pairsAfter += 1;
          for (const o of [s, g]) if (!o.ok) failures.push(o.error);
          if (s.ok && g.ok && g.value !== n && (after || g.value !== undefined)) {
            disorder.push(`lane ${i}: set(${n}) then get() returned ${JSON.stringify(g.value)}${after ? ' (after the restart)' : ''}`);
          }
          if (after) lastAfter[i] = { n, ok: s.ok };
          if (!s.ok || !g.ok) await sleep(10); // no hot loop on failures
        }
      };
      const lanes = Array.from({ length: LANES }, (_, i) => lane(i));
      try {
        await waitFor(() => pairs >= 300, { timeout: 20000, what: 'traffic before the restart' });
        await own.restart(); // SIGKILL, then the same port again
        restarted = true;
        await waitFor(() => pairsAfter >= 300, { timeout: 30000, what: 'traffic after the restart' });
      } finally {
        stop = true;
        await within(20000, Promise.all(lanes), 'every call to settle');
      }
      const codes = {};
      for (const err of failures) codes[err && err.code] = (codes[err && err.code] || 0) + 1;
      t.diagnostic(`${pairs} pairs (${pairsAfter} after the restart), failures ${JSON.stringify(codes)}, out of order ${disorder.length}`);
      for (const err of failures) {
        assert.ok(err instanceof Error && ERROR_CODES.has(err.code), `undocumented failure: ${errorText(err)}`);
      }
      assert.deepEqual(disorder.slice(0, 10), [], `${disorder.length} pairs disagree with call order`);
      // Nothing resolved after the restart is lost: Redis holds each lane's last write.
      for (let i = 0; i < LANES; i += 1) {
        if (lastAfter[i] && lastAfter[i].ok) assert.equal(await observer.get(`rut:k${i}`), String(lastAfter[i].n), `lane ${i}`);
      }
      // Read-your-writes, on every lane at once.
      const writes = [];
      const reads = [];
      for (let i = 0; i < LANES; i += 1) {
        writes.push(a.set(`k${i}`, `final${i}`));
        reads.push(a.get(`k${i}`));
      }
      const [, values] = await within(10000, Promise.all([Promise.all(writes), Promise.all(reads)]), 'the final writes and reads');
      assert.deepEqual(values, Array.from({ length: LANES }, (_, i) => `final${i}`));
    });
  });

  describe('a lock across a restart', () => {
    let own;
    let observer;
    before(async () => {
      own = await startRedis();
      observer = ioredisFor(own, {}, open);
    });
    after(async () => {
      await own?.stop();
    });

    it('held by A, its key lost in a restart, then taken by B: A\'s unlock() warns ERR_LOCK_LOST and leaves B\'s key', { timeout: 40000 }, async () => {
      const resource = 'lock:across-restart';
      // A TTL far longer than the test: nothing expires or is extended on its own.
      const a = track(new RedisStorageAdapter({ host: own.host, port: own.port, redlockTTL: 30000 }));
      const b = track(new RedisStorageAdapter({ host: own.host, port: own.port, redlockTTL: 30000 }));
      await b.set('warm', 1);
      const warnings = await collectWarnings(async (seen) => {
        await within(10000, a.locker.lock(resource), "A's lock");
        await own.restart(); // no persistence: the lock key is gone
        await within(15000, b.locker.lock(resource), "B's lock after the restart");
        const bValue = await observer.get(resource);
        assert.match(String(bValue), /^[0-9a-f]{32}$/);
        await within(10000, a.locker.unlock(resource), "A's unlock");
        await waitFor(() => seen.some((w) => w.code === 'ERR_LOCK_LOST'), { timeout: 2000, what: 'an ERR_LOCK_LOST warning' })
          .catch(() => {}); // asserted below, with what was seen
        assert.equal(await observer.get(resource), bValue, "A's unlock touched B's lock");
        await within(10000, b.locker.unlock(resource), "B's unlock");
      });
      const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
      assert.equal(lost.length, 1,
        `expected one ERR_LOCK_LOST (A's), got ${JSON.stringify(warnings.map((w) => `${w.code}: ${w.message}`))}`);
      assert.ok(lost[0].message.includes(resource), lost[0].message);
      assert.equal(await observer.exists(resource), 0);
    });

    it('held across a restart that lost its key, taken by nobody: unlock() warns ERR_LOCK_LOST', { timeout: 40000 }, async () => {
      const resource = 'lock:gone-after-restart';
      const a = track(new RedisStorageAdapter({ host: own.host, port: own.port, redlockTTL: 30000 }));
      const warnings = await collectWarnings(async (seen) => {
        await within(10000, a.locker.lock(resource), 'lock');
        await own.restart();
        await within(10000, a.locker.unlock(resource), 'unlock');
        await waitFor(() => seen.some((w) => w.code === 'ERR_LOCK_LOST'), { timeout: 2000, what: 'an ERR_LOCK_LOST warning' })
          .catch(() => {});
      });
      const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
      assert.equal(lost.length, 1, `expected one ERR_LOCK_LOST, got ${JSON.stringify(warnings.map((w) => `${w.code}: ${w.message}`))}`);
      assert.ok(lost[0].message.includes(resource), lost[0].message);
    });
  });
});
