"""This machine's ceilings for durable ingest, measured in one run (bench/limits.sh).

Called twice by bench/limits.sh: with --dsyrk-only before `cargo bench --bench pca --
accumulator_update`, then after it, reading criterion's estimates. Measures, back to
back:

  fold rate   numpy/OpenBLAS, one thread: centre a b-row f32 batch in f64 and fold it
              into the n×n lower triangle with one rank-(b+1) `dsyrk` (the batch plus
              the mean-correction row, as the accumulator does), beside our own
              criterion figure `accumulator_update/{n}` from the same run;
  disk        the data directory's write bandwidth in the write-ahead log's pattern:
              appends to a growing file, each followed by `fdatasync`, ~800 KB each
              (one b = 256, n = 784 batch of f32) and, per n, the size of one record
              of b rows (one producer, no group commit);
  ceiling     durable-ingest rows/s per n = min(disk bandwidth ÷ logged bytes per row,
              cores × min(our fold rate, dsyrk's)).

Writes a markdown table to --out and prints it.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.linalg.blas import dsyrk  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels import median_time  # noqa: E402

DIMS = (64, 784, 2048)
# Partition log record format 2 (src/persistence/record.rs): len u32 + crc u32 (8 bytes),
# then kind u8, width u8, sequence u64, local u64, clock u64, rows u32, dim u32,
# target_dim u32 (38 bytes), then the values. Raw f32 bodies are logged as f32: 4 bytes
# per value.
RECORD_OVERHEAD = 8 + 38
F32 = 4


def logged_bytes_per_row(n, b):
    return F32 * n + RECORD_OVERHEAD / b


def dsyrk_rate(n, b, rng):
    """rows/s of one thread folding b-row batches: centre in f64, rank-(b+1) dsyrk."""
    x = rng.random((b, n), dtype=np.float32)
    c = np.zeros((n, n), order="F")
    # Column-major (b+1)×n: column f holds feature f of every row, as in the
    # accumulator's work buffer; dsyrk with trans=1 then computes aᵀa without a copy.
    a = np.empty((b + 1, n), order="F")
    weight = np.sqrt(1000.0 * b / (1000.0 + b))  # Chan's correction after 1000 rows

    def update():
        a[:b] = x
        mean = a[:b].mean(axis=0)
        a[:b] -= mean
        a[b] = weight * (mean - 0.5)
        dsyrk(1.0, a, beta=1.0, c=c, trans=1, lower=1, overwrite_c=1)

    t = median_time(update)
    return b / t, t


def criterion_rate(criterion_dir, n, b):
    path = os.path.join(criterion_dir, "accumulator_update", str(n), "new", "estimates.json")
    with open(path) as f:
        t = json.load(f)["median"]["point_estimate"] * 1e-9
    return b / t, t, os.path.getmtime(path)


def disk_bandwidth(directory, append_bytes, seconds, rng):
    """Bytes/s appending `append_bytes` at a time to a new file in `directory`, each
    append followed by fdatasync, for about `seconds`; and the median and p99 time of
    one append + fdatasync."""
    buf = rng.integers(0, 256, append_bytes, dtype=np.uint8).tobytes()
    path = os.path.join(directory, f".limits-{os.getpid()}-{append_bytes}.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    latencies = []
    try:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(latencies) < 5:
            t0 = time.perf_counter()
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return len(latencies) * append_bytes / elapsed, float(np.median(latencies)), p99, len(latencies)


def filesystem(directory):
    try:
        out = subprocess.run(["df", "-T", "-h", directory], capture_output=True, text=True, check=True).stdout
        fields = out.strip().splitlines()[-1].split()
        return f"{fields[1]} on {fields[0]}"
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown file system"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def blas_version():
    """The BLAS that runs `scipy.linalg.blas.dsyrk`: scipy's own OpenBLAS, which may
    differ from numpy's."""
    try:
        from threadpoolctl import threadpool_info

        libs = [lib for lib in threadpool_info() if lib.get("internal_api") == "openblas"]
        for lib in libs:
            if "scipy" in os.path.basename(os.path.dirname(lib.get("filepath", ""))):
                return f"dsyrk from scipy's OpenBLAS {lib.get('version')} ({lib.get('architecture')} kernels)"
    except ImportError:
        pass
    return "dsyrk from scipy's BLAS"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True, help="directory whose disk is measured")
    ap.add_argument("--out", required=True, help="markdown file to write")
    ap.add_argument("--criterion-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--append-kb", type=int, default=800)
    ap.add_argument("--seconds", type=float, default=3.0, help="per disk measurement")
    ap.add_argument("--command", default="bench/limits.sh", help="how the run was started, for the report")
    ap.add_argument("--dsyrk-only", metavar="JSON",
                    help="only time dsyrk and write the rates here (run before criterion, so that "
                         "dsyrk is timed on both sides of it)")
    ap.add_argument("--dsyrk-before", metavar="JSON", help="rates written by an earlier --dsyrk-only run")
    args = ap.parse_args()
    b = args.batch
    if args.dsyrk_only:
        rng = np.random.default_rng(1)
        before = {}
        for n in DIMS:
            before[n] = dsyrk_rate(n, b, rng)
            sys.stderr.write(f"dsyrk n={n} (before criterion): {before[n][1] * 1e3:.3f} ms per batch\n")
        with open(args.dsyrk_only, "w") as f:
            json.dump({"load": os.getloadavg()[0], "rates": {str(n): v for n, v in before.items()}}, f)
        return
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(1)
    cores = len(os.sched_getaffinity(0))

    ours = {n: criterion_rate(args.criterion_dir, n, b) for n in DIMS}
    oldest = min(v[2] for v in ours.values())
    if time.time() - oldest > 3600:
        sys.stderr.write(f"warning: the criterion estimates are {(time.time() - oldest) / 3600:.1f} h old\n")
    after = {}
    for n in DIMS:
        after[n] = dsyrk_rate(n, b, rng)
        sys.stderr.write(f"dsyrk n={n}: {after[n][1] * 1e3:.3f} ms per batch, {after[n][0]:.0f} rows/s\n")
    before = after
    if args.dsyrk_before:
        with open(args.dsyrk_before) as f:
            saved = json.load(f)
        before = {int(n): tuple(v) for n, v in saved["rates"].items()}
        load_start = saved["load"]
    # dsyrk's figure: the geometric mean of its times before and after ours.
    blas = {}
    for n in DIMS:
        t = float(np.sqrt(before[n][1] * after[n][1]))
        blas[n] = (b / t, t)

    append = args.append_kb * 1000
    disk_main = disk_bandwidth(args.data_dir, append, args.seconds, rng)
    sys.stderr.write(f"disk {append} B appends: {disk_main[0] / 1e6:.0f} MB/s\n")
    disk_record = {}
    for n in DIMS:
        size = int(round(logged_bytes_per_row(n, b) * b))
        disk_record[n] = (size, disk_bandwidth(args.data_dir, size, args.seconds, rng))
        sys.stderr.write(f"disk {size} B appends (n={n}): {disk_record[n][1][0] / 1e6:.0f} MB/s\n")
    # The main pattern once more at the end: the spread between the two is the disk's
    # drift during this run.
    disk_end = disk_bandwidth(args.data_dir, append, args.seconds, rng)
    bandwidth = min(disk_main[0], disk_end[0])
    load_end = os.getloadavg()[0]

    rows = []
    for n in DIMS:
        per_row = logged_bytes_per_row(n, b)
        disk_rows = bandwidth / per_row
        fold = min(ours[n][0], blas[n][0])
        cpu_rows = cores * fold
        ceiling = min(disk_rows, cpu_rows)
        one_producer = disk_record[n][1][0] / per_row
        rows.append(
            f"| {n} | {per_row:.2f} | {ours[n][1] * 1e3:.3f} ms = {ours[n][0]:,.0f} | "
            f"{before[n][1] * 1e3:.3f} / {after[n][1] * 1e3:.3f} ms → {blas[n][0]:,.0f} | "
            f"{ours[n][0] / blas[n][0]:.2f} | "
            f"{cpu_rows:,.0f} | {disk_rows:,.0f} | **{ceiling:,.0f}** ({'disk' if disk_rows < cpu_rows else 'CPU'}) | "
            f"{disk_record[n][0]:,} B: {disk_record[n][1][0] / 1e6:.0f} MB/s, "
            f"{disk_record[n][1][1] * 1e3:.2f} ms → {one_producer:,.0f} |")

    out = [
        "# Machine ceilings for durable ingest",
        "",
        f"Generated by `{args.command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}: {cpu_model()}, {cores} cores "
        f"(shared with other jobs: 1-minute load average {load_start:.1f} when this script started, "
        f"{load_end:.1f} when it ended; all times are wall-clock), data directory `{os.path.abspath(args.data_dir)}` ({filesystem(args.data_dir)}). "
        f"numpy {np.__version__}, scipy {scipy.__version__}, {blas_version()}, one thread; "
        "ours: criterion median of `cargo bench --bench pca -- accumulator_update` (bench profile, one thread), "
        f"run between dsyrk's two timings. Batch b = {b} rows; logged bytes per row = 4·n + {RECORD_OVERHEAD}/b (raw f32 "
        "bodies, log record format 2).",
        "",
        f"Disk, the log's pattern ({append:,} B appends to a growing file, each followed by `fdatasync`, "
        f"{args.seconds:g} s each): {disk_main[0] / 1e6:.0f} MB/s at the start of the disk measurements "
        f"(median {disk_main[1] * 1e3:.2f} ms, p99 {disk_main[2] * 1e3:.2f} ms per append + fdatasync, "
        f"{disk_main[3]} appends) and {disk_end[0] / 1e6:.0f} MB/s at the end "
        f"(median {disk_end[1] * 1e3:.2f} ms, p99 {disk_end[2] * 1e3:.2f} ms); the ceilings use the lower, "
        f"{bandwidth / 1e6:.0f} MB/s. This disk's bandwidth varies from run to run: measure it next to each "
        "ingest run.",
        "",
        "Fold rate: one batch of b rows into an n×n accumulator (centre in f64, then one symmetric "
        "rank-(b+1) update of the lower triangle), rows/s on one thread. CPU ceiling = cores × "
        "min(ours, numpy/OpenBLAS). Disk ceiling = bandwidth ÷ logged bytes per row. Durable ceiling = the "
        "smaller of the two. The last column is one producer alone: one record of b rows per fdatasync, "
        "no group commit (measured at that record size).",
        "",
        *([f"The load average exceeded the {cores} cores during this run: every rate here is below what the "
           "machine gives when it is not shared, and a rerun minutes later can differ by a factor of two, the "
           "ratio of ours to dsyrk's included (dsyrk is timed before and after ours to show the drift).", ""] if max(load_start, load_end) > cores else []),
        "| n | logged bytes / row | ours: time per batch = rows/s "
        "| numpy/OpenBLAS dsyrk: time per batch before / after ours → rows/s (geometric mean) "
        "| ours ÷ dsyrk (speed) | CPU ceiling (rows/s) | disk ceiling (rows/s) | durable ceiling (rows/s) "
        "| one producer: record size, bandwidth, time per append → rows/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
