"""Temper's test tooling: the kernel lab, the control-plane harness and the fakes beside the ports.

It lives beside the product package, not inside it, so the agent's wheel ships none of it
(`pip wheel .` builds `temper` only; tests/integration/test_packaging.py checks the file list) and
nothing in `temper` may import it (`.importlinter`, contract lab-is-tooling). It runs from a source
checkout, where it finds the repository's scripts/ and docs/ (`checkout.repo_root`):

    lab/        the kernel lab: a sched_ext kernel in QEMU, and the programs run in its guest
    kubetest/   the control-plane harness: etcd and kube-apiserver on 127.0.0.1, a fault proxy
    host/       fakes beside the host ports: sysfs and kernel trees, pod cgroups, scx_layered
    kube/       the fake beside the Kube port (`FakeKube`)
    checkout.py where the source checkout is
"""
