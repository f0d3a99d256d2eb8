// The page: DOM, pictures, charts and the event loop that steps the library's training loop.
// Everything that computes is the wasm module's (web/src/lib.rs, over the wgpu-cnn crate).
//
// `window.wgpuCnn` holds what the page measured and produced (Part I's planes, each run's history
// and test result, the load time), so that a test driving the page can read them.
import init, { Lab } from './pkg/wgpu_cnn_web.js';

const $ = (id) => document.getElementById(id);
const results = (window.wgpuCnn = { ready: false, errors: [], part1: null, runs: [], classified: null });

// The tool's limit on decoded images (wgpu-cnn convolve --max-megapixels): a larger picture would
// take gigabytes of tab memory.
const MAX_MEGAPIXELS = 64;

let lab = null;
let photo = null; // { name, width, height, planes: [R, G, B] as Uint8Array }
let lastCheckpoint = null; // bytes of the last run's model.safetensors
let model = null; // the LoadedModel pictures are classified with
let stopRequested = false;

function fail(error) {
  const message = String(error?.message ?? error);
  results.errors.push(message);
  const box = $('error');
  box.hidden = false;
  box.textContent = box.textContent ? `${box.textContent}\n${message}` : message;
  console.error(error);
}

function guard(work) {
  return async (event) => {
    event?.preventDefault?.();
    try {
      await work(event);
    } catch (e) {
      fail(e);
    }
  };
}

const ms = (t) => (t < 10 ? t.toFixed(2) : t < 100 ? t.toFixed(1) : t.toFixed(0)) + ' ms';
const pct = (x) => (100 * x).toFixed(2) + '%';
const group = (n) => Math.round(n).toLocaleString('en-US');

function base64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// Lets the browser run WebGPU's callbacks and paint between pieces of work.
const yieldToBrowser = () => new Promise((resolve) => setTimeout(resolve, 0));

// ---------------------------------------------------------------- start-up

async function main() {
  const wasmStart = performance.now();
  await init();
  const wasmMs = performance.now() - wasmStart;
  // Browsers leave GPUAdapterInfo.description (wgpu's adapter name) empty; vendor and
  // architecture name the adapter.
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: 'high-performance' });
  const name = adapter && ([adapter.info.vendor, adapter.info.architecture].filter(Boolean).join('/') || 'WebGPU adapter');
  lab = await Lab.open(adapter ? name : undefined);
  $('cpu').textContent = lab.cpu();
  const gpu = lab.gpu();
  if (gpu) {
    const info = JSON.parse(gpu);
    results.gpu = info;
    $('gpu').textContent =
      `${info.name}${info.software ? ' (a fallback adapter: software, on the CPU)' : ''}; limits requested from the adapter: ${info.max_storage_buffers_per_shader_stage} ` +
      `storage buffers per stage, ${group(info.max_storage_buffer_binding_size / 2 ** 20)} MiB per binding, ` +
      `${info.max_compute_invocations_per_workgroup} invocations per workgroup (WebGPU's defaults: 8, 128 MiB, 256)`;
    $('software').hidden = !info.software;
  } else {
    results.gpu = null;
    $('gpu').textContent = `none — ${lab.gpu_error()}. Part I and training run on the CPU (wasm).`;
    $('train-gpu').title = 'This browser offers no WebGPU adapter';
    $('model-device').value = 'cpu';
  }
  for (const [name, tokens, what] of JSON.parse(Lab.architectures())) {
    $('architectures').append(new Option(`${what}: ${tokens}`, name));
  }

  const dataStart = performance.now();
  await Promise.all([useDefaultPhoto(), loadData()]);
  const dataMs = performance.now() - dataStart;
  const wasm = performance.getEntriesByType('resource').find((r) => r.name.endsWith('.wasm'));
  const readyMs = performance.now();
  results.load = {
    ready_ms: readyMs,
    wasm_ms: wasmMs,
    data_ms: dataMs,
    wasm_bytes: wasm ? wasm.decodedBodySize : null,
  };
  $('load').textContent =
    `ready ${ms(readyMs)} after navigation: wasm module ` +
    (wasm ? `(${(wasm.decodedBodySize / 2 ** 20).toFixed(1)} MiB) ` : '') +
    `fetched and compiled in ${ms(wasmMs)}, photo and CIFAR-10 files in ${ms(dataMs)}`;
  $('conv-run').disabled = false;
  $('train-gpu').disabled = !gpu;
  $('train-cpu').disabled = false;
  results.ready = true;
}

async function fetchBytes(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function loadData() {
  const names = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`).concat(['test_batch.bin', 'batches.meta.txt']);
  const files = await Promise.all(names.map((n) => fetchBytes(`assets/cifar10/${n}`)));
  const counts = JSON.parse(lab.load_cifar(...files));
  results.data = counts;
  $('train-size').max = counts.train;
  $('train-size').value = Math.min(Number($('train-size').value), counts.train);
}

// ---------------------------------------------------------------- Part I

// The browser's decoder says only "could not be decoded": name the file.
async function bitmapOf(blob, name, options) {
  try {
    return await createImageBitmap(blob, options);
  } catch (e) {
    throw new Error(`${name}: not a picture this browser can decode (${e.message})`);
  }
}

async function decodePicture(blob, name) {
  const bitmap = await bitmapOf(blob, name, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const { width, height } = bitmap;
  if (width * height > MAX_MEGAPIXELS * 1e6) {
    throw new Error(`${name}: ${width}×${height} is over ${MAX_MEGAPIXELS} megapixels`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  const planes = [0, 1, 2].map((c) => {
    const plane = new Uint8Array(width * height);
    for (let i = 0; i < plane.length; i++) plane[i] = rgba[4 * i + c];
    return plane;
  });
  return { name, width, height, planes };
}

async function useDefaultPhoto() {
  const bytes = await fetchBytes('assets/chelsea.png');
  photo = await decodePicture(new Blob([bytes], { type: 'image/png' }), 'assets/chelsea.png (embedded photo)');
  $('conv-status').textContent = `${photo.name}, ${photo.width}×${photo.height}`;
}

function planeCanvas(plane, width, height, caption) {
  const figure = document.createElement('figure');
  const canvas = document.createElement('canvas');
  [canvas.width, canvas.height] = [width, height];
  const image = new ImageData(width, height);
  for (let i = 0; i < plane.length; i++) {
    image.data.set([plane[i], plane[i], plane[i], 255], 4 * i);
  }
  canvas.getContext('2d').putImageData(image, 0, 0);
  const text = document.createElement('figcaption');
  text.textContent = caption;
  figure.append(canvas, text);
  return figure;
}

// Mean time of `work` over at least 3 calls and 150 ms, after one untimed call (which compiles
// WebGPU's pipelines on first use), as `bench::measure` does natively.
async function measure(work) {
  let out = await work();
  let calls = 0;
  const start = performance.now();
  while (calls < 3 || performance.now() - start < 150) {
    out = await work();
    calls++;
  }
  return { out, ms: (performance.now() - start) / calls };
}

async function convolve() {
  if (!photo) throw new Error('no picture loaded');
  const channel = $('conv-channel').value;
  const plane = photo.planes['RGB'.indexOf(channel)];
  const { width, height } = photo;
  const kernels = [$('conv-k1').value, $('conv-k2').value].map((text) => {
    try {
      return { text: text.trim(), shown: Lab.kernel(text) };
    } catch (e) {
      throw new Error(`kernel '${text}': ${e.message}`);
    }
  });
  $('conv-run').disabled = true;
  $('conv-status').textContent = `convolving ${photo.name}, ${width}×${height}, channel ${channel}…`;
  const rows = [];
  const record = { width, height, channel, input: base64(plane), kernels: [] };
  const gpu = results.gpu !== null;
  try {
    for (const kernel of kernels) {
      const cpu = await measure(() => Lab.convolve_cpu(plane, width, height, kernel.text));
      const onGpu = gpu ? await measure(() => lab.convolve_gpu(plane, width, height, kernel.text)) : null;
      const same = onGpu ? onGpu.out.every((v, i) => v === cpu.out[i]) : null;
      rows.push([kernel, cpu, onGpu, same]);
      record.kernels.push({
        text: kernel.text,
        cpu: base64(cpu.out),
        gpu: onGpu ? base64(onGpu.out) : null,
        cpu_ms: cpu.ms,
        gpu_ms: onGpu ? onGpu.ms : null,
      });
    }
  } finally {
    $('conv-run').disabled = false;
  }
  const figure = $('figure');
  figure.replaceChildren(
    ...['R', 'G', 'B'].map((name, c) => planeCanvas(photo.planes[c], width, height, name)),
    planeCanvas(plane, width, height, channel),
    ...rows.map(([kernel, cpu, onGpu]) =>
      planeCanvas((onGpu ?? cpu).out, width, height, `${channel} ∗ ${kernel.text} (${onGpu ? 'WebGPU' : 'CPU'})`),
    ),
  );
  const body = $('conv-times').tBodies[0];
  body.replaceChildren(
    ...rows.map(([kernel, cpu, onGpu, same]) => {
      const row = body.insertRow();
      const cells = [
        `${kernel.text} ${kernel.shown}`,
        onGpu ? ms(onGpu.ms) : '—',
        ms(cpu.ms),
        !onGpu ? '—' : onGpu.ms < cpu.ms ? `WebGPU ${(cpu.ms / onGpu.ms).toFixed(1)}×` : `CPU ${(onGpu.ms / cpu.ms).toFixed(1)}×`,
        same === null ? 'CPU only' : same ? 'identical' : 'DIFFER',
      ];
      for (const text of cells) row.insertCell().textContent = text;
      return row;
    }),
  );
  $('conv-times').hidden = false;
  $('conv-status').textContent =
    `${photo.name}, ${width}×${height}, channel ${channel}` +
    (gpu ? '; WebGPU times include upload and readback' : '; no WebGPU: CPU only');
  results.part1 = record;
}

// ---------------------------------------------------------------- Part II

function drawChart(canvas, series, label) {
  const g = canvas.getContext('2d');
  const [w, h, left, bottom, top, right] = [canvas.width, canvas.height, 52, 30, 12, 12];
  g.clearRect(0, 0, w, h);
  g.font = '12px system-ui, sans-serif';
  const values = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const epochs = Math.max(1, ...series.map((s) => s.values.length));
  if (values.length === 0) return;
  let [lo, hi] = [Math.min(...values), Math.max(...values)];
  if (hi - lo < 1e-6) [lo, hi] = [lo - 0.05, hi + 0.05];
  const pad = (hi - lo) * 0.08;
  [lo, hi] = [lo - pad, hi + pad];
  const x = (i) => left + (epochs === 1 ? 0.5 : i / (epochs - 1)) * (w - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
  g.strokeStyle = '#ccc';
  g.fillStyle = '#444';
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    g.beginPath();
    g.moveTo(left, y(v));
    g.lineTo(w - right, y(v));
    g.stroke();
    g.fillText(v.toFixed(3), 4, y(v) + 4);
  }
  for (let i = 0; i < epochs; i += Math.max(1, Math.ceil(epochs / 10))) g.fillText(String(i + 1), x(i) - 3, h - 12);
  g.fillText('epoch', w - right - 34, h - 2);
  series.forEach((s, n) => {
    g.strokeStyle = g.fillStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    s.values.forEach((v, i) => (i === 0 ? g.moveTo(x(i), y(v)) : g.lineTo(x(i), y(v))));
    g.stroke();
    s.values.forEach((v, i) => g.fillRect(x(i) - 2, y(v) - 2, 4, 4));
    g.fillText(`${s.name} ${label}`, left + 8 + n * 130, top + 12);
  });
  g.lineWidth = 1;
}

function drawHistory(history) {
  drawChart(
    $('chart-loss'),
    [
      { name: 'training', color: '#1f77b4', values: history.loss },
      { name: 'validation', color: '#ff7f0e', values: history.val_loss },
    ],
    'loss',
  );
  drawChart(
    $('chart-accuracy'),
    [
      { name: 'training', color: '#1f77b4', values: history.accuracy },
      { name: 'validation', color: '#ff7f0e', values: history.val_accuracy },
    ],
    'accuracy',
  );
}

function showTest(test) {
  $('test-line').textContent =
    `Test set: loss ${test.loss.toFixed(4)}, accuracy ${test.accuracy.toFixed(4)} over ${group(test.images)} ` +
    `images in ${ms(1000 * test.seconds)} (most-common-label baseline, always '${test.baseline_class}': ` +
    `${test.baseline.toFixed(4)})`;
  const table = $('confusion');
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.insertCell().textContent = '';
  test.classes.forEach((c) => (head.insertCell().textContent = c.slice(0, 5)));
  const max = Math.max(...test.confusion.flat());
  test.confusion.forEach((counts, t) => {
    const row = table.insertRow();
    row.insertCell().textContent = test.classes[t];
    counts.forEach((n, p) => {
      const cell = row.insertCell();
      cell.textContent = n;
      const alpha = max ? n / max : 0;
      cell.style.background = t === p ? `rgba(40,150,60,${alpha})` : `rgba(220,60,40,${alpha})`;
    });
  });
  $('report').textContent = test.report;
  $('train-result').hidden = false;
}

async function train(device) {
  const arch = $('train-arch').value.trim();
  const size = Number($('train-size').value);
  const epochs = Number($('train-epochs').value);
  const seed = Number($('train-seed').value);
  for (const button of ['train-gpu', 'train-cpu']) $(button).disabled = true;
  $('train-stop').disabled = false;
  $('train-result').hidden = true;
  stopRequested = false;
  const status = $('train-status');
  const progress = $('train-progress');
  let run = null;
  try {
    status.textContent = `building ${arch} on ${device === 'gpu' ? 'WebGPU' : 'the CPU'}…`;
    await yieldToBrowser();
    run = lab.train(arch, device, size, epochs, seed);
    const info = JSON.parse(run.info());
    $('summary').textContent = info.summary;
    const history = { loss: [], accuracy: [], val_loss: [], val_accuracy: [] };
    const rates = [];
    drawHistory(history);
    const started = performance.now();
    let epoch = null;
    for (;;) {
      const text = await run.advance();
      if (text === null) break;
      const event = JSON.parse(text);
      if (event.kind === 'epoch_start') {
        epoch = event;
        progress.max = event.steps;
        progress.value = 0;
      } else if (event.kind === 'step') {
        progress.value = event.done;
        const running = event.loss === null ? '' : ` — loss ${event.loss.toFixed(4)}, accuracy ${event.accuracy.toFixed(4)}`;
        status.textContent = `${info.engine}: epoch ${epoch.epoch}/${epoch.epochs}, step ${event.done}/${event.steps}${running}`;
      } else if (event.kind === 'epoch_end') {
        progress.value = progress.max;
        for (const key of Object.keys(history)) history[key].push(event[key]);
        rates.push(event.images_per_second);
        drawHistory(history);
        status.textContent =
          `${info.engine}: epoch ${event.epoch}/${epoch.epochs} in ${ms(1000 * event.seconds)} ` +
          `(${group(event.images_per_second)} images/s) — loss ${event.loss.toFixed(4)}, accuracy ` +
          `${event.accuracy.toFixed(4)}, val_loss ${event.val_loss?.toFixed(4)}, val_accuracy ${event.val_accuracy?.toFixed(4)}`;
        if (stopRequested) break;
      }
      await yieldToBrowser();
    }
    const seconds = (performance.now() - started) / 1000;
    status.textContent += ' — testing…';
    const test = JSON.parse(await run.test());
    showTest(test);
    lastCheckpoint = await run.checkpoint();
    $('model-trained').disabled = false;
    const done = history.loss.length;
    const median = [...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)];
    const record = {
      architecture: arch,
      device,
      engine: info.engine,
      train: info.train,
      validation: info.validation,
      epochs: done,
      seconds,
      images_per_second: median,
      history: JSON.parse(run.history()),
      test,
      checkpoint_bytes: lastCheckpoint.length,
    };
    results.runs.push(record);
    const row = $('runs').tBodies[0].insertRow();
    const cells = [
      arch,
      info.engine,
      group(info.train),
      String(done),
      group(median),
      (seconds / Math.max(1, done)).toFixed(2),
      history.val_accuracy.at(-1)?.toFixed(4) ?? '—',
      test.accuracy.toFixed(4),
    ];
    for (const text of cells) row.insertCell().textContent = text;
    status.textContent = `${info.engine}: ${done} epoch${done === 1 ? '' : 's'} in ${seconds.toFixed(1)} s, test accuracy ${test.accuracy.toFixed(4)}`;
  } finally {
    run?.free();
    $('train-gpu').disabled = results.gpu === null;
    $('train-cpu').disabled = false;
    $('train-stop').disabled = true;
  }
}

function download() {
  if (!lastCheckpoint) throw new Error('no model trained yet');
  const url = URL.createObjectURL(new Blob([lastCheckpoint], { type: 'application/octet-stream' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = 'model.safetensors';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---------------------------------------------------------------- classification

function loadModel(bytes, name) {
  model?.free();
  model = null;
  model = lab.load_model(bytes, name, $('model-device').value);
  const info = JSON.parse(model.info());
  $('model-status').textContent =
    `${name}: ${info.architecture}, ${info.epochs} epoch${info.epochs === 1 ? '' : 's'} on ${info.data}; runs on ${info.engine}`;
}

async function classify(blob, name) {
  if (!model) throw new Error('load a checkpoint first (or train a model and use it)');
  const bitmap = await bitmapOf(blob, name);
  const canvas = $('picture');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, 32, 32);
  const rgba = context.getImageData(0, 0, 32, 32).data;
  const ranked = JSON.parse(await model.classify(new Uint8Array(rgba.buffer.slice(0))));
  results.classified = { name, ranked };
  $('classes').replaceChildren(
    ...ranked.slice(0, 3).map(([label, p]) => {
      const item = document.createElement('li');
      item.textContent = `${label} ${pct(p)}`;
      return item;
    }),
  );
}

// ---------------------------------------------------------------- wiring

$('conv-form').addEventListener('submit', guard(convolve));
$('conv-default').addEventListener('click', guard(useDefaultPhoto));
$('conv-file').addEventListener(
  'change',
  guard(async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    photo = await decodePicture(file, file.name);
    $('conv-status').textContent = `${photo.name}, ${photo.width}×${photo.height}`;
    await convolve();
  }),
);
$('train-gpu').addEventListener('click', guard(() => train('gpu')));
$('train-cpu').addEventListener('click', guard(() => train('cpu')));
$('train-stop').addEventListener('click', () => {
  stopRequested = true;
  $('train-stop').disabled = true;
  $('train-status').textContent += ' — stopping after this epoch';
});
$('download').addEventListener('click', guard(download));
$('model-trained').addEventListener('click', guard(() => loadModel(lastCheckpoint, 'the model just trained')));
$('model-file').addEventListener(
  'change',
  guard(async (event) => {
    const file = event.target.files[0];
    if (file) loadModel(new Uint8Array(await file.arrayBuffer()), file.name);
  }),
);
$('picture-file').addEventListener(
  'change',
  guard(async (event) => {
    const file = event.target.files[0];
    if (file) await classify(file, file.name);
  }),
);
const drop = $('drop');
drop.addEventListener('dragover', (event) => {
  event.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener(
  'drop',
  guard(async (event) => {
    drop.classList.remove('over');
    const file = event.dataTransfer.files[0];
    if (file) await classify(file, file.name);
  }),
);

main().catch(fail);
