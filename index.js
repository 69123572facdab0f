'use strict';

// The JavaScript face of the native adapter: option normalising, JSON, argument checks.
// Everything else happens in Rust (src/), reached through the generated loader binding.js.

const { NativeAdapter, NativeClient } = require('./binding.js');
const COMMANDS = require('./commands.js');
const { EventEmitter } = require('node:events');
const { Readable } = require('node:stream');
const { createHash } = require('node:crypto');
const { traceCommand, traceBatch, traceConnect, tracingCommands } = require('./tracing.js');
const { getKeyIndexes } = require('@ioredis/commands');

const NATIVE = Symbol('alova.storage-redis.native');
const LOCKER = Symbol('alova.storage-redis.locker');
const OPS = Symbol('alova.storage-redis.operations');
const LOCK_SETUP = Symbol('alova.storage-redis.lock-setup');
const SCRIPTS = Symbol('alova.storage-redis.scripts');
const OWN_CLIENT = Symbol('alova.storage-redis.own-client');
const OPTIONS = Symbol('alova.storage-redis.options');
const ADAPTERS = Symbol('alova.storage-redis.adapters-connection');
const RECONNECT_ON_ERROR = Symbol('alova.storage-redis.reconnect-on-error');
const RECONNECT = Symbol('alova.storage-redis.reconnect');
const BLOCKING_TIMEOUT = Symbol('alova.storage-redis.blocking-timeout');
const WHERE = Symbol('alova.storage-redis.where');
const EPOCH = Symbol('alova.storage-redis.connection-epoch');
const KEY_PREFIX = Symbol('alova.storage-redis.key-prefix');

/**
 * ioredis's `keyPrefix` on a client: `prefix` put in front of every key of the command
 * (`flat`, its flattened arguments; ioredis's own table of key positions), as a string or a
 * Buffer as the key is; replies are left as they are (as in ioredis: `KEYS`, `SCAN` show the
 * prefix).
 */
function prefixKeys(prefix, name, flat) {
  let at;
  try {
    at = getKeyIndexes(name.toLowerCase(), flat);
  } catch {
    return flat; // a command the table does not know: no key to prefix
  }
  if (at.length === 0) return flat;
  const out = flat.slice();
  for (const i of at) {
    const key = out[i];
    out[i] = Buffer.isBuffer(key) ? Buffer.concat([Buffer.from(prefix), key]) : prefix + key;
  }
  return out;
}

/** The client-level `keyPrefix` of `opts` (a server's, or a cluster's `options`), or ''. */
function clientKeyPrefixOf(opts) {
  const prefix = 'nodes' in opts ? opts.options && (opts.options.keyPrefix ?? (opts.options.redisOptions && opts.options.redisOptions.keyPrefix)) : opts.keyPrefix;
  return typeof prefix === 'string' ? prefix : '';
}

/**
 * Where a client's commands go, as ioredis's traces name it: the server (or the first cluster
 * node) and port, as the core parsed them, and the database selected now.
 */
function whereOf(owner, native) {
  const { address, port } = native.server;
  const where = { address, port: port == null ? undefined : port, database: () => native.db };
  owner[WHERE] = where;
  return where;
}

/** The adapter's own options, beside the connection's (not a client's). */
const ADAPTER_ONLY = ['keyPrefix', 'redlockOptions', 'redlockFilter', 'redlockTTL', 'redlockNodes', 'spreadKeys'];

/** An Error (or TypeError) with a `code`, as the native side makes them. */
function codeError(Ctor, code, message) {
  const err = new Ctor(message);
  err.code = code;
  return err;
}

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/**
 * Options as JSON for the core, which validates them all: functions become `{ $fn: true }`,
 * numbers JSON cannot hold `{ $number }`, and binary TLS material PEM text.
 */
function optionsJson(options) {
  try {
    return JSON.stringify(options, function replace(key, value) {
      const raw = this[key];
      if (typeof raw === 'function') return { $fn: true };
      if (typeof raw === 'bigint') return { $number: `${raw}n` };
      if (typeof raw === 'number' && !Number.isFinite(raw)) return { $number: String(raw) };
      if (raw instanceof Uint8Array) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8');
      return value;
    });
  } catch (cause) {
    const err = codeError(TypeError, 'ERR_INVALID_OPTION', `options could not be read: ${cause.message}`);
    throw err;
  }
}

function normaliseOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options === 'string') return { url: options };
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw codeError(
      TypeError,
      'ERR_INVALID_OPTION',
      `options must be an object or a redis:// URL, got ${describe(options)}`
    );
  }
  return options;
}

/**
 * The user's retryStrategy, called from the reconnect loop: an exception it throws would be
 * uncaught there, so it is reported as a warning and stops reconnecting (as `null` does).
 */
function guardRetryStrategy(strategy) {
  // Anything else is reported by the core's option check, with the option's name.
  if (typeof strategy !== 'function') return undefined;
  return function retryStrategy(times) {
    try {
      return strategy(times);
    } catch (err) {
      process.emitWarning(`retryStrategy threw, so reconnecting stops: ${err && err.message}`, {
        code: 'ERR_RETRY_STRATEGY',
      });
      return null;
    }
  };
}

/**
 * Flattens command arguments as ioredis does: arrays spread, objects and Maps become pairs.
 * A function is refused (ioredis would send its source text): only the last argument of a
 * command method may be one, and that one is the callback (see `send`).
 */
function commandArgs(args, out = []) {
  for (const arg of args) {
    if (typeof arg === 'string' || Buffer.isBuffer(arg)) out.push(arg);
    else if (arg === null || arg === undefined) out.push('');
    else if (Array.isArray(arg)) commandArgs(arg, out);
    else if (arg instanceof Uint8Array) out.push(Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength));
    else if (arg instanceof Map) for (const [k, v] of arg) commandArgs([k, v], out);
    else if (typeof arg === 'function') throw functionArgError(arg);
    else if (typeof arg === 'object') for (const k of Object.keys(arg)) commandArgs([k, arg[k]], out);
    else out.push(String(arg));
  }
  return out;
}

function functionArgError(fn) {
  const name = fn.name ? ` (${fn.name})` : '';
  return codeError(
    TypeError,
    'ERR_INVALID_ARG',
    `a command argument cannot be a function${name}: only the last argument may be one, the callback`
  );
}

function throwLater(err) {
  setTimeout(() => {
    throw err;
  }, 0);
}

/**
 * Calls the node-style `callback` with the outcome of `promise`, as ioredis does
 * (standard-as-callback): `callback(null, result)` (`callback(null)` for undefined),
 * `callback(err)`; what the callback throws is rethrown outside the promise, as an uncaught
 * exception. Returns `promise` itself, whose rejection counts as handled.
 */
function asCallback(promise, callback) {
  promise.then(
    (value) => {
      try {
        if (value === undefined) callback(null);
        else callback(null, value);
      } catch (err) {
        throwLater(err);
      }
    },
    (cause) => {
      let err = cause;
      if (!err) {
        err = new Error(`${cause}`);
        err.cause = cause;
      }
      try {
        callback(err);
      } catch (thrown) {
        throwLater(thrown);
      }
    }
  );
  return promise;
}

/**
 * Sends command `name` with `args` (a rest array, which it may shorten): a function as the last
 * argument is the callback; `transform` reshapes the reply. Never throws: rejects instead.
 */
function send(native, name, args, transform, buffers = false, client = undefined) {
  const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
  let promise;
  try {
    let flat = commandArgs(args);
    if (client !== undefined && client[KEY_PREFIX]) flat = prefixKeys(client[KEY_PREFIX], name, flat);
    promise =
      client !== undefined && tracingCommands()
        ? traceCommand(name, flat, client[WHERE], () => (buffers ? native.callBuffer(name, flat) : native.call(name, flat)))
        : buffers
          ? native.callBuffer(name, flat)
          : native.call(name, flat);
    if (client !== undefined && client[RECONNECT_ON_ERROR] !== undefined) {
      promise = afterReplyError(client, promise, () => (buffers ? native.callBuffer(name, flat) : native.call(name, flat)));
    }
    const limit = client !== undefined && client[BLOCKING_TIMEOUT] !== undefined ? blockingLimit(client, name, flat) : undefined;
    if (limit !== undefined) promise = withBlockingLimit(promise, limit);
    if (transform !== undefined) promise = promise.then(transform);
  } catch (err) {
    promise = Promise.reject(err);
  }
  return callback === undefined ? promise : asCallback(promise, callback);
}

/**
 * ioredis's `reconnectOnError`: an error reply (`ERR_REPLY`) is shown to it; when it answers
 * truthy the connection is made again (the commands on it are sent again as
 * `autoResendUnfulfilledCommands` says), and `2` also sends the failed command again (once),
 * whose outcome is then the command's. For a client's commands and the adapter's cache
 * operations alike.
 */
function afterReplyError(owner, promise, again) {
  return promise.catch((err) => {
    if (!err || err.code !== 'ERR_REPLY') throw err;
    let verdict;
    try {
      verdict = owner[RECONNECT_ON_ERROR](err);
    } catch (thrown) {
      throwLater(thrown);
      throw err;
    }
    if (!verdict) throw err;
    owner[RECONNECT]();
    if (verdict === 2) return again();
    throw err;
  });
}

/** Blocking commands by where their timeout is (ioredis's lists). */
const LAST_ARG_TIMEOUT = new Set(['blpop', 'brpop', 'brpoplpush', 'blmove', 'bzpopmin', 'bzpopmax']);
const FIRST_ARG_TIMEOUT = new Set(['bzmpop', 'blmpop']);
const BLOCK_OPTION = new Set(['xread', 'xreadgroup']);

/** A timeout argument in seconds as milliseconds, or null when it is not a number. */
function secondsArg(arg) {
  const n = Number(arg === undefined ? NaN : String(arg));
  return Number.isFinite(n) && n >= 0 ? n * 1000 : null;
}

/**
 * ioredis's `blockingTimeout`: how long a blocking command may wait on the client side (its own
 * timeout plus `blockingTimeoutGrace`, or `blockingTimeout` when it blocks forever); undefined
 * for other commands.
 */
function blockingLimit(client, name, flat) {
  const lower = name.toLowerCase();
  let own;
  if (LAST_ARG_TIMEOUT.has(lower)) own = secondsArg(flat[flat.length - 1]);
  else if (FIRST_ARG_TIMEOUT.has(lower)) own = secondsArg(flat[0]);
  else if (lower === 'blmovem') own = secondsArg(flat[4]);
  else if (BLOCK_OPTION.has(lower)) {
    const at = flat.findIndex((a) => String(a).toUpperCase() === 'BLOCK');
    own = at >= 0 ? Number(String(flat[at + 1])) : null;
    if (!Number.isFinite(own)) own = null;
  } else return undefined;
  const { timeout, grace } = client[BLOCKING_TIMEOUT];
  return own !== null && own > 0 ? own + grace : timeout;
}

/** `promise`, or `null` once `ms` passed without it settling (as a server-side timeout). */
function withBlockingLimit(promise, ms) {
  let timer;
  const expired = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  promise.catch(() => {}); // settled later, after the limit: nobody waits for it any more
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/**
 * HGETALL's reply as ioredis resolves it: an object with every field as an own, enumerable,
 * writable property, also a field named `__proto__`, `constructor` or like any other property
 * of Object.prototype (defined, not assigned: assigning would hit the inherited setter or a
 * read-only inherited property). The object's prototype is Object.prototype, as in ioredis.
 */
function pairsToObject(reply) {
  if (!Array.isArray(reply)) return reply;
  const out = {};
  for (let i = 0; i < reply.length; i += 2) {
    const field = reply[i];
    const value = reply[i + 1];
    if (field in out) {
      Object.defineProperty(out, field, { value, configurable: true, enumerable: true, writable: true });
    } else {
      out[field] = value;
    }
  }
  return out;
}

/**
 * The options without ioredis's `scripts` (top level, or a cluster's `options.scripts`), which
 * the client defines itself and the core would refuse; and those scripts.
 */
function withoutScripts(options) {
  let opts = options;
  let scripts = {};
  if ('scripts' in opts) {
    ({ scripts, ...opts } = opts);
  } else if ('nodes' in opts && opts.options && typeof opts.options === 'object' && 'scripts' in opts.options) {
    const { scripts: clusterScripts, ...rest } = opts.options;
    scripts = clusterScripts;
    opts = { ...opts, options: rest };
  }
  if (scripts === undefined || scripts === null) scripts = {};
  if (typeof scripts !== 'object' || Array.isArray(scripts)) {
    throw codeError(
      TypeError,
      'ERR_INVALID_OPTION',
      `option \`scripts\` must be an object of { lua, numberOfKeys } by name, got ${describe(scripts)}`
    );
  }
  return { opts, scripts };
}

/** A script of `defineCommand`: its Lua, SHA1 and number of keys (null: the caller gives it). */
function makeScript(name, definition) {
  if (typeof name !== 'string' || name === '') {
    throw codeError(TypeError, 'ERR_INVALID_ARG', `defineCommand: the name must be a non-empty string, got ${describe(name)}`);
  }
  if (!definition || typeof definition !== 'object' || typeof definition.lua !== 'string') {
    throw codeError(TypeError, 'ERR_INVALID_ARG', `defineCommand(${JSON.stringify(name)}): \`lua\` must be a string`);
  }
  const { lua, numberOfKeys } = definition;
  if (numberOfKeys !== undefined && numberOfKeys !== null && !(Number.isInteger(numberOfKeys) && numberOfKeys >= 0)) {
    throw codeError(
      TypeError,
      'ERR_INVALID_ARG',
      `defineCommand(${JSON.stringify(name)}): \`numberOfKeys\` must be a non-negative integer or undefined, got ${numberOfKeys}`
    );
  }
  return {
    name,
    lua,
    sha: createHash('sha1').update(lua).digest('hex'),
    numberOfKeys: typeof numberOfKeys === 'number' ? numberOfKeys : null,
  };
}

/** A script's arguments after the SHA or the Lua: numkeys (unless the caller gives it), keys, args. */
function scriptArgs(script, args) {
  const flat = commandArgs(args);
  if (script.numberOfKeys !== null) flat.unshift(String(script.numberOfKeys));
  return flat;
}

function isNoScript(err) {
  return Boolean(err) && typeof err.message === 'string' && err.message.includes('NOSCRIPT');
}

/** Runs a defined script: EVALSHA, then EVAL if the server does not have it. */
function runScript(client, script, args) {
  const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
  let promise;
  try {
    const native = client[NATIVE];
    const prefix = client[KEY_PREFIX];
    const plain = scriptArgs(script, args);
    const rest = prefix ? prefixKeys(prefix, 'evalsha', [script.sha, ...plain]).slice(1) : plain;
    promise = native.call('evalsha', [script.sha, ...rest]).catch((err) => {
      if (!isNoScript(err)) throw err;
      return native.call('eval', [script.lua, ...rest]);
    });
  } catch (err) {
    promise = Promise.reject(err);
  }
  return callback === undefined ? promise : asCallback(promise, callback);
}

/**
 * ioredis's ScanStream: object mode, one array per SCAN/SSCAN/HSCAN/ZSCAN step, ending once the
 * cursor is back to '0'; `close()` ends it after the step under way.
 */
class ScanStream extends Readable {
  constructor(client, command, key, options, buffers = false) {
    const opt = options && typeof options === 'object' ? options : {};
    super({ ...opt, objectMode: true });
    this._client = client;
    this._buffers = buffers;
    this._command = command;
    this._key = key;
    this._opt = opt;
    this._redisCursor = '0';
    this._redisDrained = false;
  }

  _read() {
    if (this._redisDrained) {
      this.push(null);
      return;
    }
    const opt = this._opt;
    const args = [this._redisCursor];
    if (this._key !== undefined && this._key !== null) args.unshift(this._key);
    if (opt.match) args.push('MATCH', opt.match);
    if (opt.type) args.push('TYPE', opt.type);
    if (opt.count) args.push('COUNT', String(opt.count));
    if (opt.noValues) args.push('NOVALUES');
    send(this._client[NATIVE], this._command, args, undefined, this._buffers, this._client).then(
      (res) => {
        this._redisCursor = Buffer.isBuffer(res[0]) ? res[0].toString() : String(res[0]);
        if (this._redisCursor === '0') this._redisDrained = true;
        this.push(res[1]);
      },
      (err) => this.destroy(err)
    );
  }

  close() {
    this._redisDrained = true;
  }
}

const SUBS = Symbol('alova.storage-redis.subscriptions');

/** The subscription methods: name -> [kind, subscribe?]. */
const SUBSCRIPTION_METHODS = {
  __proto__: null,
  subscribe: ['channel', true],
  unsubscribe: ['channel', false],
  psubscribe: ['pattern', true],
  punsubscribe: ['pattern', false],
  ssubscribe: ['shard', true],
  sunsubscribe: ['shard', false],
};

/**
 * (Un)subscribes `client` on its subscriber connection (made on the first subscription, beside
 * the connection every other command shares). Resolves the number of subscriptions as Redis
 * counts them (channels and patterns together, sharded channels apart), as ioredis resolves it.
 * A function as the last argument is the callback.
 */
function subscription(client, name, args) {
  const [kind, on] = SUBSCRIPTION_METHODS[name];
  const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
  let promise;
  try {
    const native = client[NATIVE];
    const subs = client[SUBS];
    if (!subs.listening) {
      subs.listening = true;
      native.onMessage((m) => deliverMessage(client, m));
    }
    const names = commandArgs(args);
    promise = (on ? native.subscribe(kind, names) : native.unsubscribe(kind, names)).then((count) => {
      subs[kind === 'shard' ? 'shard' : 'plain'] = count;
      holdOpen(client);
      return count;
    });
  } catch (err) {
    promise = Promise.reject(err);
  }
  return callback === undefined ? promise : asCallback(promise, callback);
}

/**
 * A message, as ioredis emits it: `message`/`pmessage`/`smessage` with strings (only when
 * someone listens), then `messageBuffer`/`pmessageBuffer`/`smessageBuffer` with Buffers (the
 * pattern as a string, as ioredis gives it).
 */
function deliverMessage(client, { event, pattern, channel, message }) {
  if (event === 'pmessage') {
    const p = pattern.toString();
    if (client.listenerCount('pmessage') > 0) client.emit('pmessage', p, channel.toString(), message.toString());
    client.emit('pmessageBuffer', p, channel, message);
    return;
  }
  if (client.listenerCount(event) > 0) client.emit(event, channel.toString(), message.toString());
  client.emit(`${event}Buffer`, channel, message);
}

/**
 * A client with subscriptions keeps the process alive, as an ioredis subscriber's socket does;
 * one without lets it exit.
 */
function holdOpen(client) {
  const subs = client[SUBS];
  const subscribed = subs.plain + subs.shard > 0;
  if (subscribed && subs.timer === null) {
    subs.timer = setInterval(() => {}, 1 << 30);
  } else if (!subscribed && subs.timer !== null) {
    clearInterval(subs.timer);
    subs.timer = null;
  }
}

/** Ends a client's subscriptions (quit, disconnect, the adapter's close). */
function endSubscriptions(client) {
  const subs = client[SUBS];
  subs.plain = 0;
  subs.shard = 0;
  holdOpen(client);
  client[NATIVE].closeSubscriber();
}

/**
 * What `client.monitor()` resolves: the server's `MONITOR` feed on a connection of its own, as
 * `monitor` events `(time, args, source, database)` parsed as ioredis parses them. It keeps
 * the process alive until `disconnect()` (or `quit()`); `end` is emitted when it ends.
 */
class RedisMonitor extends EventEmitter {
  constructor() {
    super();
    /** ioredis's mode of a monitoring client. */
    this.mode = 'monitor';
    this.status = 'connecting';
    this[SUBS] = null;
  }

  /** Ends the monitor and its connection. */
  disconnect() {
    if (this[NATIVE]) this[NATIVE].stop();
  }

  /** As `disconnect()`; resolves 'OK'. */
  quit(callback) {
    this.disconnect();
    const promise = Promise.resolve('OK');
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }
}

/** One line of the `MONITOR` feed, as ioredis emits it: `(time, args, source, database)`. */
function monitorLine(monitor, line) {
  if (line === null) {
    monitor.status = 'end';
    if (monitor[SUBS] !== null) clearInterval(monitor[SUBS]);
    monitor[SUBS] = null;
    monitor.emit('end');
    return;
  }
  const len = line.indexOf(' ');
  const timestamp = line.slice(0, len);
  const argIndex = line.indexOf('"');
  const args = line
    .slice(argIndex + 1, -1)
    .split('" "')
    .map((elem) => elem.replace(/\\"/g, '"'));
  const dbAndSource = line.slice(len + 2, argIndex - 2).split(' ');
  monitor.emit('monitor', timestamp, args, dbAndSource[1], dbAndSource[0]);
}

/** Sets up `blockingTimeout` (checked by the core's option check) on a client. */
function limitBlocking(client, opts) {
  if (typeof opts.blockingTimeout === 'number' && opts.blockingTimeout > 0) {
    const grace = typeof opts.blockingTimeoutGrace === 'number' ? opts.blockingTimeoutGrace : 100;
    client[BLOCKING_TIMEOUT] = { timeout: opts.blockingTimeout, grace };
  }
}

/** Sets up `reconnectOnError` (a function, checked by the core's option check) on `owner`. */
function watchReplyErrors(owner, reconnectOnError) {
  if (typeof reconnectOnError !== 'function') return;
  owner[RECONNECT_ON_ERROR] = reconnectOnError;
  const native = owner instanceof RedisClient ? owner[NATIVE] : owner[NATIVE].client();
  owner[RECONNECT] = () => native.reconnect();
}

/** Reply transforms by command name, as ioredis keys them (exact, lower-case name). */
const REPLY_TRANSFORMS = { __proto__: null, hgetall: pairsToObject };

/**
 * A client for one Redis server (or a cluster): `call(command, ...args)`, a method per Redis
 * command, and ioredis's events (`wait`, `connecting`, `connect`, `ready`, `error`, `close`,
 * `reconnecting`, `end`) as an EventEmitter.
 */
class RedisClient extends EventEmitter {
  /**
   * @param {object|string} [options] ioredis RedisOptions, or a redis:// URL.
   */
  constructor(options) {
    super();
    this[SCRIPTS] = Object.create(null);
    this[SUBS] = { listening: false, plain: 0, shard: 0, timer: null };
    if (options === NATIVE) return; // RedisClient.wrap
    const { opts, scripts } = withoutScripts(normaliseOptions(options));
    this[OPTIONS] = opts;
    this[KEY_PREFIX] = clientKeyPrefixOf(opts);
    this[NATIVE] = new NativeClient(optionsJson(opts), guardRetryStrategy(retryStrategyOf(opts)), lookupOf(opts), sentinelHooksOf(opts));
    whereOf(this, this[NATIVE]);
    watchReplyErrors(this, opts.reconnectOnError);
    limitBlocking(this, opts);
    listen(this);
    for (const name of Object.keys(scripts)) this.defineCommand(name, scripts[name]);
  }

  static wrap(native, options = {}) {
    const client = new RedisClient(NATIVE);
    client[NATIVE] = native;
    client[OPTIONS] = options;
    client[KEY_PREFIX] = clientKeyPrefixOf(options);
    client[ADAPTERS] = true;
    whereOf(client, native);
    watchReplyErrors(client, options.reconnectOnError);
    limitBlocking(client, options);
    listen(client);
    return client;
  }

  /**
   * ioredis's `defineCommand`: `client[name](...keys, ...args)` runs `lua` by `EVALSHA`, and by
   * `EVAL` when the server answers `NOSCRIPT`. With `numberOfKeys` undefined the caller passes
   * the number of keys first. Pipelines and transactions made afterwards have the method too.
   */
  defineCommand(name, definition) {
    const script = makeScript(name, definition);
    this[SCRIPTS][name] = script;
    Object.defineProperty(this, name, {
      value: function scriptCommand(...args) {
        return runScript(this, script, args);
      },
      writable: true,
      configurable: true,
    });
  }

  /**
   * ioredis's `scanStream`: an object-mode Readable emitting each `SCAN` step's keys (an array),
   * ending when the cursor is back to '0'. Options `match`, `type`, `count`, `noValues`. Not on
   * a cluster, as ioredis's `Cluster` has none: scan each master with a client of its own.
   */
  scanStream(options) {
    if (this.isCluster) {
      throw codeError(
        TypeError,
        'ERR_INVALID_ARG',
        "scanStream() is not supported on a cluster client (ioredis's Cluster has no scanStream either): " +
          "scan each master with a client of its own, e.g. new RedisClient({ host, port }) for each of client.nodes('master')"
      );
    }
    return new ScanStream(this, 'scan', undefined, options);
  }

  /** ioredis's `scanBufferStream`: as `scanStream`, the keys as Buffers. */
  scanBufferStream(options) {
    if (this.isCluster) return this.scanStream(options);
    return new ScanStream(this, 'scan', undefined, options, true);
  }

  /** ioredis's `sscanStream`: the set's members, an array per `SSCAN` step. */
  sscanStream(key, options) {
    return new ScanStream(this, 'sscan', key, options);
  }

  /** As `sscanStream`, the members as Buffers. */
  sscanBufferStream(key, options) {
    return new ScanStream(this, 'sscan', key, options, true);
  }

  /** As `hscanStream`, fields and values as Buffers. */
  hscanBufferStream(key, options) {
    return new ScanStream(this, 'hscan', key, options, true);
  }

  /** As `zscanStream`, members and scores as Buffers. */
  zscanBufferStream(key, options) {
    return new ScanStream(this, 'zscan', key, options, true);
  }

  /** ioredis's `hscanStream`: `[field, value, field, value, ...]` per `HSCAN` step. */
  hscanStream(key, options) {
    return new ScanStream(this, 'hscan', key, options);
  }

  /** ioredis's `zscanStream`: `[member, score, ...]` per `ZSCAN` step. */
  zscanStream(key, options) {
    return new ScanStream(this, 'zscan', key, options);
  }

  /**
   * Connects a `lazyConnect` client; resolves once it is ready, rejects with the connection's
   * error. As in ioredis, a client that is connecting or connected already rejects.
   */
  connect(callback) {
    let promise;
    const status = this[NATIVE].status;
    if (status === 'wait') {
      this.emit('connecting');
      this[EPOCH] = (this[EPOCH] || 0) + 1;
      promise = traceConnect(this[EPOCH], this[WHERE], () => this[NATIVE].connect());
    } else if (status === 'end') {
      promise = Promise.reject(codeError(Error, 'ERR_CLOSED', 'the client is closed (quit() or disconnect() was called)'));
    } else {
      promise = Promise.reject(new Error('Redis is already connecting/connected'));
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }

  /**
   * ioredis's `mode`: 'subscriber' while the client has subscriptions (on their own connection:
   * its other commands go on all the same), 'normal' otherwise.
   */
  get mode() {
    const subs = this[SUBS];
    return subs.plain + subs.shard > 0 ? 'subscriber' : 'normal';
  }

  /** ioredis's status: 'wait' | 'connecting' | 'ready' | 'reconnecting' | 'end'. */
  get status() {
    return this[NATIVE].status;
  }

  /**
   * ioredis's `stream` (its socket): the socket lives in native code, so this stands for it in
   * what code does with it: `end()` and `destroy()` drop the connection as a socket closed under
   * the client would (it is made again; what was on it is sent again as
   * autoResendUnfulfilledCommands says), `writable` is true while it is ready.
   */
  get stream() {
    const client = this;
    return {
      get writable() {
        return client.status === 'ready';
      },
      end() {
        client[NATIVE].reconnect();
      },
      destroy() {
        client[NATIVE].reconnect();
      },
    };
  }

  /** True for a Redis Cluster client. */
  get isCluster() {
    return this[NATIVE].isCluster;
  }

  /**
   * A cluster's nodes as last read, as `{ options: { host, port }, role }` (role 'master' or
   * 'slave'); `role` filters ('master' | 'slave' | 'all'). Empty before the first connection
   * and for a single server.
   */
  nodes(role = 'all') {
    return this[NATIVE].nodes(role).map((n) => ({ options: { host: n.host, port: n.port }, role: n.role }));
  }

  /**
   * Sends any command; resolves its reply as ioredis would (`call('hgetall', k)` an object, as
   * ioredis transforms it for that exact name). A function as the last argument is a node-style
   * callback, called with `(err, result)`; the promise is returned all the same.
   */
  call(command, ...args) {
    if (typeof command !== 'string') {
      const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
      const rejected = Promise.reject(
        codeError(TypeError, 'ERR_INVALID_ARG', `the command name must be a string, got ${describe(command)}`)
      );
      return callback === undefined ? rejected : asCallback(rejected, callback);
    }
    const lower = command.toLowerCase();
    if (lower in SUBSCRIPTION_METHODS) return subscription(this, lower, args);
    if (lower === 'watch') return this.watch(...args);
    if (lower === 'select') return this.select(...args);
    if (lower === 'unwatch') return this.unwatch(...args);
    return send(this[NATIVE], command, args, REPLY_TRANSFORMS[command], false, this);
  }

  /**
   * A new client with this one's options (and its `defineCommand` scripts), as ioredis's
   * `duplicate()`: `override` options replace some; on a cluster, `duplicate(nodes?, options?)`.
   * The adapter's client duplicates to a client of the adapter's connection options.
   */
  duplicate(override, clusterOptions) {
    const base = this[OPTIONS];
    let opts;
    if ('nodes' in base) {
      opts = { ...base, nodes: override || base.nodes, options: { ...(base.options || {}), ...(clusterOptions || {}) } };
    } else {
      opts = { ...base, ...(override || {}) };
    }
    const copy = new RedisClient(opts);
    const scripts = this[SCRIPTS];
    for (const name of Object.keys(scripts)) {
      copy.defineCommand(name, { lua: scripts[name].lua, numberOfKeys: scripts[name].numberOfKeys ?? undefined });
    }
    return copy;
  }

  /**
   * ioredis's `monitor()`: resolves a {@link RedisMonitor} emitting `monitor` events
   * `(time, args, source, database)` for every command the server runs, on a connection of its
   * own. Not on a cluster (monitor one node with a client of its own).
   */
  monitor(callback) {
    let promise;
    try {
      const monitor = new RedisMonitor();
      monitor[NATIVE] = this[NATIVE].monitor((line) => monitorLine(monitor, line));
      promise = monitor[NATIVE].started().then(() => {
        if (monitor.status === 'connecting') {
          monitor.status = 'ready';
          monitor[SUBS] = setInterval(() => {}, 1 << 30);
        }
        return monitor;
      });
    } catch (err) {
      promise = Promise.reject(err);
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }

  /**
   * `call` with the reply's strings as Buffers (ioredis's `callBuffer`): for binary values.
   */
  callBuffer(command, ...args) {
    if (typeof command !== 'string') return this.call(command, ...args);
    return send(this[NATIVE], command, args, REPLY_TRANSFORMS[command], true, this);
  }

  /**
   * A pipeline (ioredis's `client.pipeline()`): commands queued, sent together by `exec()`,
   * which resolves `[[err, result], ...]`. `commands` may give them at once: `[['set', 'k',
   * 'v'], ['get', 'k']]`.
   */
  pipeline(commands) {
    return new Pipeline(this, false, commands);
  }

  /**
   * A transaction (ioredis's `client.multi()`): as a pipeline, sent as `MULTI` .. `EXEC`,
   * atomic. On a cluster its keys must be in one slot: it runs on that slot's master.
   */
  multi(commands) {
    return new Pipeline(this, true, Array.isArray(commands) ? commands : undefined);
  }

  /**
   * `WATCH keys`: the next `multi().exec()` resolves `null` (and runs nothing) when a watched
   * key changed before it, as in ioredis. The watch lives on a connection of its own (made on
   * the first `watch()`; the client's other commands go on the shared one), and the
   * transaction runs there; should that connection be lost in between, the server forgot the
   * watch, and `exec()` rejects with `ERR_CONNECTION` instead of running unwatched. Not on a
   * cluster yet.
   */
  watch(...args) {
    const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    let promise;
    try {
      promise = this[NATIVE].watch(commandArgs(args));
    } catch (err) {
      promise = Promise.reject(err);
    }
    return callback === undefined ? promise : asCallback(promise, callback);
  }

  /**
   * `SELECT db`, as in ioredis: every later command of this client runs on `db`, and so does
   * every connection made for it later (a reconnection, blocking commands, watch()); emits
   * `select` with the index. Not on the adapter's client, whose connection carries the cache
   * (use the adapter's `db` option), nor on a cluster (database 0 only): `ERR_INVALID_ARG`.
   */
  select(db, callback) {
    let promise;
    if (this[ADAPTERS] === true) {
      promise = Promise.reject(
        codeError(
          TypeError,
          'ERR_INVALID_ARG',
          "select() on the adapter's client would move the adapter's cache to another database: set the adapter's `db` option, or use a client of your own (client.duplicate())"
        )
      );
    } else {
      const index = Number(db);
      if (!Number.isInteger(index) || index < 0) {
        promise = Promise.reject(codeError(TypeError, 'ERR_INVALID_ARG', `select(): the database must be a non-negative integer, got ${describe(db)}`));
      } else {
        promise = this[NATIVE].select(index).then((reply) => {
          this.emit('select', index);
          return reply;
        });
      }
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }

  /** `UNWATCH`: forgets the watched keys; resolves 'OK'. */
  unwatch(callback) {
    let promise;
    try {
      promise = this[NATIVE].unwatch();
    } catch (err) {
      promise = Promise.reject(err);
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }

  /** Sends QUIT and closes the connection; resolves 'OK'. Takes an optional callback. */
  quit(callback) {
    let promise;
    try {
      const subs = this[SUBS];
      subs.plain = 0;
      subs.shard = 0;
      holdOpen(this);
      promise = this[NATIVE].quit();
    } catch (err) {
      promise = Promise.reject(err);
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }

  /** Closes the connection at once. */
  disconnect(reconnect) {
    // ioredis's disconnect(true): the connection is made again (what was on it is sent again
    // as autoResendUnfulfilledCommands says); subscriptions stay.
    if (reconnect === true) {
      this[NATIVE].reconnect();
      return;
    }
    const subs = this[SUBS];
    subs.plain = 0;
    subs.shard = 0;
    holdOpen(this);
    this[NATIVE].disconnect();
  }
}

const BATCH = Symbol('alova.storage-redis.batch');
const QUEUE_SCRIPT = Symbol('alova.storage-redis.queue-script');
const QUEUE = Symbol('alova.storage-redis.queue');

/**
 * `client.pipeline()` and `client.multi()`, as in ioredis: a method per command queues it (and
 * returns the pipeline, for chaining); `exec()` sends them all together, with nothing of anybody
 * else's between them, and resolves `[[err, result], ...]`. A transaction (`multi()`) is sent
 * as `MULTI` .. `EXEC` and is atomic; its `exec()` resolves `null` when a `WATCH`ed key changed
 * and rejects with `EXECABORT` (and `err.previousErrors`) when the server refused a command.
 */
class Pipeline {
  constructor(client, transaction, commands) {
    this[BATCH] = { client, transaction, queue: [], failure: null };
    // The client's defineCommand scripts, as methods that queue them (as ioredis copies them).
    const scripts = client[SCRIPTS] || {};
    for (const name of Object.keys(scripts)) {
      const script = scripts[name];
      Object.defineProperty(this, name, {
        value: (...args) => this[QUEUE_SCRIPT](script, args),
        writable: true,
        configurable: true,
      });
    }
    for (const [name, ...args] of commands || []) {
      if (typeof name === 'string' && name in scripts) this[QUEUE_SCRIPT](scripts[name], args);
      else this.call(name, ...args);
    }
  }

  [QUEUE_SCRIPT](script, args) {
    const batch = this[BATCH];
    const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    try {
      const flat = [script.sha, ...scriptArgs(script, args)];
      const prefix = batch.client[KEY_PREFIX];
      batch.queue.push({ name: 'evalsha', args: prefix ? prefixKeys(prefix, 'evalsha', flat) : flat, callback, script });
    } catch (err) {
      if (batch.failure === null) batch.failure = err;
    }
    return this;
  }

  /** How many commands are queued. */
  get length() {
    return this[BATCH].queue.length;
  }

  /** Queues any command; a function as the last argument is called with its outcome. */
  call(name, ...args) {
    return this[QUEUE](name, args, false);
  }

  /** `call` whose reply has Buffers for strings. */
  callBuffer(name, ...args) {
    return this[QUEUE](name, args, true);
  }

  [QUEUE](name, args, buffers) {
    const batch = this[BATCH];
    const callback = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    try {
      if (typeof name !== 'string') {
        throw codeError(TypeError, 'ERR_INVALID_ARG', `the command name must be a string, got ${describe(name)}`);
      }
      const flat = commandArgs(args);
      const prefix = batch.client[KEY_PREFIX];
      batch.queue.push({ name, args: prefix ? prefixKeys(prefix, name, flat) : flat, callback, buffers });
    } catch (err) {
      // As ioredis: the whole exec() fails with the first bad command.
      if (batch.failure === null) batch.failure = err;
    }
    return this;
  }

  /** Sends the queued commands; resolves `[[err, result], ...]` (see the class). */
  exec(callback) {
    const { client, transaction, queue, failure } = this[BATCH];
    let promise;
    if (failure !== null) promise = Promise.reject(failure);
    else if (queue.length === 0) promise = Promise.resolve([]);
    else {
      const { loads, commands } = withScriptLoads(client, queue);
      const skip = loads.length;
      let queuedOutcomes = null;
      // Which replies come as Buffers, by position in `commands` (the SCRIPT LOADs first).
      const buffers = queue.some((c) => c.buffers) ? [...loads.map(() => false), ...queue.map((c) => c.buffers === true)] : undefined;
      promise = client[NATIVE].batch(commands, transaction, buffers).then((all) => {
        // The SCRIPT LOADs sent first: a failed one (a Lua error) is what its EVALSHAs report.
        const loadErrors = new Map();
        const loadOutcomes = transaction ? all.slice(1, 1 + skip) : all.slice(0, skip);
        const outcomes = transaction ? [all[0], ...all.slice(1 + skip)] : all.slice(skip);
        const execOutcome = transaction ? outcomes[outcomes.length - 1] : null;
        if (transaction && execOutcome[0] === null && Array.isArray(execOutcome[1])) {
          const replies = execOutcome[1];
          replies.slice(0, skip).forEach((r, i) => {
            if (r instanceof Error) loadErrors.set(loads[i], r);
          });
          outcomes[outcomes.length - 1] = [null, replies.slice(skip)];
        } else if (!transaction) {
          loadOutcomes.forEach(([err], i) => {
            if (err !== null) loadErrors.set(loads[i], err);
          });
        }
        const loadError = (value, i) =>
          queue[i].script && isNoScript(value) && loadErrors.get(queue[i].script.sha) ? loadErrors.get(queue[i].script.sha) : value;
        if (!transaction) return outcomes.map((o, i) => transformed(o[0] !== null ? [loadError(o[0], i)] : o, queue[i].name));
        const execReply = outcomes[outcomes.length - 1];
        const queued = outcomes.slice(1, -1);
        // As ioredis: a command's callback in a transaction gets what queueing it gave
        // ('QUEUED', or the error that aborts the transaction).
        queuedOutcomes = queued;
        const refused = queued.filter(([err]) => err !== null).map(([err]) => err);
        if (execReply[0] !== null) {
          if (refused.length > 0) execReply[0].previousErrors = refused;
          throw execReply[0];
        }
        if (execReply[1] === null) return null; // a WATCHed key changed
        return execReply[1].map((value, i) =>
          value instanceof Error ? [loadError(value, i)] : transformed([null, value], queue[i].name)
        );
      });
      const settleCallbacks = (list) =>
        list.forEach(([err, value], i) => {
          const cb = queue[i] && queue[i].callback;
          if (cb) asCallback(err ? Promise.reject(err) : Promise.resolve(value), cb);
        });
      promise = promise.then(
        (results) => {
          if (queuedOutcomes !== null) settleCallbacks(queuedOutcomes);
          else if (results) settleCallbacks(results);
          return results;
        },
        (err) => {
          if (queuedOutcomes !== null) settleCallbacks(queuedOutcomes);
          throw err;
        }
      );
      promise = traced(client, transaction, queue, promise);
    }
    return typeof callback === 'function' ? asCallback(promise, callback) : promise;
  }
}

/**
 * A batch's traces, as ioredis publishes them: a transaction as one `ioredis:batch`, a
 * pipeline's commands each as an `ioredis:command` settled with its outcome.
 */
function traced(client, transaction, queue, promise) {
  const where = client[WHERE];
  if (where === undefined) return promise;
  if (transaction) return traceBatch(queue.length, where, () => promise);
  if (!tracingCommands()) return promise;
  const traces = queue.map((c, i) =>
    traceCommand(c.name, c.args, where, () =>
      promise.then((results) => {
        const [err, value] = results[i];
        if (err) throw err;
        return value;
      })
    )
  );
  // exec() settles once every command's trace ended.
  return Promise.allSettled(traces).then(() => promise);
}

/**
 * The batch to send for `queue`, with what its defineCommand scripts need: on one server a
 * `SCRIPT LOAD` of each (sent first, in the same batch, so that the EVALSHAs after it find it
 * even after a `SCRIPT FLUSH`, and nothing reorders); on a cluster, whose batch goes to the node
 * of its keys' slot, `EVAL` in place of `EVALSHA`. `loads` are the SHA1s loaded, in order.
 */
function withScriptLoads(client, queue) {
  const loads = [];
  const commands = [];
  const cluster = client.isCluster;
  for (const c of queue) {
    if (c.script && cluster) {
      commands.push(['eval', c.script.lua, ...c.args.slice(1)]);
      continue;
    }
    if (c.script && !loads.includes(c.script.sha)) {
      loads.push(c.script.sha);
      commands.splice(loads.length - 1, 0, ['script', 'load', c.script.lua]);
    }
    commands.push([c.name, ...c.args]);
  }
  return { loads, commands };
}

/**
 * An outcome as ioredis's `exec()` gives it: `[err]`, or `[null, value]` with ioredis's reply
 * transform of `name` applied.
 */
function transformed([err, value], name) {
  if (err !== null) return [err];
  const transform = REPLY_TRANSFORMS[name];
  return [null, transform !== undefined ? transform(value) : value];
}

// A method per command on pipelines: `pipeline.set(k, v).get(k)`, and its Buffer form.
for (const name of COMMANDS) {
  if (!(name in Pipeline.prototype)) {
    Object.defineProperty(Pipeline.prototype, name, {
      value: function queue(...args) {
        return this[QUEUE](name, args, false);
      },
      writable: true,
      configurable: true,
    });
  }
  if (!(`${name}Buffer` in Pipeline.prototype)) {
    Object.defineProperty(Pipeline.prototype, `${name}Buffer`, {
      value: function queueBuffer(...args) {
        return this[QUEUE](name, args, true);
      },
      writable: true,
      configurable: true,
    });
  }
}

/**
 * Turns the native connection's events into the client's, as ioredis emits them. An `error`
 * nobody listens to is logged (as ioredis logs it), never thrown.
 */
function listen(client) {
  const native = client[NATIVE];
  const status = native.status;
  // What ioredis emits at construction, on the next tick.
  process.nextTick(() => client.emit(status === 'wait' ? 'wait' : 'connecting'));
  native.onEvent((event) => {
    switch (event.name) {
      case 'error': {
        const err = codeError(Error, event.code, event.message);
        if (client.listenerCount('error') > 0) client.emit('error', err);
        else console.error('[@alova/storage-redis] Unhandled error event:', err.stack);
        break;
      }
      case 'reconnecting':
        client.emit('reconnecting', event.delay);
        break;
      case '+node':
      case '-node':
        // ioredis gives the node's client; this gives what nodes() gives for it.
        client.emit(event.name, { options: { host: event.node.host, port: event.node.port }, role: event.node.role });
        break;
      default:
        client.emit(event.name);
    }
  });
}

// Subscriptions: `client.subscribe('news', 'sport')`, on a connection of their own.
for (const name of Object.keys(SUBSCRIPTION_METHODS)) {
  Object.defineProperty(RedisClient.prototype, name, {
    value: function subscribeCommand(...args) {
      return subscription(this, name, args);
    },
    writable: true,
    configurable: true,
  });
}

// A method per command: `client.get(key)`, `client.get(key, (err, value) => ...)`, and its
// Buffer form, whose reply has Buffers for strings: `client.getBuffer(key)`.
for (const name of COMMANDS) {
  const transform = REPLY_TRANSFORMS[name];
  if (!(name in RedisClient.prototype)) {
    Object.defineProperty(RedisClient.prototype, name, {
      value: function command(...args) {
        return send(this[NATIVE], name, args, transform, false, this);
      },
      writable: true,
      configurable: true,
    });
  }
  if (!(`${name}Buffer` in RedisClient.prototype)) {
    Object.defineProperty(RedisClient.prototype, `${name}Buffer`, {
      value: function commandBuffer(...args) {
        return send(this[NATIVE], name, args, transform, true, this);
      },
      writable: true,
      configurable: true,
    });
  }
}

/**
 * A cluster's `dnsLookup` (`(hostname, callback(err, address))`, as `dns.lookup`) as the core
 * calls it: `hostname => Promise<address>`; undefined when not given.
 */
function lookupOf(opts) {
  const lookup = 'nodes' in opts && opts.options && typeof opts.options === 'object' ? opts.options.dnsLookup : undefined;
  if (typeof lookup !== 'function') return undefined;
  return (hostname) =>
    new Promise((resolve, reject) => {
      lookup(hostname, (err, address) => (err ? reject(err) : resolve(String(address))));
    });
}

/**
 * The Sentinel options that are functions (sentinelRetryStrategy, sentinelReconnectStrategy,
 * preferredSlaves, natMap), as one function the core calls with `{ kind, arg }` as JSON and
 * whose answer it reads as JSON; `undefined` when there are none. An exception is a warning
 * and counts as no answer (stop retrying; a random replica; the address as given).
 */
function sentinelHooksOf(opts) {
  if (!opts || 'nodes' in opts || !Array.isArray(opts.sentinels)) return undefined;
  const fns = {
    retry: opts.sentinelRetryStrategy,
    reconnect: opts.sentinelReconnectStrategy,
    pick: opts.preferredSlaves,
    nat: opts.natMap,
  };
  if (!Object.values(fns).some((f) => typeof f === 'function')) return undefined;
  return function sentinelHook(json) {
    const { kind, arg } = JSON.parse(json);
    const fn = fns[kind];
    if (typeof fn !== 'function') return null;
    try {
      const out = fn(arg);
      if (kind === 'retry' || kind === 'reconnect') return typeof out === 'number' ? JSON.stringify(out) : null;
      if (!out || typeof out !== 'object') return null;
      const host = kind === 'pick' ? out.ip : out.host;
      return JSON.stringify({ host: String(host), port: Number(out.port) });
    } catch (err) {
      process.emitWarning(`${kind === 'pick' ? 'preferredSlaves' : kind === 'nat' ? 'natMap' : `sentinel${kind === 'retry' ? 'Retry' : 'Reconnect'}Strategy`} threw: ${err && err.message}`, {
        code: 'ERR_SENTINEL_HOOK',
      });
      return null;
    }
  };
}

/** The function that retries the first connection: retryStrategy, or a cluster's clusterRetryStrategy. */
function retryStrategyOf(opts) {
  return 'nodes' in opts ? opts.options && opts.options.clusterRetryStrategy : opts.retryStrategy;
}

/** The startup nodes and the options of an ioredis `Cluster` that the native cluster connection adopts. */
function adoptedClusterOptions(cluster) {
  const o = cluster.options || {};
  const redisOptions = {};
  for (const key of ['username', 'password', 'tls']) {
    const value = o.redisOptions && o.redisOptions[key];
    if (value !== undefined && value !== null) redisOptions[key] = value;
  }
  const options = { redisOptions };
  if (o.natMap && typeof o.natMap === 'object') options.natMap = o.natMap;
  if (typeof o.scaleReads === 'string') options.scaleReads = o.scaleReads;
  const nodes = (cluster.startupNodes || []).map((n) =>
    typeof n === 'object' && n !== null ? { host: n.host, port: Number(n.port) } : n
  );
  return { nodes, options };
}

function isIoredisRedis(client) {
  return (
    client !== null &&
    typeof client === 'object' &&
    typeof client.sendCommand === 'function' &&
    client.isCluster !== true &&
    client.options !== null &&
    typeof client.options === 'object'
  );
}

/** The connection options of an ioredis `Redis` that the native connection adopts. */
function adoptedOptions(ioredis) {
  const o = ioredis.options;
  const adopted = {};
  for (const key of ['host', 'port', 'path', 'username', 'password', 'db', 'tls']) {
    if (o[key] !== undefined && o[key] !== null) adopted[key] = o[key];
  }
  return adopted;
}

/** Resources as the native locker takes them: a non-empty array of strings. */
function resourceList(resource) {
  const list = Array.isArray(resource) ? resource : [resource];
  if (list.length === 0) {
    return codeError(TypeError, 'ERR_INVALID_ARG', 'the resource list is empty: name at least one resource to lock');
  }
  for (const r of list) {
    if (typeof r !== 'string') {
      return codeError(TypeError, 'ERR_INVALID_ARG', `lock resources must be strings, got ${describe(r)}`);
    }
  }
  return list;
}

/** Tells about locks lost while held, and releases that failed, without failing the caller. */
function reportUnlock(report) {
  if (!report) return;
  if (report.lost.length > 0) {
    process.emitWarning(
      `lock on ${JSON.stringify(report.lost)} was lost while held (its key was gone or held another value at unlock: it expired, was replaced, or was lost in a restart or failover; or a voter could not be asked): the critical section may not have been exclusive`,
      { code: 'ERR_LOCK_LOST', detail: JSON.stringify(report) }
    );
  }
  if (report.failures.length > 0) {
    process.emitWarning(
      `releasing a lock failed on ${report.failures.length} node(s); the keys expire after redlockTTL: ${report.failures.join('; ')}`,
      { code: 'ERR_LOCK_RELEASE' }
    );
  }
}

/**
 * The Redlock locker alova's `atomize` uses: `lock(resource)` / `unlock(resource)`, where
 * `resource` is a string or an array of strings.
 */
class RedisLocker {
  constructor(native, options) {
    this[NATIVE] = native;
    /** The effective Redlock settings, with their defaults. */
    this.options = options;
  }

  /** Acquires one lock on all the resources; rejects with code ERR_LOCK_NOT_ACQUIRED. */
  lock(resource) {
    const list = resourceList(resource);
    return Array.isArray(list) ? this[NATIVE].lock(list) : Promise.reject(list);
  }

  /**
   * Releases the lock holding the resources. Resolves also when nothing was held; a lock lost
   * while held, or a release that failed, is reported by a process warning (ERR_LOCK_LOST,
   * ERR_LOCK_RELEASE), never by a rejection.
   */
  unlock(resource) {
    const list = resourceList(resource);
    return Array.isArray(list) ? this[NATIVE].unlock(list).then(reportUnlock) : Promise.reject(list);
  }
}

function keyError(key) {
  return Promise.reject(codeError(TypeError, 'ERR_INVALID_ARG', `the key must be a string, got ${describe(key)}`));
}

/**
 * alova 3's `l2Cache` in Redis.
 *
 * @example
 * const adapter = new RedisStorageAdapter({ host: 'localhost', port: 6379, keyPrefix: 'app:' });
 * createAlova({ requestAdapter, l2Cache: adapter });
 */
class RedisStorageAdapter {
  /**
   * @param {object|string} [options] ioredis RedisOptions, `{ client }`, or a redis:// URL;
   * each with keyPrefix, redlockOptions, redlockFilter, redlockTTL.
   */
  constructor(options) {
    const opts = normaliseOptions(options);
    let shared = null;
    let client;
    let rest = opts;
    if ('client' in opts) {
      ({ client, ...rest } = opts);
      if (client instanceof RedisClient) {
        shared = client[NATIVE];
      } else if (client && client.isCluster === true && Array.isArray(client.startupNodes)) {
        rest = { ...adoptedClusterOptions(client), ...rest };
      } else if (isIoredisRedis(client)) {
        rest = { ...adoptedOptions(client), ...rest };
      } else {
        throw codeError(
          TypeError,
          'ERR_INVALID_OPTION',
          `option \`client\` must be a RedisClient of this package or an ioredis Redis instance, got ${describe(client)}`
        );
      }
    }
    this[NATIVE] = new NativeAdapter(optionsJson(rest), shared, guardRetryStrategy(retryStrategyOf(rest)), lookupOf(rest), sentinelHooksOf(rest));
    // set/get/remove as plain functions bound to the native storage (the per-call fast path).
    this[OPS] = this[NATIVE].operations();
    this[LOCK_SETUP] = {
      filter: rest.redlockFilter,
      // The original hands redlockFilter the ioredis client itself: so do we, when we have one.
      ioredis: isIoredisRedis(client) && !rest.redlockNodes ? client : null,
    };
    this[LOCKER] = null;
    /** Always 'adapterRedis'. */
    this.name = 'adapterRedis';
    /** Prefix of every cache key. */
    this.keyPrefix = this[NATIVE].keyPrefix;
    /** The client in use: the one passed in, or a RedisClient over the adapter's connection. */
    const connectionOptions = { ...rest };
    for (const key of ADAPTER_ONLY) delete connectionOptions[key];
    this.client = client !== undefined ? client : RedisClient.wrap(this[NATIVE].client(), connectionOptions);
    this[OWN_CLIENT] = client === undefined;
    this[WHERE] = client instanceof RedisClient ? client[WHERE] : whereOf(this, this[NATIVE].client());
    watchReplyErrors(this, rest.reconnectOnError);
  }

  /**
   * The Redlock locker (the same object on every read). `redlockFilter` picks the voting nodes
   * when it is first read; none left throws `No redis client available`.
   */
  get locker() {
    if (this[LOCKER] === null) {
      const setup = this[LOCK_SETUP];
      const infos = this[NATIVE].lockNodes();
      const nodes = infos.map((info) =>
        setup.ioredis ? setup.ioredis : { options: { host: info.host, port: info.port, path: info.path, db: info.db } }
      );
      const chosen = [];
      nodes.forEach((node, i) => {
        if (typeof setup.filter !== 'function' || setup.filter(node)) chosen.push(i);
      });
      if (chosen.length === 0) {
        throw codeError(Error, 'ERR_NO_LOCK_NODE', 'No redis client available');
      }
      const { ttl, ...options } = this[NATIVE].lockOptions();
      Object.defineProperty(options, 'ttl', { value: ttl, enumerable: false });
      this[LOCKER] = new RedisLocker(this[NATIVE].locker(chosen), options);
    }
    return this[LOCKER];
  }

  /** Stores `value` as JSON; an array whose [1] is a number expires at that timestamp (ms). */
  set(key, value) {
    if (typeof key !== 'string') return keyError(key);
    let json;
    try {
      json = JSON.stringify(value);
    } catch (cause) {
      return Promise.reject(
        codeError(TypeError, 'ERR_INVALID_ARG', `the value for key "${key}" cannot be stored as JSON: ${cause.message}`)
      );
    }
    if (json === undefined) {
      return Promise.reject(
        codeError(TypeError, 'ERR_INVALID_ARG', `the value for key "${key}" cannot be stored as JSON: ${describe(value)}`)
      );
    }
    const expireAt = Array.isArray(value) && typeof value[1] === 'number' ? value[1] : undefined;
    const done = tracingCommands()
      ? traceCommand('set', [this.keyPrefix + key, json], this[WHERE], () => this[OPS].set(key, json, expireAt))
      : this[OPS].set(key, json, expireAt);
    return this[RECONNECT_ON_ERROR] === undefined ? done : afterReplyError(this, done, () => this[OPS].set(key, json, expireAt));
  }

  /** The stored value, or undefined. */
  get(key) {
    if (typeof key !== 'string') return keyError(key);
    const done = tracingCommands() ? traceCommand('get', [this.keyPrefix + key], this[WHERE], () => this[OPS].get(key)) : this[OPS].get(key);
    return this[RECONNECT_ON_ERROR] === undefined ? done : afterReplyError(this, done, () => this[OPS].get(key));
  }

  /** Deletes the key. */
  remove(key) {
    if (typeof key !== 'string') return keyError(key);
    const done = tracingCommands() ? traceCommand('del', [this.keyPrefix + key], this[WHERE], () => this[OPS].remove(key)) : this[OPS].remove(key);
    return this[RECONNECT_ON_ERROR] === undefined ? done : afterReplyError(this, done, () => this[OPS].remove(key));
  }

  /** Removes every key under `keyPrefix`, and nothing else. */
  clear() {
    return this[NATIVE].clear();
  }

  /** Releases held locks, then closes the adapter's own connections; a client passed in stays open. */
  close() {
    if (this[OWN_CLIENT]) endSubscriptions(this.client);
    return this[NATIVE].close().then(reportUnlock);
  }
}

module.exports = RedisStorageAdapter;
module.exports.default = RedisStorageAdapter;
module.exports.RedisStorageAdapter = RedisStorageAdapter;
module.exports.RedisClient = RedisClient;
module.exports.RedisLocker = RedisLocker;
