'use strict';

// Connection options as ioredis reads them (url, path, port strings, db, ACL users, TLS), and
// reconnection: restarts, dropped connections, the offline queue, retryStrategy.
//
// A connection the server drops is met on one server and on a Redis Cluster (3 masters + 3
// replicas, every node dropping its clients). The rest is about how one server is addressed and
// what happens when that one process dies: the cluster's addressing (startup nodes, natMap, AUTH)
// is in cluster-client.test.js, a cluster node dying in cluster-failover.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const RedisStorageAdapter = require('..');
const { startRedis, startPlainAndSecured, freePort, makeCertificates, HOST } = require('./servers');
const { rejectsWithCode, within, ioredisFor, closeAll, topologies } = require('./helpers');

const PASSWORD = 'connection-secret-pw';

for (const topo of topologies()) describe(`connections dropped by the server (${topo.name})`, () => {
  let target;
  const open = [];
  before(async () => {
    target = await topo.start();
  });
  after(async () => {
    await closeAll(open);
    await target?.stop();
  });

  it('the first operation after the server dropped the connection succeeds', async () => {
    // (A cluster takes no connectionName.)
    const name = topo.cluster ? {} : { connectionName: 'to-be-killed' };
    const a = new RedisStorageAdapter(topo.adapterOptions(target, { keyPrefix: 'drop:' }, name));
    open.push(a);
    await a.set('k', 1);
    // Every node of a cluster drops its clients (not its replication links).
    let killed = 0;
    for (const node of topo.cluster ? target.servers : [target]) killed += await node.command('CLIENT', 'KILL', 'TYPE', 'normal');
    assert.ok(killed >= 1);
    assert.equal(await a.get('k'), 1); // must not reject
    await a.set('k', 2);
    assert.equal(await a.get('k'), 2);
  });
});

describe('connections to one server (URLs, unix sockets, dbs, ACL users, TLS, restarts of its process: see cluster-client.test.js and cluster-failover.test.js for the cluster)', () => {
  let server; // plain, with a unix socket
  let secured; // password + ACL user
  let observer;
  const open = [];
  const track = (a) => {
    open.push(a);
    return a;
  };

  before(async () => {
    ({ server, secured } = await startPlainAndSecured(PASSWORD));
    observer = ioredisFor(server, {}, open);
  });
  after(async () => {
    await closeAll(open);
    await Promise.all([server?.stop(), secured?.stop()]);
  });

  describe('where and how to connect', () => {
    it('a URL string as the only argument', async () => {
      const a = track(new RedisStorageAdapter(server.url));
      assert.equal(a.keyPrefix, 'alova:');
      await a.set('url-arg', 1);
      assert.equal(await observer.get('alova:url-arg'), '1');
    });

    it('{ url } with a database in the path, plus adapter options', async () => {
      const a = track(new RedisStorageAdapter({ url: `${server.url}/5`, keyPrefix: 'u5:' }));
      await a.set('k', 'five');
      const db5 = ioredisFor(server, { db: 5 }, open);
      assert.equal(await db5.get('u5:k'), '"five"');
      assert.equal(await observer.exists('u5:k'), 0);
    });

    it('a URL with a password, and one with a user and a password', async () => {
      const a = track(new RedisStorageAdapter(`redis://:${PASSWORD}@${secured.host}:${secured.port}`));
      await a.set('k', 'pw');
      assert.equal(await a.get('k'), 'pw');
      const b = track(new RedisStorageAdapter(`redis://app:app-user-pw@${secured.host}:${secured.port}/1`));
      await b.set('k', 'acl');
      assert.equal(await b.get('k'), 'acl');
    });

    it('a URL with percent-encoded credentials', async () => {
      await secured.command('ACL', 'SETUSER', 'odd@user', 'on', '>p@ss:w/rd%', '~*', '+@all');
      const url = `redis://${encodeURIComponent('odd@user')}:${encodeURIComponent('p@ss:w/rd%')}@${secured.host}:${secured.port}`;
      const a = track(new RedisStorageAdapter(url));
      await a.set('k', 'encoded');
      assert.equal(await a.get('k'), 'encoded');
    });

    it('a port given as a numeric string', async () => {
      const a = track(new RedisStorageAdapter({ host: server.host, port: String(server.port), keyPrefix: 'ps:' }));
      await a.set('k', 1);
      assert.equal(await observer.get('ps:k'), '1');
    });

    it('host "localhost"', async () => {
      const a = track(new RedisStorageAdapter({ host: 'localhost', port: server.port, keyPrefix: 'lh:' }));
      await a.set('k', 1);
      assert.equal(await observer.get('lh:k'), '1');
    });

    it('a unix socket: { path } and a path string', async () => {
      const a = track(new RedisStorageAdapter({ path: server.path, keyPrefix: 'sock:', connectionName: 'via-path' }));
      await a.set('k', 1);
      assert.equal(await observer.get('sock:k'), '1');
      const line = (await observer.call('CLIENT', 'LIST')).split('\n').find((l) => l.includes('name=via-path'));
      assert.match(line, /flags=U\b/);
      const b = track(new RedisStorageAdapter(server.path));
      await b.set('k', 2);
      assert.equal(await observer.get('alova:k'), '2');
    });

    it('{ db } selects the database', async () => {
      const a = track(new RedisStorageAdapter({ host: server.host, port: server.port, db: 6, keyPrefix: 'db:' }));
      await a.set('k', 6);
      const db6 = ioredisFor(server, { db: 6 }, open);
      assert.equal(await db6.get('db:k'), '6');
      assert.equal(await observer.exists('db:k'), 0);
    });

    it('{ username, password } log in as an ACL user', async () => {
      const a = track(new RedisStorageAdapter({
        host: secured.host, port: secured.port, username: 'app', password: 'app-user-pw', connectionName: 'as-app',
      }));
      await a.set('k', 1);
      const line = (await secured.command('CLIENT', 'LIST')).split('\n').find((l) => l.includes('name=as-app'));
      assert.match(line, /\buser=app\b/);
    });

    it('{ connectionName } names the connection on the server', async () => {
      const a = track(new RedisStorageAdapter({ host: server.host, port: server.port, connectionName: 'my-service' }));
      await a.set('k', 1);
      assert.match(await observer.call('CLIENT', 'LIST'), /name=my-service\b/);
    });
  });

  describe('TLS', () => {
    let tlsServer;
    let mtlsServer;
    let certs;
    let tlsPort;
    let mtlsPort;

    before(async () => {
      const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'alova-certs-'));
      certs = makeCertificates(dir);
      certs.dir = dir;
      tlsPort = await freePort();
      mtlsPort = await freePort();
      const tlsArgs = (port, authClients) => [
        '--tls-port', String(port),
        '--tls-cert-file', certs.files.cert,
        '--tls-key-file', certs.files.key,
        '--tls-ca-cert-file', certs.files.ca,
        '--tls-auth-clients', authClients,
      ];
      [tlsServer, mtlsServer] = await Promise.all([
        startRedis({ args: tlsArgs(tlsPort, 'no') }),
        startRedis({ args: tlsArgs(mtlsPort, 'yes') }),
      ]);
    });
    after(async () => {
      await Promise.all([tlsServer?.stop(), mtlsServer?.stop()]);
      if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
    });

    it('tls: { ca } verifies the server and works', async () => {
      const a = track(new RedisStorageAdapter({ host: HOST, port: tlsPort, tls: { ca: certs.ca }, keyPrefix: 'tls:' }));
      await a.set('k', { secure: true });
      assert.deepEqual(await a.get('k'), { secure: true });
      assert.equal(await tlsServer.command('GET', 'tls:k'), '{"secure":true}');
    });

    it('tls: { ca } as a Buffer, to host "localhost" with servername "localhost"', async () => {
      const a = track(new RedisStorageAdapter({
        host: 'localhost', port: tlsPort, tls: { ca: Buffer.from(certs.ca), servername: 'localhost' },
      }));
      await a.set('k', 1);
      assert.equal(await a.get('k'), 1);
    });

    it('tls.servername other than host: the certificate is checked against servername (as ioredis)', async () => {
      // Connecting to an address while verifying a name is the usual reason to set servername.
      const a = track(new RedisStorageAdapter({
        host: HOST, port: tlsPort, tls: { ca: certs.ca, servername: 'localhost' },
      }));
      await a.set('k', 1);
      assert.equal(await a.get('k'), 1);
    });

    it('rediss:// with tls options', async () => {
      const a = track(new RedisStorageAdapter({ url: `rediss://${HOST}:${tlsPort}`, tls: { ca: certs.ca } }));
      await a.set('k', 1);
      assert.equal(await a.get('k'), 1);
    });

    it('tls: { rejectUnauthorized: false } accepts an unknown CA', async () => {
      const a = track(new RedisStorageAdapter({ host: HOST, port: tlsPort, tls: { rejectUnauthorized: false } }));
      await a.set('k', 1);
    });

    it('tls: true rejects a server whose CA it does not trust', async () => {
      const a = track(new RedisStorageAdapter({ host: HOST, port: tlsPort, tls: true, retryStrategy: () => null }));
      await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_CONNECTION'), 'set over untrusted TLS');
    });

    it('a servername the certificate does not name never connects', async () => {
      // Refusing the option at construction or failing verification are both safe.
      let a;
      try {
        a = track(new RedisStorageAdapter({
          host: HOST, port: tlsPort, tls: { ca: certs.ca, servername: 'not-this-server.example' }, retryStrategy: () => null,
        }));
      } catch (err) {
        assert.equal(err.code, 'ERR_INVALID_OPTION');
        assert.match(err.message, /servername/);
        return;
      }
      await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_CONNECTION'), 'set with a wrong servername');
    });

    it('mutual TLS: { ca, cert, key } presents a client certificate', async () => {
      const a = track(new RedisStorageAdapter({
        host: HOST, port: mtlsPort, tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
      }));
      await a.set('k', 'mtls');
      assert.equal(await a.get('k'), 'mtls');
      const without = track(new RedisStorageAdapter({
        host: HOST, port: mtlsPort, tls: { ca: certs.ca }, retryStrategy: () => null,
      }));
      await within(10000, assert.rejects(() => without.set('k', 1), (err) => err instanceof Error && typeof err.code === 'string'));
    });
  });

  describe('reconnection', () => {
    let own; // a server these tests may kill
    before(async () => {
      own = await startRedis();
    });
    after(async () => {
      await own?.stop();
    });
    const ownAdapter = (opts = {}) => track(new RedisStorageAdapter({ host: own.host, port: own.port, ...opts }));

    it('the first operation after a server restart succeeds (retried transparently)', async () => {
      const a = ownAdapter({ keyPrefix: 're:' });
      await a.set('k', 'before');
      await own.restart(); // resolves once the new server answers
      await a.set('k', 'after'); // must not reject
      assert.equal(await a.get('k'), 'after');
    });

    it('commands issued while the server is down wait in the offline queue and succeed once it is back', async () => {
      const a = ownAdapter({ keyPrefix: 'queue:' });
      await a.set('warm', 1);
      await own.kill('SIGKILL');
      const pending = Array.from({ length: 100 }, (_, i) => a.set(`k${i}`, { i }));
      const reads = pending.map((p, i) => p.then(() => a.get(`k${i}`)));
      await own.restart();
      const values = await within(20000, Promise.all(reads), 'queued commands');
      values.forEach((v, i) => assert.deepEqual(v, { i }));
    });

    it('an adapter created while the server is down works once it comes up', async () => {
      await own.kill('SIGKILL');
      const a = ownAdapter({ keyPrefix: 'early:' });
      const pending = a.set('k', 'early');
      await own.restart();
      await within(20000, pending, 'the early set');
      assert.equal(await a.get('k'), 'early');
    });

    it('retryStrategy is called with the attempt number; null stops retrying', async () => {
      const port = await freePort();
      const calls = [];
      const a = track(new RedisStorageAdapter({
        host: HOST,
        port,
        retryStrategy: (times) => {
          calls.push(times);
          return times >= 3 ? null : 10;
        },
      }));
      await within(10000, rejectsWithCode(() => a.set('k', 1), 'ERR_CONNECTION'), 'set with a giving-up strategy');
      assert.deepEqual(calls, [1, 2, 3]);
    });

    it('reconnects again and again: five restarts in a row', async () => {
      const a = ownAdapter({ keyPrefix: 'many:' });
      for (let round = 0; round < 5; round += 1) {
        await a.set('round', round);
        await own.restart();
        assert.equal(await a.get('round'), undefined); // a fresh server, no persistence
      }
      await a.set('round', 'done');
      assert.equal(await a.get('round'), 'done');
      assert.equal(a.client.status, 'ready');
    });
  });
});
