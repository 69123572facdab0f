'use strict';

// The Buffer form of every command (issue 11, item 4): `getBuffer`, `callBuffer`,
// `hgetallBuffer`, ... resolve Buffers where the plain form resolves strings (status replies
// included, as in ioredis), numbers stay numbers; in pipelines and transactions too.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { RedisClient } = require('..');
const { closeAll, topologies } = require('./helpers');

const BINARY = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80, 0x0a]);

for (const topo of topologies()) describe(`RedisClient Buffer replies (${topo.name})`, () => {
  let target;
  let client;
  const registry = [];
  before(async () => {
    target = await topo.start();
    client = new RedisClient(topo.clientOptions(target));
    registry.push(client);
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  it('getBuffer and callBuffer give the bytes as stored; null and numbers as the plain form', async () => {
    assert.deepEqual(await client.setBuffer('buf:k', BINARY), Buffer.from('OK'));
    const got = await client.getBuffer('buf:k');
    assert.ok(Buffer.isBuffer(got));
    assert.deepEqual(got, BINARY);
    // The plain form decodes as UTF-8 (lossy for these bytes), as ioredis does.
    assert.equal(typeof (await client.get('buf:k')), 'string');
    assert.equal(await client.getBuffer('buf:missing'), null);
    assert.deepEqual(await client.callBuffer('GET', 'buf:k'), BINARY);
    assert.equal(await client.callBuffer('INCR', 'buf:n'), 1);
    assert.equal(await client.incrBuffer('buf:n'), 2);
  });

  it('hgetallBuffer, lrangeBuffer and mgetBuffer: Buffers inside objects and arrays', async () => {
    await client.del('{buf}h', '{buf}l');
    await client.hset('{buf}h', 'bin', BINARY, 'text', 'héllo');
    const h = await client.hgetallBuffer('{buf}h');
    assert.deepEqual(Object.keys(h).sort(), ['bin', 'text']);
    assert.deepEqual(h.bin, BINARY);
    assert.deepEqual(h.text, Buffer.from('héllo'));
    await client.rpush('{buf}l', BINARY, 'x');
    assert.deepEqual(await client.lrangeBuffer('{buf}l', 0, -1), [BINARY, Buffer.from('x')]);
    await client.set('{buf}a', BINARY);
    assert.deepEqual(await client.mgetBuffer('{buf}a', '{buf}none'), [BINARY, null]);
  });

  it('a callback gets the Buffer', async () => {
    await client.set('buf:cb', BINARY);
    const got = await new Promise((res, rej) => client.getBuffer('buf:cb', (e, v) => (e ? rej(e) : res(v))));
    assert.deepEqual(got, BINARY);
  });

  it('pipeline(): Buffer forms beside plain ones, each reply as its command asked', async () => {
    await client.set('{buf}p', BINARY);
    const results = await client
      .pipeline()
      .getBuffer('{buf}p')
      .get('{buf}p')
      .callBuffer('strlen', '{buf}p')
      .hgetallBuffer('{buf}h')
      .exec();
    assert.deepEqual(results[0], [null, BINARY]);
    assert.equal(typeof results[1][1], 'string');
    assert.deepEqual(results[2], [null, BINARY.length]);
    assert.deepEqual(results[3][1].bin, BINARY);
  });

  if (!topo.cluster) {
    it('multi(): the EXEC reply carries Buffers where asked', async () => {
      await client.set('{buf}m', BINARY);
      const results = await client.multi().getBuffer('{buf}m').get('{buf}m').setBuffer('{buf}m2', 'v').exec();
      assert.deepEqual(results[0], [null, BINARY]);
      assert.equal(typeof results[1][1], 'string');
      assert.deepEqual(results[2], [null, Buffer.from('OK')]);
    });
  }
});
