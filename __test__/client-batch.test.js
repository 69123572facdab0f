'use strict';

// RedisClient.pipeline() and multi() as ioredis's (issue 11, item 2): chaining, exec()
// resolving [[err, result], ...] exactly as ioredis does on the same server, a transaction sent
// as MULTI .. EXEC with nothing between, EXECABORT with previousErrors, callbacks.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { RedisClient } = require('..');
const { closeAll, topologies, ioredisFor } = require('./helpers');

/** exec() results with errors as their messages, to compare two clients. */
const plain = (results) =>
  results === null ? null : results.map((r) => (r[0] ? ['ERR', r[0].message.trim()] : r));

for (const topo of topologies()) describe(`RedisClient pipeline and multi (${topo.name})`, () => {
  let target;
  let client;
  let observer;
  const registry = [];
  before(async () => {
    target = await topo.start();
    client = new RedisClient(topo.adapterOptions(target));
    registry.push(client);
    observer = topo.observer(target, registry);
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  // One slot, so that ioredis's Cluster pipeline takes them too.
  const k = (name) => `{batch}:${name}`;

  it('pipeline(): chained commands resolve [[err, result], ...] as ioredis', { timeout: 20000 }, async () => {
    const build = (c) =>
      c.pipeline().set(k('s'), 'v').get(k('s')).hset(k('h'), 'f', '1').hgetall(k('h')).lpush(k('s'), 'x').incr(k('n'));
    await observer.del(k('s'), k('h'), k('n'));
    const ours = await build(client).exec();
    await observer.del(k('s'), k('h'), k('n'));
    const theirs = await build(observer).exec();
    assert.deepEqual(plain(ours), plain(theirs));
    assert.equal(ours[4][0].code, 'ERR_REPLY');
    assert.equal(ours[4].length, 1, 'an error entry is [err], as in ioredis');
  });

  it('pipeline(commands) and exec(callback); the pipeline length', { timeout: 20000 }, async () => {
    const p = client.pipeline([['set', k('a'), '1'], ['get', k('a')]]);
    assert.equal(p.length, 2);
    const results = await new Promise((resolve, reject) => p.exec((err, r) => (err ? reject(err) : resolve(r))));
    assert.deepEqual(results, [[null, 'OK'], [null, '1']]);
    assert.deepEqual(await client.pipeline().exec(), []);
  });

  it('a bad argument fails the whole exec() and sends nothing', { timeout: 20000 }, async () => {
    await observer.del(k('bad'));
    const p = client.pipeline().set(k('bad'), 'x').set(k('bad'), () => {}, 'EX');
    await assert.rejects(p.exec(), (err) => err.code === 'ERR_INVALID_ARG');
    assert.equal(await observer.exists(k('bad')), 0);
  });

  if (topo.cluster) {
    it('multi() on a cluster runs on the node of its keys\' one slot; keys of two slots are refused', async () => {
      await assert.rejects(
        client.multi().set('{tx-a}:1', '1').set('{tx-b}:1', '1').exec(),
        (err) => err.code === 'ERR_INVALID_ARG' && /one slot/.test(err.message)
      );
      await assert.rejects(client.multi().ping().exec(), (err) => err.code === 'ERR_INVALID_ARG' && /needs a key/.test(err.message));
      // Every other slot's node: a transaction on each, in a row.
      for (const tag of ['a', 'b', 'c', 'd', 'e']) {
        assert.deepEqual(await client.multi().set(`{${tag}}:tx`, tag).get(`{${tag}}:tx`).exec(), [[null, 'OK'], [null, tag]]);
      }
    });
  }

  it("multi(): a command's callback gets what queueing it gave ('QUEUED'), as in ioredis", { timeout: 20000 }, async () => {
    const seen = [];
    const results = await client
      .multi()
      .set(k('cb'), 'v', (err, r) => seen.push([err, r]))
      .get(k('cb'), (err, r) => seen.push([err, r]))
      .exec();
    assert.deepEqual(results, [[null, 'OK'], [null, 'v']]);
    assert.deepEqual(seen, [[null, 'QUEUED'], [null, 'QUEUED']]);
    // A command the server refuses: its callback gets the error, exec() rejects EXECABORT.
    const refused = [];
    await assert.rejects(client.multi().set(k('cb'), 'w').call('NOSUCHCMD', (err) => refused.push(err)).exec(), /EXECABORT/);
    assert.equal(refused.length, 1);
    assert.match(refused[0].message, /unknown command/);
  });

  it('multi(): results as ioredis; a runtime error is [err] inside', { timeout: 20000 }, async () => {
    const build = (c) => c.multi().set(k('m'), 'v2').get(k('m')).incr(k('m')).exec();
    const ours = await build(client);
    const theirs = await build(observer);
    assert.deepEqual(plain(ours), plain(theirs));
  });

  it('multi(): a command the server refuses aborts it (EXECABORT, previousErrors), nothing applied', { timeout: 20000 }, async () => {
    await observer.del(k('abort'));
    const err = await client.multi().set(k('abort'), '1').call('NOSUCHCMD').exec().then(
      () => assert.fail('exec() resolved'),
      (e) => e
    );
    assert.match(err.message, /^EXECABORT/);
    assert.equal(err.previousErrors.length, 1);
    assert.match(err.previousErrors[0].message, /unknown command/);
    assert.equal(await observer.exists(k('abort')), 0);
  });

  it('multi(): MULTI .. EXEC go together, in call order with the other commands of the client', { timeout: 20000 }, async () => {
    await observer.del(k('order'));
    // Issued in one tick: the GET after exec() sees the transaction's work, the one before not.
    const before = client.get(k('order'));
    const tx = client.multi();
    for (let i = 0; i < 200; i += 1) tx.incr(k('order'));
    const done = tx.exec();
    const afterwards = client.get(k('order'));
    assert.equal(await before, null);
    const results = await done;
    assert.equal(results.length, 200);
    assert.deepEqual(results[199], [null, 200]);
    assert.equal(await afterwards, '200');
  });
});
