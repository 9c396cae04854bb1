// Reads an Arrow IPC stream (a file, or "-" for stdin) with the npm
// apache-arrow package and prints, as JSON lines: first the schema
// ({"schema":[{"name","type","nullable"}]}), then one object per row with
// binary columns as base64 (null when null), then {"batches":N,"rows":N}.
// Used by Go tests as an independent reader of Varve's Connect scan output.
import { readFileSync } from 'node:fs';
import { RecordBatchReader } from 'apache-arrow';

const path = process.argv[2] ?? '-';
const bytes = readFileSync(path === '-' ? 0 : path);
const reader = RecordBatchReader.from(bytes);
const b64 = (v) => (v === null || v === undefined ? null : Buffer.from(v).toString('base64'));
const out = [];
let batches = 0;
let rows = 0;
let schemaDone = false;
for (const batch of reader) {
  if (!schemaDone) {
    out.push(JSON.stringify({ schema: batch.schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable })) }));
    schemaDone = true;
  }
  batches++;
  for (let i = 0; i < batch.numRows; i++) {
    const row = batch.get(i);
    const headers = [];
    for (const h of row.headers ?? []) headers.push([h.key, b64(h.value)]);
    out.push(JSON.stringify({
      topic: row.topic,
      partition: row.partition,
      offset: String(row.offset), // int64 arrives as a BigInt
      timestamp: Number(row.timestamp),
      key: b64(row.key),
      value: b64(row.value),
      headers,
    }));
    rows++;
  }
}
if (!schemaDone) {
  // An empty stream still carries the schema.
  out.push(JSON.stringify({ schema: reader.schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable })) }));
}
out.push(JSON.stringify({ batches, rows }));
process.stdout.write(out.join('\n') + '\n');
