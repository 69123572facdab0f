'use strict';

// `npm run bench`: this adapter against the ioredis + redlock original (bench/reference.js), side
// by side in one run, on one redis-server that the benchmark starts and stops itself (and, when a
// cluster case is selected, a 3-master + 3-replica Redis Cluster, started and stopped the same way).
// The pipeline-<N> / multi-<N> cases measure the package's RedisClient against a plain ioredis
// client: batches of N set/get commands through pipeline() / multi(), exec() awaited.
// Writes BENCHMARKS.md, bench/chart.svg and bench/results.json.
//
// Environment:
//   BENCH_QUICK=1       smoke run (~1-2 min): 1 round, short measurements, 1 s lock windows
//   BENCH_ROUNDS        rounds per case (default 5; quick 1)
//   BENCH_OP_MS         measured time per storage / lock / alova measurement (default 1500; quick 300)
//   BENCH_WARMUP_MS     unmeasured warm-up before each (default 300; quick 100)
//   BENCH_WINDOW_MS     contended-lock window (default 5000; quick 1000)
//   BENCH_HOLD_MS       how long a contended caller holds the lock (default 0: an empty section)
//   BENCH_HANDOFFS      cross-process hand-offs measured per adapter, over all rounds (default 200;
//                       quick 40); each takes 5-305 ms of waiting, plus the hand-off itself
//   BENCH_RSS_OPS       operations of the RSS growth run (default 1000000; quick 100000)
//   BENCH_RB_REQUESTS   redis-benchmark -n (default 200000; quick 20000)
//   BENCH_ONLY          a regular expression: run only the cases whose id matches (e.g. 'set|get',
//                       'pipeline|multi')
//   BENCH_OUT           where to write the report (default BENCHMARKS.md at the repository root);
//                       the chart and the raw figures go next to it (<name>.chart.svg,
//                       <name>.results.json) unless it is the default path

const { fork, execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startRedis, startCluster } = require('../__test__/servers');
const { CASES, CLUSTER } = require('./cases');
const { cpuSnapshot, cpuDelta, processTicks, clkTck, machineBusyTicks } = require('./stats');
const { writeReport, outputPaths } = require('./report');
const { runContendedProcs, runHandoff } = require('./procs');

const ROOT = path.join(__dirname, '..');
const quick = process.env.BENCH_QUICK === '1';
const num = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== '' ? Number(process.env[name]) : dflt);

const config = {
  quick,
  rounds: num('BENCH_ROUNDS', quick ? 1 : 5),
  opMs: num('BENCH_OP_MS', quick ? 300 : 1500),
  warmupMs: num('BENCH_WARMUP_MS', quick ? 100 : 300),
  windowMs: num('BENCH_WINDOW_MS', quick ? 1000 : 5000),
  holdMs: num('BENCH_HOLD_MS', 0),
  handoffs: num('BENCH_HANDOFFS', quick ? 40 : 200),
  rssOps: num('BENCH_RSS_OPS', quick ? 100000 : 1000000),
  rbRequests: num('BENCH_RB_REQUESTS', quick ? 20000 : 200000),
  only: process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null,
  out: process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(ROOT, 'BENCHMARKS.md'),
};

const ADAPTERS = ['ours', 'reference'];
const children = new Set();
let product = null;

function log(line) {
  process.stdout.write(`${line}\n`);
}

// ---------------------------------------------------------------------------------------------
// Machine
// ---------------------------------------------------------------------------------------------

function tryExec(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function pkgVersion(name) {
  try {
    return JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function machineInfo() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (cpuinfo.match(/^model name\s*:\s*(.*)$/m) || [])[1] || os.cpus()[0]?.model || 'unknown';
  const commit = tryExec('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = tryExec('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'index.js', 'Cargo.toml']);
  return {
    cpu: model,
    cores: os.cpus().length,
    memoryGiB: os.totalmem() / 2 ** 30,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: tryExec('redis-server', ['--version']),
    redisBenchmark: tryExec('redis-benchmark', ['--version']),
    ioredis: pkgVersion('ioredis'),
    redlock: pkgVersion('@sesamecare-oss/redlock'),
    alova: pkgVersion('alova'),
    commit: commit ? `${commit}${dirty ? ' (with uncommitted changes in src/ or index.js)' : ''}` : null,
    loadavg: os.loadavg(),
  };
}

// ---------------------------------------------------------------------------------------------
// The product under test
// ---------------------------------------------------------------------------------------------

/**
 * Copies the built package (its JavaScript and the addon) to a temporary directory that every
 * worker loads, so that a rebuild of the repository during the run cannot mix two builds in one
 * report. Checks that the copy loads; retries while a build may be writing the addon.
 */
async function snapshotProduct() {
  // The package's own files (package.json's `files`) and the addon; its dependencies resolve
  // from the repository's node_modules.
  const files = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).files || [];
  const names = fs.readdirSync(ROOT).filter((n) => n.endsWith('.node') || n === 'package.json' || (files.includes(n) && n.endsWith('.js')));
  if (!names.some((n) => n.endsWith('.node'))) throw new Error('the addon is not built: run `npm run build` first');
  for (let attempt = 1; ; attempt += 1) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alova-bench-product-'));
    for (const n of names) fs.copyFileSync(path.join(ROOT, n), path.join(dir, n));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    const addon = names.find((n) => n.endsWith('.node'));
    const bytes = fs.readFileSync(path.join(dir, addon));
    const sha = require('node:crypto').createHash('sha256').update(bytes).digest('hex').slice(0, 12);
    const mtime = fs.statSync(path.join(ROOT, addon)).mtime.toISOString();
    try {
      execFileSync(process.execPath, ['-e', `require(${JSON.stringify(dir)})`], { stdio: 'ignore', timeout: 30000 });
      return { dir, addon, sha, mtime };
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      if (attempt >= 5) throw new Error(`the built package does not load: ${err.message}`);
      log('the addon does not load (a build in progress?): retrying in 10 s');
      await new Promise((resolve) => setTimeout(resolve, 10000));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

/** Forks `script`, sends it `job` and resolves with its reply; kills it after `timeoutMs`. */
function runChild(script, job, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = fork(script, [], {
      cwd: ROOT,
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env },
    });
    children.add(child);
    let reply = null;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(script)} ${job ? job.id : ''} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', (msg) => {
      reply = msg;
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (reply && reply.ok) resolve(reply.result);
      else if (reply) reject(new Error(reply.error));
      else reject(new Error(`${path.basename(script)} exited (${signal || code}) without a result`));
    });
    if (job) child.send(job);
  });
}

function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server behind the alova case
// ---------------------------------------------------------------------------------------------

function startHttp() {
  const state = { hits: 0 };
  const server = http.createServer((req, res) => {
    state.hits += 1;
    const p = new URL(req.url, 'http://x').pathname;
    res.setHeader('content-type', 'application/json');
    // A small JSON body: the cached entry is about 250 bytes, like the storage cases.
    res.end(JSON.stringify({ path: p, code: 0, message: 'ok', data: { id: 1, name: 'user-1', email: 'user1@example.com', roles: ['reader', 'writer'], active: true, createdAt: '2024-05-17T09:31:27.000Z' } }));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      state.server = server;
      state.baseURL = `http://127.0.0.1:${server.address().port}`;
      resolve(state);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Leaked locks
// ---------------------------------------------------------------------------------------------

const LOCK_KEY = /^bench:(contended|handoff|lk:|warm:)/;

/**
 * Counts lock keys that expire in Redis: with an empty critical section a lock key only expires
 * when nobody released it, i.e. its holder's unlock lost track of it (a leaked lock). Keyspace
 * notifications for expired keys only ('Ex'), so the other measurements pay nothing.
 */
async function watchLockExpiry(redis) {
  await redis.command('CONFIG', 'SET', 'notify-keyspace-events', 'Ex');
  const Redis = require('ioredis');
  const sub = new Redis({ host: redis.host, port: redis.port });
  const state = { expired: 0, close: () => sub.disconnect() };
  sub.on('message', (channel, key) => {
    if (LOCK_KEY.test(key)) state.expired += 1;
  });
  sub.on('error', () => {});
  await sub.subscribe('__keyevent@0__:expired');
  return state;
}

/** The lock keys a case uses. */
function lockKeys(c) {
  if (c.kind === 'lock') return Array.from({ length: c.inflight }, (_, i) => `bench:lk:${i}`);
  if (c.kind === 'contended') return ['bench:contended', ...Array.from({ length: c.adapters }, (_, i) => `bench:warm:${i}`)];
  if (c.kind === 'contended-procs') {
    const warm = [];
    for (let p = 0; p < c.processes; p += 1) for (let i = 0; i < c.adaptersPerProcess; i += 1) warm.push(`bench:warm:${p}:${i}`);
    return [c.resource, ...warm];
  }
  if (c.kind === 'handoff') return [c.resource, 'bench:warm:0', 'bench:warm:1'];
  return [];
}

const isLockCase = (c) => ['lock', 'contended', 'contended-procs', 'handoff'].includes(c.kind);

/**
 * Waiters still in a line in Redis (the lists `*alova-waiters` beside a lock key, issue 10) once
 * every caller is done: 0 unless a waiter left its place behind. Only this adapter keeps a line.
 */
async function waitersLeft(redis) {
  const keys = await redis.command('KEYS', '*alova-waiters');
  if (!Array.isArray(keys) || keys.length === 0) return 0;
  let left = 0;
  for (const key of keys) {
    const type = await redis.command('TYPE', key);
    if (String(type) === 'list') left += Number(await redis.command('LLEN', key)) || 0;
  }
  return left;
}

// ---------------------------------------------------------------------------------------------
// redis-benchmark
// ---------------------------------------------------------------------------------------------

function parseCsv(text) {
  const rows = text
    .trim()
    .split('\n')
    .map((line) => line.split('","').map((cell) => cell.replace(/^"|"$/g, '')));
  const header = rows.shift();
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
}

/** One redis-benchmark run per command, with the CPU redis-server and redis-benchmark used. */
async function redisBenchmark(redis, pipeline, requests) {
  const rows = [];
  let command;
  for (const test of ['set', 'get']) {
    const args = ['-h', redis.host, '-p', String(redis.port), '-t', test, '-n', String(requests), '-c', '50', '-d', '250', '-P', String(pipeline), '--csv'];
    command = `redis-benchmark ${args.slice(4).join(' ').replace(`-t ${test}`, '-t set|get')}`;
    const snap0 = cpuSnapshot([redis.pid]);
    const children0 = childrenTicks();
    const stdout = await new Promise((resolve, reject) => {
      execFile('redis-benchmark', args, { timeout: 300000 }, (err, out, stderr) => {
        if (err) reject(new Error(`redis-benchmark failed: ${err.message}\n${stderr}`));
        else resolve(out);
      });
    });
    const machine = cpuDelta(snap0, cpuSnapshot([redis.pid]));
    const benchCores = (childrenTicks() - children0) / clkTck() / machine.seconds;
    for (const r of parseCsv(stdout)) {
      rows.push({
        test: r.test,
        rps: Number(r.rps),
        p50: Number(r.p50_latency_ms) * 1000,
        p99: Number(r.p99_latency_ms) * 1000,
        redisCores: machine.othersCores[0],
        benchmarkCores: benchCores,
      });
    }
  }
  return { pipeline, requests, clients: 50, dataSize: 250, command, rows };
}

/** CPU ticks of this process's children that have exited (cutime + cstime). */
function childrenTicks() {
  const text = fs.readFileSync('/proc/self/stat', 'utf8');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(rest[13]) + Number(rest[14]);
}

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

/** The redis-server handles that hold a case's keys: the cluster's current masters, or the server. */
async function targetsOf(redis, cluster, c) {
  if (!c.cluster) return [redis];
  const masters = await cluster.masters();
  return cluster.servers.filter((s) => masters.some((m) => m.host === s.host && m.port === s.port));
}

async function prepare(redis, cluster, c) {
  for (const server of await targetsOf(redis, cluster, c)) {
    const reply = await server.command('FLUSHALL');
    if (reply instanceof Error) throw new Error(`FLUSHALL on ${server.host}:${server.port} failed: ${reply.message}`);
  }
  if (c.kind === 'op' && c.op === 'remove') {
    const reply = await redis.command('DEBUG', 'POPULATE', String(c.pool), 'bench:rm', '250');
    if (reply instanceof Error) throw new Error(`DEBUG POPULATE failed: ${reply.message}`);
  }
}

function jobFor(c, adapter, redis, cluster, httpState) {
  return {
    ...c,
    adapter,
    product: product.dir,
    redis: { host: redis.host, port: redis.port, pid: redis.pid },
    // A cluster case: the startup nodes (every node, as a client would list them), and every
    // node's process, whose CPU the measurement counts as redis-server's.
    ...(c.cluster
      ? {
        cluster: { nodes: cluster.nodes, options: {} },
        servers: cluster.servers.map((s) => ({ host: s.host, port: s.port, pid: s.pid })),
      }
      : {}),
    durationMs: config.opMs,
    warmupMs: config.warmupMs,
    windowMs: config.windowMs,
    holdMs: config.holdMs,
    // The hand-offs of one round: the configured number spread over the rounds.
    handoffs: Math.max(1, Math.ceil(config.handoffs / config.rounds)),
    baseURL: httpState.baseURL,
  };
}

function fmtOps(x) {
  return x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1);
}

async function main() {
  const started = Date.now();
  const info = machineInfo();
  log(`bench: ${quick ? 'QUICK ' : ''}run, ${config.rounds} round(s), ${config.opMs} ms per measurement, ${config.windowMs} ms lock windows`);
  log(`machine: ${info.cpu}, ${info.cores} cores, ${info.kernel}, node ${info.node}`);

  product = await snapshotProduct();
  info.addon = `${product.addon}, sha256 ${product.sha}, built ${product.mtime.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`;
  log(`product: ${info.addon}`);

  const runSnap0 = { at: process.hrtime.bigint(), machine: machineBusyTicks() };
  const selfTicks0 = processTicksWithChildren();

  // The JSON figures first, with nothing else running.
  log('json: JSON.stringify / JSON.parse ...');
  const json = await runChild(path.join(__dirname, 'json.js'), null, 120000);

  let redis;
  let cluster;
  let clusterTicks0 = 0;
  let httpState;
  let lockWatch;
  try {
    try {
      redis = await startRedis({ args: ['--enable-debug-command', 'local'] });
    } catch {
      redis = await startRedis(); // a redis-server older than 7 has no such option
    }
    httpState = await startHttp();
    lockWatch = await watchLockExpiry(redis);
    const redisTicks0 = processTicks(redis.pid);
    log(`redis-server pid ${redis.pid} on ${redis.host}:${redis.port}`);

    const cases = CASES.filter((c) => !config.only || config.only.test(c.id));
    const idWidth = Math.max(14, ...cases.map((c) => c.id.length));
    if (cases.some((c) => c.cluster)) {
      const t0 = Date.now();
      cluster = await startCluster({ masters: CLUSTER.masters, replicas: CLUSTER.replicas });
      clusterTicks0 = clusterTicks(cluster);
      log(`redis cluster: ${CLUSTER.masters} masters + ${CLUSTER.masters * CLUSTER.replicas} replicas on ${cluster.nodes.map((n) => n.port).join(', ')} (ready in ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const measurements = [];
    for (let round = 0; round < config.rounds; round += 1) {
      for (let i = 0; i < cases.length; i += 1) {
        const c = cases[i];
        const order = (round + i) % 2 === 0 ? ADAPTERS : [...ADAPTERS].reverse();
        for (const adapter of order) {
          await prepare(redis, cluster, c);
          const hitsBefore = httpState.hits;
          const expiredBefore = lockWatch.expired;
          const job = jobFor(c, adapter, redis, cluster, httpState);
          let result;
          if (c.kind === 'contended-procs') {
            result = await runContendedProcs(job, { redis: job.redis, children, timeoutMs: config.windowMs + 90000 });
            result.waitersLeft = await waitersLeft(redis);
          } else if (c.kind === 'handoff') {
            result = await runHandoff(job, { children, timeoutMs: job.handoffs * 3000 + 90000 });
            result.waitersLeft = await waitersLeft(redis);
          } else {
            const timeout = c.kind === 'contended' ? config.windowMs + 60000 : config.opMs * 4 + 120000;
            result = await runChild(path.join(__dirname, 'worker.js'), job, timeout);
          }
          if (c.kind === 'alova') result.networkRequests = httpState.hits - hitsBefore - c.paths;
          if (isLockCase(c)) {
            // Every caller has unlocked: a lock key still there was leaked. DEL counts them and
            // keeps them from expiring later, into the next measurement's count.
            result.keysLeft = Number(await redis.command('DEL', ...lockKeys(c)));
            await new Promise((resolve) => setTimeout(resolve, 50)); // expiry events in flight
            result.expiredLocks = lockWatch.expired - expiredBefore;
            result.leakedLocks = result.keysLeft + result.expiredLocks;
          }
          measurements.push({ id: c.id, adapter, round, result });
          if (c.kind === 'handoff') {
            log(
              `[round ${round + 1}/${config.rounds}] ${c.id.padEnd(idWidth)} ${adapter.padEnd(9)} ${String(result.handoffs).padStart(5)} hand-offs` +
                `  p50 ${fmtUs(result.p50)}  p99 ${fmtUs(result.p99)}  max ${fmtUs(result.maxLatency)}, ${result.errors} failed locks, ${result.early} before the unlock, ${result.leakedLocks} leaked locks, clock skew ${result.clock.skewUs.toFixed(0)} ± ${result.clock.uncertaintyUs.toFixed(0)} µs`,
            );
            continue;
          }
          const shares = c.kind === 'contended-procs' ? `, processes ${result.processShares.map((x) => `${(100 * (x || 0)).toFixed(0)}%`).join('/')}, ${result.overlaps} overlaps, ${result.waitersLeft} left in line` : '';
          const extra = c.kind === 'contended' || c.kind === 'contended-procs' ? `, longest gap ${result.maxGapMs.toFixed(1)} ms, busiest caller ${(100 * (result.busiestShare || 0)).toFixed(0)}%, ${result.errors} failed locks, ${result.leakedLocks} leaked locks${shares}` : '';
          // A batch case's operation is one exec() of `c.commands` commands.
          const unit = c.kind === 'batch' ? ` batches/s (${fmtOps(result.commandsPerSec)} commands/s)` : ' ops/s';
          log(
            `[round ${round + 1}/${config.rounds}] ${c.id.padEnd(idWidth)} ${adapter.padEnd(9)} ${fmtOps(result.opsPerSec).padStart(9)}${unit}` +
              `  p50 ${fmtUs(result.p50)}  p99 ${fmtUs(result.p99)}  cpu ${fmtUs(result.cpuUsPerOp)}/op` +
              `${result.errors && c.kind !== 'contended' && c.kind !== 'contended-procs' ? `  ${result.errors} errors (${result.firstError})` : ''}${extra}`,
          );
        }
      }
    }

    // RSS growth over a million operations, once per adapter.
    const rss = {};
    if (!config.only || config.only.test('rss')) {
      for (const adapter of ADAPTERS) {
        await redis.command('FLUSHALL');
        const job = { kind: 'rss', id: 'rss', adapter, product: product.dir, redis: { host: redis.host, port: redis.port, pid: redis.pid }, ops: config.rssOps, inflight: 16 };
        rss[adapter] = await runChild(path.join(__dirname, 'worker.js'), job, 900000);
        const r = rss[adapter];
        log(`rss ${adapter.padEnd(9)} ${r.ops} ops, ${fmtOps(r.opsPerSec)} ops/s, RSS ${mb(r.rssStart)} -> ${mb(r.rssEnd)} MB (peak ${mb(r.rssPeak)})`);
      }
    }

    // The ceiling: redis-benchmark on the same server.
    const ceiling = [];
    if (!config.only || config.only.test('redis-benchmark')) {
      for (const pipeline of [1, 16]) {
        await redis.command('FLUSHALL');
        const rb = await redisBenchmark(redis, pipeline, config.rbRequests);
        ceiling.push(rb);
        log(`redis-benchmark -P ${pipeline}: ${rb.rows.map((r) => `${r.test} ${fmtOps(r.rps)}/s`).join(', ')}`);
      }
    }

    const runSnap1 = { at: process.hrtime.bigint(), machine: machineBusyTicks() };
    const seconds = Number(runSnap1.at - runSnap0.at) / 1e9;
    const hz = clkTck();
    const ours = processTicksWithChildren() - selfTicks0;
    // redis-server CPU: the server's, and the cluster's nodes' since the cluster was ready.
    const redisTicks = (processTicks(redis.pid) ?? redisTicks0) - redisTicks0 + (cluster ? clusterTicks(cluster) - clusterTicks0 : 0);
    const restTicks = runSnap1.machine - runSnap0.machine - ours - redisTicks;
    const noise = {
      seconds,
      benchCores: ours / hz / seconds,
      redisCores: redisTicks / hz / seconds,
      restCores: Math.max(0, restTicks / hz / seconds),
      loadavgEnd: os.loadavg(),
    };

    const data = { config: { ...config, only: config.only ? String(config.only) : null }, info, date: new Date().toISOString(), cases, measurements, rss, ceiling, json, noise, runtimeSeconds: (Date.now() - started) / 1000 };
    const outputs = outputPaths(config.out);
    fs.mkdirSync(path.dirname(outputs.results), { recursive: true });
    fs.writeFileSync(outputs.results, `${JSON.stringify(data, null, 2)}\n`);
    const written = writeReport(data, { out: outputs.report, chart: outputs.chart, results: outputs.results });
    log(`wrote ${path.relative(ROOT, written.report)}, ${path.relative(ROOT, written.chart)}, ${path.relative(ROOT, outputs.results)} (${Math.round(data.runtimeSeconds)} s)`);
    for (const line of written.targets) log(line);
  } finally {
    killChildren();
    if (lockWatch) lockWatch.close();
    if (httpState) {
      httpState.server.closeAllConnections?.();
      await new Promise((resolve) => httpState.server.close(resolve));
    }
    if (cluster) await cluster.stop();
    if (redis) await redis.stop();
    if (product) fs.rmSync(product.dir, { recursive: true, force: true });
  }
}

/** CPU ticks of every node of a cluster (a node gone counts nothing). */
function clusterTicks(cluster) {
  return cluster.servers.reduce((sum, s) => sum + (processTicks(s.pid) ?? 0), 0);
}

/** This process's CPU ticks, including its children that have exited (utime+stime+cutime+cstime). */
function processTicksWithChildren() {
  const text = fs.readFileSync('/proc/self/stat', 'utf8');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
}

function fmtUs(x) {
  if (x === null || x === undefined) return '-';
  return x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} µs`;
}

function mb(bytes) {
  return (bytes / 2 ** 20).toFixed(1);
}

process.on('exit', () => {
  killChildren();
  if (product) fs.rmSync(product.dir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killChildren();
    process.exit(130);
  });
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench failed: ${(err && err.stack) || err}`);
    process.exitCode = 1;
  },
);
