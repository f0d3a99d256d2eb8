// Cargo's runner for wasm32-wasip1 test binaries (tests/other_targets.rs): runs the module under
// Node's WASI in V8, the engine Chromium runs WebAssembly with, JIT-compiled for this CPU.
// Usage: node --experimental-wasi-unstable-preview1 wasi-run.mjs MODULE.wasm [ARGS...] (the flag
// is what Node 18 needs, and is accepted by Node 20).
import { readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { WASI } from 'node:wasi';

const [module, ...args] = process.argv.slice(2);
const options = {
  args: [module, ...args],
  env: process.env,
  // The tests read the repository's files by absolute path, and temporary files by relative ones.
  // WASI resolves an absolute path through the preopened folder it starts with, and a preopened
  // '/' is not matched: every top-level folder is preopened instead.
  preopens: Object.fromEntries([
    ...readdirSync('/')
      .filter((name) => { try { return statSync(`/${name}`).isDirectory(); } catch { return false; } })
      .map((name) => [`/${name}`, `/${name}`]),
    ['.', process.cwd()],
  ]),
  returnOnExit: true,
};
// Node 20 requires the WASI version; Node 18 (Debian's) may not know the option.
let wasi;
try {
  wasi = new WASI({ version: 'preview1', ...options });
} catch {
  wasi = new WASI(options);
}
const instance = await WebAssembly.instantiate(await WebAssembly.compile(await readFile(module)), wasi.getImportObject());
process.exitCode = wasi.start(instance);
