'use strict';

// Real `redis-server` processes for the test suites.
//
// Every server listens on a free loopback port of its own, keeps its files in its own temporary
// directory and is killed by pid when the process exits, however it exits. Nothing here ever talks
// to a server it did not start (no fixed port 6379).
//
//   const { startRedis, startNodes, startCluster, stopAll } = require('./servers');
//   const server = await startRedis({ password: 's3cret', unixSocket: true });
//   after(() => server.stop());
//
// A handle: { host, port, url, path, password, dir, pid, running, stop(), kill(signal),
// restart(), command(...args), logs() }.

const { spawn, execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');

const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const REDIS_CLI = process.env.REDIS_CLI || 'redis-cli';
const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 15000;
const STOP_GRACE_MS = 3000;
const LOG_LINES = 200;

/** Every server started by this process and not stopped yet. */
const live = new Set();
/** handle -> disarm() of its lifeline. */
const watchdogs = new Map();

/**
 * A lifeline for server `pid`: a tiny detached shell that waits on a pipe from this process and,
 * when the pipe closes, SIGKILLs the server and removes its directory. The pipe closes however
 * this process ends, even where no 'exit' handler runs (SIGKILL, or node:test rethrowing from its
 * uncaught-exception handler, which exits with code 7 without 'exit' events). Disarmed when the
 * server is stopped.
 * @returns {() => void} disarm
 */
function lifeline(pid, dir) {
  let watchdog;
  try {
    // The directory travels as $1, never inside the script text.
    const script = `read _; kill -9 ${Number(pid)} 2>/dev/null; rm -rf "$1"`;
    watchdog = spawn('/bin/sh', ['-c', script, 'lifeline', dir], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true, // outlives a Ctrl-C to our process group long enough to do its job
    });
  } catch {
    return () => {};
  }
  watchdog.on('error', () => {});
  watchdog.stdin.on('error', () => {});
  watchdog.unref();
  watchdog.stdin.unref?.();
  return () => {
    try {
      watchdog.kill('SIGKILL');
    } catch {
      // already gone
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/** Ports already handed out by this process: a freed port could otherwise come back twice. */
const handedOut = new Set();

/**
 * A loopback TCP port nobody listens on right now: bind port 0, read the port, let it go.
 * @param {{ max?: number }} [opts] `max`: highest port acceptable (a cluster's bus port is
 *   port + 10000 unless set, so callers that need room can ask for it).
 * @returns {Promise<number>}
 */
async function freePort({ max = 65535 } = {}) {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, HOST, () => {
        const { port: p } = srv.address();
        srv.close(() => resolve(p));
      });
    });
    if (port <= max && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port <= ${max}`);
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP client: enough to PING, AUTH and read CLUSTER INFO without a library.
// ---------------------------------------------------------------------------------------------

function encodeCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const arg of args) {
    const s = String(arg);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return out;
}

/**
 * Parses one RESP2 reply at `buf[offset]`.
 * @returns {{ value: any, end: number } | null} null when the reply is incomplete.
 */
function parseReply(buf, offset = 0) {
  const lineEnd = buf.indexOf('\r\n', offset);
  if (lineEnd === -1) return null;
  const type = String.fromCharCode(buf[offset]);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-': {
      const err = new Error(line);
      err.reply = line;
      return { value: err, end: next };
    }
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const len = Number(line);
      if (len === -1) return { value: null, end: next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count === -1) return { value: null, end: next };
      const items = [];
      let pos = next;
      for (let i = 0; i < count; i += 1) {
        const item = parseReply(buf, pos);
        if (!item) return null;
        items.push(item.value);
        pos = item.end;
      }
      return { value: items, end: pos };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/**
 * Sends commands over a fresh connection and resolves with their replies (error replies come back
 * as Error values, not rejections). Rejects on a connection failure or after `timeout` ms.
 * @param {{ host?: string, port?: number, path?: string, timeout?: number }} where
 * @param {Array<Array<string|number>>} commands
 */
function rawCommands(where, commands, { timeout = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = where.path
      ? net.createConnection({ path: where.path })
      : net.createConnection({ host: where.host || HOST, port: where.port });
    let buf = Buffer.alloc(0);
    const replies = [];
    const timer = setTimeout(() => finish(new Error(`no reply within ${timeout} ms`)), timeout);
    function finish(err) {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(replies);
    }
    socket.on('connect', () => socket.write(commands.map(encodeCommand).join('')));
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const reply = parseReply(buf);
        if (!reply) break;
        replies.push(reply.value);
        buf = buf.subarray(reply.end);
        if (replies.length === commands.length) {
          finish();
          return;
        }
      }
    });
    socket.on('error', finish);
    socket.on('close', () => finish(new Error('connection closed before all replies')));
  });
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once the server answers PING (with a password, after AUTH). */
async function waitReady(where, password, isAlive, logs) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const commands = password ? [['AUTH', password], ['PING']] : [['PING']];
  let lastError;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`redis-server exited during start-up:\n${logs()}`);
    try {
      const replies = await rawCommands(where, commands, { timeout: 1000 });
      if (replies[replies.length - 1] === 'PONG') return;
      lastError = replies[replies.length - 1];
    } catch (err) {
      lastError = err;
    }
    await delay(20);
  }
  throw new Error(`redis-server at ${where.path || where.port} not ready: ${lastError}\n${logs()}`);
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/**
 * A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl
 * in `dir`. Returns `{ files: { ca, cert, key }, ca, clientCert, clientKey }` (files are paths for
 * redis-server; the rest PEM text for clients).
 */
function makeCertificates(dir) {
  const file = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.crt'),
    '-days', '2', '-subj', '/CN=alova-test-ca');
  fs.writeFileSync(file('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  fs.writeFileSync(file('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file(`${who}.key`), '-out', file(`${who}.csr`),
      '-subj', `/CN=${who === 'server' ? 'localhost' : 'alova-client'}`);
    openssl('x509', '-req', '-in', file(`${who}.csr`), '-CA', file('ca.crt'), '-CAkey', file('ca.key'),
      '-CAcreateserial', '-out', file(`${who}.crt`), '-days', '2', '-extfile', file(`${who}.ext`));
  }
  const read = (name) => fs.readFileSync(file(name), 'utf8');
  return {
    files: { ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') },
    ca: read('ca.crt'),
    clientCert: read('client.crt'),
    clientKey: read('client.key'),
  };
}

// ---------------------------------------------------------------------------------------------
// One server
// ---------------------------------------------------------------------------------------------

function isRunning(child) {
  return child && child.exitCode === null && child.signalCode === null;
}

function waitExit(child) {
  if (!isRunning(child)) return Promise.resolve();
  // The child is unref'd; a referenced timer keeps the event loop alive while we wait for it.
  const keepAlive = setInterval(() => {}, 1000);
  return new Promise((resolve) =>
    child.once('exit', () => {
      clearInterval(keepAlive);
      resolve();
    }),
  );
}

/**
 * Starts a redis-server on a free loopback port and resolves once it answers PING.
 *
 * @param {object} [opts]
 * @param {string} [opts.password] `--requirepass`
 * @param {boolean} [opts.unixSocket] also listen on `<dir>/redis.sock` (handle.path)
 * @param {number} [opts.port] a fixed port (default: a free one)
 * @param {boolean} [opts.tls] also listen with TLS on a free port (handle.tlsPort), with a fresh
 *   CA and server certificate made in the server's directory; handle.tls holds `{ ca, clientCert,
 *   clientKey }` (PEM text) for clients. Client certificates are not required.
 * @param {string[]} [opts.args] more arguments for redis-server, e.g. ['--cluster-enabled', 'yes']
 * @param {string} [opts.config] the text of a config file, written once to `<dir>/redis.conf`
 *   (handle.configFile) and given as redis-server's first argument; the command-line options
 *   above override it. A sentinel needs one (it rewrites it); a restart keeps the rewritten file.
 */
async function startRedis(opts = {}) {
  const port = opts.port || (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alova-redis-'));
  const configFile = opts.config === undefined ? undefined : path.join(dir, 'redis.conf');
  if (configFile) fs.writeFileSync(configFile, opts.config, { mode: 0o600 });
  const socketPath = opts.unixSocket ? path.join(dir, 'redis.sock') : undefined;
  let tls;
  if (opts.tls) {
    try {
      const certs = makeCertificates(dir);
      tls = { port: await freePort(), certs };
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
  const args = [
    ...(configFile ? [configFile] : []),
    '--port', String(port),
    '--bind', HOST,
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--daemonize', 'no',
    ...(opts.password ? ['--requirepass', opts.password] : []),
    ...(socketPath ? ['--unixsocket', socketPath, '--unixsocketperm', '700'] : []),
    ...(tls
      ? [
        '--tls-port', String(tls.port),
        '--tls-cert-file', tls.certs.files.cert,
        '--tls-key-file', tls.certs.files.key,
        '--tls-ca-cert-file', tls.certs.files.ca,
        '--tls-auth-clients', 'no',
      ]
      : []),
    ...(opts.args || []),
  ];
  const logLines = [];
  let child;
  let disarm = () => {};

  const handle = {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    path: socketPath,
    password: opts.password,
    dir,
    configFile,
    /** With `tls: true`: the TLS port, and the CA and a client certificate (PEM) for clients. */
    tlsPort: tls && tls.port,
    tls: tls && { ca: tls.certs.ca, clientCert: tls.certs.clientCert, clientKey: tls.certs.clientKey },
    /** The current process id (a restart changes it). */
    get pid() {
      return child ? child.pid : undefined;
    },
    get running() {
      return isRunning(child);
    },
    /** The last lines redis-server wrote, for failure messages. */
    logs: () => logLines.join('\n'),
    /** Sends one command over a fresh raw connection; resolves with the reply (Error on -ERR). */
    async command(...cmd) {
      const pre = opts.password ? [['AUTH', opts.password]] : [];
      const replies = await rawCommands({ host: HOST, port }, [...pre, cmd]);
      return replies[replies.length - 1];
    },
    /**
     * Sends `signal` (default SIGKILL). For signals that end the process, resolves once it has
     * exited; SIGSTOP / SIGCONT resolve at once (they freeze and thaw it).
     */
    async kill(signal = 'SIGKILL') {
      if (!isRunning(child)) return;
      const exited = waitExit(child);
      child.kill(signal);
      if (signal === 'SIGSTOP' || signal === 'SIGCONT') return;
      await exited;
      disarm();
      live.delete(handle);
    },
    /** SIGTERM, then SIGKILL if it is still there after a grace period. Removes its directory. */
    async stop() {
      if (isRunning(child)) {
        const exited = waitExit(child);
        child.kill('SIGCONT'); // a frozen server cannot handle SIGTERM
        child.kill('SIGTERM');
        const timer = setTimeout(() => isRunning(child) && child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      disarm();
      live.delete(handle);
      fs.rmSync(dir, { recursive: true, force: true });
    },
    /** Stops the server if it runs, then starts it again on the same port with the same options. */
    async restart() {
      if (isRunning(child)) await handle.kill('SIGKILL');
      await spawnServer();
    },
  };

  async function spawnServer() {
    child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // The harness must never keep the test process alive by itself.
    child.unref();
    if (child.pid) {
      const cut = lifeline(child.pid, dir);
      disarm = () => {
        cut();
        watchdogs.delete(handle);
      };
      watchdogs.set(handle, disarm);
    }
    for (const stream of [child.stdout, child.stderr]) {
      stream.unref?.();
      stream.setEncoding('utf8');
      stream.on('data', (text) => {
        for (const line of text.split('\n')) {
          if (!line) continue;
          logLines.push(line);
          if (logLines.length > LOG_LINES) logLines.shift();
        }
      });
    }
    const spawnError = new Promise((_, reject) => child.once('error', reject));
    spawnError.catch(() => {});
    live.add(handle);
    const current = child;
    await Promise.race([
      spawnError,
      waitReady({ host: HOST, port }, opts.password, () => isRunning(current), handle.logs),
    ]).catch(async (err) => {
      if (isRunning(current)) current.kill('SIGKILL');
      disarm();
      live.delete(handle);
      throw err;
    });
  }

  try {
    await spawnServer();
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return handle;
}

/**
 * Starts `n` independent servers (for Redlock's multi-node voting, for instance).
 * @returns {Promise<Array<Awaited<ReturnType<typeof startRedis>>>>}
 */
async function startNodes(n, opts = {}) {
  const started = await Promise.allSettled(Array.from({ length: n }, () => startRedis(opts)));
  const ok = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(ok.map((s) => s.stop()));
    throw failed.reason;
  }
  return ok;
}

// ---------------------------------------------------------------------------------------------
// ======================  CLUSTER  ======================
// A real Redis Cluster: 3 masters + 3 replicas (by default), made with `redis-cli --cluster
// create`. Each node has its own free port and its own free cluster bus port (`cluster-port`,
// Redis >= 7), so no port arithmetic can collide with anything else on the machine.
// ---------------------------------------------------------------------------------------------

function runRedisCli(args, { timeout = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, args, { timeout }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n${stdout}\n${stderr}`;
        reject(err);
      } else resolve(stdout);
    });
  });
}

function parseInfo(text) {
  const out = {};
  for (const line of String(text).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/**
 * Starts a cluster of `masters` masters with `replicas` replicas each and resolves once every
 * node reports `cluster_state:ok`, knows every other node and lists every replica in
 * `CLUSTER SLOTS`, and every replica has synced.
 *
 * @param {{ masters?: number, replicas?: number, password?: string, nodeTimeout?: number }} [opts]
 *   `nodeTimeout`: `--cluster-node-timeout` in ms (default 5000); a failover test wants it short,
 *   so that a killed master's replica is promoted within a few seconds.
 * @returns {Promise<{ nodes: Array<{host: string, port: number}>, servers: object[],
 *   masters(): Promise<Array<{host: string, port: number}>>, stop(): Promise<void> }>}
 */
async function startCluster({ masters = 3, replicas = 1, password, nodeTimeout = 5000 } = {}) {
  const count = masters * (1 + replicas);
  const busPorts = [];
  for (let i = 0; i < count; i += 1) busPorts.push(await freePort());
  const started = await Promise.allSettled(
    busPorts.map((busPort) =>
      startRedis({
        password,
        args: [
          '--cluster-enabled', 'yes',
          '--cluster-port', String(busPort),
          '--cluster-config-file', 'nodes.conf',
          '--cluster-node-timeout', String(nodeTimeout),
          // A replica's first sync starts at once (Redis waits 5 s for more replicas by
          // default), and its master pings it every second (10 s by default): a node lists a
          // replica in CLUSTER SLOTS only once it has seen a replication offset other than 0,
          // which the first ping makes. Both halve the time a cluster takes to be ready.
          '--repl-diskless-sync-delay', '0',
          '--repl-ping-replica-period', '1',
          ...(password ? ['--masterauth', password] : []),
        ],
      }),
    ),
  );
  const servers = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const stop = () => Promise.all(servers.map((s) => s.stop())).then(() => undefined);
  try {
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    await runRedisCli([
      '--cluster', 'create',
      ...servers.map((s) => `${s.host}:${s.port}`),
      '--cluster-replicas', String(replicas),
      '--cluster-yes',
      ...(password ? ['-a', password, '--no-auth-warning'] : []),
    ]);
    const deadline = Date.now() + READY_TIMEOUT_MS * 2;
    for (;;) {
      const infos = await Promise.all(servers.map((s) => s.command('CLUSTER', 'INFO')));
      const ready = infos.every((text) => {
        const info = parseInfo(text);
        return info.cluster_state === 'ok' && Number(info.cluster_known_nodes) === count &&
          Number(info.cluster_slots_assigned) === 16384;
      });
      // Replicas must have finished their first sync, or a failover test would be flaky.
      const roles = await Promise.all(servers.map((s) => s.command('ROLE')));
      const synced = roles.every((r) => r[0] !== 'slave' || r[3] === 'connected');
      // And every node must list each master's replicas in CLUSTER SLOTS (gossip spreads that
      // after the replicas synced): clients read the topology from there, and ioredis drops its
      // connections to nodes it does not find in it.
      const slots = await Promise.all(servers.map((s) => s.command('CLUSTER', 'SLOTS')));
      const listed = slots.every(
        (ranges) => Array.isArray(ranges) && ranges.every((range) => range.length - 2 === 1 + replicas),
      );
      if (ready && synced && listed) break;
      if (Date.now() > deadline) throw new Error('cluster did not become ready');
      await delay(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes: servers.map((s) => ({ host: s.host, port: s.port })),
    servers,
    /** The current masters (roles change after a failover). */
    async masters() {
      const roles = await Promise.all(servers.map((s) => (s.running ? s.command('ROLE') : null)));
      return servers
        .filter((s, i) => roles[i] && roles[i][0] === 'master')
        .map((s) => ({ host: s.host, port: s.port }));
    },
    stop,
  };
}

// ---------------------------------------------------------------------------------------------
// ======================  SENTINEL  ======================
// A master, its replicas and the Redis Sentinels that watch them. Every process is a startRedis
// server (its own free port and directory, stopped by pid, tied to this process by a lifeline);
// a sentinel runs `redis-server <dir>/redis.conf --sentinel` on the config file it rewrites.
// ---------------------------------------------------------------------------------------------

/** A Sentinel reply of flat [field, value, ...] arrays as objects. */
function sentinelRecords(reply) {
  if (!Array.isArray(reply)) return [];
  return reply.map((flat) => {
    const record = {};
    for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i]] = flat[i + 1];
    return record;
  });
}

/** `record.flags` names a state that makes the instance unusable (down or not connected). */
function flaggedDown(record) {
  return String(record.flags).split(',').some((f) => ['s_down', 'o_down', 'disconnected'].includes(f));
}

/**
 * Starts 1 master and `replicas` replicas (`--replicaof` the master) and, once every replica's
 * link to it is up, `sentinels` sentinels that monitor it as `name`. Resolves when every sentinel
 * knows every replica and every other sentinel, and `SENTINEL CKQUORUM` passes on each.
 *
 * @param {object} [opts]
 * @param {number} [opts.replicas=2]
 * @param {number} [opts.sentinels=3]
 * @param {number} [opts.quorum=2]
 * @param {string} [opts.name='mymaster'] the master's name for Sentinel
 * @param {string} [opts.password] the data nodes' password (`requirepass` and `masterauth` on
 *   each, `sentinel auth-pass` on the sentinels)
 * @param {string} [opts.sentinelPassword] the sentinels' own password (`requirepass` in sentinel
 *   mode; also `sentinel sentinel-pass`, which they use to talk to each other)
 * @param {number} [opts.downAfter=1000] `sentinel down-after-milliseconds`
 * @param {number} [opts.failoverTimeout=3000] `sentinel failover-timeout` (a sentinel also waits
 *   twice this long before it tries to fail the same master over again)
 * @returns {Promise<{ name: string, password?: string, sentinelPassword?: string, master: object,
 *   replicas: object[], servers: object[], sentinels: object[], sentinelNodes: Array<{host: string,
 *   port: number}>, masterAddress(): Promise<{host: string, port: number}>,
 *   failover(opts?: { timeout?: number }): Promise<{host: string, port: number}>,
 *   serverAt(addr: {host?: string, port: number}): object | undefined,
 *   waitMaster(predicate?: (addr: {host: string, port: number}) => boolean, timeout?: number):
 *     Promise<{host: string, port: number}>,
 *   waitReplicas(timeout?: number): Promise<void>, stop(): Promise<void> }>}
 *   `master` and `replicas` are the roles at start; after a failover ask masterAddress() and
 *   serverAt(). `sentinelNodes` is what a client takes as its `sentinels` option.
 */
async function startSentinel({
  replicas = 2,
  sentinels = 3,
  quorum = 2,
  name = 'mymaster',
  password,
  sentinelPassword,
  downAfter = 1000,
  failoverTimeout = 3000,
} = {}) {
  const started = [];
  const stop = () => Promise.all(started.map((s) => s.stop())).then(() => undefined);
  const dataArgs = [
    '--repl-diskless-sync-delay', '0',
    ...(password ? ['--masterauth', password] : []),
  ];
  const ask = (sentinel, ...args) => sentinel.command('SENTINEL', ...args);

  let master;
  let replicaHandles;
  let sentinelHandles;
  try {
    master = await startRedis({ password, args: dataArgs });
    started.push(master);
    const replicaResults = await Promise.allSettled(
      Array.from({ length: replicas }, () =>
        startRedis({ password, args: [...dataArgs, '--replicaof', HOST, String(master.port)] }),
      ),
    );
    replicaHandles = replicaResults.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    started.push(...replicaHandles);
    const replicaFailed = replicaResults.find((r) => r.status === 'rejected');
    if (replicaFailed) throw replicaFailed.reason;

    // Every replica synced first: a sentinel lists the replicas its first INFO to the master names.
    const syncDeadline = Date.now() + READY_TIMEOUT_MS * 2;
    for (;;) {
      const infos = await Promise.all(replicaHandles.map((r) => r.command('INFO', 'replication')));
      const down = replicaHandles.filter((r, i) => parseInfo(infos[i]).master_link_status !== 'up');
      if (down.length === 0) break;
      if (Date.now() > syncDeadline) {
        throw new Error(`sentinel topology: replicas ${down.map((r) => r.port).join(', ')} did not sync ` +
          `with master ${master.port} within ${READY_TIMEOUT_MS * 2} ms:\n${down[0].logs()}`);
      }
      await delay(50);
    }

    const config = [
      'sentinel resolve-hostnames no',
      `sentinel monitor ${name} ${HOST} ${master.port} ${quorum}`,
      `sentinel down-after-milliseconds ${name} ${downAfter}`,
      `sentinel failover-timeout ${name} ${failoverTimeout}`,
      `sentinel parallel-syncs ${name} 1`,
      ...(password ? [`sentinel auth-pass ${name} ${password}`] : []),
      ...(sentinelPassword ? [`sentinel sentinel-pass ${sentinelPassword}`] : []),
      '',
    ].join('\n');
    const sentinelResults = await Promise.allSettled(
      Array.from({ length: sentinels }, () =>
        // startRedis gives `--requirepass sentinelPassword` (the sentinel's own password) and
        // AUTHs with it for the readiness PING and handle.command().
        startRedis({ config, password: sentinelPassword, args: ['--sentinel'] }),
      ),
    );
    sentinelHandles = sentinelResults.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    started.push(...sentinelHandles);
    const sentinelFailed = sentinelResults.find((r) => r.status === 'rejected');
    if (sentinelFailed) throw sentinelFailed.reason;

    // Discovery: replicas come from the master's INFO, other sentinels from the hello messages
    // they publish on the master every 2 s.
    const deadline = Date.now() + 30000;
    for (;;) {
      const missing = [];
      for (const sentinel of sentinelHandles) {
        const [known, peers, quorumCheck] = await Promise.all([
          ask(sentinel, 'replicas', name),
          ask(sentinel, 'sentinels', name),
          ask(sentinel, 'ckquorum', name),
        ]);
        const usable = sentinelRecords(known).filter((r) => !flaggedDown(r));
        for (const replica of replicaHandles) {
          if (!usable.some((r) => Number(r.port) === replica.port)) {
            missing.push(`sentinel ${sentinel.port} does not know replica ${replica.port}`);
          }
        }
        const others = sentinelRecords(peers).filter((r) => !flaggedDown(r)).length;
        if (others !== sentinels - 1) {
          missing.push(`sentinel ${sentinel.port} knows ${others} of ${sentinels - 1} other sentinels`);
        }
        if (quorumCheck instanceof Error) missing.push(`sentinel ${sentinel.port}: ${quorumCheck.message}`);
      }
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        throw new Error(`sentinel topology not ready within 30000 ms:\n  ${missing.join('\n  ')}\n` +
          `last log lines of sentinel ${sentinelHandles[0].port}:\n${sentinelHandles[0].logs()}`);
      }
      await delay(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const dataNodes = [master, ...replicaHandles];
  const serverAt = ({ host = HOST, port }) => dataNodes.find((s) => s.host === host && s.port === Number(port));
  const runningSentinels = () => sentinelHandles.filter((s) => s.running);

  /** The address `sentinel` gives for the master, or null. */
  async function addressFrom(sentinel) {
    const reply = await ask(sentinel, 'get-master-addr-by-name', name);
    if (!Array.isArray(reply)) return null;
    return { host: reply[0], port: Number(reply[1]) };
  }

  /** What the first running sentinel says: SENTINEL get-master-addr-by-name. */
  async function masterAddress() {
    const [sentinel] = runningSentinels();
    if (!sentinel) throw new Error('no sentinel is running');
    const address = await addressFrom(sentinel);
    if (!address) throw new Error(`sentinel ${sentinel.port} does not know ${name}`);
    return address;
  }

  /**
   * Waits until every running sentinel names the same master, `predicate` accepts it and that
   * server answers ROLE master. Resolves with its address.
   */
  async function waitMaster(predicate = () => true, timeout = 30000) {
    const until = Date.now() + timeout;
    let last;
    for (;;) {
      try {
        const addresses = await Promise.all(runningSentinels().map(addressFrom));
        const first = addresses[0];
        const agreed = first && addresses.every((a) => a && a.host === first.host && a.port === first.port);
        last = addresses;
        if (agreed && predicate(first)) {
          const server = serverAt(first);
          const role = server && server.running ? await server.command('ROLE') : null;
          if (Array.isArray(role) && role[0] === 'master') return first;
          last = { addresses, role };
        }
      } catch (err) {
        last = err;
      }
      if (Date.now() > until) {
        throw new Error(`sentinel ${name}: no agreed master within ${timeout} ms ` +
          `(last: ${util.inspect(last, { depth: 4 })})`);
      }
      await delay(50);
    }
  }

  return {
    name,
    password,
    sentinelPassword,
    /** The master at start. */
    master,
    /** The replicas at start. */
    replicas: replicaHandles,
    /** Every data node: the master at start, then the replicas. */
    servers: dataNodes,
    sentinels: sentinelHandles,
    sentinelNodes: sentinelHandles.map((s) => ({ host: s.host, port: s.port })),
    masterAddress,
    /**
     * SENTINEL FAILOVER (no agreement needed), then waits until every running sentinel names a
     * new master that answers ROLE master. The other replicas and the old master are moved to it
     * afterwards (the old master some 8 s later): waitReplicas() waits for that.
     */
    async failover({ timeout = 30000 } = {}) {
      const before = await masterAddress();
      const [sentinel] = runningSentinels();
      const reply = await ask(sentinel, 'failover', name);
      if (reply instanceof Error) throw reply;
      return waitMaster((a) => a.host !== before.host || a.port !== before.port, timeout);
    },
    serverAt,
    waitMaster,
    /** Waits until every running data node but the master is its replica with an up link. */
    async waitReplicas(timeout = 30000) {
      const current = await waitMaster(() => true, timeout);
      const until = Date.now() + timeout;
      for (;;) {
        const others = dataNodes.filter((s) => s.running && s.port !== current.port);
        const roles = await Promise.all(others.map((s) => s.command('ROLE').catch((err) => err)));
        const lagging = others.filter((s, i) => {
          const role = roles[i];
          return !(Array.isArray(role) && role[0] === 'slave' && Number(role[2]) === current.port &&
            role[3] === 'connected');
        });
        if (lagging.length === 0) return;
        if (Date.now() > until) {
          throw new Error(`sentinel ${name}: ${lagging.map((s) => s.port).join(', ')} not replicas of ` +
            `${current.port} within ${timeout} ms`);
        }
        await delay(50);
      }
    },
    stop,
  };
}

// ---------------------------------------------------------------------------------------------
// Clean-up
// ---------------------------------------------------------------------------------------------

/** Stops every server this process started. For `after(stopAll)`. */
async function stopAll() {
  await Promise.all([...live].map((s) => s.stop()));
}

function killAllNow() {
  for (const disarmLifeline of [...watchdogs.values()]) disarmLifeline();
  for (const handle of live) {
    try {
      if (handle.pid) process.kill(handle.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    try {
      fs.rmSync(handle.dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
  live.clear();
}

// Under `node --test`, a root-level after hook stops what a file left running, even when its
// tests failed. (Only there: outside the runner, registering a hook would start a test report.)
if (process.env.NODE_TEST_CONTEXT) {
  require('node:test').after(stopAll);
}

// 'exit' runs on normal ends, process.exit() and uncaught exceptions. Signals do not run it, so
// they kill the servers too and then die of the same signal as they would have.
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAllNow();
    process.kill(process.pid, signal);
  });
}

/**
 * Two servers for connection suites, started together: `server`, plain and with a unix socket,
 * and `secured`, with `password` and an ACL user `app` (password `app-user-pw`, every command).
 */
async function startPlainAndSecured(password) {
  const [server, secured] = await Promise.all([
    startRedis({ unixSocket: true }),
    startRedis({ password }),
  ]);
  await secured.command('ACL', 'SETUSER', 'app', 'on', '>app-user-pw', '~*', '+@all');
  return { server, secured };
}

module.exports = {
  HOST,
  makeCertificates,
  startPlainAndSecured,
  freePort,
  parseReply,
  rawCommands,
  startRedis,
  startNodes,
  startCluster,
  startSentinel,
  stopAll,
};
