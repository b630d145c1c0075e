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
