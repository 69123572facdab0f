'use strict';

// Bad input, bad servers and bad luck: every failure is an Error with a documented code, comes
// at the earliest point, never hangs and never reveals a password.
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// shared by the file). Options are checked without a server. Passwords of one server, dead ports,
// scripted servers and a server killed by pid are one-server cases (the cluster's own, AUTH and no
// startup node answering, are in cluster-client.test.js; its failover in cluster-failover.test.js).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { startRedis, freePort, HOST } = require('./servers');
const { fakeServer, blackHole } = require('./fakes');
const {
  ERROR_CODES,
  errorText,
  rejectsWithCode,
  throwsWithCode,
  within,
  waitFor,
  ioredisFor,
  closeAll,
  topologies,
  scanAll,
  keyNodes,
} = require('./helpers');

const PASSWORD = 'correct-horse-battery-staple';

const WRONG_PASSWORD = 'wrong-password-do-not-print';

describe('errors: options (no server needed)', () => {
  describe('invalid options throw ERR_INVALID_OPTION at construction', () => {
    const cases = [
      ['port is not numeric', { port: 'abc' }, 'port'],
      ['port out of range', { port: 70000 }, 'port'],
      ['port negative', { port: -1 }, 'port'],
      ['db negative', { db: -1 }, 'db'],
      ['db not an integer', { db: 1.5 }, 'db'],
      ['db a word', { db: 'first' }, 'db'],
      ['tls a string', { tls: 'yes' }, 'tls'],
      ['tls a number', { tls: 1 }, 'tls'],
      ['unknown option', { foo: 1 }, 'foo'],
      ['host not a string', { host: 42 }, 'host'],
      ['connectTimeout not a number', { connectTimeout: 'soon' }, 'connectTimeout'],
      ['commandTimeout negative', { commandTimeout: -5 }, 'commandTimeout'],
      ['keyPrefix not a string', { keyPrefix: 42 }, 'keyPrefix'],
      ['retryStrategy not a function', { retryStrategy: 'fast' }, 'retryStrategy'],
      ['url with a foreign scheme', { url: 'http://127.0.0.1:6379' }, 'url'],
      ['url that is no URL', { url: 'redis://host:notaport' }, 'url'],
      ['client of no known shape', { client: { foo: 1 } }, 'client'],
    ];
    for (const [name, options, option] of cases) {
      it(`${name}: ${JSON.stringify(options)}`, () => {
        throwsWithCode(() => new RedisStorageAdapter(options), 'ERR_INVALID_OPTION', { mentions: option });
      });
    }

    it('rejects options that are neither an object nor a URL string', () => {
      for (const options of [42, true, [], () => {}]) {
        throwsWithCode(() => new RedisStorageAdapter(options), 'ERR_INVALID_OPTION');
      }
    });

    it('never puts the password into an option error', () => {
      const secret = 'hunter2-option-secret';
      throwsWithCode(
        () => new RedisStorageAdapter({ password: secret, port: 'abc' }),
        'ERR_INVALID_OPTION',
        { secrets: [secret] },
      );
      throwsWithCode(
        () => new RedisStorageAdapter({ url: `redis://user:${secret}@127.0.0.1:notaport/0` }),
        'ERR_INVALID_OPTION',
        { secrets: [secret] },
      );
      throwsWithCode(
        () => new RedisStorageAdapter({ password: secret, db: -1 }),
        'ERR_INVALID_OPTION',
        { secrets: [secret] },
      );
    });
  });
});

for (const topo of topologies()) describe(`errors (${topo.name})`, () => {
  let target; // shared, never killed
  let observer;
  const open = [];
  /** An adapter on the target: `opts` adapter options, `connection` ioredis connection options. */
  const adapter = (opts = {}, connection = {}) => {
    const a = new RedisStorageAdapter(topo.adapterOptions(target, opts, connection));
    open.push(a);
    return a;
  };

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
  });
  after(async () => {
    await closeAll(open);
    await target?.stop();
  });

  describe('values that JSON cannot hold reject ERR_INVALID_ARG and write nothing', () => {
    const circular = { name: 'loop' };
    circular.self = circular;
    const deepCircular = { a: [{ b: {} }] };
    deepCircular.a[0].b.back = deepCircular.a;
    const cases = [
      ['a circular object', circular],
      ['a circular array inside an object', deepCircular],
      ['a BigInt', 10n],
      ['an object holding a BigInt', { count: 1n }],
      ['an expiring entry holding a BigInt', [{ n: 2n }, Date.now() + 60000]],
      ['undefined', undefined],
      ['a function', () => 1],
      ['a symbol', Symbol('s')],
    ];
    for (const [name, value] of cases) {
      it(name, async () => {
        const a = adapter({ keyPrefix: 'bad-value:' });
        const key = `fresh-${name}`;
        await rejectsWithCode(() => a.set(key, value), 'ERR_INVALID_ARG');
        assert.equal(await observer.exists(`bad-value:${key}`), 0);
        // An existing value stays as it was.
        await a.set('kept', { v: 'old' });
        await rejectsWithCode(() => a.set('kept', value), 'ERR_INVALID_ARG');
        assert.deepEqual(await a.get('kept'), { v: 'old' });
      });
    }
  });

  describe('keys that are not strings reject ERR_INVALID_ARG', () => {
    const keys = [42, null, undefined, {}, ['k'], true, Symbol('k'), Buffer.from('k')];
    for (const method of ['set', 'get', 'remove']) {
      it(`${method}()`, async () => {
        const a = adapter({ keyPrefix: 'bad-key:' });
        for (const key of keys) {
          await rejectsWithCode(() => a[method](key, 'value'), 'ERR_INVALID_ARG', { mentions: 'key' });
        }
        assert.deepEqual(await scanAll(observer, 'bad-key:*'), []);
      });
    }
  });

  describe('stored data the adapter cannot read', () => {
    it('a stored string that is not JSON rejects ERR_INVALID_VALUE', async () => {
      const a = adapter({ keyPrefix: 'foreign:' });
      await observer.set('foreign:text', 'not json {');
      await rejectsWithCode(() => a.get('text'), 'ERR_INVALID_VALUE');
      // The adapter is still usable afterwards.
      await a.set('text', 'fixed');
      assert.equal(await a.get('text'), 'fixed');
    });

    it('a key of another type rejects ERR_REPLY (WRONGTYPE)', async () => {
      const a = adapter({ keyPrefix: 'foreign:' });
      await observer.hset('foreign:hash', 'f', 'v');
      await rejectsWithCode(() => a.get('hash'), 'ERR_REPLY', { mentions: 'WRONGTYPE' });
    });
  });

  describe('a server that holds the command', () => {
    it('commandTimeout rejects ERR_TIMEOUT while the server holds the command, then recovers', async () => {
      const a = adapter({ keyPrefix: 'ct:' }, { commandTimeout: 100 });
      await a.set('k', 1); // connected
      // (On a cluster, every master holds its writes.)
      const pausers = await keyNodes(observer);
      for (const pauser of pausers) await pauser.call('CLIENT', 'PAUSE', '20000', 'WRITE');
      try {
        await within(10000, rejectsWithCode(() => a.set('k', 2), 'ERR_TIMEOUT'), 'set to a paused server');
      } finally {
        for (const pauser of pausers) await pauser.call('CLIENT', 'UNPAUSE');
      }
      await a.set('k', 3);
      assert.equal(await a.get('k'), 3);
    });
  });

  describe('after close', () => {
    it('set/get/remove/clear reject ERR_CLOSED and close() may be called again', async () => {
      const a = adapter({ keyPrefix: 'closed:' });
      await a.set('k', 1);
      await a.close();
      await rejectsWithCode(() => a.set('k', 2), 'ERR_CLOSED');
      await rejectsWithCode(() => a.get('k'), 'ERR_CLOSED');
      await rejectsWithCode(() => a.remove('k'), 'ERR_CLOSED');
      await rejectsWithCode(() => a.clear(), 'ERR_CLOSED');
      await a.close();
      assert.equal(await observer.get('closed:k'), '1');
    });

    it('an adapter closed before it ever connected rejects ERR_CLOSED', async () => {
      const a = adapter({}, { lazyConnect: true });
      await a.close();
      await rejectsWithCode(() => a.get('k'), 'ERR_CLOSED');
    });

    it('operations issued before close() settle; none hangs', async () => {
      const a = adapter({ keyPrefix: 'closing:' });
      await a.set('warm', 1);
      const pending = Array.from({ length: 100 }, (_, i) => a.set(`k${i}`, i));
      const closing = a.close();
      const settled = await within(10000, Promise.allSettled(pending), 'operations around close()');
      await within(10000, closing, 'close()');
      for (const result of settled) {
        if (result.status === 'rejected') assert.equal(result.reason.code, 'ERR_CLOSED');
      }
    });

    it('client.quit() closes the adapter: operations reject ERR_CLOSED', async () => {
      const a = adapter();
      await a.set('k', 1);
      assert.equal(await a.client.quit(), 'OK');
      await rejectsWithCode(() => a.get('k'), 'ERR_CLOSED');
    });
  });

  if (!topo.cluster) {
    describe('one server only (AUTH of one server, dead ports, scripted servers, a server killed by pid: see cluster-client.test.js and cluster-failover.test.js for the cluster)', () => {
      describe('authentication', () => {
        let secured;
        before(async () => {
          secured = await startRedis({ password: PASSWORD });
        });
        after(async () => {
          await secured?.stop();
        });

        const authAdapter = (opts) => {
          const a = new RedisStorageAdapter({ host: secured.host, port: secured.port, ...opts });
          open.push(a);
          return a;
        };

        it('a wrong password rejects ERR_AUTH and no message names either password', async () => {
          const a = authAdapter({ password: WRONG_PASSWORD });
          await within(20000, rejectsWithCode(() => a.set('k', 1), 'ERR_AUTH', {
            secrets: [WRONG_PASSWORD, PASSWORD],
          }), 'set with a wrong password');
          await within(20000, rejectsWithCode(() => a.get('k'), 'ERR_AUTH', {
            secrets: [WRONG_PASSWORD, PASSWORD],
          }), 'get with a wrong password');
        });

        it('a wrong password in a URL rejects ERR_AUTH without revealing it', async () => {
          const a = authAdapter({ url: `redis://:${WRONG_PASSWORD}@${secured.host}:${secured.port}/0` });
          await within(20000, rejectsWithCode(() => a.set('k', 1), 'ERR_AUTH', {
            secrets: [WRONG_PASSWORD, PASSWORD],
          }), 'set with a wrong URL password');
        });

        it('a wrong username rejects ERR_AUTH', async () => {
          const a = authAdapter({ username: 'nobody', password: PASSWORD });
          await within(20000, rejectsWithCode(() => a.set('k', 1), 'ERR_AUTH', { secrets: [PASSWORD] }));
        });

        it('no password on a protected server rejects ERR_AUTH', async () => {
          const a = authAdapter({});
          await within(20000, rejectsWithCode(() => a.set('k', 1), 'ERR_AUTH'));
        });

        it('the right password works', async () => {
          const a = authAdapter({ password: PASSWORD, keyPrefix: 'auth:' });
          await a.set('k', { ok: true });
          assert.deepEqual(await a.get('k'), { ok: true });
        });
      });

      describe('unreachable and unresponsive servers', () => {
        it('an unreachable port rejects ERR_CONNECTION quickly with retryStrategy: () => null', async () => {
          const port = await freePort();
          const a = new RedisStorageAdapter({ host: HOST, port, retryStrategy: () => null });
          open.push(a);
          await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_CONNECTION'), 'set to a dead port');
          await within(10000, rejectsWithCode(() => a.get('k'), 'ERR_CONNECTION'), 'get to a dead port');
        });

        it('a retryStrategy that throws stops reconnecting with a warning, not a crash', async () => {
          const port = await freePort();
          const warnings = [];
          const onWarning = (w) => warnings.push(w);
          process.on('warning', onWarning);
          try {
            const a = new RedisStorageAdapter({
              host: HOST,
              port,
              retryStrategy: () => {
                throw new Error('strategy bug');
              },
            });
            open.push(a);
            await within(10000, rejectsWithCode(() => a.get('k'), 'ERR_CONNECTION'), 'get to a dead port');
            await waitFor(() => warnings.some((w) => w.code === 'ERR_RETRY_STRATEGY'), { what: 'the warning' });
            assert.match(warnings.find((w) => w.code === 'ERR_RETRY_STRATEGY').message, /strategy bug/);
          } finally {
            process.off('warning', onWarning);
          }
        });

        it('an unreachable port rejects ERR_CONNECTION quickly with maxRetriesPerRequest: 0', async () => {
          const port = await freePort();
          const a = new RedisStorageAdapter({ host: HOST, port, maxRetriesPerRequest: 0 });
          open.push(a);
          await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_CONNECTION'), 'set to a dead port');
        });

        it('an unreachable port with lazyConnect rejects ERR_CONNECTION on first use', async () => {
          const port = await freePort();
          const a = new RedisStorageAdapter({ host: HOST, port, lazyConnect: true, maxRetriesPerRequest: 0 });
          open.push(a);
          await within(10000, rejectsWithCode(() => a.get('k'), 'ERR_CONNECTION'), 'get to a dead port');
        });

        it('connection errors never reveal the password', async () => {
          const port = await freePort();
          const secret = 'never-print-this-password';
          const byOptions = new RedisStorageAdapter({ host: HOST, port, password: secret, retryStrategy: () => null });
          const byUrl = new RedisStorageAdapter({ url: `redis://user:${secret}@${HOST}:${port}/0`, retryStrategy: () => null });
          open.push(byOptions, byUrl);
          await within(10000, rejectsWithCode(() => byOptions.set('k', 1), 'ERR_CONNECTION', { secrets: [secret] }));
          await within(10000, rejectsWithCode(() => byUrl.get('k'), 'ERR_CONNECTION', { secrets: [secret] }));
        });

        it('connectTimeout is honoured by a server that accepts but never answers', async () => {
          const mute = await blackHole();
          try {
            const a = new RedisStorageAdapter({
              host: HOST,
              port: mute.port,
              connectTimeout: 300,
              retryStrategy: () => null,
            });
            open.push(a);
            await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_TIMEOUT'), 'set to a mute server');
            await a.close();
          } finally {
            await mute.close();
          }
        });
      });

      describe('servers that answer nonsense', () => {
        it('a reply of the wrong type for GET rejects ERR_PROTOCOL', async () => {
          const fake = await fakeServer(() => ':42\r\n');
          try {
            const a = new RedisStorageAdapter({ host: HOST, port: fake.port, retryStrategy: () => null });
            open.push(a);
            await within(10000, rejectsWithCode(() => a.get('k'), 'ERR_PROTOCOL'), 'get from a fake server');
            await a.close();
          } finally {
            await fake.close();
          }
        });

        it('bytes that are not RESP reject with a documented code, no hang, no crash', async () => {
          const fake = await fakeServer(() => '!!! this is not redis !!!\r\n');
          try {
            const a = new RedisStorageAdapter({ host: HOST, port: fake.port, retryStrategy: () => null });
            open.push(a);
            await within(10000, assert.rejects(() => a.get('k'), (err) => {
              assert.ok(['ERR_PROTOCOL', 'ERR_CONNECTION'].includes(err.code), `${err.code}: ${err.message}`);
              return true;
            }), 'get from a garbage server');
            await a.close();
          } finally {
            await fake.close();
          }
        });
      });

      describe('a server that goes away', () => {
        it('enableOfflineQueue: false rejects ERR_CONNECTION while disconnected, then recovers', async () => {
          const own = await startRedis();
          try {
            const a = new RedisStorageAdapter({ host: own.host, port: own.port, enableOfflineQueue: false });
            open.push(a);
            // As in ioredis, even the first commands fail fast until the connection is up.
            await waitFor(() => a.set('k', 1).then(() => true), { what: 'the first connection' });
            await own.kill('SIGKILL');
            await within(10000, rejectsWithCode(() => a.set('k', 2), 'ERR_CONNECTION'), 'set while down');
            await within(10000, rejectsWithCode(() => a.get('k'), 'ERR_CONNECTION'), 'get while down');
            await own.restart();
            // Commands fail fast until the reconnect lands; then they work again on the same adapter.
            await waitFor(() => a.set('k', 3).then(() => true), {
              timeout: 20000,
              what: 'a set after the restart',
            });
            assert.equal(await a.get('k'), 3);
          } finally {
            await own.stop();
          }
        });

        it('maxRetriesPerRequest bounds the wait for a server that stays down', async () => {
          const own = await startRedis();
          try {
            const a = new RedisStorageAdapter({
              host: own.host,
              port: own.port,
              maxRetriesPerRequest: 2,
              retryStrategy: () => 50,
            });
            open.push(a);
            await a.set('k', 1);
            await own.kill('SIGKILL');
            await within(15000, rejectsWithCode(() => a.set('k', 2), 'ERR_CONNECTION'), 'set while down');
            await own.restart();
            await waitFor(() => a.set('k', 3).then(() => true), { timeout: 20000, what: 'recovery' });
            assert.equal(await a.get('k'), 3);
          } finally {
            await own.stop();
          }
        });

        it('survives SIGKILL mid-traffic (200 concurrent set/get) and a restart on the same port', { timeout: 120000 }, async (t) => {
          const own = await startRedis();
          const watcher = ioredisFor(own, {}, open);
          const payload = (i, n) => ({
            i,
            n,
            body: 'é'.repeat(1000 + (i % 40) * 500),
            list: Array.from({ length: 50 }, (_, j) => `${i}:${j}`),
          });
          const checkValue = (value, i) => {
            assert.equal(value.i, i);
            assert.equal(value.body.length, 1000 + (i % 40) * 500);
            assert.equal(value.list.length, 50);
            assert.equal(value.list[49], `${i}:49`);
          };
          try {
            const a = new RedisStorageAdapter({ host: own.host, port: own.port, keyPrefix: 'chaos:' });
            open.push(a);
            await a.set('warm', 1);

            const failures = [];
            const wrongValues = [];
            let ok = 0;
            let okAfterRestart = 0;
            let restarted = false;
            let stop = false;
            const lane = async (i) => {
              for (let n = 1; !stop; n += 1) {
                try {
                  if (n % 2 === 1) {
                    await a.set(`k${i}`, payload(i, n));
                  } else {
                    const value = await a.get(`k${i}`);
                    if (value !== undefined) {
                      try {
                        checkValue(value, i);
                      } catch (err) {
                        wrongValues.push(err);
                      }
                    }
                  }
                  ok += 1;
                  if (restarted) okAfterRestart += 1;
                } catch (err) {
                  if (failures.length < 1000) failures.push(err);
                  await new Promise((resolve) => setTimeout(resolve, 10)); // no hot loop on failures
                }
              }
            };
            const lanes = Array.from({ length: 200 }, (_, i) => lane(i));

            await waitFor(() => ok >= 2000, { timeout: 30000, what: 'traffic before the kill' });
            await own.kill('SIGKILL');
            await own.restart();
            restarted = true;
            await waitFor(() => okAfterRestart >= 2000, { timeout: 60000, what: 'traffic after the restart' });
            stop = true;
            await within(30000, Promise.all(lanes), 'the lanes to finish');
            const codes = {};
            for (const err of failures) codes[err.code] = (codes[err.code] || 0) + 1;
            t.diagnostic(`ok ${ok} (after restart ${okAfterRestart}), failures ${JSON.stringify(codes)}`);

            for (const err of failures) {
              assert.ok(err instanceof Error, `not an Error: ${errorText(err)}`);
              assert.ok(ERROR_CODES.has(err.code), `undocumented code ${err.code}: ${errorText(err)}`);
              assert.ok(
                !['ERR_INVALID_VALUE', 'ERR_PROTOCOL', 'ERR_INVALID_ARG'].includes(err.code),
                `a read saw a damaged value or reply: ${errorText(err)}`,
              );
            }
            assert.deepEqual(wrongValues, [], 'a get returned a value of another key or a cut one');

            // The same adapter works again.
            await a.set('after', { back: true });
            assert.deepEqual(await a.get('after'), { back: true });

            // Nothing half-written: every key holds a complete value.
            const keys = await watcher.keys('chaos:k*');
            assert.ok(keys.length > 0);
            for (const key of keys) {
              const raw = await watcher.get(key);
              const value = JSON.parse(raw);
              checkValue(value, Number(key.slice('chaos:k'.length)));
            }
          } finally {
            await own.stop();
          }
        });
      });
    });
  }
});
