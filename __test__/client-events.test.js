'use strict';

// RedisClient as ioredis's EventEmitter (issue 11, item 1): its events in ioredis's order,
// connect() and lazyConnect, an `error` with no listener logged and never thrown, and
// adapter.client.on('error', ...) as production apps write it. Real servers; a dead port.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { startRedis, freePort, HOST } = require('./servers');
const { closeAll, waitFor, topologies } = require('./helpers');

/** Records the client's events by name (with their argument) as they come. */
function record(client) {
  const seen = [];
  for (const name of ['wait', 'connecting', 'connect', 'ready', 'error', 'close', 'reconnecting', 'end']) {
    client.on(name, (arg) => seen.push(arg === undefined ? name : [name, arg]));
  }
  return seen;
}

const names = (seen) => seen.map((e) => (Array.isArray(e) ? e[0] : e));

for (const topo of topologies()) describe(`RedisClient events (${topo.name})`, () => {
  let target;
  const registry = [];
  before(async () => {
    target = await topo.start();
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });
  const clientOptions = (extra = {}) => {
    const o = topo.adapterOptions(target, extra);
    return o;
  };

  it('is an EventEmitter: connecting, connect, ready on a new client; close, end on quit()', { timeout: 20000 }, async () => {
    const client = new RedisClient(clientOptions());
    registry.push(client);
    assert.ok(client instanceof EventEmitter);
    const seen = record(client);
    await waitFor(() => names(seen).includes('ready'), { what: 'ready' });
    assert.deepEqual(names(seen), ['connecting', 'connect', 'ready']);
    assert.equal(await client.call('PING'), 'PONG');
    await client.quit();
    await waitFor(() => names(seen).includes('end'), { what: 'end' });
    assert.deepEqual(names(seen).slice(3), ['close', 'end']);
  });

  it('lazyConnect: wait, then connect() connects and resolves once ready; a second connect() rejects', { timeout: 20000 }, async () => {
    const client = new RedisClient(clientOptions(topo.cluster ? { options: { lazyConnect: true } } : { lazyConnect: true }));
    registry.push(client);
    const seen = record(client);
    await new Promise((r) => setImmediate(r));
    assert.equal(client.status, 'wait');
    assert.deepEqual(names(seen), ['wait']);
    await client.connect();
    assert.equal(client.status, 'ready');
    await waitFor(() => names(seen).includes('ready'), { what: 'ready' });
    assert.deepEqual(names(seen), ['wait', 'connecting', 'connect', 'ready']);
    await assert.rejects(client.connect(), /already connecting\/connected/);
    client.disconnect();
    await waitFor(() => names(seen).includes('end'), { what: 'end' });
  });
});

describe('RedisClient events (standalone: faults)', () => {
  it('error events carry a code; with no listener an error is logged, never thrown', { timeout: 20000 }, async () => {
    const port = await freePort();
    const client = new RedisClient({ host: HOST, port, retryStrategy: (times) => (times > 2 ? null : 10) });
    const errors = [];
    client.on('error', (err) => errors.push(err));
    await waitFor(() => client.status === 'end', { what: 'the client to give up' });
    assert.ok(errors.length >= 1);
    for (const err of errors) {
      assert.ok(err instanceof Error);
      assert.equal(err.code, 'ERR_CONNECTION', err.message);
    }

    // No listener: logged as ioredis logs it; the process goes on.
    const logged = [];
    const original = console.error;
    console.error = (...args) => logged.push(args.join(' '));
    try {
      const quiet = new RedisClient({ host: HOST, port, retryStrategy: (times) => (times > 1 ? null : 10) });
      await waitFor(() => quiet.status === 'end', { what: 'the client to give up' });
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      console.error = original;
    }
    assert.ok(logged.some((l) => l.includes('Unhandled error event')), logged.join('\n'));
  });

  it('a restart: close and reconnecting (with its delay), then connecting, connect and ready again', { timeout: 30000 }, async () => {
    const server = await startRedis();
    const client = new RedisClient({ host: server.host, port: server.port });
    const seen = record(client);
    client.on('error', () => {});
    try {
      await waitFor(() => names(seen).includes('ready'), { what: 'ready' });
      seen.length = 0;
      await server.kill();
      await waitFor(() => names(seen).includes('reconnecting'), { what: 'reconnecting' });
      assert.equal(names(seen)[0], 'close');
      const reconnecting = seen.find((e) => Array.isArray(e) && e[0] === 'reconnecting');
      assert.equal(typeof reconnecting[1], 'number');
      await server.restart();
      await waitFor(() => names(seen).includes('ready'), { what: 'ready again', timeout: 15000 });
      // As ioredis: each attempt after a pause starts with 'connecting'.
      const tail = names(seen).slice(-3);
      assert.deepEqual(tail, ['connecting', 'connect', 'ready']);
      const order = names(seen);
      order.forEach((name, i) => {
        if (name === 'connecting') assert.equal(order[i - 1], 'reconnecting', order.join(' '));
      });
      assert.equal(await client.call('PING'), 'PONG');
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('adapter.client.on("error", log) works, as production apps write it', { timeout: 20000 }, async () => {
    const port = await freePort();
    const adapter = new RedisStorageAdapter({ host: HOST, port, retryStrategy: (times) => (times > 2 ? null : 10) });
    const errors = [];
    adapter.client.on('error', (err) => errors.push(err.code));
    assert.equal(adapter.client, adapter.client);
    await waitFor(() => errors.length > 0, { what: 'an error event' });
    assert.equal(errors[0], 'ERR_CONNECTION');
    await adapter.close();
  });
});

describe('RedisClient: disconnect(true) and stream, as ioredis code uses them', () => {
  it('disconnect(true) and stream.end() make the connection again; commands around them are answered', { timeout: 20000 }, async () => {
    const server = await startRedis();
    const client = new RedisClient({ host: HOST, port: server.port });
    try {
      await client.set('foo', 'bar');
      const idOf = () => client.client('ID');
      const first = await idOf();
      // As ioredis's own test: a command issued before the socket ends still gets its reply.
      const got = new Promise((resolve, reject) => {
        client.set('foo', 'baz', () => client.stream.end());
        client.get('foo', (err, res) => (err ? reject(err) : resolve(res)));
      });
      assert.equal(await got, 'baz');
      await waitFor(async () => client.status === 'ready' && (await idOf()) !== first, { what: 'a new connection' });
      const seen = record(client);
      const second = await idOf();
      assert.equal(client.stream.writable, true);
      client.disconnect(true);
      assert.equal(await client.get('foo'), 'baz');
      await waitFor(() => names(seen).includes('ready'), { what: 'ready again' });
      assert.ok(names(seen).includes('close') && names(seen).includes('reconnecting'), names(seen).join(' '));
      assert.notEqual(await idOf(), second);
      assert.notEqual(client.status, 'end');
    } finally {
      client.disconnect();
      await server.stop();
    }
  });
});
