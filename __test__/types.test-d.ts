// Type tests of index.d.ts from a CommonJS TypeScript file. Checked by `tsc --noEmit -p __test__`
// (npm test runs it); never executed. Every `@ts-expect-error` line must fail to compile: if the
// types stop rejecting it, tsc reports the directive as unused.

import RedisStorageAdapter = require('@alova/storage-redis');
import DefaultImport from '@alova/storage-redis';
import { RedisStorageAdapter as NamedAdapter, RedisClient } from '@alova/storage-redis';
import Redis, { Cluster } from 'ioredis';
import type { AlovaGlobalCacheAdapter, AlovaStorageAdapterLocker } from 'alova';

/** True when A and B are the same type (not merely assignable). */
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
function expectTrue<T extends true>(_check?: T): void {}

// --- One class, three ways to import it ------------------------------------------------------

expectTrue<Equal<typeof DefaultImport, typeof RedisStorageAdapter>>();
expectTrue<Equal<typeof NamedAdapter, typeof RedisStorageAdapter>>();
expectTrue<Equal<typeof RedisStorageAdapter.RedisClient, typeof RedisClient>>();
const viaNamedType: RedisStorageAdapter.RedisStorageAdapter = new NamedAdapter();
const viaClassType: RedisStorageAdapter = viaNamedType;

// --- The three option shapes, and a URL ------------------------------------------------------

// The seed's example: port as a numeric string.
const basic = new RedisStorageAdapter({
  host: 'localhost',
  port: '6379',
  username: 'default',
  password: 'my-top-secret',
  db: 0,
  keyPrefix: 'my-app:',
});
expectTrue<Equal<typeof basic.client, RedisClient>>();

const everything = new RedisStorageAdapter({
  url: 'rediss://cache.internal:6380/1',
  host: 'cache.internal',
  port: 6380,
  path: undefined,
  tls: { ca: ['-----BEGIN CERTIFICATE-----'], cert: new Uint8Array(), key: 'pem', rejectUnauthorized: true, servername: 'cache.internal' },
  connectTimeout: 10000,
  commandTimeout: 500,
  connectionName: 'alova-app',
  keepAlive: 0,
  noDelay: true,
  lazyConnect: false,
  enableOfflineQueue: true,
  maxRetriesPerRequest: null,
  retryStrategy: (times) => (times > 10 ? null : Math.min(times * 50, 2000)),
  autoResendUnfulfilledCommands: true,
  // accepted no-ops
  family: 4,
  showFriendlyErrorStack: false,
  enableReadyCheck: true,
  autoResubscribe: true,
  enableAutoPipelining: true,
  autoPipeliningIgnoredPrefixes: [],
  stringNumbers: false,
  disconnectTimeout: 2000,
  maxLoadingRetryTime: 10000,
  offlineQueue: true,
  // adapter keys
  keyPrefix: 'alova:',
  redlockOptions: {
    driftFactor: 0.01,
    retryCount: -1,
    retryDelay: 200,
    retryJitter: 100,
    automaticExtensionThreshold: 500,
    db: 0,
  },
  redlockFilter: (node) => node.options.port !== 6380,
  redlockTTL: 10000,
});
expectTrue<Equal<typeof everything.client, RedisClient>>();

new RedisStorageAdapter('redis://default:secret@localhost:6379/2');
new RedisStorageAdapter('/run/redis/redis.sock');
new RedisStorageAdapter();
new RedisStorageAdapter({ tls: true });

// Options held in a variable of the declared type.
const fromEnv: RedisStorageAdapter.RedisStorageAdapterOptions = { port: process.env.REDIS_PORT, db: 1 };
const fromEnvAdapter = new RedisStorageAdapter(fromEnv);
expectTrue<Equal<typeof fromEnvAdapter.client, RedisClient>>();

// { nodes, options }: typed now (the runtime refuses it until cluster support lands).
const clusterOptions: RedisStorageAdapter.RedisClusterStorageAdapterOptions = {
  nodes: [{ host: 'localhost', port: 6379 }, 6380, 'localhost:6381'],
  options: { redisOptions: { password: 'secret' }, scaleReads: 'master' },
  keyPrefix: 'cluster:',
};
const clusterAdapter = new RedisStorageAdapter(clusterOptions);
expectTrue<Equal<typeof clusterAdapter.client, RedisClient>>();

// { client }: `adapter.client` has the type of the client passed in.
declare const ioredis: Redis;
declare const ioredisCluster: Cluster;
const own = new RedisClient({ host: 'localhost', lazyConnect: true });
const sharingOurs = new RedisStorageAdapter({ client: own, keyPrefix: 'shared:' });
expectTrue<Equal<typeof sharingOurs.client, RedisClient>>();
const sharingIoredis = new RedisStorageAdapter({ client: ioredis, redlockTTL: 3000 });
expectTrue<Equal<typeof sharingIoredis.client, Redis>>();
const sharingCluster = new RedisStorageAdapter({ client: ioredisCluster });
expectTrue<Equal<typeof sharingCluster.client, Cluster>>();
const annotated: RedisStorageAdapter<RedisStorageAdapter.RedisStorageInstance<Redis>> = sharingIoredis;
expectTrue<Equal<typeof annotated.client, Redis>>();
// The original's FilterRedisClient shape (an ioredis client as the parameter) still fits.
new RedisStorageAdapter({ client: ioredis, redlockFilter: (node: Redis) => node.options.port !== 6380 });

// --- Wrong options are type errors -----------------------------------------------------------

// @ts-expect-error port is a number or a numeric string
new RedisStorageAdapter({ port: {} });
// @ts-expect-error tls is true or an object
new RedisStorageAdapter({ tls: 'yes' });
// @ts-expect-error unknown option (a typo of host)
new RedisStorageAdapter({ hots: 'localhost' });
// @ts-expect-error unknown option beside known ones
new RedisStorageAdapter({ host: 'localhost', prot: 6379 });
// @ts-expect-error db is a number
new RedisStorageAdapter({ db: '0' });
new RedisStorageAdapter({ sentinels: [{ host: 'localhost', port: 26379 }], name: 'mymaster', sentinelPassword: 'pw', role: 'slave' });
// @ts-expect-error role is 'master' or 'slave'
new RedisStorageAdapter({ sentinels: [{ port: 26379 }], name: 'mymaster', role: 'primary' });
new RedisStorageAdapter({ sentinels: [{ port: 26379 }], name: 'mymaster', failoverDetector: true });
new RedisStorageAdapter({ sentinels: [{ port: 26379 }], name: 'mymaster', sentinelRetryStrategy: (times) => times * 10, preferredSlaves: (slaves) => slaves[0] ? { ip: slaves[0].ip, port: slaves[0].port } : null });
// @ts-expect-error sentinelRetryStrategy is a function
new RedisStorageAdapter({ sentinels: [{ port: 26379 }], name: 'mymaster', sentinelRetryStrategy: 10 });
// @ts-expect-error socketTimeout is a number of milliseconds
new RedisStorageAdapter({ socketTimeout: '1000' });
new RedisStorageAdapter({ socketTimeout: 1000, reconnectOnError: (err) => err.message.startsWith('READONLY') });
// @ts-expect-error retryStrategy is a function
new RedisStorageAdapter({ retryStrategy: 'fast' });
// @ts-expect-error redlockFilter returns a boolean
new RedisStorageAdapter({ redlockFilter: () => 'yes' });
// @ts-expect-error unknown redlock setting
new RedisStorageAdapter({ redlockOptions: { retries: 3 } });
// @ts-expect-error connection options cannot be combined with client
new RedisStorageAdapter({ client: own, host: 'localhost' });
// @ts-expect-error client must be a client
new RedisStorageAdapter({ client: 'redis://localhost' });
// @ts-expect-error a cluster needs nodes as an array
new RedisStorageAdapter({ nodes: 'localhost:6379' });
// @ts-expect-error the URL is a string
new RedisStorageAdapter(6379);

// --- Members ---------------------------------------------------------------------------------

async function members(adapter: RedisStorageAdapter): Promise<void> {
  expectTrue<Equal<typeof adapter.name, 'adapterRedis'>>();
  expectTrue<Equal<typeof adapter.keyPrefix, string>>();
  expectTrue<Equal<ReturnType<typeof adapter.set>, Promise<void>>>();
  expectTrue<Equal<ReturnType<typeof adapter.remove>, Promise<void>>>();
  expectTrue<Equal<ReturnType<typeof adapter.clear>, Promise<void>>>();
  expectTrue<Equal<ReturnType<typeof adapter.close>, Promise<void>>>();
  const user = await adapter.get<{ id: number }>('user');
  expectTrue<Equal<typeof user, { id: number } | undefined>>();
  await adapter.set('user', [{ id: 1 }, Date.now() + 60000]);
  // @ts-expect-error keys are strings
  await adapter.get(1);

  await adapter.locker.lock('orders');
  await adapter.locker.lock(['orders', 'payments']);
  await adapter.locker.unlock(['orders', 'payments']);
  const retryCount: number = adapter.locker.options.retryCount;
  // @ts-expect-error resources are strings
  await adapter.locker.lock(42);

  // alova's interfaces, structurally.
  const l2Cache: AlovaGlobalCacheAdapter = adapter;
  const locker: AlovaStorageAdapterLocker = adapter.locker;

  try {
    await adapter.clear();
  } catch (e) {
    const err = e as RedisStorageAdapter.RedisStorageError;
    if (err.code === 'ERR_CLEAR_REFUSED' || err.code === 'ERR_TIMEOUT') console.error(err.message);
    // @ts-expect-error not one of the codes
    if (err.code === 'ERR_NOPE') console.error(err.message);
  }
}

// --- RedisClient -----------------------------------------------------------------------------

async function client(): Promise<void> {
  const c = new RedisClient('redis://localhost:6379');
  new RedisClient();
  new RedisClient({ path: '/tmp/redis.sock', db: 2, lazyConnect: true });
  // ioredis's client-level keyPrefix.
  new RedisClient({ keyPrefix: 'x:' });
  // @ts-expect-error adapter keys are not client options
  new RedisClient({ redlockTTL: 1000 });

  expectTrue<Equal<typeof c.status, 'wait' | 'connecting' | 'ready' | 'reconnecting' | 'end'>>();
  const reply: unknown = await c.call('GET', 'key');
  await c.call('SET', 'key', 1, Buffer.from('v'), ['PX', 1000]);
  const value: string | null = await c.get('key');
  const ok = await c.set('key', 'value', 'PX', 60000);
  const ttl: number = await c.pttl('key');
  const removed: number = await c.del('a', 'b', ['c', 'd']);
  await c.hset('hash', { field: 'value', n: 1 });
  await c.hset('hash', new Map([['field', 'value']]));
  const [cursor, keys] = await c.scan(0, 'MATCH', 'alova:*', 'COUNT', 100);
  await c.xadd('stream', '*', 'field', 'value');
  await c.zadd('zset', 1, 'member');
  await c['restore-asking'];
  // @ts-expect-error no such command
  await c.notACommand('x');
  // @ts-expect-error the command name is a string
  await c.call(42);
  const quit: 'OK' = await c.quit();
  const none: void = c.disconnect();
  void [reply, value, ok, ttl, removed, cursor, keys, quit, none];
}

void [viaClassType, members, client];

// Independent lock voters.
new RedisStorageAdapter({ host: 'localhost', redlockNodes: ['redis://a:6379', { host: 'b', port: 6379 }] });
// @ts-expect-error redlockNodes entries are URLs or options
new RedisStorageAdapter({ redlockNodes: [5] });

// Redis Cluster.
const clustered = new RedisStorageAdapter({
  nodes: [{ host: 'localhost', port: 7000 }, 7001, 'localhost:7002'],
  options: { redisOptions: { password: 'x' }, scaleReads: 'slave', maxRedirections: 8, natMap: { 'a:1': { host: 'b', port: 2 } } },
  spreadKeys: true,
});
const clusterNodes: Array<{ options: { host: string; port: number }; role: 'master' | 'slave' }> = clustered.client.nodes('master');
void clusterNodes;
// @ts-expect-error scaleReads is 'master' | 'slave' | 'all'
new RedisStorageAdapter({ nodes: [7000], options: { scaleReads: 'x' } });
// @ts-expect-error a cluster node's db is 0
new RedisStorageAdapter({ nodes: [7000], options: { redisOptions: { db: 3 } } });

// RedisClient is an EventEmitter with ioredis's events, and connect() as in ioredis.
const events = new RedisStorageAdapter({ lazyConnect: true });
events.client.on('error', (err) => {
  const code: string | undefined = err.code;
  void code;
});
events.client.on('reconnecting', (delay: number) => void delay).once('ready', () => {});
const connected: Promise<void> = events.client.connect();
void connected;

// pipeline() and multi() chain and exec() as in ioredis.
const piped: Promise<Array<[Error | null, unknown?]> | null> = events.client.pipeline().set('k', 'v').get('k').exec();
void piped;
events.client.multi([['incr', 'n']]).incr('n').exec((err, results) => void [err, results]);

// Buffer forms, pub/sub and watch (issue 11).
{
  const bc = new RedisStorageAdapter.RedisClient({ port: 6379 });
  const b1: Promise<any> = bc.getBuffer('k');
  const b2: Promise<unknown> = bc.callBuffer('GET', 'k');
  bc.pipeline().getBuffer('k').hgetallBuffer('h').callBuffer('get', 'k');
  const n: Promise<number> = bc.subscribe('a', 'b');
  bc.psubscribe('p*', (err, count) => void [err, count]);
  bc.ssubscribe(['s1', 's2']);
  bc.on('message', (channel: string, message: string) => void [channel, message]);
  bc.on('pmessageBuffer', (pattern: string, channel: Buffer, message: Buffer) => void [pattern, channel, message]);
  const w: Promise<'OK'> = bc.watch('k');
  const u: Promise<'OK'> = bc.unwatch();
  void [b1, b2, n, w, u];
}

// duplicate(), monitor(), select() (issue 11).
{
  const c = new RedisStorageAdapter.RedisClient({ port: 6379 });
  const d: RedisClient = c.duplicate({ db: 2 });
  const s: Promise<'OK'> = c.select(1);
  c.monitor().then((m) => {
    m.on('monitor', (time: string, args: string[], source: string, database: string) => void [time, args, source, database]);
    m.disconnect();
  });
  void [d, s];
}
