// Reads Parquet files with DuckDB (@duckdb/node-api) and prints JSON lines:
// {"files":N} first, then one object per row ordered by partition and offset
// (binary columns as base64, null when null), then the column statistics
// DuckDB sees in the files' metadata ({"stats":[...]}).
// Usage: node read_parquet.mjs GLOB [COLUMN,...]   (hive partitioning is on)
// The optional columns (typed columns of a topic schema, say) are added to
// each row under "extra", as DuckDB prints them (VARCHAR, null when null).
import { DuckDBInstance } from '@duckdb/node-api';

const glob = process.argv[2];
const extra = (process.argv[3] || '').split(',').filter((c) => c !== '');
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
const q = async (sql) => (await con.runAndReadAll(sql)).getRowObjectsJson();
const src = `read_parquet('${glob.replaceAll("'", "''")}', hive_partitioning = true, union_by_name = false)`;
const out = [];
const files = await q(`SELECT count(DISTINCT filename) AS n FROM read_parquet('${glob.replaceAll("'", "''")}', filename = true)`);
out.push(JSON.stringify({ files: Number(files[0].n) }));
const rows = await q(`SELECT topic, "partition", "offset", epoch_ms("timestamp") AS ts,
    to_base64(key) AS key, to_base64(value) AS value,
    [ [h.key, to_base64(h.value)] FOR h IN headers ] AS headers
    ${extra.map((c, i) => `, CAST("${c}" AS VARCHAR) AS x${i}`).join('')}
  FROM ${src} ORDER BY "partition", "offset"`);
for (const r of rows) {
  if (extra.length > 0) {
    r.extra = Object.fromEntries(extra.map((c, i) => [c, r[`x${i}`]]));
    extra.forEach((_, i) => delete r[`x${i}`]);
  }
  out.push(JSON.stringify({ row: r }));
}
const stats = await q(`SELECT path_in_schema AS col, compression, stats_min AS min, stats_max AS max, stats_null_count AS nulls
  FROM parquet_metadata('${glob.replaceAll("'", "''")}') WHERE path_in_schema IN ('offset', 'timestamp') ORDER BY file_name, row_group_id, col`);
out.push(JSON.stringify({ stats }));
process.stdout.write(out.join('\n') + '\n');
