'use strict';

// ioredis's client-level keyPrefix (issue 11, item 4): every key of the client's commands gets
// the prefix (by ioredis's own table of key positions), in commands, pipelines, scripts and
// EVAL; replies are left alone; the adapter's own keyPrefix keeps its meaning and its client is
// not prefixed.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, topologies } = require('./helpers');

for (const topo of topologies()) describe(`RedisClient keyPrefix (${topo.name})`, () => {
  let target;
  let plain;
  let prefixed;
  const registry = [];
  before(async () => {
    target = await topo.start();
    plain = new RedisClient(topo.clientOptions(target));
    const options = topo.cluster
      ? { ...topo.clientOptions(target), options: { ...(topo.clientOptions(target).options || {}), keyPrefix: 'app:' } }
      : { ...topo.clientOptions(target), keyPrefix: 'app:' };
    prefixed = new RedisClient(options);
    registry.push(plain, prefixed);
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  it('commands put the prefix on their keys, and only on keys', async () => {
    await prefixed.set('{kp}a', 'value-a');
    assert.equal(await plain.get('app:{kp}a'), 'value-a');
    assert.equal(await plain.exists('{kp}a'), 0);
    assert.equal(await prefixed.get('{kp}a'), 'value-a');
    await prefixed.mset('{kp}b', 'B', '{kp}c', 'C');
    assert.deepEqual(await plain.mget('app:{kp}b', 'app:{kp}c'), ['B', 'C']);
    await prefixed.hset('{kp}h', 'field', 'v');
    assert.deepEqual(await plain.hgetall('app:{kp}h'), { field: 'v' });
    // A Buffer key gets the prefix as bytes.
    await prefixed.set(Buffer.from('{kp}buf'), 'b');
    assert.equal(await plain.get('app:{kp}buf'), 'b');
    // Values and non-key arguments do not.
    await prefixed.set('{kp}x', 'app-free', 'EX', 100);
    assert.equal(await plain.get('app:{kp}x'), 'app-free');
  });

  it('EVAL keys, defineCommand scripts and pipelines are prefixed too', async () => {
    assert.equal(await prefixed.call('EVAL', 'return KEYS[1]', 1, '{kp}e'), 'app:{kp}e');
    prefixed.defineCommand('keyOf', { numberOfKeys: 1, lua: 'return KEYS[1] .. "=" .. ARGV[1]' });
    assert.equal(await prefixed.keyOf('{kp}s', 'arg'), 'app:{kp}s=arg');
    const results = await prefixed.pipeline().set('{kp}p', '1').get('{kp}p').keyOf('{kp}q', 'z').exec();
    assert.deepEqual(results, [[null, 'OK'], [null, '1'], [null, 'app:{kp}q=z']]);
    assert.equal(await plain.get('app:{kp}p'), '1');
  });

  it("the adapter's keyPrefix stays the adapter's: its client's commands are not prefixed", async () => {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target, { keyPrefix: 'cache:' }));
    registry.push(adapter);
    await adapter.client.set('{kp}raw', 'r');
    assert.equal(await plain.get('{kp}raw'), 'r');
    await adapter.set('k', 1);
    assert.equal(await plain.get(topo.redisKey('cache:', 'k')), '1');
  });
});
