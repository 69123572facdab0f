'use strict';

// Small assertions and utilities shared by the suites. Servers live in ./servers.js.

const assert = require('node:assert/strict');
const util = require('node:util');
const Redis = require('ioredis');

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
        if (thing instanceof Redis) thing.disconnect();
        else if (typeof thing.close === 'function') await thing.close();
      } catch {
        // already closed
      }
    }),
  );
}

module.exports = {
  ERROR_CODES,
  errorText,
  rejectsWithCode,
  throwsWithCode,
  within,
  waitFor,
  ioredisFor,
  connectionCount,
  closeAll,
};
