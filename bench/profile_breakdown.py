"""Where the CPU goes during a run recorded with `perf record -a -g`: the machine's
share per process name in time buckets (idle is `swapper`), and the recorded server's
samples by kind of work (fold, log, parse, network, ...), over the buckets where the
server was busy (so start-up and the final wait do not dilute the figures).

    perf script -i perf.data -F comm,pid,tid,time,ip,sym | \
        python3 bench/profile_breakdown.py --pid SERVER_PID [--bucket 0.25]

The kinds are matched on the innermost frame naming one of them; a sample matching none
is listed by its innermost symbol. Shares are of all samples in the busy window (both
cores), so a kind's share times the core count is the cores it used.
"""
import argparse
import collections
import os
import sys

# Innermost-first frame patterns → kind of work.
KINDS = [
    ("accumulator::centre", "fold: centring transpose"),
    ("gemm", "fold: rank-(b+1) update kernel"),
    ("syrk", "fold: rank-(b+1) update kernel"),
    ("Accumulator::fold", "fold: other"),
    ("ext4_buffered_write", "log: write into the page cache"),
    ("fdatasync", "log: fdatasync"),
    ("ext4_sync_file", "log: fdatasync"),
    ("persistence::", "log: other"),
    ("EncodedRecord", "log: record encoding and CRC"),
    ("crc32", "log: record encoding and CRC"),
    ("Batch::new", "batch checks"),
    ("check_counts", "batch checks"),
    ("format::", "body parsing"),
    ("tcp_recvmsg", "network: receive"),
    ("tcp_sendmsg", "network: send"),
    ("exc_page_fault", "page faults"),
    ("futex", "locks and wake-ups (futex)"),
    ("schedule", "scheduler"),
    ("epoll", "event loop (epoll)"),
    ("memmove", "memcpy (callers not unwound)"),
    ("memcpy", "memcpy (callers not unwound)"),
    ("memset", "memset"),
    ("rjem", "allocator"),
    ("hyper", "HTTP (hyper, axum, tower)"),
    ("axum", "HTTP (hyper, axum, tower)"),
    ("tower", "HTTP (hyper, axum, tower)"),
    ("prometheus", "metrics"),
]


def samples(stream):
    """(comm, pid, time, [frames innermost first]) per sample of `perf script`."""
    head, frames = None, []
    for line in stream:
        if not line.strip():
            if head:
                yield (*head, frames)
            head, frames = None, []
        elif not line[0].isspace():
            # "comm pid/tid time:" (comm may hold spaces)
            left, ts = line.rstrip().rsplit(None, 1)
            comm, ids = left.rsplit(None, 1)
            head = (comm.strip(), int(ids.split("/")[0]), float(ts.rstrip(":")))
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "?")
    if head:
        yield (*head, frames)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--bucket", type=float, default=0.25, help="seconds per time bucket")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    all_samples = list(samples(sys.stdin))
    if not all_samples:
        sys.exit("no samples on stdin")
    t0 = all_samples[0][2]
    buckets = collections.defaultdict(list)
    for s in all_samples:
        buckets[int((s[2] - t0) / args.bucket)].append(s)
    busy = [k for k, ss in buckets.items() if sum(s[1] == args.pid for s in ss) > len(ss) / 2]
    if not busy:
        sys.exit("the server never had half of the samples of a bucket")
    lo, hi = min(busy), max(busy)
    print(f"Busy window: {lo * args.bucket:.2f}–{(hi + 1) * args.bucket:.2f} s of the recording "
          f"(buckets where the server had over half of the samples, and those between).")
    print()
    print("| t (s) | samples | server | idle | other processes (top 3) |")
    print("|---|---|---|---|---|")
    window = []
    for k in range(lo, hi + 1):
        ss = buckets.get(k, [])
        window += ss
        n = max(len(ss), 1)
        server = sum(s[1] == args.pid for s in ss)
        idle = sum(s[0] == "swapper" for s in ss)
        others = collections.Counter(s[0] for s in ss if s[1] != args.pid and s[0] != "swapper")
        top = ", ".join(f"{c} {v / n:.0%}" for c, v in others.most_common(3))
        print(f"| {k * args.bucket:.2f} | {len(ss)} | {server / n:.0%} | {idle / n:.0%} | {top} |")
    total = len(window)
    by_comm = collections.Counter(
        "idle" if s[0] == "swapper" else ("server" if s[1] == args.pid else s[0]) for s in window)
    print()
    print("Whole busy window, share of all samples: " + ", ".join(
        f"{c} {v / total:.1%}" for c, v in by_comm.most_common(6)))
    kinds = collections.Counter()
    for comm, pid, _, frames in window:
        if pid != args.pid:
            continue
        if comm.startswith("train-"):
            kinds["trainer thread (fits)"] += 1
            continue
        kind = None
        for f in frames:
            kind = next((v for k, v in KINDS if k in f), None)
            if kind:
                break
        kinds[kind or "other: " + (frames[0][:60] if frames else "?")] += 1
    print()
    print("| server work | share of all samples | cores |")
    print("|---|---|---|")
    ncpu = os.cpu_count() or 1
    for k, v in kinds.most_common(args.top):
        print(f"| {k} | {v / total:.1%} | {v / total * ncpu:.2f} |")


if __name__ == "__main__":
    main()
