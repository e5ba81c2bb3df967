"""A lab PKI for the TLS tests and benches: a CA and certificates made with
Debian's `openssl` CLI (P-256 keys, valid two days)."""
from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_cert(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


SERVER_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"
CLIENT_EXT = "extendedKeyUsage=clientAuth"


@dataclass
class Pki:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def context(self, client: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path("ca.crt"))
        if client is not None:
            ctx.load_cert_chain(self.path(f"{client}.crt"), self.path(f"{client}.key"))
        return ctx


def make_server_pki(d: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 in `d`."""
    make_ca(d, "ca")
    make_cert(d, "server", "ca", SERVER_EXT)
    return Pki(d)
