"""Crash safety: a seeded random mix of ARM operations while kumo is `kill -9`ed and restarted many times.

Starts its own kumo (temporary data dir, free port, root needed for containers and VMs). A few worker
threads create, update (tags) and delete resource groups, container groups (nginx from the offline
catalog, half of them with a public IP), tiny-image VMs (each with its VNet and NIC) and Uniform scale
sets (capacity 1-3, scaled with PATCH sku.capacity), over HTTPS, while the main thread kills kumo with
SIGKILL at random intervals and restarts it (`kumo up --detach` on the same data dir). Requests that get
no answer are sent again until kumo answers. After the last kill the run checks (tests/crashlib.py):
every LRO handed out reaches a terminal state (a Failed one with code and message); every resource is
what its last accepted request said (exists with those tags and capacity, in Succeeded or Failed with a
reason; or 404); nothing exists that was never asked for; every host object of this kumo (namespaces,
links, QEMU and conmon processes, runc state, bundles, mounts, cgroups, the nft table and its public
IPs, VM/container state dirs, disk files) maps to an existing resource; each QEMU/conmon seen right
before a kill whose resource was left alone is the same process afterwards. Then every group is deleted,
kumo stopped, and the census must be empty.

Progress goes to stderr, the summary table to stdout; the exit status is 1 when anything was lost,
orphaned, stuck or restarted. Usage: .venv/bin/python bench/crash.py [--seed 1] [--kills 30] [--ops 300]
[--workers 3] [--with-vms | --no-vms] [--with-scale-sets | --no-scale-sets] [--interval 3 10]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.crashlib import Plan, crash_run  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--ops", type=int, default=300)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--with-vms", dest="with_vms", action="store_true", default=True)
    p.add_argument("--no-vms", dest="with_vms", action="store_false", help="container groups only")
    p.add_argument("--with-scale-sets", dest="with_scale_sets", action="store_true", default=True)
    p.add_argument("--no-scale-sets", dest="with_scale_sets", action="store_false")
    p.add_argument("--interval", type=float, nargs=2, default=(3.0, 10.0), metavar=("MIN", "MAX"),
                   help="seconds between a restart and the next kill, drawn uniformly")
    args = p.parse_args()
    plan = Plan(seed=args.seed, ops=args.ops, workers=args.workers, with_vms=args.with_vms,
                with_scale_sets=args.with_scale_sets)
    _, verdict, table = crash_run(plan, args.kills, tuple(args.interval),
                                  log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"seed {args.seed}, {args.workers} workers, VMs {'on' if args.with_vms else 'off'}, "
          f"scale sets {'on' if args.with_scale_sets else 'off'}\n")
    print(table)
    bad = verdict.losses or verdict.orphans or verdict.lro_problems or verdict.residue
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
