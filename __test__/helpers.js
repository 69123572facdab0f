'use strict';

// Small assertions and utilities shared by the suites. Servers live in ./servers.js.

const assert = require('node:assert/strict');
const util = require('node:util');
const Redis = require('ioredis');
// Loading ./servers registers a root after-hook under node:test: load it here, at the top level
// of the test file (a hook registered later, from inside a test, would run too early). Fixtures
// (child processes) must therefore not load this file.
const { startRedis, startCluster } = require('./servers');

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

/** Counts the connections the server has open (`CLIENT LIST`, the observer's own included). */
async function connectionCount(observer) {
  const list = await observer.call('CLIENT', 'LIST');
  return list.split('\n').filter((line) => line.trim()).length;
}

/** Closes adapters and ioredis clients, ignoring those already closed. */
async function closeAll(things) {
  await Promise.all(
    things.splice(0).map(async (thing) => {
      try {
        if (thing instanceof Redis || thing instanceof Redis.Cluster) thing.disconnect();
        else if (typeof thing.close === 'function') await thing.close();
      } catch {
        // already closed
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
 * Each is `{ name, cluster, spreadKeys, start(), adapterOptions(target, extra), observer(target,
 * registry), redisKey(prefix, key) }`: `start()` resolves a target with `stop()` (a startRedis
 * handle, or a startCluster handle); `adapterOptions` is what `new RedisStorageAdapter` takes for
 * it; `observer` an ioredis `Redis` or `Cluster` that looks at it from the outside (closed by
 * `closeAll(registry)`); `redisKey` the Redis key of an adapter key. The cluster variants of one
 * call share one cluster (started on first use, stopped at the end of the file; their `stop()`
 * leaves it running), so a file starts at most one.
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
  const clusterVariant = (spread) => ({
    name: spread ? 'cluster, spreadKeys' : 'cluster',
    cluster: true,
    spreadKeys: spread,
    start: startShared,
    adapterOptions: (target, extra = {}) => ({
      nodes: target.nodes,
      ...(target.servers[0].password ? { options: { redisOptions: { password: target.servers[0].password } } } : {}),
      ...(spread ? { spreadKeys: true } : {}),
      ...extra,
    }),
    observer: (target, registry) => ioredisClusterFor(target, {}, registry),
    redisKey: (prefix, key) => (spread ? spreadKey(prefix, key) : prefix + key),
  });
  return [
    {
      name: 'standalone',
      cluster: false,
      spreadKeys: false,
      start: () => startRedis(),
      adapterOptions: (target, extra = {}) => ({ host: target.host, port: target.port, ...extra }),
      observer: (target, registry) => ioredisFor(target, {}, registry),
      redisKey: (prefix, key) => prefix + key,
    },
    clusterVariant(false),
    ...(spreadKeys ? [clusterVariant(true)] : []),
  ];
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
  connectionCount,
  closeAll,
  keySlot,
  spreadKey,
  masterNodes,
  scanAll,
  dbsizeAll,
  existsCount,
  slotOwners,
  writeMany,
  ioredisClusterFor,
  topologies,
};
