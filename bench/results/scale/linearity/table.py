# usage: table.py [DIR]: Varve + etcd CPU s per MiB ingested of each target and rate, median of the rounds, and its ratio to one ingest node at 5,000 rec/s
import json,glob,statistics as st,collections,sys
rows=collections.defaultdict(list)
for d in sorted(glob.glob((sys.argv[1] if len(sys.argv)>1 else 'bench/results/scale/linearity')+'/tiered-*-*-*/')):
    t,n,rate,r=d.rstrip('/').split('/')[-1].split('-')
    rep=json.load(open(d+'report.json'))
    for x in rep['results']:
        cpu=sum(p['cpu_seconds'] for p in x['processes'] if p['name'].startswith('varve') or p['name']=='etcd')
        mib=x['varve']['counters']['ingest_bytes']/2**20
        rows[(x['workload']['name'],n,rate)].append((cpu/mib, x['achieved_records_s'], x['ack_latency']['p99_ms'], x['errors']))
base={}
for k in sorted(rows, key=lambda k:(k[0],int(k[1]),int(k[2]))):
    l=rows[k]; m=st.median([a for a,_,_,_ in l])
    if k[1]=='1' and k[2]=='5000': base[k[0]]=m
    print(k, 's/MiB %.3f'%m, 'x1node@5000 %.2f'%(m/base[k[0]]), [round(a,3) for a,_,_,_ in l], 'achieved',[round(b) for _,b,_,_ in l],'p99',[round(c) for _,_,c,_ in l],'err',[e for *_,e in l])
