'use strict';

// duplicate(), monitor() and select() (issue 11, items 3 and 4): a duplicate has the client's
// options and scripts; monitor() feeds every command the server runs on a connection of its own;
// select() moves a client of one's own to another database, for every later command and every
// connection made for it later (reconnections, blocking commands, watch()).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { closeAll, topologies, waitFor, within } = require('./helpers');

for (const topo of topologies()) describe(`RedisClient duplicate(), monitor(), select() (${topo.name})`, () => {
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

  it('duplicate() connects with the same options and defineCommand scripts, independent of the original', async () => {
    const c = client();
    c.defineCommand('echoKey', { numberOfKeys: 1, lua: 'return KEYS[1]' });
    const dup = c.duplicate();
    registry.push(dup);
    assert.notEqual(dup, c);
    assert.equal(await dup.echoKey('{dup}k'), '{dup}k');
    await dup.set('{dup}x', '1');
    await dup.quit();
    assert.equal(await c.get('{dup}x'), '1', 'the original goes on after its duplicate quit');
  });

  it("the adapter's client duplicates to a client of the adapter's connection options", async () => {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target, { keyPrefix: 'dup-app:' }));
    registry.push(adapter);
    const dup = adapter.client.duplicate();
    registry.push(dup);
    await adapter.set('k', { v: 1 });
    // The adapter's keyPrefix is the adapter's, not the duplicate's.
    assert.equal(await dup.get('dup-app:k'), JSON.stringify({ v: 1 }));
    await dup.quit();
    assert.deepEqual(await adapter.get('k'), { v: 1 });
  });

  if (topo.cluster) {
    it("a cluster client emits +node for each node of the topology, shaped as nodes() gives them", { timeout: 20000 }, async () => {
      const c = new RedisClient({ ...topo.clientOptions(target), options: { lazyConnect: true } });
      registry.push(c);
      const told = [];
      c.on('+node', (node) => told.push(node));
      await c.connect();
      await waitFor(() => told.filter((n) => n.role === 'master').length >= 3, { what: 'three masters told' });
      for (const node of told) {
        assert.deepEqual(Object.keys(node).sort(), ['options', 'role']);
        assert.equal(typeof node.options.host, 'string');
        assert.equal(typeof node.options.port, 'number');
      }
    });

    it('monitor() and select() on a cluster are refused with ERR_INVALID_ARG', async () => {
      const c = client();
      await assert.rejects(c.monitor(), (err) => err.code === 'ERR_INVALID_ARG');
      await assert.rejects(c.select(1), (err) => err.code === 'ERR_INVALID_ARG');
    });
    return;
  }

  it('monitor() emits every command the server runs, parsed as ioredis parses them; disconnect() ends it', { timeout: 20000 }, async () => {
    const c = client();
    const monitor = await c.monitor();
    assert.equal(monitor.status, 'ready');
    const seen = [];
    monitor.on('monitor', (time, args, source, database) => seen.push({ time, args, source, database }));
    await c.set('mon:k', 'with "quotes"');
    await waitFor(() => seen.some((m) => m.args[0].toLowerCase() === 'set'), { what: 'the SET in the feed' });
    const set = seen.find((m) => m.args[0].toLowerCase() === 'set');
    assert.deepEqual(set.args.slice(1), ['mon:k', 'with "quotes"']);
    assert.match(set.time, /^\d+\.\d+$/);
    assert.equal(set.database, '0');
    assert.match(set.source, /:\d+$/);
    const ended = new Promise((resolve) => monitor.once('end', resolve));
    monitor.disconnect();
    await within(5000, ended, "the monitor's end");
    assert.equal(monitor.status, 'end');
  });

  it('select() moves every later command, reconnections and blocking commands to the database; emits select', { timeout: 30000 }, async () => {
    const c = client();
    const admin = client();
    const db1 = client({ db: 1 });
    await c.set('sel:k', 'zero');
    const selected = new Promise((resolve) => c.once('select', resolve));
    assert.equal(await c.select(1), 'OK');
    assert.equal(await selected, 1);
    assert.equal(await c.get('sel:k'), null);
    await c.set('sel:k', 'one');
    assert.equal(await db1.get('sel:k'), 'one');
    // A reconnection selects it again.
    const reconnected = new Promise((resolve) => c.once('ready', resolve));
    await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await within(10000, reconnected, 'the reconnection');
    assert.equal(await c.get('sel:k'), 'one');
    // Blocking commands (on their connection of their own) too.
    await db1.del('sel:q');
    const popped = c.blpop('sel:q', 5);
    await new Promise((r) => setTimeout(r, 100));
    await db1.rpush('sel:q', 'x');
    assert.deepEqual(await within(10000, popped, 'BLPOP'), ['sel:q', 'x']);
    // An index out of range is the server's error, and the database stays.
    await assert.rejects(c.select(100000), (err) => err.code === 'ERR_REPLY');
    assert.equal(await c.get('sel:k'), 'one');
    assert.equal(await c.call('select', 0), 'OK');
    assert.equal(await c.get('sel:k'), 'zero');
  });

  it("select() on the adapter's client is refused: it would move the cache", async () => {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(target));
    registry.push(adapter);
    await assert.rejects(adapter.client.select(2), (err) => err.code === 'ERR_INVALID_ARG');
    await adapter.set('still', 1);
    assert.equal(await adapter.get('still'), 1);
  });
});
