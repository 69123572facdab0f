'use strict';

// diagnostics_channel tracing as ioredis 5.11 publishes it (issue 11, item 6): the tracing
// channels ioredis:command, ioredis:batch and ioredis:connect, with ioredis's context objects
// and argument redaction, for a client's commands and the adapter's cache operations.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dc = require('node:diagnostics_channel');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll } = require('./helpers');
const { startRedis } = require('./servers');

/** Records the start and end (or error) contexts of tracing channel `name` while `fn` runs. */
async function recording(name, fn) {
  const channel = dc.tracingChannel(name);
  const seen = [];
  const handlers = {
    start: (ctx) => seen.push({ at: 'start', ctx: { ...ctx } }),
    asyncEnd: (ctx) => seen.push({ at: 'end', ctx }),
    error: (ctx) => seen.push({ at: 'error', ctx }),
  };
  channel.subscribe(handlers);
  try {
    await fn();
  } finally {
    channel.unsubscribe(handlers);
  }
  return seen;
}

describe('diagnostics_channel tracing (ioredis:command, ioredis:batch, ioredis:connect)', () => {
  let server;
  const registry = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await closeAll(registry);
    await server.stop();
  });

  it('a command: its name, redacted arguments, database and server; the result at the end', async () => {
    const client = new RedisClient({ host: '127.0.0.1', port: server.port, db: 2 });
    registry.push(client);
    const seen = await recording('ioredis:command', async () => {
      await client.set('tr:k', 'secret value');
      await client.get('tr:k');
      await client.call('ECHO', 'hidden');
      await assert.rejects(client.incr('tr:k'));
    });
    const starts = seen.filter((e) => e.at === 'start').map((e) => e.ctx);
    assert.deepEqual(starts[0], { command: 'set', args: ['tr:k', '?'], database: 2, serverAddress: '127.0.0.1', serverPort: server.port });
    assert.deepEqual(starts[1].args, ['tr:k']);
    assert.deepEqual(starts[2], { command: 'ECHO', args: ['?'], database: 2, serverAddress: '127.0.0.1', serverPort: server.port });
    const ends = seen.filter((e) => e.at === 'end').map((e) => e.ctx);
    assert.equal(ends[0].result, 'OK');
    assert.equal(ends[1].result, 'secret value');
    const errors = seen.filter((e) => e.at === 'error');
    assert.equal(errors.length, 1);
    assert.equal(errors[0].ctx.error.code, 'ERR_REPLY');
  });

  it('select() changes the database the traces name', async () => {
    const client = new RedisClient({ port: server.port });
    registry.push(client);
    await client.select(3);
    const seen = await recording('ioredis:command', () => client.get('x'));
    assert.equal(seen.find((e) => e.at === 'start').ctx.database, 3);
  });

  it('multi().exec() is one ioredis:batch; a pipeline traces each command', async () => {
    const client = new RedisClient({ port: server.port });
    registry.push(client);
    const batches = await recording('ioredis:batch', () => client.multi().set('tr:a', '1').get('tr:a').exec());
    const start = batches.find((e) => e.at === 'start').ctx;
    assert.deepEqual(start, { batchMode: 'MULTI', batchSize: 2, database: 0, serverAddress: 'localhost', serverPort: server.port });
    assert.deepEqual(batches.find((e) => e.at === 'end').ctx.result, [[null, 'OK'], [null, '1']]);
    const commands = await recording('ioredis:command', () => client.pipeline().set('tr:b', '2').get('tr:b').exec());
    assert.deepEqual(commands.filter((e) => e.at === 'start').map((e) => e.ctx.command), ['set', 'get']);
    assert.deepEqual(commands.filter((e) => e.at === 'end').map((e) => e.ctx.result), ['OK', '2']);
  });

  it('connect() of a lazyConnect client is an ioredis:connect with its epoch', async () => {
    const client = new RedisClient({ port: server.port, lazyConnect: true });
    registry.push(client);
    const seen = await recording('ioredis:connect', () => client.connect());
    assert.deepEqual(seen.find((e) => e.at === 'start').ctx, { serverAddress: 'localhost', serverPort: server.port, connectionEpoch: 1 });
    assert.ok(seen.some((e) => e.at === 'end'));
  });

  it("the adapter's cache operations are traced as the commands they are", async () => {
    const adapter = new RedisStorageAdapter({ port: server.port, keyPrefix: 'app:' });
    registry.push(adapter);
    const seen = await recording('ioredis:command', async () => {
      await adapter.set('k', { v: 1 });
      await adapter.get('k');
      await adapter.remove('k');
    });
    const starts = seen.filter((e) => e.at === 'start').map((e) => [e.ctx.command, e.ctx.args]);
    assert.deepEqual(starts, [
      ['set', ['app:k', '?']],
      ['get', ['app:k']],
      ['del', ['app:k']],
    ]);
  });

  it('nothing is published without subscribers', async () => {
    const client = new RedisClient({ port: server.port });
    registry.push(client);
    assert.equal(dc.tracingChannel('ioredis:command').hasSubscribers, false);
    assert.equal(await client.set('tr:quiet', '1'), 'OK');
  });
});
