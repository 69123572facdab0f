// Public types of @alova/storage-redis (native).
//
// Written by hand: the generated `binding.d.ts` describes the internal native binding, not this
// API. Nothing here needs `@types/node`, `ioredis` or `alova` at type level: ioredis clients are
// described by their shape (so `{ client: new Redis() }` keeps the type `Redis`), binary values
// are `Uint8Array` (a Node `Buffer` is one), and the adapter satisfies alova's
// `AlovaGlobalCacheAdapter` structurally.
//
// CommonJS: `module.exports` is the adapter class, with `RedisStorageAdapter` and `RedisClient`
// on it. ESM (`index.mjs`): default export the class, named exports the same two.

/**
 * alova 3's `l2Cache` in Redis, backed by a native (Rust) client.
 *
 * `T` is the shape of the options it was created with; it decides the type of
 * {@link RedisStorageAdapter.client | client}: the object passed as `{ client }`, otherwise this
 * package's {@link RedisStorageAdapter.RedisClient | RedisClient}.
 *
 * @example
 * const { createAlova } = require('alova');
 * const RedisStorageAdapter = require('@alova/storage-redis');
 *
 * const alova = createAlova({
 *   // ...
 *   l2Cache: new RedisStorageAdapter({ host: 'localhost', port: 6379, db: 0, keyPrefix: 'my-app:' })
 * });
 *
 * @example
 * // An existing ioredis client: `adapter.client` is typed as that client.
 * import Redis from 'ioredis';
 * const adapter = new RedisStorageAdapter({ client: new Redis(process.env.REDIS_URL!) });
 */
declare class RedisStorageAdapter<
  T extends RedisStorageAdapter.RedisStorageAdapterConfig = RedisStorageAdapter.RedisStorageAdapterOptions
> {
  /**
   * Connects with ioredis-style options (`{ host, port, ... }`), shares a client
   * (`{ client }`), or, later, a cluster (`{ nodes, options }`). Every option is checked here:
   * a wrong or unknown one throws a `TypeError` with `code: 'ERR_INVALID_OPTION'` naming it.
   *
   * @throws {RedisStorageAdapter.RedisStorageError} `ERR_INVALID_OPTION`
   */
  constructor(options: T & RedisStorageAdapter.NoInference<RedisStorageAdapter.NoUnknownOptions<T>>);
  /**
   * Connects to a `redis://`, `rediss://` or `unix://` URL (or a unix socket path); without an
   * argument, to `localhost:6379`.
   *
   * @example
   * new RedisStorageAdapter('redis://user:secret@localhost:6379/2');
   * @throws {RedisStorageAdapter.RedisStorageError} `ERR_INVALID_OPTION`
   */
  constructor(url?: string);

  /** Always `'adapterRedis'`. */
  readonly name: 'adapterRedis';

  /**
   * Prefix of every cache key (`keyPrefix + key`).
   * @default 'alova:'
   */
  readonly keyPrefix: string;

  /**
   * The client in use: exactly the object passed as `{ client }`, otherwise a
   * {@link RedisStorageAdapter.RedisClient | RedisClient} over the adapter's own connection.
   */
  readonly client: RedisStorageAdapter.ClientOf<T>;

  /**
   * The Redlock locker that alova's `atomize` strategy uses: the same object on every read,
   * created on first read, when `redlockFilter` picks the voting nodes.
   *
   * @throws {RedisStorageAdapter.RedisStorageError} `ERR_NO_LOCK_NODE` (message
   *   `No redis client available`) when `redlockFilter` leaves no node.
   */
  readonly locker: RedisStorageAdapter.RedisLocker;

  /**
   * Stores `JSON.stringify(value)` under `keyPrefix + key`. When `value` is an array whose `[1]`
   * is a number (alova's `[data, expireTimestamp, tag]`), the key expires at that timestamp (ms);
   * a positive timestamp already past writes nothing, and 0 or less (alova's `-1`: never) is stored
   * without expiry.
   *
   * @throws {RedisStorageAdapter.RedisStorageError} (rejects) `ERR_INVALID_ARG` for a key that is
   *   not a string or a value JSON cannot hold (circular, BigInt), in which case nothing is
   *   written; a connection error code otherwise.
   */
  set(key: string, value: any): Promise<void>;

  /**
   * The parsed value stored under `keyPrefix + key`, or `undefined` when there is none.
   *
   * @throws {RedisStorageAdapter.RedisStorageError} (rejects) `ERR_INVALID_VALUE` when the stored
   *   text is not JSON; `ERR_INVALID_ARG`; a connection error code.
   */
  get<V = any>(key: string): Promise<V | undefined>;

  /**
   * Deletes `keyPrefix + key`.
   * @throws {RedisStorageAdapter.RedisStorageError} (rejects) `ERR_INVALID_ARG`; a connection error code.
   */
  remove(key: string): Promise<void>;

  /**
   * Removes every key under `keyPrefix`, and nothing else (incrementally, with `SCAN`; never
   * `KEYS` or `FLUSHDB`). alova calls it from `invalidateCache()` without arguments.
   *
   * @throws {RedisStorageAdapter.RedisStorageError} (rejects) `ERR_CLEAR_REFUSED` when `keyPrefix`
   *   is `''` (it would remove every key of the database); a connection error code.
   */
  clear(): Promise<void>;

  /**
   * Closes the connection the adapter opened. A client passed as `{ client }` stays open (its
   * owner closes it). Node exits once nothing else is pending, even without `close()`.
   */
  close(): Promise<void>;
}

declare namespace RedisStorageAdapter {
  // ----------------------------------------------------------------------------------------
  // Errors
  // ----------------------------------------------------------------------------------------

  /**
   * The `code` of every error this package raises. Branch on it, never on the message.
   *
   * | code | when |
   * | --- | --- |
   * | `ERR_INVALID_OPTION` | a wrong or unknown option, at construction |
   * | `ERR_INVALID_ARG` | a wrong argument (non-string key, value JSON cannot hold, refused command) |
   * | `ERR_INVALID_VALUE` | a stored value is not JSON |
   * | `ERR_CONNECTION` | the server cannot be reached, or the connection broke and did not come back |
   * | `ERR_TIMEOUT` | `connectTimeout` or `commandTimeout` ran out |
   * | `ERR_AUTH` | the server refused the credentials |
   * | `ERR_CLOSED` | the client or adapter was closed |
   * | `ERR_REPLY` | the server answered with an error reply |
   * | `ERR_CLEAR_REFUSED` | `clear()` with an empty `keyPrefix` |
   * | `ERR_PROTOCOL` | a reply of an unexpected shape |
   * | `ERR_LOCK_NOT_ACQUIRED` | `locker.lock()` ran out of attempts |
   * | `ERR_NO_LOCK_NODE` | `redlockFilter` left no node to lock on (`No redis client available`) |
   * | `ERR_INTERNAL` | a defect in this package, caught instead of crashing the process (please report it) |
   *
   * Two more codes are process warnings (`process.on('warning')`), never rejections:
   * `ERR_LOCK_LOST` (a held lock was gone or held another value at `unlock`: expired, replaced,
   * lost in a restart or failover) and `ERR_LOCK_RELEASE`
   * (a release failed on some node; the keys expire after `redlockTTL`).
   */
  type ErrorCode =
    | 'ERR_INVALID_OPTION'
    | 'ERR_INVALID_ARG'
    | 'ERR_INVALID_VALUE'
    | 'ERR_CONNECTION'
    | 'ERR_TIMEOUT'
    | 'ERR_AUTH'
    | 'ERR_CLOSED'
    | 'ERR_REPLY'
    | 'ERR_CLEAR_REFUSED'
    | 'ERR_PROTOCOL'
    | 'ERR_LOCK_NOT_ACQUIRED'
    | 'ERR_NO_LOCK_NODE'
    | 'ERR_INTERNAL';

  /**
   * What this package throws and rejects with: an `Error` (a `TypeError` for wrong options and
   * arguments) with a {@link ErrorCode | code}. Messages never contain a password.
   *
   * @example
   * try {
   *   await adapter.get('key');
   * } catch (e) {
   *   if ((e as RedisStorageAdapter.RedisStorageError).code === 'ERR_TIMEOUT') retryLater();
   *   else throw e;
   * }
   */
  interface RedisStorageError extends Error {
    code: ErrorCode;
  }

  // ----------------------------------------------------------------------------------------
  // Connection options (ioredis RedisOptions)
  // ----------------------------------------------------------------------------------------

  /** TLS settings (`tls: { ... }`). */
  interface RedisTlsOptions {
    /**
     * Trusted CA certificate(s), PEM. The system's root certificates when absent.
     * @default undefined
     */
    ca?: string | Uint8Array | ReadonlyArray<string | Uint8Array>;
    /**
     * Client certificate chain, PEM, for mutual TLS; give `key` with it.
     * @default undefined
     */
    cert?: string | Uint8Array | ReadonlyArray<string | Uint8Array>;
    /**
     * Client private key, PEM, for mutual TLS; give `cert` with it.
     * @default undefined
     */
    key?: string | Uint8Array | ReadonlyArray<string | Uint8Array>;
    /**
     * Verify the server's certificate. `false` accepts any certificate (tests only).
     * @default true
     */
    rejectUnauthorized?: boolean;
    /**
     * The name the server's certificate is checked against (and sent as SNI), when it differs
     * from `host`: the socket still goes to `host`, as with Node's `tls.connect`.
     * @default the value of `host`
     */
    servername?: string;
    /**
     * Refused (`ERR_INVALID_OPTION`): the TLS handshake runs in Rust and cannot call a
     * JavaScript function during it; `servername` covers a certificate issued for another name.
     * @default undefined
     */
    checkServerIdentity?: never;
  }

  /**
   * `times => delay`: milliseconds to wait before reconnection attempt `times` (from 1), or
   * `null`/`undefined` to stop reconnecting (pending and later commands then fail with
   * `ERR_CONNECTION`).
   */
  type RetryStrategy = (times: number) => number | null | undefined | void;

  /**
   * How to reach one Redis server: the ioredis `RedisOptions` this package supports. The
   * defaults are ioredis's.
   *
   * Accepted but without effect (so existing ioredis option objects keep working):
   * `family`, `showFriendlyErrorStack`, `enableReadyCheck`, `autoResubscribe`,
   * `enableAutoPipelining`, `autoPipeliningIgnoredPrefixes`, `autoPipeliningIgnoredCommands`,
   * `stringNumbers`,
   * `disconnectTimeout`, `maxLoadingRetryTime`, `offlineQueue`.
   *
   * Refused with `ERR_INVALID_OPTION` (typed `never`): `Connector`, `scripts` (taken by
   * `new RedisClient` only), `monitor`, `readOnly`; and any key not listed here. The README's
   * option tables list them all.
   */
  interface RedisClientOptions {
    /**
     * Server host name or IP address.
     * @default 'localhost'
     */
    host?: string;
    /**
     * Redis Sentinel: the sentinels to ask where the master of `name` is (each `host`
     * defaults to 127.0.0.1, `port` to 26379). `host`, `port` and `path` are then not used.
     * @example sentinels: [{ host: 'sentinel-1', port: 26379 }, { host: 'sentinel-2', port: 26379 }]
     */
    sentinels?: Array<{ host?: string; port?: number }>;
    /**
     * With `sentinels`: the master group's name, as the sentinels monitor it (required).
     */
    name?: string;
    /**
     * With `sentinels`: connect to the master, or to a replica that is up.
     * @default 'master'
     */
    role?: 'master' | 'slave';
    /** With `sentinels`: the sentinels' ACL user. */
    sentinelUsername?: string;
    /** With `sentinels`: the sentinels' password (`password` is the data nodes'). */
    sentinelPassword?: string;
    /** With `sentinels`: TLS to the sentinels. */
    sentinelTLS?: boolean | RedisTlsOptions;
    /**
     * With `sentinels`: use `tls` for the master and replicas too (without it, `tls` is not
     * used with `sentinels`, as in ioredis).
     * @default false
     */
    enableTLSForSentinelMode?: boolean;
    /**
     * With `sentinels`: how long a sentinel may take to answer, in ms; without it,
     * `connectTimeout` bounds each sentinel's answer, so a silent sentinel costs one bound and
     * the next is asked.
     */
    sentinelCommandTimeout?: number;
    /**
     * With `sentinels`: add the sentinels a sentinel names to those asked.
     * @default true
     */
    updateSentinels?: boolean;
    /**
     * With `sentinels` and `role: 'slave'`: the replicas to take first, lowest `prio` first;
     * or a function that picks one of those that are up (given as `sentinel replicas`
     * describes them: `ip`, `port`, `flags`, ...); else a random replica that is up.
     */
    preferredSlaves?:
      | Array<{ ip: string; port: string | number; prio?: number }>
      | { ip: string; port: string | number; prio?: number }
      | ((slaves: Array<Record<string, string>>) => { ip: string; port: string | number } | null);
    /**
     * With `sentinels`: listen for `+switch-master` on the sentinels and reconnect as soon as
     * the group fails over. Without it, a failover is followed when the old master closes the
     * connection (the sentinels demote it some seconds later) or fails; writes in between go
     * to the old master, as with ioredis.
     * @default false
     */
    failoverDetector?: boolean;
    /**
     * With `sentinels`: the pause in ms before the next connection attempt when no sentinel
     * gave an address (instead of `retryStrategy`); anything but a number stops reconnecting.
     * @default times => Math.min(times * 10, 1000)
     */
    sentinelRetryStrategy?: (times: number) => number | void | null;
    /**
     * With `failoverDetector`: the pause in ms before it listens again to a sentinel whose
     * connection was lost; anything but a number stops listening to that sentinel.
     * @default () => 60000
     */
    sentinelReconnectStrategy?: (times: number) => number | void | null;
    /**
     * With `failoverDetector`: how many sentinels it listens to.
     * @default 10
     */
    sentinelMaxConnections?: number;
    /**
     * With `sentinels`: the address a sentinel gives -> the address to connect to, as a map
     * or a function of `"host:port"` (null keeps the address).
     * @example natMap: { '10.0.0.1:6379': { host: 'redis-1.example.com', port: 6379 } }
     */
    natMap?: Record<string, { host: string; port: number }> | ((key: string) => { host: string; port: number } | null);
    /**
     * Server port: a number or a numeric string (`'6379'`), 1 to 65535.
     * @default 6379
     */
    port?: number | string;
    /**
     * Unix socket path; replaces `host` and `port`.
     * @default undefined
     * @example '/run/redis/redis.sock'
     */
    path?: string;
    /**
     * ACL user name (Redis >= 6), sent with `AUTH`.
     * @default undefined (the `default` user)
     */
    username?: string;
    /**
     * Password, sent with `AUTH`. Never appears in an error message.
     * @default undefined (no AUTH)
     */
    password?: string;
    /**
     * Database index.
     * @default 0
     */
    db?: number;
    /**
     * TLS: `true` for the system's roots, or settings. A `rediss://` URL turns it on, too.
     * @default undefined (plain TCP)
     * @example { ca: fs.readFileSync('ca.pem'), servername: 'redis.internal' }
     */
    tls?: boolean | RedisTlsOptions;
    /**
     * A `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or `unix://` URL, or a
     * unix socket path. Options given beside it override what it says.
     * @default undefined
     * @example 'redis://default:secret@localhost:6379/0'
     */
    url?: string;
    /**
     * Milliseconds a whole connection attempt may take (TCP, TLS, `AUTH`, `SELECT`,
     * `CLIENT SETNAME`, the ready check); `0` waits as long as the system does.
     * @default 10000
     */
    connectTimeout?: number;
    /**
     * Milliseconds from a call to its reply, time spent waiting for a connection included,
     * before it rejects with `ERR_TIMEOUT`.
     * @default undefined (no limit)
     */
    commandTimeout?: number;
    /**
     * Name set with `CLIENT SETNAME` on every connection (shows in `CLIENT LIST`). No spaces.
     * @default undefined
     */
    connectionName?: string;
    /**
     * TCP keep-alive initial delay in milliseconds; `0` leaves keep-alive off.
     * @default 0
     */
    keepAlive?: number | boolean;
    /**
     * Disable Nagle's algorithm (`TCP_NODELAY`).
     * @default true
     */
    noDelay?: boolean;
    /**
     * Connect on the first command instead of at construction (`status` is `'wait'` until then).
     * @default false
     */
    lazyConnect?: boolean;
    /**
     * Commands issued while disconnected wait for the connection instead of failing at once.
     * @default true
     */
    enableOfflineQueue?: boolean;
    /**
     * Reconnection attempts a waiting command sits through before it rejects with
     * `ERR_CONNECTION`; `null` waits as long as the client reconnects (never past `quit()` or
     * `disconnect()`). An attempt that reached a server that answered garbage or nothing fails
     * the waiting commands at once.
     * @default 20
     */
    maxRetriesPerRequest?: number | null;
    /**
     * Delay before each reconnection attempt.
     * @default times => Math.min(times * 50, 2000)
     * @example retryStrategy: times => (times > 10 ? null : times * 100)
     */
    retryStrategy?: RetryStrategy | null;
    /**
     * Commands that failed only because the connection dropped are sent again once it is back.
     * @default true
     */
    autoResendUnfulfilledCommands?: boolean;

    // Accepted, no effect.

    /**
     * No effect: the address family follows the host name's resolution.
     * @default 4
     */
    family?: number;
    /**
     * No effect: errors carry a `code` and a plain stack.
     * @default false
     */
    showFriendlyErrorStack?: boolean;
    /**
     * No effect: the connection is ready when the server answers.
     * @default true
     */
    enableReadyCheck?: boolean;
    /**
     * No effect: a client's subscriptions (on their own connection) are always made again
     * after a reconnection.
     * @default true
     */
    autoResubscribe?: boolean;
    /**
     * No effect: every command is always pipelined on one socket.
     * @default false
     */
    enableAutoPipelining?: boolean;
    /**
     * No effect (see `enableAutoPipelining`).
     * @default []
     */
    autoPipeliningIgnoredPrefixes?: string[];
    /**
     * No effect (see `enableAutoPipelining`).
     * @default []
     */
    autoPipeliningIgnoredCommands?: string[];
    /**
     * No effect: integer replies are numbers.
     * @default false
     */
    stringNumbers?: boolean;
    /**
     * No effect: `disconnect()` closes at once.
     * @default 2000
     */
    disconnectTimeout?: number;
    /**
     * No effect.
     * @default 10000
     */
    maxLoadingRetryTime?: number;
    /**
     * No effect (use `enableOfflineQueue`).
     * @default true
     */
    offlineQueue?: boolean;

    // Refused: these throw ERR_INVALID_OPTION.

    /**
     * Not supported: custom connectors. Throws `ERR_INVALID_OPTION`.
     * @default undefined
     */
    Connector?: never;
    /**
     * ioredis's `reconnectOnError`: shown every error reply (`ERR_REPLY`) of the client's
     * commands and the adapter's cache operations. Truthy: the connection is made again (the
     * commands on it are sent again as `autoResendUnfulfilledCommands` says), as on `READONLY`
     * after a failover behind one DNS name; `2`: the failed command is also sent again, once,
     * and its outcome is the command's.
     * @default undefined
     * @example reconnectOnError: (err) => err.message.startsWith('READONLY')
     */
    reconnectOnError?: (err: RedisStorageError) => boolean | 1 | 2 | null | undefined | void;
    /**
     * Refused by the adapter (`ERR_INVALID_OPTION`); `new RedisClient({ scripts })` takes it
     * (see {@link RedisClientConstructorOptions}).
     * @default undefined
     */
    scripts?: never;
    /**
     * Not supported: monitor mode. Throws `ERR_INVALID_OPTION`.
     * @default undefined
     */
    monitor?: never;
    /**
     * Not supported (cluster replicas). Throws `ERR_INVALID_OPTION`.
     * @default undefined
     */
    readOnly?: never;
    /**
     * Milliseconds a connection on which commands wait may stay silent (no reply at all)
     * before it is given up (an `error` event with `ERR_TIMEOUT`, "Socket timeout") and made
     * again; its commands are sent again as `autoResendUnfulfilledCommands` says. Catches a
     * server or network that stopped answering without closing the socket.
     * @default undefined (no limit)
     */
    socketTimeout?: number;
    /**
     * `new RedisClient`: put in front of every key of the client's commands, as ioredis does
     * (by ioredis's own table of key positions; replies are left as they are, so `KEYS` and
     * `SCAN` show it). For the adapter, `keyPrefix` is the prefix of its cache keys instead.
     * @default ''
     */
    keyPrefix?: string;
    /**
     * A positive number turns on a client-side limit for blocking commands (`BLPOP`,
     * `BZPOPMIN`, `BLMPOP`, `XREAD BLOCK`, ...): their own timeout plus `blockingTimeoutGrace`,
     * or this many ms for one that blocks forever; then the command resolves `null`, as when
     * the server's timeout passes (the server may still hold it: a later blocking command of
     * this client waits behind it on the blocking commands' connection).
     * @default undefined (no limit)
     */
    blockingTimeout?: number;
    /**
     * Milliseconds added to a blocking command's own timeout (with `blockingTimeout`).
     * @default 100
     */
    blockingTimeoutGrace?: number;
    /**
     * RESP version of the connection: only 2 (replies are converted as with RESP2);
     * subscriptions use RESP3 on their own connection. 3 throws `ERR_INVALID_OPTION`.
     * @default 2
     */
    protocol?: 2;
    /**
     * `true`: no `CLIENT SETINFO LIB-NAME alova-storage-redis` / `LIB-VER` on connect (Redis
     * >= 7.2 shows them in `CLIENT LIST`; older servers answer an error, which is ignored).
     * @default false
     */
    disableClientInfo?: boolean;
    /**
     * Appended to the library name `CLIENT SETINFO` gives: `alova-storage-redis(tag)`.
     * @default undefined
     */
    clientInfoTag?: string;
  }

  // ----------------------------------------------------------------------------------------
  // Adapter options
  // ----------------------------------------------------------------------------------------

  /** Redlock settings, with the defaults of `@sesamecare-oss/redlock`. */
  interface RedlockOptions {
    /**
     * Clock drift allowance as a fraction of the TTL, in [0, 1): a lock is valid for
     * `ttl - elapsed - (driftFactor * ttl + 2)` ms.
     * @default 0.01
     */
    driftFactor?: number;
    /**
     * Attempts after the first before `lock()` rejects; `-1` tries forever.
     * @default 10
     */
    retryCount?: number;
    /**
     * Milliseconds between attempts.
     * @default 200
     */
    retryDelay?: number;
    /**
     * Random milliseconds, plus or minus, added to each pause.
     * @default 100
     */
    retryJitter?: number;
    /**
     * How long (ms) before expiry a held lock is extended, so a lock outlives a slow request.
     * @default 500
     */
    automaticExtensionThreshold?: number;
    /**
     * The database the lock keys live in.
     * @default 0
     */
    db?: number;
  }

  /**
   * A node that votes in Redlock, as `redlockFilter` sees it: `node.options.host` and
   * `node.options.port` read as on an ioredis client.
   */
  interface RedlockNode {
    readonly options: {
      readonly host?: string;
      readonly port?: number;
      readonly path?: string;
      readonly db?: number;
    };
  }

  /** The options every shape takes beside its connection. */
  interface RedisStorageCommonOptions {
    /**
     * Prefix of every cache key. It is not a connection-level prefix: `client` commands see
     * keys as they are. `''` is allowed, but then `clear()` refuses (`ERR_CLEAR_REFUSED`).
     * @default 'alova:'
     */
    keyPrefix?: string;
    /**
     * Redlock settings for {@link RedisStorageAdapter.locker | locker}.
     * @default {} (every setting at its default)
     * @example redlockOptions: { retryCount: 5, retryDelay: 100 }
     */
    redlockOptions?: RedlockOptions;
    /**
     * Picks the nodes that vote in Redlock (by default every node: the adapter's server, or each
     * of `redlockNodes`), once, when `locker` is first read. No node left: reading `locker`
     * throws `No redis client available` (`ERR_NO_LOCK_NODE`).
     * @default undefined (every node votes)
     * @example redlockFilter: node => node.options.port !== 6380
     */
    redlockFilter?(node: RedlockNode): boolean;
    /**
     * Lock time to live in milliseconds (extended automatically while held).
     * @default 5000
     */
    redlockTTL?: number;
    /**
     * Independent Redis servers that vote on locks (a real Redlock quorum: `floor(n/2) + 1` of
     * them must agree), instead of the adapter's own server. The cache stays on the adapter's
     * connection.
     * @default undefined (the adapter's own server is the only voter)
     * @example redlockNodes: ['redis://lock-a:6379', 'redis://lock-b:6379', { host: 'lock-c', port: 6379 }]
     */
    redlockNodes?: Array<string | Omit<RedisClientOptions, 'retryStrategy'>>;
    /**
     * Put a hash tag of each key after the prefix (`alova:{1a2b3c4d}<key>`), so that a cluster
     * spreads alova's keys over its slots (their `{...}` parameter objects would otherwise be
     * the hash tag). Every process reading the same cache must use the same setting.
     * @default false
     */
    spreadKeys?: boolean;
  }

  /**
   * `new RedisStorageAdapter({ host, port, ... })`: the adapter opens its own connection.
   *
   * @example
   * new RedisStorageAdapter({ host: 'localhost', port: '6379', username: 'default', password: 'secret', db: 0 });
   */
  interface RedisStorageAdapterOptions extends RedisStorageCommonOptions, RedisClientOptions {}

  /** A cluster node: `{ host, port }`, a port, or `'host:port'` (as ioredis takes them). */
  type ClusterNode = string | number | { host?: string; port?: number | string };

  /** The `redisOptions` a cluster's node connections take. */
  type RedisClusterNodeOptions = Pick<
    RedisClientOptions,
    | 'username'
    | 'password'
    | 'tls'
    | 'connectTimeout'
    | 'commandTimeout'
    | 'socketTimeout'
    | 'keepAlive'
    | 'noDelay'
    | 'maxRetriesPerRequest'
    | 'protocol'
    | 'disableClientInfo'
    | 'clientInfoTag'
  > & {
    /**
     * Must be 0: Redis Cluster has only database 0.
     * @default 0
     */
    db?: 0;
  };

  /** ioredis `ClusterOptions`, the ones that apply here. */
  interface RedisClusterOptions {
    /**
     * Connection options of every node (credentials, TLS, timeouts).
     * @default {}
     */
    redisOptions?: RedisClusterNodeOptions;
    /**
     * Where reads go: `'master'`; a random replica (`'slave'`); a random node of the slot,
     * master or replica (`'all'`). A read from a replica may miss a write made just before.
     * @default 'master'
     */
    scaleReads?: 'master' | 'slave' | 'all';
    /**
     * Announced address -> reachable address, for clusters behind NAT.
     * @default undefined
     * @example natMap: { '10.0.0.1:6379': { host: 'redis-1.example.com', port: 6379 } }
     */
    natMap?: Record<string, { host: string; port: number }>;
    /**
     * Retries of a command through redirections, TRYAGAIN and failovers.
     * @default 16
     */
    maxRedirections?: number;
    /**
     * First pause between retries in ms (they grow to 2 s); the smallest of the three counts.
     * @default 100
     */
    retryDelayOnFailover?: number;
    /** @default 100 */
    retryDelayOnClusterDown?: number;
    /** @default 100 */
    retryDelayOnTryAgain?: number;
    /** No effect: a command answered MOVED goes to the node named at once. @default 0 */
    retryDelayOnMoved?: number;
    /**
     * Commands wait for the first connection.
     * @default true
     */
    enableOfflineQueue?: boolean;
    /**
     * Connect on the first command.
     * @default false
     */
    lazyConnect?: boolean;
    /**
     * Delay before attempt `times` of the first connection, or `null` to give up.
     * @default times => Math.min(100 + times * 2, 2000)
     */
    clusterRetryStrategy?: RetryStrategy;
    /** No effect (redis-rs checks readiness by connecting). @default true */
    enableReadyCheck?: boolean;
    /** No effect (slots are refreshed when a node redirects). @default 1000 */
    slotsRefreshTimeout?: number;
    /** No effect (slots are refreshed when a node redirects). @default 5000 */
    slotsRefreshInterval?: number;
    /** No effect: commands are always pipelined. @default false */
    enableAutoPipelining?: boolean;
    /** No effect. @default [] */
    autoPipeliningIgnoredPrefixes?: string[];
    /** No effect. @default [] */
    autoPipeliningIgnoredCommands?: string[];
    /** No effect. @default false */
    showFriendlyErrorStack?: boolean;
    /** No effect. @default false */
    useSRVRecords?: boolean;
    /**
     * Put in front of every key of the client's commands, as ioredis does (not of the
     * adapter's cache keys: the adapter has its own `keyPrefix`).
     * @default ''
     */
    keyPrefix?: string;
    /**
     * Resolves the nodes' host names instead of the system, as `dns.lookup` does. ioredis's
     * recipe for AWS ElastiCache with TLS, `(address, callback) => callback(null, address)`,
     * works as there.
     * @default undefined (the system's resolver)
     */
    dnsLookup?: (hostname: string, callback: (err: Error | null, address: string, family?: number) => void) => void;
    /**
     * No effect: sharded subscriptions always go to the master of each channel's slot.
     * @default false
     */
    shardedSubscribers?: boolean;
    /**
     * No effect: redis-rs makes a lost node connection again on the next command for it.
     * @default null
     */
    clusterNodeRetryStrategy?: ((times: number) => number | null | undefined | void) | null;
  }

  /**
   * `new RedisStorageAdapter({ nodes, options })`: a Redis Cluster. Locks: the cluster votes
   * as one Redlock voter; multi-slot locks are taken slot by slot, all-or-nothing.
   */
  interface RedisClusterStorageAdapterOptions extends RedisStorageCommonOptions {
    /**
     * Startup nodes; the rest are discovered.
     * @example [{ host: 'localhost', port: 6379 }, { host: 'localhost', port: 6380 }]
     */
    nodes: ClusterNode[];
    /**
     * Cluster options.
     * @default {}
     */
    options?: RedisClusterOptions;
  }

  /**
   * An ioredis `Redis` instance, by its shape (ioredis itself is not needed to type-check).
   * The adapter opens its own native connection to the same server with the same credentials
   * (`host`, `port`, `path`, `username`, `password`, `db`, `tls`); `client` stays the instance
   * passed in.
   */
  interface IORedisClient {
    readonly options: {
      host?: string;
      port?: number;
      path?: string;
      username?: string;
      password?: string;
      db?: number;
    };
    sendCommand(...args: any[]): unknown;
  }

  /** An ioredis `Cluster` instance, by its shape. Refused by this build (`ERR_INVALID_OPTION`). */
  interface IORedisCluster {
    readonly isCluster: boolean;
    nodes(...args: any[]): unknown[];
    sendCommand(...args: any[]): unknown;
  }

  /** What `{ client }` may hold. */
  type SupportedClient = RedisClient | IORedisClient | IORedisCluster;

  /**
   * `new RedisStorageAdapter({ client })`: use an existing client. With this package's
   * {@link RedisClient} the adapter shares its connection; `client` is exactly the object passed.
   * No connection option may be given beside `client`.
   *
   * @example
   * const client = new RedisClient({ host: 'localhost' });
   * const adapter = new RedisStorageAdapter({ client, keyPrefix: 'app:' });
   * adapter.client === client; // true, and typed RedisClient
   */
  interface RedisStorageInstance<C extends SupportedClient = SupportedClient>
    extends RedisStorageCommonOptions {
    /** The client to use. */
    client: C;
  }

  /** Any of the three option shapes. */
  type RedisStorageAdapterConfig =
    | RedisStorageAdapterOptions
    | RedisClusterStorageAdapterOptions
    | RedisStorageInstance<SupportedClient>;

  /** The type of `adapter.client` for options of type `T`. */
  type ClientOf<T> = T extends { client: infer C } ? C : RedisClient;

  /** The option names the shape of `T` allows. */
  type KnownOptionKeys<T> = T extends { client: any }
    ? keyof RedisStorageInstance
    : T extends { nodes: any }
      ? keyof RedisClusterStorageAdapterOptions
      : keyof RedisStorageAdapterOptions;

  /**
   * Makes an unknown option (a typo, or a connection option beside `client`) a type error
   * while `T` is still inferred from the argument.
   */
  type NoUnknownOptions<T> = [Exclude<keyof T, KnownOptionKeys<T>>] extends [never]
    ? unknown
    : { [K in Exclude<keyof T, KnownOptionKeys<T>>]: never };

  /**
   * `T`, kept out of type inference (TypeScript 5.4's `NoInfer`, written so older compilers
   * understand it): `T` is inferred from the options alone, and callbacks in them
   * (`retryStrategy`, `redlockFilter`) keep their parameter types.
   */
  type NoInference<T> = [T][T extends any ? 0 : never];

  // ----------------------------------------------------------------------------------------
  // The locker
  // ----------------------------------------------------------------------------------------

  /**
   * Redlock over the adapter's nodes, as alova's `AlovaStorageAdapterLocker`. Lock keys are the
   * resource names as given (no `keyPrefix`) and interoperate with `@sesamecare-oss/redlock`.
   *
   * @example
   * await adapter.locker.lock('orders');
   * try { ... } finally { await adapter.locker.unlock('orders'); }
   */
  interface RedisLocker {
    /** The effective Redlock settings: `redlockOptions` over their defaults. */
    readonly options: Readonly<Required<RedlockOptions>>;
    /**
     * Acquires every resource at once on a majority of the nodes, retrying per
     * `redlockOptions`; the lock is extended while held.
     * @throws {RedisStorageError} (rejects) `ERR_LOCK_NOT_ACQUIRED` after the last attempt.
     */
    lock(resource: string | string[]): Promise<void>;
    /**
     * Releases what this adapter holds; a resource it does not hold is ignored. A lock lost
     * while held is reported by a process warning (`ERR_LOCK_LOST`), never by a rejection.
     */
    unlock(resource: string | string[]): Promise<void>;
  }

  // ----------------------------------------------------------------------------------------
  // RedisClient
  // ----------------------------------------------------------------------------------------

  /**
   * A command argument. Arrays are spread, `Map`s and plain objects become field/value pairs,
   * numbers become strings, `null`/`undefined` become `''` (as in ioredis).
   */
  type RedisCommandArg =
    | string
    | number
    | Uint8Array
    | null
    | undefined
    | readonly RedisCommandArg[]
    | ReadonlyMap<string | number | Uint8Array, string | number | Uint8Array>
    | { readonly [field: string]: string | number | Uint8Array };

  /** ioredis's connection states. */
  /** What `exec()` of a pipeline or transaction resolves: per command `[err]` or `[null, result]`. */
  type RedisExecResult = Array<[RedisStorageError | null, unknown?]>;

  /**
   * `client.pipeline()` / `client.multi()`, as in ioredis: a method per command queues it and
   * returns the pipeline (for chaining; a function as its last argument is called with that
   * command's outcome); `exec()` sends them together, with nothing of anybody else's between.
   * A transaction resolves `null` when a `WATCH`ed key changed and rejects with `EXECABORT`
   * (and `err.previousErrors`) when the server refused a command.
   */
  type RedisPipeline = {
    /** How many commands are queued. */
    readonly length: number;
    call(command: string, ...args: Array<RedisCommandArg | RedisCallback<unknown>>): RedisPipeline;
    /** `call` whose reply has Buffers for strings. */
    callBuffer(command: string, ...args: Array<RedisCommandArg | RedisCallback<unknown>>): RedisPipeline;
    exec(callback?: RedisCallback<RedisExecResult | null>): Promise<RedisExecResult | null>;
  } & { [K in Exclude<keyof RedisCommands, 'call'>]: (...args: any[]) => RedisPipeline } & {
    [K in keyof RedisCommands as K extends string ? `${K}Buffer` : never]: (...args: any[]) => RedisPipeline;
  };

  /**
   * The Buffer form of every command, as in ioredis (`getBuffer`, `hgetallBuffer`, ...): the
   * reply with Buffers where the plain form has strings (status replies such as `'OK'`
   * included); numbers and nulls as in the plain form.
   */
  type RedisBufferCommands = {
    [K in keyof RedisCommands as K extends string ? `${K}Buffer` : never]: (
      ...args: Array<RedisCommandArg | RedisCallback<any>>
    ) => Promise<any>;
  };

  /**
   * A script for `defineCommand` and the `scripts` option, as in ioredis: `numberOfKeys`
   * undefined means the caller passes the number of keys first.
   */
  interface RedisScriptDefinition {
    lua: string;
    numberOfKeys?: number;
  }

  /** What `new RedisClient` takes: {@link RedisClientOptions} and ioredis's `scripts`. */
  type RedisClientConstructorOptions = Omit<RedisClientOptions, 'scripts'> & {
    /** Commands defined at construction, as by `defineCommand(name, definition)` for each. */
    scripts?: Record<string, RedisScriptDefinition>;
  };

  /** The options of `scanStream()` and its keyed forms, as in ioredis. */
  interface RedisScanStreamOptions {
    /** `MATCH` pattern. */
    match?: string;
    /** `TYPE` (scanStream only: the type of the keys). */
    type?: string;
    /** `COUNT` hint per step. */
    count?: number;
    /** `NOVALUES` (hscanStream only, Redis 7.4+): fields without values. */
    noValues?: boolean;
  }

  /**
   * A Node `Readable` in object mode (typed by its shape, so that `@types/node` is not needed):
   * one array per SCAN step, then `end`. Also an async iterable of those arrays.
   */
  interface RedisScanStream extends AsyncIterable<string[]> {
    on(event: 'data', listener: (chunk: string[]) => void): this;
    on(event: 'end' | 'close', listener: () => void): this;
    on(event: 'error', listener: (err: RedisStorageError) => void): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once(event: 'data', listener: (chunk: string[]) => void): this;
    once(event: 'end' | 'close', listener: () => void): this;
    once(event: 'error', listener: (err: RedisStorageError) => void): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
    off(event: string | symbol, listener: (...args: any[]) => void): this;
    removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
    pause(): this;
    resume(): this;
    destroy(error?: Error): this;
    /** Ends the stream after the step under way (ioredis's `close()`). */
    close(): void;
    readonly readableObjectMode: boolean;
  }

  /** The events a {@link RedisClient} emits, named as in ioredis. */
  type RedisClientEvent = 'wait' | 'connecting' | 'connect' | 'ready' | 'error' | 'close' | 'reconnecting' | 'end';
  type RedisClientStatus = 'wait' | 'connecting' | 'ready' | 'reconnecting' | 'end';

  /**
   * A node-style callback, the optional last argument of every command method, of `call` and of
   * `quit` (as in ioredis): called once, with `(null, result)` or with `(err)`. The method returns
   * its promise all the same. What the callback throws is rethrown as an uncaught exception.
   *
   * @example
   * client.get('greeting', (err, value) => {
   *   if (err) console.error(err.code, err.message);
   *   else console.log(value);
   * });
   */
  type RedisCallback<T> = (err?: RedisStorageError | null, result?: T) => void;

  /**
   * A method per Redis command, named as in ioredis (lower case). Replies come back as ioredis
   * returns them: bulk and status replies as strings, integers as numbers, nil as `null`, arrays
   * as arrays, `hgetall` as an object with every field as an own property (`__proto__` included).
   * Each takes a {@link RedisCallback} as its optional last argument; a function anywhere else
   * rejects with `ERR_INVALID_ARG` (it is never sent as data). Commands that would change the
   * shared connection's state (`SELECT`, `MULTI`, `SUBSCRIBE`, blocking pops, ...) are not offered
   * and `call` refuses them (`ERR_INVALID_ARG`).
   */
  interface RedisCommands {
    get(key: string | Uint8Array, callback?: RedisCallback<string | null>): Promise<string | null>;
    set(key: string | Uint8Array, value: string | number | Uint8Array, ...args: [...options: RedisCommandArg[], callback: RedisCallback<'OK' | string | null>]): Promise<'OK' | string | null>;
    set(key: string | Uint8Array, value: string | number | Uint8Array, ...options: RedisCommandArg[]): Promise<'OK' | string | null>;
    setnx(key: string | Uint8Array, value: string | number | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    getdel(key: string | Uint8Array, callback?: RedisCallback<string | null>): Promise<string | null>;
    mget(...args: [...keys: RedisCommandArg[], callback: RedisCallback<Array<string | null>>]): Promise<Array<string | null>>;
    mget(...keys: RedisCommandArg[]): Promise<Array<string | null>>;
    del(...args: [...keys: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    del(...keys: RedisCommandArg[]): Promise<number>;
    unlink(...args: [...keys: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    unlink(...keys: RedisCommandArg[]): Promise<number>;
    exists(...args: [...keys: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    exists(...keys: RedisCommandArg[]): Promise<number>;
    expire(key: string | Uint8Array, seconds: number | string, ...args: [...options: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    expire(key: string | Uint8Array, seconds: number | string, ...options: RedisCommandArg[]): Promise<number>;
    pexpire(key: string | Uint8Array, milliseconds: number | string, ...args: [...options: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    pexpire(key: string | Uint8Array, milliseconds: number | string, ...options: RedisCommandArg[]): Promise<number>;
    ttl(key: string | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    pttl(key: string | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    type(key: string | Uint8Array, callback?: RedisCallback<string>): Promise<string>;
    incr(key: string | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    incrby(key: string | Uint8Array, increment: number | string, callback?: RedisCallback<number>): Promise<number>;
    decr(key: string | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    decrby(key: string | Uint8Array, decrement: number | string, callback?: RedisCallback<number>): Promise<number>;
    hget(key: string | Uint8Array, field: string | Uint8Array, callback?: RedisCallback<string | null>): Promise<string | null>;
    hset(key: string | Uint8Array, ...args: [...fieldsAndValues: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    hset(key: string | Uint8Array, ...fieldsAndValues: RedisCommandArg[]): Promise<number>;
    hdel(key: string | Uint8Array, ...args: [...fields: RedisCommandArg[], callback: RedisCallback<number>]): Promise<number>;
    hdel(key: string | Uint8Array, ...fields: RedisCommandArg[]): Promise<number>;
    keys(pattern: string, callback?: RedisCallback<string[]>): Promise<string[]>;
    scan(cursor: number | string, ...args: [...options: RedisCommandArg[], callback: RedisCallback<[cursor: string, keys: string[]]>]): Promise<[cursor: string, keys: string[]]>;
    scan(cursor: number | string, ...options: RedisCommandArg[]): Promise<[cursor: string, keys: string[]]>;
    ping(callback?: RedisCallback<string>): Promise<string>;
    ping(message: string | Uint8Array, callback?: RedisCallback<string>): Promise<string>;
    echo(message: string | Uint8Array, callback?: RedisCallback<string>): Promise<string>;
    dbsize(callback?: RedisCallback<number>): Promise<number>;
    publish(channel: string | Uint8Array, message: string | number | Uint8Array, callback?: RedisCallback<number>): Promise<number>;
    acl(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    acl(...args: RedisCommandArg[]): Promise<any>;
    append(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    append(...args: RedisCommandArg[]): Promise<any>;
    bgrewriteaof(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bgrewriteaof(...args: RedisCommandArg[]): Promise<any>;
    bgsave(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bgsave(...args: RedisCommandArg[]): Promise<any>;
    bitcount(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bitcount(...args: RedisCommandArg[]): Promise<any>;
    bitfield(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bitfield(...args: RedisCommandArg[]): Promise<any>;
    bitfield_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bitfield_ro(...args: RedisCommandArg[]): Promise<any>;
    bitop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bitop(...args: RedisCommandArg[]): Promise<any>;
    bitpos(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bitpos(...args: RedisCommandArg[]): Promise<any>;
    client(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    client(...args: RedisCommandArg[]): Promise<any>;
    cluster(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    cluster(...args: RedisCommandArg[]): Promise<any>;
    command(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    command(...args: RedisCommandArg[]): Promise<any>;
    config(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    config(...args: RedisCommandArg[]): Promise<any>;
    copy(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    copy(...args: RedisCommandArg[]): Promise<any>;
    debug(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    debug(...args: RedisCommandArg[]): Promise<any>;
    dump(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    dump(...args: RedisCommandArg[]): Promise<any>;
    eval(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    eval(...args: RedisCommandArg[]): Promise<any>;
    eval_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    eval_ro(...args: RedisCommandArg[]): Promise<any>;
    evalsha(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    evalsha(...args: RedisCommandArg[]): Promise<any>;
    evalsha_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    evalsha_ro(...args: RedisCommandArg[]): Promise<any>;
    expireat(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    expireat(...args: RedisCommandArg[]): Promise<any>;
    expiretime(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    expiretime(...args: RedisCommandArg[]): Promise<any>;
    failover(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    failover(...args: RedisCommandArg[]): Promise<any>;
    fcall(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    fcall(...args: RedisCommandArg[]): Promise<any>;
    fcall_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    fcall_ro(...args: RedisCommandArg[]): Promise<any>;
    flushall(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    flushall(...args: RedisCommandArg[]): Promise<any>;
    flushdb(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    flushdb(...args: RedisCommandArg[]): Promise<any>;
    function(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    function(...args: RedisCommandArg[]): Promise<any>;
    geoadd(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geoadd(...args: RedisCommandArg[]): Promise<any>;
    geodist(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geodist(...args: RedisCommandArg[]): Promise<any>;
    geohash(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geohash(...args: RedisCommandArg[]): Promise<any>;
    geopos(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geopos(...args: RedisCommandArg[]): Promise<any>;
    georadius(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    georadius(...args: RedisCommandArg[]): Promise<any>;
    georadius_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    georadius_ro(...args: RedisCommandArg[]): Promise<any>;
    georadiusbymember(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    georadiusbymember(...args: RedisCommandArg[]): Promise<any>;
    georadiusbymember_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    georadiusbymember_ro(...args: RedisCommandArg[]): Promise<any>;
    geosearch(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geosearch(...args: RedisCommandArg[]): Promise<any>;
    geosearchstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    geosearchstore(...args: RedisCommandArg[]): Promise<any>;
    getbit(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    getbit(...args: RedisCommandArg[]): Promise<any>;
    getex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    getex(...args: RedisCommandArg[]): Promise<any>;
    getrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    getrange(...args: RedisCommandArg[]): Promise<any>;
    getset(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    getset(...args: RedisCommandArg[]): Promise<any>;
    hexists(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hexists(...args: RedisCommandArg[]): Promise<any>;
    hgetall(key: string | Uint8Array, callback?: RedisCallback<Record<string, string>>): Promise<Record<string, string>>;
    hincrby(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hincrby(...args: RedisCommandArg[]): Promise<any>;
    hincrbyfloat(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hincrbyfloat(...args: RedisCommandArg[]): Promise<any>;
    hkeys(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hkeys(...args: RedisCommandArg[]): Promise<any>;
    hlen(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hlen(...args: RedisCommandArg[]): Promise<any>;
    hmget(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hmget(...args: RedisCommandArg[]): Promise<any>;
    hmset(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hmset(...args: RedisCommandArg[]): Promise<any>;
    hrandfield(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hrandfield(...args: RedisCommandArg[]): Promise<any>;
    hscan(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hscan(...args: RedisCommandArg[]): Promise<any>;
    hsetnx(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hsetnx(...args: RedisCommandArg[]): Promise<any>;
    hstrlen(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hstrlen(...args: RedisCommandArg[]): Promise<any>;
    hvals(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    hvals(...args: RedisCommandArg[]): Promise<any>;
    incrbyfloat(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    incrbyfloat(...args: RedisCommandArg[]): Promise<any>;
    info(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    info(...args: RedisCommandArg[]): Promise<any>;
    lastsave(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lastsave(...args: RedisCommandArg[]): Promise<any>;
    latency(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    latency(...args: RedisCommandArg[]): Promise<any>;
    lcs(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lcs(...args: RedisCommandArg[]): Promise<any>;
    lindex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lindex(...args: RedisCommandArg[]): Promise<any>;
    linsert(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    linsert(...args: RedisCommandArg[]): Promise<any>;
    llen(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    llen(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    blmove(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    blmove(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    blmpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    blmpop(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    blpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    blpop(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    brpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    brpop(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    brpoplpush(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    brpoplpush(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    bzmpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bzmpop(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    bzpopmax(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bzpopmax(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    bzpopmin(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    bzpopmin(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    wait(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    wait(...args: RedisCommandArg[]): Promise<any>;
    /** Blocks on a connection of its own: the client's other commands go on meanwhile. */
    waitaof(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    waitaof(...args: RedisCommandArg[]): Promise<any>;
    lmove(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lmove(...args: RedisCommandArg[]): Promise<any>;
    lmpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lmpop(...args: RedisCommandArg[]): Promise<any>;
    lolwut(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lolwut(...args: RedisCommandArg[]): Promise<any>;
    lpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lpop(...args: RedisCommandArg[]): Promise<any>;
    lpos(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lpos(...args: RedisCommandArg[]): Promise<any>;
    lpush(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lpush(...args: RedisCommandArg[]): Promise<any>;
    lpushx(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lpushx(...args: RedisCommandArg[]): Promise<any>;
    lrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lrange(...args: RedisCommandArg[]): Promise<any>;
    lrem(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lrem(...args: RedisCommandArg[]): Promise<any>;
    lset(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    lset(...args: RedisCommandArg[]): Promise<any>;
    ltrim(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    ltrim(...args: RedisCommandArg[]): Promise<any>;
    memory(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    memory(...args: RedisCommandArg[]): Promise<any>;
    migrate(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    migrate(...args: RedisCommandArg[]): Promise<any>;
    module(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    module(...args: RedisCommandArg[]): Promise<any>;
    move(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    move(...args: RedisCommandArg[]): Promise<any>;
    mset(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    mset(...args: RedisCommandArg[]): Promise<any>;
    msetnx(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    msetnx(...args: RedisCommandArg[]): Promise<any>;
    object(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    object(...args: RedisCommandArg[]): Promise<any>;
    persist(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    persist(...args: RedisCommandArg[]): Promise<any>;
    pexpireat(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pexpireat(...args: RedisCommandArg[]): Promise<any>;
    pexpiretime(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pexpiretime(...args: RedisCommandArg[]): Promise<any>;
    pfadd(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pfadd(...args: RedisCommandArg[]): Promise<any>;
    pfcount(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pfcount(...args: RedisCommandArg[]): Promise<any>;
    pfdebug(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pfdebug(...args: RedisCommandArg[]): Promise<any>;
    pfmerge(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pfmerge(...args: RedisCommandArg[]): Promise<any>;
    pfselftest(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pfselftest(...args: RedisCommandArg[]): Promise<any>;
    psetex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    psetex(...args: RedisCommandArg[]): Promise<any>;
    pubsub(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    pubsub(...args: RedisCommandArg[]): Promise<any>;
    randomkey(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    randomkey(...args: RedisCommandArg[]): Promise<any>;
    rename(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    rename(...args: RedisCommandArg[]): Promise<any>;
    renamenx(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    renamenx(...args: RedisCommandArg[]): Promise<any>;
    replicaof(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    replicaof(...args: RedisCommandArg[]): Promise<any>;
    restore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    restore(...args: RedisCommandArg[]): Promise<any>;
    'restore-asking'(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    'restore-asking'(...args: RedisCommandArg[]): Promise<any>;
    role(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    role(...args: RedisCommandArg[]): Promise<any>;
    rpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    rpop(...args: RedisCommandArg[]): Promise<any>;
    rpoplpush(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    rpoplpush(...args: RedisCommandArg[]): Promise<any>;
    rpush(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    rpush(...args: RedisCommandArg[]): Promise<any>;
    rpushx(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    rpushx(...args: RedisCommandArg[]): Promise<any>;
    sadd(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sadd(...args: RedisCommandArg[]): Promise<any>;
    save(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    save(...args: RedisCommandArg[]): Promise<any>;
    scard(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    scard(...args: RedisCommandArg[]): Promise<any>;
    script(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    script(...args: RedisCommandArg[]): Promise<any>;
    sdiff(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sdiff(...args: RedisCommandArg[]): Promise<any>;
    sdiffstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sdiffstore(...args: RedisCommandArg[]): Promise<any>;
    setbit(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    setbit(...args: RedisCommandArg[]): Promise<any>;
    setex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    setex(...args: RedisCommandArg[]): Promise<any>;
    setrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    setrange(...args: RedisCommandArg[]): Promise<any>;
    shutdown(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    shutdown(...args: RedisCommandArg[]): Promise<any>;
    sinter(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sinter(...args: RedisCommandArg[]): Promise<any>;
    sintercard(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sintercard(...args: RedisCommandArg[]): Promise<any>;
    sinterstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sinterstore(...args: RedisCommandArg[]): Promise<any>;
    sismember(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sismember(...args: RedisCommandArg[]): Promise<any>;
    slaveof(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    slaveof(...args: RedisCommandArg[]): Promise<any>;
    slowlog(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    slowlog(...args: RedisCommandArg[]): Promise<any>;
    smembers(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    smembers(...args: RedisCommandArg[]): Promise<any>;
    smismember(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    smismember(...args: RedisCommandArg[]): Promise<any>;
    smove(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    smove(...args: RedisCommandArg[]): Promise<any>;
    sort(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sort(...args: RedisCommandArg[]): Promise<any>;
    sort_ro(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sort_ro(...args: RedisCommandArg[]): Promise<any>;
    spop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    spop(...args: RedisCommandArg[]): Promise<any>;
    spublish(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    spublish(...args: RedisCommandArg[]): Promise<any>;
    srandmember(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    srandmember(...args: RedisCommandArg[]): Promise<any>;
    srem(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    srem(...args: RedisCommandArg[]): Promise<any>;
    sscan(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sscan(...args: RedisCommandArg[]): Promise<any>;
    strlen(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    strlen(...args: RedisCommandArg[]): Promise<any>;
    substr(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    substr(...args: RedisCommandArg[]): Promise<any>;
    sunion(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sunion(...args: RedisCommandArg[]): Promise<any>;
    sunionstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    sunionstore(...args: RedisCommandArg[]): Promise<any>;
    swapdb(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    swapdb(...args: RedisCommandArg[]): Promise<any>;
    time(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    time(...args: RedisCommandArg[]): Promise<any>;
    touch(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    touch(...args: RedisCommandArg[]): Promise<any>;
    xack(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xack(...args: RedisCommandArg[]): Promise<any>;
    xadd(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xadd(...args: RedisCommandArg[]): Promise<any>;
    xautoclaim(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xautoclaim(...args: RedisCommandArg[]): Promise<any>;
    xclaim(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xclaim(...args: RedisCommandArg[]): Promise<any>;
    xdel(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xdel(...args: RedisCommandArg[]): Promise<any>;
    xgroup(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xgroup(...args: RedisCommandArg[]): Promise<any>;
    xinfo(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xinfo(...args: RedisCommandArg[]): Promise<any>;
    xlen(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xlen(...args: RedisCommandArg[]): Promise<any>;
    xpending(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xpending(...args: RedisCommandArg[]): Promise<any>;
    xrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xrange(...args: RedisCommandArg[]): Promise<any>;
    xread(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xread(...args: RedisCommandArg[]): Promise<any>;
    xreadgroup(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xreadgroup(...args: RedisCommandArg[]): Promise<any>;
    xrevrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xrevrange(...args: RedisCommandArg[]): Promise<any>;
    xsetid(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xsetid(...args: RedisCommandArg[]): Promise<any>;
    xtrim(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    xtrim(...args: RedisCommandArg[]): Promise<any>;
    zadd(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zadd(...args: RedisCommandArg[]): Promise<any>;
    zcard(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zcard(...args: RedisCommandArg[]): Promise<any>;
    zcount(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zcount(...args: RedisCommandArg[]): Promise<any>;
    zdiff(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zdiff(...args: RedisCommandArg[]): Promise<any>;
    zdiffstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zdiffstore(...args: RedisCommandArg[]): Promise<any>;
    zincrby(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zincrby(...args: RedisCommandArg[]): Promise<any>;
    zinter(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zinter(...args: RedisCommandArg[]): Promise<any>;
    zintercard(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zintercard(...args: RedisCommandArg[]): Promise<any>;
    zinterstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zinterstore(...args: RedisCommandArg[]): Promise<any>;
    zlexcount(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zlexcount(...args: RedisCommandArg[]): Promise<any>;
    zmpop(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zmpop(...args: RedisCommandArg[]): Promise<any>;
    zmscore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zmscore(...args: RedisCommandArg[]): Promise<any>;
    zpopmax(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zpopmax(...args: RedisCommandArg[]): Promise<any>;
    zpopmin(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zpopmin(...args: RedisCommandArg[]): Promise<any>;
    zrandmember(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrandmember(...args: RedisCommandArg[]): Promise<any>;
    zrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrange(...args: RedisCommandArg[]): Promise<any>;
    zrangebylex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrangebylex(...args: RedisCommandArg[]): Promise<any>;
    zrangebyscore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrangebyscore(...args: RedisCommandArg[]): Promise<any>;
    zrangestore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrangestore(...args: RedisCommandArg[]): Promise<any>;
    zrank(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrank(...args: RedisCommandArg[]): Promise<any>;
    zrem(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrem(...args: RedisCommandArg[]): Promise<any>;
    zremrangebylex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zremrangebylex(...args: RedisCommandArg[]): Promise<any>;
    zremrangebyrank(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zremrangebyrank(...args: RedisCommandArg[]): Promise<any>;
    zremrangebyscore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zremrangebyscore(...args: RedisCommandArg[]): Promise<any>;
    zrevrange(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrevrange(...args: RedisCommandArg[]): Promise<any>;
    zrevrangebylex(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrevrangebylex(...args: RedisCommandArg[]): Promise<any>;
    zrevrangebyscore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrevrangebyscore(...args: RedisCommandArg[]): Promise<any>;
    zrevrank(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zrevrank(...args: RedisCommandArg[]): Promise<any>;
    zscan(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zscan(...args: RedisCommandArg[]): Promise<any>;
    zscore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zscore(...args: RedisCommandArg[]): Promise<any>;
    zunion(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zunion(...args: RedisCommandArg[]): Promise<any>;
    zunionstore(...args: [...args: RedisCommandArg[], callback: RedisCallback<any>]): Promise<any>;
    zunionstore(...args: RedisCommandArg[]): Promise<any>;
  }

  /**
   * A client for one Redis server over one pipelined, reconnecting socket: `call(name, ...args)`
   * reaches any command, and {@link RedisCommands} adds a method per command.
   *
   * @example
   * const { RedisClient } = require('@alova/storage-redis');
   * const client = new RedisClient({ host: 'localhost', port: 6379 });
   * await client.set('greeting', 'hello', 'PX', 60000);
   * await client.call('OBJECT', 'ENCODING', 'greeting');
   * client.get('greeting', (err, value) => console.log(err, value)); // a callback, as in ioredis
   * await client.quit();
   */
  interface RedisClient extends RedisCommands, RedisBufferCommands {}
  class RedisClient {
    /**
     * Connects (at once, unless `lazyConnect`) with ioredis-style options, to a URL, or to a
     * cluster (`{ nodes, options }`).
     * @throws {RedisStorageError} `ERR_INVALID_OPTION`
     */
    constructor(
      options?:
        | RedisClientConstructorOptions
        | string
        | { nodes: ClusterNode[]; options?: RedisClusterOptions & { scripts?: Record<string, RedisScriptDefinition> } }
    );
    /** The connection's state, named as in ioredis. */
    readonly status: RedisClientStatus;
    /** `'subscriber'` while the client has subscriptions (its other commands go on), else `'normal'`. */
    readonly mode: 'normal' | 'subscriber';
    /**
     * Connects a `lazyConnect` client; resolves once it is ready, rejects with the connection's
     * error. As in ioredis, a client that is connecting or connected already rejects.
     */
    connect(callback?: RedisCallback<void>): Promise<void>;
    // An EventEmitter (Node's, at run time), with ioredis's events: `wait`, `connecting`,
    // `connect`, `ready`, `error` (an Error with a `code`; with no listener it is logged, never
    // thrown), `close`, `reconnecting` (the delay in ms), `end`.
    on(event: 'error', listener: (err: RedisStorageError) => void): this;
    on(event: 'reconnecting', listener: (delay: number) => void): this;
    on(event: 'message' | 'smessage', listener: (channel: string, message: string) => void): this;
    on(event: 'messageBuffer' | 'smessageBuffer', listener: (channel: Buffer, message: Buffer) => void): this;
    on(event: 'pmessage', listener: (pattern: string, channel: string, message: string) => void): this;
    on(event: 'pmessageBuffer', listener: (pattern: string, channel: Buffer, message: Buffer) => void): this;
    on(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    once(event: 'error', listener: (err: RedisStorageError) => void): this;
    once(event: 'reconnecting', listener: (delay: number) => void): this;
    once(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    addListener(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    prependListener(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    off(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    removeListener(event: RedisClientEvent | string | symbol, listener: (...args: any[]) => void): this;
    removeAllListeners(event?: RedisClientEvent | string | symbol): this;
    emit(event: RedisClientEvent | string | symbol, ...args: any[]): boolean;
    listenerCount(event: RedisClientEvent | string | symbol): number;
    listeners(event: RedisClientEvent | string | symbol): Function[];
    /**
     * A pipeline: commands queued, sent together by `exec()`; `commands` may give them at once
     * (`[['set', 'k', 'v'], ['get', 'k']]`).
     */
    pipeline(commands?: Array<[string, ...RedisCommandArg[]]>): RedisPipeline;
    /**
     * A transaction: as a pipeline, sent as `MULTI` .. `EXEC`, atomic; `exec()` resolves `null`
     * when a key `watch()`ed before changed. On a cluster its keys must be in one slot (one
     * hash tag): it runs on that slot's master (`ERR_INVALID_ARG` otherwise).
     */
    multi(commands?: Array<[string, ...RedisCommandArg[]]>): RedisPipeline;
    /** True for a cluster client. */
    readonly isCluster: boolean;
    /**
     * A cluster's nodes as last read (at connect and by every `clear()`), optionally by role;
     * empty before the first connection and for a single server.
     * @default role 'all'
     */
    nodes(role?: 'master' | 'slave' | 'all'): Array<{ options: { host: string; port: number }; role: 'master' | 'slave' }>;
    /**
     * Sends any command with its arguments; resolves its reply. A function as the last argument
     * is a {@link RedisCallback}, called with the outcome.
     * @throws {RedisStorageError} (rejects) `ERR_REPLY` for an error reply, `ERR_INVALID_ARG`
     *   for a refused command or a function among the arguments, a connection error code otherwise.
     */
    call(command: string, ...args: [...args: RedisCommandArg[], callback: RedisCallback<unknown>]): Promise<unknown>;
    call(command: string, ...args: RedisCommandArg[]): Promise<unknown>;
    /** `call` with the reply's strings as Buffers (ioredis's `callBuffer`), for binary values. */
    callBuffer(command: string, ...args: [...args: RedisCommandArg[], callback: RedisCallback<unknown>]): Promise<unknown>;
    callBuffer(command: string, ...args: RedisCommandArg[]): Promise<unknown>;
    /**
     * Sends `QUIT` after the pending commands and closes; `status` becomes `'end'`. Resolves
     * within a second: what still waits then rejects with `ERR_CLOSED`.
     */
    quit(callback?: RedisCallback<'OK'>): Promise<'OK'>;
    /**
     * Closes the connection at once; every pending command rejects with `ERR_CLOSED`. With
     * `reconnect` true (ioredis's `disconnect(true)`), the connection is made again instead: what
     * was on it is sent again as `autoResendUnfulfilledCommands` says.
     */
    disconnect(reconnect?: boolean): void;
    /**
     * Stands for ioredis's socket, which lives in native code here: `end()` and `destroy()` drop
     * the connection as a socket closed under the client would (it is made again), `writable`
     * is true while it is ready.
     */
    readonly stream: { readonly writable: boolean; end(): void; destroy(): void };
    /**
     * `WATCH keys`: the next `multi().exec()` resolves `null` (running nothing) when a watched
     * key changed before it, as in ioredis. The watch and that transaction live on a connection
     * of their own (the client's other commands go on the shared one); should it be lost in
     * between, the server forgot the watch and `exec()` rejects with `ERR_CONNECTION` instead of
     * running unwatched. Not on a cluster yet (`ERR_INVALID_ARG`).
     */
    watch(...keys: [...keys: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<'OK'>]): Promise<'OK'>;
    watch(...keys: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<'OK'>;
    /** `UNWATCH`: forgets the watched keys. */
    unwatch(callback?: RedisCallback<'OK'>): Promise<'OK'>;
    /**
     * `SELECT db`, as in ioredis: every later command of this client, and every connection made
     * for it later (reconnections, blocking commands, `watch()`), runs on `db`; emits `select`.
     * @throws {RedisStorageError} (rejects) `ERR_INVALID_ARG` on the adapter's client (its
     *   connection carries the cache: use the adapter's `db` option) and on a cluster;
     *   `ERR_REPLY` for an index the server does not have (the database stays).
     */
    select(db: number | string, callback?: RedisCallback<'OK'>): Promise<'OK'>;
    /**
     * A new client with this client's options and `defineCommand` scripts, as ioredis's
     * `duplicate()`; `override` replaces some options (on a cluster: `duplicate(nodes?,
     * options?)`). The adapter's client duplicates with the adapter's connection options.
     */
    duplicate(override?: RedisClientConstructorOptions | ClusterNode[], clusterOptions?: RedisClusterOptions): RedisClient;
    /**
     * ioredis's `monitor()`: resolves a {@link RedisMonitor} fed every command the server runs,
     * on a connection of its own. Not on a cluster (`ERR_INVALID_ARG`).
     */
    monitor(callback?: RedisCallback<RedisMonitor>): Promise<RedisMonitor>;
    /**
     * Subscribes to channels; resolves how many channels and patterns the client is subscribed
     * to, as ioredis does. Messages come as `message` (`channel`, `message` strings) and
     * `messageBuffer` (Buffers) events. Subscriptions run on a connection of their own (made on
     * the first one, made again and subscribed again after a reconnection), so the client's
     * other commands go on as before: in ioredis a subscribed client refuses them. Needs Redis 6
     * or later (the subscriber connection speaks RESP3).
     * @throws {RedisStorageError} (rejects) `ERR_INVALID_ARG` for no channel, a connection error
     *   code when the subscriber connection cannot be made, `ERR_CLOSED` after `quit()`.
     */
    subscribe(...channels: [...channels: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    subscribe(...channels: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /** Unsubscribes from channels (from every channel when none is named); resolves how many subscriptions are left. */
    unsubscribe(...channels: [...channels: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    unsubscribe(...channels: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /** Subscribes to glob-style patterns; messages come as `pmessage` (`pattern`, `channel`, `message`) and `pmessageBuffer` events. */
    psubscribe(...patterns: [...patterns: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    psubscribe(...patterns: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /** Unsubscribes from patterns (from every pattern when none is named). */
    punsubscribe(...patterns: [...patterns: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    punsubscribe(...patterns: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /**
     * Subscribes to sharded channels (Redis 7; on a cluster, on the master of each channel's
     * slot); resolves how many sharded channels the client is subscribed to. Messages come as
     * `smessage` and `smessageBuffer` events.
     */
    ssubscribe(...channels: [...channels: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    ssubscribe(...channels: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /** Unsubscribes from sharded channels (from every one when none is named). */
    sunsubscribe(...channels: [...channels: Array<string | Uint8Array | Array<string | Uint8Array>>, callback: RedisCallback<number>]): Promise<number>;
    sunsubscribe(...channels: Array<string | Uint8Array | Array<string | Uint8Array>>): Promise<number>;
    /**
     * ioredis's `defineCommand`: adds `client[name](...keys, ...args, callback?)`, sent as
     * `EVALSHA` (and `EVAL` on `NOSCRIPT`); pipelines and transactions made afterwards have it
     * too. Type the method by augmenting `RedisClient` (`interface RedisClient { name(...): ... }`).
     */
    defineCommand(name: string, definition: RedisScriptDefinition): void;
    /**
     * ioredis's `scanStream`: the keys, an array per `SCAN` step. Throws `ERR_INVALID_ARG` on a
     * cluster (ioredis's `Cluster` has none): scan each master with a client of its own.
     */
    scanStream(options?: RedisScanStreamOptions): RedisScanStream;
    /** ioredis's `sscanStream`: the set's members, an array per `SSCAN` step. */
    sscanStream(key: string, options?: RedisScanStreamOptions): RedisScanStream;
    /** ioredis's `hscanStream`: `[field, value, ...]` per `HSCAN` step. */
    hscanStream(key: string, options?: RedisScanStreamOptions): RedisScanStream;
    /** ioredis's `zscanStream`: `[member, score, ...]` per `ZSCAN` step. */
    zscanStream(key: string, options?: RedisScanStreamOptions): RedisScanStream;
    /** The Buffer forms of the scan streams: each step's array holds Buffers. */
    scanBufferStream(options?: RedisScanStreamOptions): RedisScanStream;
    sscanBufferStream(key: string | Uint8Array, options?: RedisScanStreamOptions): RedisScanStream;
    hscanBufferStream(key: string | Uint8Array, options?: RedisScanStreamOptions): RedisScanStream;
    zscanBufferStream(key: string | Uint8Array, options?: RedisScanStreamOptions): RedisScanStream;
  }

  /**
   * What `client.monitor()` resolves: an EventEmitter with `monitor` events `(time, args,
   * source, database)` as ioredis emits them, and `end` when it ends. It keeps the process
   * alive until `disconnect()`.
   */
  interface RedisMonitor {
    readonly mode: 'monitor';
    readonly status: 'connecting' | 'ready' | 'end';
    on(event: 'monitor', listener: (time: string, args: string[], source: string, database: string) => void): this;
    on(event: 'end', listener: () => void): this;
    once(event: 'monitor', listener: (time: string, args: string[], source: string, database: string) => void): this;
    once(event: 'end', listener: () => void): this;
    off(event: 'monitor' | 'end', listener: (...args: any[]) => void): this;
    /** Ends the monitor and its connection. */
    disconnect(): void;
    /** As `disconnect()`; resolves 'OK'. */
    quit(callback?: RedisCallback<'OK'>): Promise<'OK'>;
  }

  /** The adapter class itself, as a named export: `import { RedisStorageAdapter } from '@alova/storage-redis'`. */
  const RedisStorageAdapter: typeof RedisStorageAdapterClass;
  /** The adapter's instance type, as a named export. */
  type RedisStorageAdapter<
    T extends RedisStorageAdapterConfig = RedisStorageAdapterOptions
  > = RedisStorageAdapterInstance<T>;
}

// Aliases that let the namespace re-export the class under its own name (not exported).
declare const RedisStorageAdapterClass: typeof RedisStorageAdapter;
type RedisStorageAdapterInstance<
  T extends RedisStorageAdapter.RedisStorageAdapterConfig = RedisStorageAdapter.RedisStorageAdapterOptions
> = RedisStorageAdapter<T>;

export = RedisStorageAdapter;
