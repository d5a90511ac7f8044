// scripts/bench-compare.d/server.js — the one HTTP server every setup of scripts/bench-compare runs.
//
// Answers `GET /` with "ok\n" after DELAY_MS (default 0) on 127.0.0.1:PORT. Graceful on SIGTERM, SIGINT
// (PM2's default kill signal) or the IPC message 'shutdown' (PM2's shutdown_with_message, the launcher's
// --stop-message, bench-compare's cluster primary): stop accepting (server.close()), answer every request
// that arrives after that with `Connection: close`, close idle keep-alive connections after GRACE_MS, exit
// when the last connection is gone (or after EXIT_LIMIT_MS, whatever the clients do). With an IPC channel
// (cluster, PM2, reuseport-launch's --node-ipc) it sends process.send('ready') once it listens. Given a
// socket-activation listener (LISTEN_FDS, reuseport-launch --listen) it serves that, fd 3, instead of binding.
'use strict';
const http = require('http');
const net = require('net');

const PORT = Number(process.env.PORT || 18090);
const DELAY_MS = Number(process.env.DELAY_MS || 0);
const GRACE_MS = 200;         // lets a request already on its way over an idle connection arrive
const EXIT_LIMIT_MS = 10000;  // a client that keeps a connection open cannot keep the process alive

let closing = false;
const server = http.createServer((req, res) => {
    const reply = () => {
        if (closing) res.setHeader('Connection', 'close');
        res.end('ok\n');
    };
    if (DELAY_MS > 0) setTimeout(reply, DELAY_MS); else reply();
});

function shutdown() {
    if (closing) return;
    closing = true;
    // Not http.Server's close(): since Node 19 it also closes idle keep-alive connections at once, racing
    // the next request a client is already sending on them (wrk counts each as a read error).
    net.Server.prototype.close.call(server, () => process.exit(0));
    setTimeout(() => server.closeIdleConnections(), GRACE_MS).unref();
    setTimeout(() => process.exit(0), EXIT_LIMIT_MS).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('message', (msg) => { if (msg === 'shutdown') shutdown(); });

const LISTEN_FDS_START = 3;   // sd_listen_fds(3): the first passed socket
const onListening = () => {
    if (process.send) process.send('ready');
};
if (Number(process.env.LISTEN_FDS || 0) > 0) server.listen({ fd: LISTEN_FDS_START }, onListening);
else server.listen(PORT, '127.0.0.1', onListening);
