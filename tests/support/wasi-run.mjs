// Cargo's runner for wasm32-wasip1 test binaries (tests/other_targets.rs): runs the module under
// Node's WASI in V8, the engine Chromium runs WebAssembly with, JIT-compiled for this CPU.
// Usage: node wasi-run.mjs MODULE.wasm [ARGS...]
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { WASI } from 'node:wasi';

const [module, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [module, ...args],
  env: process.env,
  // The tests read the repository's files by absolute path, and temporary files by relative ones.
  preopens: { '/': '/', '.': process.cwd() },
  returnOnExit: true,
});
const instance = await WebAssembly.instantiate(await WebAssembly.compile(await readFile(module)), wasi.getImportObject());
process.exitCode = wasi.start(instance);
