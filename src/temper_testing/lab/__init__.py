"""The kernel lab: a sched_ext kernel in QEMU, running jobs on the host's own files.

The kernel-lab test tier (docs/testing.md#test-tiers) runs the real kernel, the real `scx_layered`,
real cgroups and workloads, started by the project's own tooling. This package is that tooling:

    provision.py   host packages (apt), the Debian mirror from apt's configuration, and a
                   cached sched_ext kernel: vmlinux, config, 9p modules, initramfs
    archive.py     the Debian archive: Packages indexes, verified downloads, .deb members
    image.py       the config check, vmlinux out of the bzImage, the initramfs
    init.sh        PID 1 in the guest: mount the host root, run the job, report over virtio
    vm.py          `run_in_guest`: boot QEMU, run a shell job as root, return its exit status
    errors.py      LabError
    __main__.py    `python -m temper_testing.lab provision | run [...] -- COMMAND...`
    guestjob.py    run one of this package's modules in a guest and collect its JSON (for the
                   bench drivers)
    hostmeter.py   the host's CPU use, written into the guest while it runs

and the programs that run inside the guest: node.py (the simulated kubelet node), proof.py,
faults.py, interference.py (with lcworkload.py and measure.py), restartgap.py, cpulimit.py;
their waits on the guest's own work follow its measured speed (pace.py).

Nothing in the product imports this package; the tests of the lab tier (tests/lab) do.

Facts it is built on, each found by the prototype that preceded it (its notes and run
directories were kept beside it):

- The machine's kernel has no sched_ext. Debian's generic amd64 kernels of the 7.x series
  (trixie-backports, sid) have `CONFIG_SCHED_CLASS_EXT=y` and BTF; trixie's 6.12 kernels do
  not, so the kernel is chosen by checking the config inside its package (docs/platforms.md).
  Boots of 7.3.4+deb13-amd64 (trixie-backports) and 7.2.13+deb14-amd64 (sid) both showed
  `/sys/kernel/sched_ext/state` = `disabled` and `/sys/kernel/btf/vmlinux` present.
- /dev/kvm exists but nested virtualization does not work, so QEMU runs TCG. Multi-threaded TCG
  with the host's QEMU 7.2 crashes this kernel intermittently: "Oops: int3 ... Kernel panic -
  not syncing: Fatal exception in interrupt", in 2 of 6 plain boots and in 1 of 4 boots loading
  scx_layered; `-accel tcg,thread=single` avoided it at the cost of guest parallelism. The lab
  now runs Debian's backported QEMU multi-threaded (`qemu.py`; docs/lab.md has its stability
  proof and the reproducer that still oopses 7.2 with any CPU model).
- A boot to the job takes about 5-8 s with QEMU's PVH entry (the uncompressed ELF vmlinux, which
  skips the bzImage decompressor) and the qboot firmware instead of SeaBIOS.
- libbpf resolves a BPF program's `__kconfig` externs from /boot/config-$(uname -r), or
  /proc/config.gz, which Debian does not build (`CONFIG_IKCONFIG` is not set); the host's /boot
  holds nothing for the guest's release. So init puts a tmpfs over the guest's /boot holding the
  kernel's config; with it, scx_layered loads and enables.
- The root file system is the host's, over virtio-9p (`netfs 9pnet 9pnet_virtio 9p`, modules in
  Debian's kernel, loaded from the initramfs). The guest mounts tmpfs over /tmp, /run and /var/tmp,
  so anything there is hidden unless shared explicitly (`run_in_guest(shares=...)`); that is why
  the lab's cache lives under ~/.cache and not /tmp.
- The host has no `cpio` tool: busybox's applet (busybox-static, which is also the guest's
  shell) writes the initramfs. QEMU and busybox-static come from apt.
- virtme-ng does the same job but, in our check on this machine (docs/testing.md#the-kernel-lab),
  fell back to the console for script I/O and reported exit status 255 for a script that succeeded;
  here the output and exit status travel over a virtio serial port of our own (`lab.result`);
  docs/adr/0004.
"""
