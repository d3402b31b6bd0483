"""The release readers under seeded fuzzing (bench/release_fuzz.py; its bench run does thousands).

Every mutated checkpoint or latency table is refused with a message naming the
file, or reads to contents equal to the original's (or, for a pool capacity or an
epoch rewritten in the pickle, with just that number changed). Only a table's own values
(a plain pickle has no checksum) can change unnoticed, and only where a
mutation hit a value's bytes. No traceback, no hang, no memory blow-up.
"""

import os

import pytest
from support import ROOT, load_script

fuzzing = load_script(os.path.join(ROOT, "bench", "release_fuzz.py"), "bench_release_fuzz")


@pytest.fixture(scope="module")
def report():
    return fuzzing.fuzz(mutations=110, seed=0, timeout=20.0)


@pytest.mark.parametrize("name", ["mbv1.pt", "mbv2.pt", "mbv2_gpu.pkl"])
def test_every_mutation_is_refused_naming_the_file_or_reads_as_the_original(report, name):
    counts = report["files"][name]
    total = counts["total"]
    assert sum(total.values()) == 110
    assert total["crash"] == total["hang"] == total["unnamed"] == 0, counts["examples"]
    if name.endswith(".pt"):
        assert total["different"] == 0, counts["examples"]
    else:
        changed = {kind for kind, outcomes in counts["by_kind"].items() if outcomes.get("different")}
        assert changed <= {"flip_data"}, counts["examples"]
    # Each kind of mutation was made and reached the reader: most are refused.
    assert all(outcomes.get("refused") for outcomes in counts["by_kind"].values() if outcomes), counts["by_kind"]
    assert total["refused"] >= 0.8 * 110


def test_declared_sizes_allocate_nothing_large(report):
    # Mutations declared sizes up to 2**62 bytes; what the reads cost beyond the unmutated files' reads:
    assert report["peak_rss_growth_mib"] < 400, report["peak_rss_growth_mib"]


def test_the_mutations_are_seeded():
    data = fuzzing.pickle.dumps({("MBV1Block", i): float(i) for i in range(100)}, protocol=2)
    a = fuzzing.mutate_table(data, "flip", fuzzing.random.Random(5))
    b = fuzzing.mutate_table(data, "flip", fuzzing.random.Random(5))
    assert a == b and a[0] != data
