"""A worker process for test_multiprocess.py.

Usage: mp_worker.py REDIS_URL KEY_PREFIX OUT_DIR NAME

Handles batches until OUT_DIR/stop exists. For every batch it appends
"start end pid name message,message,..." to OUT_DIR/<conversation>.log; the
start and end timestamps (time.time()) bracket the handler, so overlapping
intervals of one conversation would mean two turns at once.
"""

import os
import random
import sys
import time

import runlane


def main():
    url, prefix, out, name = sys.argv[1:5]

    def handler(batch):
        start = time.time()
        time.sleep(random.uniform(0.01, 0.04))  # "the model runs"
        end = time.time()
        line = "%.6f %.6f %d %s %s\n" % (
            start,
            end,
            os.getpid(),
            name,
            ",".join(m.content for m in batch.messages),
        )
        with open(os.path.join(out, batch.conversation_id + ".log"), "a") as f:
            f.write(line)

    q = runlane.AssistantMessageQueue(
        handler,
        store=url,
        key_prefix=prefix,
        worker_id=name,
        batch_window_ms=20,
        batch_max_wait_ms=200,
        worker_concurrency=3,
        worker_poll_ms=20,
        lease_ms=5000,
        handler_threads=3,
    )
    q.start_worker()
    open(os.path.join(out, "ready-" + name), "w").close()
    while not os.path.exists(os.path.join(out, "stop")):
        time.sleep(0.02)
    q.close(drain=True, timeout=5)


if __name__ == "__main__":
    main()
