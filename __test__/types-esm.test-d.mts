// Type tests of index.d.ts from an ES module, as in the README's alova app. Checked by
// `tsc --noEmit -p __test__`; never executed.

import RedisStorageAdapter, { RedisStorageAdapter as Named, RedisClient } from '@alova/storage-redis';
import type {
  RedisStorageAdapterOptions,
  RedisClusterStorageAdapterOptions,
  RedisStorageInstance,
  RedisStorageError,
  ErrorCode,
} from '@alova/storage-redis';
import { createAlova, type AlovaRequestAdapter } from 'alova';
// Not `alova/fetch` or `alova/server`: their own typings do not compile under `nodenext` with
// `skipLibCheck: false` (a directory import, an untyped dependency), and skipping library checks
// would skip our index.d.ts too. A typed stand-in for the fetch adapter does the same job here.
const requestAdapter: AlovaRequestAdapter<RequestInit, Response, Headers> = () => ({
  response: async () => new Response('{"id":1}'),
  headers: async () => new Headers(),
  abort() {},
});

type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
function expectTrue<T extends true>(_check?: T): void {}

expectTrue<Equal<typeof Named, typeof RedisStorageAdapter>>();

const options: RedisStorageAdapterOptions = { host: 'localhost', port: 6379, keyPrefix: 'esm:' };
const l2Cache = new RedisStorageAdapter(process.env.REDIS_URL);
expectTrue<Equal<typeof l2Cache.client, RedisClient>>();

const alova = createAlova({
  baseURL: 'http://localhost:3000',
  requestAdapter,
  l2Cache,
  cacheFor: { GET: { mode: 'restore', expire: 60000 } },
});
// The adapter keeps its own type inside alova.
expectTrue<Equal<typeof alova.l2Cache, typeof l2Cache>>();

const todo = await alova.Get<{ id: number }>('/todo/1');
void todo;
// What alova's `atomize` strategy reads.
await alova.l2Cache.locker.lock('todo');
await alova.l2Cache.locker.unlock('todo');

const client = new RedisClient(options);
const shared: RedisStorageInstance<RedisClient> = { client, keyPrefix: 'shared:' };
const sharing = new RedisStorageAdapter(shared);
expectTrue<Equal<typeof sharing.client, RedisClient>>();

const cluster: RedisClusterStorageAdapterOptions = { nodes: [{ host: 'localhost', port: 7000 }] };
void cluster;

const code: ErrorCode = 'ERR_LOCK_NOT_ACQUIRED';
const err = new Error('x') as RedisStorageError;
void [code, err.code];

await sharing.close();
