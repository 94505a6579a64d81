// Read the text chunks (tEXt, iTXt, zTXt) of a PNG file: sdgraph stores "prompt" and "workflow" there.

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
    if (type !== 'tEXt' && type !== 'iTXt' && type !== 'zTXt') continue;
    const nul = data.indexOf(0);
    if (nul < 0) continue;
    const key = decode(data.subarray(0, nul), false);
    try {
      if (type === 'tEXt') out[key] = decode(data.subarray(nul + 1));
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
