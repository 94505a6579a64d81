// Literal inputs as form controls: number, combo, text, multiline text, toggle, and the seed's after-run mode.
import { SEED_MODES } from './graph.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) el.append(c);
  return el;
}

function clampNumber(input, raw) {
  const { opts, type } = input;
  let v = Number(raw);
  if (!Number.isFinite(v)) v = Number(opts.default ?? 0);
  if (type === 'INT') v = Math.round(v);
  if (opts.min !== undefined) v = Math.max(opts.min, v);
  if (opts.max !== undefined) v = Math.min(opts.max, v);
  return v;
}

// Returns the control; onChange(value) is called with a value of the input's type.
export function widgetControl(input, value, onChange) {
  const { type, opts, name } = input;
  const common = { 'data-widget': name, title: opts.tooltip || null, 'aria-label': name };
  if (type === 'COMBO') {
    const choices = input.choices || [];
    const select = h('select', { ...common, onchange: () => onChange(choices[select.selectedIndex]) },
      choices.map(c => h('option', { text: String(c) })));
    const i = choices.findIndex(c => c === value);
    if (i >= 0) select.selectedIndex = i;
    else { select.prepend(h('option', { text: `${value} (missing)` })); select.selectedIndex = 0; select.classList.add('invalid'); }
    return select;
  }
  if (type === 'INT' || type === 'FLOAT') {
    const el = h('input', { ...common, type: 'number', value: String(value),
      step: opts.step !== undefined ? String(opts.step) : type === 'INT' ? '1' : 'any',
      min: opts.min !== undefined ? String(opts.min) : null, max: opts.max !== undefined ? String(opts.max) : null });
    el.addEventListener('change', () => {
      const v = clampNumber(input, el.value);
      el.value = String(v);
      onChange(v);
    });
    return el;
  }
  if (type === 'BOOLEAN') {
    const on = opts.label_on || 'on', off = opts.label_off || 'off';
    const text = h('span', { text: value ? on : off });
    const box = h('input', { type: 'checkbox', checked: !!value, ...common,
      onchange: () => { text.textContent = box.checked ? on : off; onChange(box.checked); } });
    return h('label', { class: 'toggle' }, box, text);
  }
  if (opts.multiline) {
    const area = h('textarea', { ...common, spellcheck: false, placeholder: name, onchange: () => onChange(area.value) });
    area.value = value ?? '';
    return area;
  }
  const el = h('input', { ...common, type: 'text', value: String(value ?? ''), onchange: () => onChange(el.value) });
  return el;
}

export function seedModeControl(name, mode, onChange) {
  const select = h('select', { 'data-control': name, title: 'What happens to the seed after each run',
    onchange: () => onChange(select.value) }, SEED_MODES.map(m => h('option', { value: m, text: m })));
  select.value = mode;
  return select;
}
