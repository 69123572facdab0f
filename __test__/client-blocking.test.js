'use strict';

// Blocking commands on a connection of their own (issue 11, item 3): BLPOP and XREAD BLOCK wait
// without stalling the client's other commands (ioredis would hold its whole connection), and
// quit() / disconnect() end them too.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, topologies, within } = require('./helpers');

for (const topo of topologies()) describe(`RedisClient blocking commands (${topo.name})`, () => {
  let target;
  const registry = [];
  before(async () => {
    target = await topo.start();
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  it('BLPOP waits while the client goes on with other commands, and gets what is pushed', { timeout: 20000 }, async () => {
    const client = new RedisClient(topo.adapterOptions(target));
    registry.push(client);
    await client.del('{blk}q');
    const popped = client.blpop('{blk}q', 0);
    // The shared connection is not stalled by the waiting BLPOP.
    await within(2000, client.set('{blk}k', 'v'), 'a SET while BLPOP waits');
    assert.equal(await within(2000, client.get('{blk}k'), 'a GET while BLPOP waits'), 'v');
    await client.rpush('{blk}q', 'x');
    assert.deepEqual(await within(5000, popped, 'BLPOP'), ['{blk}q', 'x']);
  });

  it('XREAD BLOCK waits on its own connection too', { timeout: 20000 }, async () => {
    const client = new RedisClient(topo.adapterOptions(target));
    registry.push(client);
    await client.del('{blk}s');
    const read = client.xread('BLOCK', 0, 'STREAMS', '{blk}s', '$');
    assert.equal(await within(2000, client.call('PING'), 'a PING while XREAD blocks'), 'PONG');
    await new Promise((r) => setTimeout(r, 100));
    await client.xadd('{blk}s', '*', 'f', 'v');
    const reply = await within(5000, read, 'XREAD BLOCK');
    assert.equal(reply[0][0], '{blk}s');
  });

  it('a blocking command in a pipeline is refused (it would stall the shared connection)', async () => {
    const client = new RedisClient(topo.adapterOptions(target));
    registry.push(client);
    await assert.rejects(client.pipeline().blpop('{blk}q', 1).exec(), (err) => err.code === 'ERR_INVALID_ARG');
  });

  it('disconnect() ends a waiting BLPOP with ERR_CLOSED; adapter.client blocks the same way', { timeout: 20000 }, async () => {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target));
    const popped = adapter.client.blpop('{blk}never', 0).then(
      () => 'resolved',
      (err) => err.code
    );
    await adapter.set('k', 1);
    assert.equal(await adapter.get('k'), 1);
    await new Promise((r) => setTimeout(r, 100));
    await within(3000, adapter.close(), 'close() with a BLPOP waiting');
    assert.equal(await within(3000, popped, 'the BLPOP to end'), 'ERR_CLOSED');
  });
});
