// The canvas: nodes as DOM, wires as SVG; pan, zoom, selection, moving, wiring, undo/redo and run state.
import { h, widgetControl, seedModeControl } from './widgets.js';
import { typesMatch } from './graph.js';

const SVG = 'http://www.w3.org/2000/svg';
const COLORS = { MODEL: '#b39ddb', CLIP: '#ffd54f', VAE: '#ef5350', CONDITIONING: '#ffa726', LATENT: '#f48fb1',
  IMAGE: '#64b5f6', MASK: '#81c784', CONTROL_NET: '#4db6ac', INT: '#9e9e9e', FLOAT: '#bdbdbd', STRING: '#a5d6a7',
  BOOLEAN: '#90caf9', COMBO: '#ce93d8', '*': '#e0e0e0' };

export function typeColor(type) {
  const t = String(type).split(',')[0].trim();
  if (COLORS[t]) return COLORS[t];
  let hash = 0;
  for (const ch of t) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 65%)`;
}

export class Editor {
  constructor(root, graph, hooks) {
    this.root = root;
    this.graph = graph;
    this.hooks = hooks;
    this.view = { x: 0, y: 0, zoom: 1 };
    this.selected = new Set();
    this.undoStack = [];
    this.redoStack = [];
    this.snapshot = JSON.stringify(graph.serialize());
    this.run = { running: null, cached: new Set(), progress: {}, errors: {}, images: {}, texts: {}, preview: {} };
    this.world = h('div', { class: 'world' });
    this.svg = document.createElementNS(SVG, 'svg');
    this.svg.classList.add('wires');
    this.world.append(this.svg);
    this.box = h('div', { class: 'box-select', hidden: true });
    root.append(this.world, this.box);
    this.nodeEls = new Map();
    root.addEventListener('pointerdown', e => this.pointerDown(e));
    root.addEventListener('wheel', e => this.wheel(e), { passive: false });
    root.addEventListener('dblclick', e => {
      if (e.target === root || e.target === this.world || e.target === this.svg) hooks.openSearch(e.clientX, e.clientY);
    });
    root.addEventListener('contextmenu', e => {
      const el = e.target.closest('[data-node-id]');
      if (!el || e.target.closest('input, textarea')) return;
      e.preventDefault();
      hooks.nodeMenu(this.graph.nodes.get(el.dataset.nodeId), e.clientX, e.clientY);
    });
    new ResizeObserver(() => this.drawWires()).observe(root);
  }

  // ---- coordinates and view
  toWorld(cx, cy) {
    const r = this.root.getBoundingClientRect();
    return [(cx - r.left - this.view.x) / this.view.zoom, (cy - r.top - this.view.y) / this.view.zoom];
  }

  center() {
    const r = this.root.getBoundingClientRect();
    return this.toWorld(r.left + r.width / 2, r.top + r.height / 3);
  }

  applyView() {
    const { x, y, zoom } = this.view;
    this.world.style.transform = `translate(${x}px, ${y}px) scale(${zoom})`;
    this.root.style.backgroundPosition = `${x}px ${y}px`;
    this.root.style.backgroundSize = `${24 * zoom}px ${24 * zoom}px`;
  }

  fit() {
    const els = [...this.nodeEls.values()];
    if (!els.length) { this.view = { x: 0, y: 0, zoom: 1 }; this.applyView(); return; }
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const el of els) {
      const n = this.graph.nodes.get(el.dataset.nodeId);
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1]);
      x1 = Math.max(x1, n.pos[0] + el.offsetWidth); y1 = Math.max(y1, n.pos[1] + el.offsetHeight);
    }
    const r = this.root.getBoundingClientRect();
    const zoom = Math.max(0.25, Math.min(1, (r.width - 60) / (x1 - x0), (r.height - 60) / (y1 - y0)));
    this.view = { zoom, x: (r.width - (x1 - x0) * zoom) / 2 - x0 * zoom, y: (r.height - (y1 - y0) * zoom) / 2 - y0 * zoom };
    this.applyView();
    this.drawWires();
  }

  wheel(e) {
    const area = e.target.closest('textarea');
    if (area && area.scrollHeight > area.clientHeight) return;
    e.preventDefault();
    const r = this.root.getBoundingClientRect();
    const px = e.clientX - r.left, py = e.clientY - r.top;
    const dy = e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 800 : 1); // Firefox scrolls by lines
    const zoom = Math.min(3, Math.max(0.2, this.view.zoom * Math.pow(1.0015, -dy)));
    const k = zoom / this.view.zoom;
    this.view = { zoom, x: px - (px - this.view.x) * k, y: py - (py - this.view.y) * k };
    this.applyView();
  }

  // ---- history: every committed change is one undo step
  commit({ render = true } = {}) {
    const now = JSON.stringify(this.graph.serialize());
    if (now === this.snapshot) { if (render) this.render(); return; }
    this.undoStack.push(this.snapshot);
    if (this.undoStack.length > 200) this.undoStack.shift();
    this.redoStack = [];
    this.snapshot = now;
    if (render) this.render();
    this.hooks.changed();
  }

  restore(json) {
    this.graph.load(JSON.parse(json));
    this.snapshot = json;
    this.selected = new Set([...this.selected].filter(id => this.graph.nodes.has(id)));
    this.render();
    this.hooks.changed();
  }

  undo() { if (this.undoStack.length) { this.redoStack.push(this.snapshot); this.restore(this.undoStack.pop()); } }
  redo() { if (this.redoStack.length) { this.undoStack.push(this.snapshot); this.restore(this.redoStack.pop()); } }

  // A whole new workflow: history starts over.
  reset() {
    this.snapshot = JSON.stringify(this.graph.serialize());
    this.undoStack = []; this.redoStack = [];
    this.selected.clear();
    this.clearRun(true);
    this.render();
    this.hooks.changed();
  }

  // ---- editing
  addNode(type, pos) {
    const node = this.graph.addNode(type, pos || this.freeSpot(this.center()));
    this.select([node.id]);
    this.commit();
    return node;
  }

  // A point near `pos` where a new node (about 260 x 220) overlaps none: step right past whatever is in the way.
  freeSpot([x, y]) {
    for (let i = 0; i < 40; i++) {
      const hit = [...this.nodeEls].find(([id, el]) => {
        const p = this.graph.nodes.get(id).pos;
        return x < p[0] + el.offsetWidth + 20 && p[0] < x + 260 && y < p[1] + el.offsetHeight + 20 && p[1] < y + 220;
      });
      if (!hit) break;
      x = this.graph.nodes.get(hit[0]).pos[0] + hit[1].offsetWidth + 30;
    }
    return [x, y];
  }

  select(ids, add = false) {
    if (!add) this.selected.clear();
    for (const id of ids) this.selected.add(id);
    for (const [id, el] of this.nodeEls) el.classList.toggle('selected', this.selected.has(id));
  }

  deleteSelected() {
    if (!this.selected.size) return;
    for (const id of this.selected) this.graph.removeNode(id);
    this.selected.clear();
    this.commit();
  }

  copy() {
    if (!this.selected.size) return null;
    const data = this.graph.serialize();
    data.nodes = data.nodes.filter(n => this.selected.has(n.id));
    data.links = data.links.filter(l => this.selected.has(l.from[0]) && this.selected.has(l.to[0]));
    return data;
  }

  paste(data, at) {
    if (!data || !data.nodes || !data.nodes.length) return;
    const x0 = Math.min(...data.nodes.map(n => n.pos[0])), y0 = Math.min(...data.nodes.map(n => n.pos[1]));
    const [ax, ay] = at || [x0 + 30, y0 + 30];
    const ids = {};
    for (const n of data.nodes) {
      const node = this.graph.addNode(n.class_type, [n.pos[0] - x0 + ax, n.pos[1] - y0 + ay]);
      Object.assign(node.widgets, n.widgets); Object.assign(node.control, n.control_after_generate || {});
      node.title = n.title || null; node.width = n.size ? n.size[0] : null; node.converted = [...(n.converted || [])];
      ids[n.id] = node.id;
    }
    for (const l of data.links) this.graph.connect(ids[l.from[0]], l.from[1], ids[l.to[0]], l.to[1]);
    this.select(Object.values(ids));
    this.commit();
  }

  setConverted(node, name, asInput) {
    node.converted = node.converted.filter(n => n !== name);
    if (asInput) node.converted.push(name);
    else this.graph.disconnect(node.id, name);
    this.commit();
  }

  // ---- rendering
  render() {
    for (const [id, el] of this.nodeEls) if (!this.graph.nodes.has(id)) { el.remove(); this.nodeEls.delete(id); }
    for (const node of this.graph.nodes.values()) this.renderNode(node);
    this.applyView();
    this.drawWires();
  }

  renderNode(node) {
    const g = this.graph, run = this.run;
    const def = g.defs[node.type];
    const errors = run.errors[node.id];
    const el = h('div', { class: 'node', 'data-node-id': node.id, 'data-node-type': node.type });
    el.classList.toggle('selected', this.selected.has(node.id));
    el.classList.toggle('running', run.running === node.id);
    el.classList.toggle('cached', run.cached.has(node.id));
    el.classList.toggle('has-error', !!errors);
    el.classList.toggle('unknown', !def);
    el.classList.toggle('output-node', !!(def && def.output_node));
    el.style.transform = `translate(${node.pos[0]}px, ${node.pos[1]}px)`;
    if (node.width) el.style.width = `${node.width}px`;
    el.append(h('div', { class: 'node-title', title: (def && def.description) || node.type },
      h('span', { class: 'title-text', text: g.title(node) }),
      h('span', { class: 'badge', text: run.cached.has(node.id) ? 'cached' : run.running === node.id ? 'running' : '' })));
    if (!def) el.append(h('div', { class: 'node-msg', text: `Unknown node type ${node.type}` }));
    const inputs = g.inputsOf(node), outputs = g.outputsOf(node);
    const sockets = inputs.filter(i => !i.widget);
    const slots = h('div', { class: 'slots' });
    const rows = Math.max(sockets.length, outputs.length);
    for (let i = 0; i < rows; i++) {
      const input = sockets[i], out = outputs[i];
      slots.append(input ? this.inputRow(node, input, errors) : h('div', { class: 'row' }));
      slots.append(out ? h('div', { class: 'row out' }, h('span', { class: 'label', text: out.name }),
        this.socket('out', node.id, out.type, { 'data-index': i })) : h('div', { class: 'row' }));
    }
    el.append(slots);
    for (const input of inputs.filter(i => i.widget)) el.append(this.inputRow(node, input, errors));
    if (errors && errors.messages.length) {
      el.append(h('div', { class: 'node-errors' }, errors.messages.map(m => h('div', { text: m }))));
    }
    const images = run.preview[node.id] ? [run.preview[node.id]] : run.images[node.id] || this.inputPreview(node, inputs);
    if (images && images.length) {
      el.append(h('div', { class: 'node-images' }, images.map((src, i) => h('img', { src, alt: 'output image', draggable: 'false',
        class: run.preview[node.id] ? 'preview' : null, onclick: () => this.hooks.enlarge(images, i) }))));
    }
    const texts = run.texts[node.id];
    if (texts && texts.length) el.append(h('div', { class: 'node-text' }, texts.map(t => h('pre', { text: t }))));
    const p = run.progress[node.id];
    el.append(h('div', { class: 'progress', hidden: !p }, h('i', { style: p ? `width:${(100 * p[0] / p[1]).toFixed(1)}%` : '' })));
    el.append(h('div', { class: 'resize', title: 'Drag to resize' }));
    const old = this.nodeEls.get(node.id);
    if (old) old.replaceWith(el); else this.world.append(el);
    this.nodeEls.set(node.id, el);
    return el;
  }

  inputPreview(node, inputs) {
    const upload = inputs.find(i => i.widget && i.type === 'COMBO' && i.opts.image_upload);
    const name = upload && node.widgets[upload.name];
    if (!name || this.graph.linkInto(node.id, upload.name)) return null;
    const parts = String(name).split('/');
    return [this.hooks.viewUrl({ filename: parts.pop(), subfolder: parts.join('/'), type: 'input' })];
  }

  socket(kind, nodeId, type, attrs = {}) {
    return h('i', { class: `socket ${kind}`, 'data-socket': kind, 'data-node': nodeId, 'data-type': type,
      style: `--c:${typeColor(type)}`, title: type, ...attrs });
  }

  inputRow(node, input, errors) {
    const link = this.graph.linkInto(node.id, input.name);
    const converted = node.converted.includes(input.name);
    const error = errors && errors.inputs[input.name];
    const row = h('div', { class: `row in${input.widget ? ' widget' : ''}${link ? ' linked' : ''}${error ? ' input-error' : ''}`,
      'data-input': input.name, title: error || input.opts.tooltip || null },
    this.socket('in', node.id, input.type, { 'data-name': input.name, class: `socket in${input.widget && !link && !converted ? ' latent' : ''}` }));
    row.append(h('span', { class: 'label', text: input.name + (input.optional ? '?' : '') }));
    if (input.widget && !link && !converted) {
      const control = widgetControl(input, node.widgets[input.name], v => {
        node.widgets[input.name] = v;
        this.commit({ render: input.opts.image_upload === true });
      });
      row.append(control);
      if (input.opts.multiline) row.classList.add('multiline');
      if (input.opts.image_upload) {
        row.append(h('button', { class: 'small', 'data-upload': input.name, text: 'Upload…',
          onclick: () => this.hooks.pickUpload(node, input.name) }));
      }
      if (input.seed) {
        const mode = node.control[input.name] || 'fixed';
        const wrap = h('div', { class: 'row widget seed-mode' }, h('span', { class: 'label', text: 'after run' }),
          seedModeControl(input.name, mode, v => { node.control[input.name] = v; this.commit({ render: false }); }));
        return h('div', { class: 'rows' }, row, wrap);
      }
    } else if (input.widget) {
      row.append(h('span', { class: 'value', text: link ? 'linked' : 'input' }));
    }
    return row;
  }

  socketCenter(el) {
    const r = el.getBoundingClientRect();
    return this.toWorld(r.left + r.width / 2, r.top + r.height / 2);
  }

  findSocket(kind, nodeId, key) {
    const el = this.nodeEls.get(nodeId);
    if (!el) return null;
    return kind === 'out' ? el.querySelector(`[data-socket="out"][data-index="${key}"]`)
      : el.querySelector(`[data-socket="in"][data-name="${CSS.escape(key)}"]`);
  }

  wirePath(a, b) {
    const dx = Math.max(40, Math.abs(b[0] - a[0]) / 2);
    return `M${a[0]},${a[1]} C${a[0] + dx},${a[1]} ${b[0] - dx},${b[1]} ${b[0]},${b[1]}`;
  }

  drawWires() {
    const paths = [];
    for (const link of this.graph.links.values()) {
      const a = this.findSocket('out', link.from[0], link.from[1]), b = this.findSocket('in', link.to[0], link.to[1]);
      if (!a || !b) continue;
      const p = document.createElementNS(SVG, 'path');
      p.setAttribute('d', this.wirePath(this.socketCenter(a), this.socketCenter(b)));
      p.setAttribute('stroke', typeColor(link.type));
      p.dataset.linkId = link.id;
      p.dataset.from = `${link.from[0]}:${link.from[1]}`;
      p.dataset.to = `${link.to[0]}:${link.to[1]}`;
      paths.push(p);
    }
    if (this.tempWire) paths.push(this.tempWire);
    this.svg.replaceChildren(...paths);
  }

  // ---- pointer interaction
  pointerDown(e) {
    if (e.target.closest('input, textarea, select, button, .node-images img, label.toggle')) return;
    const socket = e.target.closest('[data-socket]');
    const nodeEl = e.target.closest('[data-node-id]');
    if (e.button === 0 && socket) return this.startWire(e, socket);
    if (e.button === 0 && e.target.classList.contains('resize')) return this.startResize(e, nodeEl);
    if (e.button === 0 && nodeEl) return this.startMove(e, nodeEl.dataset.nodeId);
    if (e.button === 0 && (e.shiftKey || e.ctrlKey || e.metaKey)) return this.startBox(e);
    if (e.button === 0 || e.button === 1) return this.startPan(e);
  }

  drag(e, onMove, onUp) {
    e.preventDefault();
    document.activeElement?.blur?.();
    const id = e.pointerId;
    this.root.setPointerCapture(id);
    const move = ev => { if (ev.pointerId === id) onMove(ev); };
    const up = ev => {
      if (ev.pointerId !== id) return;
      this.root.removeEventListener('pointermove', move);
      this.root.removeEventListener('pointerup', up);
      this.root.removeEventListener('pointercancel', up);
      onUp(ev);
    };
    this.root.addEventListener('pointermove', move);
    this.root.addEventListener('pointerup', up);
    this.root.addEventListener('pointercancel', up);
  }

  startPan(e) {
    const sx = e.clientX, sy = e.clientY, vx = this.view.x, vy = this.view.y;
    let moved = false;
    this.root.classList.add('panning');
    this.drag(e, ev => {
      moved ||= Math.abs(ev.clientX - sx) + Math.abs(ev.clientY - sy) > 3;
      this.view.x = vx + ev.clientX - sx; this.view.y = vy + ev.clientY - sy;
      this.applyView();
    }, () => {
      this.root.classList.remove('panning');
      if (!moved) this.select([]);
    });
  }

  startBox(e) {
    const r = this.root.getBoundingClientRect();
    const sx = e.clientX, sy = e.clientY;
    const rect = ev => [Math.min(sx, ev.clientX), Math.min(sy, ev.clientY), Math.max(sx, ev.clientX), Math.max(sy, ev.clientY)];
    this.box.hidden = false;
    this.drag(e, ev => {
      const [x0, y0, x1, y1] = rect(ev);
      Object.assign(this.box.style, { left: `${x0 - r.left}px`, top: `${y0 - r.top}px`, width: `${x1 - x0}px`, height: `${y1 - y0}px` });
    }, ev => {
      this.box.hidden = true;
      const [x0, y0, x1, y1] = rect(ev);
      const hit = [...this.nodeEls].filter(([, el]) => {
        const b = el.getBoundingClientRect();
        return b.right > x0 && b.left < x1 && b.bottom > y0 && b.top < y1;
      }).map(([id]) => id);
      this.select(hit, true);
    });
  }

  startMove(e, id) {
    const toggle = e.shiftKey || e.ctrlKey || e.metaKey;
    const wasSelected = this.selected.has(id);
    if (!wasSelected) this.select([id], toggle);
    const sx = e.clientX, sy = e.clientY;
    const start = new Map([...this.selected].map(n => [n, [...this.graph.nodes.get(n).pos]]));
    let moved = false;
    this.drag(e, ev => {
      const dx = (ev.clientX - sx) / this.view.zoom, dy = (ev.clientY - sy) / this.view.zoom;
      moved ||= Math.abs(dx) + Math.abs(dy) > 2;
      if (!moved) return;
      for (const [n, [x, y]] of start) {
        const node = this.graph.nodes.get(n);
        node.pos = [Math.round(x + dx), Math.round(y + dy)];
        this.nodeEls.get(n).style.transform = `translate(${node.pos[0]}px, ${node.pos[1]}px)`;
      }
      this.drawWires();
    }, () => {
      if (moved) this.commit({ render: false });
      else if (toggle && wasSelected) { this.selected.delete(id); this.select([], true); }
      else if (!toggle) this.select([id]);
    });
  }

  startResize(e, nodeEl) {
    const node = this.graph.nodes.get(nodeEl.dataset.nodeId);
    const sx = e.clientX, w = nodeEl.offsetWidth;
    this.drag(e, ev => {
      node.width = Math.max(160, Math.round(w + (ev.clientX - sx) / this.view.zoom));
      nodeEl.style.width = `${node.width}px`;
      this.drawWires();
    }, () => this.commit({ render: false }));
  }

  // Drag a wire from a socket; compatible sockets light up, the others dim; a drop on an incompatible one is refused.
  startWire(e, socket) {
    const g = this.graph;
    let from = null, to = null; // [nodeId, slot] for outputs, [nodeId, name] for inputs
    const nodeId = socket.dataset.node;
    if (socket.dataset.socket === 'out') from = [nodeId, Number(socket.dataset.index)];
    else {
      const link = g.linkInto(nodeId, socket.dataset.name);
      if (link) { g.disconnect(nodeId, socket.dataset.name); from = link.from; this.drawWires(); }
      else to = [nodeId, socket.dataset.name];
    }
    const detached = from && socket.dataset.socket === 'in';
    const type = from ? g.outputsOf(g.nodes.get(from[0]))[from[1]].type : socket.dataset.type;
    const anchor = this.socketCenter(from ? this.findSocket('out', from[0], from[1]) : socket);
    const wantKind = from ? 'in' : 'out';
    this.root.classList.add('wiring');
    for (const el of this.root.querySelectorAll('[data-socket]')) {
      if (el.dataset.socket !== wantKind) { el.classList.add('no'); continue; }
      const ok = from ? typesMatch(type, el.dataset.type) && el.dataset.node !== from[0]
        : typesMatch(el.dataset.type, type) && el.dataset.node !== to[0];
      el.classList.add(ok ? 'ok' : 'no');
    }
    for (const el of this.nodeEls.values()) el.classList.toggle('dim', !el.querySelector('.socket.ok'));
    this.tempWire = document.createElementNS(SVG, 'path');
    this.tempWire.classList.add('temp');
    this.tempWire.setAttribute('stroke', typeColor(type));
    const draw = ev => {
      const p = this.toWorld(ev.clientX, ev.clientY);
      this.tempWire.setAttribute('d', from ? this.wirePath(anchor, p) : this.wirePath(p, anchor));
      this.drawWires();
    };
    draw(e);
    this.drag(e, draw, ev => {
      this.tempWire = null;
      this.root.classList.remove('wiring');
      for (const el of this.root.querySelectorAll('.ok, .no, .dim')) el.classList.remove('ok', 'no', 'dim');
      const hit = document.elementFromPoint(ev.clientX, ev.clientY);
      const target = this.dropTarget(hit, wantKind, type, from || to);
      let result = null;
      if (target && from) result = g.connect(from[0], from[1], target.dataset.node, target.dataset.name);
      else if (target && to) result = g.connect(target.dataset.node, Number(target.dataset.index), to[0], to[1]);
      if (result && result.error) this.hooks.toast(`Not connected: ${result.error}.`, 'error');
      if ((result && result.link) || detached) this.commit();
      else this.drawWires();
    });
  }

  // The socket under the pointer, or on a node: the first compatible socket of the wanted kind.
  dropTarget(hit, kind, type, origin) {
    if (!hit) return null;
    const direct = hit.closest(`[data-socket="${kind}"]`) || hit.closest('.row')?.querySelector(`[data-socket="${kind}"]`);
    if (direct) return direct;
    const nodeEl = hit.closest('[data-node-id]');
    if (!nodeEl || nodeEl.dataset.nodeId === origin[0]) return null;
    const candidates = [...nodeEl.querySelectorAll(`[data-socket="${kind}"]`)].filter(el =>
      kind === 'in' ? typesMatch(type, el.dataset.type) : typesMatch(el.dataset.type, type));
    if (kind === 'in') {
      return candidates.find(el => !el.classList.contains('latent') && !this.graph.linkInto(el.dataset.node, el.dataset.name))
        || candidates.find(el => !el.classList.contains('latent')) || null;
    }
    return candidates[0] || null;
  }

  // ---- run state (driven by the server's events)
  clearRun(all = false) {
    this.run.running = null;
    this.run.cached = new Set();
    this.run.progress = {};
    this.run.preview = {};
    if (all) { this.run.errors = {}; this.run.images = {}; this.run.texts = {}; }
    this.render();
  }

  setRun(update) {
    Object.assign(this.run, update);
    this.render();
  }

  setProgress(id, value, max) {
    this.run.progress[id] = [value, max];
    const bar = this.nodeEls.get(id)?.querySelector('.progress');
    if (!bar) return;
    bar.hidden = false;
    bar.firstChild.style.width = `${(100 * value / max).toFixed(1)}%`;
  }
}
