// scripts/bench-compare.d/cluster-primary.js — Node's cluster module running server.js, as an app without a
// process manager would: WORKERS workers (default 2); on SIGHUP a rolling restart — for each serving worker,
// fork a new one, wait for its 'listening', then ask the old one to stop ('shutdown' message, then
// worker.disconnect()) and go on to the next; SIGKILL an old worker still alive after STOP_TIMEOUT_MS.
// A SIGHUP during a restart is coalesced into one follow-up restart. Logs to stderr, in the launcher's
// words: `reload to generation G done in MS ms`, then `idle` when no restart runs or waits.
// SIGTERM: stop every worker the same way, then exit.
'use strict';
const cluster = require('cluster');
const path = require('path');

const WORKERS = Number(process.env.WORKERS || 2);
const STOP_TIMEOUT_MS = 10000;   // the old worker's drain, as the launcher's --stop-timeout
const LISTEN_TIMEOUT_MS = 10000; // a new worker that never listens fails the restart

cluster.setupPrimary({ exec: path.join(__dirname, 'server.js') });

const log = (msg) => process.stderr.write(`cluster-primary: ${msg}\n`);
let serving = [];
let generation = 1;
let restarting = false;
let pending = false;

function stopWorker(worker) {
    const timer = setTimeout(() => worker.process.kill('SIGKILL'), STOP_TIMEOUT_MS);
    worker.once('exit', () => clearTimeout(timer));
    try { worker.send('shutdown'); } catch (_) { /* channel already gone */ }
    worker.disconnect();
}

function forkListening() {
    return new Promise((resolve, reject) => {
        const worker = cluster.fork();
        // Sending 'shutdown' or disconnecting races the worker's own exit: the IPC channel's EPIPE comes as
        // an 'error' event, which would end the primary if nothing listened for it.
        worker.on('error', (err) => log(`worker pid ${worker.process.pid}: ${err.message}`));
        const timer = setTimeout(() => reject(new Error('no listening in time')), LISTEN_TIMEOUT_MS);
        worker.once('listening', () => { clearTimeout(timer); resolve(worker); });
        worker.once('exit', (code, signal) => {
            clearTimeout(timer);
            reject(new Error(`worker exited (${code ?? signal}) before listening`));
        });
    });
}

async function restart() {
    restarting = true;
    const started = Date.now();
    generation += 1;
    try {
        for (let i = 0; i < serving.length; i++) {
            const fresh = await forkListening();
            const old = serving[i];
            serving[i] = fresh;
            stopWorker(old);
        }
        log(`reload to generation ${generation} done in ${Date.now() - started} ms`);
    } catch (err) {
        log(`reload to generation ${generation} failed: ${err.message}`);
    }
    restarting = false;
    if (pending) {
        pending = false;
        restart();
    } else {
        log('idle');
    }
}

process.on('SIGHUP', () => {
    if (restarting) pending = true; else restart();
});
process.on('SIGTERM', () => {
    serving.forEach(stopWorker);
    serving = [];
    const exitWhenDone = () => {
        if (Object.keys(cluster.workers).length === 0) process.exit(0);
        setTimeout(exitWhenDone, 50);
    };
    exitWhenDone();
});

Promise.all(Array.from({ length: WORKERS }, forkListening)).then((workers) => {
    serving = workers;
    log(`generation 1 serving: ${WORKERS} workers`);
}, (err) => {
    log(`error: generation 1 failed: ${err.message}`);
    process.exit(1);
});
