"""Per-CPU interrupt counts from /proc/interrupts (temper_testing.lab.measure), which each
interference phase records so a cross-CPU disturbance inside the guest shows as IPIs."""

from __future__ import annotations

from temper_testing.lab.measure import interrupts_between, read_interrupts

BEFORE = """\
           CPU0       CPU1
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 28:          3          7 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
NMI:          0          0   Non-maskable interrupts
LOC:      16503      30259   Local timer interrupts
RES:       4057       3639   Rescheduling interrupts
CAL:      31545      32307   Function call interrupts
TLB:       1075        977   TLB shootdowns
ERR:          0
"""

AFTER = BEFORE.replace("16503", "16603").replace("31545", "31600").replace("  7 PCI", " 17 PCI")


def test_rows_are_read_per_cpu_with_device_lines_summed() -> None:
    counts = read_interrupts(BEFORE)

    assert counts[0] == {"LOC": 16503, "RES": 4057, "CAL": 31545, "TLB": 1075, "device": 4}
    assert counts[1] == {"LOC": 30259, "RES": 3639, "CAL": 32307, "TLB": 977, "device": 7}


def test_the_difference_names_each_cpu() -> None:
    delta = interrupts_between(read_interrupts(BEFORE), read_interrupts(AFTER))

    assert delta["cpu0"] == {"LOC": 100, "RES": 0, "CAL": 55, "TLB": 0, "device": 0}
    assert delta["cpu1"] == {"LOC": 0, "RES": 0, "CAL": 0, "TLB": 0, "device": 10}


def test_this_machine_reads() -> None:
    counts = read_interrupts()
    assert counts
    assert all(rows["LOC"] >= 0 for rows in counts.values())
