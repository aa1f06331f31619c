"""Claim and ack of embedded index jobs: the payload in the job row, or apart.

Measures what README "Round twelve" quotes: the SQLite statements of
queue/src/sqlite (claim by UPDATE ... RETURNING, ack by UPDATE) over 20,000
jobs of 6,500 bytes, in WAL with synchronous=FULL, once per schema.
Run: python3 bench/sqlite_claims.py [rounds]
"""
import os, sqlite3, sys, time, random
JOBS, CLAIM, SIZE = 20000, 256, 6500
def wchar():
    for line in open('/proc/self/io'):
        if line.startswith('wchar'): return int(line.split()[1])
def run(split):
    path = f'/tmp/micro-{split}.db'
    for s in ('', '-wal', '-shm'):
        if os.path.exists(path + s): os.remove(path + s)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA synchronous=FULL')
    pay = '' if split else 'payload TEXT NOT NULL,'
    c.execute(f'''CREATE TABLE queue_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, {pay}
      attempt INT NOT NULL DEFAULT 1, run_at BIGINT NOT NULL, lease_owner TEXT, lease_until BIGINT,
      dead INT NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]', enqueued_at BIGINT NOT NULL, trace TEXT, ready_at BIGINT)''')
    c.execute('CREATE INDEX ix ON queue_jobs (queue, dead, run_at)')
    c.execute('CREATE TABLE queue_counts (queue TEXT, state INT, n INT, PRIMARY KEY (queue, state))')
    c.execute('''CREATE TRIGGER cu AFTER UPDATE OF dead ON queue_jobs WHEN NEW.dead <> OLD.dead BEGIN
      UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.dead;
      INSERT INTO queue_counts (queue, state, n) SELECT NEW.queue, NEW.dead, 1 WHERE NEW.dead <> 0
      ON CONFLICT (queue, state) DO UPDATE SET n = n + 1; END''')
    if split:
        c.execute('CREATE TABLE queue_payloads (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)')
        c.execute('''CREATE VIEW v AS SELECT j.queue, p.payload, j.run_at, j.enqueued_at, j.trace FROM queue_jobs j JOIN queue_payloads p ON p.id = j.id''')
        c.execute('''CREATE TRIGGER vi INSTEAD OF INSERT ON v BEGIN
          INSERT INTO queue_jobs (queue, run_at, enqueued_at, trace) VALUES (NEW.queue, NEW.run_at, NEW.enqueued_at, NEW.trace);
          INSERT INTO queue_payloads (id, payload) VALUES (last_insert_rowid(), NEW.payload); END''')
        ins = 'INSERT INTO v (queue, payload, run_at, enqueued_at, trace) VALUES (?, ?, ?, ?, NULL)'
        col = "COALESCE((SELECT p.payload FROM queue_payloads p WHERE p.id = queue_jobs.id), '') AS payload"
    else:
        ins = 'INSERT INTO queue_jobs (queue, payload, run_at, enqueued_at, trace) VALUES (?, ?, ?, ?, NULL)'
        col = 'payload'
    random.seed(1)
    body = ''.join(random.choice('abcdefghij ') for _ in range(SIZE))
    w0, t0 = wchar(), time.perf_counter()
    for i in range(0, JOBS, 10):  # intake groups commit one job each; 10 per txn keeps this short
        c.execute('BEGIN')
        for k in range(10): c.execute(ins, ('index', body, 0, 0))
        c.execute('COMMIT')
    t_ins, w_ins = time.perf_counter() - t0, wchar() - w0
    w0, t0, n = wchar(), time.perf_counter(), 0
    while True:
        rows = c.execute(f'''UPDATE queue_jobs SET attempt = attempt + (lease_owner IS NOT NULL),
          lease_owner = 'worker-1', lease_until = 99 WHERE id IN (SELECT id FROM queue_jobs WHERE queue = 'index'
          AND dead = 0 AND run_at <= 1 AND (lease_until IS NULL OR lease_until < 1) ORDER BY id LIMIT {CLAIM})
          RETURNING id, {col}, attempt, errors, trace, run_at, enqueued_at''').fetchall()
        if not rows: break
        assert all(len(r[1]) == SIZE for r in rows)
        ids = ','.join(str(r[0]) for r in rows)
        c.execute(f'UPDATE queue_jobs SET dead = 2, ready_at = run_at, run_at = 5 WHERE id IN ({ids}) AND dead = 0')
        n += len(rows)
    t_run, w_run = time.perf_counter() - t0, wchar() - w0
    assert n == JOBS
    print(f"{'apart ' if split else 'in row'}: enqueue {JOBS/t_ins:8.0f} jobs/s {w_ins/JOBS/1024:5.1f} KiB written/job | "
          f"claim+ack {JOBS/t_run:8.0f} jobs/s {t_run/JOBS*1e6:6.1f} us/job {w_run/JOBS/1024:5.1f} KiB written/job")
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    run(False); run(True)
for split in (False, True):
    for s in ('', '-wal', '-shm'):
        if os.path.exists(f'/tmp/micro-{split}.db' + s): os.remove(f'/tmp/micro-{split}.db' + s)
