"""Every fenced ``python`` block of the README runs as written.

Each block runs in its own interpreter, in a fresh working directory (the
examples write files there), with its fixed ports mapped to free ones
(7003, 7100, 8000) and the Redis URL pointed at a real redis-server on a
free port: the only changes made to the text. A block that raises, or that
needs a name it does not define, fails this test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ports import free_port
from redis_fixture import RedisServer

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
PORTS = (7003, 7100, 8000)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, redis_url: str) -> None:
    code = BLOCKS[index]
    for port in PORTS:
        code = re.sub(rf"(127\.0\.0\.1|0\.0\.0\.0):{port}\b", f"127.0.0.1:{free_port()}", code)
    code = code.replace("redis://127.0.0.1:6379/0", redis_url)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"README example {index + 1} failed:\n{code}\n{proc.stderr}"
