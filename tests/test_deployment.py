"""Production shape: gunicorn with several workers on the test database, module state shared by all."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return json.loads(response.read())


def test_gunicorn_workers_share_module_state(database_url, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGLEDGER_")}
    env.update({"BIGLEDGER_ENV": "production", "BIGLEDGER_SECRET_KEY": "k" * 48, "BIGLEDGER_MAIL_PROVIDER": "smtp",
                "BIGLEDGER_DATABASE_URL": database_url, "BIGLEDGER_INSTANCE_PATH": str(tmp_path),
                "BIGLEDGER_EXTRA_PLUGINS": "tests.sample_plugin.plugin", "PYTHONPATH": str(ROOT)})
    server = subprocess.Popen([str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}",
                               "bigledger_core.wsgi:app"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                body = _health(port)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
                time.sleep(0.3)
        assert body["status"] == "ok" and "pos_bridge" in body["modules"]

        subprocess.run([str(BIN / "bigledger"), "modules", "disable", "pos_bridge"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        seen = [("pos_bridge" in _health(port)["modules"]) for _ in range(12)]
        assert seen == [False] * 12  # every worker reads the new state at once
        assert (tmp_path / "logs" / "bigledger.log").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_wsgi_app_sets_its_startup_objects_aside_from_the_garbage_collector(database_url, tmp_path):
    """What the app builds at start lives as long as the worker: the cyclic collector no longer walks it, so
    no request waits for a full collection of the whole app (150–200 ms each) — while the objects requests
    make are still collected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGLEDGER_")}
    env.update({"BIGLEDGER_ENV": "production", "BIGLEDGER_SECRET_KEY": "k" * 48, "BIGLEDGER_MAIL_PROVIDER": "smtp",
                "BIGLEDGER_DATABASE_URL": database_url, "BIGLEDGER_INSTANCE_PATH": str(tmp_path),
                "PYTHONPATH": str(ROOT)})
    script = ("import gc, bigledger_core.wsgi as w; frozen = gc.get_freeze_count(); "
              "c = w.app.test_client(); assert c.get('/health').status_code in (200, 503); "
              "print(frozen, gc.isenabled(), gc.get_threshold()[0])")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.split()
    assert int(out[0]) > 100_000 and out[1:] == ["True", "700"]
