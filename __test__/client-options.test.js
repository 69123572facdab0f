'use strict';

// ioredis options that used to be refused (issue 11, item 5): reconnectOnError (with 1 and 2)
// on a client and on the adapter, and socketTimeout against a server that stops answering
// (SIGSTOP) without closing its socket.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, waitFor, within } = require('./helpers');
const { startRedis } = require('./servers');

/** A script that fails with a READONLY-like error the first time it runs for `key`. */
const FLAKY = "if redis.call('INCR', KEYS[1]) == 1 then return redis.error_reply('READONLY first try') end return 'ok'";

describe('reconnectOnError and socketTimeout', () => {
  let server;
  const registry = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await closeAll(registry);
    await server.stop();
  });
  const client = (extra = {}) => {
    const c = new RedisClient({ port: server.port, ...extra });
    registry.push(c);
    return c;
  };

  it('reconnectOnError: true reconnects and the command rejects; 2 also sends it again', { timeout: 20000 }, async () => {
    const seen = [];
    let verdict = true;
    const c = client({
      reconnectOnError: (err) => {
        seen.push(err.message);
        return verdict;
      },
    });
    const before = await c.call('CLIENT', 'ID');
    await assert.rejects(c.call('EVAL', FLAKY, 1, 'roe:a'), (err) => err.code === 'ERR_REPLY' && /READONLY/.test(err.message));
    assert.equal(seen.length, 1);
    await waitFor(async () => (await c.call('CLIENT', 'ID')) !== before, { what: 'a new connection' });
    // 2: the command is sent again (and succeeds the second time).
    verdict = 2;
    assert.equal(await c.call('EVAL', FLAKY, 1, 'roe:b'), 'ok');
    assert.equal(seen.length, 2);
    // An error it says no to changes nothing.
    verdict = false;
    const id = await c.call('CLIENT', 'ID');
    await assert.rejects(c.call('EVAL', FLAKY, 1, 'roe:c'), (err) => err.code === 'ERR_REPLY');
    assert.equal(await c.call('CLIENT', 'ID'), id);
    assert.equal(seen.length, 3);
    // Errors that are not the server's replies are not shown.
    await assert.rejects(c.call('MULTI'), (err) => err.code === 'ERR_INVALID_ARG');
    assert.equal(seen.length, 3);
  });

  it("reconnectOnError on the adapter: a READONLY write reconnects and, with 2, is written again", { timeout: 20000 }, async () => {
    const admin = client();
    const shown = [];
    const adapter = new RedisStorageAdapter({
      port: server.port,
      reconnectOnError: (err) => {
        shown.push(err.message);
        if (!/READONLY/.test(err.message)) return false;
        // The "failover": this server becomes a master again before the write is sent again.
        admin.call('REPLICAOF', 'NO', 'ONE');
        return 2;
      },
    });
    registry.push(adapter);
    await adapter.set('warm', 1);
    // A replica refuses writes with READONLY (the master it follows needs not exist).
    await admin.call('REPLICAOF', '127.0.0.1', '1');
    await adapter.set('k', { v: 1 });
    assert.equal(shown.length, 1);
    assert.match(shown[0], /READONLY/);
    assert.deepEqual(await adapter.get('k'), { v: 1 });
  });

  it('socketTimeout gives up a connection that stopped answering, then goes on', { timeout: 30000 }, async () => {
    const c = client({ socketTimeout: 300 });
    const errors = [];
    c.on('error', (err) => errors.push(err));
    await c.set('st:k', 'before');
    // Idle longer than the limit: nothing waits, nothing is given up.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(errors, []);
    process.kill(server.pid, 'SIGSTOP');
    let set;
    try {
      set = c.set('st:k', 'after');
      await waitFor(() => errors.length > 0, { timeout: 10000, what: 'the socket timeout' });
    } finally {
      process.kill(server.pid, 'SIGCONT');
    }
    assert.equal(errors[0].code, 'ERR_TIMEOUT');
    assert.match(errors[0].message, /Socket timeout/);
    assert.equal(await within(10000, set, 'the SET sent again'), 'OK');
    assert.equal(await c.get('st:k'), 'after');
  });
});
