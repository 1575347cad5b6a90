#!/usr/bin/env python3
"""A schedule generator as pipegnn property-tests one: prints the 1F1B (PipeDream-Flush) order
for one shape, as a pipegnn schedule file in JSON (its action lists) or, with --format csv, as
PyTorch pipelining's compute-only CSV.

    pipegnn proptest --generator 'python3 schedules/gen_1f1b.py --stages {stages} --chunks {chunks}' \
        --max-in-flight 'min(devices - device, chunks)' --closed-form 1f1b
"""

import argparse
import json
import sys


def one_f_one_b(stages, chunks, extra_warm_up=0):
    """Per stage (one per device), its ops in issue order as (op, chunk, stage): stage s runs
    min(S - s - 1, K) warm-up forwards, then one forward and one backward until the forwards
    are done, then the remaining backwards."""
    orders = []
    for stage in range(stages):
        warm_up = min(stages - stage - 1 + extra_warm_up, chunks)
        order = [("F", chunk, stage) for chunk in range(warm_up)]
        for chunk in range(chunks):
            if chunk + warm_up < chunks:
                order.append(("F", chunk + warm_up, stage))
            order.append(("B", chunk, stage))
        orders.append(order)
    return orders


def main(extra_warm_up=0):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, required=True)
    parser.add_argument("--chunks", type=int, required=True)
    parser.add_argument("--format", choices=["json", "csv"], default="json")
    args = parser.parse_args()
    orders = one_f_one_b(args.stages, args.chunks, extra_warm_up)
    if args.format == "json":
        doc = {
            "stages": args.stages,
            "chunks": args.chunks,
            "orders": {str(d): [list(op) for op in order] for d, order in enumerate(orders)},
        }
        json.dump(doc, sys.stdout)
        print()
    else:
        for order in orders:
            print(",".join(f"{stage}{op}{chunk}" for op, chunk, stage in order))


if __name__ == "__main__":
    main()
