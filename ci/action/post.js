// The action's post step (post-if: always()): kwg leave, even when the job failed or was
// cancelled, then removes the kubeconfig the main step wrote. Without it the peer stays until
// its lease (the ttl input) runs out and the gateway removes it.
'use strict';
const fs = require('fs');
const path = require('path');
const { input, kwg } = require('./runner');

const r = kwg(input('kwg') || 'kwg', ['leave', '-o', 'json'], process.env.STATE_userspace === 'true');
console.log(r.stdout.trim());
const kubeconfig = process.env.STATE_kubeconfig;
if (kubeconfig) {
  fs.rmSync(path.dirname(kubeconfig), { recursive: true, force: true });
}
if (r.code !== 0) {
  console.log(`::warning title=kwg leave failed::the peer is removed by the gateway when its lease ends; ${r.error || 'see the log above'}`);
}
process.exit(r.code);
