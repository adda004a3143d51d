import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# ../shared sits beside the repository (CI clones it there); L5S_SHARED_DIR points elsewhere
SHARED_WARC = Path(os.environ.get("L5S_SHARED_DIR", ROOT.parent / "shared")) / "data" / "warc"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def shared_sample(name: str) -> Path:
    p = SHARED_WARC / name
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data/warc is provided beside the repository)")
    return p


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (jobs reuse it through getOrCreate)."""
    from laion5b_spark.spark import get_session

    s = get_session("laion5b-spark tests", "local", extra={"spark.master": "local[2]"})
    yield s
    s.stop()


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    from laion5b_spark.sample.crawl import make_sample_crawl

    out = tmp_path_factory.mktemp("crawl")
    return make_sample_crawl(str(out), files=3, pages_per_file=40, seed=1)


def wait_for_first_commit(lake, proc, table: str = "pairs", timeout: float = 180) -> int:
    """Poll a running job's manifest until it lists a unit (or the job ends); how many units it lists."""
    import orjson

    manifest = Path(lake) / table / "_manifest.json"
    deadline = time.time() + timeout
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            committed = len(orjson.loads(manifest.read_bytes())["files"])
            if committed >= 1:
                break
        time.sleep(0.05)
    return committed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolate_hf_hub(monkeypatch, cache: Path, offline: bool) -> Path:
    """An empty HF cache at ``cache`` and a hub endpoint on a closed local port, HF_HUB_OFFLINE as asked: no test
    reads the real cache or reaches the network."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


@pytest.fixture
def http_dir(tmp_path):
    """A threaded HTTP server on 127.0.0.1 serving tmp_path/www; yields (root dir, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def moto_s3():
    """A local S3 (moto_server on 127.0.0.1) for s3:// lakes; yields fsspec storage options."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir("l5s-test")
    yield opts
    proc.terminate()
    proc.wait(timeout=10)
