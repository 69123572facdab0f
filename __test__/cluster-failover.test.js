'use strict';

// A master failover under traffic: a 3 masters + 3 replicas cluster with a short node timeout,
// 20 lanes of set/get (half through an adapter with the defaults, half through one with a short
// commandTimeout), one master SIGKILLed mid-traffic, its replica promoted. What must hold: no
// crash, no hang; every failed operation carries a documented error code; the same adapters work
// again after the promotion (none is recreated); the topology follows (nodes() after clear());
// clear() and locks work on the new topology. A lock held across the failover is either kept
// (still excluding) or reported lost: which one is logged.
//
// The counts depend on timing (this machine is shared), so they are logged, not asserted:
//   failover: N ok, M failed (codes ...), recovered after X ms
// ("recovered after": from the kill to the end of the first success after the last failed or
// stalled (> 1 s) operation of the slowest lane).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { startCluster } = require('./servers');
const { ERROR_CODES, within, waitFor, closeAll, keySlot, slotOwners, ioredisClusterFor, errorText } = require('./helpers');

const NODE_TIMEOUT = 1500; // ms: --cluster-node-timeout, so that the replica takes over in seconds
const LANES = 20;
const RUN_MS = 15000; // traffic at least this long...
const AFTER_PROMOTION_MS = 6000; // ...and at least this long after the promotion
const KILL_AFTER_MS = 3000;
const OP_HANG_MS = 30000; // an operation still pending after this is a hang

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('Redis Cluster failover', () => {
  let cluster;
  let observer;
  const open = [];

  before(async () => {
    cluster = await startCluster({ nodeTimeout: NODE_TIMEOUT });
    observer = ioredisClusterFor(cluster, {}, open);
  });
  after(async () => {
    await closeAll(open);
    await cluster?.stop();
  });

  it('keeps one adapter serving through a master failover', { timeout: 150000 }, async () => {
    const owners = await slotOwners(observer);
    const adapter = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'fo:', redlockTTL: 2000 });
    open.push(adapter);
    await adapter.set('warm', 1);
    const mastersBefore = adapter.client.nodes('master');
    assert.equal(mastersBefore.length, 3);

    // The victim: a master; its replica from its ROLE reply.
    const victim = cluster.servers.find((s) => s.port === mastersBefore[0].options.port);
    const role = await victim.command('ROLE');
    assert.equal(role[0], 'master');
    assert.equal(role[2].length, 1, `the victim has ${role[2].length} replicas`);
    const replica = cluster.servers.find((s) => s.port === Number(role[2][0][1]));
    const survivors = cluster.servers.filter((s) => s !== victim);
    const victimName = `${victim.host}:${victim.port}`;

    // A lock on a resource of the victim's slots, held across the failover.
    let resource = null;
    for (let i = 0; resource === null; i += 1) if (owners[keySlot(`fo:lock:${i}`)] === victimName) resource = `fo:lock:${i}`;
    // (The lock key is the resource itself: no keyPrefix.)
    const warnings = [];
    const onWarning = (w) => warnings.push(w);
    process.on('warning', onWarning);
    await adapter.locker.lock(resource);

    // Traffic: each lane writes and reads back its own keys (over every master). Even lanes go
    // through `adapter` (defaults: redis-rs retries a command through the failover, so it may
    // stall rather than fail); odd lanes through `hasty`, an adapter with a 300 ms commandTimeout
    // and few redirections, whose operations fail during the failover, to check the codes.
    const hasty = new RedisStorageAdapter({
      nodes: cluster.nodes,
      keyPrefix: 'fo:',
      options: { redisOptions: { commandTimeout: 300 }, maxRedirections: 2, retryDelayOnFailover: 50 },
    });
    open.push(hasty);
    await hasty.set('warm', 1);
    const STALL_MS = 1000; // an operation slower than this counts as stalled
    const t0 = Date.now();
    let killedAt = null;
    let promotedAt = null;
    let stopAt = t0 + RUN_MS;
    const newStats = () => ({ ok: 0, failed: 0, stalled: 0, slowest: 0, codes: new Map(), samples: new Map() });
    const stats = { patient: newStats(), hasty: newStats(), uncoded: [], wrong: [] };
    const lanes = Array.from({ length: LANES }, (_, n) => ({
      name: n % 2 === 0 ? 'patient' : 'hasty',
      through: n % 2 === 0 ? adapter : hasty,
      lastTrouble: null, // end of the last failed or stalled operation
      recoveredAt: null, // end of the first success after it
      failures: 0,
      okAfterPromotion: 0,
    }));

    async function op(lane, fn) {
      const st = stats[lane.name];
      const started = Date.now();
      let ok = true;
      try {
        await within(OP_HANG_MS, fn(), 'a set/get during the failover');
        st.ok += 1;
      } catch (err) {
        ok = false;
        st.failed += 1;
        lane.failures += 1;
        const code = err && err.code;
        st.codes.set(code, (st.codes.get(code) || 0) + 1);
        if (!st.samples.has(code)) st.samples.set(code, String(err && err.message).slice(0, 160));
        if (!ERROR_CODES.has(code)) stats.uncoded.push(errorText(err).split('\n')[0]);
      }
      const now = Date.now();
      const took = now - started;
      st.slowest = Math.max(st.slowest, took);
      if (!ok || took > STALL_MS) {
        if (ok) st.stalled += 1;
        lane.lastTrouble = now;
        lane.recoveredAt = null;
      } else {
        if (lane.lastTrouble !== null && lane.recoveredAt === null) lane.recoveredAt = now;
        if (promotedAt !== null) lane.okAfterPromotion += 1;
      }
      return ok;
    }

    async function runLane(n) {
      const lane = lanes[n];
      for (let i = 0; Date.now() < stopAt; i += 1) {
        const key = `lane${n}:${i % 25}`;
        const value = [{ lane: n, i }, Date.now() + 60000];
        let ok = await op(lane, () => lane.through.set(key, value));
        if (ok) {
          ok = await op(lane, async () => {
            const back = await lane.through.get(key);
            // Right after a successful set, the lane's own key reads back what it wrote.
            if (!back || back[0].i !== i) stats.wrong.push(`${key}: wrote i=${i}, read ${JSON.stringify(back)}`);
          });
        }
        if (!ok) await sleep(20); // a client that got an error does not spin
      }
    }

    async function chaos() {
      await sleep(KILL_AFTER_MS);
      await victim.kill('SIGKILL');
      killedAt = Date.now();
      // The promotion: the replica says it is a master, and the survivors see the cluster as ok.
      await waitFor(
        async () => {
          const r = await replica.command('ROLE');
          if (r[0] !== 'master') return false;
          const infos = await Promise.all(survivors.map((s) => s.command('CLUSTER', 'INFO')));
          return infos.every((text) => /cluster_state:ok/.test(text));
        },
        { timeout: 60000, interval: 100, what: 'the replica promoted and the cluster ok' },
      );
      promotedAt = Date.now();
      stopAt = Math.max(stopAt, promotedAt + AFTER_PROMOTION_MS);
    }

    await within(120000, Promise.all([chaos(), ...lanes.map((_, n) => runLane(n))]), 'the traffic through the failover');

    const total = (k) => stats.patient[k] + stats.hasty[k];
    const codesOf = (st) => [...st.codes].map(([c, n]) => `${c} x${n}`).join(', ') || 'none';
    const allCodes = new Map([...stats.patient.codes]);
    for (const [c, n] of stats.hasty.codes) allCodes.set(c, (allCodes.get(c) || 0) + n);
    const troubled = lanes.filter((l) => l.lastTrouble !== null);
    const recoveredAfter = Math.max(0, ...troubled.map((l) => (l.recoveredAt ?? Date.now()) - killedAt));
    console.log(
      `failover: ${total('ok')} ok, ${total('failed')} failed (codes ${codesOf({ codes: allCodes })}), ` +
        `recovered after ${recoveredAfter} ms (promotion ${promotedAt - killedAt} ms after the kill; ` +
        `${troubled.length} of ${LANES} lanes failed or stalled, all recovered: ${troubled.every((l) => l.recoveredAt !== null)})`,
    );
    for (const name of ['patient', 'hasty']) {
      const st = stats[name];
      console.log(
        `failover (${name} adapter): ${st.ok} ok, ${st.failed} failed (codes ${codesOf(st)}), ` +
          `${st.stalled} stalled > ${STALL_MS} ms, slowest ${st.slowest} ms` +
          [...st.samples].map(([c, m]) => `; ${c}: ${m}`).join(''),
      );
    }

    // Every failure has a documented code.
    assert.deepEqual(stats.uncoded, [], 'errors without a documented code');
    // The hasty adapter did meet the failover (else this test checked no code at all).
    assert.ok(stats.hasty.failed > 0 || stats.hasty.stalled > 0, 'the failover went unnoticed by the hasty adapter');
    // Reads right after a successful write see it.
    assert.deepEqual(stats.wrong.slice(0, 5), [], `${stats.wrong.length} reads did not see the lane's own write`);
    // Each lane works again after the promotion, through the same adapter, and ends in success.
    for (const [n, l] of lanes.entries()) {
      assert.ok(l.okAfterPromotion > 0, `lane ${n} (${l.name}) never succeeded after the promotion`);
      assert.ok(l.lastTrouble === null || l.recoveredAt !== null, `lane ${n} (${l.name}) ended on a failure`);
    }

    // Every slot works: the killed master's slots are served by the promoted replica.
    const keys = Array.from({ length: 200 }, (_, i) => `after:${i}`);
    await within(30000, Promise.all(keys.map((k) => adapter.set(k, k))), 'sets after the failover');
    assert.deepEqual(await Promise.all(keys.map((k) => adapter.get(k))), keys);
    assert.ok(keys.some((k) => owners[keySlot(`fo:${k}`)] === victimName), 'no key of the failed-over slots was tried');

    // The topology follows (re-read by clear()); clear() reaches every live master.
    await within(30000, adapter.clear(), 'clear() after the failover');
    const mastersAfter = adapter.client.nodes('master').map((n) => n.options.port).sort();
    assert.equal(mastersAfter.length, 3, JSON.stringify(adapter.client.nodes()));
    assert.ok(mastersAfter.includes(replica.port), `the promoted replica ${replica.port} is not a master: ${mastersAfter}`);
    assert.ok(!mastersAfter.includes(victim.port), `the killed master ${victim.port} is still listed: ${mastersAfter}`);
    for (const k of keys.slice(0, 20)) assert.equal(await adapter.get(k), undefined, `clear() left ${k}`);

    // The lock held across the failover: still excluding, or reported lost?
    const contender = new RedisStorageAdapter({ nodes: cluster.nodes, redlockOptions: { retryCount: 0 } });
    open.push(contender);
    let contenderGotIt = false;
    for (let i = 0; i < 8 && !contenderGotIt; i += 1) {
      try {
        await contender.locker.lock(resource);
        contenderGotIt = true;
        await contender.locker.unlock(resource);
      } catch (err) {
        assert.equal(err.code, 'ERR_LOCK_NOT_ACQUIRED', errorText(err));
        await sleep(250);
      }
    }
    await within(20000, adapter.locker.unlock(resource), 'unlock of the lock held across the failover');
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    const lost = warnings.filter((w) => w.code === 'ERR_LOCK_LOST');
    const verdict = contenderGotIt
      ? lost.length > 0
        ? 'another holder got it, and the holder reported it lost (ERR_LOCK_LOST)'
        : 'another holder got it WITHOUT an ERR_LOCK_LOST report (silent loss of exclusion)'
      : lost.length > 0
        ? 'kept excluding, but reported lost (ERR_LOCK_LOST) at unlock'
        : 'kept excluding (extended through the failover), unlocked cleanly';
    console.log(`failover: a lock held across it ${verdict}; warnings: ${warnings.map((w) => w.code).join(', ') || 'none'}`);

    // Locking works after the failover: on the failed-over slots, and over several slots.
    const fresh = new RedisStorageAdapter({ nodes: cluster.nodes, redlockOptions: { retryCount: 20, retryDelay: 100 } });
    open.push(fresh);
    await within(20000, fresh.locker.lock(resource), 'a lock on the failed-over slots');
    assert.match(await observer.get(resource), /^[0-9a-f]{32}$/);
    await rejectsOnce(contender, resource);
    await fresh.locker.unlock(resource);
    const multi = ['fo:m:a', 'fo:m:b', 'fo:m:c', resource];
    await within(20000, adapter.locker.lock(multi), 'a multi-slot lock with the adapter that lived through the failover');
    await adapter.locker.unlock(multi);
    for (const r of multi) assert.equal(await observer.exists(r), 0);
  });
});

/** `adapter`'s one-shot lock on `resource` is refused. */
async function rejectsOnce(adapter, resource) {
  await assert.rejects(adapter.locker.lock(resource), (err) => err.code === 'ERR_LOCK_NOT_ACQUIRED');
}
