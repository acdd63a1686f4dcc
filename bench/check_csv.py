"""`sequencer check SEQUENCE --csv FILE` of N contacts: peak memory against `check SEQUENCE`.

    .venv/bin/python bench/check_csv.py                  # 100,000 contacts
    .venv/bin/python bench/check_csv.py --full           # 100,000 and 1,000,000
    .venv/bin/python bench/check_csv.py -n 20000         # any size
    .venv/bin/python bench/check_csv.py --bad            # and a list whose every row is bad

A user checks a list before enrolling it, so `check --csv` should read a file of any length
in flat memory, as `enroll --csv` does (issue 14). The CSV and the sequence are those of
bench/enrolment.py. The baseline is `sequencer check bench` without the CSV, in the same run:
the process's own floor (settings, sequences, the lint). Peak RSS is each process's VmHWM.
With --bad, also a list of the same length whose every address is bad (a shifted export, or
a hostile file): every row is counted, the first 1,000 listed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from enrolment import SEQUENCER, _config, _write_csv, peak_kib


def _check(cfg: Path, *extra: str) -> tuple[float, int, int]:
    """Seconds, peak RSS (KiB) and exit status of `sequencer check bench [extra]`, alone."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(SEQUENCER), "check", "bench", *extra, "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = peak_kib(proc)
    return time.perf_counter() - started, peak, proc.returncode


def _write_bad(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,company\n")
        for i in range(n):
            out.write(f"person{i}.company{i % 997}.test,Name{i},Company {i % 997}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--contacts", type=int, action="append")
    parser.add_argument("--full", action="store_true", help="also 1,000,000 contacts")
    parser.add_argument("--bad", action="store_true", help="also lists whose every row is bad")
    args = parser.parse_args()
    sizes = args.contacts or ([100_000, 1_000_000] if args.full else [100_000])
    print("check --csv against check without a CSV (peak RSS, the process's VmHWM)")
    print(f"{'rows':>9}  {'':24}{'seconds':>9}{'peak RSS':>10}{'ratio':>7}{'exit':>5}")
    with tempfile.TemporaryDirectory() as folder:
        cfg = _config(Path(folder), f"sqlite://{folder}/unused.db")
        floor_s, floor, code = _check(cfg)
        print(f"{'':>9}  {'check bench (baseline)':24}{floor_s:>9.2f}{floor / 1024:>7.0f} MB")
        for n in sizes:
            for label, write in [("check bench --csv", _write_csv)] + (
                [("  every row bad", _write_bad)] if args.bad else []
            ):
                csv_file = Path(folder) / f"contacts-{n}.csv"
                write(csv_file, n)
                try:
                    seconds, rss, code = _check(cfg, "--csv", str(csv_file))
                finally:
                    csv_file.unlink(missing_ok=True)
                print(
                    f"{n:>9}  {label:24}{seconds:>9.2f}{rss / 1024:>7.0f} MB"
                    f"{rss / floor:>7.2f}{code:>5}"
                )


if __name__ == "__main__":
    main()
