# usage: python3 cpu.py DIR (the OUT of run.sh): per round the fetch node's (node-1) and the Varve processes' + etcd CPU s, then both pooled per MiB per variant
import json,glob,collections,sys
T=collections.defaultdict(lambda: collections.defaultdict(float))
rows=[]
for d in sorted(glob.glob(sys.argv[1]+'/*-*')):
    v=d.split('/')[-1].rsplit('-',1)[0]; r=d.rsplit('-',1)[1]
    try: rep=json.load(open(d+'/report.json'))
    except Exception: continue
    for x in rep['results']:
        w=x['workload']['name']; mib=x['bytes']/2**20
        fetch=sum(p['cpu_seconds'] for p in x['processes'] if p['name']=='varve-serve-node-1')
        ve=sum(p['cpu_seconds'] for p in x['processes'] if p['name'].startswith('varve-serve') or p['name']=='etcd')
        T[(v,w)]['fetch']+=fetch; T[(v,w)]['ve']+=ve; T[(v,w)]['mib']+=mib; T[(v,w)]['n']+=1
        rows.append((w,r,v,round(fetch,2),round(ve,2),x['errors'],x['ack_latency']['p99_ms']))
for r in sorted(rows): print(r)
for k,t in sorted(T.items()):
    print(k,'rounds',int(t['n']),'fetch node CPU s/MiB',round(t['fetch']/t['mib'],4),'Varve+etcd s/MiB',round(t['ve']/t['mib'],4))
