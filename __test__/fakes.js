'use strict';

// Tiny scripted TCP servers on loopback for the fault suites: the only stand-ins for Redis the
// suites use, each for a failure a real redis-server cannot be made to show.
//
//   const { blackHole, garbageServer, truncatedServer, fakeServer } = require('./fakes');
//   const hole = await blackHole();
//   after(() => hole.close());
//
// Each resolves with { host, port, connections, close() }: `connections` counts the connections
// accepted so far; `close()` destroys every open socket and stops listening.

const net = require('node:net');
const { parseReply, HOST } = require('./servers');

/**
 * A loopback TCP server that hands each accepted socket to `onSocket(socket)`.
 * @param {(socket: import('node:net').Socket) => void} onSocket
 */
async function tcpServer(onSocket) {
  const sockets = new Set();
  const stats = { connections: 0 };
  const server = net.createServer((socket) => {
    stats.connections += 1;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    onSocket(socket);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, resolve);
  });
  // The fake must never keep the test process alive by itself.
  server.unref();
  return {
    host: HOST,
    port: server.address().port,
    get connections() {
      return stats.connections;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Reads RESP commands and answers each with `answer(command)` (raw bytes, or nothing when it
 * returns null/undefined).
 */
function fakeServer(answer) {
  return tcpServer((socket) => {
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        let parsed;
        try {
          parsed = parseReply(buf);
        } catch {
          socket.destroy(); // not RESP from the client: give up on it
          return;
        }
        if (!parsed) break;
        buf = buf.subarray(parsed.end);
        const reply = answer(parsed.value);
        if (reply !== null && reply !== undefined) socket.write(reply);
      }
    });
  });
}

/** Accepts connections, reads what comes and never answers (a server stuck, or a firewall). */
function blackHole() {
  return tcpServer((socket) => {
    socket.on('data', () => {});
  });
}

/** Answers every command with a line that is not RESP at all. */
function garbageServer() {
  return fakeServer(() => 'hello, this is not redis\r\n');
}

/**
 * Answers every command with the start of a bulk string that never ends (`$10\r\nabc`) and keeps
 * the socket open: a reader that waits for the rest waits forever.
 */
function truncatedServer() {
  return fakeServer(() => '$10\r\nabc');
}

module.exports = { tcpServer, fakeServer, blackHole, garbageServer, truncatedServer };
