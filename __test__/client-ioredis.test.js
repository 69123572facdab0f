'use strict';

// RedisClient as ioredis 5's Redis / Cluster: node-style callbacks on every command (as
// standard-as-callback calls them in ioredis), a function never written to Redis as data, and
// HGETALL's object with every field as an own property (`__proto__`, `constructor`, ... included),
// compared with a real ioredis client on the same server.
//
// Runs against one redis-server and a Redis Cluster (through the topology matrix). Keys used
// together in one command share a hash tag, so that a cluster keeps them in one slot.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const RedisStorageAdapter = require('..');
const { RedisClient } = require('..');
const { rejectsWithCode, within, closeAll, topologies } = require('./helpers');

const ROOT = path.join(__dirname, '..');

/**
 * Calls `start(cb)` with a callback that records its arguments; resolves `{ args, returned, calls }`
 * (`returned`: what `start` returned) 50 ms after the first call, so that a second call shows.
 */
function viaCallback(start) {
  return within(
    10000,
    new Promise((resolve) => {
      let calls = 0;
      let returned;
      const cb = function callback(...args) {
        calls += 1;
        if (calls === 1) setTimeout(() => resolve({ args, returned, calls }), 50);
      };
      returned = start(cb);
    }),
    'callback',
  );
}

/** The settled outcome of a promise, without throwing. */
function settled(promise) {
  return promise.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason) => ({ status: 'rejected', reason }),
  );
}

const { NODE_TEST_CONTEXT: _testContext, ...childEnv } = process.env;

/** Runs `script` in a child node with `CLIENT_OPTIONS` in its environment; resolves { code, stdout, stderr }. */
function runChild(script, clientOptions) {
  return within(
    30000,
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', script], {
        cwd: ROOT,
        env: { ...childEnv, CLIENT_OPTIONS: JSON.stringify(clientOptions) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    }),
    'child process',
  );
}

const SPECIAL_FIELDS = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'];

for (const topo of topologies()) describe(`RedisClient as ioredis (${topo.name})`, () => {
  let target;
  let observer; // a real ioredis Redis / Cluster on the same server
  let client;
  const open = [];

  function clientWith(connection = {}) {
    const c = new RedisClient(topo.clientOptions(target, connection));
    open.push(c);
    return c;
  }

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target));
    open.push(adapter);
    client = adapter.client;
  });
  after(async () => {
    await closeAll(open);
    await target?.stop();
  });

  describe('node-style callbacks', () => {
    it('get, set with PX, call, hgetall, incr, del, mget: cb(null, result) once, as ioredis calls it; the promise is returned too', async () => {
      await observer.del('cb:{a}str', 'cb:{a}miss', 'cb:{a}n', 'cb:{a}h');
      await observer.hset('cb:{a}h', 'f', 'v', 'g', 'w');
      const cases = [
        [(c, cb) => c.get('cb:{a}miss', cb), null],
        [(c, cb) => c.set('cb:{a}str', 'v1', 'PX', 100000, cb), 'OK'],
        [(c, cb) => c.get('cb:{a}str', cb), 'v1'],
        [(c, cb) => c.call('GET', 'cb:{a}str', cb), 'v1'],
        [(c, cb) => c.call('get', 'cb:{a}str', cb), 'v1'],
        [(c, cb) => c.hgetall('cb:{a}h', cb), { f: 'v', g: 'w' }],
        [(c, cb) => c.hgetall('cb:{a}miss', cb), {}],
        [(c, cb) => c.mget('cb:{a}str', 'cb:{a}miss', cb), ['v1', null]],
        [(c, cb) => c.mget(['cb:{a}str', 'cb:{a}miss'], cb), ['v1', null]],
        [(c, cb) => c.exists('cb:{a}str', cb), 1],
        [(c, cb) => c.ping(cb), 'PONG'],
      ];
      for (const [run, expected] of cases) {
        const ours = await viaCallback((cb) => run(client, cb));
        const theirs = await viaCallback((cb) => run(observer, cb));
        assert.deepStrictEqual(ours.args, [null, expected], String(run));
        assert.deepStrictEqual(ours.args, theirs.args, `same callback arguments as ioredis: ${run}`);
        assert.equal(ours.calls, 1, String(run));
        assert.ok(ours.returned instanceof Promise, `still returns a promise: ${run}`);
        assert.deepStrictEqual(await ours.returned, expected, String(run));
      }
      // Commands that count: the callback form runs each one once.
      const n1 = await viaCallback((cb) => client.incr('cb:{a}n', cb));
      assert.deepStrictEqual(n1.args, [null, 1]);
      const n2 = await viaCallback((cb) => client.incrby('cb:{a}n', 5, cb));
      assert.deepStrictEqual(n2.args, [null, 6]);
      assert.equal(await observer.get('cb:{a}n'), '6');
      const del = await viaCallback((cb) => client.del('cb:{a}n', 'cb:{a}str', cb));
      assert.deepStrictEqual(del.args, [null, 2]);
      assert.equal(await observer.exists('cb:{a}n', 'cb:{a}str'), 0);
    });

    it('an error reply: cb(err) alone, with err.code, and the returned promise rejects with the same error', async () => {
      await observer.set('cb:wrongtype', 'string');
      for (const run of [
        (c, cb) => c.hset('cb:wrongtype', 'f', 'v', cb),
        (c, cb) => c.call('LPUSH', 'cb:wrongtype', 'x', cb),
        (c, cb) => c.hgetall('cb:wrongtype', cb),
        (c, cb) => c.get('cb:wrongtype', 'extra', cb), // wrong number of arguments
      ]) {
        const ours = await viaCallback((cb) => run(client, cb));
        const theirs = await viaCallback((cb) => run(observer, cb));
        assert.equal(ours.args.length, 1, `cb(err) with one argument, as ioredis: ${run}`);
        assert.equal(theirs.args.length, 1);
        const [err] = ours.args;
        assert.ok(err instanceof Error);
        assert.equal(err.code, 'ERR_REPLY', err.message);
        assert.equal(err.message, theirs.args[0].message, 'the message is the server reply, as in ioredis');
        assert.equal(ours.calls, 1);
        const outcome = await settled(ours.returned);
        assert.equal(outcome.status, 'rejected');
        assert.equal(outcome.reason, err);
      }
      assert.equal(await observer.get('cb:wrongtype'), 'string');
    });

    it('an invalid call reaches the callback: a non-string command name, a refused command (ERR_INVALID_ARG)', async () => {
      const badName = await viaCallback((cb) => client.call(42, cb));
      assert.equal(badName.args.length, 1);
      assert.equal(badName.args[0].code, 'ERR_INVALID_ARG');
      assert.ok(badName.args[0] instanceof TypeError);
      const refused = await viaCallback((cb) => client.call('SELECT', 1, cb));
      assert.equal(refused.args.length, 1);
      assert.equal(refused.args[0].code, 'ERR_INVALID_ARG');
      assert.equal((await settled(refused.returned)).status, 'rejected');
      // The client is still fine afterwards.
      assert.equal(await client.ping(), 'PONG');
    });

    it('quit(cb) on a client of its own: cb(null, "OK"); a command after it: cb(err) with ERR_CLOSED', async () => {
      const own = clientWith();
      assert.equal(await own.set('cb:quit', 'v'), 'OK');
      const quit = await viaCallback((cb) => own.quit(cb));
      assert.deepStrictEqual(quit.args, [null, 'OK']);
      assert.equal(await quit.returned, 'OK');
      assert.equal(own.status, 'end');
      const late = await viaCallback((cb) => own.get('cb:quit', cb));
      assert.equal(late.args.length, 1);
      assert.equal(late.args[0].code, 'ERR_CLOSED');
      await rejectsWithCode(late.returned, 'ERR_CLOSED');
    });

    it('callbacks run in call order, and mixed with awaited calls', async () => {
      await observer.del('cb:order');
      const seen = [];
      const done = new Promise((resolve) => {
        for (let i = 0; i < 50; i += 1) {
          client.rpush('cb:order', String(i), (err, len) => {
            seen.push(err ? err : len);
            if (seen.length === 50) resolve();
          });
        }
      });
      await within(10000, done, '50 callbacks');
      assert.deepStrictEqual(seen, Array.from({ length: 50 }, (_, i) => i + 1));
      assert.deepStrictEqual(await client.lrange('cb:order', 0, -1), Array.from({ length: 50 }, (_, i) => String(i)));
    });

    it('a throwing callback is rethrown as an uncaught exception (as ioredis), and a rejection handed to a callback is not unhandled', async () => {
      const script = `
        const { RedisClient } = require('.');
        const client = new RedisClient(JSON.parse(process.env.CLIENT_OPTIONS));
        const events = [];
        process.on('unhandledRejection', (reason) => events.push('unhandledRejection: ' + (reason && reason.message)));
        process.on('uncaughtException', (err) => events.push('uncaught: ' + err.message));
        // a rejection seen only by its callback, its promise dropped
        client.call('SELECT', 1, () => {});
        client.get('child:cb', () => { throw new Error('thrown by the callback'); });
        setTimeout(() => {
          client.disconnect();
          console.log(JSON.stringify(events));
        }, 1000);
      `;
      const { code, stdout, stderr } = await runChild(script, topo.clientOptions(target));
      assert.equal(code, 0, stderr);
      assert.deepStrictEqual(JSON.parse(stdout.trim()), ['uncaught: thrown by the callback'], stderr);
    });
  });

  describe('a function is never data', () => {
    it('a callback as the last argument is not written to Redis', async () => {
      await observer.del('fn:{c}set', 'fn:{c}str', 'fn:{c}list', 'fn:{c}hash', 'fn:{c}call');
      const cb = function callbackWithSourceText() {
        return 'must not be stored';
      };
      const noop = () => {};
      assert.equal(await client.sadd('fn:{c}set', 'm1', noop), 1);
      assert.equal(await client.sadd('fn:{c}set', 'm2', cb), 1);
      assert.deepStrictEqual((await observer.smembers('fn:{c}set')).sort(), ['m1', 'm2']);
      assert.equal(await client.set('fn:{c}str', 'v', cb), 'OK');
      assert.equal(await observer.get('fn:{c}str'), 'v');
      assert.equal(await client.rpush('fn:{c}list', 'a', 'b', cb), 2);
      assert.deepStrictEqual(await observer.lrange('fn:{c}list', 0, -1), ['a', 'b']);
      assert.equal(await client.hset('fn:{c}hash', { f: 'v' }, cb), 1);
      assert.deepStrictEqual(await observer.hgetall('fn:{c}hash'), { f: 'v' });
      assert.equal(await client.call('SADD', 'fn:{c}call', 'only', cb), 1);
      assert.deepStrictEqual(await observer.smembers('fn:{c}call'), ['only']);
      // get(key, cb) is GET key (not "wrong number of arguments")
      assert.equal(await client.get('fn:{c}str', noop), 'v');
    });

    it('a function anywhere else rejects ERR_INVALID_ARG (a TypeError) and writes nothing', async () => {
      await observer.del('fn:{m}set', 'fn:{m}str', 'fn:{m}hash');
      const fn = function middle() {};
      const attempts = [
        () => client.sadd('fn:{m}set', 'a', fn, 'b'),
        () => client.sadd('fn:{m}set', fn, 'b'),
        () => client.set('fn:{m}str', fn, 'PX', 1000),
        () => client.del(['fn:{m}set', fn]),
        () => client.hset('fn:{m}hash', { f: fn }),
        () => client.hset('fn:{m}hash', new Map([['f', fn]])),
        () => client.call('SET', 'fn:{m}str', fn, 'x'),
        () => client.call(fn),
        () => client.sadd('fn:{m}set', 'a', fn, undefined), // a callback is only the last argument
      ];
      for (const attempt of attempts) {
        const err = await rejectsWithCode(attempt, 'ERR_INVALID_ARG');
        assert.ok(err instanceof TypeError, String(attempt));
        assert.match(err.message, /function/, String(attempt));
      }
      assert.equal(await observer.exists('fn:{m}set', 'fn:{m}str', 'fn:{m}hash'), 0);
    });

    it('with a callback too: the callback gets the ERR_INVALID_ARG error', async () => {
      const outcome = await viaCallback((cb) => client.sadd('fn:cbset', 'a', () => {}, 'b', cb));
      assert.equal(outcome.args.length, 1);
      assert.equal(outcome.args[0].code, 'ERR_INVALID_ARG');
      assert.ok(outcome.args[0] instanceof TypeError);
      assert.equal((await settled(outcome.returned)).reason, outcome.args[0]);
      assert.equal(await observer.exists('fn:cbset'), 0);
    });
  });

  describe('hgetall as ioredis builds it', () => {
    /** Own property descriptors, in key order, and the prototype. */
    const shape = (obj) => ({
      proto: Object.getPrototypeOf(obj),
      keys: Reflect.ownKeys(obj),
      descriptors: Object.getOwnPropertyDescriptors(obj),
    });

    it('fields named __proto__, constructor, toString, hasOwnProperty, ... are own properties, exactly as in ioredis', async () => {
      const key = 'hg:special';
      await observer.del(key);
      const pairs = [];
      SPECIAL_FIELDS.forEach((field, i) => pairs.push(field, `v${i}`));
      pairs.push('plain', 'p');
      // Written through our client, read through both.
      assert.equal(await client.hset(key, ...pairs), SPECIAL_FIELDS.length + 1);
      const ours = await client.hgetall(key);
      const theirs = await observer.hgetall(key);
      assert.deepStrictEqual(shape(ours), shape(theirs));
      assert.deepStrictEqual(ours, theirs);
      assert.equal(Object.getPrototypeOf(ours), Object.prototype);
      assert.equal(Object.keys(ours).length, SPECIAL_FIELDS.length + 1);
      SPECIAL_FIELDS.forEach((field, i) => {
        assert.ok(Object.prototype.hasOwnProperty.call(ours, field), field);
        assert.equal(ours[field], `v${i}`, field);
        assert.deepStrictEqual(Object.getOwnPropertyDescriptor(ours, field), {
          value: `v${i}`,
          writable: true,
          enumerable: true,
          configurable: true,
        });
      });
      assert.equal(JSON.stringify(ours), JSON.stringify(theirs));
      assert.deepStrictEqual(Object.entries(ours), Object.entries(theirs));

      // The same through the callback form and through call(), as ioredis: `call('hgetall')`
      // is transformed (ioredis keys its transformer by the exact name), `call('HGETALL')` is not.
      const viaCb = await viaCallback((cb) => client.hgetall(key, cb));
      const viaCbTheirs = await viaCallback((cb) => observer.hgetall(key, cb));
      assert.deepStrictEqual(shape(viaCb.args[1]), shape(viaCbTheirs.args[1]));
      assert.deepStrictEqual(shape(await client.call('hgetall', key)), shape(await observer.call('hgetall', key)));
      assert.deepStrictEqual(await client.call('HGETALL', key), await observer.call('HGETALL', key));
    });

    it('the values round-trip: hset from the object ours returned writes the same hash', async () => {
      await observer.del('hg:{rt}a', 'hg:{rt}b');
      const pairs = SPECIAL_FIELDS.flatMap((f) => [f, `${f}-value`]);
      await observer.hset('hg:{rt}a', ...pairs);
      const obj = await client.hgetall('hg:{rt}a');
      // hset with an object takes its own enumerable keys (Object.keys): __proto__ included.
      assert.equal(await client.hset('hg:{rt}b', obj), SPECIAL_FIELDS.length);
      assert.deepStrictEqual(await observer.hgetall('hg:{rt}b'), await observer.hgetall('hg:{rt}a'));
    });

    it('a field named like a read-only property of Object.prototype does not throw', async () => {
      const field = 'alovaReadOnlyProbe';
      await observer.del('hg:readonly');
      await observer.hset('hg:readonly', field, 'x', 'other', 'y');
      Object.defineProperty(Object.prototype, field, { value: 'inherited', writable: false, configurable: true });
      let ours;
      let theirs;
      try {
        ours = await client.hgetall('hg:readonly');
        theirs = await observer.hgetall('hg:readonly');
      } finally {
        delete Object.prototype[field];
      }
      assert.deepStrictEqual(shape(ours), shape(theirs));
      assert.equal(Object.getOwnPropertyDescriptor(ours, field).value, 'x');
    });

    it('with Object.prototype frozen (a hardened process), every field is still there', async () => {
      await observer.del('hg:frozen');
      await observer.hset('hg:frozen', ...SPECIAL_FIELDS.flatMap((f) => [f, f.toUpperCase()]), 'plain', 'p');
      const script = `
        'use strict';
        const { RedisClient } = require('.');
        const client = new RedisClient(JSON.parse(process.env.CLIENT_OPTIONS));
        Object.freeze(Object.prototype);
        client.hgetall('hg:frozen').then(
          (obj) => console.log(JSON.stringify({ keys: Object.keys(obj), values: Object.values(obj) })),
          (err) => console.log(JSON.stringify({ error: err.message })),
        ).finally(() => client.disconnect());
      `;
      const { code, stdout, stderr } = await runChild(script, topo.clientOptions(target));
      assert.equal(code, 0, stderr);
      assert.deepStrictEqual(JSON.parse(stdout.trim()), {
        keys: [...SPECIAL_FIELDS, 'plain'],
        values: [...SPECIAL_FIELDS.map((f) => f.toUpperCase()), 'p'],
      });
    });
  });
});
