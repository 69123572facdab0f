'use strict';

// ioredis options that used to be refused (issue 11, item 5): reconnectOnError (with 1 and 2)
// on a client and on the adapter, and socketTimeout against a server that stops answering
// (SIGSTOP) without closing its socket.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, topologies, waitFor, within } = require('./helpers');
const { startRedis } = require('./servers');
const { fakeServer } = require('./fakes');

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
    // A blocking command waits longer than the limit, on its own connection, untouched.
    const before = errors.length;
    assert.equal(await within(10000, c.blpop('st:never', 1), 'BLPOP 1'), null);
    assert.equal(errors.length, before, 'a blocking command tripped socketTimeout');
  });

  it('blockingTimeout: a blocking command that outlives its limit resolves null, as a server timeout', { timeout: 20000 }, async () => {
    const limited = client({ blockingTimeout: 400 });
    const plain = client();
    const pusher = client();
    await pusher.del('bt:never', 'bt:short');
    const started = Date.now();
    assert.equal(await within(5000, limited.blpop('bt:never', 0), 'BLPOP 0 with blockingTimeout'), null);
    assert.ok(Date.now() - started >= 350, 'resolved before the limit');
    // Its own timeout plus the grace: the server's null comes first.
    assert.equal(await within(5000, limited.blpop('bt:short', 0.2), 'BLPOP 0.2'), null);
    // Without the option a blocking command waits as long as the server does.
    let settled = false;
    const waiting = plain.blpop('bt:never', 0).then((v) => {
      settled = true;
      return v;
    });
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(settled, false);
    // Release both server-side waits: the first BLPOP (its client gave up on it, the server did
    // not) still waits there, and is served first.
    await pusher.rpush('bt:never', 'a', 'b');
    assert.deepEqual(await within(5000, waiting, 'the plain BLPOP'), ['bt:never', 'b']);
  });

  it('CLIENT SETINFO names the library (with clientInfoTag) unless disableClientInfo', { timeout: 20000 }, async () => {
    const seen = [];
    const fake = await fakeServer((command) => {
      seen.push(command.map(String));
      return command[0].toString().toUpperCase() === 'PING' ? '+PONG\r\n' : '+OK\r\n';
    });
    try {
      const tagged = client({ host: fake.host, port: fake.port, clientInfoTag: 'app' });
      assert.equal(await tagged.call('PING'), 'PONG');
      const setinfo = seen.filter((c) => c[0].toUpperCase() === 'CLIENT' && c[1].toUpperCase() === 'SETINFO');
      assert.deepEqual(setinfo.map((c) => c.slice(2, 3)), [['LIB-NAME'], ['LIB-VER']]);
      assert.equal(setinfo[0][3], 'alova-storage-redis(app)');
      assert.match(setinfo[1][3], /^\d+\.\d+\.\d+/);
      seen.length = 0;
      const quiet = client({ host: fake.host, port: fake.port, disableClientInfo: true });
      assert.equal(await quiet.call('PING'), 'PONG');
      assert.deepEqual(seen.filter((c) => c[0].toUpperCase() === 'CLIENT'), []);
    } finally {
      await fake.close();
    }
    // A real server older than 7.2 answers SETINFO with an error: no failure.
    assert.equal(await client({ clientInfoTag: 'app' }).call('PING'), 'PONG');
  });

  it('protocol: 2 is taken, 3 is refused with ERR_INVALID_OPTION', () => {
    client({ protocol: 2 });
    assert.throws(() => new RedisClient({ port: server.port, protocol: 3 }), (err) => err.code === 'ERR_INVALID_OPTION' && /protocol/.test(err.message));
  });
});

describe('dnsLookup on a cluster', () => {
  const cluster = topologies().find((t) => t.cluster);
  let target;
  const registry = [];
  before(async () => {
    target = await cluster.start();
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  it('resolves the node host names through dnsLookup (a name the system cannot resolve)', { timeout: 30000 }, async () => {
    const asked = [];
    const [first] = target.nodes;
    const c = new RedisClient({
      nodes: [{ host: 'alova-node.invalid', port: first.port }],
      options: {
        dnsLookup: (hostname, callback) => {
          asked.push(hostname);
          callback(null, hostname === 'alova-node.invalid' ? '127.0.0.1' : hostname);
        },
      },
    });
    registry.push(c);
    await c.set('dns:k', 'v');
    assert.equal(await c.get('dns:k'), 'v');
    assert.ok(asked.includes('alova-node.invalid'), `asked: ${asked}`);
    // Without it, the name does not resolve.
    const plain = new RedisClient({ nodes: [{ host: 'alova-node.invalid', port: first.port }], options: { clusterRetryStrategy: () => null } });
    registry.push(plain);
    await assert.rejects(plain.get('dns:k'), (err) => err.code === 'ERR_CONNECTION');
  });
});
