'use strict';

// Lifecycles: processes exit by themselves, worker threads each run their own adapter, clients
// are shared (a native RedisClient shares its socket; an ioredis instance lends its settings).
//
// The suite runs against one redis-server and against a Redis Cluster (3 masters + 3 replicas,
// shared by the file). An ioredis instance lending a db, a unix socket or ACL credentials is a
// one-server matter (the cluster's ioredis `Cluster` as client is in cluster-client.test.js).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const Redis = require('ioredis');
const RedisStorageAdapter = require('..');
const { startPlainAndSecured } = require('./servers');
const { within, waitFor, ioredisFor, connectionIds, closeAll, topologies, scanAll } = require('./helpers');

const ROOT = path.resolve(__dirname, '..');
const PASSWORD = 'lifecycle-secret-pw';

/**
 * Runs `body` in a fresh `node -e` process with `A` (the package) and `where` in scope. `where`
 * holds the options for the server or cluster: `where.adapter` (for `new A`), `where.lazy` (the
 * same with lazyConnect) and `where.client` (for `new A.RedisClient`). Resolves with its exit code
 * and output once it exits by itself; kills it and fails after `bound` ms.
 */
function runChild(body, where, bound = 15000) {
  const script = `
    'use strict';
    const A = require(${JSON.stringify(ROOT)});
    const where = ${JSON.stringify(where)};
    (async () => { ${body} })().catch((err) => {
      console.error('child failed:', err && err.code, err && err.stack);
      process.exitCode = 1;
    });
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not exit by itself within ${bound} ms; output:\n${output}`));
    }, bound);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

for (const topo of topologies()) describe(`lifecycle (${topo.name})`, () => {
  let target;
  let observer;
  const open = [];
  /** An adapter on the target; closed in `after`. */
  const adapterWith = (extra = {}) => {
    const a = new RedisStorageAdapter(topo.adapterOptions(target, extra));
    open.push(a);
    return a;
  };
  /** What child processes and workers connect with (plain JSON). */
  const where = () => ({
    adapter: topo.adapterOptions(target),
    lazy: topo.adapterOptions(target, {}, { lazyConnect: true }),
    client: topo.clientOptions(target),
  });

  before(async () => {
    target = await topo.start();
    observer = topo.observer(target, open);
  });
  after(async () => {
    await closeAll(open);
    await target?.stop();
  });

  describe('a process exits by itself', () => {
    const cases = {
      'after close()': `
        const a = new A({ ...where.adapter, keyPrefix: 'child-a:' });
        await a.set('k', { v: 1 });
        const v = await a.get('k');
        if (!v || v.v !== 1) throw new Error('bad value ' + JSON.stringify(v));
        await a.close();
        console.log('done');
      `,
      'when close() is never called': `
        const a = new A({ ...where.adapter, keyPrefix: 'child-b:' });
        await a.set('k', { v: 2 });
        const v = await a.get('k');
        if (!v || v.v !== 2) throw new Error('bad value ' + JSON.stringify(v));
        console.log('done');
      `,
      'with an adapter that was never used': `
        const a = new A(where.adapter);
        console.log('done');
      `,
      'with a lazyConnect adapter that was never used': `
        const a = new A(where.lazy);
        console.log('done');
      `,
      'after 2000 concurrent operations without close()': `
        const a = new A({ ...where.adapter, keyPrefix: 'child-c:' });
        await Promise.all(Array.from({ length: 1000 }, (_, i) => a.set('k' + i, { i })));
        const values = await Promise.all(Array.from({ length: 1000 }, (_, i) => a.get('k' + i)));
        values.forEach((v, i) => { if (v.i !== i) throw new Error('mismatch at ' + i); });
        console.log('done');
      `,
      'with a RedisClient that was never quit': `
        const c = new A.RedisClient(where.client);
        if (await c.ping() !== 'PONG') throw new Error('no PONG');
        console.log('done');
      `,
      'with shared clients, one adapter closed and one not': `
        const a = new A(where.adapter);
        const b = new A({ client: a.client, keyPrefix: 'child-d:' });
        await b.set('k', 1);
        await b.close();
        await a.get('k');
        console.log('done');
      `,
    };
    for (const [name, body] of Object.entries(cases)) {
      it(name, async () => {
        const { code, signal, output } = await runChild(body, where());
        assert.equal(signal, null, output);
        assert.equal(code, 0, output);
        assert.match(output, /done/);
      });
    }

    it('the data the children wrote is in Redis', async () => {
      assert.equal(await observer.get('child-a:k'), '{"v":1}');
      assert.equal(await observer.get('child-b:k'), '{"v":2}');
      assert.equal(await observer.get('child-c:k999'), '{"i":999}');
    });
  });

  describe('worker_threads', () => {
    const workerCode = `
      const { parentPort, workerData } = require('node:worker_threads');
      const A = require(workerData.root);
      (async () => {
        const a = new A({ ...workerData.where, keyPrefix: 'worker' + workerData.index + ':' });
        const n = 500;
        await Promise.all(Array.from({ length: n }, (_, i) =>
          a.set('k' + i, { worker: workerData.index, i, text: '线程 ' + i })));
        const values = await Promise.all(Array.from({ length: n }, (_, i) => a.get('k' + i)));
        const bad = values.filter((v, i) => !v || v.worker !== workerData.index || v.i !== i).length;
        if (workerData.close) await a.close();
        parentPort.postMessage({ ok: bad === 0, bad });
      })().catch((err) => parentPort.postMessage({ ok: false, error: err.code + ' ' + err.message }));
    `;

    const runWorker = (index, close) =>
      new Promise((resolve, reject) => {
        const worker = new Worker(workerCode, {
          eval: true,
          workerData: { root: ROOT, where: topo.adapterOptions(target), index, close },
        });
        let message;
        worker.on('message', (m) => { message = m; });
        worker.on('error', reject);
        worker.on('exit', (code) => resolve({ code, message }));
      });

    it('4 workers, each with its own adapter, at once', async () => {
      const results = await within(
        30000,
        Promise.all([0, 1, 2, 3].map((i) => runWorker(i, i % 2 === 0))),
        'the workers',
      );
      for (const { code, message } of results) {
        assert.equal(code, 0);
        assert.deepEqual(message, { ok: true, bad: 0 });
      }
      for (const i of [0, 1, 2, 3]) {
        assert.equal((await scanAll(observer, `worker${i}:*`)).length, 500);
      }
    });

    it('terminating a worker mid-traffic leaves the main thread and its adapter fine', async () => {
      const worker = new Worker(
        `
          const { parentPort, workerData } = require('node:worker_threads');
          const A = require(workerData.root);
          const a = new A({ ...workerData.where, keyPrefix: 'doomed:' });
          let i = 0;
          const lane = async () => { for (;;) { await a.set('k' + (i++ % 100), { i }); await a.get('k' + (i % 100)); } };
          a.set('first', 1).then(() => parentPort.postMessage('running'));
          for (let n = 0; n < 50; n += 1) lane();
        `,
        { eval: true, workerData: { root: ROOT, where: topo.adapterOptions(target) } },
      );
      const exited = new Promise((resolve) => worker.on('exit', resolve));
      worker.on('error', () => {});
      await within(15000, new Promise((resolve) => worker.once('message', resolve)), 'the worker to run');
      await waitFor(async () => (await scanAll(observer, 'doomed:k*')).length >= 50, { what: 'worker traffic' });
      await within(15000, worker.terminate(), 'worker.terminate()');
      await within(15000, exited, 'the worker to exit');

      const a = adapterWith({ keyPrefix: 'main:' });
      await a.set('after-terminate', { fine: true });
      assert.deepEqual(await a.get('after-terminate'), { fine: true });
    });
  });

  describe('client sharing', () => {
    it('{ client: a.client } shares the connection: no new one on the server', async () => {
      // (On a cluster: no new one on any node.) Connection ids, not a count: a connection of an
      // earlier test that closes meanwhile must not hide a new one, nor fail the test.
      const a = adapterWith({ keyPrefix: 'owner:' });
      await a.set('k', 'a');
      // On a cluster, the first keyed command also opens the pipes to the masters (the direct
      // lane), in the background: wait until the owner's connections are all open.
      let before = await connectionIds(observer);
      await waitFor(async () => {
        await a.set('k', 'a');
        const now = await connectionIds(observer);
        const same = now.size === before.size && [...now].every((id) => before.has(id));
        before = now;
        return same;
      }, { interval: 150, what: 'the owner\'s connections to settle' });
      const opened = async () => [...(await connectionIds(observer))].filter((id) => !before.has(id));

      const shared = Array.from({ length: 10 }, (_, i) =>
        new RedisStorageAdapter({ client: a.client, keyPrefix: `shared${i}:` }));
      open.push(...shared);
      for (const [i, b] of shared.entries()) {
        assert.equal(b.client, a.client);
        assert.equal(b.keyPrefix, `shared${i}:`);
        await b.set('k', i);
      }
      await Promise.all(shared.map((b) => b.get('k')));
      assert.deepEqual(await opened(), [], 'the sharing adapters opened connections of their own');
      assert.equal(await observer.get('shared3:k'), '3');
      assert.equal(await observer.get('owner:k'), '"a"');

      // For comparison, an adapter of its own adds a connection.
      const own = adapterWith();
      await own.set('k', 1);
      assert.ok((await opened()).length > 0, 'an adapter of its own opened no connection');
    });

    it('closing a sharing adapter leaves the shared connection open', { timeout: 30000 }, async () => {
      const a = adapterWith({ keyPrefix: 'owner2:' });
      const b = new RedisStorageAdapter({ client: a.client, keyPrefix: 'sharer2:' });
      assert.equal(b.client, a.client);
      assert.equal(b.client.isCluster, topo.cluster);
      await b.set('k', 1);
      await a.set('k', 2);
      assert.equal(await a.client.get('sharer2:k'), '1');
      assert.equal(await b.client.get('owner2:k'), '2');
      // Locks through the sharer.
      await b.locker.lock('sharer2:lock');
      await b.locker.unlock('sharer2:lock');
      await b.close();
      assert.equal(a.client.status, 'ready');
      assert.equal(await a.get('k'), 2);
      assert.equal(await a.client.get('sharer2:k'), '1');
      await a.set('k', 3);
      assert.equal(await a.get('k'), 3);
    });
  });

  if (!topo.cluster) {
    describe('an ioredis instance as client, on one server (a db, a unix socket, ACL credentials: a cluster has db 0 only and takes its nodes\' settings from an ioredis Cluster, see cluster-client.test.js)', () => {
      let server; // with a unix socket too
      let secured; // with a password and an ACL user
      let plain; // an observer of `server`
      before(async () => {
        ({ server, secured } = await startPlainAndSecured(PASSWORD));
        plain = ioredisFor(server, {}, open);
      });
      after(async () => {
        await Promise.all([server?.stop(), secured?.stop()]);
      });

      it('an ioredis instance as client: adapter.client is that instance, and its db is honoured', async () => {
        const io = new Redis({ host: server.host, port: server.port, db: 4 });
        open.push(io);
        const a = new RedisStorageAdapter({ client: io, keyPrefix: 'io:' });
        open.push(a);
        assert.equal(a.client, io);
        await a.set('k', { v: 'db4' });
        assert.deepEqual(await a.get('k'), { v: 'db4' });
        assert.equal(await io.get('io:k'), '{"v":"db4"}'); // db 4
        assert.equal(await plain.exists('io:k'), 0); // not db 0
        await a.close();
        // The ioredis instance is the caller's: still open.
        assert.equal(await io.ping(), 'PONG');
        assert.equal(io.status, 'ready');
      });

      it('an ioredis instance on a unix socket lends its path', async () => {
        const io = new Redis({ path: server.path, db: 2 });
        open.push(io);
        const a = new RedisStorageAdapter({ client: io, keyPrefix: 'unix:', connectionName: 'adapter-over-unix' });
        open.push(a);
        await a.set('k', 1);
        assert.equal(await io.get('unix:k'), '1');
        const line = (await plain.call('CLIENT', 'LIST'))
          .split('\n')
          .find((l) => l.includes('name=adapter-over-unix'));
        assert.ok(line, 'the adapter connection is not on the server');
        assert.match(line, /flags=U\b|addr=\/|laddr=\//, `not a unix socket connection: ${line}`);
      });

      it('an ioredis instance with a password and a username lends them', async () => {
        const io = new Redis({ host: secured.host, port: secured.port, username: 'app', password: 'app-user-pw' });
        open.push(io);
        const a = new RedisStorageAdapter({ client: io, keyPrefix: 'acl:', connectionName: 'adapter-as-app' });
        open.push(a);
        await a.set('k', { user: 'app' });
        assert.deepEqual(await a.get('k'), { user: 'app' });
        const list = await secured.command('CLIENT', 'LIST');
        const line = list.split('\n').find((l) => l.includes('name=adapter-as-app'));
        assert.ok(line, 'the adapter connection is not on the server');
        assert.match(line, /\buser=app\b/);
      });
    });
  }
});
