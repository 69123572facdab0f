// Redis 7 command names that RedisClient offers as methods (`client.get(k)`),
// generated from `COMMAND LIST`; `client.call(name, ...args)` reaches any command.
// Commands that would change the state of the shared, pipelined connection are left out
// (the core refuses them in `call` too). Blocking commands are in: they run on a connection of
// their own.
'use strict';
module.exports = [
  'acl', 'append', 'blmove', 'blmpop', 'blpop', 'brpop', 'brpoplpush', 'bzmpop', 'bzpopmax',
  'bzpopmin', 'wait', 'waitaof', 'bgrewriteaof', 'bgsave', 'bitcount', 'bitfield', 'bitfield_ro', 'bitop',
  'bitpos', 'client', 'cluster', 'command', 'config', 'copy', 'dbsize', 'debug', 'decr', 'decrby',
  'del', 'dump', 'echo', 'eval', 'eval_ro', 'evalsha', 'evalsha_ro', 'exists', 'expire',
  'expireat', 'expiretime', 'failover', 'fcall', 'fcall_ro', 'flushall', 'flushdb', 'function',
  'geoadd', 'geodist', 'geohash', 'geopos', 'georadius', 'georadius_ro', 'georadiusbymember',
  'georadiusbymember_ro', 'geosearch', 'geosearchstore', 'get', 'getbit', 'getdel', 'getex',
  'getrange', 'getset', 'hdel', 'hexists', 'hget', 'hgetall', 'hincrby', 'hincrbyfloat', 'hkeys',
  'hlen', 'hmget', 'hmset', 'hrandfield', 'hscan', 'hset', 'hsetnx', 'hstrlen', 'hvals', 'incr',
  'incrby', 'incrbyfloat', 'info', 'keys', 'lastsave', 'latency', 'lcs', 'lindex', 'linsert',
  'llen', 'lmove', 'lmpop', 'lolwut', 'lpop', 'lpos', 'lpush', 'lpushx', 'lrange', 'lrem', 'lset',
  'ltrim', 'memory', 'mget', 'migrate', 'module', 'move', 'mset', 'msetnx', 'object', 'persist',
  'pexpire', 'pexpireat', 'pexpiretime', 'pfadd', 'pfcount', 'pfdebug', 'pfmerge', 'pfselftest',
  'ping', 'psetex', 'pttl', 'publish', 'pubsub', 'randomkey', 'rename', 'renamenx', 'replicaof',
  'restore', 'restore-asking', 'role', 'rpop', 'rpoplpush', 'rpush', 'rpushx', 'sadd', 'save',
  'scan', 'scard', 'script', 'sdiff', 'sdiffstore', 'set', 'setbit', 'setex', 'setnx', 'setrange',
  'shutdown', 'sinter', 'sintercard', 'sinterstore', 'sismember', 'slaveof', 'slowlog', 'smembers',
  'smismember', 'smove', 'sort', 'sort_ro', 'spop', 'spublish', 'srandmember', 'srem', 'sscan',
  'strlen', 'substr', 'sunion', 'sunionstore', 'swapdb', 'time', 'touch', 'ttl', 'type', 'unlink',
  'xack', 'xadd', 'xautoclaim', 'xclaim', 'xdel', 'xgroup', 'xinfo', 'xlen', 'xpending', 'xrange',
  'xread', 'xreadgroup', 'xrevrange', 'xsetid', 'xtrim', 'zadd', 'zcard', 'zcount', 'zdiff',
  'zdiffstore', 'zincrby', 'zinter', 'zintercard', 'zinterstore', 'zlexcount', 'zmpop', 'zmscore',
  'zpopmax', 'zpopmin', 'zrandmember', 'zrange', 'zrangebylex', 'zrangebyscore', 'zrangestore',
  'zrank', 'zrem', 'zremrangebylex', 'zremrangebyrank', 'zremrangebyscore', 'zrevrange',
  'zrevrangebylex', 'zrevrangebyscore', 'zrevrank', 'zscan', 'zscore', 'zunion', 'zunionstore',
];
