'use strict';
// node-redis 5 `createSentinel`, default options.
const { createSentinel } = require('redis');
const { emit, parseArgs, writeLoop } = require('./common');

async function main() {
  const { nodes, key, seconds, password } = parseArgs();
  const auth = password ? { password } : {};
  const sentinel = createSentinel({
    name: 'mymaster',
    sentinelRootNodes: nodes,
    nodeClientOptions: auth,
    sentinelClientOptions: auth,
  });
  // An EventEmitter 'error' without a listener would end the process.
  sentinel.on('error', (e) => emit('log', { msg: String(e.message || e) }));
  emit('start', { lib: `node-redis ${require('redis/package.json').version}` });
  await sentinel.connect();
  await writeLoop(seconds, () => sentinel.incr(key), () => sentinel.info('server'));
  await sentinel.close();
}

main().catch((e) => {
  emit('fatal', { msg: String(e) });
  process.exit(1);
});
