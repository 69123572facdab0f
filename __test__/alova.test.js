'use strict';

// alova 3 end to end: a real HTTP server, alova with the fetch adapter, and the adapter as
// l2Cache in restore mode, against a real redis-server.
//
// How alova names l2 keys (alova 3.5, @alova/shared): `'$a.' + alovaInstance.id + method.key`
// (buildNamespacedCacheKey); the adapter adds its keyPrefix in front. Two processes of one service
// share entries when their alova instances have the same `id`; here a second alova instance with a
// second adapter (its own connection) plays the second process. alova stores entries as
// `[data, expireTimestamp, tag?]`, keeps hit-source indexes under `hss.*`, calls `remove` from
// `invalidateCache(method)` and `clear` on every live l2 adapter from `invalidateCache()`.
//
// The suite runs against one redis-server, against a Redis Cluster (3 masters + 3 replicas) and
// against the same cluster with `spreadKeys: true` (every key gets a hash tag of its own:
// `prefix + '{8 hex}' + key`); the cluster variants share one cluster.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { createAlova, invalidateCache } = require('alova');
const adapterFetch = require('alova/fetch');
const RedisStorageAdapter = require('..');
const { closeAll, scanAll, topologies } = require('./helpers');

const EXPIRE = 60000;
const NAMESPACE = 'svc'; // the same alova id in every "process"

for (const topo of topologies({ spreadKeys: true })) describe(`alova end to end (${topo.name})`, () => {
  let redis;
  let observer;
  let httpServer;
  let baseURL;
  const hits = new Map();
  const open = [];
  const alovas = [];

  const hitsOf = (path) => hits.get(path) || 0;

  /** One "process": its own adapter (own connection) and its own alova instance. */
  function processWith(opts = {}) {
    const { keyPrefix = 'e2e:', tag, id = NAMESPACE } = opts;
    const adapter = new RedisStorageAdapter(topo.adapterOptions(redis, { keyPrefix }));
    open.push(adapter);
    const alova = createAlova({
      id,
      baseURL,
      requestAdapter: adapterFetch(),
      responded: (response) => response.json(),
      l2Cache: adapter,
      cacheFor: { GET: { mode: 'restore', expire: EXPIRE, tag } },
      cacheLogger: false,
    });
    alovas.push(alova);
    return { adapter, alova };
  }

  const l2Key = (adapter, method) => topo.redisKey(adapter.keyPrefix, `$a.${method.context.id}${method.key}`);

  before(async () => {
    redis = await topo.start();
    observer = topo.observer(redis, open);
    httpServer = http.createServer((req, res) => {
      const path = new URL(req.url, 'http://x').pathname;
      const n = hitsOf(path) + 1;
      hits.set(path, n);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ path, hit: n, method: req.method, text: 'héllo 世界 👋' }));
    });
    await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    baseURL = `http://127.0.0.1:${httpServer.address().port}`;
  });

  after(async () => {
    // Unregister the alova instances first: invalidateCache() would otherwise reach closed adapters.
    for (const alova of alovas.splice(0)) alova.destroy();
    await closeAll(open);
    httpServer.closeAllConnections();
    await new Promise((resolve) => httpServer.close(resolve));
    await redis?.stop();
  });

  it('caches a GET in Redis that a second process reads without a request', async () => {
    const first = processWith();
    const second = processWith();

    const method = first.alova.Get('/users');
    const fetched = await method.send();
    assert.deepEqual(fetched, { path: '/users', hit: 1, method: 'GET', text: 'héllo 世界 👋' });
    assert.equal(hitsOf('/users'), 1);

    // The entry is in Redis, as alova's [data, expireTimestamp], under keyPrefix + alova's key.
    const key = l2Key(first.adapter, method);
    if (topo.spreadKeys) assert.match(key, /^e2e:\{[0-9a-f]{8}\}\$a\.svc\["GET","\/users",/);
    else assert.ok(key.startsWith('e2e:$a.svc'), key);
    const raw = await observer.get(key);
    assert.ok(raw, `no l2 entry at ${key}; keys: ${await scanAll(observer, '*')}`);
    const [data, expireAt] = JSON.parse(raw);
    assert.deepEqual(data, fetched);
    assert.ok(expireAt > Date.now() && expireAt <= Date.now() + EXPIRE);

    // Its TTL follows alova's expire.
    const pttl = await observer.pttl(key);
    assert.ok(pttl > 0 && pttl <= EXPIRE, `PTTL ${pttl} not in (0, ${EXPIRE}]`);
    assert.ok(pttl > EXPIRE - 10000, `PTTL ${pttl} is not close to ${EXPIRE}`);
    assert.equal(await first.adapter.client.pttl(key) > 0, true);

    // The second process gets it from Redis: no new hit on the HTTP server.
    const secondMethod = second.alova.Get('/users');
    const cached = await secondMethod.send();
    assert.deepEqual(cached, fetched);
    assert.equal(secondMethod.fromCache, true);
    assert.equal(hitsOf('/users'), 1);
  });

  it('shares one entry among many processes reading at once', async () => {
    const writer = processWith();
    await writer.alova.Get('/many', { params: { page: 1 } }).send();
    assert.equal(hitsOf('/many'), 1);
    const readers = Array.from({ length: 8 }, () => processWith());
    const results = await Promise.all(readers.map((p) => p.alova.Get('/many', { params: { page: 1 } }).send()));
    for (const result of results) assert.equal(result.hit, 1);
    assert.equal(hitsOf('/many'), 1);
    // Other parameters are another entry.
    await readers[0].alova.Get('/many', { params: { page: 2 } }).send();
    assert.equal(hitsOf('/many'), 2);
  });

  it('invalidateCache(method) removes the entry from Redis', async () => {
    const first = processWith();
    const second = processWith();
    const method = first.alova.Get('/invalidate-one');
    await method.send();
    await first.alova.Get('/invalidate-two').send();
    const key = l2Key(first.adapter, method);
    assert.equal(await observer.exists(key), 1);

    await invalidateCache(second.alova.Get('/invalidate-one'));
    assert.equal(await observer.exists(key), 0);
    // The other entry stays.
    assert.equal(await observer.exists(l2Key(first.adapter, first.alova.Get('/invalidate-two'))), 1);

    // So the next process asks the HTTP server again.
    const third = processWith();
    const again = await third.alova.Get('/invalidate-one').send();
    assert.equal(again.hit, 2);
    assert.equal(hitsOf('/invalidate-one'), 2);
    assert.equal(await observer.exists(key), 1);
  });

  it('a changed tag makes alova drop the old entry through the adapter', async () => {
    const v1 = processWith({ tag: 'v1' });
    const v2 = processWith({ tag: 'v2' });
    const method = v1.alova.Get('/tagged');
    await method.send();
    assert.equal(JSON.parse(await observer.get(l2Key(v1.adapter, method)))[2], 'v1');
    const fresh = await v2.alova.Get('/tagged').send();
    assert.equal(fresh.hit, 2);
    assert.equal(JSON.parse(await observer.get(l2Key(v1.adapter, method)))[2], 'v2');
  });

  it('hit-source invalidation goes through the adapter (hss.* index entries)', async () => {
    const { adapter, alova } = processWith();
    const target = alova.Get('/profile', { hitSource: 'updateProfile' });
    await target.send();
    const key = l2Key(adapter, target);
    assert.equal(await observer.exists(key), 1);
    const index = await adapter.get('hss.updateProfile');
    assert.deepEqual(index, { [`$a.${NAMESPACE}${target.key}`]: 0 });

    await alova.Post('/profile', { name: 'new' }, { name: 'updateProfile' }).send();
    assert.equal(await observer.exists(key), 0);
    assert.equal(await adapter.get('hss.updateProfile'), undefined);
  });

  it('invalidateCache() clears the adapters\' prefixes and leaves every other key alone', async () => {
    const { adapter, alova } = processWith({ keyPrefix: 'e2e-all:' });
    await alova.Get('/everything').send();
    const key = l2Key(adapter, alova.Get('/everything'));
    assert.equal(await observer.exists(key), 1);

    // Keys that no adapter registered with alova owns.
    const bystander = new RedisStorageAdapter(topo.adapterOptions(redis, { keyPrefix: 'not-alova:' }));
    open.push(bystander);
    await bystander.set('keep', { me: true });
    await observer.set('plain-key', 'untouched');
    await observer.set('e2e', 'prefix without colon');
    await observer.hset('some-hash', 'f', 'v');

    await invalidateCache();

    // (SCAN on every master of a cluster: KEYS would ask one node only.)
    assert.deepEqual(await scanAll(observer, 'e2e-all:*'), []);
    assert.deepEqual(await scanAll(observer, 'e2e:*'), []);
    assert.deepEqual(await bystander.get('keep'), { me: true });
    assert.equal(await observer.get('plain-key'), 'untouched');
    assert.equal(await observer.get('e2e'), 'prefix without colon');
    assert.equal(await observer.hget('some-hash', 'f'), 'v');

    // The cache fills again on the next request.
    const before = hitsOf('/everything');
    await alova.Get('/everything').send();
    assert.equal(hitsOf('/everything'), before + 1);
    assert.equal(await observer.exists(key), 1);
  });
});
