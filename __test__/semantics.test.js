'use strict';

// What set/get/remove/clear store and return, checked from the outside with ioredis.
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// observed through an ioredis Cluster). A cluster has only database 0: where the single-server
// variant gives a test a database of its own, the cluster variant uses db 0 (and, for exact key
// counts, empties the cluster first).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const {
  rejectsWithCode,
  ioredisFor,
  closeAll,
  topologies,
  existsCount,
  dbsizeAll,
  scanAll,
  writeMany,
  masterNodes,
  keySlot,
  slotOwners,
} = require('./helpers');

for (const topo of topologies()) describe(`storage semantics (${topo.name})`, () => {
  let server;
  let observer; // ioredis (a Cluster for the cluster), to see what really is in Redis
  const open = [];
  const adapter = (opts = {}) => {
    const { db, ...rest } = opts;
    // A cluster has only db 0 (and refuses another): its variant leaves `db` out.
    const a = new RedisStorageAdapter(topo.adapterOptions(server, topo.cluster ? rest : opts));
    open.push(a);
    return a;
  };
  /** An ioredis client on database `db` of the server; on a cluster, the observer (db 0). */
  const rawIn = (db) => (topo.cluster ? observer : ioredisFor(server, { db }, open));

  before(async () => {
    server = await topo.start();
    observer = topo.observer(server, open);
  });
  after(async () => {
    await closeAll(open);
    await server?.stop();
  });

  describe('JSON round trip', () => {
    const kinds = {
      null: null,
      true: true,
      false: false,
      zero: 0,
      integer: 42,
      negative: -17,
      float: 3.141592653589793,
      tiny: 5e-324,
      huge: 1.7976931348623157e308,
      maxSafe: Number.MAX_SAFE_INTEGER,
      string: 'hello',
      emptyString: '',
      jsonLookingString: '{"not":"an object"}',
      quotesAndEscapes: 'a "quoted" \\ back\\slash \n\t\r\b\f \u0001',
      emptyObject: {},
      emptyArray: [],
      nested: { a: { b: { c: [1, { d: null, e: [true, false] }] } }, 'key with spaces': 'v' },
      mixedArray: [1, 'two', null, { three: 3 }, [4, [5]]],
      deep: JSON.parse(`${'['.repeat(200)}1${']'.repeat(200)}`),
    };

    for (const [name, value] of Object.entries(kinds)) {
      it(`keeps ${name}`, async () => {
        const a = adapter({ keyPrefix: 'kinds:' });
        await a.set(name, value);
        assert.deepEqual(await a.get(name), value);
        // Stored as exactly JSON.stringify(value), under keyPrefix + key.
        assert.equal(await observer.get(`kinds:${name}`), JSON.stringify(value));
      });
    }

    it('stores what JSON.stringify makes of non-JSON members (toJSON, undefined, functions)', async () => {
      const a = adapter({ keyPrefix: 'tojson:' });
      const value = {
        date: new Date(0),
        skipped: undefined,
        fn() {},
        custom: { toJSON: () => 'custom!' },
        list: [undefined, () => 1],
        nan: Number.NaN,
      };
      await a.set('k', value);
      assert.deepEqual(await a.get('k'), JSON.parse(JSON.stringify(value)));
      assert.equal(await observer.get('tojson:k'), JSON.stringify(value));
    });

    it('returns undefined (not null) for an absent key', async () => {
      const a = adapter({ keyPrefix: 'absent:' });
      assert.equal(await a.get('never-written'), undefined);
    });

    it('distinguishes a stored null from an absent key', async () => {
      const a = adapter({ keyPrefix: 'nullish:' });
      await a.set('n', null);
      assert.equal(await a.get('n'), null);
      assert.equal(await observer.exists('nullish:n'), 1);
    });

    it('overwrites a previous value', async () => {
      const a = adapter({ keyPrefix: 'over:' });
      await a.set('k', { v: 1 });
      await a.set('k', 'second');
      assert.equal(await a.get('k'), 'second');
    });

    it('reads what another adapter with the same prefix wrote', async () => {
      const writer = adapter({ keyPrefix: 'shared:' });
      const reader = adapter({ keyPrefix: 'shared:' });
      await writer.set('k', { from: 'writer' });
      assert.deepEqual(await reader.get('k'), { from: 'writer' });
    });
  });

  describe('unicode', () => {
    const cases = [
      ['emoji', '🔑🗝️', '😀👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈'],
      ['CJK', '键值存储', '中文字符、日本語のテキスト、한국어'],
      ['RTL', 'مفتاح', 'שלום עולם — مرحبا بالعالم'],
      ['combining', 'e\u0301', 'Z\u0351\u0364a\u0368l\u0361g\u0316o'],
      ['whitespace and separators', 'a b\tc\nd:e', '\u2028\u2029\u00a0'],
      ['astral plane', '𝕜𝕖𝕪', '𝒱𝒶𝓁𝓊𝑒 𐍈'],
    ];
    for (const [name, key, value] of cases) {
      it(`round-trips ${name} keys and values`, async () => {
        const a = adapter({ keyPrefix: 'uni:' });
        const stored = { value, [key]: [value] };
        await a.set(key, stored);
        assert.deepEqual(await a.get(key), stored);
        // The key reaches Redis as UTF-8, unchanged.
        assert.equal(await observer.get(`uni:${key}`), JSON.stringify(stored));
      });
    }

    it('round-trips a lone surrogate and NUL inside a value', async () => {
      const a = adapter({ keyPrefix: 'uni:' });
      const value = ['\ud800 lone', 'nul\u0000byte'];
      await a.set('odd', value);
      assert.deepEqual(await a.get('odd'), value);
    });

    it('accepts a unicode keyPrefix', async () => {
      const a = adapter({ keyPrefix: '缓存:' });
      await a.set('键', '值');
      assert.equal(await observer.get('缓存:键'), '"值"');
      assert.equal(await a.get('键'), '值');
    });
  });

  describe('large values', () => {
    it('round-trips a 5 MB string', async () => {
      const a = adapter({ keyPrefix: 'big:' });
      const chunk = 'abcdefghijklmnopqrstuvwxyz0123456789-αβγ-中文-😀';
      const value = chunk.repeat(Math.ceil((5 * 1024 * 1024) / chunk.length));
      await a.set('str', value);
      const back = await a.get('str');
      assert.equal(back.length, value.length);
      assert.ok(back === value, 'the 5 MB string came back changed');
      assert.equal(await observer.strlen('big:str'), Buffer.byteLength(JSON.stringify(value)));
    });

    it('round-trips a 5 MB object', async () => {
      const a = adapter({ keyPrefix: 'big:' });
      const rows = Array.from({ length: 66000 }, (_, i) => ({
        id: i,
        name: `row-${i}-名前`,
        tags: ['a', 'b', i % 2 === 0],
        score: i / 7,
      }));
      const value = { rows, total: rows.length };
      assert.ok(Buffer.byteLength(JSON.stringify(value)) > 5 * 1024 * 1024);
      await a.set('obj', value);
      assert.deepEqual(await a.get('obj'), value);
    });
  });

  describe('expiry', () => {
    it('writes nothing for an entry that has already expired', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('past', ['data', Date.now() - 1000]);
      assert.equal(await observer.exists('exp:past'), 0);
      assert.equal(await a.get('past'), undefined);
    });

    it('writes nothing for a positive expiry timestamp in 1970; 0 or less is stored without expiry', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('zero', ['data', 0]);
      await a.set('never', ['data', -1]);
      await a.set('epoch', ['a', 5]);
      assert.equal(await existsCount(observer, 'exp:epoch'), 0);
      assert.equal(await observer.pttl('exp:zero'), -1);
      assert.equal(await observer.pttl('exp:never'), -1);
      assert.deepEqual(await a.get('never'), ['data', -1]);
    });

    it('gives an [data, expire] entry a PX close to expire - now', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      const ttl = 60000;
      const expire = Date.now() + ttl;
      await a.set('future', ['data', expire, 'tag']);
      const pttl = await observer.pttl('exp:future');
      assert.ok(pttl > 0 && pttl <= ttl, `PTTL ${pttl} not in (0, ${ttl}]`);
      assert.ok(pttl > ttl - 10000, `PTTL ${pttl} too far from ${ttl}`);
      assert.deepEqual(await a.get('future'), ['data', expire, 'tag']);
    });

    it('keeps the expire timestamp inside the stored value', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      const expire = Date.now() + 30000;
      await a.set('stamp', [{ body: 1 }, expire]);
      assert.deepEqual(await a.get('stamp'), [{ body: 1 }, expire]);
    });

    it('sets no TTL without an expiry', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('plain', { a: 1 });
      await a.set('single', ['data']);
      await a.set('string2nd', ['data', 'not-a-number']);
      await a.set('null2nd', ['data', null]);
      for (const key of ['plain', 'single', 'string2nd', 'null2nd']) {
        assert.equal(await observer.pttl(`exp:${key}`), -1, key);
      }
    });

    it('sets no TTL when the expiry is not finite', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('inf', ['data', Number.POSITIVE_INFINITY]);
      assert.equal(await observer.pttl('exp:inf'), -1);
      assert.deepEqual(await a.get('inf'), ['data', null]);
      await a.set('nan', ['data', Number.NaN]);
      assert.equal(await observer.pttl('exp:nan'), -1);
      assert.deepEqual(await a.get('nan'), ['data', null]);
    });

    it('drops an old TTL when a value without expiry overwrites it', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('again', ['data', Date.now() + 60000]);
      assert.ok((await observer.pttl('exp:again')) > 0);
      await a.set('again', ['data']);
      assert.equal(await observer.pttl('exp:again'), -1);
    });

    it('lets Redis expire the key', async () => {
      const a = adapter({ keyPrefix: 'exp:' });
      await a.set('short', ['data', Date.now() + 60000]);
      // Expire it now from the outside rather than sleeping: the adapter must then see nothing.
      await observer.pexpire('exp:short', 1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(await a.get('short'), undefined);
    });
  });

  describe('keyPrefix', () => {
    it("defaults to 'alova:'", async () => {
      const a = adapter();
      assert.equal(a.keyPrefix, 'alova:');
      await a.set('default-prefix', 1);
      assert.equal(await observer.get('alova:default-prefix'), '1');
    });

    it('keeps adapters with different prefixes apart', async () => {
      const one = adapter({ keyPrefix: 'p1:' });
      const two = adapter({ keyPrefix: 'p2:' });
      assert.equal(one.keyPrefix, 'p1:');
      await one.set('same', 'one');
      await two.set('same', 'two');
      assert.equal(await one.get('same'), 'one');
      assert.equal(await two.get('same'), 'two');
      assert.equal(await observer.get('p1:same'), '"one"');
      assert.equal(await observer.get('p2:same'), '"two"');
    });

    it('is not a connection-level prefix: adapter.client sees full key names', async () => {
      const a = adapter({ keyPrefix: 'cp:' });
      await a.set('k', { v: 1 });
      assert.equal(await a.client.get('cp:k'), '{"v":1}');
      assert.equal(await a.client.get('k'), null);
    });

    it("works with an empty prefix ('') for set/get/remove", async () => {
      const a = adapter({ keyPrefix: '' });
      assert.equal(a.keyPrefix, '');
      await a.set('bare-key', [1, 'x']);
      assert.equal(await observer.get('bare-key'), '[1,"x"]');
      assert.deepEqual(await a.get('bare-key'), [1, 'x']);
      await a.remove('bare-key');
      assert.equal(await observer.exists('bare-key'), 0);
    });
  });

  describe('remove', () => {
    it('deletes the key', async () => {
      const a = adapter({ keyPrefix: 'rm:' });
      await a.set('k', { v: 1 });
      await a.remove('k');
      assert.equal(await a.get('k'), undefined);
      assert.equal(await observer.exists('rm:k'), 0);
    });

    it('resolves for a key that does not exist', async () => {
      const a = adapter({ keyPrefix: 'rm:' });
      await a.remove('never-there');
    });

    it('touches only its own prefix', async () => {
      const a = adapter({ keyPrefix: 'rm-a:' });
      const b = adapter({ keyPrefix: 'rm-b:' });
      await a.set('k', 1);
      await b.set('k', 2);
      await a.remove('k');
      assert.equal(await b.get('k'), 2);
    });
  });

  describe('clear', () => {
    it('removes 100k keys under its prefix and nothing else', { timeout: 120000 }, async () => {
      const db = 9; // a database of its own, so that the counts are exact
      if (topo.cluster) {
        // No other database on a cluster: empty every master instead, for exact counts.
        for (const node of await masterNodes(observer)) await node.flushall();
      }
      const raw = rawIn(db);
      const a = adapter({ db, keyPrefix: 'bulk:' });
      const total = 100000;
      const bulk = Array.from({ length: total }, (_, i) => [`bulk:${i}`, JSON.stringify({ i })]);
      const bulkPerMaster = await writeMany(raw, bulk);
      await a.set('through-adapter', ['data', Date.now() + 60000]);
      const others = {
        'bulk': 'no colon',
        'bulk-x:1': 'similar prefix',
        'BULK:1': 'other case',
        'xbulk:1': 'prefix inside',
        'other:1': 'unrelated',
        '{bulk}:1': 'hash tag',
      };
      if (topo.cluster) {
        // Bystanders on every master (30 keys over 3 masters; checked below).
        for (let i = 0; i < 30; i += 1) others[`keep:${i}`] = `bystander ${i}`;
      }
      for (const [key, value] of Object.entries(others)) await raw.set(key, value);
      await raw.hset('other:hash', 'f', 'v');
      assert.equal(await dbsizeAll(raw), total + 1 + Object.keys(others).length + 1);
      // On a cluster: how many keys each master holds that are not the prefix's.
      const keepPerMaster = new Map();
      if (topo.cluster) {
        const adapterKeyOwner = (await slotOwners(observer))[keySlot(topo.redisKey('bulk:', 'through-adapter'))];
        for (const node of await masterNodes(observer)) {
          const name = `${node.options.host}:${node.options.port}`;
          const size = await node.dbsize();
          const mine = (bulkPerMaster.get(name) || 0) + (name === adapterKeyOwner ? 1 : 0);
          assert.ok(mine > 0, `master ${name} holds none of the prefix's keys`);
          assert.ok(size - mine > 0, `master ${name} holds no bystander`);
          keepPerMaster.set(name, size - mine);
        }
        assert.equal(keepPerMaster.size, 3);
      }

      await a.clear();

      assert.equal(await dbsizeAll(raw), Object.keys(others).length + 1);
      for (const [key, value] of Object.entries(others)) assert.equal(await raw.get(key), value, key);
      assert.equal(await raw.hget('other:hash', 'f'), 'v');
      assert.equal(await a.get('through-adapter'), undefined);
      if (topo.cluster) {
        // Every master lost exactly its keys under the prefix, and kept all the others.
        for (const node of await masterNodes(observer)) {
          const name = `${node.options.host}:${node.options.port}`;
          assert.equal(await node.dbsize(), keepPerMaster.get(name), `keys left on master ${name}`);
        }
        assert.deepEqual(await scanAll(observer, 'bulk:*'), []);
      }
      // Other databases are untouched. (A cluster has only db 0: there this checks that a second
      // clear() keeps a key outside the prefix.)
      await observer.set('db0:survivor', 'yes');
      await a.clear();
      assert.equal(await observer.get('db0:survivor'), 'yes');
    });

    it('treats glob characters in the prefix literally', async () => {
      const db = 10;
      const raw = rawIn(db);
      const a = adapter({ db, keyPrefix: 'g?l*o[b]\\:' });
      await a.set('mine', 1);
      // These match the prefix read as a glob pattern (g?l*o[b]\:*), none starts with it, and the
      // adapter's own key does not match that pattern: only literal matching gets both right.
      const bystanders = ['gXlYYob:1', 'g?l*ob:1', 'g-l-ob:1', 'g?lzzzob:1'];
      for (const key of bystanders) await raw.set(key, 'keep');
      await a.clear();
      assert.equal(await a.get('mine'), undefined);
      for (const key of bystanders) assert.equal(await raw.get(key), 'keep', key);
    });

    it('resolves when there is nothing to clear', async () => {
      const a = adapter({ db: 11, keyPrefix: 'nothing-here:' });
      await a.clear();
    });

    it("refuses an empty prefix with ERR_CLEAR_REFUSED and deletes nothing", async () => {
      const db = 12;
      const raw = rawIn(db);
      await raw.set('precious', 'data');
      const a = adapter({ db, keyPrefix: '' });
      await a.set('bare', 1);
      await rejectsWithCode(() => a.clear(), 'ERR_CLEAR_REFUSED', { mentions: 'prefix' });
      assert.equal(await raw.get('precious'), 'data');
      assert.equal(await raw.get('bare'), '1');
    });
  });
});
