"""The runlane CLI over rediss:// (pytest; registered as the ctest `cli_tls`).

Makes test certificates with openssl and starts a redis-server with a TLS
port (scripts/redis-server.sh tls-certs / start-tls); stops it at the end.
Needs redis-server and openssl: a missing one fails.

Environment: RUNLANE_BIN  path to the built runlane program.
"""

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

BIN = os.environ.get("RUNLANE_BIN")
ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "redis-server.sh"
SCALE = int(os.environ.get("RUNLANE_TEST_TIME_SCALE", "1") or "1")
PASSWORD = "pw-SECRET-cli-5"


def run(*args, timeout=30):
    env = dict(os.environ)
    env.pop("RUNLANE_STORE", None)
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    assert BIN and os.access(BIN, os.X_OK), f"RUNLANE_BIN is not the runlane program: {BIN!r}"
    d = tmp_path_factory.mktemp("tls")
    certs = d / "certs"
    subprocess.run([str(SERVER), "tls-certs", str(certs)], check=True)
    out = subprocess.run([str(SERVER), "start-tls", str(d / "srv"), str(certs),
                          "--requirepass", PASSWORD],
                         check=True, capture_output=True, text=True).stdout.split()
    plain, tport = int(out[0]), int(out[1])
    try:
        yield {"certs": certs, "plain": plain, "tls": tport,
               "prefix": "clitls-" + uuid.uuid4().hex[:8]}
    finally:
        subprocess.run([str(SERVER), "stop", str(d / "srv")])


def test_version_lists_redis_tls():
    p = run("--version")
    assert p.returncode == 0 and "redis-tls" in p.stdout, p.stdout


def test_enqueue_and_status_over_tls(tls):
    store = f"rediss://:{PASSWORD}@127.0.0.1:{tls['tls']}/0"
    common = ["--store", store, "-X", f"redis.tls.ca.file={tls['certs'] / 'ca.crt'}",
              "-X", f"key.prefix={tls['prefix']}"]
    p = run(*common, "enqueue", "conv-1", "hello over TLS")
    assert p.returncode == 0, p.stderr
    p = run(*common, "status", "--json")
    assert p.returncode == 0, p.stderr
    assert '"pending":1' in p.stdout.replace(" ", ""), p.stdout
    for out in (p.stdout, p.stderr):
        assert PASSWORD not in out
    # the conf the CLI shows masks the password and shows the key file by path only
    p = run(*common, "-X", f"redis.tls.key.file={tls['certs'] / 'client.key'}",
            "-X", f"redis.tls.cert.file={tls['certs'] / 'client.crt'}", "config", "--values")
    key_body = (tls["certs"] / "client.key").read_text().splitlines()[1]
    assert "redis.tls.key.file" in p.stdout, p.stdout
    assert PASSWORD not in p.stdout and key_body not in p.stdout, p.stdout


def test_wrong_ca_is_a_clear_runtime_error_without_the_password(tls):
    p = run("--store", f"rediss://:{PASSWORD}@127.0.0.1:{tls['tls']}/0",
            "-X", f"redis.tls.ca.file={tls['certs'] / 'other-ca.crt'}", "status")
    assert p.returncode == 1, p.stderr
    assert "certificate verify failed" in p.stderr, p.stderr
    assert PASSWORD not in p.stderr, p.stderr


def test_wrong_server_name_is_named(tls):
    p = run("--store", f"rediss://127.0.0.1:{tls['tls']}/0",
            "-X", f"redis.tls.ca.file={tls['certs'] / 'ca.crt'}",
            "-X", "redis.tls.server.name=db.wrong.example", "status")
    assert p.returncode == 1, p.stderr
    assert 'not valid for "db.wrong.example"' in p.stderr, p.stderr


def test_plain_url_to_the_tls_port_fails_fast(tls):
    t0 = time.monotonic()
    p = run("--store", f"redis://127.0.0.1:{tls['tls']}/0", "status")
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert "use rediss://" in p.stderr, p.stderr
    # far below the 5 s default command timeout: no hang
    assert took < 2.5 * SCALE, f"took {took:.1f} s"


def test_insecure_opt_out_connects_and_warns(tls):
    p = run("--store", f"rediss://:{PASSWORD}@127.0.0.1:{tls['tls']}/0",
            "-X", "redis.tls.insecure.skip.verify=true", "status")
    assert p.returncode == 0, p.stderr
    assert "warning: redis.tls.insecure.skip.verify=true" in p.stderr, p.stderr
    assert "NOT verified" in p.stderr, p.stderr
