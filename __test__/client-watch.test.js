'use strict';

// WATCH / UNWATCH with multi().exec() (issue 11, item 2): optimistic transactions as in ioredis,
// on a connection of the client's own that holds the WATCH state (the shared connection carries
// everybody's commands). A transaction whose watch the server forgot with a lost connection
// rejects instead of running unwatched.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { RedisClient } = require('..');
const { closeAll, topologies, waitFor } = require('./helpers');

for (const topo of topologies()) describe(`RedisClient watch() and multi() (${topo.name})`, () => {
  let target;
  const registry = [];
  const client = () => {
    const c = new RedisClient(topo.clientOptions(target));
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

  if (topo.cluster) {
    it('watch() on a cluster is refused with ERR_INVALID_ARG (as multi() is)', async () => {
      await assert.rejects(client().watch('k'), (err) => err.code === 'ERR_INVALID_ARG');
    });
    return;
  }

  it('a watched key changed by another client aborts the transaction: exec() resolves null, nothing runs', async () => {
    const c = client();
    const other = client();
    await c.set('w:balance', '10');
    assert.equal(await c.watch('w:balance'), 'OK');
    const seen = await c.get('w:balance');
    await other.set('w:balance', '99');
    const result = await c.multi().set('w:balance', String(Number(seen) - 1)).set('w:touched', '1').exec();
    assert.equal(result, null);
    assert.equal(await c.get('w:balance'), '99');
    assert.equal(await c.exists('w:touched'), 0);
  });

  it('an unchanged watched key lets the transaction run; exec() ends the watch', async () => {
    const c = client();
    const other = client();
    await c.set('w:n', '1');
    await c.watch('w:n');
    assert.deepEqual(await c.multi().incr('w:n').get('w:n').exec(), [[null, 2], [null, '2']]);
    // The watch ended with EXEC: a change now does not abort the next transaction.
    await other.set('w:n', '50');
    assert.deepEqual(await c.multi().incr('w:n').exec(), [[null, 51]]);
  });

  it("the client's own write to a watched key aborts too (the shared and the watch connection are one client)", async () => {
    const c = client();
    await c.set('w:own', 'a');
    await c.watch('w:own');
    await c.set('w:own', 'b');
    assert.equal(await c.multi().set('w:own', 'c').exec(), null);
    assert.equal(await c.get('w:own'), 'b');
  });

  it('unwatch() forgets the watch; callbacks and call("watch") work', async () => {
    const c = client();
    const other = client();
    await c.set('w:u', '1');
    assert.equal(await new Promise((res, rej) => c.watch('w:u', (e, r) => (e ? rej(e) : res(r)))), 'OK');
    assert.equal(await c.unwatch(), 'OK');
    await other.set('w:u', '2');
    assert.deepEqual(await c.multi().set('w:u', '3').exec(), [[null, 'OK']]);
    assert.equal(await c.call('WATCH', 'w:u'), 'OK');
    await other.set('w:u', '4');
    assert.equal(await c.multi().set('w:u', '5').exec(), null);
    assert.equal(await c.get('w:u'), '4');
    await assert.rejects(c.watch(), (err) => err.code === 'ERR_INVALID_ARG');
  });

  it('a watch lost with its connection makes exec() reject ERR_CONNECTION, not run unwatched', { timeout: 20000 }, async () => {
    // Named, so that its connections are told apart from the other tests' in CLIENT LIST.
    const c = new RedisClient({ ...topo.clientOptions(target), connectionName: 'watch-lost' });
    registry.push(c);
    const admin = client();
    const ids = async () =>
      String(await admin.call('CLIENT', 'LIST'))
        .split('\n')
        .filter((l) => / name=watch-lost /.test(l))
        .map((l) => /\bid=(\d+)/.exec(l)[1]);
    /**
     * Kills c's watch connection (c's connection whose last command was WATCH) and waits until
     * it is made again.
     */
    const killWatchConnection = async () => {
      const list = String(await admin.call('CLIENT', 'LIST'));
      const line = list.split('\n').find((l) => / name=watch-lost /.test(l) && / cmd=watch /.test(l));
      assert.ok(line, `no connection of c ran WATCH:\n${list}`);
      const before = await ids();
      await admin.call('CLIENT', 'KILL', 'ID', /\bid=(\d+)/.exec(line)[1]);
      await waitFor(async () => (await ids()).some((id) => !before.includes(id)), { what: 'the watch connection made again' });
    };
    await c.set('w:lost', 'before');
    await c.watch('w:lost');
    await killWatchConnection();
    // The watch connection was made again; the key changes, unseen by any watch.
    await admin.set('w:lost', 'changed');
    await assert.rejects(c.multi().set('w:lost', 'tx').exec(), (err) => err.code === 'ERR_CONNECTION');
    assert.equal(await c.get('w:lost'), 'changed');
    // A new watch works again.
    await c.watch('w:lost');
    assert.deepEqual(await c.multi().set('w:lost', 'tx').exec(), [[null, 'OK']]);

    // A watch() after the connection holding earlier ones was lost says so once (it does not
    // watch the new keys alone), then starts over.
    await c.watch('w:lost');
    await killWatchConnection();
    await waitFor(async () => {
      try {
        await c.watch('w:other');
        return false;
      } catch (err) {
        assert.equal(err.code, 'ERR_CONNECTION');
        return true;
      }
    }, { what: 'the lost watch to be told' });
    assert.equal(await c.watch('w:other'), 'OK');
    assert.deepEqual(await c.multi().set('w:other', '1').exec(), [[null, 'OK']]);
  });
});
