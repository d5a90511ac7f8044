// scripts/bench-compare.d/pm2-reloader.js — `pm2 reload APP` on SIGHUP, through PM2's programmatic API from
// one long-lived process (the CLI costs a Node start per reload: on 2 cores under load that alone took
// longer than the 3 s between reloads). Usage: PM2_HOME=... node pm2-reloader.js PM2_MODULE_DIR APP.
// A SIGHUP during a reload is coalesced into one follow-up reload, as the launcher does. Logs to stderr in
// the launcher's words: `reload to generation G done in MS ms` (PM2's reload call, start to callback), and
// `idle` when no reload runs or waits.
// Exits on SIGTERM; it never stops the app or the daemon.
'use strict';
const [moduleDir, app] = process.argv.slice(2);
const pm2 = require(moduleDir);

const log = (msg) => process.stderr.write(`pm2-reloader: ${msg}\n`);
let generation = 1;
let reloading = false;
let pending = false;

function reload() {
    reloading = true;
    generation += 1;
    const started = Date.now();
    const g = generation;
    pm2.reload(app, (err) => {
        if (err) log(`reload to generation ${g} failed after ${Date.now() - started} ms: ${err.message || err}`);
        else log(`reload to generation ${g} done in ${Date.now() - started} ms`);
        reloading = false;
        if (pending) {
            pending = false;
            reload();
        } else {
            log('idle');
        }
    });
}

pm2.connect((err) => {   // the daemon that `pm2 start` left running
    if (err) {
        log(`error: cannot connect to the PM2 daemon: ${err.message || err}`);
        process.exit(1);
    }
    process.on('SIGHUP', () => { if (reloading) pending = true; else reload(); });
    process.on('SIGTERM', () => { pm2.disconnect(); process.exit(0); });
    log(`connected, reloading ${app} on SIGHUP`);
});
