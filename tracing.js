'use strict';

// diagnostics_channel tracing as ioredis 5.11 publishes it, so that tools instrumenting ioredis
// (OpenTelemetry and others) see this client too: the tracing channels `ioredis:command` (each
// command: { command, args, database, serverAddress, serverPort }), `ioredis:batch` (each
// `multi().exec()`: { batchMode: 'MULTI', batchSize, database, serverAddress, serverPort }) and
// `ioredis:connect` (`connect()`: { serverAddress, serverPort, connectionEpoch }). Nothing is
// built unless a channel has subscribers.
//
// Arguments are redacted as ioredis redacts them (the rules of OpenTelemetry's redis-common): a
// command shows the arguments its rule allows and `?` for the rest; commands no rule names
// (AUTH, HELLO, custom ones) show none.

const dc = (() => {
  try {
    return typeof process.getBuiltinModule === 'function'
      ? process.getBuiltinModule('node:diagnostics_channel')
      : require('node:diagnostics_channel');
  } catch {
    return undefined;
  }
})();

const channel = (name) => (dc && typeof dc.tracingChannel === 'function' ? dc.tracingChannel(name) : undefined);
const COMMAND = channel('ioredis:command');
const BATCH = channel('ioredis:batch');
const CONNECT = channel('ioredis:connect');

/** How many leading arguments a command may show (-1: all), by name pattern, first match wins. */
const SHOWN = [
  [/^ECHO/i, 0],
  [/^(GETSET|LPUSH|MSET|PFA|PSETEX|PUBLISH|RPUSH|SADD|SET|SPUBLISH|XADD|ZADD)/i, 1],
  [/^(HSET|HMSET|LSET|LINSERT)/i, 2],
  [
    /^(ACL|BIT|B[LRZ]|CLIENT|CLUSTER|CONFIG|COMMAND|DECR|DEL|EVAL|EX|FUNCTION|GEO|GET|HINCR|HMGET|HSCAN|INCR|L[TRLM]|MEMORY|P[EFISTU]|RPOP|S[CDIMORSU]|XACK|X[CDGILPRT]|Z[CDILMPRS])/i,
    -1,
  ],
];

/** The arguments of `name` as a trace may show them. */
function redact(name, args) {
  const rule = SHOWN.find(([re]) => re.test(name));
  const shown = rule ? rule[1] : 0;
  return args.map((a, i) => (shown === -1 || i < shown ? String(a) : '?'));
}

const active = (ch) => ch !== undefined && ch.hasSubscribers !== false;
const quiet = () => {};

/** `fn()` traced on `ch` with the context `make()` builds, when anyone listens. */
function trace(ch, fn, make) {
  if (!active(ch)) return fn();
  const traced = ch.tracePromise(fn, make());
  // The traced promise re-rejects; the caller's own chain sees the rejection.
  traced.catch(quiet);
  return traced;
}

/** A command of a client (or of the adapter) at `where` ({ address, port, database }). */
function traceCommand(name, args, where, fn) {
  if (!active(COMMAND)) return fn();
  return trace(COMMAND, fn, () => ({
    command: name,
    args: redact(name, args),
    database: where.database(),
    serverAddress: where.address,
    serverPort: where.port,
  }));
}

/** A transaction (`multi().exec()`) of `size` commands. */
function traceBatch(size, where, fn) {
  return trace(BATCH, fn, () => ({
    batchMode: 'MULTI',
    batchSize: size,
    database: where.database(),
    serverAddress: where.address,
    serverPort: where.port,
  }));
}

/** `connect()`, the `epoch`th connection of the client. */
function traceConnect(epoch, where, fn) {
  if (!active(CONNECT)) return fn();
  return CONNECT.tracePromise(fn, { serverAddress: where.address, serverPort: where.port, connectionEpoch: epoch });
}

/** Whether a command trace would be published now (callers skip building arguments otherwise). */
function tracingCommands() {
  return active(COMMAND);
}

module.exports = { traceCommand, traceBatch, traceConnect, tracingCommands, redact };
