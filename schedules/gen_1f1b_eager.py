#!/usr/bin/env python3
"""A deliberately wrong variant of gen_1f1b.py: every stage runs one warm-up forward too many.
It never deadlocks, but stage s holds min(S - s + 1, K) chunks where 1F1B holds min(S - s, K),
so `pipegnn proptest ... --max-in-flight 'min(devices - device, chunks)'` fails, shrunk to
1 stage and 2 chunks.
"""

import sys

sys.dont_write_bytecode = True  # Leave no __pycache__ beside the scripts.

import gen_1f1b  # noqa: E402  (the script's folder is on the path)

if __name__ == "__main__":
    gen_1f1b.main(extra_warm_up=1)
