// Packs' browser extensions: import the files /extensions lists, call their hooks at the editor's moments.
// A module that fails to import, or a hook that throws, is reported and skipped; the editor goes on.
import { app } from '../scripts/app.js';

const nodeTypes = new Map(); // class name -> the stand-in class handed to beforeRegisterNodeDef
const reported = new Set();  // a hook that fails for every node is told once

function failed(where, error, report) {
  const message = String(error && error.message || error);
  app.failedExtensions.push({ url: where, error: message });
  console.error(`extension ${where}:`, error);
  if (!reported.has(where)) { reported.add(where); report(`Extension ${where} failed: ${message}`); }
}

export async function loadExtensions(urls, report) {
  await Promise.all(urls.map(async path => {
    try { await import(path); } catch (e) { failed(path, e, report); }
  }));
}

// Each extension's `name(...args, app)`, one after another (awaited).
export async function invoke(name, report, ...args) {
  for (const ext of app.extensions) {
    if (typeof ext[name] !== 'function') continue;
    try { await ext[name](...args, app); } catch (e) { failed(`${ext.name}.${name}`, e, report); }
  }
}

// The same for a moment that cannot wait (a node being created); a promise a hook returns is not awaited.
export function invokeNow(name, report, ...args) {
  for (const ext of app.extensions) {
    if (typeof ext[name] !== 'function') continue;
    try {
      const result = ext[name](...args, app);
      if (result && typeof result.catch === 'function') result.catch(e => failed(`${ext.name}.${name}`, e, report));
    } catch (e) { failed(`${ext.name}.${name}`, e, report); }
  }
}

// beforeRegisterNodeDef(nodeType, nodeData, app) for every node class. `nodeData` is the /object_info entry the
// editor then uses (edits to it show); `nodeType.prototype.onNodeCreated`, if an extension sets it, is called
// with `this` = each new node of that class.
export async function registerNodeDefs(defs, report) {
  for (const [name, def] of Object.entries(defs)) {
    const nodeType = nodeTypes.get(name) || Object.assign(function NodeType() {}, { comfyClass: name });
    nodeType.nodeData = def;
    nodeType.title = def.display_name || name;
    nodeTypes.set(name, nodeType);
    await invoke('beforeRegisterNodeDef', report, nodeType, def);
  }
}

export function nodeCreated(node, report) {
  const created = nodeTypes.get(node.type)?.prototype.onNodeCreated;
  if (typeof created === 'function') {
    try { created.call(node); } catch (e) { failed(`${node.type}.onNodeCreated`, e, report); }
  }
  invokeNow('nodeCreated', report, node);
}
