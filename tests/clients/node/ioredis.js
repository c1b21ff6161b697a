'use strict';
// ioredis with `sentinels`, default options.
const Redis = require('ioredis');
const { emit, parseArgs, writeLoop } = require('./common');

async function main() {
  const { nodes, key, seconds, password } = parseArgs();
  const redis = new Redis({ sentinels: nodes, name: 'mymaster', password, sentinelPassword: password });
  // Without a listener ioredis prints these itself; report them instead.
  redis.on('error', (e) => emit('log', { msg: String(e.message || e) }));
  emit('start', { lib: `ioredis ${require('ioredis/package.json').version}` });
  await writeLoop(seconds, () => redis.incr(key), () => redis.info('server'));
  redis.disconnect();
}

main().catch((e) => {
  emit('fatal', { msg: String(e) });
  process.exit(1);
});
