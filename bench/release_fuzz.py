"""Fuzzing the readers of files from elsewhere: the release's checkpoints and latency tables.

Mutates the release-written checkpoint fixtures (tests/fixtures/release/mbv{1,2}.pt.xz)
and a release-format latency table with a seeded generator, reads every mutated
file with the same readers `tools/import_release.py` uses (`read_checkpoint`,
`read_release_lut`), and counts what happened:

- refused: a `ConfigError` whose message names the file;
- equal: read, and every weight, BN statistic, pool member and score (every table
  entry) equals the original's;
- rewritten_value: read, and the only difference is the number a structural mutation
  rewrote in the pickle (a pool capacity or an epoch): a file written that way;
- different: read, with other contents. For a checkpoint this must never happen
  (zip CRCs guard every record; a structural change must be refused). For a
  table (a plain pickle, no checksum) it may happen only where the mutation hit
  a value's bytes (`data_hit`): a table cannot tell a flipped latency from a measured one;
- crash (any other exception: a traceback for the user), hang (over `--timeout`
  seconds) and unnamed (refused without naming the file) must never happen.

Mutations: flipped bytes (anywhere, in data.pkl, in the zip's headers), truncations,
a record duplicated, a record renamed, a tensor declared with another storage
dtype, huge declared sizes (a storage's element count, a tensor's shape, a zip
header's size, a numpy array's shape). Peak memory is reported: the readers
check declared sizes before allocating.

    python bench/release_fuzz.py --mutations=3000 --seed=0 > fuzz.json
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import lzma
import os
import pickle
import pickletools
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "release")
OUTCOMES = ("refused", "equal", "rewritten_value", "different", "crash", "hang", "unnamed")
CHECKPOINT_KINDS = ("flip", "flip_pickle", "flip_headers", "truncate", "duplicate", "rename", "dtype",
                    "huge_numel", "huge_shape", "huge_zip_size", "huge_numpy")
TABLE_KINDS = ("flip", "truncate", "huge_bytes")


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


# --- what a file reads as ---------------------------------------------------------


def checkpoint_digest(path: str):
    """What an import takes from a checkpoint: model, classes, epoch, state dict, pools."""
    from pss_tf.release.checkpoint import read_checkpoint

    c = read_checkpoint(path)
    pools = {m: {t: [(member.config, member.score, member.release_value) for member in members]
                 for t, members in by_target.items()} for m, by_target in c.pools.items()}
    return c.model, c.num_classes, c.epoch, c.pool_capacity, c.state, pools


def digests_equal(a, b) -> bool:
    if a[:4] != b[:4] or list(a[4]) != list(b[4]) or repr(a[5]) != repr(b[5]):
        return False
    return all(a[4][k].dtype == b[4][k].dtype and np.array_equal(a[4][k], b[4][k]) for k in a[4])


def table_digest(path: str):
    from pss_tf.latency.release_luts import read_release_lut

    return read_release_lut(path)


# --- mutations of a zip checkpoint ------------------------------------------------------


def _regions(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges of the zip's data.pkl and of its headers (local headers and central directory)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        pickle_ranges, headers = [], []
        for info in infos:
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
            body = start + 30 + name_len + extra_len
            headers.append((start, body))
            if info.filename.endswith("/data.pkl"):
                pickle_ranges.append((body, body + info.compress_size))
        headers.append((archive.start_dir, len(data)))
    return {"pickle": pickle_ranges, "headers": headers}


def _position(rng: random.Random, ranges) -> int:
    start, end = rng.choice(ranges)
    return rng.randrange(start, end)


def flip_bytes(data: bytes, rng: random.Random, ranges) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.randint(1, 4)
    for _ in range(count):
        p = _position(rng, ranges)
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out), f"{count} bit(s)"


def rezip(data: bytes, change) -> bytes:
    """The zip rewritten record by record: `change(records)` edits a list of [name, bytes]."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        records = [[info.filename, archive.read(info)] for info in archive.infolist()]
    change(records)
    buffer = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, content in records:
                archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


def _storage_records(records) -> list[int]:
    return [i for i, (name, _) in enumerate(records) if "/data/" in name]


def duplicate_record(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    note = []

    def change(records):
        i = rng.randrange(len(records))
        copy = records[i][1] if rng.random() < 0.5 else bytes(len(records[i][1]))
        records.insert(rng.randrange(len(records) + 1), [records[i][0], copy])
        note.append(records[i][0])

    return rezip(data, change), f"{note[0]} twice"


def rename_record(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    note = []

    def change(records):
        i = rng.randrange(len(records))
        names = [n for n, _ in records]
        old = records[i][0]
        choice = rng.random()
        if choice < 0.4:
            new = rng.choice(names)  # onto another record's name
        elif choice < 0.8:
            new = old.rsplit("/", 1)[0] + "/" + str(rng.randrange(100000, 200000))
        else:
            new = old + "x"
        records[i][0] = new
        note.append(f"{old} -> {new}")

    return rezip(data, change), note[0]


def _with_pickle(data: bytes, rewrite) -> bytes:
    def change(records):
        for record in records:
            if record[0].endswith("/data.pkl"):
                record[1] = rewrite(record[1])

    return rezip(data, change)


_STORAGES = ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
             "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage")


def wrong_dtype(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One storage type the pickle names becomes another (every tensor of that type then changes)."""
    note = []

    def rewrite(pkl: bytes) -> bytes:
        present = [s for s in _STORAGES if f"\n{s}\n".encode() in pkl]
        old = rng.choice(present)
        new = rng.choice([s for s in _STORAGES if s != old])
        note.append(f"{old} -> {new}")
        return pkl.replace(f"torch\n{old}\n".encode(), f"torch\n{new}\n".encode(), 1)

    return _with_pickle(data, rewrite), note[0]


def _int_arguments(pkl: bytes):
    """(position, opcode name, value) of every integer argument in the pickle (BININT*, LONG1)."""
    found = []
    for op, arg, pos in pickletools.genops(pkl):
        if op.name in ("BININT", "BININT1", "BININT2", "LONG1") and isinstance(arg, int):
            found.append((pos, op.name, arg))
    return found


def _replace_int(pkl: bytes, pos: int, opname: str, value: int) -> bytes:
    """The integer argument at `pos` replaced by `value`, written as LONG1 (any size)."""
    width = {"BININT": 4, "BININT1": 1, "BININT2": 2}.get(opname)
    if width is None:
        width = 1 + pkl[pos + 1]
    encoded = pickle.encode_long(value)
    return pkl[:pos] + pickle.LONG1 + bytes([len(encoded)]) + encoded + pkl[pos + 1 + width:]


def _persistent_ids(pkl: bytes):
    """(position, value) of each storage's declared element count: the last int before BINPERSID."""
    ops = list(pickletools.genops(pkl))
    found = []
    for i, (op, arg, pos) in enumerate(ops):
        if op.name == "BINPERSID":
            for back in range(i - 1, max(i - 4, 0), -1):
                if ops[back][0].name in ("BININT", "BININT1", "BININT2", "LONG1"):
                    found.append((ops[back][2], ops[back][0].name, ops[back][1]))
                    break
    return found


def huge_numel(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    note = []

    def rewrite(pkl: bytes) -> bytes:
        pos, name, old = rng.choice(_persistent_ids(pkl))
        new = rng.choice([2 ** 31, 2 ** 40, 2 ** 62, old + 1, max(old - 1, 0)])
        note.append(f"numel {old} -> {new}")
        return _replace_int(pkl, pos, name, new)

    return _with_pickle(data, rewrite), note[0]


def huge_shape(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An integer inside a tensor's size or stride tuple (or anywhere) becomes huge or negative."""
    note = []

    def rewrite(pkl: bytes) -> bytes:
        pos, name, old = rng.choice(_int_arguments(pkl))
        new = rng.choice([2 ** 31, 2 ** 40, -1, -(2 ** 40), 0])
        note.append(f"int {old} -> {new} at {pos}")
        return _replace_int(pkl, pos, name, new)

    return _with_pickle(data, rewrite), note[0]


def huge_zip_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A record's declared sizes (local header and central directory) set huge; the bytes unchanged."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        start_dir = archive.start_dir
    index = rng.randrange(len(infos))
    size = rng.choice([0xFFFFFFFE, 2 ** 31, infos[index].file_size + 8])
    struct.pack_into("<I", out, infos[index].header_offset + 22, size)  # local header: uncompressed size
    offset = start_dir
    for i in range(len(infos)):  # central directory entries, in order
        name_len, extra_len, comment_len = struct.unpack("<HHH", out[offset + 28:offset + 34])
        if i == index:
            struct.pack_into("<I", out, offset + 24, size)
        offset += 46 + name_len + extra_len + comment_len
    return bytes(out), f"{infos[index].filename} declares {size} bytes"


def huge_numpy(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A numpy array of a huge declared shape added to the pickle, built by numpy's own reconstructor
    (the shape given to `_reconstruct`, or in the state `__setstate__` receives)."""
    from release_support import _Global

    shape = rng.choice([2 ** 40, 2 ** 33, 10 ** 7])
    in_state = rng.random() < 0.5
    ndarray = _Global("numpy", "ndarray")
    reconstruct = _Global("numpy.core.multiarray", "_reconstruct")
    if in_state:
        dtype = _Reduce(_Global("numpy", "dtype"), ("f4", False, True))
        array = _Reduce(reconstruct, (ndarray, (0,), b"b"), (1, (shape,), dtype, False, b"\0\0\0\0"))
    else:
        array = _Reduce(reconstruct, (ndarray, (shape,), b"b"))

    def rewrite(pkl: bytes) -> bytes:
        buffer = io.BytesIO()
        pickler = _FragmentPickler(buffer)
        pickler.save("extra")
        pickler.save(array)
        if not pkl.endswith(b"."):
            raise ValueError("data.pkl does not end with STOP")
        return pkl[:-1] + buffer.getvalue() + pickle.SETITEM + pickle.STOP

    where = "its state" if in_state else "_reconstruct"
    return _with_pickle(data, rewrite), f"a numpy array of {shape} float32 (shape in {where})"


class _Reduce:
    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class _FragmentPickler(pickle._Pickler):
    """Pickles one value into the middle of another pickle: protocol 2, no memo, GLOBALs by name."""

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.fast = True

    def save(self, obj, save_persistent_id=True):
        from release_support import _Global

        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(len(data))
    return data[:cut], f"first {cut} of {len(data)} bytes"


def mutate_checkpoint(data: bytes, regions, kind: str, rng: random.Random) -> tuple[bytes, str]:
    if kind == "flip":
        return flip_bytes(data, rng, [(0, len(data))])
    if kind == "flip_pickle":
        return flip_bytes(data, rng, regions["pickle"])
    if kind == "flip_headers":
        return flip_bytes(data, rng, regions["headers"])
    return {"truncate": truncate, "duplicate": duplicate_record, "rename": rename_record, "dtype": wrong_dtype,
            "huge_numel": huge_numel, "huge_shape": huge_shape, "huge_zip_size": huge_zip_size,
            "huge_numpy": huge_numpy}[kind](data, rng)


# --- mutations of a latency table ---------------------------------------------------


def value_ranges(pkl: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the pickle's value payloads (floats, ints, strings) and of its memo references
    (which choose a value: a BlockCfg's block type is a memoized string): its data."""
    ops = list(pickletools.genops(pkl))
    ranges = []
    for (op, arg, pos), following in zip(ops, ops[1:] + [(None, None, len(pkl))]):
        if op.name in ("BINFLOAT", "BININT", "BININT1", "BININT2", "LONG1", "SHORT_BINUNICODE", "BINUNICODE",
                       "SHORT_BINSTRING", "BINSTRING", "BINGET", "LONG_BINGET"):
            ranges.append((pos + 1, following[2]))
    return ranges


def mutate_table(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str, bool]:
    """(mutated bytes, what was done, whether a value's bytes were hit)."""
    if kind == "truncate":
        mutated, note = truncate(data, rng)
        return mutated, note, False
    if kind == "huge_bytes":  # a BINBYTES8 declaring a huge length, in front of the STOP
        size = rng.choice([2 ** 40, 2 ** 34, 2 ** 62])
        return data[:-1] + b"\x8e" + struct.pack("<Q", size) + b"abc" + data[-1:], f"BINBYTES8 of {size}", False
    data_ranges = value_ranges(data)
    out = bytearray(data)
    positions = [rng.randrange(len(data)) for _ in range(rng.randint(1, 3))]
    for p in positions:
        out[p] ^= 1 << rng.randrange(8)
    hit = any(start <= p < end for p in positions for start, end in data_ranges)
    return bytes(out), f"bits at {positions}", hit


# --- the run ----------------------------------------------------------------------------


def _only_header_changed(result, reference, note: str) -> bool:
    """Whether `result` differs from `reference` only in epoch or pool capacity, set to the value `note` wrote."""
    written = note.split(" -> ")[-1].split(" ")[0]
    if not digests_equal((*reference[:4], *result[4:]), reference):
        return False
    changed = [i for i in range(4) if result[i] != reference[i]]
    return bool(changed) and all(str(result[i]) == written for i in changed)


def _attempt(path: str, digest, reference, timeout: float, note: str = "") -> tuple[str, str]:
    from pss_tf.errors import ConfigError

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = digest(path)
    except Timeout:
        return "hang", ""
    except ConfigError as e:
        return ("refused" if os.path.basename(path) in str(e) else "unnamed"), str(e)[:300]
    except Exception as e:  # noqa: BLE001 - what a user would see as a traceback
        return "crash", f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if reference is None:
        return "equal", ""
    if isinstance(result, tuple):
        if digests_equal(result, reference):
            return "equal", ""
        if note.startswith("int ") and _only_header_changed(result, reference, note):
            return "rewritten_value", ""
        return "different", ""
    return ("equal" if result == reference else "different"), ""


def _fresh_file(directory: str, name: str, content: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def fuzz(mutations: int, seed: int, timeout: float = 20.0, tables: int | None = None, log=None) -> dict:
    """Runs `mutations` mutations of each checkpoint fixture and `tables` (default: the same) of a
    latency table; returns counts per file, per kind and per outcome, and examples of each outcome."""
    rng = random.Random(seed)
    report = {"seed": seed, "mutations_per_file": mutations, "files": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="release_fuzz") as directory:
        originals, references = {}, {}
        for short in ("mbv1", "mbv2"):  # Read unmutated first: TensorFlow's import is not the fuzzing's memory.
            with lzma.open(os.path.join(FIXTURES, f"{short}.pt.xz")) as f:
                originals[short] = f.read()
            references[short] = checkpoint_digest(_fresh_file(directory, f"{short}.pt", originals[short]))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for short in ("mbv1", "mbv2"):
            original, reference = originals[short], references[short]
            regions = _regions(original)
            counts = {kind: collections.Counter() for kind in CHECKPOINT_KINDS}
            examples = {}
            for i in range(mutations):
                kind = CHECKPOINT_KINDS[i % len(CHECKPOINT_KINDS)]
                mutated, note = mutate_checkpoint(original, regions, kind, rng)
                path = _fresh_file(directory, f"{short}_mutated.pt", mutated)
                outcome, message = _attempt(path, checkpoint_digest, reference, timeout, note)
                counts[kind][outcome] += 1
                examples.setdefault(f"{kind}/{outcome}", f"{note}: {message}")
                if log:
                    log(f"{short} {i} {kind} {outcome}")
            report["files"][f"{short}.pt"] = _summary(counts, examples)
        with open(os.path.join(FIXTURES, "lut", "mbv2_gpu.pkl"), "rb") as f:
            original = f.read()
        reference = table_digest(_fresh_file(directory, "mbv2_gpu.pkl", original))
        counts = {kind: collections.Counter() for kind in TABLE_KINDS + ("flip_data",)}
        examples = {}
        for i in range(mutations if tables is None else tables):
            kind = TABLE_KINDS[i % len(TABLE_KINDS)] if i % 2 else "flip"
            mutated, note, hit = mutate_table(original, kind, rng)
            path = _fresh_file(directory, "mbv2_gpu_mutated.pkl", mutated)
            outcome, message = _attempt(path, table_digest, reference, timeout)
            kind = "flip_data" if hit else kind
            counts[kind][outcome] += 1
            examples.setdefault(f"{kind}/{outcome}", f"{note}: {message}")
        report["files"]["mbv2_gpu.pkl"] = _summary(counts, examples)
    report["seconds"] = round(time.perf_counter() - started, 1)
    # Growth of the peak resident memory over reading the unmutated files: what mutations cost.
    report["peak_rss_growth_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before, 1)
    return report


def _summary(counts: dict, examples: dict) -> dict:
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    return {
        "total": {o: total[o] for o in OUTCOMES},
        "by_kind": {kind: {o: c[o] for o in OUTCOMES if c[o]} for kind, c in counts.items()},
        "examples": examples,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=3000, help="Mutations per file.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="Seconds before a read counts as a hang.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from common import machine_state

    report = fuzz(args.mutations, args.seed, args.timeout)
    report["machine"] = machine_state()
    report["command"] = "python bench/release_fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
