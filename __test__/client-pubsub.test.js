'use strict';

// Pub/sub (issue 11, item 3): subscribe / psubscribe / ssubscribe and their unsubscribes, with
// ioredis's events (`message` + `messageBuffer`, `pmessage` + `pmessageBuffer`, `smessage` +
// `smessageBuffer`) and counts, on a connection of their own: a subscribed client goes on with
// its other commands (ioredis's would refuse them), and the adapter's client can subscribe while
// it carries the cache traffic.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, topologies, within, waitFor } = require('./helpers');
const { startRedis } = require('./servers');

/** Resolves with the arguments of the next `event` of `emitter`. */
function next(emitter, event, ms = 10000) {
  return within(ms, new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), `event ${event}`);
}

for (const topo of topologies()) describe(`RedisClient pub/sub (${topo.name})`, () => {
  let target;
  const registry = [];
  const client = (extra = {}) => {
    const c = new RedisClient({ ...topo.clientOptions(target), ...extra });
    registry.push(c);
    return c;
  };
  before(async () => {
    target = await topo.start();
  });
  after(async () => {
    await closeAll(registry);
    await target.stop();
  });

  it('subscribe resolves the count; message and messageBuffer carry what was published', { timeout: 20000 }, async () => {
    const sub = client();
    const pub = client();
    assert.equal(await sub.subscribe('ps:news', 'ps:sport'), 2);
    assert.equal(await sub.subscribe(['ps:weather']), 3);
    const message = next(sub, 'message');
    const buffer = next(sub, 'messageBuffer');
    assert.ok((await pub.publish('ps:news', 'héllo')) >= 1);
    assert.deepEqual(await message, ['ps:news', 'héllo']);
    const [channel, payload] = await buffer;
    assert.ok(Buffer.isBuffer(channel) && Buffer.isBuffer(payload));
    assert.equal(channel.toString(), 'ps:news');
    assert.deepEqual(payload, Buffer.from('héllo'));
    // Binary payloads arrive unchanged.
    const bin = next(sub, 'messageBuffer');
    await pub.publish('ps:sport', Buffer.from([0, 255, 1]));
    assert.deepEqual((await bin)[1], Buffer.from([0, 255, 1]));
    assert.equal(await sub.unsubscribe('ps:news'), 2);
    assert.equal(await sub.unsubscribe(), 0);
  });

  it('a subscribed client goes on with its other commands (unlike ioredis)', { timeout: 20000 }, async () => {
    const sub = client();
    assert.equal(sub.mode, 'normal');
    await sub.subscribe('ps:busy');
    assert.equal(sub.mode, 'subscriber');
    await sub.set('{ps}k', 'v');
    assert.equal(await sub.get('{ps}k'), 'v');
    const got = next(sub, 'message');
    await sub.publish('ps:busy', 'self');
    assert.deepEqual(await got, ['ps:busy', 'self']);
  });

  it('psubscribe delivers pmessage and pmessageBuffer with the pattern', { timeout: 20000 }, async () => {
    const sub = client();
    const pub = client();
    assert.equal(await sub.psubscribe('ps:log.*'), 1);
    assert.equal(await sub.subscribe('ps:plain'), 2, 'channels and patterns count together');
    const got = next(sub, 'pmessage');
    const buf = next(sub, 'pmessageBuffer');
    await pub.publish('ps:log.disk', 'full');
    assert.deepEqual(await got, ['ps:log.*', 'ps:log.disk', 'full']);
    const [pattern, channel, message] = await buf;
    assert.equal(pattern, 'ps:log.*');
    assert.deepEqual([channel, message], [Buffer.from('ps:log.disk'), Buffer.from('full')]);
    assert.equal(await sub.punsubscribe(), 1);
  });

  it('ssubscribe delivers smessage and smessageBuffer, counted apart (channels of several slots)', { timeout: 20000 }, async () => {
    const sub = client();
    const pub = client();
    const channels = ['ps:s-a', 'ps:s-b', 'ps:s-c', 'ps:s-d'];
    assert.equal(await sub.ssubscribe(...channels), 4);
    assert.equal(await sub.subscribe('ps:other'), 1);
    const seen = [];
    sub.on('smessage', (channel, message) => seen.push([channel, message]));
    const buffers = [];
    sub.on('smessageBuffer', (channel) => buffers.push(channel));
    for (const c of channels) assert.equal(await pub.spublish(c, `to ${c}`), 1);
    await waitFor(() => seen.length === 4, { what: 'four smessages' });
    assert.deepEqual(seen.sort(), channels.map((c) => [c, `to ${c}`]).sort());
    assert.ok(buffers.every(Buffer.isBuffer));
    assert.equal(await sub.sunsubscribe('ps:s-a'), 3);
    assert.equal(await sub.sunsubscribe(), 0);
  });

  it('callbacks, call("subscribe") and a subscription refused in a pipeline', { timeout: 20000 }, async () => {
    const sub = client();
    const count = await new Promise((resolve, reject) =>
      sub.subscribe('ps:cb1', 'ps:cb2', (err, n) => (err ? reject(err) : resolve(n)))
    );
    assert.equal(count, 2);
    assert.equal(await sub.call('subscribe', 'ps:cb3'), 3);
    assert.equal(await sub.call('UNSUBSCRIBE', 'ps:cb3'), 2);
    await assert.rejects(sub.pipeline([['subscribe', 'ps:nope']]).exec(), (err) => err.code === 'ERR_INVALID_ARG');
    await assert.rejects(sub.subscribe(), (err) => err.code === 'ERR_INVALID_ARG');
  });

  it("the adapter's client subscribes beside the cache traffic; close() ends its subscriptions", { timeout: 20000 }, async () => {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target));
    const pub = client();
    await adapter.client.subscribe('ps:adapter');
    await adapter.set('k', { a: 1 });
    const got = next(adapter.client, 'message');
    assert.equal(await pub.publish('ps:adapter', 'x'), 1);
    assert.deepEqual(await got, ['ps:adapter', 'x']);
    assert.deepEqual(await adapter.get('k'), { a: 1 });
    await adapter.close();
    await waitFor(async () => (await pub.publish('ps:adapter', 'y')) === 0, { what: 'the subscriber to go' });
  });

  it('quit() ends the subscriptions; later subscribes reject with ERR_CLOSED', { timeout: 20000 }, async () => {
    const sub = client();
    const pub = client();
    await sub.subscribe('ps:quit');
    assert.equal(await pub.publish('ps:quit', 'x'), 1);
    await sub.quit();
    await waitFor(async () => (await pub.publish('ps:quit', 'y')) === 0, { what: 'the subscriber to go' });
    await assert.rejects(sub.subscribe('ps:quit'), (err) => err.code === 'ERR_CLOSED');
  });
});

describe('RedisClient pub/sub across a restart, and the process it keeps alive', () => {
  let server;
  const registry = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await closeAll(registry);
    await server.stop();
  });

  it('subscriptions are made again after the server restarts (autoResubscribe)', { timeout: 30000 }, async () => {
    const sub = new RedisClient({ port: server.port });
    const pub = new RedisClient({ port: server.port });
    registry.push(sub, pub);
    const seen = [];
    sub.on('message', (channel, message) => seen.push(message));
    await sub.subscribe('ps:again');
    await sub.psubscribe('ps:again.*');
    await server.restart();
    await waitFor(
      async () => (await pub.publish('ps:again', 'a').catch(() => 0)) === 1 && (await pub.publish('ps:again.x', 'b')) === 1,
      { timeout: 15000, what: 'both subscriptions back' }
    );
    await pub.publish('ps:again', 'after');
    await waitFor(() => seen.includes('after'), { what: 'the message published after the restart' });
  });

  it('a subscribed client keeps the process alive until it unsubscribes, as an ioredis subscriber does', { timeout: 30000 }, async () => {
    const script = `
      const { RedisClient } = require(${JSON.stringify(path.join(__dirname, '..'))});
      const sub = new RedisClient({ port: ${server.port} });
      sub.on('message', (channel, message) => {
        console.log('got ' + message);
        sub.unsubscribe().then(() => console.log('unsubscribed'));
      });
      sub.subscribe('ps:alive').then(() => console.log('subscribed'));
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(() => out.includes('subscribed'), { what: 'the child to subscribe' });
      // Nothing else keeps the child alive: it is still there because it is subscribed.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(child.exitCode, null, 'the subscribed process exited');
      const pub = new RedisClient({ port: server.port });
      registry.push(pub);
      await pub.publish('ps:alive', 'ping');
      // Unsubscribed, it exits on its own.
      assert.equal(await within(10000, exited, 'the child to exit'), 0);
      assert.match(out, /got ping/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
