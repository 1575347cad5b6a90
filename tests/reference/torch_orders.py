"""Per-device op orders of PyTorch's pipelining schedule classes, the reference that
pipegnn's generators are tested against (tests/it/torch_orders.rs reads the JSON this writes).

Run with a Python that has torch (tested with torch 2.15):

    python3 tests/reference/torch_orders.py > tests/reference/torch_orders.json

No process group is needed: each schedule class computes every rank's order in its
constructor, from the stages' indices and the group size, which stand-in stages provide.
Each device's order is one string of torch's cells (`3F1`: stage 3's forward of chunk 1),
separated by spaces. Idle slots and the single-stage classes' gradient reductions are dropped; DualPipeV's overlapped cells `(aFc;bBd)OVERLAP_F_B` are written as the
forward then the backward, the order torch runs them in. Shapes torch refuses are recorded with
its exception type, so pipegnn can be checked to refuse the same ones.
"""

import json
import re
import sys

import torch
import torch.distributed.pipelining.schedules as S


class StandInStage:
    """What the schedule constructors read from a stage, and nothing else."""

    def __init__(self, index, n_stages, group_size, rank):
        self.stage_index = index
        self.num_stages = n_stages
        self.group_size = group_size
        self.group_rank = rank
        self.is_first = index == 0
        self.is_last = index == n_stages - 1
        self.submod = torch.nn.Identity()


KINDS = {
    # name: (class, placement, multi-stage)
    "gpipe": (S.ScheduleGPipe, "loop", False),
    "1f1b": (S.Schedule1F1B, "loop", False),
    "interleaved_1f1b": (S.ScheduleInterleaved1F1B, "loop", True),
    "looped_bfs": (S.ScheduleLoopedBFS, "loop", True),
    "interleaved_zb": (S.ScheduleInterleavedZeroBubble, "loop", True),
    "zbv": (S.ScheduleZBVZeroBubble, "v", True),
    "dualpipev": (S.ScheduleDualPipeV, "v", True),
}

CELL = re.compile(r"^(\d+)(F|B|I|W)(\d+)$")
# Actions that are not computation: the data-parallel gradient reduction the single-stage
# classes append.
NOT_COMPUTE = re.compile(r"^\d+(REDUCE_GRAD|WAIT_REDUCE_GRAD)$")


def ops_of(action):
    text = str(action)
    if text.startswith("("):
        inner = text[1 : text.index(")")]
        return [op for part in inner.split(";") for op in ops_of(part)]
    if NOT_COMPUTE.match(text):
        return []
    m = CELL.match(text)
    if m is None:
        raise ValueError(f"unexpected action {text}")
    stage, op, chunk = m.groups()
    return [[op, int(chunk), int(stage)]]


def orders(kind, devices, per_device, chunks):
    cls, placement, multi = KINDS[kind]
    n_stages = devices * per_device
    if placement == "loop":
        local = [0 + i * devices for i in range(per_device)]
    else:
        local = [0, 2 * devices - 1]
    stages = [StandInStage(i, n_stages, devices, 0) for i in local]
    if multi:
        schedule = cls(stages, chunks)
        order = schedule.pipeline_order
    else:
        schedule = cls(stages[0], chunks)
        order = schedule._get_pipeline_order()
    return {
        str(rank): " ".join(
            f"{stage}{op}{chunk}"
            for action in order[rank]
            if action is not None
            for op, chunk, stage in ops_of(action)
        )
        for rank in sorted(order)
    }


def main():
    cases = []
    for kind, (_, placement, multi) in KINDS.items():
        per_devices = [1] if not multi else ([2] if placement == "v" else [1, 2, 3, 4])
        for devices in [1, 2, 3, 4, 8]:
            for per_device in per_devices:
                for chunks in [1, 2, 3, 4, 5, 6, 8, 12, 16]:
                    case = {
                        "kind": kind,
                        "devices": devices,
                        "stages": devices * per_device,
                        "stages_per_device": per_device,
                        "chunks": chunks,
                    }
                    try:
                        case["orders"] = orders(kind, devices, per_device, chunks)
                    except Exception as err:  # torch refuses the shape
                        case["refused"] = type(err).__name__
                    cases.append(case)
    json.dump({"torch": torch.__version__, "cases": cases}, sys.stdout, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
