// ESM entry: the CommonJS build re-exported, so both forms share one class.
import cjs from './index.js';

export default cjs;
export const RedisStorageAdapter = cjs.RedisStorageAdapter;
export const RedisClient = cjs.RedisClient;
