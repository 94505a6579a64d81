// Small pieces of UI: messages, menus, overlays (help, image viewer), the node palette and the search popup.
import { h } from './widgets.js';
import { primaryNames } from './graph.js';

export function toast(message, kind = 'info', ms = 4000) {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast ${kind}`, role: 'status', text: message, onclick: () => el.remove() });
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? ms * 2 : ms);
}

let menuEl = null;
export function closeMenu() { menuEl?.remove(); menuEl = null; }

export function showMenu(x, y, items) {
  closeMenu();
  menuEl = h('div', { class: 'menu', role: 'menu' }, items.map(item => item === '-' ? h('hr') :
    h('button', { role: 'menuitem', text: item.label, onclick: () => { closeMenu(); item.action(); } })));
  document.body.append(menuEl);
  const r = menuEl.getBoundingClientRect();
  menuEl.style.left = `${Math.min(x, innerWidth - r.width - 4)}px`;
  menuEl.style.top = `${Math.min(y, innerHeight - r.height - 4)}px`;
}
addEventListener('pointerdown', e => { if (menuEl && !menuEl.contains(e.target)) closeMenu(); }, true);

export function overlay(id, content) {
  closeOverlay();
  const el = h('div', { class: 'overlay', id, onclick: e => { if (e.target === el) closeOverlay(); } }, content);
  document.body.append(el);
  return el;
}
export function closeOverlay() {
  const open = document.querySelector('.overlay');
  if (open) { open.remove(); return true; }
  return false;
}

export const SHORTCUTS = [
  ['Ctrl+Enter', 'Queue the workflow'], ['Double-click canvas', 'Search and add a node'],
  ['Drag canvas / middle button', 'Pan'], ['Mouse wheel', 'Zoom'], ['Shift/Ctrl+drag canvas', 'Box select'],
  ['Shift/Ctrl+click', 'Add or remove a node from the selection'], ['Ctrl+A', 'Select all'],
  ['Delete / Backspace', 'Delete selected nodes'], ['Ctrl+C / Ctrl+V', 'Copy / paste nodes'], ['Ctrl+D', 'Duplicate'],
  ['Ctrl+Z / Ctrl+Y (Ctrl+Shift+Z)', 'Undo / redo'], ['Ctrl+S', 'Save workflow to a file'], ['Ctrl+O', 'Open a workflow file'],
  ['Right-click node', 'Rename, turn widgets into inputs and back, delete'], ['Drag from an input', 'Detach or move a wire'],
  ['.', 'Fit the whole workflow in view'], ['Q', 'Show or hide the queue and history'], ['?', 'This help'],
  ['Escape', 'Close overlays'],
];

export function showHelp() {
  overlay('help', h('div', { class: 'dialog' }, h('h2', { text: 'Keyboard and mouse' }),
    h('table', {}, SHORTCUTS.map(([k, v]) => h('tr', {}, h('td', {}, h('kbd', { text: k })), h('td', { text: v })))),
    h('p', { text: 'Drop a workflow file or a PNG made by sdgraph anywhere to open its workflow. Drop an image on a Load Image node to upload it.' }),
    h('button', { text: 'Close', onclick: closeOverlay })));
}

export function showImage(urls, index = 0) {
  let i = index;
  const img = h('img', { src: urls[i], alt: 'image', class: 'lightbox-img' });
  const step = d => { i = (i + d + urls.length) % urls.length; img.src = urls[i]; };
  const el = overlay('lightbox', h('div', { class: 'lightbox' }, img,
    urls.length > 1 ? h('div', {}, h('button', { text: 'Previous', onclick: () => step(-1) }),
      h('button', { text: 'Next', onclick: () => step(1) })) : null,
    h('a', { href: urls[i], target: '_blank', text: 'Open full size' })));
  img.onclick = () => el.remove();
}

// ---- node search, shared by the palette and the double-click popup
export function searchNodes(defs, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const hits = [], primary = primaryNames(defs);
  for (const [name, def] of Object.entries(defs)) {
    if (def.deprecated || primary[name] !== name) continue;
    const title = (def.display_name || name).toLowerCase();
    const hay = `${title} ${name.toLowerCase()} ${(def.category || '').toLowerCase()} ${(def.description || '').toLowerCase()}`;
    if (!words.every(w => hay.includes(w))) continue;
    const score = words.length ? (title.startsWith(words[0]) ? 0 : title.includes(words[0]) || name.toLowerCase().includes(words[0]) ? 1 : 2) : 0;
    hits.push([score, title, name]);
  }
  return hits.sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1])).map(x => x[2]);
}

function paletteItem(defs, name, onPick) {
  const def = defs[name];
  return h('div', { class: 'palette-item', 'data-palette-item': name, title: def.description || name, tabindex: '0',
    onpointerdown: e => onPick(e, name), onkeydown: e => { if (e.key === 'Enter') onPick(null, name); } },
  h('span', { text: def.display_name || name }));
}

// The sidebar: a search box and collapsible categories. pick(name, clientX?, clientY?) adds a node.
export function buildPalette(el, defs, pick) {
  const search = h('input', { type: 'search', placeholder: 'Search nodes…', id: 'palette-search', 'aria-label': 'Search nodes' });
  const list = h('div', { class: 'palette-list' });
  const startDrag = (e, name) => {
    if (!e) return pick(name);
    if (e.button !== 0) return;
    e.preventDefault();
    const sx = e.clientX, sy = e.clientY;
    let ghost = null;
    const move = ev => {
      if (!ghost && Math.abs(ev.clientX - sx) + Math.abs(ev.clientY - sy) < 6) return;
      ghost ||= document.body.appendChild(h('div', { class: 'drag-ghost', text: defs[name].display_name || name }));
      ghost.style.left = `${ev.clientX + 8}px`; ghost.style.top = `${ev.clientY + 8}px`;
    };
    const up = ev => {
      removeEventListener('pointermove', move); removeEventListener('pointerup', up);
      if (!ghost) return pick(name);
      ghost.remove();
      if (document.elementFromPoint(ev.clientX, ev.clientY)?.closest('#canvas')) pick(name, ev.clientX, ev.clientY);
    };
    addEventListener('pointermove', move); addEventListener('pointerup', up);
  };
  const render = () => {
    const q = search.value.trim();
    if (q) {
      const hits = searchNodes(defs, q);
      list.replaceChildren(...(hits.length ? hits.map(n => paletteItem(defs, n, startDrag)) : [h('p', { class: 'muted', text: 'No node matches.' })]));
      return;
    }
    const groups = {}, primary = primaryNames(defs);
    for (const [name, def] of Object.entries(defs)) {
      if (!def.deprecated && primary[name] === name) (groups[def.category || 'other'] ||= []).push(name);
    }
    list.replaceChildren(...Object.keys(groups).sort().map(cat => h('details', { open: true },
      h('summary', { text: cat }),
      groups[cat].sort((a, b) => (defs[a].display_name || a).localeCompare(defs[b].display_name || b))
        .map(n => paletteItem(defs, n, startDrag)))));
  };
  search.addEventListener('input', render);
  search.addEventListener('keydown', e => {
    if (e.key === 'Enter') { const first = list.querySelector('.palette-item'); if (first) pick(first.dataset.paletteItem); }
  });
  el.replaceChildren(search, list);
  render();
}

// The popup search at a point on the canvas.
export function searchPopup(defs, x, y, pick) {
  let active = 0, hits = [];
  const input = h('input', { type: 'search', placeholder: 'Add a node…', 'aria-label': 'Add a node' });
  const list = h('div', { class: 'search-results' });
  const box = h('div', { class: 'search-popup', style: `left:${Math.min(x, innerWidth - 320)}px;top:${Math.min(y, innerHeight - 340)}px` }, input, list);
  const close = () => { box.remove(); removeEventListener('pointerdown', outside, true); };
  const outside = e => { if (!box.contains(e.target)) close(); };
  const render = () => {
    hits = searchNodes(defs, input.value).slice(0, 30);
    active = Math.min(active, Math.max(0, hits.length - 1));
    list.replaceChildren(...hits.map((n, i) => h('div', { class: `palette-item${i === active ? ' active' : ''}`, 'data-palette-item': n,
      onpointerdown: e => { e.preventDefault(); close(); pick(n); } },
    h('span', { text: defs[n].display_name || n }), h('small', { text: defs[n].category || '' }))));
  };
  input.addEventListener('input', () => { active = 0; render(); });
  input.addEventListener('keydown', e => {
    if (e.key === 'ArrowDown') { active = Math.min(active + 1, hits.length - 1); render(); e.preventDefault(); }
    else if (e.key === 'ArrowUp') { active = Math.max(active - 1, 0); render(); e.preventDefault(); }
    else if (e.key === 'Enter' && hits[active]) { close(); pick(hits[active]); }
    else if (e.key === 'Escape') close();
    e.stopPropagation();
  });
  document.body.append(box);
  addEventListener('pointerdown', outside, true);
  render();
  input.focus();
}

// Packs that failed to load (the missing module named) and browser extensions that failed, at the foot of the
// node list; one message says how many.
export function showPackProblems(el, problems, extensions = []) {
  el.querySelector('#pack-problems')?.remove();
  if (!problems.length && !extensions.length) return;
  const failed = problems.filter(p => p.missing_module || /failed to import/.test(p.message));
  const items = problems.map(p => h('li', { class: 'pack-problem', 'data-pack': p.pack },
    h('strong', { text: p.pack.replace(/^custom_nodes\//, '') }),
    p.missing_module ? h('span', { class: 'missing', text: ` needs the module ${p.missing_module}` }) : null,
    h('small', { text: p.node ? `${p.node}: ${p.message}` : p.message })));
  const scripts = extensions.map(f => h('li', { class: 'pack-problem', 'data-extension': f.url },
    h('strong', { text: f.url.replace(/^\/extensions\//, '') }), h('small', { text: f.error })));
  el.append(h('details', { id: 'pack-problems', class: 'pack-problems', open: failed.length > 0 },
    h('summary', { text: `Load problems (${problems.length + extensions.length})` }), h('ul', {}, items),
    scripts.length ? h('p', { class: 'muted', text: 'Browser extensions that did not load or run:' }) : null,
    scripts.length ? h('ul', {}, scripts) : null));
  const parts = [];
  if (failed.length) {
    parts.push(`packs that failed to load: ${failed.map(p => p.missing_module
      ? `${p.pack} (module ${p.missing_module} is missing)` : p.pack).join(', ')}`);
  }
  if (extensions.length) parts.push(`${extensions.length} browser extension problem(s)`);
  if (parts.length) toast(`${parts.join('; ')} (see Load problems in the node list)`, 'error', 8000);
}
