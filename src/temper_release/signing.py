"""Signatures with cosign and a key pair, offline.

cosign is built from the Go module proxy at the version in `versions/cosign` into the cache
(`scripts/install-cosign`). Keyless signing needs the internet (an OIDC issuer, Fulcio, Rekor);
a key pair does not. So every signature here is `cosign sign-blob --key` with the transparency
log off, and verification is `cosign verify-blob --key --insecure-ignore-tlog`: the trust is in
the public key alone, which a user must get from us by a path other than the release directory
itself (docs/release.md).

The key: `TEMPER_SIGNING_KEY` names a cosign private key file (its password in
`COSIGN_PASSWORD`), the way a release job holds its secret. Without it, a development key pair
is made once in the cache and used, and the release says so (`release.json`: `signing.key`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temper_release.errors import ReleaseError

DEVELOPMENT = "development"
PROVIDED = "provided"


@dataclass(frozen=True)
class Key:
    private: Path
    public: Path
    origin: str  # DEVELOPMENT or PROVIDED
    password: str = field(repr=False)


def signing_key(cosign: Path, cache: Path, env: Mapping[str, str] = os.environ) -> Key:
    """The key to sign with: TEMPER_SIGNING_KEY's, or the cached development pair (made once)."""
    if env.get("TEMPER_SIGNING_KEY"):
        private = Path(env["TEMPER_SIGNING_KEY"])
        public = private.with_suffix(".pub")
        for path in (private, public):
            if not path.is_file():
                raise ReleaseError(
                    f"TEMPER_SIGNING_KEY: {path} does not exist (the public key is expected "
                    "beside the private one, as cosign generate-key-pair writes them)"
                )
        return Key(private, public, PROVIDED, env.get("COSIGN_PASSWORD", ""))
    directory = cache / "signing" / DEVELOPMENT
    private, public = directory / "cosign.key", directory / "cosign.pub"
    if not private.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        _cosign(cosign, ["generate-key-pair"], password="", cwd=directory)
    return Key(private, public, DEVELOPMENT, "")


def sign(cosign: Path, key: Key, artefact: Path) -> Path:
    """Sign `artefact`; the signature is written beside it as `<name>.sig`."""
    signature = artefact.with_name(artefact.name + ".sig")
    _cosign(
        cosign,
        [
            "sign-blob",
            "--yes",
            "--key",
            str(key.private),
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--new-bundle-format=false",
            "--output-signature",
            str(signature),
            str(artefact),
        ],
        password=key.password,
    )
    return signature


def verify(cosign: Path, public_key: Path, artefact: Path, signature: Path) -> str | None:
    """None when `signature` is a good signature of `artefact` by `public_key`; else why not."""
    done = subprocess.run(
        [
            str(cosign),
            "verify-blob",
            "--key",
            str(public_key),
            "--insecure-ignore-tlog=true",
            "--signature",
            str(signature),
            str(artefact),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=_env(""),
    )
    if done.returncode == 0:
        return None
    return f"{artefact.name}: cosign verify-blob failed: {done.stderr.strip()[-500:]}"


def cosign_path(checkout: Path) -> Path:
    located = subprocess.run(
        [str(checkout / "scripts/install-cosign"), "--path"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = Path(located.stdout.strip())
    if located.returncode != 0 or not os.access(path, os.X_OK):
        raise ReleaseError(f"cosign not found at {path}: run scripts/install-cosign")
    return path


def _cosign(cosign: Path, args: list[str], password: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [str(cosign), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=_env(password),
    )
    if done.returncode != 0:
        raise ReleaseError(f"cosign {args[0]} exited {done.returncode}: {done.stderr.strip()}")


def _env(password: str) -> dict[str, str]:
    """cosign's environment: no proxies to reach, no prompt, the key's password."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "COSIGN_PASSWORD": password,
        "COSIGN_YES": "true",
    }
