'use strict';

// RedisClient on a Redis Cluster (3 masters + 3 replicas, with a password, one cluster for the
// file), what only a cluster has: routing by slot, nodes(), startup node forms, natMap,
// scaleReads, CROSSSLOT, no startup node answering, AUTH on every node; an ioredis `Cluster` as
// `{ client }` (adopted: its startup nodes and password); the cluster options, accepted and
// refused. What a cluster shares with one server (call(), reply types, error replies, status,
// quit/disconnect, lazyConnect, sharing a native client) runs over both in client.test.js and
// lifecycle.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const Redis = require('ioredis');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { startCluster, freePort } = require('./servers');
const {
  rejectsWithCode,
  throwsWithCode,
  within,
  closeAll,
  keySlot,
  slotOwners,
  ioredisClusterFor,
  errorText,
} = require('./helpers');

const PASSWORD = 'cluster-s3cret';

describe('RedisClient on a Redis Cluster', () => {
  let cluster;
  let observer; // an ioredis Cluster
  let owners; // slot -> "host:port" of its master
  const open = []; // adapters and ioredis clients
  const clients = []; // RedisClients

  const options = (extra = {}) => ({ redisOptions: { password: PASSWORD }, ...extra });
  function clientWith(extra = {}, nodes = cluster.nodes) {
    const client = new RedisClient({ nodes, options: options(extra) });
    clients.push(client);
    return client;
  }
  function adapterWith(opts = {}) {
    const adapter = new RedisStorageAdapter({ nodes: cluster.nodes, options: options(), ...opts });
    open.push(adapter);
    return adapter;
  }
  /** The startCluster server handle that serves `key`'s slot. */
  function masterOf(key) {
    const owner = owners[keySlot(key)];
    return cluster.servers.find((s) => `${s.host}:${s.port}` === owner);
  }
  const portsOf = (list) => list.map((n) => n.port ?? n.options.port).sort((a, b) => a - b);
  /** Keys `${base}<i>` spread over the slots (3 masters). */
  const keysFor = (base, n) => Array.from({ length: n }, (_, i) => `${base}${i}`);

  before(async () => {
    cluster = await startCluster({ password: PASSWORD });
    observer = ioredisClusterFor(cluster, {}, open);
    owners = await slotOwners(observer);
  });

  after(async () => {
    for (const c of clients.splice(0)) {
      try {
        c.disconnect();
      } catch {
        // already closed
      }
    }
    await closeAll(open);
    await cluster?.stop();
  });

  describe('connection and topology', () => {
    it('is a cluster client; nodes() lists 3 masters and 3 replicas once connected', { timeout: 30000 }, async () => {
      const client = clientWith();
      assert.equal(client.isCluster, true);
      assert.ok(['connecting', 'ready'].includes(client.status), client.status);
      assert.equal(await within(20000, client.set('topology', '1'), 'first command'), 'OK');
      assert.equal(client.status, 'ready');

      const masters = client.nodes('master');
      assert.equal(masters.length, 3, JSON.stringify(masters));
      for (const n of masters) {
        assert.deepEqual(Object.keys(n).sort(), ['options', 'role']);
        assert.equal(n.role, 'master');
        assert.equal(n.options.host, '127.0.0.1');
        assert.equal(typeof n.options.port, 'number');
      }
      assert.deepEqual(portsOf(masters), portsOf(await cluster.masters()));

      const replicas = client.nodes('slave');
      assert.equal(replicas.length, 3, JSON.stringify(replicas));
      for (const n of replicas) assert.equal(n.role, 'slave');
      const masterPorts = new Set(portsOf(masters));
      assert.deepEqual(
        portsOf(replicas),
        portsOf(cluster.nodes.filter((n) => !masterPorts.has(n.port))),
      );
      assert.deepEqual(portsOf(client.nodes()), portsOf(cluster.nodes));
      assert.deepEqual(portsOf(client.nodes('all')), portsOf(cluster.nodes));
    });

    it('routes commands and call() by key to the master of the slot', { timeout: 30000 }, async () => {
      const client = clientWith();
      const keys = keysFor('route:', 30);
      assert.ok(new Set(keys.map((k) => owners[keySlot(k)])).size === 3, 'the keys should cover 3 masters');
      for (const key of keys) {
        assert.equal(await client.set(key, `v-${key}`, 'PX', 60000), 'OK');
        // The master of the slot holds it (a raw connection to it, no redirection).
        assert.equal(await masterOf(key).command('GET', key), `v-${key}`, key);
        assert.equal(await client.get(key), `v-${key}`);
        assert.equal(await client.call('GET', key), `v-${key}`);
        assert.equal(await client.call('CLUSTER', 'KEYSLOT', key), keySlot(key));
        const pttl = await client.pttl(key);
        assert.ok(pttl > 0 && pttl <= 60000, `PTTL ${pttl}`);
      }
      // Other command families, each routed by its key.
      await client.hset('route:hash', { a: '1', b: '2' });
      assert.deepEqual(await client.hgetall('route:hash'), { a: '1', b: '2' });
      assert.deepEqual(await masterOf('route:hash').command('HGET', 'route:hash', 'b'), '2');
      assert.equal(await client.incr('route:n'), 1);
      assert.equal(await client.call('INCRBY', 'route:n', 41), 42);
      await client.rpush('route:list', 'x', 'y');
      assert.deepEqual(await client.lrange('route:list', 0, -1), ['x', 'y']);
      // A script goes to the node of its keys.
      assert.equal(
        await client.call('EVAL', 'return redis.call("GET", KEYS[1])', 1, 'route:7'),
        'v-route:7',
      );
      // Multi-key commands within one slot (hash tags).
      await client.set('{route}a', '1');
      await client.set('{route}b', '2');
      assert.deepEqual(await client.mget('{route}a', '{route}b'), ['1', '2']);
      assert.equal(await client.del('{route}a', '{route}b'), 2);
      // What ioredis sees is what we wrote.
      assert.equal(await observer.get('route:29'), 'v-route:29');
    });

    it('accepts startup nodes as { host, port }, a port, or "host:port"; one node is enough', { timeout: 30000 }, async () => {
      const [a, b, c] = cluster.nodes;
      for (const nodes of [[{ host: a.host, port: a.port }], [b.port], [`${c.host}:${c.port}`], [{ host: a.host, port: String(a.port) }]]) {
        const client = clientWith({}, nodes);
        await within(20000, client.set('forms', JSON.stringify(nodes)), `connect with ${JSON.stringify(nodes)}`);
        assert.equal(await observer.get('forms'), JSON.stringify(nodes));
        assert.equal(client.nodes('master').length, 3, 'the topology is read from one startup node');
        client.disconnect();
      }
    });

    it('lazyConnect: no nodes() until the first command, then all 6', { timeout: 30000 }, async () => {
      // (The status, 'wait' then 'ready', is checked on both topologies in client.test.js.)
      const client = clientWith({ lazyConnect: true });
      assert.equal(client.status, 'wait');
      assert.deepEqual(client.nodes(), []);
      assert.equal(await within(20000, client.get('lazy:none'), 'first command'), null);
      assert.equal(client.nodes().length, 6);
    });

    it('no promise is lost when replies settle while tasks are woken from other threads', { timeout: 60000 }, async () => {
      // Cluster replies arrive on tokio threads: each settles a command's promise and wakes the
      // lock tasks run on this thread, at any moment. A wake-up lost in between left a lock()
      // (or quit()) pending for ever, once in a few hundred rounds on 2 cores.
      const adapter = adapterWith();
      const { locker } = adapter;
      for (let round = 0; round < 5000; round += 1) {
        const work = [];
        for (let i = 0; i < 30; i += 1) work.push(adapter.set(`wake:${i}`, { i }));
        for (let i = 0; i < 10; i += 1) {
          const resource = `wake:${round}:${i}`;
          work.push(locker.lock(resource).then(() => locker.unlock(resource)));
        }
        await within(10000, Promise.all(work), `round ${round}`);
      }
    });

    it('natMap: the topology reads through the map and commands go to the mapped addresses', { timeout: 30000 }, async () => {
      // The cluster announces 127.0.0.1:port; map every node to localhost:port.
      const natMap = {};
      for (const n of cluster.nodes) natMap[`${n.host}:${n.port}`] = { host: 'localhost', port: n.port };
      const client = clientWith({ natMap }, [{ host: 'localhost', port: cluster.nodes[0].port }]);
      assert.equal(await within(20000, client.set('nat:k', 'v'), 'set through natMap'), 'OK');
      assert.equal(await observer.get('nat:k'), 'v');
      const nodes = client.nodes();
      assert.equal(nodes.length, 6);
      for (const n of nodes) assert.equal(n.options.host, 'localhost', JSON.stringify(n));
    });

    for (const mode of ['master', 'slave', 'all']) {
      it(`scaleReads '${mode}': reads go to ${mode === 'master' ? 'masters only' : mode === 'slave' ? 'the replicas' : 'masters and replicas'}`, { timeout: 30000 }, async () => {
        const keys = keysFor('reads:', 60);
        const statsOf = async () =>
          Promise.all(
            cluster.servers.map(async (s) => {
              const role = (await s.command('ROLE'))[0];
              const m = /cmdstat_get:calls=(\d+)/.exec(await s.command('INFO', 'commandstats'));
              return { port: s.port, role, gets: m ? Number(m[1]) : 0 };
            }),
          );
        const client = clientWith({ scaleReads: mode });
        await client.set('reads:ready', '1');
        await Promise.all(cluster.servers.map((s) => s.command('CONFIG', 'RESETSTAT')));
        for (const k of keys) await client.get(k);
        const stats = await statsOf();
        const on = (role) => stats.filter((s) => s.role === role).reduce((n, s) => n + s.gets, 0);
        const summary = stats.map((s) => `${s.role}:${s.gets}`).join(' ');
        assert.equal(on('master') + on('slave'), keys.length, `every GET was served once: ${summary}`);
        if (mode === 'master') {
          assert.equal(on('slave'), 0, `a replica served reads: ${summary}`);
        } else if (mode === 'slave') {
          // ioredis: "send write queries to masters and read queries to slaves".
          for (const s of stats.filter((x) => x.role === 'slave')) {
            assert.ok(s.gets > 0, `replica ${s.port} served no read with scaleReads 'slave': ${summary}`);
          }
          assert.equal(on('master'), 0, `masters served reads with scaleReads 'slave': ${summary}`);
        } else {
          // ioredis: "read queries to masters or slaves randomly" (60 reads: never all on one side).
          assert.ok(on('slave') > 0, `no replica served a read with scaleReads 'all': ${summary}`);
          assert.ok(on('master') > 0, `no master served a read with scaleReads 'all': ${summary}`);
        }
      });
    }
  });

  describe('errors', () => {
    it('a multi-key command across slots rejects with ERR_REPLY CROSSSLOT (SUNION, RENAME, MSETNX, EVAL)', { timeout: 20000 }, async () => {
      const client = clientWith();
      assert.notEqual(keySlot('a'), keySlot('b'));
      const calls = [
        () => client.sunion('a', 'b'),
        () => client.rename('cross:a', 'cross:b'),
        () => client.msetnx('a', '1', 'b', '2'),
        () => client.call('EVAL', 'return 1', 2, 'a', 'b'),
      ];
      await client.set('cross:a', '1');
      for (const call of calls) {
        const err = await rejectsWithCode(call, 'ERR_REPLY');
        assert.match(err.message, /^CROSSSLOT\b/, err.message);
      }
      assert.equal(await observer.get('cross:a'), '1', 'a refused RENAME moved the key');
      assert.equal(await observer.exists('b'), 0, 'a refused MSETNX wrote a key');
    });

    it('mget of keys in different slots rejects with ERR_REPLY CROSSSLOT, as ioredis Cluster does', { timeout: 20000 }, async () => {
      const [k1, k2] = ['mget:a', 'mget:b'];
      assert.notEqual(await observer.cluster('KEYSLOT', k1), await observer.cluster('KEYSLOT', k2));
      // The reference: ioredis Cluster.
      await assert.rejects(observer.mget(k1, k2), /CROSSSLOT/);
      const client = clientWith();
      const err = await rejectsWithCode(() => client.mget(k1, k2), 'ERR_REPLY');
      assert.match(err.message, /CROSSSLOT/);
    });

    it('ERR_CONNECTION when no startup node answers', { timeout: 30000 }, async () => {
      const port = await freePort();
      const gaveUp = clientWith({ clusterRetryStrategy: () => null }, [{ host: '127.0.0.1', port }]);
      await within(20000, rejectsWithCode(gaveUp.get('k'), 'ERR_CONNECTION', { mentions: [String(port)] }), 'no node');
      const noQueue = clientWith({ enableOfflineQueue: false }, [{ host: '127.0.0.1', port }]);
      await within(5000, rejectsWithCode(noQueue.get('k'), 'ERR_CONNECTION'), 'no offline queue');
    });

    it('ERR_AUTH for a missing or wrong password, never showing it', { timeout: 30000 }, async () => {
      const none = new RedisClient({ nodes: cluster.nodes });
      clients.push(none);
      await within(20000, rejectsWithCode(none.get('k'), 'ERR_AUTH'), 'no password');
      const wrong = new RedisClient({ nodes: cluster.nodes, options: { redisOptions: { password: 'not-the-password' } } });
      clients.push(wrong);
      await within(20000, rejectsWithCode(wrong.get('k'), 'ERR_AUTH', { secrets: ['not-the-password', PASSWORD] }), 'wrong password');
    });
  });

  describe('{ client: ioredis Cluster }', () => {
    it('keeps the instance as adapter.client and adopts its startup nodes and password', { timeout: 30000 }, async () => {
      const io = new Redis.Cluster(cluster.nodes.slice(0, 2), { redisOptions: { password: PASSWORD } });
      io.on('error', () => {});
      open.push(io);
      const adapter = new RedisStorageAdapter({ client: io, keyPrefix: 'adopt:' });
      open.push(adapter);
      assert.equal(adapter.client, io);
      // Ours writes, ioredis reads.
      await adapter.set('ours', { from: 'native', n: [1, 2] });
      assert.equal(await io.get('adopt:ours'), '{"from":"native","n":[1,2]}');
      // ioredis writes, ours reads.
      await io.set('adopt:theirs', JSON.stringify({ from: 'ioredis' }));
      assert.deepEqual(await adapter.get('theirs'), { from: 'ioredis' });
      // Many keys over all slots, both ways.
      const keys = keysFor('k', 50);
      await Promise.all(keys.map((k) => adapter.set(k, k)));
      assert.deepEqual(await Promise.all(keys.map((k) => io.get(`adopt:${k}`))), keys.map((k) => JSON.stringify(k)));
      await adapter.remove('theirs');
      assert.equal(await io.exists('adopt:theirs'), 0);
      await adapter.clear();
      assert.equal(await io.exists('adopt:ours'), 0);
      // Locks too.
      await adapter.locker.lock('adopt:lock');
      assert.match(await io.get('adopt:lock'), /^[0-9a-f]{32}$/);
      await adapter.locker.unlock('adopt:lock');
      // close() leaves the user's instance open.
      await adapter.close();
      assert.equal(await io.set('adopt:after', '1'), 'OK');
    });

    it('redlockFilter sees the ioredis Cluster\'s startup nodes', { timeout: 30000 }, async () => {
      const io = new Redis.Cluster(cluster.nodes.slice(1, 3), { redisOptions: { password: PASSWORD } });
      io.on('error', () => {});
      open.push(io);
      const seen = [];
      const adapter = new RedisStorageAdapter({ client: io, redlockFilter: (n) => seen.push(n.options.port) > 0 });
      open.push(adapter);
      await adapter.locker.lock('adopt:filtered');
      assert.deepEqual(seen, cluster.nodes.slice(1, 3).map((n) => n.port));
      await adapter.locker.unlock('adopt:filtered');
    });
  });

  describe('cluster options', () => {
    const nodes = () => cluster.nodes;
    const refused = [
      ['a connection option beside nodes', () => ({ nodes: nodes(), host: '127.0.0.1' }), ['host']],
      ['port beside nodes', () => ({ nodes: nodes(), port: 7000 }), ['port']],
      ['an options.dnsLookup that is not a function', () => ({ nodes: nodes(), options: { dnsLookup: 5 } }), ['dnsLookup']],
      ['options.scripts', () => ({ nodes: nodes(), options: { scripts: { x: { lua: 'return 1', numberOfKeys: 0 } } } }), ['scripts']],
      ['an options.keyPrefix that is not a string', () => ({ nodes: nodes(), options: { keyPrefix: 5 } }), ['keyPrefix']],
      ['redisOptions.tls.servername (not applicable to cluster nodes)', () => ({ nodes: nodes(), options: { redisOptions: { tls: { servername: 'x' } } } }), ['servername']],
      ['options.resolveSrv', () => ({ nodes: nodes(), options: { resolveSrv: () => {} } }), ['resolveSrv']],
      ['an unknown cluster option', () => ({ nodes: nodes(), options: { maxRedirectionz: 3 } }), ['maxRedirectionz']],
      ['an unknown redisOptions key', () => ({ nodes: nodes(), options: { redisOptions: { hots: 'x' } } }), ['hots']],
      ['redisOptions.db != 0', () => ({ nodes: nodes(), options: { redisOptions: { db: 1 } } }), ['db']],
      ['redlockOptions.db != 0', () => ({ nodes: nodes(), redlockOptions: { db: 2 } }), ['db']],
      ['scaleReads of another value', () => ({ nodes: nodes(), options: { scaleReads: 'replica' } }), ['scaleReads']],
      ['a negative maxRedirections', () => ({ nodes: nodes(), options: { maxRedirections: -1 } }), ['maxRedirections']],
      ['a negative retryDelayOnFailover', () => ({ nodes: nodes(), options: { retryDelayOnFailover: -5 } }), ['retryDelayOnFailover']],
      ['a natMap that is not an object', () => ({ nodes: nodes(), options: { natMap: 5 } }), ['natMap']],
      ['a clusterRetryStrategy that is not a function', () => ({ nodes: nodes(), options: { clusterRetryStrategy: 5 } }), ['clusterRetryStrategy']],
      ['empty nodes', () => ({ nodes: [] }), ['nodes']],
      ['nodes that is not an array', () => ({ nodes: '127.0.0.1:7000' }), ['nodes']],
      ['a node with a bad port', () => ({ nodes: [{ host: '127.0.0.1', port: 70000 }] }), ['nodes', 'port']],
      ['a node string without a port number', () => ({ nodes: ['127.0.0.1:abc'] }), ['nodes']],
    ];
    for (const [what, make, mentions] of refused) {
      it(`refuses ${what} with ERR_INVALID_OPTION naming it`, () => {
        const opts = make();
        throwsWithCode(() => new RedisStorageAdapter(opts), 'ERR_INVALID_OPTION', { mentions });
        // RedisClient takes the same connection options (the adapter's own ones aside).
        // (`scripts` is a RedisClient option, as in ioredis: only the adapter refuses it.)
        if (!opts.redlockOptions && what !== 'options.scripts') {
          throwsWithCode(() => new RedisClient(opts), 'ERR_INVALID_OPTION', { mentions });
        }
      });
    }

    it('never shows the password in an option error', () => {
      const err = throwsWithCode(
        () => new RedisStorageAdapter({ nodes: cluster.nodes, options: { redisOptions: { password: PASSWORD, db: 3 } } }),
        'ERR_INVALID_OPTION',
      );
      assert.ok(!errorText(err).includes(PASSWORD), errorText(err));
    });

    it('accepts the no-op ioredis options and the supported ones', { timeout: 30000 }, async () => {
      const adapter = adapterWith({
        options: options({
          enableReadyCheck: true,
          slotsRefreshTimeout: 1000,
          slotsRefreshInterval: 5000,
          enableAutoPipelining: true,
          autoPipeliningIgnoredPrefixes: ['x'],
          showFriendlyErrorStack: true,
          useSRVRecords: false,
          scaleReads: 'master',
          maxRedirections: 16,
          retryDelayOnFailover: 100,
          retryDelayOnClusterDown: 100,
          retryDelayOnTryAgain: 100,
          enableOfflineQueue: true,
          lazyConnect: false,
          clusterRetryStrategy: (times) => Math.min(100 + times * 2, 2000),
          redisOptions: {
            password: PASSWORD,
            db: 0,
            connectTimeout: 10000,
            commandTimeout: 5000,
            keepAlive: 1000,
            noDelay: true,
            maxRetriesPerRequest: 20,
          },
        }),
        redlockOptions: { db: 0 },
        spreadKeys: false,
      });
      await adapter.set('options:ok', [1]);
      assert.deepEqual(await adapter.get('options:ok'), [1]);
      assert.equal(await observer.get('alova:options:ok'), '[1]');
    });
  });
});
