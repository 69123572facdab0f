'use strict';

// RedisClient: `call()`, the ioredis-style command methods, reply types as ioredis gives them,
// error replies, concurrency, status and shutdown, a RedisClient of its own.
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// shared by the file; observed through an ioredis Cluster). Keys used together in one command
// share a hash tag (`{types}...`), so that the command stays in one slot of the cluster. What only
// a cluster has (routing by slot, nodes(), CROSSSLOT, natMap, scaleReads, its options) is in
// cluster-client.test.js; what only one server has is in the standalone-only block at the end.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = require('..');
const { startRedis } = require('./servers');
const { rejectsWithCode, within, waitFor, ioredisFor, closeAll, topologies, writeMany } = require('./helpers');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Keys `${base}<i>` (spread over the slots of a cluster). */
const keysFor = (base, n) => Array.from({ length: n }, (_, i) => `${base}${i}`);

for (const topo of topologies()) describe(`RedisClient (${topo.name})`, () => {
  let target;
  let observer;
  let adapter;
  let client;
  const open = [];

  /** An adapter on the target; closed in `after`. `connection`: ioredis connection options. */
  function adapterWith(extra = {}, connection = {}) {
    const a = new RedisStorageAdapter(topo.adapterOptions(target, extra, connection));
    open.push(a);
    return a;
  }
  /** A RedisClient of its own on the target; disconnected in `after`. */
  function clientWith(connection = {}) {
    const c = new RedisClient(topo.clientOptions(target, connection));
    open.push(c);
    return c;
  }

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
    adapter = adapterWith();
    client = adapter.client;
  });
  after(async () => {
    await closeAll(open);
    await target?.stop();
  });

  it('is the RedisClient class the package exports', () => {
    assert.ok(client instanceof RedisClient);
    assert.equal(typeof client.call, 'function');
    assert.equal(client.isCluster, topo.cluster);
    for (const name of ['get', 'set', 'del', 'exists', 'incr', 'hset', 'hget', 'pttl', 'dbsize', 'ping', 'lrange', 'rpush', 'scan', 'mget', 'expire']) {
      assert.equal(typeof client[name], 'function', name);
    }
  });

  describe('call()', () => {
    it('SET with PX, GET, PTTL', async () => {
      assert.equal(await client.call('SET', 'call:k', 'v', 'PX', 100000), 'OK');
      assert.equal(await client.call('GET', 'call:k'), 'v');
      const pttl = await client.call('PTTL', 'call:k');
      assert.equal(typeof pttl, 'number');
      assert.ok(pttl > 0 && pttl <= 100000, String(pttl));
      assert.equal(await observer.get('call:k'), 'v');
    });

    it('takes command names in any case', async () => {
      assert.equal(await client.call('set', 'call:lower', '1'), 'OK');
      assert.equal(await client.call('gEt', 'call:lower'), '1');
    });

    it('turns numbers and nested arrays into arguments as ioredis does', async () => {
      assert.equal(await client.call('SET', 'call:num', 42), 'OK');
      assert.equal(await client.call('GET', 'call:num'), '42');
      assert.equal(await client.call('RPUSH', 'call:list', ['a', 'b'], 'c'), 3);
      assert.deepEqual(await client.call('LRANGE', 'call:list', 0, -1), ['a', 'b', 'c']);
    });

    it('rejects a command name that is not a string with ERR_INVALID_ARG', async () => {
      await rejectsWithCode(() => client.call(42, 'x'), 'ERR_INVALID_ARG');
      await rejectsWithCode(() => client.call(), 'ERR_INVALID_ARG');
    });

    it('refuses commands that would change the shared connection, which stays usable', { timeout: 20000 }, async () => {
      // (Blocking commands run on a connection of their own: client-blocking.test.js; so do
      // subscriptions, client-pubsub.test.js. SELECT on the adapter's client would move the
      // cache: client-connections.test.js has select() on a client of one's own.)
      for (const args of [['MULTI'], ['EXEC'], ['QUIT'], ['HELLO', '3'], ['CLIENT', 'TRACKING', 'on']]) {
        await rejectsWithCode(() => client.call(...args), 'ERR_INVALID_ARG', { mentions: args[0] });
      }
      await rejectsWithCode(() => client.call('SELECT', 1), 'ERR_INVALID_ARG', { mentions: 'select()' });
      await client.call('SET', 'call:after-refusal', 'db0');
      assert.equal(await observer.get('call:after-refusal'), 'db0');
    });
  });

  describe('reply types', () => {
    it('bulk string -> string, nil -> null', async () => {
      await client.set('types:s', 'text');
      assert.equal(await client.get('types:s'), 'text');
      assert.equal(await client.get('{types}:missing'), null);
    });

    it('integer -> number', async () => {
      await client.del('{types}:counter');
      assert.equal(await client.incr('{types}:counter'), 1);
      assert.equal(await client.incrby('{types}:counter', 41), 42);
      assert.equal(await client.dbsize() > 0, true);
      assert.equal(typeof (await client.dbsize()), 'number');
      assert.equal(await client.exists('{types}:counter', '{types}:missing', '{types}:counter'), 2);
    });

    it('status -> its text', async () => {
      assert.equal(await client.set('types:status', 'x'), 'OK');
      assert.equal(await client.ping(), 'PONG');
      assert.equal(await client.type('types:status'), 'string');
    });

    it('a float reply of INCRBYFLOAT is a string, as in ioredis', async () => {
      await client.del('types:float');
      assert.equal(await client.incrbyfloat('types:float', '1.5'), '1.5');
    });

    it('arrays, with nil members and nesting', async () => {
      await client.del('types:list');
      assert.equal(await client.rpush('types:list', 'a', 'b', 'c'), 3);
      assert.deepEqual(await client.lrange('types:list', 0, -1), ['a', 'b', 'c']);
      await client.set('{types}:m1', '1');
      assert.deepEqual(await client.mget('{types}:m1', '{types}:none'), ['1', null]);
      const [cursor, keys] = await client.scan('0', 'MATCH', 'types:list', 'COUNT', 1000);
      assert.equal(typeof cursor, 'string');
      assert.ok(Array.isArray(keys));
      assert.deepEqual(await client.lrange('types:empty', 0, -1), []);
    });

    it('SET with NX on an existing key -> null', async () => {
      await client.set('types:nx', '1');
      assert.equal(await client.set('types:nx', '2', 'NX'), null);
      assert.equal(await client.get('types:nx'), '1');
    });

    it('hashes: HSET with pairs and with an object', async () => {
      await client.del('types:h');
      assert.equal(await client.hset('types:h', 'f', 'v'), 1);
      assert.equal(await client.hset('types:h', { a: 1, b: 'two' }), 2);
      assert.equal(await client.hget('types:h', 'a'), '1');
      assert.equal(await observer.hget('types:h', 'b'), 'two');
      assert.equal(await client.hget('types:h', 'none'), null);
    });

    it('pttl of a key set with PX', async () => {
      assert.equal(await client.set('types:px', 'v', 'PX', 100000), 'OK');
      const pttl = await client.pttl('types:px');
      assert.ok(pttl > 0 && pttl <= 100000, String(pttl));
      assert.equal(await client.pttl('{types}:missing'), -2);
    });

    it('unicode and large strings round-trip', async () => {
      const text = '中文 العربية עברית 😀👍🏽';
      await client.set('types:u', text);
      assert.equal(await client.get('types:u'), text);
      assert.equal(await client.strlen('types:u'), Buffer.byteLength(text));
      const big = 'x'.repeat(2 * 1024 * 1024);
      await client.set('types:big', big);
      assert.equal(await client.get('types:big'), big);
    });

    it('EVAL returns the script result', async () => {
      assert.deepEqual(await client.eval("return {1, 'two', {3}}", 0), [1, 'two', [3]]);
      assert.equal(await client.eval('return redis.call("GET", KEYS[1])', 1, 'types:s'), 'text');
    });
  });

  describe('error replies', () => {
    it('INCR on a non-integer rejects ERR_REPLY with the server message', async () => {
      await client.set('err:text', 'abc');
      await rejectsWithCode(() => client.incr('err:text'), 'ERR_REPLY', { mentions: 'not an integer' });
    });

    it('WRONGTYPE, unknown command and wrong arity reject ERR_REPLY', async () => {
      await client.set('err:string', 'x');
      await rejectsWithCode(() => client.lpush('err:string', 'a'), 'ERR_REPLY', { mentions: 'WRONGTYPE' });
      await rejectsWithCode(() => client.call('NOSUCHCOMMAND', 'a'), 'ERR_REPLY', { mentions: 'unknown command' });
      await rejectsWithCode(() => client.call('GET'), 'ERR_REPLY', { mentions: 'wrong number of arguments' });
    });

    it('other error replies are ERR_REPLY with the server message; the client goes on', { timeout: 20000 }, async () => {
      const own = clientWith();
      await own.set('err:str', 'x');
      const err = await rejectsWithCode(own.hget('err:str', 'f'), 'ERR_REPLY');
      assert.match(err.message, /^WRONGTYPE/);
      await rejectsWithCode(own.call('NOSUCHCOMMAND', 'err:str'), 'ERR_REPLY');
      assert.equal(await own.get('err:str'), 'x');
    });

    it('errors and replies of concurrent commands stay matched to their commands', async () => {
      await client.set('err:mix-text', 'abc');
      await client.set('err:mix-num', '0');
      const results = await Promise.allSettled(
        Array.from({ length: 300 }, (_, i) =>
          i % 3 === 0 ? client.incr('err:mix-text') : client.call('ECHO', `echo-${i}`),
        ),
      );
      results.forEach((result, i) => {
        if (i % 3 === 0) {
          assert.equal(result.status, 'rejected', `command ${i}`);
          assert.equal(result.reason.code, 'ERR_REPLY');
        } else {
          assert.deepEqual(result, { status: 'fulfilled', value: `echo-${i}` }, `command ${i}`);
        }
      });
    });
  });

  describe('concurrency', () => {
    it('1000 concurrent INCR each get their own reply', async () => {
      await client.del('conc:n');
      const replies = await Promise.all(Array.from({ length: 1000 }, () => client.incr('conc:n')));
      assert.deepEqual([...replies].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i + 1));
      assert.equal(await observer.get('conc:n'), '1000');
    });

    it('concurrent GETs of different keys never mix replies', async () => {
      // (writeMany: on a cluster, one pipeline per master.)
      await writeMany(observer, Array.from({ length: 500 }, (_, i) => [`conc:k${i}`, `value-${i}-${'y'.repeat(i)}`]));
      const values = await Promise.all(Array.from({ length: 500 }, (_, i) => client.get(`conc:k${i}`)));
      values.forEach((value, i) => assert.equal(value, `value-${i}-${'y'.repeat(i)}`));
    });
  });

  describe('status and shutdown', () => {
    it("lazyConnect: 'wait' until the first command, then 'ready'", { timeout: 30000 }, async () => {
      const a = adapterWith({}, { lazyConnect: true });
      assert.equal(a.client.status, 'wait');
      await sleep(200);
      assert.equal(a.client.status, 'wait', 'a lazy client connected by itself');
      assert.equal(await within(20000, a.client.ping(), 'first command'), 'PONG');
      assert.equal(a.client.status, 'ready');
      await a.close();
    });

    it("'connecting' or 'ready' at first, 'ready' once a command went through", async () => {
      const a = adapterWith();
      assert.ok(['connecting', 'ready'].includes(a.client.status), a.client.status);
      await a.set('k', 1);
      assert.equal(a.client.status, 'ready');
      await a.close();
    });

    it("quit() resolves 'OK', status becomes 'end', commands reject ERR_CLOSED", async () => {
      const a = adapterWith();
      await a.client.ping();
      assert.equal(await within(5000, a.client.quit(), 'quit()'), 'OK');
      assert.equal(a.client.status, 'end');
      await rejectsWithCode(() => a.client.get('k'), 'ERR_CLOSED');
      await rejectsWithCode(() => a.client.call('PING'), 'ERR_CLOSED');
    });

    it("quit() resolves 'OK' after pending commands; status 'end'; later commands reject ERR_CLOSED", { timeout: 30000 }, async () => {
      // Several rounds: commands dropped by quit() show up only now and then.
      for (let round = 0; round < 8; round += 1) {
        const own = clientWith();
        await own.set('quit:ready', '1');
        const pending = Promise.allSettled(keysFor(`quit:${round}:`, 20).map((k) => own.set(k, 'x')));
        const quit = own.quit();
        const outcomes = (await pending).map((r) => (r.status === 'fulfilled' ? r.value : r.reason.code));
        assert.deepEqual(outcomes, Array(20).fill('OK'), `round ${round}: commands sent before quit() were dropped`);
        assert.equal(await quit, 'OK');
        assert.equal(own.status, 'end');
        await rejectsWithCode(own.get('quit:0'), 'ERR_CLOSED');
        assert.equal(await observer.get(`quit:${round}:19`), 'x');
      }

      const other = clientWith();
      await other.set('disc', '1');
      other.disconnect();
      assert.equal(other.status, 'end');
      await rejectsWithCode(other.get('disc'), 'ERR_CLOSED');
    });

    it('quit() while still connecting sends the queued commands first', { timeout: 30000 }, async () => {
      // Servers on loopback may answer before the next line runs: a client that is 'ready'
      // already is not what this test is about, so it gets a few tries at a client that is still
      // connecting.
      // (The status is read once per try: the connection is made on another thread, and it may
      // be ready by the time it is read again.)
      let own;
      let status;
      for (let attempt = 1; attempt <= 20; attempt += 1) {
        own = clientWith();
        status = own.status;
        if (status === 'connecting') break;
        own.disconnect();
      }
      assert.equal(status, 'connecting');
      const queued = Promise.allSettled(keysFor('quit-early:', 20).map((k) => own.set(k, 'x')));
      assert.equal(await within(20000, own.quit(), 'quit()'), 'OK');
      const outcomes = (await queued).map((r) => (r.status === 'fulfilled' ? r.value : r.reason.code));
      assert.deepEqual(outcomes, Array(20).fill('OK'), 'commands queued before quit() were dropped');
      assert.equal(await observer.get('quit-early:19'), 'x');
    });

    it("disconnect() closes at once: status 'end', commands reject ERR_CLOSED", async () => {
      const a = adapterWith();
      await a.client.ping();
      a.client.disconnect();
      assert.equal(a.client.status, 'end');
      await rejectsWithCode(() => a.client.ping(), 'ERR_CLOSED');
      await rejectsWithCode(() => a.get('k'), 'ERR_CLOSED');
    });

    it("adapter.close() ends the adapter's own client", async () => {
      const a = adapterWith();
      await a.client.ping();
      await a.close();
      assert.equal(a.client.status, 'end');
      await rejectsWithCode(() => a.client.ping(), 'ERR_CLOSED');
    });
  });

  describe('a RedisClient of its own', () => {
    it('can back an adapter, which leaves it open on close()', async () => {
      const own = new RedisClient(topo.clientOptions(target));
      try {
        const a = new RedisStorageAdapter({ client: own, keyPrefix: 'own-client:' });
        assert.equal(a.client, own);
        await a.set('k', { v: 1 });
        assert.equal(await own.get('own-client:k'), '{"v":1}');
        await a.close();
        assert.equal(await own.ping(), 'PONG');
        assert.notEqual(own.status, 'end');
      } finally {
        await own.quit();
      }
    });
  });

  if (!topo.cluster) {
    describe('one server only (a restart by pid, connectionName and a URL with a db: a cluster has neither a db but 0 nor connectionName; its own cases are in cluster-client.test.js)', () => {
      it("'reconnecting' while the server is down, 'ready' again after it is back", async () => {
        const own = await startRedis();
        try {
          const a = new RedisStorageAdapter({ host: own.host, port: own.port });
          open.push(a);
          await a.client.ping();
          assert.equal(a.client.status, 'ready');
          await own.kill('SIGKILL');
          await waitFor(() => ['reconnecting', 'connecting'].includes(a.client.status), {
            what: "status 'reconnecting' after the server died",
          });
          await own.restart();
          await waitFor(() => a.client.status === 'ready', { timeout: 15000, what: "status 'ready' again" });
          assert.equal(await a.client.ping(), 'PONG');
          await a.close();
        } finally {
          await own.stop();
        }
      });

      it('quit() releases the server connection', async () => {
        const name = `quit-check-${process.pid}`;
        const a = adapterWith({}, { connectionName: name });
        await a.client.ping();
        assert.match(await observer.call('CLIENT', 'LIST'), new RegExp(`name=${name}`));
        await a.client.quit();
        await waitFor(async () => !(await observer.call('CLIENT', 'LIST')).includes(`name=${name}`), {
          what: 'the connection to close on the server',
        });
      });

      it('a RedisClient of its own connects with ioredis options and a URL', async () => {
        const byOptions = new RedisClient({ host: target.host, port: target.port });
        const byUrl = new RedisClient(`${target.url}/3`);
        try {
          assert.equal(await byOptions.set('own:k', 'v'), 'OK');
          assert.equal(await byOptions.get('own:k'), 'v');
          assert.equal(await byUrl.set('own:db3', 'v3'), 'OK');
          const db3 = ioredisFor(target, { db: 3 }, open);
          assert.equal(await db3.get('own:db3'), 'v3');
          assert.equal(await observer.get('own:db3'), null);
        } finally {
          await byOptions.quit();
          await byUrl.quit();
        }
      });
    });
  }
});

describe('RedisClient options (no server needed)', () => {
  it('rejects invalid options with ERR_INVALID_OPTION', () => {
    assert.throws(() => new RedisClient({ port: 'abc' }), (err) => err.code === 'ERR_INVALID_OPTION');
    assert.throws(() => new RedisClient({ nope: true }), (err) => err.code === 'ERR_INVALID_OPTION');
  });
});
