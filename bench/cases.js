'use strict';

// What the benchmark measures. Every case runs for both adapters, in alternating order, in a fresh
// child process each time (bench/worker.js).

/** Keys a remove case may delete (filled beforehand), by operations in flight. */
const REMOVE_POOL = { 1: 100000, 16: 400000, 256: 600000 };

function storageCases() {
  const out = [];
  for (const op of ['set', 'get', 'remove']) {
    for (const inflight of [1, 16, 256]) {
      out.push({
        id: `${op}-250B-${inflight}`,
        group: 'storage',
        label: `${op} 250 B, ${inflight} in flight`,
        kind: 'op',
        op,
        size: '250B',
        inflight,
        keys: 10000,
        pool: op === 'remove' ? REMOVE_POOL[inflight] : undefined,
      });
    }
  }
  for (const [size, keys] of [['10KB', 1000], ['1MB', 16]]) {
    for (const op of ['set', 'get']) {
      out.push({
        id: `${op}-${size}-16`,
        group: 'storage',
        label: `${op} ${size.replace('KB', ' KB').replace('MB', ' MB')}, 16 in flight`,
        kind: 'op',
        op,
        size,
        inflight: 16,
        keys,
      });
    }
  }
  return out;
}

/** Connection options given to both adapters in the commandTimeout cases (ioredis's own name). */
const TIMEOUT_OPTIONS = { commandTimeout: 5000 };
/** The cluster the cluster cases run on, started by bench/run.js only when one is selected. */
const CLUSTER = { masters: 3, replicas: 1 };

/**
 * set / get of 250 B entries at 16 and 256 in flight, as the storage cases above, on other
 * connections (issue 9, deliverable 7): with `commandTimeout` set, and on a Redis Cluster. Their
 * ids end in `-timeout` / `-cluster`; `variantOf` names the plain case they compare with.
 */
function variantCases() {
  const out = [];
  const variants = [
    {
      suffix: 'timeout',
      group: 'storage-timeout',
      label: `commandTimeout ${TIMEOUT_OPTIONS.commandTimeout}`,
      extra: { options: TIMEOUT_OPTIONS },
    },
    {
      suffix: 'cluster',
      group: 'storage-cluster',
      label: `cluster (${CLUSTER.masters} masters + ${CLUSTER.masters * CLUSTER.replicas} replicas)`,
      extra: { cluster: true },
    },
  ];
  for (const v of variants) {
    for (const op of ['set', 'get']) {
      for (const inflight of [16, 256]) {
        out.push({
          id: `${op}-250B-${inflight}-${v.suffix}`,
          group: v.group,
          variant: v.suffix,
          variantOf: `${op}-250B-${inflight}`,
          label: `${op} 250 B, ${inflight} in flight, ${v.label}`,
          kind: 'op',
          op,
          size: '250B',
          inflight,
          keys: 10000,
          ...v.extra,
        });
      }
    }
  }
  return out;
}

function lockCases() {
  return [
    { id: 'lock-1', group: 'lock', label: 'lock+unlock, distinct resources, 1 in flight', kind: 'lock', inflight: 1 },
    { id: 'lock-16', group: 'lock', label: 'lock+unlock, distinct resources, 16 in flight', kind: 'lock', inflight: 16 },
    {
      id: 'contended-1',
      group: 'contended',
      label: 'contended: 16 callers, 1 resource, 1 adapter',
      kind: 'contended',
      callers: 16,
      adapters: 1,
    },
    {
      id: 'contended-16',
      group: 'contended',
      label: 'contended: 16 callers, 1 resource, 16 adapters',
      kind: 'contended',
      callers: 16,
      adapters: 16,
    },
    // Across processes (issue 10, deliverable 6; bench/procs.js): 3 processes started together,
    // 8 callers each, one adapter per process (as an application runs it) or one per caller.
    {
      id: 'contended-3x8',
      group: 'contended',
      label: 'contended: 3 processes x 8 callers, 1 resource, 1 adapter per process',
      kind: 'contended-procs',
      processes: 3,
      callers: 8,
      adaptersPerProcess: 1,
      resource: 'bench:contended',
    },
    {
      id: 'contended-3x8-separate',
      group: 'contended',
      label: 'contended: 3 processes x 8 callers, 1 resource, 1 adapter per caller',
      kind: 'contended-procs',
      processes: 3,
      callers: 8,
      adaptersPerProcess: 8,
      resource: 'bench:contended',
    },
    // The time from an unlock() in one process to the lock() it frees resolving in another.
    {
      id: 'handoff',
      group: 'contended',
      label: 'cross-process hand-off: unlock() in one process to lock() resolving in another',
      kind: 'handoff',
      resource: 'bench:handoff',
      handoffWarmup: 4,
      settleMinMs: 5,
      settleSpanMs: 300,
    },
  ];
}

function alovaCases() {
  return [1, 16].map((inflight) => ({
    id: `alova-${inflight}`,
    group: 'alova',
    label: `alova cached GET (l2 hit), ${inflight} in flight`,
    kind: 'alova',
    inflight,
    paths: 64,
  }));
}

/** The batch cases' commands: the value every `set` writes (small, ASCII), and the keys used. */
const BATCH = { valueBytes: 64, keys: 10000, inflight: 16 };

/**
 * `RedisClient`'s `pipeline()` and `multi()` against ioredis's (`new Redis()`, defaults), on one
 * server: each operation builds one batch of `commands` commands, half `set` half `get`
 * (alternating, each on a key of its own, keys filled beforehand so every `get` hits), and awaits
 * its `exec()`; `BATCH.inflight` batches in flight, as the storage cases' middle concurrency. One
 * operation is one batch: ops/s is batches/s (the report adds commands/s).
 */
function batchCases() {
  const out = [];
  for (const mode of ['pipeline', 'multi']) {
    for (const commands of [10, 100]) {
      out.push({
        id: `${mode}-${commands}`,
        group: 'batch',
        label: `${mode}() of ${commands} set/get ${BATCH.valueBytes} B, ${BATCH.inflight} in flight`,
        kind: 'batch',
        mode,
        commands,
        inflight: BATCH.inflight,
        keys: BATCH.keys,
        valueBytes: BATCH.valueBytes,
      });
    }
  }
  return out;
}

const CASES = [...storageCases(), ...variantCases(), ...lockCases(), ...alovaCases(), ...batchCases()];

module.exports = { CASES, REMOVE_POOL, TIMEOUT_OPTIONS, CLUSTER, BATCH };
