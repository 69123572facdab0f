'use strict';

// RedisClient's defineCommand()/`scripts` and scanStream() family as ioredis's (issue 11,
// item 4): EVALSHA with the EVAL fallback on NOSCRIPT, in pipelines and transactions, with
// callbacks; object-mode Readable streams of SCAN steps that see every element exactly once.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Readable } = require('node:stream');
const { RedisClient } = require('..');
const { closeAll, topologies } = require('./helpers');

/** Every chunk a stream emits, through 'data'/'end' (as ioredis users read them). */
function collect(stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', () => resolve(chunks));
    stream.on('error', reject);
  });
}

/** `[a, b, c, d]` as `[[a, b], [c, d]]`. */
const pairs = (flat) => {
  const out = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
};

const ECHO = { numberOfKeys: 2, lua: 'return {KEYS[1], KEYS[2], ARGV[1], ARGV[2]}' };
const COUNT_KEYS = { lua: "return {#KEYS, #ARGV, redis.call('incr', KEYS[1])}" };

/** SCRIPT FLUSH on the server, or on every master of a cluster (the ioredis observer's). */
async function scriptFlush(observer) {
  const nodes = typeof observer.nodes === 'function' && observer.isCluster ? observer.nodes('master') : [observer];
  await Promise.all(nodes.map((n) => n.script('flush')));
}

for (const topo of topologies()) describe(`RedisClient scripts and scan streams (${topo.name})`, () => {
  let target;
  let client;
  let observer;
  const registry = [];
  const withScripts = (scripts) => {
    const opts = topo.adapterOptions(target);
    if (topo.cluster) return { ...opts, options: { ...(opts.options || {}), scripts } };
    return { ...opts, scripts };
  };
  before(async () => {
    target = await topo.start();
    client = new RedisClient(withScripts({ echoKeys: ECHO }));
    registry.push(client);
    observer = topo.observer(target, registry);
    client.defineCommand('countKeys', COUNT_KEYS);
    observer.defineCommand('echoKeys', ECHO);
    observer.defineCommand('countKeys', COUNT_KEYS);
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  // One slot, so that batches stay on one cluster node.
  const k = (name) => `{scripts}:${name}`;

  it('the `scripts` option and defineCommand: replies as ioredis on the same server', { timeout: 20000 }, async () => {
    await observer.del(k('n'));
    const ours = [await client.echoKeys(k('a'), k('b'), 'x', 7), await client.countKeys(2, k('n'), k('m'), 'v')];
    await observer.del(k('n'));
    const theirs = [await observer.echoKeys(k('a'), k('b'), 'x', 7), await observer.countKeys(2, k('n'), k('m'), 'v')];
    assert.deepEqual(ours, theirs);
    assert.deepEqual(ours, [[k('a'), k('b'), 'x', '7'], [2, 1, 1]]);
    assert.equal(typeof client.echoKeys, 'function');
  });

  it('EVALSHA, then EVAL after SCRIPT FLUSH (NOSCRIPT), then EVALSHA again', { timeout: 20000 }, async () => {
    const lua = 'return ARGV[1] .. "-flushed"';
    client.defineCommand('flushed', { numberOfKeys: 1, lua });
    await scriptFlush(observer);
    assert.equal(await client.flushed(k('f'), 'a'), 'a-flushed');
    // EVAL does not load the script into the cache with SCRIPT LOAD, but it is cached on the
    // node that ran it: the next call is an EVALSHA that finds it.
    assert.equal(await client.flushed(k('f'), 'b'), 'b-flushed');
    await scriptFlush(observer);
    assert.equal(await client.flushed(k('f'), 'c'), 'c-flushed');
  });

  it('a script error rejects with the server error; callbacks get (err, result)', { timeout: 20000 }, async () => {
    client.defineCommand('boom', { numberOfKeys: 1, lua: "return redis.error_reply('BOOM ' .. KEYS[1])" });
    await assert.rejects(client.boom(k('x')), (err) => err.code === 'ERR_REPLY' && /BOOM/.test(err.message));
    const viaCallback = await new Promise((resolve) => client.echoKeys(k('a'), k('b'), 'p', 'q', (err, r) => resolve([err, r])));
    assert.deepEqual(viaCallback, [null, [k('a'), k('b'), 'p', 'q']]);
    const failed = await new Promise((resolve) => client.boom(k('y'), (err, r) => resolve([err, r])));
    assert.match(failed[0].message, /BOOM/);
    assert.equal(failed[1], undefined);
    client.defineCommand('broken', { numberOfKeys: 0, lua: 'return (' });
    await assert.rejects(client.broken(), /compiling|Error/);
    assert.throws(() => client.defineCommand('nolua', {}), (err) => err.code === 'ERR_INVALID_ARG');
  });

  it('scripts in pipeline(), also after SCRIPT FLUSH, as ioredis', { timeout: 20000 }, async () => {
    const build = (c) => c.pipeline().echoKeys(k('a'), k('b'), 1, 2).set(k('p'), 'v').countKeys(1, k('p2'), 'z').get(k('p'));
    await observer.del(k('p'), k('p2'));
    await scriptFlush(observer);
    const ours = await build(client).exec();
    await observer.del(k('p'), k('p2'));
    await scriptFlush(observer);
    const theirs = await build(observer).exec();
    assert.deepEqual(ours, theirs);
    assert.deepEqual(ours, [[null, [k('a'), k('b'), '1', '2']], [null, 'OK'], [null, [1, 1, 1]], [null, 'v']]);
    // A per-command callback and a failing script among the others.
    client.defineCommand('bad', { numberOfKeys: 1, lua: 'return (' });
    let seen;
    const results = await client
      .pipeline()
      .echoKeys(k('a'), k('b'), 'x', 'y', (err, r) => {
        seen = [err, r];
      })
      .bad(k('a'))
      .get(k('p'))
      .exec();
    assert.deepEqual(seen, [null, [k('a'), k('b'), 'x', 'y']]);
    assert.equal(results.length, 3);
    assert.match(results[1][0].message, /compiling/);
    assert.deepEqual(results[2], [null, 'v']);
    // pipeline([[name, ...args]]) takes a defined command by its name, as ioredis.
    assert.deepEqual(await client.pipeline([['echoKeys', k('a'), k('b'), 'c', 'd'], ['get', k('p')]]).exec(), [
      [null, [k('a'), k('b'), 'c', 'd']],
      [null, 'v'],
    ]);
  });

  if (topo.cluster) {
    it('scanStream() on a cluster throws ERR_INVALID_ARG (ioredis Cluster has no scanStream)', () => {
      assert.throws(() => client.scanStream(), (err) => err.code === 'ERR_INVALID_ARG' && /each master/.test(err.message));
    });
  } else {
    it('scripts in multi(), also after SCRIPT FLUSH, as ioredis', { timeout: 20000 }, async () => {
      const build = (c) => c.multi().countKeys(1, k('t'), 'z').echoKeys(k('a'), k('b'), 3, 4).incr(k('t'));
      await observer.del(k('t'));
      await scriptFlush(observer);
      const ours = await build(client).exec();
      await observer.del(k('t'));
      // Not flushed for ioredis: its multi() trusts the scripts it once sent to be still there
      // (`_addedScriptHashes`) and would get NOSCRIPT here; this client loads them every time.
      const theirs = await build(observer).exec();
      assert.deepEqual(ours, theirs);
      assert.deepEqual(ours, [[null, [1, 1, 1]], [null, [k('a'), k('b'), '3', '4']], [null, 2]]);
      const viaCallback = await new Promise((resolve, reject) =>
        client.multi().echoKeys(k('a'), k('b'), 'm', 'n').exec((err, r) => (err ? reject(err) : resolve(r)))
      );
      assert.deepEqual(viaCallback, [[null, [k('a'), k('b'), 'm', 'n']]]);
    });

    it('scanStream() gets every key exactly once, with match, count and type', { timeout: 30000 }, async () => {
      await observer.flushdb();
      const strings = Array.from({ length: 300 }, (_, i) => `scan:str:${i}`);
      const sets = Array.from({ length: 60 }, (_, i) => `scan:set:${i}`);
      const p = observer.pipeline();
      for (const key of strings) p.set(key, 'v');
      for (const key of sets) p.sadd(key, 'm');
      p.set('other:1', 'v');
      await p.exec();

      const stream = client.scanStream({ match: 'scan:*', count: 17 });
      assert.ok(stream instanceof Readable);
      assert.equal(stream.readableObjectMode, true);
      const chunks = await collect(stream);
      assert.ok(chunks.length > 1, 'one chunk per SCAN step');
      assert.ok(chunks.every(Array.isArray));
      const keys = chunks.flat();
      assert.equal(keys.length, new Set(keys).size, 'no key twice');
      assert.deepEqual(keys.sort(), [...strings, ...sets].sort());

      const theirs = (await collect(observer.scanStream({ match: 'scan:*', count: 17 }))).flat().sort();
      assert.deepEqual(keys, theirs);

      const typed = [];
      for await (const chunk of client.scanStream({ match: 'scan:*', type: 'set', count: 50 })) typed.push(...chunk);
      assert.deepEqual(typed.sort(), [...sets].sort());

      const all = (await collect(client.scanStream())).flat();
      assert.equal(all.length, strings.length + sets.length + 1);
    });

    it('the Buffer forms of the scan streams give Buffers', { timeout: 20000 }, async () => {
      await observer.sadd('scanbuf:set', 'a', 'b');
      await observer.hset('scanbuf:hash', 'f', 'v');
      const keys = (await collect(client.scanBufferStream({ match: 'scanbuf:*' }))).flat();
      assert.ok(keys.length === 2 && keys.every(Buffer.isBuffer));
      assert.deepEqual(keys.map(String).sort(), ['scanbuf:hash', 'scanbuf:set']);
      const members = (await collect(client.sscanBufferStream('scanbuf:set'))).flat();
      assert.deepEqual(members.map(String).sort(), ['a', 'b']);
      assert.ok(members.every(Buffer.isBuffer));
      const pairs = (await collect(client.hscanBufferStream('scanbuf:hash'))).flat();
      assert.deepEqual(pairs, [Buffer.from('f'), Buffer.from('v')]);
    });

    it('scanStream(): close() ends it, a server error destroys it with the error', { timeout: 20000 }, async () => {
      const stream = client.scanStream({ count: 10 });
      const chunks = [];
      await new Promise((resolve, reject) => {
        stream.on('data', (chunk) => {
          chunks.push(chunk);
          stream.close();
        });
        stream.on('end', resolve);
        stream.on('error', reject);
      });
      assert.ok(chunks.length >= 1 && chunks.length <= 2);
      const failing = client.scanStream({ type: 'string', count: 'nope' });
      await assert.rejects(collect(failing), (err) => err.code === 'ERR_REPLY');
    });
  }

  it('sscanStream / hscanStream / zscanStream get every element exactly once', { timeout: 30000 }, async () => {
    const set = k('set');
    const hash = k('hash');
    const zset = k('zset');
    await observer.del(set, hash, zset);
    const members = Array.from({ length: 400 }, (_, i) => `m${i}`);
    await observer.sadd(set, ...members);
    await observer.hset(hash, Object.fromEntries(members.map((m, i) => [m, `v${i}`])));
    await observer.zadd(zset, ...members.flatMap((m, i) => [i, m]));

    const setChunks = await collect(client.sscanStream(set, { count: 20 }));
    assert.ok(setChunks.length > 1);
    const got = setChunks.flat();
    assert.equal(got.length, new Set(got).size);
    assert.deepEqual(got.sort(), [...members].sort());

    const matched = (await collect(client.sscanStream(set, { match: 'm1*', count: 30 }))).flat().sort();
    assert.deepEqual(matched, members.filter((m) => m.startsWith('m1')).sort());
    assert.deepEqual(matched, (await collect(observer.sscanStream(set, { match: 'm1*', count: 30 }))).flat().sort());

    const fields = pairs((await collect(client.hscanStream(hash, { count: 25 }))).flat());
    assert.equal(fields.length, members.length);
    assert.deepEqual(
      Object.fromEntries(fields),
      Object.fromEntries(members.map((m, i) => [m, `v${i}`]))
    );
    const theirFields = pairs((await collect(observer.hscanStream(hash, { count: 25 }))).flat());
    assert.deepEqual(Object.fromEntries(fields), Object.fromEntries(theirFields));

    const scored = pairs((await collect(client.zscanStream(zset, { match: 'm2?', count: 15 }))).flat());
    assert.deepEqual(
      scored.sort((a, b) => Number(a[1]) - Number(b[1])),
      members.map((m, i) => [m, String(i)]).filter(([m]) => /^m2.$/.test(m))
    );

    // A missing key: one empty step, then the end.
    assert.deepEqual(await collect(client.hscanStream(k('missing'))), [[]]);
    // A key of the wrong type: the stream errors with the server's WRONGTYPE.
    await assert.rejects(collect(client.zscanStream(set)), /WRONGTYPE/);
  });
});
