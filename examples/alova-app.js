'use strict';

// An alova app whose GET responses are cached in Redis (alova's `l2Cache`).
//
//   REDIS_URL=redis://localhost:6379 node examples/alova-app.js
//   npm run demo     # the same, against a throwaway redis-server it starts and stops
//
// Two alova instances with the same `id` stand in for two processes of one service (another
// process would behave the same): the first one misses and asks the HTTP server; the second one
// has an empty memory cache, finds the response in Redis and never reaches the HTTP server.

const http = require('node:http');
const { createAlova } = require('alova');
const adapterFetch = require('alova/fetch');
const RedisStorageAdapter = require('@alova/storage-redis');

const CACHE_FOR_MS = 60000;

/** A small JSON API that counts the requests it serves. */
function startApi() {
  const api = { hits: 0, server: null, baseURL: '' };
  api.server = http.createServer((req, res) => {
    api.hits += 1;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ id: 1, title: 'Write the README', servedAt: new Date().toISOString() }));
  });
  return new Promise((resolve) => {
    api.server.listen(0, '127.0.0.1', () => {
      api.baseURL = `http://127.0.0.1:${api.server.address().port}`;
      resolve(api);
    });
  });
}

/** One "process" of the service: its own alova instance and its own Redis adapter. */
function createService(baseURL) {
  const l2Cache = new RedisStorageAdapter(process.env.REDIS_URL);
  const alova = createAlova({
    // The cache namespace: the same id in every process of a service, so they share entries.
    id: 'todo-service',
    baseURL,
    requestAdapter: adapterFetch(),
    responded: (response) => response.json(),
    // alova's own console report of cache hits; this example prints what happened itself.
    cacheLogger: false,
    l2Cache,
    // 'restore': keep GET responses in l2Cache (Redis) as well as in memory.
    cacheFor: { GET: { mode: 'restore', expire: CACHE_FOR_MS } },
  });
  return { alova, l2Cache };
}

async function main() {
  if (!process.env.REDIS_URL) {
    console.error('Set REDIS_URL (e.g. redis://localhost:6379), or run `npm run demo`.');
    process.exitCode = 1;
    return;
  }
  const api = await startApi();
  const first = createService(api.baseURL);
  const second = createService(api.baseURL);
  try {
    console.log(`HTTP API at ${api.baseURL}, Redis at ${process.env.REDIS_URL.replace(/\/\/[^@/]*@/, '//***@')}`);

    const getTodo = (service) => service.alova.Get('/todos/1');

    const a = await getTodo(first);
    console.log(`1. first instance:  ${JSON.stringify(a)}`);
    console.log(`   miss -> the HTTP server was asked (requests served: ${api.hits})`);

    const method = getTodo(second);
    const b = await method;
    console.log(`2. second instance: ${JSON.stringify(b)}`);
    console.log(
      api.hits === 1
        ? `   hit  -> served from Redis, the HTTP server was not asked (requests served: ${api.hits})`
        : `   the HTTP server was asked again (requests served: ${api.hits}): not a Redis hit`
    );

    // alova names a cache entry '$a.' + the alova instance's id + the method's key; the adapter
    // stores it under keyPrefix + that name.
    const cacheKey = `$a.${second.alova.id}${method.key}`;
    const redisKey = second.l2Cache.keyPrefix + cacheKey;
    const ttl = await second.l2Cache.client.pttl(redisKey);
    console.log(`3. Redis key ${JSON.stringify(redisKey)}`);
    console.log(`   expires in ${ttl} ms (cacheFor: ${CACHE_FOR_MS} ms)`);

    if (api.hits !== 1 || ttl <= 0 || ttl > CACHE_FOR_MS) {
      throw new Error('the second request was not served from Redis as expected');
    }
    await second.l2Cache.remove(cacheKey);
  } finally {
    await Promise.all([first.l2Cache.close(), second.l2Cache.close()]);
    await new Promise((resolve) => api.server.close(resolve));
  }
  console.log('Closed the adapters and the HTTP server.');
}

main().catch((err) => {
  console.error(err.code ? `${err.code}: ${err.message}` : err);
  process.exitCode = 1;
});
