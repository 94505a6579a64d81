// Read the text chunks (tEXt, iTXt, zTXt) of a PNG file: sdgraph stores "prompt" and "workflow" there; an
// animated PNG keeps them in private `comf` chunks laid out as tEXt (ComfyUI's SaveAnimatedPNG).

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function decode(bytes, utf8First = true) {
  if (utf8First) {
    try { return new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch { /* Latin-1 below */ }
  }
  return new TextDecoder('latin1').decode(bytes);
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function pngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(buffer);
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'iTXt' && type !== 'zTXt' && type !== 'comf') continue;
    const nul = data.indexOf(0);
    if (nul < 0) continue;
    const key = decode(data.subarray(0, nul), false);
    try {
      if (type === 'tEXt' || type === 'comf') out[key] = decode(data.subarray(nul + 1));
      else if (type === 'zTXt') out[key] = decode(await inflate(data.subarray(nul + 2)));
      else {
        const compressed = data[nul + 1];
        let p = nul + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        const text = data.subarray(p);
        out[key] = decode(compressed ? await inflate(text) : text);
      }
    } catch { /* a broken chunk is skipped */ }
  }
  return out;
}

// A WebP's EXIF chunk: ASCII entries of the first directory whose values read "key:text" ("prompt:{...}").
export function webpText(buffer) {
  const bytes = new Uint8Array(buffer), view = new DataView(buffer);
  if (bytes.length < 12 || decode(bytes.subarray(0, 4)) !== 'RIFF' || decode(bytes.subarray(8, 12)) !== 'WEBP') return null;
  const out = {};
  const end = Math.min(bytes.length, 8 + view.getUint32(4, true));
  for (let pos = 12; pos + 8 <= end;) {
    const length = view.getUint32(pos + 4, true);
    if (decode(bytes.subarray(pos, pos + 4)) === 'EXIF') Object.assign(out, exifText(bytes.subarray(pos + 8, pos + 8 + length)));
    pos += 8 + length + (length & 1);
  }
  return out;
}

function exifText(exif) {
  if (decode(exif.subarray(0, 6), false) === 'Exif\0\0') exif = exif.subarray(6);
  const mark = decode(exif.subarray(0, 2), false);
  if (exif.length < 8 || (mark !== 'II' && mark !== 'MM')) return {};
  const view = new DataView(exif.buffer, exif.byteOffset, exif.byteLength), le = mark === 'II';
  const ifd = view.getUint32(4, le), out = {};
  if (ifd + 2 > exif.length) return out;
  for (let i = 0, count = view.getUint16(ifd, le); i < count; i++) {
    const at = ifd + 2 + 12 * i;
    if (at + 12 > exif.length) break;
    const kind = view.getUint16(at + 2, le), n = view.getUint32(at + 4, le);
    if (kind !== 2 || !n) continue;
    const start = n <= 4 ? at + 8 : view.getUint32(at + 8, le);
    const raw = exif.subarray(start, start + n), nul = raw.indexOf(0);
    const text = decode(nul < 0 ? raw : raw.subarray(0, nul)), colon = text.indexOf(':');
    if (colon > 0) out[text.slice(0, colon)] = text.slice(colon + 1);
  }
  return out;
}
