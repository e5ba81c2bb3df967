"""Helpers for the PrometheusTarget tests: raw HTTP scrapes, parsing, and a
real Prometheus server started on loopback."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
NODE_JOB = "edgeless-node"  # EDGELESS's own prometheus.yml names its job so


def http_get(
    port: int, path: str = "/metrics", headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request on its own connection, read until the server
    closes it (``Connection: close``); returns (status, lower-cased headers,
    body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    hdrs = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    assert int(hdrs["content-length"]) == len(body) or method == "HEAD"
    if hdrs.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return int(status_line.split()[1]), hdrs, body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} from a text-format exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(text_or_samples: Any, name: str, **labels: str) -> float:
    got = samples(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return float(got[(name, frozenset(labels.items()))])


# --- a real Prometheus ---------------------------------------------------


def local_config(node_ports: list[int], prom_port: int,
                 other_jobs: dict[str, list[int]] | None = None,
                 node_job: dict[str, Any] | None = None) -> dict[str, Any]:
    """The repo's scrape config, pointed at local nodes, scraping every second;
    `other_jobs` adds node jobs of other names (a mixed fleet), `node_job`
    adds settings to the node job (`scheme`, `tls_config`, `basic_auth`)."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs[NODE_JOB]["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in node_ports]}]
    jobs[NODE_JOB].update(node_job or {})
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
    for name, ports in (other_jobs or {}).items():
        config["scrape_configs"].append(
            {**jobs[NODE_JOB], "job_name": name,
             "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]})
    return config


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def wait_for(self, expr: str, ok: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls `expr` until `ok(result)` holds; returns the result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {expr!r}; last result {result}")
            time.sleep(0.2)


@contextlib.contextmanager
def run_prometheus(tmp: Path, node_ports: list[int],
                   other_jobs: dict[str, list[int]] | None = None,
                   extra_flags: list[str] | None = None,
                   node_job: dict[str, Any] | None = None) -> Iterator[Prometheus]:
    """`extra_flags`: more command-line flags, such as
    `--enable-feature=native-histograms`; `node_job`: settings merged into the
    node job (a scheme, TLS or basic auth)."""
    exe = shutil.which("prometheus")
    if exe is None:
        raise RuntimeError("Debian's prometheus is not installed (scripts/test.sh installs it)")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_config(node_ports, port, other_jobs, node_job)))
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *(extra_flags or []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start: " + (tmp / "prometheus.log").read_text()[-2000:])
            time.sleep(0.1)
        yield Prometheus(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel or variable name, query) for every query in the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            out.append((f"variable {var['name']}", q["query"] if isinstance(q, dict) else q))
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{panel['title']} [{t['refId']}]", t["expr"]))
    return out


def promql_regex_literal(value: str) -> str:
    """`value` as a regex matching it literally, written for a PromQL string
    (a backslash escaping a metacharacter is itself escaped), as Grafana does."""
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\\\1", value)


def grafana_to_promql(expr: str, variable_values: dict[str, list[str]], rate_interval: str = "30s") -> str:
    """Replaces the dashboard's Grafana variables by what Grafana sends with
    every option "All" selected: a variable's ``allValue`` if it has one,
    else the alternation of all its values (`variable_values`)."""
    dash = json.loads(DASHBOARD.read_text())
    expr = expr.replace("$__rate_interval", rate_interval)
    # Longest names first, so $function_type is not read as $function...
    for var in sorted(dash["templating"]["list"], key=lambda v: -len(v["name"])):
        if var["type"] != "query":
            continue
        all_value = var.get("allValue") or "(" + "|".join(
            promql_regex_literal(v) for v in variable_values.get(var["name"], [])) + ")"
        expr = expr.replace("$" + var["name"], all_value)
    return expr
