'use strict';

// The harness itself: every suite trusts that these servers are real, isolated and cleaned up.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const Redis = require('ioredis');
const net = require('node:net');
const { startRedis, startNodes, startCluster, startSentinel, freePort, rawCommands } = require('./servers');
const { blackHole, garbageServer, truncatedServer } = require('./fakes');
const { waitFor, failoverSlotOf, keySlot } = require('./helpers');

/** The bytes a server sends within `ms` in answer to a PING. */
function bytesAfterPing(port, ms = 300) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: '127.0.0.1', port });
    let got = '';
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      got += chunk;
    });
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'));
    setTimeout(() => {
      resolve({ got, open: !socket.destroyed && socket.readyState === 'open' });
      socket.destroy();
    }, ms);
  });
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2].startsWith('Z');
  } catch {
    return false;
  }
};

describe('test servers', () => {
  it('startRedis: a real server on a free loopback port, its own dir, no persistence', async () => {
    const server = await startRedis({ password: 'pw', unixSocket: true });
    try {
      assert.notEqual(server.port, 6379);
      assert.equal(server.host, '127.0.0.1');
      assert.equal(server.url, `redis://127.0.0.1:${server.port}`);
      assert.ok(alive(server.pid));
      assert.ok(fs.statSync(server.dir).isDirectory());
      assert.equal(await server.command('SET', 'k', 'v'), 'OK');
      assert.deepEqual(await server.command('CONFIG', 'GET', 'save'), ['save', '']);
      assert.deepEqual(await server.command('CONFIG', 'GET', 'appendonly'), ['appendonly', 'no']);
      assert.deepEqual(await server.command('CONFIG', 'GET', 'bind'), ['bind', '127.0.0.1']);
      // The password is required; the unix socket answers too.
      const [noAuth] = await rawCommands({ port: server.port }, [['GET', 'k']]);
      assert.match(noAuth.message, /NOAUTH/);
      const [, viaSocket] = await rawCommands({ path: server.path }, [['AUTH', 'pw'], ['GET', 'k']]);
      assert.equal(viaSocket, 'v');
    } finally {
      await server.stop();
    }
    assert.equal(alive(server.pid), false);
    assert.equal(fs.existsSync(server.dir), false);
  });

  it('restart() keeps the port, kill() ends the process, SIGSTOP freezes it', async () => {
    const server = await startRedis();
    try {
      const { port, pid } = server;
      await server.command('SET', 'k', 'v');
      await server.restart();
      assert.equal(server.port, port);
      assert.notEqual(server.pid, pid);
      assert.equal(alive(pid), false);
      assert.equal(await server.command('GET', 'k'), null); // fresh: nothing was saved

      await server.kill('SIGSTOP');
      await assert.rejects(rawCommands({ port }, [['PING']], { timeout: 200 }), /no reply/);
      await server.kill('SIGCONT');
      assert.equal(await server.command('PING'), 'PONG');

      const before = server.pid;
      await server.kill('SIGKILL');
      assert.equal(server.running, false);
      assert.equal(alive(before), false);
      await server.restart();
      assert.equal(await server.command('PING'), 'PONG');
    } finally {
      await server.stop();
    }
  });

  it('startRedis({ tls: true }): TLS on a port of its own, verified with the CA it made', async () => {
    const server = await startRedis({ tls: true });
    const client = new Redis({ host: server.host, port: server.tlsPort, tls: { ca: server.tls.ca }, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    try {
      assert.notEqual(server.tlsPort, server.port);
      assert.equal(await client.set('over-tls', '1'), 'OK');
      assert.equal(await server.command('GET', 'over-tls'), '1'); // the plain port is the same server
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('fakes: a black hole never answers; garbage and truncated servers answer as named and stay open', async () => {
    const [hole, garbage, truncated] = await Promise.all([blackHole(), garbageServer(), truncatedServer()]);
    try {
      assert.deepEqual(await bytesAfterPing(hole.port), { got: '', open: true });
      assert.deepEqual(await bytesAfterPing(garbage.port), { got: 'hello, this is not redis\r\n', open: true });
      assert.deepEqual(await bytesAfterPing(truncated.port), { got: '$10\r\nabc', open: true });
      assert.equal(hole.connections, 1);
    } finally {
      await Promise.all([hole.close(), garbage.close(), truncated.close()]);
    }
  });

  it('startNodes: independent servers on distinct ports', async () => {
    const nodes = await startNodes(3);
    try {
      assert.equal(new Set(nodes.map((n) => n.port)).size, 3);
      await nodes[0].command('SET', 'only-here', '1');
      assert.equal(await nodes[1].command('GET', 'only-here'), null);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
    }
  });

  it('freePort gives a port nobody listens on', async () => {
    const port = await freePort();
    await assert.rejects(rawCommands({ port }, [['PING']]), /ECONNREFUSED/);
  });

  const endings = {
    'an uncaught exception': ['', "throw new Error('crash')"],
    // node:test rethrows from its own handler and the process ends with code 7, no 'exit' event.
    'an uncaught exception under node:test': ['child-v8', "throw new Error('crash')"],
    'SIGKILL': ['', "process.kill(process.pid, 'SIGKILL')"],
    'SIGTERM': ['', "process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 10000)"],
  };
  for (const [ending, [context, how]] of Object.entries(endings)) {
    it(`servers left running die with their process: ${ending}`, async () => {
      const script = `
        const { startRedis } = require(${JSON.stringify(require.resolve('./servers'))});
        startRedis().then((s) => { console.log(JSON.stringify({ pid: s.pid, dir: s.dir })); ${how}; });
      `;
      const env = { ...process.env, NODE_TEST_CONTEXT: context };
      if (!context) delete env.NODE_TEST_CONTEXT;
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000, env });
      const { pid, dir } = JSON.parse(child.stdout.trim().split('\n')[0]);
      assert.ok(pid > 0, child.stderr);
      assert.notEqual(child.status, 0);
      // The kill is sent as the process ends; the kernel may take a moment to finish it.
      await waitFor(() => !alive(pid), { timeout: 5000, what: `redis-server ${pid} to be gone` });
      await waitFor(() => !fs.existsSync(dir), { timeout: 5000, what: `${dir} to be removed` });
    });
  }

  describe('startCluster', () => {
    let cluster;
    after(async () => {
      await cluster?.stop();
    });

    it('a real 3 masters + 3 replicas cluster that ioredis Cluster can use', { timeout: 90000 }, async () => {
      cluster = await startCluster();
      assert.equal(cluster.nodes.length, 6);
      assert.equal((await cluster.masters()).length, 3);
      const info = await cluster.servers[0].command('CLUSTER', 'INFO');
      assert.match(info, /cluster_state:ok/);
      assert.match(info, /cluster_slots_assigned:16384/);
      assert.match(info, /cluster_size:3/);

      const client = new Redis.Cluster(cluster.nodes.slice(0, 1));
      try {
        // Keys spread over every master.
        for (let i = 0; i < 100; i += 1) await client.set(`k${i}`, String(i));
        assert.equal(await client.get('k42'), '42');
        const perMaster = await Promise.all(
          (await cluster.masters()).map((m) => cluster.servers.find((s) => s.port === m.port).command('DBSIZE')),
        );
        assert.ok(perMaster.every((n) => n > 0), JSON.stringify(perMaster));
      } finally {
        client.disconnect();
      }
    });

    it('failoverSlotOf: a manual failover swaps a slot\'s master and its replica and keeps the data', { timeout: 90000 }, async () => {
      const key = '{fo}k';
      const owner = async () => {
        const slots = await cluster.servers[0].command('CLUSTER', 'SLOTS');
        const slot = keySlot(key);
        const range = slots.find(([from, to]) => from <= slot && slot <= to);
        return range[2][1];
      };
      const before = await owner();
      const master = cluster.servers.find((s) => s.port === before);
      await master.command('SET', key, 'kept');
      await master.command('WAIT', 1, 2000); // on the replica before the switch
      const { from, to } = await failoverSlotOf(cluster, key);
      assert.equal(from.port, before);
      assert.equal((await to.command('ROLE'))[0], 'master');
      assert.equal((await from.command('ROLE'))[0], 'slave');
      await waitFor(async () => (await owner()) === to.port, { what: 'CLUSTER SLOTS to name the new master' });
      assert.equal(await to.command('GET', key), 'kept');
    });
  });

  it('a sentinel topology: 1 master, 2 replicas, 3 sentinels with passwords; SENTINEL FAILOVER and SIGKILL of the master each promote a replica', { timeout: 90000 }, async () => {
    const password = 'data-pw';
    const sentinelPassword = 'sentinel-pw';
    const topo = await startSentinel({ password, sentinelPassword });
    const everything = [...topo.servers, ...topo.sentinels];
    /** Commands on `where` after AUTH with `pw`; the replies after AUTH's. */
    const authed = async (where, pw, ...commands) => {
      const [auth, ...replies] = await rawCommands(where, [['AUTH', pw], ...commands]);
      assert.equal(auth, 'OK');
      return replies;
    };
    try {
      assert.equal(topo.name, 'mymaster');
      assert.equal(topo.replicas.length, 2);
      assert.equal(topo.sentinels.length, 3);
      assert.equal(new Set(everything.map((s) => s.port)).size, 6);
      assert.ok(everything.every((s) => alive(s.pid)));
      assert.deepEqual(topo.sentinelNodes, topo.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })));

      // Both kinds of node want their own password.
      const [dataNoAuth] = await rawCommands(topo.master, [['GET', 'k']]);
      assert.match(dataNoAuth.message, /NOAUTH/);
      const [sentinelNoAuth] = await rawCommands(topo.sentinelNodes[0], [['SENTINEL', 'masters']]);
      assert.match(sentinelNoAuth.message, /NOAUTH/);
      const [wrongPw] = await rawCommands(topo.sentinelNodes[0], [['AUTH', password]]);
      assert.match(wrongPw.message, /WRONGPASS|invalid/);
      for (const sentinel of topo.sentinelNodes) {
        const [role] = await authed(sentinel, sentinelPassword, ['ROLE']);
        assert.deepEqual(role, ['sentinel', ['mymaster']]);
      }
      for (const replica of topo.replicas) {
        const [role] = await authed(replica, password, ['ROLE']);
        assert.deepEqual([role[0], role[2], role[3]], ['slave', topo.master.port, 'connected']);
      }

      assert.deepEqual(await topo.masterAddress(), { host: '127.0.0.1', port: topo.master.port });
      assert.equal(await topo.master.command('SET', 'before-failover', 'kept'), 'OK');
      assert.equal(await topo.master.command('WAIT', 2, 2000), 2);

      // SENTINEL FAILOVER: a replica becomes the master, and takes writes.
      const promoted = await topo.failover();
      assert.notEqual(promoted.port, topo.master.port);
      assert.ok(topo.replicas.some((r) => r.port === promoted.port), JSON.stringify(promoted));
      assert.deepEqual(await topo.masterAddress(), promoted);
      for (const sentinel of topo.sentinelNodes) {
        const [address] = await authed(sentinel, sentinelPassword, ['SENTINEL', 'get-master-addr-by-name', 'mymaster']);
        assert.deepEqual(address, ['127.0.0.1', String(promoted.port)]);
      }
      const [role, set, kept] = await authed(promoted, password, ['ROLE'], ['SET', 'after-failover', '1'], ['GET', 'before-failover']);
      assert.equal(role[0], 'master');
      assert.equal(set, 'OK');
      assert.equal(kept, 'kept');

      // SIGKILL of that master: the sentinels see it down and promote another node.
      const victim = topo.serverAt(promoted);
      assert.equal(victim.port, promoted.port);
      const victimPid = victim.pid;
      await victim.kill('SIGKILL');
      assert.equal(victim.running, false);
      assert.equal(alive(victimPid), false);
      const next = await topo.waitMaster((a) => a.port !== promoted.port, 30000);
      assert.notEqual(next.port, promoted.port);
      assert.deepEqual(await topo.masterAddress(), next);
      const [nextRole, nextSet] = await authed(next, password, ['ROLE'], ['SET', 'after-kill', '1']);
      assert.equal(nextRole[0], 'master');
      assert.equal(nextSet, 'OK');
    } finally {
      await topo.stop();
    }
    for (const server of everything) {
      assert.equal(server.running, false);
      assert.equal(fs.existsSync(server.dir), false);
    }
  });
});
