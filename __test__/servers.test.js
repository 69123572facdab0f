'use strict';

// The harness itself: every suite trusts that these servers are real, isolated and cleaned up.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const Redis = require('ioredis');
const { startRedis, startNodes, startCluster, freePort, rawCommands } = require('./servers');
const { waitFor } = require('./helpers');

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
  });
});
