"""Temper's release tooling: the agent image, its SBOM, signatures and release manifest.

It lives beside the product package, not inside it: the agent's wheel ships none of it, nothing in
`temper` imports it (`.importlinter`, contract release-is-tooling), and it does not use the test
tooling (release-stands-alone). It runs from a checkout (`make image`; docs/release.md):

    __main__.py   python -m temper_release image | release | verify | lock
    image.py      the build: root filesystem, Python, scx_layered -> one reproducible layer
    rootfs.py     Debian's packages through mmdebstrap
    pythonenv.py  the temper wheel and its locked runtime wheels
    oci.py        the OCI image layout and archive, written and read back
    sbom.py       SPDX 2.3, read from the image archive
    signing.py    cosign with a key pair, offline
    release.py    release.json, the signatures, and verifying a release
"""
