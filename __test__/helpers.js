'use strict';

// Small assertions and utilities shared by the suites. Servers live in ./servers.js.

const assert = require('node:assert/strict');
const util = require('node:util');
const Redis = require('ioredis');
// Loading ./servers registers a root after-hook under node:test: load it here, at the top level
// of the test file (a hook registered later, from inside a test, would run too early). Fixtures
// (child processes) must therefore not load this file.
const { startRedis, startCluster, startSentinel } = require('./servers');

/** Every code the product may put on an error. */
const ERROR_CODES = new Set([
  'ERR_INVALID_OPTION',
  'ERR_INVALID_ARG',
  'ERR_INVALID_VALUE',
  'ERR_CONNECTION',
  'ERR_TIMEOUT',
  'ERR_AUTH',
  'ERR_CLOSED',
  'ERR_REPLY',
  'ERR_CLEAR_REFUSED',
  'ERR_PROTOCOL',
]);

/** Everything a program or a log could show of an error. */
function errorText(err) {
  return [String(err && err.message), String(err && err.stack), util.inspect(err)].join('\n');
}

function checkError(err, code, { mentions = [], secrets = [] } = {}) {
  assert.ok(err instanceof Error, `expected an Error, got ${util.inspect(err)}`);
  assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.message}`);
  for (const word of [].concat(mentions)) {
    assert.ok(
      String(err.message).toLowerCase().includes(String(word).toLowerCase()),
      `message should name ${JSON.stringify(word)}: ${err.message}`,
    );
  }
  for (const secret of [].concat(secrets)) {
    assert.ok(!errorText(err).includes(secret), `the error reveals a secret: ${errorText(err)}`);
  }
  return true;
}

/**
 * Asserts that `fnOrPromise` rejects (or its function throws) with an Error of `code`.
 * @returns {Promise<Error>} the error, for further checks
 */
async function rejectsWithCode(fnOrPromise, code, opts) {
  let caught;
  await assert.rejects(
    typeof fnOrPromise === 'function' ? async () => fnOrPromise() : fnOrPromise,
    (err) => {
      caught = err;
      return checkError(err, code, opts);
    },
  );
  return caught;
}

/** Asserts that `fn` throws synchronously an Error of `code`. */
function throwsWithCode(fn, code, opts) {
  let caught;
  assert.throws(fn, (err) => {
    caught = err;
    return checkError(err, code, opts);
  });
  return caught;
}

/**
 * Fails instead of hanging: rejects when `promise` has not settled within `ms` (a generous bound
 * meant to catch a hang, not to measure speed).
 */
function within(ms, promise, what = 'operation') {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (hang?)`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns a truthy value (or resolves to one); fails after `timeout` ms. */
async function waitFor(fn, { timeout = 10000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not reached within ${timeout} ms (last: ${util.inspect(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/**
 * An ioredis client to look at a server from the outside. Closed by `closeAll`.
 * @param {{ port: number, host: string, password?: string }} server
 */
function ioredisFor(server, options = {}, registry) {
  const client = new Redis({
    host: server.host,
    port: server.port,
    password: server.password,
    maxRetriesPerRequest: 1,
    ...options,
  });
  client.on('error', () => {}); // servers are killed on purpose; failures surface as rejections
  if (registry) registry.push(client);
  return client;
}

/**
 * The connections the server has open, as `"port#id"` strings (`CLIENT LIST`, the observer's own
 * included); on a cluster (an ioredis `Cluster` observer), those of every node, masters and
 * replicas. A connection opened later has an id not in an earlier set, even if another one
 * closed in between.
 */
async function connectionIds(observer) {
  const nodes = observer instanceof Redis.Cluster ? await allNodes(observer) : [observer];
  const ids = new Set();
  for (const node of nodes) {
    const list = await node.call('CLIENT', 'LIST');
    for (const line of list.split('\n')) {
      const m = /(?:^|\s)id=(\d+)/.exec(line);
      if (m) ids.add(`${node.options.port}#${m[1]}`);
    }
  }
  return ids;
}

/**
 * Closes adapters, RedisClients and ioredis clients, ignoring those already closed. A close()
 * that hangs is given up after 10 s, so that a broken close cannot stall a whole file's clean-up
 * (the suites that test close() bound it themselves).
 */
async function closeAll(things) {
  await Promise.all(
    things.splice(0).map(async (thing) => {
      try {
        if (thing instanceof Redis || thing instanceof Redis.Cluster) thing.disconnect();
        else if (typeof thing.close === 'function') await within(10000, thing.close(), 'close()');
        else if (typeof thing.disconnect === 'function') thing.disconnect(); // a RedisClient
      } catch {
        // already closed, or close() hung
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster: key slots, every master, spread keys
// ---------------------------------------------------------------------------------------------

/** CRC16-CCITT (XMODEM) of `bytes`, as Redis Cluster hashes keys. */
function crc16(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i += 1) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/**
 * The hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16 of the key's hash tag (between
 * the first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
 */
function keySlot(key) {
  const bytes = Buffer.from(key);
  const open = bytes.indexOf(0x7b); // {
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % 16384;
  }
  return crc16(bytes) % 16384;
}

/**
 * The Redis key the adapter uses for `key` with `spreadKeys: true`: `prefix + '{' + 8 hex + '}' +
 * key`, the tag being the 32-bit FNV-1a hash of the key's UTF-8 bytes. Pinned here on purpose: a
 * change of the tag would make processes on two versions miss each other's entries.
 */
function spreadKey(prefix, key) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(key)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return `${prefix}{${h.toString(16).padStart(8, '0')}}${key}`;
}

/** The master nodes (ioredis `Redis` instances) of an ioredis `Cluster`, once it is ready. */
async function masterNodes(cluster) {
  if (cluster.status !== 'ready') {
    await within(20000, new Promise((resolve) => cluster.once('ready', resolve)), 'ioredis Cluster ready');
  }
  return cluster.nodes('master');
}

/** Every node (ioredis `Redis` instances, masters and replicas) of an ioredis `Cluster`, once it is ready. */
async function allNodes(cluster) {
  await masterNodes(cluster);
  return cluster.nodes('all');
}

/** The nodes an observer's keys live on: each master of a cluster, or the one server. */
async function keyNodes(client) {
  return client instanceof Redis.Cluster ? masterNodes(client) : [client];
}

/** Every key matching `pattern` (SCAN on each master of a cluster, or on the one server). */
async function scanAll(client, pattern = '*') {
  const out = [];
  for (const node of await keyNodes(client)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      out.push(...keys);
      cursor = next;
    } while (cursor !== '0');
  }
  return out;
}

/** DBSIZE of the one server, or the sum over a cluster's masters. */
async function dbsizeAll(client) {
  let total = 0;
  for (const node of await keyNodes(client)) total += await node.dbsize();
  return total;
}

/** How many of `keys` exist, one EXISTS per key (a multi-key EXISTS is CROSSSLOT on a cluster). */
async function existsCount(client, ...keys) {
  let n = 0;
  for (const key of keys.flat()) n += await client.exists(key);
  return n;
}

/**
 * Who serves each slot: an array of 16384 `"host:port"` of the masters, from `CLUSTER SLOTS`
 * (ask an ioredis Cluster or a node).
 */
async function slotOwners(client) {
  const ranges = await client.cluster('SLOTS');
  const owners = new Array(16384).fill(null);
  for (const [from, to, [host, port]] of ranges) {
    for (let slot = from; slot <= to; slot += 1) owners[slot] = `${host}:${port}`;
  }
  return owners;
}

/**
 * Writes `entries` ([key, value] pairs) with pipelines: on a cluster one pipeline per master,
 * each key sent to the master of its slot (an ioredis Cluster pipeline must stay in one slot).
 * @returns {Promise<Map<string, number>>} how many keys went to each node ("host:port")
 */
async function writeMany(client, entries, { batch = 10000 } = {}) {
  const perNode = new Map();
  if (!(client instanceof Redis.Cluster)) {
    for (let i = 0; i < entries.length; i += batch) {
      const pipeline = client.pipeline();
      for (const [key, value] of entries.slice(i, i + batch)) pipeline.set(key, value);
      for (const [err] of await pipeline.exec()) if (err) throw err;
    }
    perNode.set(`${client.options.host}:${client.options.port}`, entries.length);
    return perNode;
  }
  const owners = await slotOwners(client);
  const nodes = new Map((await masterNodes(client)).map((n) => [`${n.options.host}:${n.options.port}`, n]));
  const groups = new Map();
  for (const [key, value] of entries) {
    const owner = owners[keySlot(key)];
    if (!groups.has(owner)) groups.set(owner, []);
    groups.get(owner).push([key, value]);
  }
  for (const [owner, group] of groups) {
    const node = nodes.get(owner);
    if (!node) throw new Error(`no ioredis node for master ${owner} (have ${[...nodes.keys()]})`);
    for (let i = 0; i < group.length; i += batch) {
      const pipeline = node.pipeline();
      for (const [key, value] of group.slice(i, i + batch)) pipeline.set(key, value);
      for (const [err] of await pipeline.exec()) if (err) throw err;
    }
    perNode.set(owner, group.length);
  }
  return perNode;
}

/** An ioredis Cluster over `cluster` (a startCluster() handle), for looking from the outside. */
function ioredisClusterFor(cluster, options = {}, registry) {
  const client = new Redis.Cluster(cluster.nodes, {
    redisOptions: { password: cluster.servers[0].password, maxRetriesPerRequest: 1 },
    // The machine may be busy (other suites, benchmarks): ioredis's 1 s default for reading the
    // slots can run out, and its queued commands then fail with 'Connection is closed.'.
    slotsRefreshTimeout: 10000,
    ...options,
  });
  client.on('error', () => {});
  if (registry) registry.push(client);
  return client;
}

// ---------------------------------------------------------------------------------------------
// Topologies: one suite, run against a single server and against a cluster
// ---------------------------------------------------------------------------------------------

/**
 * The server shapes a suite runs against, to wrap its describe blocks in a loop:
 *
 *   for (const topo of topologies()) describe(`suite (${topo.name})`, () => { ... });
 *
 * Each is `{ name, cluster, spreadKeys, start(), adapterOptions(target, extra, connection),
 * clientOptions(target, connection), fixtureOptions(target), observer(target, registry),
 * redisKey(prefix, key) }`:
 * - `start()` resolves a target with `stop()` (a startRedis handle, or a startCluster handle).
 * - `adapterOptions` is what `new RedisStorageAdapter` takes for it: `extra` are adapter options
 *   (keyPrefix, redlockTTL, ...), `connection` ioredis connection options, which a single server
 *   takes beside host and port and a cluster in `options` (`lazyConnect`, `enableOfflineQueue`)
 *   or `options.redisOptions` (the others: `commandTimeout`, `maxRetriesPerRequest`, ...).
 * - `clientOptions` is what `new RedisClient` takes for it (connection options only).
 * - `fixtureOptions` is the `{ host, port }` or `{ nodes }` a forked fixture (fixtures/*.js)
 *   connects with.
 * - `observer` is an ioredis `Redis` or `Cluster` that looks at it from the outside (closed by
 *   `closeAll(registry)`); `redisKey` the Redis key of an adapter key.
 *
 * The cluster variants of one call share one cluster (started on first use, stopped at the end
 * of the file; their `stop()` leaves it running), so a file starts at most one.
 *
 * @param {{ spreadKeys?: boolean }} [opts] `spreadKeys`: also a cluster variant whose adapters
 *   have `spreadKeys: true`.
 */
function topologies({ spreadKeys = false } = {}) {
  let shared = null;
  // The cluster outlives the describe blocks that use it (one after the other): it stops at the
  // end of the file (and servers.js's own root hook would stop it anyway).
  if (process.env.NODE_TEST_CONTEXT) {
    require('node:test').after(async () => {
      const started = shared;
      shared = null;
      if (started) await started.then((c) => c.stop(), () => {});
    });
  }
  function startShared() {
    if (!shared) shared = startCluster();
    return shared.then((cluster) => ({ ...cluster, stop: async () => {} }));
  }
  /** `{ nodes, options? }`: ioredis connection options placed as ClusterOptions take them. */
  function clusterConnection(target, connection = {}) {
    const { lazyConnect, enableOfflineQueue, ...perNode } = connection;
    const password = target.servers[0].password;
    const redisOptions = { ...(password ? { password } : {}), ...perNode };
    const options = {
      ...(lazyConnect !== undefined ? { lazyConnect } : {}),
      ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
      ...(Object.keys(redisOptions).length > 0 ? { redisOptions } : {}),
    };
    return { nodes: target.nodes, ...(Object.keys(options).length > 0 ? { options } : {}) };
  }
  const clusterVariant = (spread) => ({
    name: spread ? 'cluster, spreadKeys' : 'cluster',
    cluster: true,
    spreadKeys: spread,
    start: startShared,
    adapterOptions: (target, extra = {}, connection = {}) => ({
      ...clusterConnection(target, connection),
      ...(spread ? { spreadKeys: true } : {}),
      ...extra,
    }),
    clientOptions: (target, connection = {}) => clusterConnection(target, connection),
    fixtureOptions: (target) => ({ nodes: target.nodes }),
    observer: (target, registry) => ioredisClusterFor(target, {}, registry),
    redisKey: (prefix, key) => (spread ? spreadKey(prefix, key) : prefix + key),
  });
  const where = (target) => ({ host: target.host, port: target.port });
  return [
    {
      name: 'standalone',
      cluster: false,
      spreadKeys: false,
      start: () => startRedis(),
      adapterOptions: (target, extra = {}, connection = {}) => ({ ...where(target), ...connection, ...extra }),
      clientOptions: (target, connection = {}) => ({ ...where(target), ...connection }),
      fixtureOptions: where,
      observer: (target, registry) => ioredisFor(target, {}, registry),
      redisKey: (prefix, key) => prefix + key,
    },
    clusterVariant(false),
    ...(spreadKeys ? [clusterVariant(true)] : []),
  ];
}

// ---------------------------------------------------------------------------------------------
// The connection matrix: every path one client's commands can take
// ---------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Whether every running node of `cluster` sees `replicaId` as a replica of `masterId` (CLUSTER
 * NODES). A manual failover needs that: a master ignores the failover request of a node it does
 * not yet know as its own replica.
 */
async function clusterAgrees(cluster, masterId, replicaId) {
  const views = await Promise.all(cluster.servers.filter((s) => s.running).map((s) => s.command('CLUSTER', 'NODES')));
  return views.every((text) => {
    const lines = String(text).split('\n').map((line) => line.split(' '));
    const replica = lines.find((f) => f[0] === replicaId);
    const master = lines.find((f) => f[0] === masterId);
    return replica && master && replica[2].includes('slave') && replica[3] === masterId &&
      master[2].includes('master') && !master[2].includes('fail');
  });
}

/**
 * A manual failover (`CLUSTER FAILOVER` on a replica: the master hands over once the replica has
 * caught up, so no acknowledged write is lost) of the master serving `key`'s slot, on a
 * startCluster() handle. Resolves once every node sees the replica as the master.
 * @returns {Promise<{ from: object, to: object }>} the startRedis handles of old and new master
 */
async function failoverSlotOf(cluster, key) {
  const servers = cluster.servers.filter((s) => s.running);
  const owners = await slotOwners({ cluster: (...args) => servers[0].command('CLUSTER', ...args) });
  const owner = owners[keySlot(key)];
  const from = servers.find((s) => `${s.host}:${s.port}` === owner);
  if (!from) throw new Error(`no running master ${owner} for ${key}`);
  const role = await from.command('ROLE');
  const replicaPort = role[2] && role[2][0] && Number(role[2][0][1]);
  const to = servers.find((s) => s.port === replicaPort);
  if (!to) throw new Error(`master ${owner} has no replica to fail over to (${JSON.stringify(role)})`);
  const [fromId, toId] = await Promise.all([from.command('CLUSTER', 'MYID'), to.command('CLUSTER', 'MYID')]);
  const what = `the failover of ${owner} to ${to.host}:${to.port}`;
  await waitFor(() => clusterAgrees(cluster, fromId, toId), { timeout: 20000, interval: 50, what: `${what}: the nodes to agree on the roles first` });
  // A manual failover that times out (5 s in Redis) is asked for again.
  for (let attempt = 1; ; attempt += 1) {
    const reply = await to.command('CLUSTER', 'FAILOVER');
    // Refused by a node that is master already: the previous request got through late.
    if (reply instanceof Error && (await to.command('ROLE'))[0] !== 'master') throw reply;
    try {
      await waitFor(() => clusterAgrees(cluster, toId, fromId), { timeout: 7000, interval: 50, what });
      return { from, to };
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

/**
 * The ways one client's commands reach Redis, for suites that check an invariant on every path
 * (call order, bounded waits: issue 9). Builds on `topologies()` (its single server and its shared
 * cluster) and adds connection options and faults:
 *
 *   for (const config of connectionMatrix()) describe(`... (${config.name})`, () => { ... });
 *
 * Each is `{ name, cluster, fresh, mayReject, start(), options(target), observer(target,
 * registry), disturb? }`:
 * - `start()` resolves a target with `stop()`: a startRedis handle, or the file's shared cluster
 *   (whose `stop()` leaves it running; it stops at the end of the file).
 * - `options(target)`: connection options that both `new RedisStorageAdapter` and `new
 *   RedisClient` take (add keyPrefix and the like for an adapter).
 * - `fresh`: each round wants a new client, its commands issued in the tick of its constructor.
 * - `mayReject`: the fault may fail some calls (a failover); elsewhere every call must succeed.
 * - `disturb(target, ctx)`: the fault, run while the suite's traffic flows. `ctx` has `burst()`
 *   (issues one burst of calls now; returns a promise that settles, never rejects, once they
 *   have), `loop(until)` (bursts back to back until `until()` is true; resolves after the last),
 *   `reset()` (the server lost all its data at this point of the call order) and `slotKey` (a
 *   Redis key the fault must hit: on a cluster, the failover is of its slot's master).
 */
function connectionMatrix() {
  const [standalone, cluster] = topologies();
  const host = (target) => ({ host: target.host, port: target.port });
  return [
    { ...standalone, name: 'fresh client', fresh: true, options: host },
    {
      ...standalone,
      name: 'lazyConnect',
      fresh: true,
      options: (target) => ({ ...host(target), lazyConnect: true }),
    },
    {
      ...standalone,
      name: 'server restart (offline queue)',
      options: host,
      async disturb(target, ctx) {
        await target.kill('SIGKILL');
        ctx.reset(); // no persistence: the new server starts empty
        // Bursts while nothing listens: they wait in the offline queue across reconnect attempts.
        for (let i = 0; i < 4; i += 1) {
          ctx.burst();
          await sleep(30);
        }
        const restarted = target.restart();
        ctx.burst(); // while it starts
        await restarted;
        ctx.burst();
      },
    },
    {
      ...standalone,
      name: 'commandTimeout',
      options: (target) => ({ ...host(target), commandTimeout: 5000 }),
    },
    {
      ...standalone,
      name: 'unix socket',
      start: () => startRedis({ unixSocket: true }),
      options: (target) => ({ path: target.path }),
    },
    {
      ...standalone,
      name: 'TLS',
      start: () => startRedis({ tls: true }),
      options: (target) => ({ host: target.host, port: target.tlsPort, tls: { ca: target.tls.ca } }),
    },
    { ...cluster, name: 'cluster', options: (target) => cluster.adapterOptions(target) },
    {
      // Redis Sentinel: 1 master + 2 replicas + 3 sentinels, passwords on both. (No failover
      // here: a sentinel failover loses the writes the old master takes until it is demoted,
      // which no model of call order can tell from a client's fault; tests/sentinel.rs and
      // sentinel.test.js check order on the new master instead.)
      ...standalone,
      name: 'Sentinel',
      start: () => startSentinel({ password: 'order-data-pw', sentinelPassword: 'order-sentinel-pw' }),
      options: (target) => ({
        sentinels: target.sentinelNodes,
        name: target.name,
        password: target.password,
        sentinelPassword: target.sentinelPassword,
      }),
      observer: (target, registry) => {
        const client = new Redis({
          sentinels: target.sentinelNodes,
          name: target.name,
          password: target.password,
          sentinelPassword: target.sentinelPassword,
          maxRetriesPerRequest: 1,
        });
        client.on('error', () => {});
        registry.push(client);
        return client;
      },
    },
    {
      ...cluster,
      name: 'cluster failover',
      mayReject: true,
      options: (target) => cluster.adapterOptions(target),
      async disturb(target, ctx) {
        // A manual failover, not a SIGKILLed master: after a SIGKILL, asynchronous replication
        // may lose writes the old master had acknowledged, which no model of call order can
        // tell from a client's fault. One switch per call (the next call switches back): Redis
        // masters refuse a second vote for the same master's replica within 2 x node timeout.
        let done = false;
        const traffic = ctx.loop(() => done);
        try {
          await sleep(100);
          await failoverSlotOf(target, ctx.slotKey);
          await sleep(300); // traffic goes on against the new master
        } finally {
          done = true;
          await traffic;
        }
      },
    },
  ].map((config) => ({ fresh: false, mayReject: false, ...config }));
}

/**
 * A seeded pseudo-random generator (mulberry32): the same seed gives the same numbers in [0, 1),
 * so a failing randomised test can be replayed.
 */
function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Collects the process warnings emitted while `fn(seen)` runs (and one turn after). */
async function collectWarnings(fn) {
  const seen = [];
  const listener = (w) => seen.push(w);
  process.on('warning', listener);
  try {
    await fn(seen);
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', listener);
  }
  return seen;
}

module.exports = {
  ERROR_CODES,
  collectWarnings,
  errorText,
  rejectsWithCode,
  throwsWithCode,
  within,
  waitFor,
  ioredisFor,
  connectionIds,
  closeAll,
  keySlot,
  spreadKey,
  masterNodes,
  allNodes,
  keyNodes,
  scanAll,
  dbsizeAll,
  existsCount,
  slotOwners,
  writeMany,
  ioredisClusterFor,
  topologies,
  connectionMatrix,
  failoverSlotOf,
  seededRandom,
};
