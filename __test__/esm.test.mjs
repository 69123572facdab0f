// The ESM face: default and named imports through the package's own name (self-reference via
// "exports"), the same classes as the CommonJS entry, and a working round trip.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import RedisStorageAdapter, { RedisStorageAdapter as Named, RedisClient } from '@alova/storage-redis';
import * as namespace from '@alova/storage-redis';

const require = createRequire(import.meta.url);
const { startRedis } = require('./servers.js');

describe('ESM entry', () => {
  let server;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  it('default and named exports are the adapter class', () => {
    assert.equal(typeof RedisStorageAdapter, 'function');
    assert.equal(Named, RedisStorageAdapter);
    assert.equal(namespace.default, RedisStorageAdapter);
    assert.equal(typeof RedisClient, 'function');
  });

  it('are the same classes as the CommonJS entry', () => {
    const cjs = require('@alova/storage-redis');
    assert.equal(cjs, RedisStorageAdapter);
    assert.equal(cjs.RedisStorageAdapter, RedisStorageAdapter);
    assert.equal(cjs.RedisClient, RedisClient);
  });

  it('a dynamic import gives the same module', async () => {
    const mod = await import('@alova/storage-redis');
    assert.equal(mod.default, RedisStorageAdapter);
    assert.equal(mod.RedisStorageAdapter, RedisStorageAdapter);
  });

  it('works end to end', async () => {
    const adapter = new RedisStorageAdapter({ host: server.host, port: server.port, keyPrefix: 'esm:' });
    try {
      assert.equal(adapter.name, 'adapterRedis');
      assert.ok(adapter.client instanceof RedisClient);
      await adapter.set('k', { esm: true });
      assert.deepEqual(await adapter.get('k'), { esm: true });
      assert.equal(await adapter.client.get('esm:k'), '{"esm":true}');
      const named = new Named({ client: adapter.client, keyPrefix: 'esm:' });
      assert.deepEqual(await named.get('k'), { esm: true });
    } finally {
      await adapter.close();
    }
  });
});
