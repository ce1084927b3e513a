"""The redactor's cost (issue 19): redacting 10k log lines and 10k sealed positions, and sealing them.

    .venv/bin/python bench/redaction_bench.py [--lines 10000] [--rounds 3]

The redactor runs on positions, errors and log lines only, never on records; its pattern grows with
every spelling it knows (five secrets, each in every form of ``ENCODINGS``), so this measures what a
pull pays per line. Best of ``--rounds``; these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import time

from run import best_of as best  # bench/run.py, beside this script

from pullmode_dagster.engine.fetch.redaction import Redactor
from pullmode_dagster.engine.fetch.sealing import Sealer

SECRETS = {
    "token": "Sk/Te+st=Key9xQ7",
    "tok": "cnry-tok-9f8e7d6c5b4a3210",
    "key": 'cnry-key/+=&?#%"\\ünï-7777',
    "multi": "cnry-multi-line-one-AAAA\ncnry-multi-line-two-BBBB",
    "js": "cnry-js(!*')~key/ü+ &x",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    redact = Redactor(SECRETS.values())
    sealer = Sealer(SECRETS, redact)
    built = time.perf_counter() - start
    lines = [
        f"acme: page {i}: 100 records, 100 events, 0 rejected (total {i * 100} events so far); "
        f"next https://api.example.com/v1/events?after=evt_{i:08}&limit=100"
        for i in range(args.lines)
    ]
    positions = [
        {"page_cursor": f"https://api.example.com/v1/events?cursor=eyJrIjogImV2dF8{i:08}&p={i}", "v": 1}
        for i in range(args.lines)
    ]
    texts = [json.dumps(p) for p in positions]
    rows = {
        "redact log lines": best(args.rounds, lambda: [redact(line) for line in lines]),
        "redact positions": best(args.rounds, lambda: [redact(text) for text in texts]),
        "seal positions": best(args.rounds, lambda: [sealer.seal_position(p, source="s") for p in positions]),
    }
    print(f"built for {len(SECRETS)} secrets in {built * 1000:.0f} ms")
    for name, seconds in rows.items():
        print(f"{name}: {seconds * 1000:.0f} ms per {args.lines} ({seconds / args.lines * 1e6:.1f} µs each)")


if __name__ == "__main__":
    main()
