"""rediss:// from Python: the same C core, TLS included in the extension.

Makes test certificates with openssl and starts a redis-server with a TLS
port and a password (scripts/redis-server.sh tls-certs / start-tls); stops it
at the end. Needs redis-server and openssl: a missing one fails.
"""

import os
import subprocess
import uuid

import pytest

import runlane

from conftest import FAST, REPO, wait_until

SERVER = os.path.join(REPO, "scripts", "redis-server.sh")
PASSWORD = "pw-SECRET-py-3"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    certs = d / "certs"
    subprocess.run([SERVER, "tls-certs", str(certs)], check=True)
    out = subprocess.run([SERVER, "start-tls", str(d / "srv"), str(certs), "--requirepass", PASSWORD],
                         check=True, capture_output=True, text=True).stdout.split()
    try:
        yield {"certs": certs, "url": "rediss://:%s@127.0.0.1:%s/0" % (PASSWORD, out[1])}
    finally:
        subprocess.run([SERVER, "stop", str(d / "srv")])


def test_the_extension_has_tls():
    assert "redis_tls" in runlane.features()


def test_a_batch_flows_over_tls(tls):
    got = []
    opts = dict(FAST)
    opts.update(store=tls["url"], key_prefix="pytls" + uuid.uuid4().hex[:8],
                redis_tls_ca_file=str(tls["certs"] / "ca.crt"))
    q = runlane.AssistantMessageQueue(lambda b: got.append([m.content for m in b.messages]), **opts)
    try:
        q.start_worker()
        q.add_message_to_thread("conv-tls", "a")
        q.add_message_to_thread("conv-tls", "b")
        wait_until(lambda: got == [["a", "b"]], what="the batch over TLS")
        wait_until(lambda: q.get_queue_status()["inflight"] == 0, what="the ack over TLS")
    finally:
        q.close()


def test_wrong_ca_is_a_store_error_naming_it_without_the_password(tls):
    with pytest.raises(runlane.StoreError) as ei:
        runlane.AssistantMessageQueue(store=tls["url"],
                                      redis_tls_ca_file=str(tls["certs"] / "other-ca.crt"))
    msg = str(ei.value)
    assert "certificate verify failed" in msg, msg
    assert PASSWORD not in msg and PASSWORD not in repr(ei.value), msg
