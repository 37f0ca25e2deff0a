"""Two worker processes share the load on Redis and never run one
conversation twice at once."""

import os
import random
import subprocess
import sys
import time

import runlane

from conftest import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_processes_share_conversations_without_overlap(redis_store, tmp_path):
    url, prefix = redis_store["store"], redis_store["key_prefix"]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "mp_worker.py"), url, prefix, str(tmp_path), "w%d" % i],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / ("ready-w%d" % i)).exists() for i in range(2)),
            timeout=20,
            what="workers ready",
        )
        convs = ["conv-%d" % i for i in range(8)]
        sent = {c: [] for c in convs}
        # The batching policy is applied at enqueue: the producer's counts.
        with runlane.AssistantMessageQueue(
            store=url, key_prefix=prefix, batch_window_ms=20, batch_max_wait_ms=200
        ) as producer:
            for i in range(120):
                c = random.choice(convs)
                producer.add_message_to_thread(c, "m%d" % i)
                sent[c].append("m%d" % i)
                if i % 10 == 0:
                    time.sleep(0.03)

            def delivered():
                n = 0
                for c in convs:
                    p = tmp_path / (c + ".log")
                    if p.exists():
                        n += sum(len(line.split()[4].split(",")) for line in p.read_text().splitlines())
                return n

            wait_until(lambda: delivered() >= 120, timeout=30, what="all 120 messages handled")
            wait_until(lambda: producer.get_queue_status()["inflight"] == 0, timeout=10)
            assert producer.get_queue_status()["dead"] == 0
    finally:
        (tmp_path / "stop").touch()
        outs = [p.communicate(timeout=20) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()

    pids = set()
    for c in convs:
        rows = []
        for line in (tmp_path / (c + ".log")).read_text().splitlines():
            start, end, pid, name, msgs = line.split()
            rows.append((float(start), float(end), name, msgs.split(",")))
            pids.add(pid)
        rows.sort()
        for a, b in zip(rows, rows[1:]):
            assert b[0] >= a[1], "%s ran twice at once: %s (%s) overlaps %s (%s)" % (c, a[:3], a[3], b[:3], b[3])
        got = [m for r in rows for m in r[3]]
        assert got == sent[c], "%s: delivered %s, sent %s" % (c, got, sent[c])
    assert len(pids) == 2, "both worker processes should have run batches: %s" % pids
