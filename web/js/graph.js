// The editor graph: nodes, links, node descriptions from /object_info, and conversion to/from the API format.

export const WIDGET_TYPES = new Set(['INT', 'FLOAT', 'STRING', 'BOOLEAN', 'COMBO']);
export const SEED_MODES = ['fixed', 'increment', 'decrement', 'randomize'];
const SEED_MAX = 0xffffffffffff;

// A socket type as a list of names: "*" matches all, "A,B" is a union (ComfyUI's convention).
function typeNames(type) {
  if (Array.isArray(type)) return ['COMBO'];
  return String(type).split(',').map(t => t.trim()).filter(Boolean);
}

export function typesMatch(outType, inType) {
  const a = typeNames(outType), b = typeNames(inType);
  if (a.includes('*') || b.includes('*')) return true;
  return a.some(t => b.includes(t));
}

// One node class's inputs, each {name, type, opts, widget, optional, choices}.
export function describeInputs(def) {
  const out = [];
  const order = def.input_order || {};
  for (const section of ['required', 'optional']) {
    const entries = (def.input && def.input[section]) || {};
    const names = order[section] || Object.keys(entries);
    for (const name of names) {
      const entry = entries[name];
      if (entry === undefined) continue;
      const [head, opts = {}] = Array.isArray(entry) ? entry : [entry];
      const isCombo = Array.isArray(head);
      const type = isCombo ? 'COMBO' : String(head);
      const widget = !opts.forceInput && WIDGET_TYPES.has(type);
      out.push({ name, type, opts, widget, optional: section === 'optional',
        choices: isCombo ? head : null,
        seed: widget && type === 'INT' && (opts.control_after_generate || /^(noise_)?seed$/.test(name)) });
    }
  }
  return out;
}

export function describeOutputs(def) {
  return (def.output || []).map((type, i) => ({
    type: Array.isArray(type) ? 'COMBO' : String(type),
    name: (def.output_name && def.output_name[i]) || String(type),
    list: !!(def.output_is_list && def.output_is_list[i]),
  }));
}

export function defaultValue(input) {
  const { opts, type, choices } = input;
  if (opts.default !== undefined) return opts.default;
  if (choices) return choices[0] ?? '';
  if (type === 'INT' || type === 'FLOAT') return opts.min !== undefined && opts.min > 0 ? opts.min : 0;
  if (type === 'BOOLEAN') return false;
  return '';
}

// Servers list a node under several names (sdgraph's and ComfyUI's): map each name to the first-listed twin.
export function primaryNames(defs) {
  const seen = new Map(), out = {};
  for (const [name, def] of Object.entries(defs)) {
    const key = JSON.stringify([def.display_name, def.category, def.description, def.input, def.output, def.output_name]);
    if (!seen.has(key)) seen.set(key, name);
    out[name] = seen.get(key);
  }
  return out;
}

export class Graph {
  constructor(defs = {}) {
    this.defs = defs;
    this.clear();
  }

  clear() {
    this.nodes = new Map();
    this.links = new Map();
    this.nextNode = 1;
    this.nextLink = 1;
  }

  inputsOf(node) {
    const def = this.defs[node.type];
    return def ? describeInputs(def) : Object.keys(node.widgets).map(name => ({ name, type: '*', opts: {}, widget: true }))
      .concat(this.linksInto(node.id).filter(l => !(l.to[1] in node.widgets)).map(l => ({ name: l.to[1], type: l.type, opts: {} })));
  }

  outputsOf(node) {
    const def = this.defs[node.type];
    if (def) return describeOutputs(def);
    const n = Math.max(-1, ...this.linksFrom(node.id).map(l => l.from[1])) + 1;
    return Array.from({ length: n }, (_, i) => ({ type: '*', name: `output ${i}` }));
  }

  addNode(type, pos = [0, 0], id = null) {
    const nodeId = id != null ? String(id) : String(this.nextNode);
    this.nextNode = Math.max(this.nextNode, (parseInt(nodeId, 10) || 0) + 1);
    const node = { id: nodeId, type, title: null, pos: [Math.round(pos[0]), Math.round(pos[1])], width: null,
      widgets: {}, converted: [], control: {} };
    const def = this.defs[type];
    if (def) {
      for (const input of describeInputs(def)) {
        if (!input.widget) continue;
        node.widgets[input.name] = defaultValue(input);
        if (input.seed) node.control[input.name] = 'randomize';
      }
    }
    this.nodes.set(nodeId, node);
    this.onNodeAdded?.(node); // packs' extensions hear of each new node (nodeCreated)
    return node;
  }

  title(node) {
    const def = this.defs[node.type];
    return node.title || (def && def.display_name) || node.type;
  }

  removeNode(id) {
    for (const link of [...this.links.values()]) {
      if (link.from[0] === id || link.to[0] === id) this.links.delete(link.id);
    }
    this.nodes.delete(id);
  }

  linksInto(id) { return [...this.links.values()].filter(l => l.to[0] === id); }
  linksFrom(id) { return [...this.links.values()].filter(l => l.from[0] === id); }
  linkInto(id, name) { return [...this.links.values()].find(l => l.to[0] === id && l.to[1] === name) || null; }

  // Can output `slot` of node `fromId` feed input `name` of node `toId`? Returns null if yes, else the reason.
  refuse(fromId, slot, toId, name) {
    const from = this.nodes.get(fromId), to = this.nodes.get(toId);
    if (!from || !to) return 'missing node';
    if (fromId === toId) return 'a node cannot feed itself';
    const out = this.outputsOf(from)[slot];
    const input = this.inputsOf(to).find(i => i.name === name);
    if (!out || !input) return 'no such socket';
    if (!typesMatch(out.type, input.type)) return `${out.type} cannot connect to ${input.type}`;
    if (this.reaches(toId, fromId)) return 'that would make a cycle';
    return null;
  }

  reaches(start, goal) {
    const seen = new Set([start]), stack = [start];
    while (stack.length) {
      const id = stack.pop();
      if (id === goal) return true;
      for (const l of this.linksFrom(id)) if (!seen.has(l.to[0])) { seen.add(l.to[0]); stack.push(l.to[0]); }
    }
    return false;
  }

  connect(fromId, slot, toId, name) {
    const reason = this.refuse(fromId, slot, toId, name);
    if (reason) return { error: reason };
    const old = this.linkInto(toId, name);
    if (old) this.links.delete(old.id);
    const out = this.outputsOf(this.nodes.get(fromId))[slot];
    const link = { id: this.nextLink++, from: [fromId, slot], to: [toId, name], type: out.type };
    this.links.set(link.id, link);
    return { link };
  }

  disconnect(toId, name) {
    const old = this.linkInto(toId, name);
    if (old) this.links.delete(old.id);
    return old;
  }

  // ---- the editor's saved format
  serialize(extra = {}) {
    return {
      format: 'sdgraph-editor', version: 1,
      nodes: [...this.nodes.values()].map(n => ({ id: n.id, class_type: n.type, ...(n.title ? { title: n.title } : {}),
        pos: n.pos, ...(n.width ? { size: [n.width, 0] } : {}), widgets: { ...n.widgets },
        ...(n.converted.length ? { converted: [...n.converted] } : {}),
        ...(Object.keys(n.control).length ? { control_after_generate: { ...n.control } } : {}) })),
      links: [...this.links.values()].map(l => ({ id: l.id, from: l.from, to: l.to, type: l.type })),
      ...extra,
    };
  }

  load(data) {
    this.clear();
    for (const n of data.nodes || []) {
      const node = this.addNode(n.class_type, n.pos || [0, 0], n.id);
      node.title = n.title || null;
      node.width = n.size ? n.size[0] : null;
      Object.assign(node.widgets, n.widgets || {});
      node.converted = [...(n.converted || [])];
      Object.assign(node.control, n.control_after_generate || {});
    }
    for (const l of data.links || []) {
      const from = [String(l.from[0]), l.from[1]], to = [String(l.to[0]), l.to[1]];
      if (!this.nodes.has(from[0]) || !this.nodes.has(to[0])) continue;
      const link = { id: l.id || this.nextLink, from, to, type: l.type || '*' };
      this.nextLink = Math.max(this.nextLink, link.id + 1);
      this.links.set(link.id, link);
    }
  }

  // ---- the API format that /prompt runs
  toApi() {
    const api = {};
    for (const node of this.nodes.values()) {
      const inputs = {};
      for (const input of this.inputsOf(node)) {
        const link = this.linkInto(node.id, input.name);
        if (link) inputs[input.name] = [link.from[0], link.from[1]];
        else if (input.widget && !node.converted.includes(input.name) && input.name in node.widgets) {
          inputs[input.name] = node.widgets[input.name];
        }
      }
      api[node.id] = { class_type: node.type, inputs, _meta: { title: this.title(node) } };
    }
    return api;
  }

  // Load an API-format workflow; nodes get a layered layout (columns by depth).
  loadApi(api) {
    this.clear();
    const ids = Object.keys(api);
    for (const id of ids) {
      const entry = api[id];
      const node = this.addNode(entry.class_type, [0, 0], id);
      if (entry._meta && entry._meta.title && entry._meta.title !== this.title(node)) node.title = entry._meta.title;
      for (const [name, value] of Object.entries(entry.inputs || {})) {
        if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && Number.isInteger(value[1])) continue;
        node.widgets[name] = value;
      }
      if (Object.keys(node.control).length) for (const k of Object.keys(node.control)) node.control[k] = 'fixed';
    }
    for (const id of ids) {
      for (const [name, value] of Object.entries(api[id].inputs || {})) {
        if (!(Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && Number.isInteger(value[1]))) continue;
        const from = String(value[0]);
        if (!this.nodes.has(from)) continue;
        const node = this.nodes.get(id);
        const input = this.inputsOf(node).find(i => i.name === name);
        if (input && input.widget && !node.converted.includes(name)) delete node.widgets[name];
        const out = this.outputsOf(this.nodes.get(from))[value[1]];
        const link = { id: this.nextLink++, from: [from, value[1]], to: [id, name], type: out ? out.type : '*' };
        this.links.set(link.id, link);
      }
    }
    this.autoLayout();
  }

  depths() {
    const depth = {};
    const visit = (id, trail = new Set()) => {
      if (depth[id] !== undefined) return depth[id];
      if (trail.has(id)) return 0;
      trail.add(id);
      let d = 0;
      for (const l of this.linksInto(id)) d = Math.max(d, visit(l.from[0], trail) + 1);
      return (depth[id] = d);
    };
    for (const id of this.nodes.keys()) visit(id);
    return depth;
  }

  // heights: optional map id -> measured height in px.
  autoLayout(heights = {}) {
    const depth = this.depths();
    const columns = {};
    for (const id of this.nodes.keys()) (columns[depth[id]] ||= []).push(id);
    for (const [col, ids] of Object.entries(columns)) {
      let y = 40;
      for (const id of ids) {
        const node = this.nodes.get(id);
        node.pos = [40 + col * 300, y];
        const widgets = Object.keys(node.widgets).length + this.outputsOf(node).length + this.linksInto(id).length;
        y += (heights[id] || 60 + widgets * 30) + 30;
      }
    }
  }

  // After a run is queued: step the seeds whose mode says so. Returns true if anything changed.
  applyControlAfterRun() {
    let changed = false;
    for (const node of this.nodes.values()) {
      for (const [name, mode] of Object.entries(node.control)) {
        const v = Number(node.widgets[name]) || 0;
        const def = (this.inputsOf(node).find(i => i.name === name) || { opts: {} }).opts;
        const min = def.min ?? 0, max = Math.min(def.max ?? SEED_MAX, SEED_MAX);
        let next = v;
        if (mode === 'increment') next = v + 1 > max ? min : v + 1;
        else if (mode === 'decrement') next = v - 1 < min ? max : v - 1;
        else if (mode === 'randomize') next = min + Math.floor(Math.random() * (max - min + 1));
        if (next !== v) { node.widgets[name] = next; changed = true; }
      }
    }
    return changed;
  }
}

// Accept any of: the editor format, an API-format prompt, or a ComfyUI editor workflow (litegraph shape).
export function detectFormat(data) {
  if (!data || typeof data !== 'object') return null;
  if (Array.isArray(data.nodes) && data.nodes.every(n => n && 'class_type' in n)) return 'editor';
  if (Array.isArray(data.nodes) && data.nodes.every(n => n && 'type' in n)) return 'litegraph';
  const values = Object.values(data);
  if (values.length && values.every(v => v && typeof v === 'object' && 'class_type' in v)) return 'api';
  return null;
}
