'use strict';

// Redis Sentinel (issue 12, item 2): the adapter and RedisClient find the master through the
// sentinels, follow a failover (SENTINEL FAILOVER, and SIGKILL of the master) under traffic with
// every call settled, call order kept and writes on the new master, read from a replica with
// `role: 'slave'`, and fail clearly for a wrong group name and for sentinels that are all down.
// A real topology: 1 master + 2 replicas + 3 sentinels (quorum 2), passwords on both.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { startSentinel, freePort } = require('./servers');
const { closeAll, rejectsWithCode, within, waitFor } = require('./helpers');

const PASSWORD = 'data-secret-pw';
const SENTINEL_PASSWORD = 'sentinel-secret-pw';
const CODES = ['ERR_CONNECTION', 'ERR_TIMEOUT', 'ERR_REPLY', 'ERR_CLOSED'];

describe('Redis Sentinel', () => {
  let topo;
  const registry = [];
  const options = (extra = {}) => ({
    sentinels: topo.sentinelNodes,
    name: topo.name,
    password: PASSWORD,
    sentinelPassword: SENTINEL_PASSWORD,
    ...extra,
  });
  before(async () => {
    topo = await startSentinel({ password: PASSWORD, sentinelPassword: SENTINEL_PASSWORD });
  });
  after(async () => {
    await closeAll(registry);
    await topo.stop();
  });

  it('the adapter and its client reach the master the sentinels name; locks work on it', async () => {
    const adapter = new RedisStorageAdapter(options());
    registry.push(adapter);
    await adapter.set('s:k', { v: 1 });
    assert.deepEqual(await adapter.get('s:k'), { v: 1 });
    const master = await topo.masterAddress();
    assert.equal(await adapter.client.call('role').then((r) => r[0]), 'master');
    const port = await adapter.client.config('GET', 'port').then((r) => Number(r[1]));
    assert.equal(port, master.port);
    await adapter.locker.lock('s:resource');
    await adapter.locker.unlock('s:resource');
  });

  it("role 'slave' reads from a replica", async () => {
    const client = new RedisClient(options({ role: 'slave' }));
    // After the failovers below, a replica the sentinels name may be a master for a moment.
    client.on('error', () => {});
    registry.push(client);
    const role = await client.call('role');
    assert.equal(role[0], 'slave');
    const replicaPorts = topo.replicas.map((r) => r.port).concat(topo.master.port);
    const port = await client.config('GET', 'port').then((r) => Number(r[1]));
    assert.ok(replicaPorts.includes(port));
    assert.notEqual(port, (await topo.masterAddress()).port);
  });

  it('failoverDetector: on +switch-master the client moves to the new master at once', { timeout: 90000 }, async () => {
    const client = new RedisClient(options({ failoverDetector: true }));
    client.on('error', () => {});
    registry.push(client);
    const portOf = () => client.config('GET', 'port').then((r) => Number(r[1]));
    const before = await topo.masterAddress();
    assert.equal(await portOf(), before.port);
    // Let the detector subscribe before the failover.
    await new Promise((r) => setTimeout(r, 500));
    const after = await topo.failover();
    // The sentinels demote the old master (and close its clients) only seconds later: a client
    // without the detector would still be there.
    const moved = Date.now();
    await within(4000, (async () => {
      while ((await portOf().catch(() => 0)) !== after.port) await new Promise((r) => setTimeout(r, 20));
    })(), 'the move to the new master');
    const oldRole = await topo.serverAt(before).command('ROLE');
    console.log(`# failoverDetector: on the new master ${Date.now() - moved} ms after the failover was seen; the old one says ${oldRole[0]}`);
    assert.equal(await client.call('role').then((r) => r[0]), 'master');
    await topo.waitReplicas();
  });

  /**
   * RPUSHes 0, 1, 2... one after another with bursts beside them until `fault()` resolved and a
   * push succeeded on the new master; every call settles, failures carry codes, and the list
   * on the new master is in call order.
   */
  async function underTraffic(fault) {
    const client = new RedisClient(options({ commandTimeout: 2000 }));
    client.on('error', () => {});
    registry.push(client);
    const key = `s:list:${Date.now()}`;
    await client.del(key);
    let i = 0;
    let stop = false;
    const settled = [];
    const codes = new Map();
    const push = async () => {
      const n = i++;
      try {
        await client.rpush(key, String(n));
        settled.push(n);
      } catch (err) {
        assert.ok(CODES.includes(err.code), `a failure without a known code: ${err.code} ${err.message}`);
        assert.ok(!String(err.message).includes(PASSWORD) && !String(err.message).includes(SENTINEL_PASSWORD));
        codes.set(err.code, (codes.get(err.code) || 0) + 1);
      }
    };
    const lanes = Array.from({ length: 4 }, async () => {
      while (!stop) await push();
    });
    await new Promise((r) => setTimeout(r, 300));
    const before = await topo.masterAddress();
    const after = await fault(before);
    const newMaster = topo.serverAt(after);
    // Writes land on the new master through the same client (once the sentinels demoted the
    // old master and closed its connections, or the client's socket to it failed).
    await within(60000, (async () => {
      for (;;) {
        const count = settled.length;
        await push();
        const list = await newMaster.command('LRANGE', key, '-1', '-1');
        if (settled.length > count && list.map(Number).includes(settled[settled.length - 1])) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(), 'a write on the new master');
    stop = true;
    await within(10000, Promise.all(lanes), 'every call settles');
    const list = (await newMaster.command('LRANGE', key, '0', '-1')).map(Number);
    for (let j = 1; j < list.length; j++) {
      assert.ok(list[j] > list[j - 1], `call order: ${list[j - 1]} before ${list[j]} in ${list.slice(Math.max(0, j - 5), j + 5)}`);
    }
    assert.equal(await client.call('role').then((r) => r[0]), 'master');
    return { settled: settled.length, codes: Object.fromEntries(codes) };
  }

  it('follows SENTINEL FAILOVER under traffic', { timeout: 90000 }, async () => {
    const outcome = await underTraffic(() => topo.failover());
    console.log(`# sentinel failover: ${JSON.stringify(outcome)}`);
    await topo.waitReplicas();
  });

  it('follows a SIGKILL of the master under traffic', { timeout: 90000 }, async () => {
    const outcome = await underTraffic(async (before) => {
      await topo.serverAt(before).kill('SIGKILL');
      return topo.waitMaster((a) => a.port !== before.port, 60000);
    });
    console.log(`# sentinel SIGKILL: ${JSON.stringify(outcome)}`);
  });

  it('a wrong group name fails clearly, within bounds, with no password in it', async () => {
    const client = new RedisClient(options({ name: 'no-such-group', maxRetriesPerRequest: 1 }));
    client.on('error', () => {});
    registry.push(client);
    await within(20000, rejectsWithCode(client.get('k'), 'ERR_CONNECTION', { mentions: ['no-such-group'], secrets: [PASSWORD, SENTINEL_PASSWORD] }));
  });

  it('sentinels that are all down fail clearly, within bounds', async () => {
    const dead = [{ host: '127.0.0.1', port: await freePort() }, { host: '127.0.0.1', port: await freePort() }];
    const client = new RedisClient(options({ sentinels: dead, maxRetriesPerRequest: 1 }));
    client.on('error', () => {});
    registry.push(client);
    await within(20000, rejectsWithCode(client.get('k'), 'ERR_CONNECTION', { mentions: ['sentinels'], secrets: [PASSWORD, SENTINEL_PASSWORD] }));
  });

  it('the options that are functions: preferredSlaves, natMap, sentinelRetryStrategy', { timeout: 60000 }, async () => {
    // preferredSlaves as a function picks among the replicas that are up.
    let chosen = null;
    const picky = new RedisClient(options({
      role: 'slave',
      preferredSlaves: (slaves) => {
        assert.ok(slaves.length > 0 && slaves.every((s) => s.ip && s.port && !/s_down|o_down|disconnected/.test(s.flags)));
        chosen = slaves[slaves.length - 1];
        return chosen;
      },
    }));
    picky.on('error', () => {});
    registry.push(picky);
    assert.equal((await picky.call('role'))[0], 'slave');
    const port = await picky.config('GET', 'port').then((r) => Number(r[1]));
    assert.equal(port, Number(chosen.port));
    // natMap as a function is asked with "host:port" as the sentinel gives it.
    const asked = [];
    const mapped = new RedisClient(options({ natMap: (key) => { asked.push(key); return null; } }));
    registry.push(mapped);
    await mapped.ping();
    const master = await topo.masterAddress();
    assert.ok(asked.includes(`${master.host}:${master.port}`), `natMap saw ${asked}`);
    // A function for one option leaves the others as they are: without sentinelRetryStrategy,
    // retryStrategy goes on when no sentinel answers (the connection does not end).
    const onlyNat = new RedisClient(options({
      sentinels: [{ host: '127.0.0.1', port: await freePort() }],
      maxRetriesPerRequest: 1,
      natMap: () => null,
    }));
    onlyNat.on('error', () => {});
    registry.push(onlyNat);
    await within(20000, rejectsWithCode(onlyNat.get('k'), 'ERR_CONNECTION'));
    assert.notEqual(onlyNat.status, 'end');
    // sentinelRetryStrategy paces the attempts in which no sentinel answered; null gives up.
    const times = [];
    const dead = [{ host: '127.0.0.1', port: await freePort() }];
    const giving = new RedisClient(options({
      sentinels: dead,
      maxRetriesPerRequest: null,
      sentinelRetryStrategy: (n) => { times.push(n); return n < 3 ? 10 : null; },
    }));
    giving.on('error', () => {});
    registry.push(giving);
    await within(20000, rejectsWithCode(giving.get('k'), 'ERR_CONNECTION', { mentions: ['sentinelRetryStrategy'] }));
    assert.deepEqual(times, [1, 2, 3]);
    assert.equal(giving.status, 'end');
  });

  it('sentinelRetryStrategy: null ends the connection when no sentinel answers, as in ioredis', { timeout: 20000 }, async () => {
    const dead = [{ host: '127.0.0.1', port: await freePort() }];
    const client = new RedisClient(options({ sentinels: dead, sentinelRetryStrategy: null }));
    const errors = [];
    client.on('error', (err) => errors.push(err.message));
    registry.push(client);
    await within(10000, rejectsWithCode(client.get('k'), 'ERR_CONNECTION', { mentions: ['are unreachable'] }));
    await within(5000, new Promise((resolve) => (client.status === 'end' ? resolve() : client.once('end', resolve))));
    // The events come on their own channel, maybe after the rejection.
    await waitFor(() => errors.length > 0, { what: 'an error event' });
    assert.ok(errors.some((m) => /are unreachable/.test(m)), errors.join('; '));
  });

  it('options: a missing name and a wrong role are refused at construction', () => {
    assert.throws(() => new RedisClient({ sentinels: topo.sentinelNodes }), (e) => e.code === 'ERR_INVALID_OPTION' && /`name`/.test(e.message));
    assert.throws(() => new RedisClient(options({ role: 'primary' })), (e) => e.code === 'ERR_INVALID_OPTION' && /`role`/.test(e.message));
  });
});
