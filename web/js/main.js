// The editor app: wires the graph, the canvas, the palette, the server and the files together.
import { api, connect } from './api.js';
import { Graph, detectFormat, describeInputs, primaryNames } from './graph.js';
import { Editor } from './canvas.js';
import { pngText, webpText } from './png.js';
import { QueuePanel } from './panel.js';
import { toast, showMenu, closeMenu, closeOverlay, showHelp, showImage, buildPalette, searchPopup, showPackProblems } from './ui.js';
import { loadExtensions, invoke, invokeNow, registerNodeDefs, nodeCreated } from './extensions.js';
import { app } from '../scripts/app.js';
import { api as extensionApi } from '../scripts/api.js';

const STORE = 'sdgraph.workflow';
const $ = sel => document.querySelector(sel);
let editor, graph, panel, pointer = null, lastPreview = null, failed = false;

// The default txt2img workflow, linked by socket type so it fits either node naming.
const DEFAULT_NODES = [
  ['ckpt', ['CheckpointLoaderSimple'], [40, 200], {}],
  ['pos', ['CLIPTextEncode', 'TextEncode'], [380, 40], { text: 'a red apple on a wooden table' }],
  ['neg', ['CLIPTextEncode', 'TextEncode'], [380, 310], { text: '' }],
  ['latent', ['EmptyLatentImage', 'EmptyLatent'], [380, 580], { width: 64, height: 64, batch_size: 1 }],
  ['sampler', ['KSampler'], [760, 150], {}],
  ['decode', ['VAEDecode'], [1110, 150], {}],
  ['save', ['SaveImage'], [1400, 150], { filename_prefix: 'sdgraph' }],
];
const DEFAULT_LINKS = [['ckpt', 'MODEL', 'sampler'], ['ckpt', 'CLIP', 'pos'], ['ckpt', 'CLIP', 'neg'], ['pos', 'CONDITIONING', 'sampler'],
  ['neg', 'CONDITIONING', 'sampler'], ['latent', 'LATENT', 'sampler'], ['sampler', 'LATENT', 'decode'], ['ckpt', 'VAE', 'decode'],
  ['decode', 'IMAGE', 'save']];

function loadDefault() {
  graph.clear();
  const ids = {}, primary = primaryNames(graph.defs);
  for (const [key, names, pos, values] of DEFAULT_NODES) {
    const type = primary[names.find(n => graph.defs[n])];
    if (!type) continue;
    const node = graph.addNode(type, pos);
    ids[key] = node.id;
    for (const [k, v] of Object.entries(values)) if (k in node.widgets) node.widgets[k] = v;
    for (const input of describeInputs(graph.defs[type])) {
      const tiny = input.choices && input.choices.find(c => String(c).includes('sdgraph-tiny'));
      if (tiny) node.widgets[input.name] = tiny;
    }
  }
  for (const [src, type, dst] of DEFAULT_LINKS) {
    if (!ids[src] || !ids[dst]) continue;
    const slot = graph.outputsOf(graph.nodes.get(ids[src])).findIndex(o => o.type === type);
    const input = graph.inputsOf(graph.nodes.get(ids[dst])).find(i => i.type === type && !graph.linkInto(ids[dst], i.name));
    if (slot >= 0 && input) graph.connect(ids[src], slot, ids[dst], input.name);
  }
  editor.reset();
  editor.fit();
  if (Object.keys(ids).length < DEFAULT_NODES.length) toast('Some nodes of the default workflow are not installed on this server.', 'error');
}

// UI-format files (ComfyUI's) go through the server's converter, the one implementation of its rules.
export async function loadWorkflow(data, { fit = true, name = 'the workflow' } = {}) {
  if (data && detectFormat(data.workflow)) data = data.workflow; // {"workflow": ...} or {"prompt", "workflow"}
  const format = detectFormat(data);
  if (!format) { toast('This file holds no workflow sdgraph can read.', 'error'); return false; }
  if (format === 'litegraph') {
    let prompt;
    try { ({ prompt } = await api.convertWorkflow(data)); } catch (e) { conversionFailed(name, e); return false; }
    loadApi(prompt, uiPositions(data));
  } else if (format === 'api') loadApi(data);
  else graph.load(data);
  editor.reset();
  if (data.view && !fit) { editor.view = { ...data.view }; editor.applyView(); } else editor.fit();
  const unknown = [...new Set([...graph.nodes.values()].filter(n => !graph.defs[n.type]).map(n => n.type))];
  if (unknown.length) toast(`Unknown node types: ${unknown.join(', ')}.`, 'error');
  for (const node of graph.nodes.values()) invokeNow('loadedGraphNode', extensionError, node);
  return true;
}

function extensionError(message) { toast(message, 'error', 8000); }

function conversionFailed(name, e) {
  const problems = (e.data && e.data.problems) || [];
  const lines = problems.map(p => `#${p.node_id}${p.title ? ` ${p.title}` : ''}${p.path ? ` (in ${p.path})` : ''}: ${p.message}`);
  toast(`Could not open ${name}: ${lines.length ? lines.join('; ') : e.message}`, 'error', 8000);
}

// Top-level UI nodes keep their ids through the conversion, so they keep their places; the insides of subgraphs
// (ids "outer:inner") are laid out automatically, below them.
function uiPositions(data) {
  const out = {};
  for (const n of data.nodes) {
    const x = Number(n.pos && n.pos[0]), y = Number(n.pos && n.pos[1]);
    if (Number.isFinite(x) && Number.isFinite(y)) out[String(n.id)] = [x, y];
  }
  return out;
}

function loadApi(prompt, positions = {}) {
  graph.loadApi(prompt);
  editor.render();
  const heights = Object.fromEntries([...editor.nodeEls].map(([id, el]) => [id, el.offsetHeight]));
  graph.autoLayout(heights);
  const nodes = [...graph.nodes.values()];
  const placed = nodes.filter(n => positions[n.id]), rest = nodes.filter(n => !positions[n.id]);
  if (!placed.length) return;
  for (const n of placed) n.pos = positions[n.id].map(Math.round);
  if (!rest.length) return;
  const left = Math.min(...placed.map(n => n.pos[0]));
  const below = Math.max(...placed.map(n => n.pos[1] + (heights[n.id] || 200))) + 60;
  const x0 = Math.min(...rest.map(n => n.pos[0])), y0 = Math.min(...rest.map(n => n.pos[1]));
  for (const n of rest) n.pos = [n.pos[0] - x0 + left, n.pos[1] - y0 + below];
}

// The graph in ComfyUI's UI format, built by the server (api_to_ui) from the API prompt and the nodes' places.
async function uiWorkflow() {
  const prompt = graph.toApi();
  for (const n of graph.nodes.values()) if (!n.title) delete prompt[n.id]._meta;
  const positions = Object.fromEntries([...graph.nodes.values()].map(n => [n.id, n.pos]));
  return (await api.uiWorkflow(prompt, positions)).workflow;
}

async function saveFile() {
  try {
    download('workflow.json', await uiWorkflow());
  } catch (e) {
    toast(`Could not save: ${e.message}`, 'error');
  }
}

function save() { localStorage.setItem(STORE, JSON.stringify(graph.serialize({ view: editor.view }))); }

function download(name, data) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function openFile(file, dropTarget = null) {
  const uploadNode = dropTarget && graph.nodes.get(dropTarget.closest('[data-node-id]')?.dataset.nodeId);
  const uploadInput = uploadNode && graph.inputsOf(uploadNode).find(i => i.opts.image_upload);
  if (uploadInput && file.type.startsWith('image/')) return upload(uploadNode, uploadInput.name, file);
  try {
    const png = file.type === 'image/png' || /\.png$/i.test(file.name);
    if (png || file.type === 'image/webp' || /\.webp$/i.test(file.name)) {
      const buffer = await file.arrayBuffer();
      const text = png ? await pngText(buffer) : webpText(buffer);
      const found = text && (text.workflow || text.prompt);
      if (!found) return toast(`This ${png ? 'PNG' : 'WebP'} holds no workflow.`, 'error');
      let data = JSON.parse(text.workflow || 'null');
      if (!detectFormat(data)) data = JSON.parse(text.prompt);
      if (await loadWorkflow(data, { name: file.name })) toast(`Opened the workflow from ${file.name}.`);
      return;
    }
    if (await loadWorkflow(JSON.parse(await file.text()), { name: file.name })) toast(`Opened ${file.name}.`);
  } catch (e) {
    toast(`Could not read ${file.name}: ${e.message}`, 'error');
  }
}

async function upload(node, name, file) {
  try {
    const res = await api.upload(file);
    const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    const input = graph.inputsOf(node).find(i => i.name === name);
    if (input.choices && !input.choices.includes(value)) input.choices.push(value);
    node.widgets[name] = value;
    editor.commit();
    toast(`Uploaded ${value}.`);
  } catch (e) {
    toast(`Upload failed: ${e.message}`, 'error');
  }
}

function pickUpload(node, name) {
  const input = Object.assign(document.createElement('input'), { type: 'file', accept: 'image/*' });
  input.onchange = () => input.files[0] && upload(node, name, input.files[0]);
  input.click();
}

function setStatus(text) { $('#status').textContent = text; }

async function queue() {
  if (!graph.nodes.size) return toast('The canvas is empty: add some nodes first.', 'error');
  editor.setRun({ errors: {} });
  setStatus('Queuing…');
  try {
    // Pictures carry the UI format, so ComfyUI opens them too (the editor's own layout if that fails).
    const workflow = await uiWorkflow().catch(() => graph.serialize());
    const res = await api.queuePrompt(graph.toApi(), workflow);
    if ($('#status').textContent === 'Queuing…') setStatus(`Queued #${res.number ?? ''}`.trim()); // events may come first
    if (graph.applyControlAfterRun()) editor.commit();
  } catch (e) {
    const data = e.data || {};
    const errors = {};
    for (const [id, info] of Object.entries(data.node_errors || {})) {
      const entry = errors[id] = { messages: [], inputs: {} };
      for (const err of info.errors || []) {
        const msg = err.details ? `${err.message}: ${err.details}` : err.message;
        entry.messages.push(msg);
        const inputName = err.extra_info && err.extra_info.input_name;
        if (inputName) entry.inputs[inputName] = msg;
      }
    }
    editor.setRun({ errors });
    const where = Object.keys(errors).map(id => graph.nodes.has(id) ? `${graph.title(graph.nodes.get(id))} (#${id})` : `#${id}`);
    toast(`Not queued: ${e.message}${where.length ? ` — see ${where.join(', ')}` : ''}`, 'error');
    setStatus('Not queued');
  }
  panel.refresh();
}

function onEvent(type, data) {
  const run = editor.run;
  if (type !== 'open' && type !== 'close') extensionApi.dispatch(type === 'preview' ? 'b_preview' : type, data);
  if (type === 'executed' && data.node != null) app.nodeOutputs[String(data.node)] = data.output;
  switch (type) {
    case 'open': setStatus('Connected'); break;
    case 'close': setStatus('Reconnecting to the server…'); break;
    case 'status': {
      const left = data.status?.exec_info?.queue_remaining;
      if (left !== undefined) $('#queue-count').textContent = String(left);
      panel.refresh();
      break;
    }
    case 'execution_start': failed = false; editor.clearRun(); setStatus('Running'); break;
    case 'execution_cached': editor.setRun({ cached: new Set((data.nodes || []).map(String)) }); break;
    case 'executing': {
      const id = data.node == null ? null : String(data.node);
      if (run.running) { delete run.progress[run.running]; delete run.preview[run.running]; }
      editor.setRun({ running: id });
      if (id) setStatus(`Running ${graph.nodes.has(id) ? graph.title(graph.nodes.get(id)) : id}`);
      else setStatus(failed ? 'Failed' : 'Finished');
      break;
    }
    case 'progress': {
      const id = String(data.node ?? run.running);
      editor.setProgress(id, data.value, data.max);
      if (graph.nodes.has(id)) setStatus(`Running ${graph.title(graph.nodes.get(id))}: ${data.value}/${data.max}`);
      break;
    }
    case 'executed': {
      const images = (data.output && data.output.images) || [];
      delete run.preview[String(data.node)];
      if (images.length) editor.setRun({ images: { ...run.images, [String(data.node)]: images.map(api.viewUrl) } });
      const texts = (data.output && data.output.text) || [];  // PreviewAny and other nodes that show text
      if (texts.length) editor.setRun({ texts: { ...run.texts, [String(data.node)]: texts.map(String) } });
      break;
    }
    case 'execution_success': setStatus('Finished'); panel.refresh(); break;
    case 'execution_interrupted': editor.clearRun(); setStatus('Stopped'); toast('The run was stopped.'); break;
    case 'execution_error': {
      const id = String(data.node_id);
      const title = graph.nodes.has(id) ? graph.title(graph.nodes.get(id)) : data.node_type || id;
      const msg = `${data.exception_type ? data.exception_type + ': ' : ''}${data.exception_message || 'failed'}`;
      failed = true;
      editor.clearRun();
      editor.setRun({ errors: { [id]: { messages: [msg], inputs: {} } } });
      setStatus('Failed');
      toast(`Run failed in ${title} (#${id}): ${msg}`, 'error');
      break;
    }
    case 'preview': {
      const id = run.running;
      if (!id) break;
      if (lastPreview) URL.revokeObjectURL(lastPreview);
      lastPreview = URL.createObjectURL(data);
      run.preview[id] = lastPreview;
      editor.renderNode(graph.nodes.get(id) || { id });
      break;
    }
  }
}

function nodeMenu(node, x, y) {
  if (!editor.selected.has(node.id)) editor.select([node.id]);
  const items = [
    { label: 'Rename…', action: () => { const t = prompt('Node title', graph.title(node)); if (t !== null) { node.title = t.trim() || null; editor.commit(); } } },
    { label: 'Duplicate', action: () => editor.paste(editor.copy()) },
    { label: 'Delete', action: () => editor.deleteSelected() },
  ];
  const widgets = graph.inputsOf(node).filter(i => i.widget);
  if (widgets.length) items.push('-');
  for (const input of widgets) {
    const converted = node.converted.includes(input.name);
    items.push({ label: converted ? `Show ${input.name} as a widget` : `Turn ${input.name} into an input`,
      action: () => editor.setConverted(node, input.name, !converted) });
  }
  showMenu(x, y, items);
}

function onKey(e) {
  const mod = e.ctrlKey || e.metaKey;
  const key = e.key.toLowerCase();
  if (mod && key === 'enter') { e.preventDefault(); document.activeElement?.blur?.(); queue(); return; }
  if (e.key === 'Escape') { closeMenu(); if (!closeOverlay()) editor.select([]); return; }
  if (e.target.closest('input, textarea, select, [contenteditable]')) return;
  const actions = {
    z: () => (e.shiftKey ? editor.redo() : editor.undo()), y: () => editor.redo(),
    c: () => { const data = editor.copy(); if (data) localStorage.setItem('sdgraph.clipboard', JSON.stringify(data)); },
    v: () => editor.paste(JSON.parse(localStorage.getItem('sdgraph.clipboard') || 'null'), pointer && editor.toWorld(...pointer)),
    d: () => editor.paste(editor.copy()), a: () => editor.select(graph.nodes.keys()),
    s: saveFile, o: () => $('#file-input').click(),
  };
  if (mod && actions[key]) { e.preventDefault(); actions[key](); return; }
  if (mod || e.altKey) return;
  if (e.key === 'Delete' || e.key === 'Backspace') { e.preventDefault(); editor.deleteSelected(); }
  else if (e.key === '?') showHelp();
  else if (key === 'q') panel.toggle();
  else if (e.key === '.') editor.fit();
}

async function start() {
  let defs;
  for (let tries = 0; !defs; tries++) {
    try { defs = await api.objectInfo(); } catch (e) {
      setStatus('Cannot reach the server; retrying…');
      await new Promise(r => setTimeout(r, Math.min(5000, 500 * 2 ** tries)));
    }
  }
  const [extensions, problems] = await Promise.all([api.extensions().catch(() => []),
    api.nodeProblems().then(r => r.problems || []).catch(() => [])]);
  const quiet = () => {}; // failures while starting are listed once, with the packs' problems, not one by one
  await loadExtensions(extensions, quiet);
  await invoke('init', quiet);
  await invoke('addCustomNodeDefs', quiet, defs);
  await registerNodeDefs(defs, quiet);
  await invoke('registerCustomNodes', quiet);
  graph = new Graph(defs);
  graph.onNodeAdded = node => nodeCreated(node, extensionError);
  app.graph = graph;
  app.editor = { queue, graphToPrompt: async () => ({ output: graph.toApi(), workflow: await uiWorkflow() }),
    loadGraphData: data => loadWorkflow(data) };
  editor = new Editor($('#canvas'), graph, {
    changed: save, toast, enlarge: showImage, viewUrl: api.viewUrl, pickUpload, nodeMenu,
    openSearch: (x, y) => { const at = editor.toWorld(x, y); searchPopup(defs, x, y, name => editor.addNode(name, at)); },
  });
  panel = new QueuePanel($('#queue-panel'), { load: data => data && loadWorkflow(data) });
  buildPalette($('#palette'), defs, (name, x, y) => editor.addNode(name, x === undefined ? null : editor.toWorld(x, y)));
  let restored = false;
  try {
    const stored = JSON.parse(localStorage.getItem(STORE) || 'null');
    if (stored) restored = await loadWorkflow(stored, { fit: false });
  } catch { /* a broken store falls back to the default */ }
  if (!restored) loadDefault();
  const buttons = {
    'btn-queue': queue, 'btn-stop': () => api.interrupt().catch(e => toast(e.message, 'error')),
    'btn-open': () => $('#file-input').click(), 'btn-save': saveFile,
    'btn-export': () => download('workflow_api.json', graph.toApi()), 'btn-default': loadDefault,
    'btn-clear': () => { graph.clear(); editor.reset(); editor.fit(); }, 'btn-undo': () => editor.undo(), 'btn-redo': () => editor.redo(),
    'btn-fit': () => editor.fit(), 'btn-panel': () => panel.toggle(), 'btn-help': showHelp,
    'btn-palette': () => { $('#palette').hidden = !$('#palette').hidden; },
  };
  for (const [id, fn] of Object.entries(buttons)) $(`#${id}`).addEventListener('click', fn);
  $('#file-input').addEventListener('change', e => { if (e.target.files[0]) openFile(e.target.files[0]); e.target.value = ''; });
  addEventListener('keydown', onKey);
  addEventListener('dragover', e => { e.preventDefault(); document.body.classList.add('dropping'); });
  addEventListener('dragleave', e => { if (!e.relatedTarget) document.body.classList.remove('dropping'); });
  addEventListener('drop', e => {
    e.preventDefault();
    document.body.classList.remove('dropping');
    const file = e.dataTransfer.files[0];
    if (file) openFile(file, e.target instanceof Element ? e.target : null);
  });
  $('#canvas').addEventListener('pointermove', e => { pointer = [e.clientX, e.clientY]; });
  addEventListener('pagehide', save);
  connect(onEvent);
  await invoke('setup', quiet);
  showPackProblems($('#palette'), problems, app.failedExtensions);
  setStatus('Ready');
  document.body.classList.add('ready');
}

start();
