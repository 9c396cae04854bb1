import json,sys,glob,statistics as st
# usage: cpu.py DIR... ; prints Varve+etcd CPU s per target/workload per run, and medians per variant
rows={}
for d in sys.argv[1:]:
    v=d.rstrip('/').split('/')[-1].rsplit('-',1)[0]
    r=json.load(open(d+'/report.json'))
    for x in r['results']:
        cpu=sum(p['cpu_seconds'] for p in x['processes'] if p['name'].startswith('varve') or p['name']=='etcd')
        rows.setdefault((x['target'],x['workload']['name']),{}).setdefault(v,[]).append((round(cpu,2), x['errors'], x['ack_latency']['p99_ms']))
for k,vs in sorted(rows.items()):
    print(k, {v:(st.median([c for c,_,_ in l]), [c for c,_,_ in l], 'err',sum(e for _,e,_ in l), 'p99',[p for _,_,p in l]) for v,l in vs.items()})
