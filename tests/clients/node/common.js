'use strict';
// Shared by the drivers; see ../README.md for the protocol.

function emit(ev, fields = {}) {
  process.stdout.write(JSON.stringify({ ev, t: Date.now(), ...fields }) + '\n');
}

function parseArgs() {
  const [sentinels, key, seconds] = process.argv.slice(2);
  if (!sentinels || !key || !seconds) {
    process.stderr.write('usage: SENTINELS KEY SECONDS\n');
    process.exit(2);
  }
  const nodes = sentinels.split(',').map((a) => {
    const i = a.lastIndexOf(':');
    return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
  });
  return { nodes, key, seconds: Number(seconds), password: process.env.REDIS_PASSWORD || undefined };
}

function tcpPort(info) {
  const m = /^tcp_port:(\d+)/m.exec(info);
  return m ? Number(m[1]) : -1;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Writes every ~10 ms until the deadline: `incr` and `info` are the library's calls.
async function writeLoop(seconds, incr, info) {
  const deadline = Date.now() + seconds * 1000;
  let writes = 0;
  let lastPort = null;
  let afterError = true;
  while (Date.now() < deadline) {
    try {
      await incr();
      const port = tcpPort(await info());
      writes += 1;
      if (afterError || port !== lastPort || writes % 100 === 0) {
        emit('ok', { port, n: writes });
      }
      lastPort = port;
      afterError = false;
    } catch (e) {
      emit('err', { msg: String(e && e.message ? e.message : e) });
      afterError = true;
    }
    await sleep(10);
  }
}

module.exports = { emit, parseArgs, writeLoop };
