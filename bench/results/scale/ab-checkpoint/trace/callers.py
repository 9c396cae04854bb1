#!/usr/bin/env python3
# callers.py DIR OUT: etcd Txn calls by caller per node process, from the
# snapshots trace.sh leaves in DIR (t.PID.at1000p when the 1,000-partition
# workload started, t.PID.last at the end); 8p: the counts up to then.
import glob, os, re, sys
d, out = sys.argv[1], sys.argv[2]
def load(f):
    m = {}
    if os.path.exists(f):
        for line in open(f):
            mm = re.match(r'\s*(\d+) (.*)', line.rstrip('\n'))
            if mm: m[mm.group(2)] = int(mm.group(1))
    return m
for f in sorted(glob.glob(os.path.join(d, 't.[0-9]*.at1000p'))):
    if '.last.' in f: continue
    pid = f.split('.')[-2]
    a, b = load(f), load(os.path.join(d, 't.%s.last' % pid))
    rows = sorted(set(a) | set(b), key=lambda k: -(b.get(k, 0) - a.get(k, 0)))
    with open('%s-%s-1000p.txt' % (out, pid), 'w') as w:
        w.write('# etcd Txn calls by caller during the 1,000-partition workload and its catch-up (counts at its end minus at its start); 8p: the same over the 8-partition workload before it\n')
        tot = 0
        for k in rows:
            n = b.get(k, 0) - a.get(k, 0); tot += n
            w.write('%7d (8p %6d) %s\n' % (n, a.get(k, 0), k))
        w.write('%7d (8p %6d) total\n' % (tot, sum(a.values())))
