import sys,re,collections
def load(p):
    d={}
    try:
        for line in open(p):
            if line.startswith('#') or not line.strip(): continue
            m=re.match(r'^(\S+?)(\{.*\})?\s+(\S+)$',line.strip())
            if not m: continue
            try: d[m.group(1)+(m.group(2) or '')]=float(m.group(3))
            except: pass
    except FileNotFoundError: pass
    return d
pat=re.compile(sys.argv[1])
rows=collections.OrderedDict()
for v in ['old','final']:
    for role in ['n0','n1']:
        last=load(f'/tmp/diagm/{v}.{role}.last'); start=load(f'/tmp/diagm/{v}.{role}.start')
        for k,x in last.items():
            if not pat.search(k): continue
            s=start.get(k,0.0)
            if s>x: s=0.0
            rows.setdefault((role,k),{})[v]=x-s
for (role,k),vals in rows.items():
    o,f=vals.get('old',0),vals.get('final',0)
    if o==0 and f==0: continue
    print(f"{role} {k[:150]:150s} {o:14.1f} {f:14.1f} {f/o if o else float('inf'):6.2f}")
