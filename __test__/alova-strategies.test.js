'use strict';

// alova 3's server strategies on the adapter (issue 14): `createRateLimiter`,
// `createCaptchaProvider` and `atomize` (alova/server), hit-source invalidation (`hitSource`) and
// `invalidateCache`, each across two alova instances with an adapter of their own on one Redis
// (as two processes of one service would be), against a real redis-server and a real Redis
// Cluster, with a real HTTP server behind alova's fetch adapter.
//
// What alova 3.5 (alova/server 1.0) keeps in the l2 adapter, under the adapter's keyPrefix:
// - createRateLimiter: `[consumedPoints, expireTs]` under `${limiter keyPrefix || 'rlflx'}:${key}`,
//   read then written (get + set) on each consume; `expireTs = -1` means "never expires" (a
//   `duration: 0` limiter, `block(key, 0)`).
// - createCaptchaProvider: `[{ code, resetTs }, expireTs]` under `${keyPrefix || 'alova-captcha'}:${key}`.
// - hitSource: `hss.<name or method key>` and `hsr.<regexp>` objects listing the cache keys to
//   remove, and the `$$hsrs` list of regexps.
// - atomize: no data; it locks the channel names with `l2Cache.locker`.
//
// alova's autoHitCache is set to 'self' for this file: with the default 'global', one process
// runs a hit-source invalidation through every adapter and memory cache it knows, so the second
// alova instance here would also clear the first one's memory cache, which a second process never
// can. 'self' (the instance's own caches) is what each of two processes does.
//
// Where alova's own behaviour is surprising, the test says "alova limitation" and pins what
// happens (the README's "alova's server strategies" section lists them).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { createAlova, invalidateCache, globalConfig } = require('alova');
const adapterFetch = require('alova/fetch');
const { createRateLimiter, createCaptchaProvider, atomize } = require('alova/server');
// The class alova's limiter rejects with (rate-limiter-flexible, alova/server's dependency).
const { RateLimiterRes } = require(require.resolve('rate-limiter-flexible', { paths: [require.resolve('alova/server')] }));
const RedisStorageAdapter = require('..');
const { closeAll, existsCount, keyNodes, rejectsWithCode, scanAll, topologies, waitFor, within } = require('./helpers');

const PREFIX = 'strat:';
const EXPIRE = 60000;
const NAMESPACE = 'svc'; // the same alova id in every "process"

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

before(() => globalConfig({ autoHitCache: 'self' }));
after(() => globalConfig({ autoHitCache: 'global' }));

for (const topo of topologies()) describe(`alova's server strategies (${topo.name})`, () => {
  let redis;
  let observer;
  let httpServer;
  let baseURL;
  const hits = new Map();
  /** Captcha codes the HTTP server was asked to deliver, by key. */
  const delivered = new Map();
  /** What the /atom endpoint saw: requests sharing a channel that overlapped. */
  const atom = { active: new Map(), conflicts: [], maxActive: 0, total: 0 };
  /** Requests waiting at the /barrier endpoint. */
  const barrier = [];
  const open = [];
  const alovas = [];

  const hitsOf = (path) => hits.get(path) || 0;
  const redisKey = (key, prefix = PREFIX) => topo.redisKey(prefix, key);
  /** The stored value of adapter key `key`, parsed, or undefined. */
  const stored = async (key, prefix) => {
    const raw = await observer.get(redisKey(key, prefix));
    return raw === null ? undefined : JSON.parse(raw);
  };
  const pttl = (key, prefix) => observer.pttl(redisKey(key, prefix));
  const exists = (key, prefix) => observer.exists(redisKey(key, prefix));
  const gone = (key, what) => waitFor(async () => (await exists(key)) === 0, { timeout: 10000, what: `${what} to expire in Redis` });

  /** One "process": its own adapter (own connection) and its own alova instance. */
  function processWith({ keyPrefix = PREFIX, cacheFor = { GET: { mode: 'restore', expire: EXPIRE } }, l1Cache } = {}) {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(redis, { keyPrefix }));
    open.push(adapter);
    const alova = createAlova({
      id: NAMESPACE,
      baseURL,
      requestAdapter: adapterFetch(),
      responded: (response) => response.json(),
      l2Cache: adapter,
      cacheFor,
      cacheLogger: false,
      ...(l1Cache ? { l1Cache } : {}),
    });
    alovas.push(alova);
    return { adapter, alova };
  }

  /** Two processes whose connections are up. */
  async function twoProcesses(opts) {
    const pair = [processWith(opts), processWith(opts)];
    await Promise.all(pair.map((p) => p.adapter.get('warm-up')));
    return pair;
  }

  /** An adapter no alova instance has as l2Cache. */
  function bareAdapter(keyPrefix) {
    const adapter = new RedisStorageAdapter(topo.adapterOptions(redis, { keyPrefix }));
    open.push(adapter);
    return adapter;
  }

  /** The Redis key of an alova cache entry. */
  const entryKey = (method) => redisKey(`$a.${NAMESPACE}${method.key}`);

  before(async () => {
    redis = await topo.start();
    observer = topo.observer(redis, open);
    httpServer = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (chunk) => chunks.push(chunk));
      req.on('end', () => {
        const path = new URL(req.url, 'http://x').pathname;
        hits.set(path, hitsOf(path) + 1);
        let body = null;
        try {
          body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : null;
        } catch {
          body = null;
        }
        const reply = (value) => {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(value));
        };
        if (path === '/captcha') {
          if (!delivered.has(body.key)) delivered.set(body.key, []);
          delivered.get(body.key).push(body.code);
          reply({ sent: true });
        } else if (path === '/atom') {
          atom.total += 1;
          for (const [other, channels] of atom.active) {
            if (body.channels.some((c) => channels.includes(c))) atom.conflicts.push(`${body.id} during ${other}`);
          }
          atom.active.set(body.id, body.channels);
          atom.maxActive = Math.max(atom.maxActive, atom.active.size);
          setTimeout(() => {
            atom.active.delete(body.id);
            reply({ id: body.id });
          }, 40);
        } else if (path === '/barrier') {
          // Answers once two requests are in at the same time (or, alone, after 5 s).
          const waiter = { reply, timer: null };
          if (barrier.length > 0) {
            for (const w of barrier.splice(0).concat(waiter)) {
              clearTimeout(w.timer);
              w.reply({ together: true });
            }
          } else {
            waiter.timer = setTimeout(() => {
              barrier.splice(barrier.indexOf(waiter), 1);
              reply({ together: false });
            }, 5000);
            barrier.push(waiter);
          }
        } else {
          reply({ path, hit: hitsOf(path), method: req.method });
        }
      });
    });
    await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    baseURL = `http://127.0.0.1:${httpServer.address().port}`;
  });

  after(async () => {
    // Unregister the alova instances first: invalidateCache() would otherwise reach closed adapters.
    for (const alova of alovas.splice(0)) alova.destroy();
    await closeAll(open);
    httpServer.closeAllConnections();
    await new Promise((resolve) => httpServer.close(resolve));
    await redis?.stop();
  });

  describe('set() with an expiry timestamp of 0 or less (issue 14)', () => {
    it('stores [3, -1] and [x, 0] with no TTL, and writes nothing for a positive timestamp in the past', async () => {
      const adapter = bareAdapter(PREFIX);
      await adapter.set('exp:never', [3, -1]);
      assert.deepEqual(await adapter.get('exp:never'), [3, -1]);
      assert.equal(await pttl('exp:never'), -1);
      await adapter.set('exp:zero', ['x', 0]);
      assert.equal(await pttl('exp:zero'), -1);

      // A record that had a TTL loses it when rewritten as "never expires".
      await adapter.set('exp:rewritten', [1, Date.now() + EXPIRE]);
      assert.ok((await pttl('exp:rewritten')) > 0);
      await adapter.set('exp:rewritten', [2, -1]);
      assert.equal(await pttl('exp:rewritten'), -1);

      await adapter.set('exp:past', [1, Date.now() - 1000]);
      await adapter.set('exp:1970', [1, 5]);
      assert.equal(await existsCount(observer, redisKey('exp:past'), redisKey('exp:1970')), 0);
      assert.equal(await adapter.get('exp:past'), undefined);
    });
  });

  describe('createRateLimiter', () => {
    let sequence = 0;
    /**
     * One request through `rateLimit` (the limited method passed through `wrap`): 'pass', or
     * 'limited' when the limiter refused it.
     */
    async function attempt(rateLimit, proc, path, key, wrap = (method) => method) {
      try {
        // A body of its own: alova shares a request in flight with an identical one (same id and key).
        await wrap(rateLimit(proc.alova.Post(path, { n: (sequence += 1) }), { key })).send();
        return 'pass';
      } catch (err) {
        if (err instanceof RateLimiterRes) return 'limited';
        throw err;
      }
    }

    it('counts the points of two processes in one record and refuses over the limit', async () => {
      const [a, b] = await twoProcesses();
      // Each process makes its limiter from the same options, as two processes would.
      const options = { points: 3, duration: EXPIRE, keyPrefix: 'rl-points' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      const outcomes = [];
      for (let i = 0; i < 5; i += 1) {
        outcomes.push(await attempt(i % 2 === 0 ? limitA : limitB, i % 2 === 0 ? a : b, '/rl/points', 'user-1'));
      }
      assert.deepEqual(outcomes, ['pass', 'pass', 'pass', 'limited', 'limited']);
      assert.equal(hitsOf('/rl/points'), 3, 'a refused request reached the HTTP server');

      const [consumed, expireAt] = await stored('rl-points:user-1');
      assert.equal(consumed, 5);
      assert.ok(expireAt > Date.now() && expireAt <= Date.now() + EXPIRE);
      const ttl = await pttl('rl-points:user-1');
      assert.ok(ttl > 0 && ttl <= EXPIRE, `PTTL ${ttl}`);

      // Either process reads the shared state; the refusal says how much is left.
      const state = await limitB(b.alova.Post('/rl/points'), { key: 'user-1' }).get();
      assert.equal(state.consumedPoints, 5);
      assert.equal(state.remainingPoints, 0);
      await assert.rejects(limitA(a.alova.Post('/rl/points'), { key: 'user-1' }).send(), (err) => {
        assert.ok(err instanceof RateLimiterRes);
        assert.equal(err.remainingPoints, 0);
        assert.ok(err.msBeforeNext > 0 && err.msBeforeNext <= EXPIRE, `msBeforeNext ${err.msBeforeNext}`);
        return true;
      });
      // Another key has its own count.
      assert.equal(await attempt(limitB, b, '/rl/points', 'user-2'), 'pass');
    });

    it('starts a new window once the duration has passed: the record expires in Redis', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 1, duration: 2000, keyPrefix: 'rl-window' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      assert.equal(await attempt(limitA, a, '/rl/window', 'u'), 'pass');
      assert.equal(await attempt(limitB, b, '/rl/window', 'u'), 'limited');
      const ttl = await pttl('rl-window:u');
      assert.ok(ttl > 0 && ttl <= 2000, `PTTL ${ttl}`);
      await gone('rl-window:u', 'the limiter record');
      assert.equal(await attempt(limitB, b, '/rl/window', 'u'), 'pass');
      assert.equal(await attempt(limitA, a, '/rl/window', 'u'), 'limited');
      assert.equal(hitsOf('/rl/window'), 2);
    });

    it('duration 0 is a lifetime quota: [points, -1] is stored with no TTL, and 3 of 5 requests pass', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 3, duration: 0, keyPrefix: 'rl-life' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      const outcomes = [];
      for (let i = 0; i < 5; i += 1) {
        outcomes.push(await attempt(i % 2 === 0 ? limitA : limitB, i % 2 === 0 ? a : b, '/rl/life', 'u'));
      }
      assert.deepEqual(outcomes, ['pass', 'pass', 'pass', 'limited', 'limited']);
      assert.equal(hitsOf('/rl/life'), 3);
      assert.deepEqual(await stored('rl-life:u'), [5, -1]);
      assert.equal(await pttl('rl-life:u'), -1);
      await assert.rejects(limitB(b.alova.Post('/rl/life'), { key: 'u' }).send(), (err) => err.msBeforeNext === -1);
    });

    it('alova limitation: a duration under 1000 ms rounds down to 0 s, a lifetime quota', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 1, duration: 500, keyPrefix: 'rl-round' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      assert.equal(await attempt(limitA, a, '/rl/round', 'u'), 'pass');
      assert.equal(await attempt(limitB, b, '/rl/round', 'u'), 'limited');
      assert.deepEqual(await stored('rl-round:u'), [2, -1]);
      assert.equal(await pttl('rl-round:u'), -1);
    });

    it('block(ms) bans the key in every process until the record expires', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 5, duration: EXPIRE, keyPrefix: 'rl-block' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      await limitA(a.alova.Post('/rl/block'), { key: 'u' }).block(2000);
      const [points, expireAt] = await stored('rl-block:u');
      assert.equal(points, 6);
      assert.ok(expireAt > Date.now());
      const ttl = await pttl('rl-block:u');
      assert.ok(ttl > 0 && ttl <= 2000, `PTTL ${ttl}`);
      assert.equal(await attempt(limitB, b, '/rl/block', 'u'), 'limited');
      await gone('rl-block:u', 'the block');
      assert.equal(await attempt(limitB, b, '/rl/block', 'u'), 'pass');
      assert.equal(hitsOf('/rl/block'), 1);
    });

    it('block(0) on a lifetime limiter bans for good (no TTL) in every process; delete() lifts it', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 2, duration: 0, keyPrefix: 'rl-ban' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      await limitA(a.alova.Post('/rl/ban'), { key: 'u' }).block(0);
      assert.deepEqual(await stored('rl-ban:u'), [3, -1]);
      assert.equal(await pttl('rl-ban:u'), -1);
      assert.equal(await attempt(limitB, b, '/rl/ban', 'u'), 'limited');
      assert.equal(await attempt(limitA, a, '/rl/ban', 'u'), 'limited');
      assert.equal(hitsOf('/rl/ban'), 0);
      await limitB(b.alova.Post('/rl/ban'), { key: 'u' }).delete();
      assert.equal(await exists('rl-ban:u'), 0);
      assert.equal(await attempt(limitA, a, '/rl/ban', 'u'), 'pass');
    });

    it('alova limitation: a limiter with a duration overwrites a block(key, 0) record (the ban lets the next request through)', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 2, duration: EXPIRE, keyPrefix: 'rl-ban-dur' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      await limitA(a.alova.Post('/rl/ban-dur'), { key: 'u' }).block(0);
      assert.deepEqual(await stored('rl-ban-dur:u'), [3, -1]);
      assert.equal(await pttl('rl-ban-dur:u'), -1);
      // alova's _upsert keeps an old count only while its expiry is in the future; -1 is not,
      // so the first consume starts a new window.
      assert.equal(await attempt(limitB, b, '/rl/ban-dur', 'u'), 'pass');
      const [consumed, expireAt] = await stored('rl-ban-dur:u');
      assert.equal(consumed, 1);
      assert.ok(expireAt > Date.now());
      assert.ok((await pttl('rl-ban-dur:u')) > 0);
    });

    it('alova limitation: on a lifetime limiter, a timed block(ms) becomes permanent at the next request', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 2, duration: 0, keyPrefix: 'rl-life-block' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      await limitA(a.alova.Post('/rl/life-block'), { key: 'u' }).block(EXPIRE);
      assert.equal((await stored('rl-life-block:u'))[0], 3);
      assert.ok((await pttl('rl-life-block:u')) > 0);
      assert.equal(await attempt(limitB, b, '/rl/life-block', 'u'), 'limited');
      // The consume rewrote the record as [points, -1]: the block no longer ends.
      assert.deepEqual(await stored('rl-life-block:u'), [4, -1]);
      assert.equal(await pttl('rl-life-block:u'), -1);
    });

    it('alova limitation: the count is read, then written, so requests of two processes at once can both pass a limit of 1', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 1, duration: EXPIRE, keyPrefix: 'rl-race' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      // Writes are held a moment (as on a busy server or network), so that both processes' reads
      // come before either write on every run; reads go on.
      for (const node of await keyNodes(observer)) await node.call('CLIENT', 'PAUSE', '300', 'WRITE');
      const outcomes = await within(
        10000,
        Promise.all([attempt(limitA, a, '/rl/race', 'u'), attempt(limitB, b, '/rl/race', 'u')]),
        'two requests at once',
      );
      assert.deepEqual(outcomes, ['pass', 'pass']);
      assert.equal(hitsOf('/rl/race'), 2);
      // Both wrote a count of 1: one request was lost from the count.
      assert.equal((await stored('rl-race:u'))[0], 1);
      assert.equal(await attempt(limitA, a, '/rl/race', 'u'), 'limited');
    });

    it('atomize with a channel per key makes the count exact: of two requests at once, one passes a limit of 1', async () => {
      const [a, b] = await twoProcesses();
      const options = { points: 1, duration: EXPIRE, keyPrefix: 'rl-atomic' };
      const [limitA, limitB] = [createRateLimiter(options), createRateLimiter(options)];
      const exclusive = (method) => atomize(method, { channel: 'rl-atomic:u', timeout: 30000 });
      for (const node of await keyNodes(observer)) await node.call('CLIENT', 'PAUSE', '300', 'WRITE');
      const outcomes = await within(
        30000,
        Promise.all([
          attempt(limitA, a, '/rl/atomic', 'u', exclusive),
          attempt(limitB, b, '/rl/atomic', 'u', exclusive),
        ]),
        'two atomized requests at once',
      );
      assert.deepEqual(outcomes.sort(), ['limited', 'pass']);
      assert.equal(hitsOf('/rl/atomic'), 1);
      assert.equal((await stored('rl-atomic:u'))[0], 2);
      assert.equal(await observer.exists('rl-atomic:u'), 0, 'the lock key was left behind');
    });
  });

  describe('createCaptchaProvider', () => {
    const send = (provider, proc, key) =>
      provider.sendCaptcha((code, k) => proc.alova.Post('/captcha', { code, key: k }), { key });

    it('sends a code through the HTTP server; the other process verifies it once; a wrong code leaves it', async () => {
      const [a, b] = await twoProcesses();
      const options = { expireTime: EXPIRE, keyPrefix: 'cap-verify' };
      const [captchaA, captchaB] = [createCaptchaProvider({ ...options, store: a.adapter }), createCaptchaProvider({ ...options, store: b.adapter })];
      assert.deepEqual(await send(captchaA, a, 'phone-1'), { sent: true });
      const [code] = delivered.get('phone-1');
      assert.match(code, /^\d{4}$/);
      const [record, expireAt] = await stored('cap-verify:phone-1');
      assert.equal(record.code, code);
      assert.ok(record.resetTs > Date.now() && expireAt >= record.resetTs);
      const ttl = await pttl('cap-verify:phone-1');
      assert.ok(ttl > 0 && ttl <= EXPIRE, `PTTL ${ttl}`);

      const wrong = code === '0000' ? '1111' : '0000';
      assert.equal(await captchaB.verifyCaptcha(wrong, 'phone-1'), false);
      // alova limitation: a wrong code is not counted and leaves the code valid.
      assert.equal(await exists('cap-verify:phone-1'), 1);
      assert.equal(await captchaB.verifyCaptcha(code, 'phone-2'), false, 'another key has no code');
      assert.equal(await captchaB.verifyCaptcha(code, 'phone-1'), true);
      assert.equal(await exists('cap-verify:phone-1'), 0, 'a verified code is removed');
      assert.equal(await captchaA.verifyCaptcha(code, 'phone-1'), false, 'a code is good once');
    });

    it('refuses a resend within resetTime in every process; after it, sends a new code (or the stored one with resendFormStore)', async () => {
      const [a, b] = await twoProcesses();
      let n = 0;
      const codeSet = () => `code-${(n += 1)}`; // distinct codes, so that "a new code" is certain
      const options = { resetTime: 800, expireTime: EXPIRE, keyPrefix: 'cap-resend', codeSet };
      const [captchaA, captchaB] = [createCaptchaProvider({ ...options, store: a.adapter }), createCaptchaProvider({ ...options, store: b.adapter })];
      await send(captchaA, a, 'phone-r');
      await assert.rejects(send(captchaB, b, 'phone-r'), /Cannot send captcha yet/);
      assert.deepEqual(delivered.get('phone-r'), ['code-1'], 'a refused resend reached the HTTP server');
      const { resetTs } = (await stored('cap-resend:phone-r'))[0];
      await sleep(Math.max(0, resetTs - Date.now()) + 20);
      await send(captchaB, b, 'phone-r');
      assert.deepEqual(delivered.get('phone-r'), ['code-1', 'code-2']);
      assert.equal(await captchaA.verifyCaptcha('code-1', 'phone-r'), false, 'the replaced code');
      assert.equal(await captchaA.verifyCaptcha('code-2', 'phone-r'), true);

      const resending = { ...options, keyPrefix: 'cap-resend-same', resendFormStore: true };
      const [sameA, sameB] = [createCaptchaProvider({ ...resending, store: a.adapter }), createCaptchaProvider({ ...resending, store: b.adapter })];
      await send(sameA, a, 'phone-s');
      const first = delivered.get('phone-s')[0];
      const { resetTs: again } = (await stored('cap-resend-same:phone-s'))[0];
      await sleep(Math.max(0, again - Date.now()) + 20);
      await send(sameB, b, 'phone-s');
      assert.deepEqual(delivered.get('phone-s'), [first, first]);
      assert.equal(await sameA.verifyCaptcha(first, 'phone-s'), true);
    });

    it('a code expires in Redis after expireTime: no process verifies it, and a new one may be sent', async () => {
      const [a, b] = await twoProcesses();
      const options = { resetTime: 100, expireTime: 1500, keyPrefix: 'cap-expiry' };
      const [captchaA, captchaB] = [createCaptchaProvider({ ...options, store: a.adapter }), createCaptchaProvider({ ...options, store: b.adapter })];
      await send(captchaA, a, 'phone-e');
      const [code] = delivered.get('phone-e');
      const ttl = await pttl('cap-expiry:phone-e');
      assert.ok(ttl > 0 && ttl <= 1500, `PTTL ${ttl}`);
      await gone('cap-expiry:phone-e', 'the captcha code');
      assert.equal(await captchaB.verifyCaptcha(code, 'phone-e'), false);
      await send(captchaB, b, 'phone-e');
      assert.equal(delivered.get('phone-e').length, 2);
    });
  });

  describe('hitSource and invalidateCache', () => {
    it('by name: a request of one process removes the entries another process cached in Redis', async () => {
      const [a, b] = await twoProcesses();
      const target = a.alova.Get('/hs/profile', { hitSource: 'updateProfile' });
      await target.send();
      assert.equal(await observer.exists(entryKey(target)), 1);
      assert.deepEqual(await stored('hss.updateProfile'), { [`$a.${NAMESPACE}${target.key}`]: 0 });

      await b.alova.Post('/hs/update-profile', { name: 'x' }, { name: 'somethingElse' }).send();
      assert.equal(await observer.exists(entryKey(target)), 1, 'another name removed the entry');
      await b.alova.Post('/hs/update-profile', { name: 'x' }, { name: 'updateProfile' }).send();
      assert.equal(await observer.exists(entryKey(target)), 0);
      assert.equal(await exists('hss.updateProfile'), 0);

      // A third process asks the HTTP server again.
      const { alova: c } = processWith();
      assert.equal((await c.Get('/hs/profile').send()).hit, 2);
      // alova limitation: the process that cached the entry keeps its memory (l1) copy until
      // its expire; only Redis was invalidated.
      const stale = a.alova.Get('/hs/profile', { hitSource: 'updateProfile' });
      assert.equal((await stale.send()).hit, 1);
      assert.equal(stale.fromCache, true);
    });

    it('with a pass-through memory cache (l1Cache), a process reads Redis each time: another process\'s invalidation applies at once', async () => {
      const passThrough = () => ({ set() {}, get() {}, remove() {}, clear() {} });
      const a = processWith({ l1Cache: passThrough() });
      const b = processWith({ l1Cache: passThrough() });
      const read = () => a.alova.Get('/hs/fresh', { hitSource: 'updateFresh' });
      assert.equal((await read().send()).hit, 1);
      const cached = read();
      assert.equal((await cached.send()).hit, 1);
      assert.equal(cached.fromCache, true, 'not read from Redis');
      await b.alova.Post('/hs/update-fresh', {}, { name: 'updateFresh' }).send();
      const fresh = read();
      assert.equal((await fresh.send()).hit, 2);
      assert.equal(fresh.fromCache, false);
    });

    it('by regexp: a name matching the regexp of another process\'s entry removes it', async () => {
      const [a, b] = await twoProcesses();
      const target = a.alova.Get('/hs/user', { hitSource: /^updateUser/ });
      await target.send();
      assert.deepEqual(await stored('$$hsrs'), ['^updateUser']);
      assert.ok(await exists('hsr.^updateUser'));

      await b.alova.Post('/hs/user', {}, { name: 'deleteUser' }).send();
      assert.equal(await observer.exists(entryKey(target)), 1, 'a name that does not match removed the entry');
      await b.alova.Post('/hs/user', {}, { name: 'updateUserName' }).send();
      assert.equal(await observer.exists(entryKey(target)), 0);
      assert.equal(await exists('hsr.^updateUser'), 0);
      assert.deepEqual(await stored('$$hsrs'), []);
    });

    it('by method: the same request sent by another process removes the entry', async () => {
      const [a, b] = await twoProcesses();
      const target = a.alova.Get('/hs/orders', { hitSource: a.alova.Post('/hs/orders', { item: 1 }) });
      await target.send();
      assert.equal(await observer.exists(entryKey(target)), 1);
      await b.alova.Post('/hs/orders', { item: 2 }).send();
      assert.equal(await observer.exists(entryKey(target)), 1, 'another request body removed the entry');
      await b.alova.Post('/hs/orders', { item: 1 }).send();
      assert.equal(await observer.exists(entryKey(target)), 0);
    });

    it('invalidateCache(method) in one process removes the entry another process cached', async () => {
      const [a, b] = await twoProcesses();
      const target = a.alova.Get('/inv/one');
      await target.send();
      await a.alova.Get('/inv/two').send();
      await invalidateCache(b.alova.Get('/inv/one'));
      assert.equal(await observer.exists(entryKey(target)), 0);
      assert.equal(await observer.exists(entryKey(a.alova.Get('/inv/two'))), 1);
      const { alova: c } = processWith();
      assert.equal((await c.Get('/inv/one').send()).hit, 2);
    });

    it('invalidateCache() clears every registered adapter\'s prefix: rate-limit counts and captcha codes too, unless they have an adapter of their own', async () => {
      const [a, b] = await twoProcesses();
      await a.alova.Get('/inv/all').send();
      const limit = createRateLimiter({ points: 1, duration: 0, keyPrefix: 'rl-inv' });
      await limit(a.alova.Post('/inv/limited'), { key: 'u' }).send();
      const captcha = createCaptchaProvider({ store: b.adapter, keyPrefix: 'cap-inv' });
      await captcha.sendCaptcha((code, key) => b.alova.Post('/captcha', { code, key }), { key: 'phone-inv' });
      // The same strategies on an adapter that is no alova instance's l2Cache (another prefix).
      const guard = bareAdapter('strat-guard:');
      const guardedLimit = createRateLimiter({ points: 1, duration: 0, keyPrefix: 'rl-inv', storage: guard });
      await guardedLimit(a.alova.Post('/inv/limited'), { key: 'u' }).send();
      const guardedCaptcha = createCaptchaProvider({ store: guard, keyPrefix: 'cap-inv' });
      await guardedCaptcha.sendCaptcha((code, key) => b.alova.Post('/captcha', { code, key }), { key: 'phone-inv' });
      assert.equal(await existsCount(observer, redisKey('rl-inv:u'), redisKey('cap-inv:phone-inv')), 2);

      await invalidateCache();

      assert.deepEqual(await scanAll(observer, `${PREFIX}*`), []);
      assert.deepEqual(
        (await scanAll(observer, 'strat-guard:*')).sort(),
        [topo.redisKey('strat-guard:', 'cap-inv:phone-inv'), topo.redisKey('strat-guard:', 'rl-inv:u')].sort(),
      );
      // The lifetime quota of the l2Cache's limiter was reset; the guarded one holds.
      assert.equal(await limit(b.alova.Post('/inv/limited'), { key: 'u' }).then(() => 'pass'), 'pass');
      await assert.rejects(guardedLimit(b.alova.Post('/inv/limited'), { key: 'u' }).send(), RateLimiterRes);
      const [code] = delivered.get('phone-inv').slice(-1);
      assert.equal(await guardedCaptcha.verifyCaptcha(code, 'phone-inv'), true);
    });

    it('invalidateCache() rejects ERR_CLOSED while an instance whose adapter was closed is registered; alova.destroy() first', async () => {
      const [live, closed] = await twoProcesses({ keyPrefix: 'strat-closed:' });
      const method = live.alova.Get('/inv/closed');
      await method.send();
      assert.equal(await observer.exists(topo.redisKey('strat-closed:', `$a.${NAMESPACE}${method.key}`)), 1);
      await closed.adapter.close();

      await rejectsWithCode(within(10000, invalidateCache(), 'invalidateCache()'), 'ERR_CLOSED');
      // alova started every clear(): the live adapter's prefix is cleared all the same.
      await waitFor(async () => (await scanAll(observer, 'strat-closed:*')).length === 0, {
        what: 'the live adapter to clear its prefix',
      });

      closed.alova.destroy(); // unregisters its adapter from alova
      await live.alova.Get('/inv/closed').send();
      await within(10000, invalidateCache(), 'invalidateCache()');
      assert.deepEqual(await scanAll(observer, 'strat-closed:*'), []);
    });
  });

  describe('tags', () => {
    it('alova limitation: an entry with expire: Infinity and a tag is never a hit for another process', async () => {
      const forever = { GET: { mode: 'restore', expire: Infinity, tag: 'v1' } };
      const [a, b] = await twoProcesses({ cacheFor: forever });
      const method = a.alova.Get('/tag/forever');
      await method.send();
      // alova drops the missing expiry and the tag takes its place: [data, 'v1'], no TTL.
      const [data, second, third] = await stored(`$a.${NAMESPACE}${method.key}`);
      assert.equal(data.hit, 1);
      assert.equal(second, 'v1');
      assert.equal(third, undefined);
      assert.equal(await observer.pttl(entryKey(method)), -1);
      // Read back, the tag is undefined: a mismatch, so alova removes the entry and asks again.
      const other = b.alova.Get('/tag/forever');
      assert.equal((await other.send()).hit, 2);
      assert.equal(other.fromCache, false);

      // A finite expire (however long) with the same tag is shared.
      const long = { GET: { mode: 'restore', expire: 365 * 24 * 3600 * 1000, tag: 'v1' } };
      const [c, d] = await twoProcesses({ cacheFor: long });
      await c.alova.Get('/tag/long').send();
      const shared = d.alova.Get('/tag/long');
      assert.equal((await shared.send()).hit, 1);
      assert.equal(shared.fromCache, true);
    });
  });

  describe('atomize', () => {
    it('channel arrays: requests sharing any channel exclude each other across processes; disjoint ones run together', async () => {
      const [a, b] = await twoProcesses();
      const atomic = (proc, id, channel) =>
        atomize(proc.alova.Post('/atom', { id, channels: channel }), { channel, timeout: 30000 }).send();
      const sends = [];
      for (let i = 0; i < 4; i += 1) {
        sends.push(atomic(a, `a${i}`, ['orders', 'stock']));
        sends.push(atomic(b, `b${i}`, ['stock', 'payments']));
      }
      const results = await within(60000, Promise.all(sends), 'atomized requests');
      assert.deepEqual(results.map((r) => r.id).sort(), ['a0', 'a1', 'a2', 'a3', 'b0', 'b1', 'b2', 'b3']);
      assert.equal(atom.total, 8);
      assert.deepEqual(atom.conflicts, []);
      assert.equal(atom.maxActive, 1);

      // No channel in common: both requests are at the server at the same time.
      const together = await within(
        30000,
        Promise.all([
          atomize(a.alova.Post('/barrier', { id: 'x' }), { channel: ['alpha', 'beta'], timeout: 30000 }).send(),
          atomize(b.alova.Post('/barrier', { id: 'y' }), { channel: ['gamma', 'delta'], timeout: 30000 }).send(),
        ]),
        'disjoint atomized requests',
      );
      assert.deepEqual(together, [{ together: true }, { together: true }]);
      const channels = ['orders', 'stock', 'payments', 'alpha', 'beta', 'gamma', 'delta'];
      assert.equal(await existsCount(observer, channels), 0, 'a lock key was left behind');
    });
  });
});
