'use strict';

// How alova's cache keys spread over a Redis Cluster (3 masters + 3 replicas), with the default
// key layout and with `spreadKeys: true`.
//
// alova 3 names an l2 entry `'$a.' + alova.id + method.key` (@alova/shared buildNamespacedCacheKey),
// where method.key is `JSON.stringify([type, url, params, data, headers])`, e.g.
// `["GET","/users",{"page":1},null,{}]`. Redis Cluster hashes a key by its hash tag, the text
// between the first `{` and the next `}`: for alova keys that is the parameter object
// (`"page":1`), so every entry with the same parameters lands in ONE slot whatever its URL (an
// entry without parameters has `{}` first, an empty tag, and is hashed whole). `spreadKeys: true`
// puts a tag of the key itself after the prefix (`alova:{8 hex}<key>`), so entries spread.
//
// The keys here come from real alova Method objects (createAlova + alova.Get), not from a copy of
// alova's format.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createAlova } = require('alova');
const adapterFetch = require('alova/fetch');
const RedisStorageAdapter = require('..');
const { startCluster } = require('./servers');
const { closeAll, keySlot, spreadKey, masterNodes, ioredisClusterFor, scanAll, throwsWithCode } = require('./helpers');

const TOTAL = 10000;

/** A small seeded PRNG (mulberry32), so that the key set is the same on every run. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `TOTAL` distinct l2 keys (without the adapter's prefix) of a plausible API: ~50 URLs, list
 * endpoints with page 1-20 (and often a page size), detail endpoints by id in the path or as
 * `{ id }`, searches with terms, filtered lists, and parameterless endpoints.
 */
function alovaKeys() {
  const alova = createAlova({ id: 'shop', baseURL: 'https://api.example.com', requestAdapter: adapterFetch(), cacheLogger: false });
  const random = prng(20240601);
  const pick = (list) => list[Math.floor(random() * list.length)];
  const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
  const resources = ['users', 'orders', 'products', 'categories', 'reviews', 'carts', 'coupons', 'invoices', 'shipments', 'warehouses',
    'suppliers', 'brands', 'tags', 'articles', 'comments', 'notifications', 'payments', 'refunds', 'subscriptions', 'plans'];
  const terms = ['phone', 'red shoes', 'laptop 16gb', 'gift', 'organic tea', 'usb-c', 'winter jacket', 'desk lamp', 'été', '手机', 'kids', 'sale'];
  const sorts = ['price', '-price', 'created', '-rating', 'name'];
  // ~50 URLs: a list and a detail URL per resource, and a few others.
  const listUrls = resources.map((r) => `/${r}`);
  const searchUrls = ['/search', '/products/search', '/users/search', '/articles/search'];
  const staticUrls = ['/me', '/config', '/feature-flags', '/menu', '/countries', '/currencies'];
  const keys = new Set();
  while (keys.size < TOTAL) {
    const kind = random();
    let method;
    if (kind < 0.3) {
      // A paged list: { page } or { page, pageSize }.
      const params = random() < 0.5 ? { page: int(1, 20) } : { page: int(1, 20), pageSize: pick([10, 20, 50]) };
      method = alova.Get(pick(listUrls), { params });
    } else if (kind < 0.5) {
      // A detail, id in the path, no params.
      method = alova.Get(`/${pick(resources)}/${int(1, 5000)}`);
    } else if (kind < 0.62) {
      // A detail by { id }.
      method = alova.Get(`/${pick(resources).replace(/s$/, '')}`, { params: { id: int(1, 5000) } });
    } else if (kind < 0.77) {
      method = alova.Get(pick(searchUrls), { params: { q: pick(terms), page: int(1, 20) } });
    } else if (kind < 0.9) {
      method = alova.Get(pick(listUrls), { params: { category: int(1, 40), sort: pick(sorts), page: int(1, 10) } });
    } else if (kind < 0.95) {
      method = alova.Get(`/users/${int(1, 5000)}/orders`, { params: { page: int(1, 5) } });
    } else {
      method = alova.Get(pick(staticUrls), { params: random() < 0.5 ? undefined : { lang: pick(['en', 'fr', 'zh', 'de']) } });
    }
    keys.add(`$a.${method.context.id}${method.key}`);
  }
  return [...keys];
}

describe('alova keys on a Redis Cluster', () => {
  let cluster;
  let observer;
  let keys;
  const open = [];

  before(async () => {
    cluster = await startCluster();
    observer = ioredisClusterFor(cluster, {}, open);
    keys = alovaKeys();
  });
  after(async () => {
    await closeAll(open);
    await cluster?.stop();
  });

  /** Keys under `prefix` on each master, the slots they use and the most keys in one slot. */
  async function distribution(prefix) {
    const perMaster = [];
    const perSlot = new Map();
    for (const node of await masterNodes(observer)) {
      const found = await scanAll(node, `${prefix}*`);
      perMaster.push(found.length);
      for (const k of found) perSlot.set(keySlot(k), (perSlot.get(keySlot(k)) || 0) + 1);
    }
    const busiest = Math.max(0, ...perSlot.values());
    return { perMaster, total: perMaster.reduce((a, b) => a + b, 0), slots: perSlot.size, busiest };
  }
  const summary = (d) =>
    `${d.perMaster.join('/')} (${d.perMaster.map((n) => `${((100 * n) / d.total).toFixed(1)}%`).join('/')}); ` +
    `slots used: ${d.slots}; most keys in one slot: ${d.busiest}`;

  async function storeAll(adapter) {
    for (let i = 0; i < keys.length; i += 1000) {
      await Promise.all(keys.slice(i, i + 1000).map((k, j) => adapter.set(k, [{ row: i + j }, Date.now() + 600000])));
    }
  }

  it('the generated keys are alova\'s own, and this file computes slots as Redis does', async () => {
    assert.equal(keys.length, TOTAL);
    assert.ok(keys.some((k) => k === '$a.shop["GET","/users",{"page":1},null,{}]'), 'a plain paged list key');
    assert.ok(keys.some((k) => /^\$a\.shop\["GET","\/[a-z]+\/\d+",\{\},null,\{\}\]$/.test(k)), 'a detail key without params');
    const urls = new Set(keys.map((k) => JSON.parse(k.slice('$a.shop'.length))[1].replace(/\/\d+/g, '/:id')));
    assert.ok(urls.size >= 45, `only ${urls.size} URL shapes`);
    const sample = keys.filter((_, i) => i % 500 === 0).flatMap((k) => [`alova:${k}`, spreadKey('alova:', k)]);
    const fromRedis = await Promise.all(sample.map((k) => observer.cluster('KEYSLOT', k)));
    assert.deepEqual(sample.map(keySlot), fromRedis);
  });

  it('default layout: stores all 10k keys as keyPrefix + key; logs how they spread', { timeout: 120000 }, async () => {
    const adapter = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'dflt:' });
    open.push(adapter);
    await storeAll(adapter);
    const d = await distribution('dflt:');
    console.log(`keys per master (default): ${summary(d)}`);
    assert.equal(d.total, TOTAL, 'not every key was stored');
    assert.equal(d.perMaster.length, 3);
    // Exactly prefix + key, readable by anyone who knows alova's key.
    for (const k of keys.slice(0, 50)) assert.ok(await observer.exists(`dflt:${k}`), k);
    assert.deepEqual(await adapter.get(keys[123]), [{ row: 123 }, JSON.parse(await observer.get(`dflt:${keys[123]}`))[1]]);
    // The parameter object is the hash tag: same params, same slot, whatever the URL.
    assert.equal(
      keySlot('dflt:$a.shop["GET","/users",{"page":3},null,{}]'),
      keySlot('dflt:$a.shop["GET","/orders",{"page":3},null,{}]'),
    );
    await adapter.clear();
    assert.equal((await distribution('dflt:')).total, 0);
  });

  it('spreadKeys: stores all 10k keys as keyPrefix + {8 hex} + key; every master holds >= 20%', { timeout: 120000 }, async () => {
    const adapter = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'sprd:', spreadKeys: true });
    open.push(adapter);
    await storeAll(adapter);
    const d = await distribution('sprd:');
    console.log(`keys per master (spreadKeys): ${summary(d)}`);
    assert.equal(d.total, TOTAL, 'not every key was stored');
    assert.equal(d.perMaster.length, 3);
    for (const n of d.perMaster) assert.ok(n >= TOTAL * 0.2, `a master holds only ${n} of ${TOTAL} keys: ${d.perMaster.join('/')}`);
    // The documented layout: prefix + '{' + 8 hex + '}' + key.
    const stored = await scanAll(observer, 'sprd:*');
    for (const k of stored.slice(0, 200)) assert.match(k, /^sprd:\{[0-9a-f]{8}\}\$a\.shop\[/);
    for (const k of keys.slice(0, 50)) assert.equal(await observer.exists(spreadKey('sprd:', k)), 1, k);
    await adapter.clear();
    assert.equal((await distribution('sprd:')).total, 0);
  });

  describe('spreadKeys', () => {
    it('round-trips set/get/remove under the tagged key; two adapters with it share entries', async () => {
      const a = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'sk:', spreadKeys: true });
      const b = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'sk:', spreadKeys: true });
      const plain = new RedisStorageAdapter({ nodes: cluster.nodes, keyPrefix: 'sk:' });
      open.push(a, b, plain);
      const key = '$a.shop["GET","/users",{"page":1},null,{}]';
      const redisKey = spreadKey('sk:', key);
      assert.match(redisKey, /^sk:\{[0-9a-f]{8}\}\$a\.shop\["GET"/);
      await a.set(key, ['data', Date.now() + 60000]);
      assert.equal(JSON.parse(await observer.get(redisKey))[0], 'data');
      const pttl = await observer.pttl(redisKey);
      assert.ok(pttl > 0 && pttl <= 60000, `PTTL ${pttl}`);
      assert.equal((await b.get(key))[0], 'data');
      // Without spreadKeys the key is another one (prefix + key exactly).
      assert.equal(await plain.get(key), undefined);
      assert.equal(await observer.exists(`sk:${key}`), 0);
      await b.remove(key);
      assert.equal(await observer.exists(redisKey), 0);
      assert.equal(await a.get(key), undefined);
      // Keys with the same parameter object get slots of their own.
      const other = '$a.shop["GET","/orders",{"page":1},null,{}]';
      assert.notEqual(keySlot(spreadKey('sk:', key)), keySlot(spreadKey('sk:', other)));
      assert.equal(keySlot(`sk:${key}`), keySlot(`sk:${other}`));
    });

    it('is off by default and must be a boolean', () => {
      throwsWithCode(() => new RedisStorageAdapter({ nodes: cluster.nodes, spreadKeys: 'yes' }), 'ERR_INVALID_OPTION', { mentions: ['spreadKeys'] });
    });
  });
});
