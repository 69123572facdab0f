'use strict';

// ioredis's `Redis` and `Cluster` classes, as ioredis's tests import them, built on this
// package's RedisClient. Constructor-argument translation only: no behaviour is added, changed
// or faked. Whatever the tests then call or read on an instance is RedisClient's own.
//
// The addon is found through STORAGE_REDIS_PATH (set by run.js; the repository root by default).

const path = require('node:path');

const addonPath = process.env.STORAGE_REDIS_PATH || path.resolve(__dirname, '..', '..');
const { RedisClient } = require(addonPath);

// ioredis's own URL/host-string parser, so that strings mean exactly what they mean to ioredis.
// ioredis is installed beside the tests (run.js does it); IOREDIS_UTILS_PATH points at it.
const { parseURL } = require(process.env.IOREDIS_UTILS_PATH || 'ioredis/built/utils');

function isPlainAssignable(value) {
  return value !== null && typeof value === 'object';
}

/** lodash.defaults(target, source) for own enumerable keys: sets only the keys still undefined. */
function defaults(target, source) {
  for (const key of Object.keys(source)) {
    if (target[key] === undefined) target[key] = source[key];
  }
  return target;
}

/**
 * The options object ioredis's `Redis.parseOptions(...args)` builds from its arguments
 * (`()`, `(port)`, `(port, host)`, `(port, host, options)`, `(port, options)`, `(url)`,
 * `(url, options)`, `(options)`; earlier arguments win, a number sets the port), without
 * ioredis's defaults (RedisClient has its own), with `port` and `db` strings made numbers as
 * ioredis makes them, and `tls: true` for a `rediss://` URL unless `tls` was given.
 */
function redisOptionsFromArgs(args) {
  const options = {};
  let isTls = false;
  for (const arg of args) {
    if (arg === null || arg === undefined) continue;
    if (isPlainAssignable(arg)) defaults(options, arg);
    else if (typeof arg === 'string') {
      defaults(options, parseURL(arg));
      if (arg.startsWith('rediss://')) isTls = true;
    } else if (typeof arg === 'number') options.port = arg;
    else throw new Error('Invalid argument ' + arg); // ioredis's own message for this case
  }
  if (isTls) defaults(options, { tls: true });
  if (typeof options.port === 'string') options.port = parseInt(options.port, 10);
  if (typeof options.db === 'string') options.db = parseInt(options.db, 10);
  return options;
}

let constructed = 0;

/** ioredis `new Redis(...)` -> `new RedisClient(options)`. */
class Redis extends RedisClient {
  constructor(...args) {
    super(redisOptionsFromArgs(args));
    constructed += 1;
  }
}

/** ioredis `new Cluster(startupNodes, options)` -> `new RedisClient({ nodes, options })`. */
class Cluster extends RedisClient {
  constructor(startupNodes, options) {
    super(options === undefined ? { nodes: startupNodes } : { nodes: startupNodes, options });
    constructed += 1;
  }
}

// ioredis exposes the Cluster class as a static of Redis (`new Redis.Cluster(...)`).
Redis.Cluster = Cluster;

module.exports = {
  Redis,
  Cluster,
  redisOptionsFromArgs,
  get constructed() {
    return constructed;
  },
};
