'use strict';

// The reference for the benchmark: the original `@alova/storage-redis` rebuilt from its description
// (SPEC.md, "The adapter" and "The locker"): ioredis for storage, @sesamecare-oss/redlock for locks.
// It keeps the original's behaviour, defects included, because the point is to measure what users
// of the original get today:
//
// - one ioredis connection, with ioredis's defaults (no auto-pipelining);
// - `set` stringifies the whole value and, when `value[1]` is a number, sends `PX expire - now`
//   (nothing when that is <= 0); `get` parses, or returns undefined for a missing key;
// - the locker keeps one `Map` resource -> Lock per adapter. `unlock` releases and only *then*
//   deletes the entry, so when another caller of the same adapter acquires the resource in
//   between, the delete throws away the new holder's entry, its `unlock` finds nothing, and the key
//   stays until `redlockTTL` runs out. Callers waiting on a held lock sleep out `retryDelay`
//   (200 ms +- 100 ms) between attempts and give up after `retryCount` (10) retries;
// - locks are never extended; `clear()` only logs.
//
// `close()` is not the original's (it had none: users called `client.quit()`); the benchmark uses
// it to end a child process cleanly.

const Redis = require('ioredis');
const { Redlock } = require('@sesamecare-oss/redlock');

class ReferenceLocker {
  constructor(client, { options, filter, ttl = 5000 } = {}) {
    this.options = options;
    this.ttl = ttl;
    const clients = typeof filter === 'function' ? [client].filter(filter) : [client];
    if (clients.length === 0) throw new Error('[storage:redis]No redis client available');
    this.redlock = new Redlock(clients, options);
    this.lockMap = new Map();
  }

  async lock(resource) {
    const resources = Array.isArray(resource) ? resource : [resource];
    const lock = await this.redlock.acquire(resources, this.ttl);
    for (const r of resources) this.lockMap.set(r, lock);
  }

  async unlock(resource) {
    const resources = Array.isArray(resource) ? resource : [resource];
    for (const r of resources) {
      const lock = this.lockMap.get(r);
      if (lock) {
        await lock.release();
        this.lockMap.delete(r);
      }
    }
  }
}

class ReferenceAdapter {
  /**
   * @param {object} config ioredis RedisOptions plus keyPrefix, redlockOptions, redlockFilter,
   *   redlockTTL; or `{ client }` with an ioredis Redis.
   */
  constructor(config = {}) {
    this.name = 'adapterRedis';
    this.config = config;
    if (config.client) {
      this.client = config.client;
    } else {
      const { keyPrefix, redlockOptions, redlockFilter, redlockTTL, ...redisOptions } = config;
      this.client = new Redis(redisOptions);
    }
    this.keyPrefix = config.keyPrefix || 'alova:';
    this._locker = undefined;
  }

  get locker() {
    if (!this._locker) {
      const { redlockOptions, redlockFilter, redlockTTL } = this.config;
      this._locker = new ReferenceLocker(this.client, {
        options: redlockOptions,
        filter: redlockFilter,
        ttl: redlockTTL,
      });
    }
    return this._locker;
  }

  async set(key, value) {
    const now = Date.now();
    const ttlArgs = Array.isArray(value) && typeof value[1] === 'number' ? ['PX', value[1] - now] : [];
    if (ttlArgs.length === 0 || ttlArgs[1] > 0) {
      await this.client.set(this.keyPrefix + key, JSON.stringify(value), ...ttlArgs);
    }
  }

  async get(key) {
    const data = await this.client.get(this.keyPrefix + key);
    return data ? JSON.parse(data) : undefined;
  }

  async remove(key) {
    await this.client.del(this.keyPrefix + key);
  }

  async clear() {
    console.error('[adapter:redis]redis cache clear is not allowed');
  }

  /** Benchmark only: closes the connection (the original left that to `client.quit()`). */
  async close() {
    await this.client.quit();
  }
}

module.exports = ReferenceAdapter;
module.exports.ReferenceAdapter = ReferenceAdapter;
module.exports.ReferenceLocker = ReferenceLocker;
