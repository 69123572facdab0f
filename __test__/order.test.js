'use strict';

// Call order (SPEC invariant 1, issue 9): one client's commands reach Redis in the order they were
// called, on every path. A randomised, model-based check: bursts of set/remove/get on a few shared
// keys, mixed with commands of the same client (SET/GET/DEL through call(), rpush, lrange), every
// call of a burst issued in one tick with nothing awaited in between. Replaying the calls in call
// order on a model says what each reply must be and what Redis must hold at the end (read by an
// independent ioredis client). It runs over the connection matrix of helpers.js: a fresh client,
// lazyConnect, a server restart (offline queue), commandTimeout, a unix socket, TLS, a cluster and
// a cluster during failovers.
//
// The seed is in every failure message; ORDER_SEED=<n> replays the same calls (not the same
// timing).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');
const RedisStorageAdapter = require('..');
const { RedisClient } = RedisStorageAdapter;
const { ERROR_CODES, within, closeAll, connectionMatrix, seededRandom } = require('./helpers');

const SEED = process.env.ORDER_SEED ? Number(process.env.ORDER_SEED) >>> 0 : (Date.now() % 0x7fffffff) >>> 0;
const HANG_MS = 20000; // calls still unsettled after this are hung, not slow
const TEST_TIMEOUT = 90000; // node:test's own guard, above every bound inside

// Three keys share one slot (hash tag {t}): on a cluster that slot's order across keys is at
// stake too, and the failover is of that slot's master.
const KEYS = ['{t}a', '{t}b', '{t}c', 'x', 'y', 'z'];
const LISTS = ['{t}list', 'list'];

// What a burst is made of: adapter operations plus commands of `adapter.client`, or, for a
// RedisClient of its own, its commands only. Weights.
const ADAPTER_MIX = { set: 26, remove: 8, get: 24, cset: 7, cget: 8, cdel: 4, rpush: 15, lrange: 8 };
const CLIENT_MIX = { cset: 25, cdel: 8, cget: 22, rpush: 30, lrange: 15 };
const WRITES = new Set(['set', 'remove', 'cset', 'cdel']);

function pick(rng, mix) {
  const total = Object.values(mix).reduce((a, b) => a + b, 0);
  let r = rng() * total;
  for (const [kind, weight] of Object.entries(mix)) {
    r -= weight;
    if (r < 0) return kind;
  }
  return Object.keys(mix)[0];
}

/** A value whose JSON text survives a parse and a stringify unchanged. */
function makeValue(rng, seq) {
  const r = rng();
  if (r < 0.45) return { seq, n: Math.floor(rng() * 1000) };
  if (r < 0.65) return `v${seq}`;
  if (r < 0.8) return seq;
  return [{ seq }, Date.now() + 600000]; // alova's [data, expireTs]: stored with PX
}

/** A name for a 32-bit seed per test, so that the tests of one run do not share their calls. */
function hash(text) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(text)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

const show = (v) => util.inspect(v, { breakLength: Infinity, depth: 4 });

/**
 * Issues one burst of `size` calls through `via` ({ adapter?, client }) in this tick and appends
 * them to `log` in call order. Resolves (never rejects) once every call has settled.
 */
function issueBurst({ rng, log, via, prefix, mix, burst }) {
  const size = 20 + Math.floor(rng() * 40);
  const settled = [];
  for (let i = 0; i < size; i += 1) {
    const kind = pick(rng, mix);
    const isList = kind === 'rpush' || kind === 'lrange';
    const names = isList ? LISTS : KEYS;
    const name = names[Math.floor(rng() * names.length)];
    const key = prefix + name; // the Redis key (no spreadKeys)
    const op = { kind, name, key, burst, seq: log.length, value: undefined };
    let promise;
    switch (kind) {
      case 'set': {
        const value = makeValue(rng, op.seq);
        op.value = JSON.stringify(value);
        promise = via.adapter.set(name, value);
        break;
      }
      case 'remove':
        op.value = null;
        promise = via.adapter.remove(name);
        break;
      case 'get':
        promise = via.adapter.get(name).then((v) => (v === undefined ? null : JSON.stringify(v)));
        break;
      case 'cset':
        op.value = JSON.stringify(makeValue(rng, op.seq));
        promise = via.client.call('SET', key, op.value);
        break;
      case 'cget':
        promise = via.client.call('GET', key);
        break;
      case 'cdel':
        op.value = null;
        promise = via.client.del(key);
        break;
      case 'rpush':
        op.value = String(op.seq);
        promise = via.client.rpush(key, op.value);
        break;
      case 'lrange':
        promise = via.client.lrange(key, 0, -1);
        break;
      default:
        throw new Error(`unknown call ${kind}`);
    }
    log.push(op);
    settled.push(
      promise.then(
        (result) => {
          op.ok = true;
          op.result = result;
        },
        (err) => {
          op.ok = false;
          op.error = err;
        },
      ),
    );
  }
  return Promise.all(settled);
}

/**
 * Replays `log` in call order. A string key may hold one of a set of values: a write that
 * resolved leaves exactly its value; one that was rejected may or may not have run, so it adds
 * its value to what was possible. A list becomes unknowable after a rejected push.
 * @returns {{ strings: Map<string, Set<string|null>>, lists: Map<string, string[]|null>,
 *   wrong: object[], replies: number }}
 */
function replay(log) {
  const strings = new Map();
  const lists = new Map();
  const wrong = [];
  let replies = 0;
  const possible = (key) => strings.get(key) || new Set([null]);
  const listOf = (key) => (lists.has(key) ? lists.get(key) : []);
  for (const op of log) {
    if (op.kind === 'reset') {
      strings.clear();
      lists.clear();
      continue;
    }
    if (WRITES.has(op.kind)) {
      strings.set(op.key, op.ok ? new Set([op.value]) : new Set([...possible(op.key), op.value]));
    } else if (op.kind === 'get' || op.kind === 'cget') {
      if (!op.ok) continue;
      replies += 1;
      if (!possible(op.key).has(op.result)) wrong.push({ op, expected: [...possible(op.key)] });
    } else if (op.kind === 'rpush') {
      const list = listOf(op.key);
      if (list === null) continue;
      if (!op.ok) {
        lists.set(op.key, null);
        continue;
      }
      list.push(op.value);
      lists.set(op.key, list);
      replies += 1;
      if (op.result !== list.length) wrong.push({ op, expected: [list.length] });
    } else if (op.kind === 'lrange') {
      const list = listOf(op.key);
      if (list === null || !op.ok) continue;
      replies += 1;
      if (show(op.result) !== show(list)) wrong.push({ op, expected: [[...list]] });
    }
  }
  return { strings, lists, wrong, replies };
}

/** One wrong reply, with the calls on its key that came before it. */
function describeWrong({ op, expected }, log) {
  const before = log
    .filter((o) => o.key === op.key && o.seq < op.seq && o.kind !== 'reset')
    .slice(-4)
    .map((o) => `${o.kind}${o.value !== undefined ? `(${show(o.value)})` : ''}${o.ok === false ? ' [rejected]' : ''}`);
  return `burst ${op.burst}, call #${op.seq} ${op.kind} ${op.key} returned ${show(op.result)} where call order ` +
    `says ${expected.map(show).join(' or ')} (the calls on the key before it: ${before.join(', ') || 'none'})`;
}

/**
 * Runs the bursts of one test: `rounds` bursts (each awaited before the next; with a fresh client
 * for the first round, and for every round when `config.fresh`), then the fault of the
 * configuration under traffic, then a few bursts more; and checks every reply and the final state.
 */
async function drive(t, { config, target, observer, open, kind, prefix }) {
  const label = `${config.name}, ${kind}`;
  const rng = seededRandom(SEED ^ hash(label));
  const mix = kind === 'adapter' ? ADAPTER_MIX : CLIENT_MIX;
  const log = [];
  const bursts = [];
  let via = null;

  const connect = () => {
    const options = config.options(target);
    if (kind === 'adapter') {
      const adapter = new RedisStorageAdapter({ ...options, keyPrefix: prefix });
      open.push(adapter);
      return { adapter, client: adapter.client, close: () => adapter.close() };
    }
    const client = new RedisClient(options);
    open.push(client);
    return { client, close: () => client.quit() };
  };
  const burst = () => {
    const settled = issueBurst({ rng, log, via, prefix, mix, burst: bursts.length });
    bursts.push(settled);
    return settled;
  };
  const hang = (promise, what) => within(HANG_MS, promise, `${label}: ${what} (seed ${SEED})`);
  const loop = async (until) => {
    while (!until()) await hang(burst(), 'a burst during the fault');
  };

  const rounds = config.fresh ? 16 : 40;
  for (let round = 0; round < rounds; round += 1) {
    if (round === 0 || config.fresh) {
      if (via) await hang(via.close(), 'close() of the previous client');
      via = connect();
    }
    // For a new client, in the same tick as its constructor: before its first connection.
    await hang(burst(), `burst ${round}`);
  }
  let afterFault = 0;
  if (config.disturb) {
    await config.disturb(target, {
      burst,
      loop,
      reset: () => log.push({ kind: 'reset', seq: log.length }),
      slotKey: prefix + KEYS[0],
    });
    afterFault = bursts.length;
    for (let i = 0; i < 3; i += 1) await hang(burst(), 'a burst after the fault');
  }
  await hang(Promise.all(bursts), 'the bursts');

  const { strings, lists, wrong, replies } = replay(log);
  const calls = log.filter((op) => op.kind !== 'reset');
  const rejected = calls.filter((op) => op.ok === false);
  const codes = {};
  for (const op of rejected) codes[op.error && op.error.code] = (codes[op.error && op.error.code] || 0) + 1;
  const badBursts = new Set(wrong.map((w) => w.op.burst));

  // The final state, read from the outside.
  const finalWrong = [];
  for (const name of KEYS) {
    const key = prefix + name;
    const actual = await observer.get(key);
    const expected = strings.get(key) || new Set([null]);
    if (!expected.has(actual)) finalWrong.push(`${key} holds ${show(actual)}, call order says ${[...expected].map(show).join(' or ')}`);
  }
  for (const name of LISTS) {
    const key = prefix + name;
    const expected = lists.has(key) ? lists.get(key) : [];
    if (expected === null) continue; // a rejected push: unknowable
    const actual = await observer.lrange(key, 0, -1);
    if (show(actual) !== show(expected)) finalWrong.push(`${key} holds ${show(actual)}, call order says ${show(expected)}`);
  }

  t.diagnostic(
    `${label}: ${calls.length} calls in ${bursts.length} bursts, ${replies} replies checked, ` +
    `${wrong.length} wrong (in ${badBursts.size} bursts), ${finalWrong.length} keys wrong at the end, ` +
    `rejected ${JSON.stringify(codes)}, seed ${SEED}`,
  );
  const where = `(seed ${SEED}: ORDER_SEED=${SEED} replays these calls)`;

  if (config.mayReject) {
    for (const op of rejected) {
      assert.ok(ERROR_CODES.has(op.error && op.error.code), `${label}: undocumented rejection ${show(op.error)} ${where}`);
    }
    const late = calls.filter((op) => op.burst >= afterFault && op.ok === false);
    assert.deepEqual(late.map((op) => `${op.kind} ${op.key}: ${op.error.code} ${op.error.message}`), [],
      `${label}: calls still fail after the fault ${where}`);
  } else {
    assert.equal(rejected.length, 0,
      `${label}: ${rejected.length} of ${calls.length} calls were rejected (${JSON.stringify(codes)}); ` +
      `first: ${rejected[0] && rejected[0].error && rejected[0].error.message} ${where}`);
  }
  assert.ok(
    wrong.length === 0,
    `${label}: ${wrong.length} of ${replies} replies disagree with call order, in ${badBursts.size} of ` +
    `${bursts.length} bursts ${where}. First: ${wrong.length ? describeWrong(wrong[0], log) : ''}`,
  );
  assert.deepEqual(finalWrong, [], `${label}: Redis does not hold what call order says ${where}`);

  await hang(via.close(), 'close()');
}

let tests = 0;
for (const config of connectionMatrix()) {
  describe(`call order: ${config.name}`, () => {
    let target;
    let observer;
    const open = [];

    before(async () => {
      target = await config.start();
      observer = config.observer(target, open);
    });
    after(async () => {
      await closeAll(open);
      await target?.stop();
    });

    it('adapter set/remove/get and adapter.client commands take effect in call order', { timeout: TEST_TIMEOUT }, async (t) => {
      tests += 1;
      await drive(t, { config, target, observer, open, kind: 'adapter', prefix: `order${tests}:` });
    });

    it('a RedisClient\'s SET/GET/DEL and rpush/lrange take effect in call order', { timeout: TEST_TIMEOUT }, async (t) => {
      tests += 1;
      await drive(t, { config, target, observer, open, kind: 'client', prefix: `order${tests}:` });
    });
  });
}
